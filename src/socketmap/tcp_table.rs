//! Postfix's tcp_table(5) protocol, as postsrsd 1.x serves it on two ports (one per map):
//! a request is the line `get <key>\n`, a reply `200 <data>\n` (found), `500 <text>\n`
//! (not found) or `400 <text>\n` (try again later). In both, `%`, whitespace and
//! non-printing characters travel as `%XX`.

use super::lookup::Answer;

/// Longest request line accepted, newline included. Postfix's own replies are limited to
/// 4096 octets; a key is at most a few hundred before encoding.
pub const MAX_LINE: usize = 4096;

/// One request line, framed.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// The decoded key of a `get`.
    Get(Vec<u8>),
    /// Anything else: answered with 500, then the connection is closed (as postsrsd does).
    Invalid(&'static str),
}

/// Reads the request line at the start of `buf`. `None`: no complete line yet (the caller
/// refuses a line longer than [`MAX_LINE`]); `Some((request, consumed))` otherwise.
pub fn read_request(buf: &[u8]) -> Option<(Request, usize)> {
    let end = memchr::memchr(b'\n', buf)?;
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let request = match line.strip_prefix(b"get ") {
        Some(key) => match url_decode(key) {
            Some(key) => Request::Get(key),
            None => Request::Invalid("invalid %-encoding"),
        },
        None => Request::Invalid("invalid request"),
    };
    Some((request, end + 1))
}

/// Decodes `%XX` (either case); `None` for a `%` not followed by two hex digits.
pub fn url_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hi = hex_value(*text.get(i + 1)?)?;
            let lo = hex_value(*text.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `data` with `%`, whitespace, control and non-ASCII octets as `%XX`.
pub fn url_encode_into(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in data {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Appends the reply line for `answer`. Refusals are `500` (not found), as postsrsd 1.x
/// answers them: tcp_table has no "refused" reply, and 400 would only make Postfix retry.
/// A malformed request (`Perm`) is a `500` too, before the connection is closed.
pub fn write_reply(out: &mut Vec<u8>, answer: &Answer) {
    match answer {
        Answer::Found(address) => {
            out.extend_from_slice(b"200 ");
            url_encode_into(out, address.as_bytes());
        }
        Answer::NotFound(reason) => push_text(out, b"500 ", reason),
        Answer::Refused(reason) | Answer::Perm(reason) => push_text(out, b"500 ", reason),
        Answer::Temp(reason) => push_text(out, b"400 ", reason),
    }
    out.push(b'\n');
}

/// A reason after 500/400 is only logged by Postfix, never decoded: it is written as
/// text, as postsrsd does, with only what could break the line (`%`, controls) encoded.
fn push_text(out: &mut Vec<u8>, code: &[u8], text: &str) {
    out.extend_from_slice(code);
    for &b in text.as_bytes() {
        if b == b' ' {
            out.push(b);
        } else {
            url_encode_into(out, &[b]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_get_requests() {
        assert_eq!(
            read_request(b"get bob@example.org\nget"),
            Some((Request::Get(b"bob@example.org".to_vec()), 20))
        );
        assert_eq!(
            read_request(b"get a%20b%25c%7e@example.org\r\n"),
            Some((Request::Get(b"a b%c~@example.org".to_vec()), 30))
        );
        assert_eq!(read_request(b"get bob@example.org"), None);
        assert_eq!(read_request(b""), None);
    }

    #[test]
    fn invalid_requests() {
        assert_eq!(
            read_request(b"put a b\n"),
            Some((Request::Invalid("invalid request"), 8))
        );
        assert_eq!(
            read_request(b"get\n"),
            Some((Request::Invalid("invalid request"), 4))
        );
        assert_eq!(
            read_request(b"get a%2\n"),
            Some((Request::Invalid("invalid %-encoding"), 8))
        );
        assert_eq!(
            read_request(b"get a%zz\n"),
            Some((Request::Invalid("invalid %-encoding"), 9))
        );
    }

    #[test]
    fn encodes_replies() {
        let mut out = Vec::new();
        write_reply(&mut out, &Answer::Found("\"a b%\"@example.org".into()));
        write_reply(&mut out, &Answer::Found("jö@example.org".into()));
        write_reply(&mut out, &Answer::NotFound("not an SRS address"));
        write_reply(&mut out, &Answer::Refused("bad hash".into()));
        write_reply(&mut out, &Answer::Temp("busy".into()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "200 \"a%20b%25\"@example.org\n200 j%C3%B6@example.org\n\
             500 not an SRS address\n500 bad hash\n400 busy\n"
        );
    }

    #[test]
    fn decode_undoes_encode() {
        let all: Vec<u8> = (0..=255).collect();
        let mut encoded = Vec::new();
        url_encode_into(&mut encoded, &all);
        assert!(
            !encoded
                .iter()
                .any(|b| b.is_ascii_whitespace() || *b >= 0x7f)
        );
        assert_eq!(url_decode(&encoded).unwrap(), all);
    }
}
