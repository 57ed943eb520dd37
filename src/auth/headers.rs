//! The header fields of a message as octet ranges, for the one edit the relay makes to
//! what it forwards: `Authentication-Results` fields that claim our authserv-id but came
//! from outside are removed (RFC 8601 §5), so no one downstream mistakes them for ours.

use std::ops::Range;

/// The header fields of `message`, each as its octet range (with its line ending and
/// continuation lines) and its name, in order; the header section ends at the first
/// empty line. Lazily, and however many there are: a forged field after thousands of
/// others is found as well.
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { message, at: 0 }
}

/// The iterator of [`fields`].
pub struct Fields<'a> {
    message: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    /// The end of the line starting at `at` (past its LF), or the end of the message.
    fn line_end(&self, at: usize) -> usize {
        memchr::memchr(b'\n', &self.message[at..]).map_or(self.message.len(), |i| at + i + 1)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (Range<usize>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let m = self.message;
        let start = self.at;
        if start >= m.len() {
            return None;
        }
        let first_end = self.line_end(start);
        let first = &m[start..first_end];
        if first == b"\r\n" || first == b"\n" {
            self.at = m.len();
            return None;
        }
        let mut end = first_end;
        // Continuation lines belong to the field.
        while end < m.len() && matches!(m[end], b' ' | b'\t') {
            end = self.line_end(end);
        }
        self.at = end;
        let name_end = memchr::memchr(b':', first).unwrap_or(0);
        Some((start..end, &first[..name_end]))
    }
}

/// The ranges of the `Authentication-Results` fields of `message` whose authserv-id is
/// `authserv_id` (compared without regard to case).
pub fn forged_results(message: &[u8], authserv_id: &str) -> Vec<Range<u64>> {
    fields(message)
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
/// case) as its authserv-id, as RFC 8601 reads it or as a simpler reader might: removing
/// a field is the safe side.
fn claims(value: &[u8], authserv_id: &str) -> bool {
    claims_strictly(value, authserv_id)
        || claims_simply(value, authserv_id)
        || names_before_results(value, authserv_id)
}

/// Whether `authserv_id` is a whole token anywhere before the first `;`: where any reader
/// looks for the id, whatever it makes of comments, escapes and quotes (`(a(\)) relay.test;`
/// names us to a reader that nests comments but knows no escapes).
fn names_before_results(value: &[u8], authserv_id: &str) -> bool {
    let head = &value[..memchr::memchr(b';', value).unwrap_or(value.len())];
    head.split(|&b| !is_token(b))
        .any(|t| t.eq_ignore_ascii_case(authserv_id.as_bytes()))
}

/// RFC 8601 §2.2: after optional CFWS (folding white space and comments, which nest and
/// may hold quoted pairs, RFC 5322 §3.2.2) comes the id, a token or a quoted string (RFC
/// 2045 `value`). Only the id is read: a field that names us and then goes wrong is still
/// removed.
fn claims_strictly(value: &[u8], authserv_id: &str) -> bool {
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

/// As a reader that knows no nesting or quoting would: a comment ends at the first `)`,
/// the id at `;`, white space or `(` (`((x) relay.test;` and `(\) relay.test;` name us to
/// it, though not to RFC 8601).
fn claims_simply(value: &[u8], authserv_id: &str) -> bool {
    let mut v = value.trim_ascii_start();
    while let Some(rest) = v.strip_prefix(b"(") {
        match memchr::memchr(b')', rest) {
            Some(i) => v = rest[i + 1..].trim_ascii_start(),
            None => return false,
        }
    }
    let end = v
        .iter()
        .position(|&b| b == b';' || b.is_ascii_whitespace() || b == b'(')
        .unwrap_or(v.len());
    v[..end].eq_ignore_ascii_case(authserv_id.as_bytes())
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
        let got: Vec<(&[u8], &[u8])> = fields(m).map(|(r, n)| (&m[r], n)).collect();
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
    fn a_forged_field_after_thousands_of_others_is_found() {
        let mut m = b"X-A: 1\r\n".repeat(20_000);
        m.extend_from_slice(b"Authentication-Results: relay.test; dkim=pass\r\n\r\nbody\r\n");
        let forged = forged_results(&m, "relay.test");
        assert_eq!(forged.len(), 1);
        assert_eq!(forged[0].start, 20_000 * 8);
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
Authentication-Results: ((x) relay.test; dmarc=pass\r\n\
Authentication-Results: (\\) relay.test; dmarc=pass\r\n\
Authentication-Results: (a(\\)) relay.test; dmarc=pass\r\n\
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
                b"Authentication-Results: (unclosed relay.test; spf=pass\r\n",
                b"Authentication-Results: ((x) relay.test; dmarc=pass\r\n",
                b"Authentication-Results: (\\) relay.test; dmarc=pass\r\n",
                b"Authentication-Results: (a(\\)) relay.test; dmarc=pass\r\n",
            ]
        );
    }
}
