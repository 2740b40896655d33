//! LSAs (userspace/src/ospf/lsa.rs): whatever decodes re-encodes to bytes that decode to the
//! same value, for the whole LSA and for the Router, Network, AS-external and grace-LSA
//! (RFC 3623 TLVs) bodies; an LSA
//! built from any body passes its own checksum; the "newer instance" order is antisymmetric.
//!
//! Input: a mode byte. Even: the rest is one LSA as received (its Fletcher checksum must be
//! right, as on the wire). Odd: 20 header bytes, then a body, built with `Lsa::build` (which
//! computes length and checksum), so the body decoders see everything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portier::ospf::lsa::grace::{GraceLsa, is_grace};
use portier::ospf::lsa::{
    ExternalLsa, LSA_HEADER_LEN, Lsa, LsaHeader, MAX_AGE, NetworkLsa, RouterLsa, TYPE_AS_EXTERNAL,
    TYPE_NETWORK, TYPE_ROUTER,
};
use portier_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8();
    let lsa = if mode & 1 == 0 {
        let bytes = input.rest();
        match Lsa::decode(bytes) {
            Ok(lsa) => {
                assert_eq!(lsa.bytes(), bytes);
                lsa
            }
            Err(e) => {
                let _ = e.to_string();
                // Any 20 bytes are a header: it re-encodes to itself but for the capped age.
                if let Ok(h) = LsaHeader::decode(bytes) {
                    let mut out = Vec::new();
                    h.encode(&mut out);
                    assert_eq!(LsaHeader::decode(&out), Ok(h));
                    assert!(h.age <= MAX_AGE);
                }
                return;
            }
        }
    } else {
        let header = input.bytes(LSA_HEADER_LEN);
        let Ok(h) = LsaHeader::decode(header) else {
            return;
        };
        let body = input.rest();
        let lsa = Lsa::build(
            h.ls_type,
            h.ls_id,
            h.advertising_router,
            h.options,
            h.seq,
            body,
        );
        if !body.len().is_multiple_of(4) || body.len() > usize::from(u16::MAX) - LSA_HEADER_LEN {
            // Not an LSA anyone can send (lengths are multiples of four and fit 16 bits).
            return;
        }
        let decoded =
            Lsa::decode(lsa.bytes()).unwrap_or_else(|e| panic!("a built LSA does not decode: {e}"));
        assert_eq!(decoded, lsa);
        lsa
    };
    // The whole LSA round trip, and with another age (outside the checksum).
    assert_eq!(Lsa::decode(lsa.bytes()).as_ref(), Ok(&lsa));
    assert_eq!(usize::from(lsa.header.length), lsa.bytes().len());
    let aged = lsa.with_age(u16::from(mode) * 20);
    let redecoded = Lsa::decode(aged.bytes()).expect("the age is outside the checksum");
    assert_eq!(redecoded, aged);
    assert_eq!(aged.header.age, (u16::from(mode) * 20).min(MAX_AGE));
    assert_eq!(aged.key(), lsa.key());

    // Newer-instance order (RFC 2328 13.1) between the two.
    assert_eq!(
        lsa.header.compare(&aged.header),
        aged.header.compare(&lsa.header).reverse()
    );
    assert_eq!(lsa.header.compare(&lsa.header), std::cmp::Ordering::Equal);

    // The bodies.
    let rebuild = |body: Vec<u8>| {
        let h = &lsa.header;
        let built = Lsa::build(
            h.ls_type,
            h.ls_id,
            h.advertising_router,
            h.options,
            h.seq,
            &body,
        );
        let decoded = Lsa::decode(built.bytes()).expect("re-encoded LSA decodes");
        assert_eq!(decoded.body(), &body[..]);
    };
    match lsa.header.ls_type {
        TYPE_ROUTER => {
            if let Ok(r) = RouterLsa::decode(lsa.body()) {
                let body = r.encode();
                assert_eq!(RouterLsa::decode(&body), Ok(r));
                rebuild(body);
            }
        }
        TYPE_NETWORK => {
            if let Ok(n) = NetworkLsa::decode(lsa.body()) {
                let body = n.encode();
                assert_eq!(NetworkLsa::decode(&body), Ok(n));
                rebuild(body);
            }
        }
        TYPE_AS_EXTERNAL => {
            if let Ok(e) = ExternalLsa::decode(lsa.body()) {
                assert!(e.metric <= 0x00ff_ffff);
                let body = e.encode();
                assert_eq!(ExternalLsa::decode(&body), Ok(e));
                rebuild(body);
            }
        }
        _ if is_grace(lsa.header.ls_type, lsa.header.ls_id) => {
            // Grace TLVs (RFC 3623): what decodes re-encodes to the same value.
            if let Ok(g) = GraceLsa::decode(lsa.body()) {
                let body = g.encode();
                assert_eq!(GraceLsa::decode(&body), Ok(g));
                rebuild(body);
            }
        }
        _ => {}
    }
    // Every body decoder takes any bytes without panicking.
    let _ = GraceLsa::decode(lsa.body());
});
