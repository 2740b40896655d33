//! OSPF packet decoding (userspace/src/ospf/packet), including the simple password and keyed
//! MD5 checks: never panics, and whatever decodes re-encodes to bytes that decode to the
//! same packet (LSAs refused inside an LS Update are left out by the encoder); grace-LSAs in
//! an update decode their TLVs and re-encode them.
//!
//! Input: a flags byte, then the packet. Flags bits 0-1 choose the interface's scheme (null,
//! simple, MD5 with keys 1 and 7); bit 2 seals the packet first (valid checksum or digest) so
//! the body decoders are reached.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portier::ospf::lsa::grace::{GraceLsa, is_grace};
use portier::ospf::packet::{Auth, AuthKey, Body, decode};
use portier_fuzz::{OspfSeal, seal_ospf};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, packet)) = data.split_first() else {
        return;
    };
    let password = *b"portier\0";
    let keys = [AuthKey::new(1, b"s3cret"), AuthKey::new(7, b"another key")];
    let auth = match flags & 3 {
        0 => Auth::Null,
        1 => Auth::Simple(password),
        _ => Auth::Md5(keys.to_vec()),
    };
    let mut packet = packet.to_vec();
    if flags & 4 != 0 {
        let seal = match &auth {
            Auth::Null => OspfSeal::Null,
            Auth::Simple(p) => OspfSeal::Simple(p),
            Auth::Md5(keys) => {
                // The key the packet names when it is one of ours, so the fuzzer picks.
                let id = packet.get(18).copied().unwrap_or(1);
                let key = keys.iter().find(|k| k.id == id).unwrap_or(&keys[0]);
                let seq = packet
                    .get(20..24)
                    .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
                OspfSeal::Md5(key.id, &key.key, seq)
            }
        };
        seal_ospf(&mut packet, seal);
    }
    let (decoded, received) = match decode(&packet, &auth) {
        Ok(ok) => ok,
        Err(e) => {
            let _ = (e.label(), e.to_string());
            return;
        }
    };
    let mut expected = decoded.clone();
    if let Body::LsUpdate(lsu) = &mut expected.body {
        lsu.lsas.retain(Result::is_ok);
        // Grace-LSAs (RFC 3623) as the helper reads them: TLVs that decode re-encode.
        for lsa in lsu.lsas.iter().flatten() {
            if is_grace(lsa.header.ls_type, lsa.header.ls_id)
                && let Ok(g) = GraceLsa::decode(lsa.body())
            {
                assert_eq!(GraceLsa::decode(&g.encode()), Ok(g));
            }
        }
    }
    let again = decoded.encode(&auth, received.crypto_seq.unwrap_or(0));
    let (redecoded, received_again) =
        decode(&again, &auth).unwrap_or_else(|e| panic!("re-encoded packet refused: {e}"));
    assert_eq!(redecoded, expected);
    assert_eq!(received_again, received);
});
