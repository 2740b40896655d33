//! BFD control packets and sessions (userspace/src/bfd): `decode` and `Auth::verify` never
//! panic; an accepted mandatory section re-encodes (with any authentication) to a packet
//! that decodes to the same and verifies; a session fed any packets while time advances
//! never panics, and everything it sends decodes and verifies.
//!
//! Input: a config byte (the authentication both sessions use: none, simple, keyed or
//! meticulous MD5 or SHA1), then operations:
//! - 0 raw: length (1), bytes: to session A as they are (decoded first, as the I/O does);
//! - 1 sealed: 24 bytes of mandatory section, seq (4): re-encoded with the session's
//!   authentication, round-trip checked, then to session A;
//! - 2 time: advance by n ms x 4, both sessions tick and exchange packets;
//! - 3 admin down/up of A; 4 reconfigure A's intervals; 5 corrupt the next exchanged packet;
//!   6 cut/restore the link.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use portier::bfd::packet::{Auth, AuthType, Control, decode, encode};
use portier::bfd::session::{Action, Params, Session};
use portier_fuzz::Input;

const MAX_OPS: usize = 200;

fn auth_for(cfg: u8) -> Option<Auth> {
    let (kind, key): (AuthType, &[u8]) = match cfg % 6 {
        0 => return None,
        1 => (AuthType::Simple, b"password"),
        2 => (AuthType::KeyedMd5, b"md5 key"),
        3 => (AuthType::MeticulousMd5, b"0123456789abcdef"),
        4 => (AuthType::KeyedSha1, b"sha1 key of twenty b"),
        _ => (AuthType::MeticulousSha1, b"k"),
    };
    Some(Auth {
        kind,
        key_id: cfg >> 4,
        key: key.to_vec(),
    })
}

fn params(tx_ms: u64, rx_ms: u64, mult: u8, auth: Option<Auth>) -> Params {
    Params {
        desired_min_tx: Duration::from_millis(tx_ms),
        required_min_rx: Duration::from_millis(rx_ms),
        detect_mult: mult,
        auth,
    }
}

/// Decodes and verifies what a session sent; the bytes to put on the wire.
fn sent(actions: Vec<Action>, auth: &Option<Auth>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for a in actions {
        if let Action::Send(bytes) = a {
            let rx = decode(&bytes).unwrap_or_else(|e| panic!("sent an invalid packet: {e}"));
            assert_eq!(rx.authenticated, auth.is_some());
            if let Some(auth) = auth {
                auth.verify(&bytes)
                    .expect("sent a packet that does not verify");
            }
            out.push(bytes);
        }
    }
    out
}

/// Session A's handling of one packet, as the I/O task does it.
fn deliver(to: &mut Session, bytes: &[u8], now: Instant) -> Vec<Action> {
    match decode(bytes) {
        Ok(rx) => to.receive(now, bytes, &rx).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let auth = auth_for(cfg);
    let t0 = Instant::now();
    let mut now = t0;
    let mut a = Session::new(params(50, 50, 3, auth.clone()), 0x0a0a_0001, t0);
    let mut b = Session::new(params(50, 50, 3, auth.clone()), 0x0b0b_0002, t0);
    let mut link_up = true;
    let mut corrupt: Option<(usize, u8)> = None;
    let mut admin_down = false;

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let mut to_a = Vec::new();
        match input.u8() % 7 {
            0 => {
                let len = usize::from(input.u8());
                let bytes = input.bytes(len);
                if let Ok(rx) = decode(bytes)
                    && rx.authenticated
                    && let Some(auth) = &auth
                {
                    let _ = auth.verify(bytes);
                }
                let out = deliver(&mut a, bytes, now);
                sent(out, &auth);
            }
            1 => {
                let mandatory = input.bytes(24);
                let seq = input.u32();
                let Ok(rx) = decode(mandatory) else {
                    continue;
                };
                let c: Control = rx.control;
                let bytes = encode(&c, auth.as_ref().map(|a| (a, seq)));
                let again = decode(&bytes).expect("an encoded packet decodes");
                assert_eq!(again.control, c);
                assert_eq!(again.authenticated, auth.is_some());
                if let Some(auth) = &auth {
                    let expected = if auth.kind == AuthType::Simple {
                        0
                    } else {
                        seq
                    };
                    assert_eq!(auth.verify(&bytes), Ok(expected));
                }
                let out = deliver(&mut a, &bytes, now);
                sent(out, &auth);
            }
            2 => {
                now += Duration::from_millis(u64::from(input.u8()) * 4);
                for out in sent(a.tick(now), &auth) {
                    to_a.push((false, out));
                }
                for out in sent(b.tick(now), &auth) {
                    to_a.push((true, out));
                }
            }
            3 => {
                admin_down = !admin_down;
                sent(a.set_admin_down(admin_down, now), &auth);
            }
            4 => {
                let tx = u64::from(input.u8()) * 10 + 1;
                let rx = u64::from(input.u8()) * 10;
                let mult = input.u8().max(1);
                sent(
                    a.reconfigure(params(tx, rx, mult, auth.clone()), now),
                    &auth,
                );
            }
            5 => corrupt = Some((usize::from(input.u8()), input.u8().max(1))),
            _ => link_up = !link_up,
        }
        // Exchange until quiet: `true` marks packets from B to A.
        for _ in 0..8 {
            if to_a.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for (from_b, mut bytes) in std::mem::take(&mut to_a) {
                if !link_up {
                    continue;
                }
                if let Some((at, xor)) = corrupt.take() {
                    let at = at % bytes.len().max(1);
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= xor;
                    }
                }
                let (to, back) = if from_b {
                    (&mut a, false)
                } else {
                    (&mut b, true)
                };
                for out in sent(deliver(to, &bytes, now), &auth) {
                    next.push((back, out));
                }
            }
            to_a = next;
        }
    }
    let _ = a.snapshot(now);
    let _ = a.next_deadline();
});
