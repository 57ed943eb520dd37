//! The returned original: its header section, or the whole message when it may be
//! returned, and its Message-ID.

use super::text::{HARD_SPLIT, MAX_LINE};

/// The largest original message returned whole (RET=FULL). Postfix returns 50 kB and
/// Exim 100 kB by default; 1 MiB still passes every receiver's size limit, keeps the
/// DSN cheap to build and spool, and covers nearly all mail that is not a large
/// attachment, which the sender has anyway.
pub const MAX_RETURNED_MESSAGE: usize = 1024 * 1024;

/// The most of the original header section returned (cut at a line); the same as
/// Postfix's `header_size_limit`. Real header sections are a few kB; a "header" without
/// an end could otherwise be the whole message.
pub const MAX_RETURNED_HEADERS: usize = 100 * 1024;

/// The original's header section: CRLF lines, NUL and stray CR as spaces, lines over
/// 998 octets folded, at most [`MAX_RETURNED_HEADERS`].
pub(super) fn header_section(original: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines(original) {
        if line.is_empty() {
            break;
        }
        if out.len() + line.len() + 2 > MAX_RETURNED_HEADERS {
            break;
        }
        let line: Vec<u8> = line
            .iter()
            .map(|&b| if b == 0 || b == b'\r' { b' ' } else { b })
            .collect();
        push_long_line(&mut out, &line);
    }
    out
}

/// The whole original as CRLF lines, when it may be returned as message/rfc822.
pub(super) fn returnable_message(original: &[u8]) -> Option<Vec<u8>> {
    if original.len() > MAX_RETURNED_MESSAGE || original.contains(&0) {
        return None;
    }
    let mut out = Vec::with_capacity(original.len() + 2);
    for line in lines(original) {
        if line.len() > MAX_LINE || line.contains(&b'\r') {
            return None;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}

/// The lines of `data`, split at LF, a CR before it removed; no empty last line.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let empty = data.is_empty();
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(move |_| !empty)
}

/// One header line of the original, folded (before white space where there is some)
/// so that no line exceeds [`MAX_LINE`].
fn push_long_line(out: &mut Vec<u8>, mut line: &[u8]) {
    while line.len() > MAX_LINE {
        let window = &line[..HARD_SPLIT];
        match window
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .filter(|&i| i > 0)
        {
            // A real fold: the white space starts the continuation line.
            Some(i) => {
                out.extend_from_slice(&line[..i]);
                out.extend_from_slice(b"\r\n");
                line = &line[i..];
            }
            // Nowhere to fold: break anyway (not inside a UTF-8 sequence); unfolding
            // adds a space, harmless in a copy returned for information.
            None => {
                let mut i = HARD_SPLIT;
                while i > HARD_SPLIT - 4 && (line[i] & 0xC0) == 0x80 {
                    i -= 1;
                }
                out.extend_from_slice(&line[..i]);
                out.extend_from_slice(b"\r\n ");
                line = &line[i..];
            }
        }
    }
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// The first `Message-ID:` of a header section, when it looks like one.
pub(super) fn original_message_id(headers: &[u8]) -> Option<String> {
    let mut value: Option<String> = None;
    for line in lines(headers) {
        match &mut value {
            Some(v) if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') => {
                v.push_str(&String::from_utf8_lossy(line));
            }
            Some(_) => break,
            None => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    continue;
                };
                if line[..colon]
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"Message-ID")
                {
                    value = Some(String::from_utf8_lossy(&line[colon + 1..]).into_owned());
                }
            }
        }
    }
    let id = value?;
    let id = id.trim();
    let inner = id.strip_prefix('<')?.strip_suffix('>')?;
    let plain = inner.len() <= HARD_SPLIT / 2
        && !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    plain.then(|| id.to_owned())
}
