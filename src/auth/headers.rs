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

/// Whether the value of a results field starts with `authserv_id` (RFC 8601 §2.2: the
/// id, optionally a version, then `;`); comments before it are skipped.
fn claims(value: &[u8], authserv_id: &str) -> bool {
    let mut v = value.trim_ascii_start();
    // A leading comment, `(...)`, not nested.
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
                b"authentication-results:  (c) RELAY.TEST;\r\n dkim=pass\r\n"
            ]
        );
    }
}
