use std::cmp::Ordering;
use std::net::Ipv4Addr;

use super::*;
use crate::ospf::packet::tests::{BROADCAST, frames};
use crate::ospf::packet::{Auth, Body, decode};

fn captured_lsas() -> Vec<Lsa> {
    frames(BROADCAST)
        .iter()
        .filter_map(|f| match decode(&f.payload, &Auth::Null).ok()?.0.body {
            Body::LsUpdate(u) => Some(u.lsas),
            _ => None,
        })
        .flatten()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn rebuilding_captured_lsas_reproduces_their_checksums() {
    let lsas = captured_lsas();
    assert!(lsas.len() >= 6);
    for lsa in lsas {
        let h = lsa.header;
        let rebuilt = Lsa::build(
            h.ls_type,
            h.ls_id,
            h.advertising_router,
            h.options,
            h.seq,
            lsa.body(),
        )
        .with_age(h.age);
        assert_eq!(rebuilt, lsa, "{:?}", h.key());
    }
}

#[test]
fn router_and_external_bodies_round_trip() {
    for lsa in captured_lsas() {
        match lsa.header.ls_type {
            TYPE_ROUTER => assert_eq!(RouterLsa::decode(lsa.body()).unwrap().encode(), lsa.body()),
            TYPE_NETWORK => {
                assert_eq!(NetworkLsa::decode(lsa.body()).unwrap().encode(), lsa.body())
            }
            TYPE_AS_EXTERNAL => {
                assert_eq!(
                    ExternalLsa::decode(lsa.body()).unwrap().encode(),
                    lsa.body()
                )
            }
            other => panic!("unexpected type {other}"),
        }
    }
}

#[test]
fn checksum_and_length_errors() {
    let lsa = &captured_lsas()[0];
    let mut bad = lsa.bytes().to_vec();
    bad[21] ^= 0x10;
    assert_eq!(Lsa::decode(&bad), Err(LsaError::Checksum));
    // The age is outside the checksum.
    let mut aged = lsa.bytes().to_vec();
    aged[1] = 0x55;
    assert!(Lsa::decode(&aged).is_ok());
    assert_eq!(
        Lsa::decode(&lsa.bytes()[..lsa.bytes().len() - 4]),
        Err(LsaError::Length(lsa.header.length))
    );
    assert_eq!(Lsa::decode(&[0; 10]), Err(LsaError::Truncated));
    assert_eq!(
        RouterLsa::decode(&[0, 0, 0, 2, 1, 2, 3]),
        Err(LsaError::Body)
    );
    assert_eq!(ExternalLsa::decode(&[0; 15]), Err(LsaError::Body));
    assert_eq!(NetworkLsa::decode(&[0; 6]), Err(LsaError::Body));
}

fn header(seq: i32, checksum: u16, age: u16) -> LsaHeader {
    LsaHeader {
        age,
        options: 2,
        ls_type: 1,
        ls_id: Ipv4Addr::new(1, 1, 1, 1),
        advertising_router: Ipv4Addr::new(1, 1, 1, 1),
        seq,
        checksum,
        length: 24,
    }
}

#[test]
fn newer_instance_rules_of_13_1() {
    let base = header(INITIAL_SEQ + 1, 10, 100);
    assert_eq!(
        header(INITIAL_SEQ + 2, 0, 3000).compare(&base),
        Ordering::Greater
    );
    // Sequence numbers are signed: 0x80000001 is the oldest.
    assert_eq!(header(INITIAL_SEQ, 99, 0).compare(&base), Ordering::Less);
    assert_eq!(
        header(INITIAL_SEQ + 1, 11, 100).compare(&base),
        Ordering::Greater
    );
    assert_eq!(
        header(INITIAL_SEQ + 1, 10, MAX_AGE).compare(&base),
        Ordering::Greater
    );
    assert_eq!(
        base.compare(&header(INITIAL_SEQ + 1, 10, MAX_AGE)),
        Ordering::Less
    );
    assert_eq!(
        header(INITIAL_SEQ + 1, 10, 100 + MAX_AGE_DIFF + 1).compare(&base),
        Ordering::Less
    );
    assert_eq!(
        header(INITIAL_SEQ + 1, 10, 100 + MAX_AGE_DIFF).compare(&base),
        Ordering::Equal
    );
}
