//! Netstrings (<https://cr.yp.to/proto/netstrings.txt>), the framing of Postfix's
//! socketmap protocol: `<length>:<payload>,` with the length in decimal.
//!
//! [`read_netstring`] works on a buffer, not a socket, so it can be fuzzed and tested on
//! its own; it decides "too long" from the length digits alone, so a peer can never make
//! the reader buffer more than `max_len` plus a few octets.

use thiserror::Error;

/// Why a buffer does not start with an acceptable netstring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NetstringError {
    #[error("netstring length is not a decimal number")]
    BadLength,
    #[error("netstring length has a leading zero")]
    LeadingZero,
    #[error("netstring longer than {max} octets")]
    TooLong { max: usize },
    #[error("netstring does not end with a comma")]
    NoComma,
}

/// Reads the netstring at the start of `buf`, whose payload may be at most `max_len`
/// octets. `Ok(None)`: the buffer holds only the beginning of one (read more);
/// `Ok(Some((payload, consumed)))`: one netstring of `consumed` octets.
pub fn read_netstring(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(&[u8], usize)>, NetstringError> {
    let mut len: usize = 0;
    let mut digits = 0;
    loop {
        let Some(&b) = buf.get(digits) else {
            return Ok(None);
        };
        match b {
            b'0'..=b'9' => {
                if digits == 1 && len == 0 {
                    return Err(NetstringError::LeadingZero);
                }
                len = len * 10 + usize::from(b - b'0');
                if len > max_len {
                    return Err(NetstringError::TooLong { max: max_len });
                }
                digits += 1;
            }
            b':' if digits > 0 => break,
            _ => return Err(NetstringError::BadLength),
        }
    }
    let start = digits + 1;
    let end = start + len;
    match buf.get(end) {
        None => Ok(None),
        Some(b',') => Ok(Some((&buf[start..end], end + 1))),
        Some(_) => Err(NetstringError::NoComma),
    }
}

/// Appends `payload` as a netstring to `out`.
pub fn write_netstring(out: &mut Vec<u8>, payload: &[u8]) {
    push_decimal(out, payload.len());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(b',');
}

/// Appends the netstring of `parts` joined, without building the joined payload first.
pub fn write_netstring_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    push_decimal(out, parts.iter().map(|p| p.len()).sum());
    out.push(b':');
    for p in parts {
        out.extend_from_slice(p);
    }
    out.push(b',');
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_netstrings() {
        assert_eq!(read_netstring(b"0:,", 10), Ok(Some((&b""[..], 3))));
        assert_eq!(
            read_netstring(b"12:hello world!,rest", 100),
            Ok(Some((&b"hello world!"[..], 16)))
        );
        // A payload may hold anything, commas and colons included.
        assert_eq!(read_netstring(b"3:a,:,", 10), Ok(Some((&b"a,:"[..], 6))));
    }

    #[test]
    fn incomplete_netstrings_ask_for_more() {
        for partial in [
            &b""[..],
            b"1",
            b"12",
            b"12:",
            b"12:hello",
            b"12:hello world!",
        ] {
            assert_eq!(read_netstring(partial, 100), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn malformed_netstrings() {
        assert_eq!(read_netstring(b":abc,", 10), Err(NetstringError::BadLength));
        assert_eq!(
            read_netstring(b"x:abc,", 10),
            Err(NetstringError::BadLength)
        );
        assert_eq!(
            read_netstring(b"3 :abc,", 10),
            Err(NetstringError::BadLength)
        );
        assert_eq!(
            read_netstring(b"-3:abc,", 10),
            Err(NetstringError::BadLength)
        );
        assert_eq!(
            read_netstring(b"03:abc,", 10),
            Err(NetstringError::LeadingZero)
        );
        assert_eq!(
            read_netstring(b"00:,", 10),
            Err(NetstringError::LeadingZero)
        );
        assert_eq!(read_netstring(b"3:abcd", 10), Err(NetstringError::NoComma));
        assert_eq!(read_netstring(b"3:abc\n", 10), Err(NetstringError::NoComma));
    }

    #[test]
    fn too_long_is_known_from_the_digits() {
        assert_eq!(
            read_netstring(b"11:", 10),
            Err(NetstringError::TooLong { max: 10 })
        );
        // No payload needed to refuse, and no overflow on absurd lengths.
        assert_eq!(
            read_netstring(b"99999999999999999999999999", 1024),
            Err(NetstringError::TooLong { max: 1024 })
        );
        assert_eq!(
            read_netstring(b"10:0123456789,", 10),
            Ok(Some((&b"0123456789"[..], 14)))
        );
    }

    #[test]
    fn writes_what_it_reads() {
        let mut out = Vec::new();
        write_netstring(&mut out, b"OK bob@example.org");
        write_netstring(&mut out, b"");
        write_netstring_parts(&mut out, &[b"NOTFOUND", b" "]);
        assert_eq!(out, b"18:OK bob@example.org,0:,9:NOTFOUND ,");
        let (payload, used) = read_netstring(&out, 100).unwrap().unwrap();
        assert_eq!((payload, used), (&b"OK bob@example.org"[..], 22));
    }
}
