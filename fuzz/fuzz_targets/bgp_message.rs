//! BGP-4 messages (userspace/src/bgp/packet): decoding never panics; an error names the
//! NOTIFICATION to send; a decoded message re-encodes to bytes that decode again (unless they
//! grew past 4096 octets) to a message announcing and withdrawing the same routes, and whose
//! encoding is the same bytes (encoding reaches its canonical form in one round).
//!
//! Input: a flags byte (bit 0: four-octet AS numbers negotiated; bit 1: set the header's
//! length to the message's so the body is parsed), then one message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portier::bgp::packet::{Codec, HEADER_LEN, MAX_LEN, Message, decode, frame_len};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, msg)) = data.split_first() else {
        return;
    };
    let codec = if flags & 1 != 0 {
        Codec::FOUR_OCTET
    } else {
        Codec::default()
    };
    let mut msg = msg.to_vec();
    if flags & 2 != 0 && (HEADER_LEN..=MAX_LEN).contains(&msg.len()) {
        let len = (msg.len() as u16).to_be_bytes();
        msg[16..18].copy_from_slice(&len);
    }
    let decoded = match decode(&msg, codec) {
        Ok(m) => m,
        Err(e) => {
            let n = e.notification();
            let _ = (e.label(), e.to_string(), n.describe());
            return;
        }
    };
    let header: &[u8; HEADER_LEN] = msg[..HEADER_LEN].try_into().unwrap();
    assert_eq!(frame_len(header), Ok(msg.len()));
    assert_eq!(decoded.type_code(), msg[18]);
    let _ = decoded.name();
    let again = decoded.encode(codec);
    if again.len() > MAX_LEN {
        return;
    }
    let back = decode(&again, codec)
        .unwrap_or_else(|e| panic!("re-encoded message refused ({e}): {again:02x?}"));
    assert_eq!(back.type_code(), decoded.type_code());
    if let (Message::Update(a), Message::Update(b)) = (&decoded, &back) {
        assert_eq!(
            a.announced().collect::<Vec<_>>(),
            b.announced().collect::<Vec<_>>()
        );
        assert_eq!(
            a.withdrawn_all().collect::<Vec<_>>(),
            b.withdrawn_all().collect::<Vec<_>>()
        );
        assert_eq!(a.end_of_rib_family(), b.end_of_rib_family());
    }
    assert_eq!(
        back.encode(codec),
        again,
        "encoding is not canonical after one round"
    );
});
