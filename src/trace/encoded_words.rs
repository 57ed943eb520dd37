//! RFC 2047 encoded words in a Subject (`=?UTF-8?B?...?=`), decoded for the trace, so that
//! `--subject` finds what a reader sees. UTF-8, US-ASCII and Latin-1 are decoded; a word
//! in another charset, or malformed, is kept as it came.

/// `text` with its encoded words decoded; whitespace between two of them is dropped.
pub fn decode(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from) = rest.split_at(start);
        let decoded = word_end(from).and_then(|end| Some((decode_word(&from[..end])?, end)));
        match decoded {
            Some((word, end)) => {
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&word);
                rest = &from[end..];
                after_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &from[2..];
                after_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Where the encoded word at the start of `s` ends (after its `?=`).
fn word_end(s: &str) -> Option<usize> {
    // =?charset?enc?text?= : the text starts after the third `?`.
    let mut marks = s.match_indices('?').map(|(i, _)| i).skip(1);
    let _charset_end = marks.next()?;
    let text_start = marks.next()? + 1;
    let close = s[text_start..].find("?=")?;
    Some(text_start + close + 2)
}

fn decode_word(word: &str) -> Option<String> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let charset = parts.next()?.split('*').next()?.to_ascii_lowercase();
    let encoding = parts.next()?;
    let text = parts.next()?;
    let bytes = match encoding {
        "B" | "b" => data_encoding::BASE64.decode(text.as_bytes()).ok()?,
        "Q" | "q" => quoted(text)?,
        _ => return None,
    };
    match charset.as_str() {
        "utf-8" | "us-ascii" => Some(String::from_utf8_lossy(&bytes).into_owned()),
        "iso-8859-1" | "latin1" => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

/// The Q encoding: `_` is a space, `=XX` an octet.
fn quoted(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_b_and_q_words() {
        assert_eq!(decode("=?UTF-8?B?w6l0w6k=?="), "été");
        assert_eq!(
            decode("Re: =?iso-8859-1?Q?caf=E9_au_lait?= ok"),
            "Re: café au lait ok"
        );
        assert_eq!(decode("=?utf-8?q?a?= =?utf-8?q?b?="), "ab");
        assert_eq!(decode("plain = text ?= =? no"), "plain = text ?= =? no");
        assert_eq!(decode("=?koi8-r?B?5s/S?="), "=?koi8-r?B?5s/S?=");
        assert_eq!(decode("=?utf-8?B?!!!?="), "=?utf-8?B?!!!?=");
    }
}
