//! Arbitrary bytes as what Postfix sends to the lookup services: socketmap netstrings, or
//! a tcp_table request line (the first byte picks which). Whatever comes in, the service
//! must answer with well-formed replies only, never trust a length beyond its limit, and
//! read back what its own netstring writer writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srs_relay::fuzzing::lookup_requests;
use srs_relay::socketmap::netstring::{read_netstring, write_netstring};
use srs_relay::socketmap::{MAX_REQUEST, Map};

/// The status words of socketmap replies (Postfix's socketmap_table(5)).
const STATUSES: [&[u8]; 5] = [b"OK ", b"NOTFOUND ", b"TEMP ", b"TIMEOUT ", b"PERM "];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            let (out, _closed) = lookup_requests(input, None);
            // Every reply is one netstring with a known status.
            let mut rest = &out[..];
            while !rest.is_empty() {
                let (payload, used) = read_netstring(rest, usize::MAX)
                    .expect("replies are netstrings")
                    .expect("replies are whole");
                assert!(
                    STATUSES.iter().any(|s| payload.starts_with(s)),
                    "bad reply {:?}",
                    String::from_utf8_lossy(payload)
                );
                rest = &rest[used..];
            }
            // The reader never accepts more than its limit, and reads back the writer.
            if let Ok(Some((payload, used))) = read_netstring(input, MAX_REQUEST) {
                assert!(payload.len() <= MAX_REQUEST && used <= input.len());
            }
            let mut framed = Vec::new();
            write_netstring(&mut framed, input);
            let (payload, used) = read_netstring(&framed, usize::MAX).unwrap().unwrap();
            assert_eq!((payload, used), (input, framed.len()));
        }
        n => {
            let map = if n == 1 { Map::Forward } else { Map::Reverse };
            let (out, _closed) = lookup_requests(input, Some(map));
            // One reply line each: `200 `, `400 ` or `500 ` and text, LF-terminated.
            for line in out.split_inclusive(|&b| b == b'\n') {
                assert!(line.ends_with(b"\n"), "unterminated reply {line:?}");
                assert!(
                    [&b"200 "[..], b"400 ", b"500 "].iter().any(|s| line.starts_with(s)),
                    "bad reply {:?}",
                    String::from_utf8_lossy(line)
                );
                assert!(!line[..line.len() - 1].contains(&b'\n'));
            }
        }
    }
});
