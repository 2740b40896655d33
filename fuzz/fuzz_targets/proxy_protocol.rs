//! PROXY protocol v2 headers (userspace/src/l7/proxy_protocol.rs), as the listener's reader
//! parses them: the fixed 16 bytes, then the block their length names. Never panics; a
//! relayed TCP header re-encodes to bytes that parse to the same addresses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portier::l7::proxy_protocol::{Header, MAX_LEN, encode, parse, parse_fixed};

fuzz_target!(|data: &[u8]| {
    let Some(fixed) = data.get(..16) else {
        return;
    };
    let fixed: &[u8; 16] = fixed.try_into().unwrap();
    let rest = &data[16..];
    // The reader: the length comes from the fixed part, exactly that many bytes are read.
    let len = match parse_fixed(fixed) {
        Ok(len) => len,
        Err(e) => {
            let _ = e.to_string();
            assert!(parse(fixed, rest).is_err());
            return;
        }
    };
    assert!(len <= MAX_LEN);
    let Some(block) = rest.get(..len) else {
        return;
    };
    let header = match parse(fixed, block) {
        Ok(h) => h,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if let Header::Proxy {
        source,
        destination,
    } = header
    {
        assert_eq!(source.is_ipv4(), destination.is_ipv4());
        let bytes = encode(source, destination);
        let (f, b) = bytes.split_at(16);
        let f: &[u8; 16] = f.try_into().unwrap();
        assert_eq!(parse_fixed(f), Ok(b.len()));
        assert_eq!(parse(f, b), Ok(header));
    }
});
