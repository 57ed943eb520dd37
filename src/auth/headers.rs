//! The header fields of a message as octet ranges, for the one edit the relay makes to
//! what it forwards: `Authentication-Results` fields that claim our authserv-id but came
//! from outside are removed (RFC 8601 §5), so no one downstream mistakes them for ours.

use std::ops::Range;

/// Header fields at most: a message with more is left as it is past them.
const MAX_FIELDS: usize = 10_000;

/// The octet ranges of the header fields of `message`, each with its line ending and
/// continuation lines, in order; the header section ends at the first empty line.
pub fn fields(message: &[u8]) -> Vec<(Range<usize>, &[u8])> {
    let mut out: Vec<(Range<usize>, &[u8])> = Vec::new();
    let mut at = 0;
    while at < message.len() && out.len() < MAX_FIELDS {
        let line_end = memchr::memchr(b'\n', &message[at..]).map_or(message.len(), |i| at + i + 1);
        let line = &message[at..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match (line.first(), out.last_mut()) {
            // A continuation line belongs to the field before it.
            (Some(b' ' | b'\t'), Some(last)) => last.0.end = line_end,
            _ => {
                let name_end = memchr::memchr(b':', line).unwrap_or(0);
                out.push((at..line_end, &line[..name_end]));
            }
        }
        at = line_end;
    }
    out
}

/// The ranges of the `Authentication-Results` fields of `message` whose authserv-id is
/// `authserv_id` (compared without regard to case).
pub fn forged_results(message: &[u8], authserv_id: &str) -> Vec<Range<u64>> {
    fields(message)
        .into_iter()
        .filter(|(range, name)| {
            name.trim_ascii()
                .eq_ignore_ascii_case(b"Authentication-Results")
                && claims(
                    &message[range.start + name.len() + 1..range.end],
                    authserv_id,
                )
        })
        .map(|(r, _)| r.start as u64..r.end as u64)
        .collect()
}

/// Whether the value of a results field names `authserv_id` (compared without regard to
/// case) as its authserv-id. RFC 8601 §2.2: after optional CFWS (folding white space and
/// comments, which nest and may hold quoted pairs, RFC 5322 §3.2.2) comes the id, a token
/// or a quoted string (RFC 2045 `value`). Only the id is read: a field that names us and
/// then goes wrong is still removed, since removing it is the safe side.
fn claims(value: &[u8], authserv_id: &str) -> bool {
    let Some(v) = skip_cfws(value) else {
        return false;
    };
    match v.strip_prefix(b"\"") {
        Some(quoted) => {
            let mut id = Vec::with_capacity(authserv_id.len());
            let mut bytes = quoted.iter();
            loop {
                match bytes.next() {
                    None => return false,
                    Some(b'"') => break,
                    Some(b'\\') => match bytes.next() {
                        Some(&b) => id.push(b),
                        None => return false,
                    },
                    // A fold inside the quotes: its line break is not part of the value.
                    Some(b'\r' | b'\n') => {}
                    Some(&b) => id.push(b),
                }
            }
            id.eq_ignore_ascii_case(authserv_id.as_bytes())
        }
        None => {
            let end = v.iter().position(|&b| !is_token(b)).unwrap_or(v.len());
            v[..end].eq_ignore_ascii_case(authserv_id.as_bytes())
        }
    }
}

/// `v` past leading white space, line folds and comments; `None` when a comment does not
/// end.
fn skip_cfws(mut v: &[u8]) -> Option<&[u8]> {
    loop {
        v = v.trim_ascii_start();
        if v.first() != Some(&b'(') {
            return Some(v);
        }
        let mut depth = 0usize;
        let mut i = 0;
        loop {
            match v.get(i)? {
                b'\\' => i += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        v = &v[i + 1..];
    }
}

/// A character of an RFC 2045 token: US-ASCII, not a space, control or tspecial.
fn is_token(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_continuation_lines_and_stop_at_the_body() {
        let m = b"A: 1\r\nB: 2\r\n\tmore\r\nC:3\r\n\r\nD: body\r\n";
        let f = fields(m);
        let got: Vec<(&[u8], &[u8])> = f.iter().map(|(r, n)| (&m[r.clone()], *n)).collect();
        assert_eq!(
            got,
            [
                (&b"A: 1\r\n"[..], &b"A"[..]),
                (b"B: 2\r\n\tmore\r\n", b"B"),
                (b"C:3\r\n", b"C")
            ]
        );
    }

    #[test]
    fn only_results_claiming_our_id_are_forged() {
        let m = b"Received: x\r\nAuthentication-Results: relay.test; spf=pass\r\n\
authentication-results:  (c) RELAY.TEST;\r\n dkim=pass\r\n\
Authentication-Results: mx.other.example; dkim=pass\r\n\
Authentication-Results: relay.test.evil; dkim=pass\r\n\
ARC-Authentication-Results: i=1; relay.test; dkim=pass\r\n\
Authentication-Results: ((nested) comment \\) ) relay.test; spf=pass\r\n\
Authentication-Results: \"relay.test\"; spf=pass\r\n\
Authentication-Results: \"relay\\.test\" 1; spf=pass\r\n\
Authentication-Results: (unclosed relay.test; spf=pass\r\n\
Authentication-Results: \"relay.test.evil\"; spf=pass\r\n\
Subject: hi\r\n\r\nAuthentication-Results: relay.test; in the body\r\n";
        let forged = forged_results(m, "relay.test");
        let got: Vec<&[u8]> = forged
            .iter()
            .map(|r| &m[r.start as usize..r.end as usize])
            .collect();
        assert_eq!(
            got,
            [
                &b"Authentication-Results: relay.test; spf=pass\r\n"[..],
                b"authentication-results:  (c) RELAY.TEST;\r\n dkim=pass\r\n",
                b"Authentication-Results: ((nested) comment \\) ) relay.test; spf=pass\r\n",
                b"Authentication-Results: \"relay.test\"; spf=pass\r\n",
                b"Authentication-Results: \"relay\\.test\" 1; spf=pass\r\n",
            ]
        );
    }
}
