//! Just enough of RFC 5321/6531 mailbox syntax for SRS: split at the last `@`, undo a
//! quoted local part, and quote the result again only when it needs it. SRS itself treats
//! the local part as an opaque string; quoting matters because `"john doe"@example.org`
//! must become `"SRS0=…=john doe"@fwd`, not `SRS0=…="john doe"@fwd` (which is not an
//! address at all).

use std::borrow::Cow;

/// An envelope address taken apart. `local` is the local part's content: unquoted and
/// unescaped if it came quoted, verbatim otherwise. The flags come from the same pass over
/// the bytes as the syntax check, so the codec need not scan the fields again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mailbox<'a> {
    pub local: Cow<'a, str>,
    pub domain: &'a str,
    /// Whether `local` would need quotes on the wire ([`needs_quotes`]); when it does not,
    /// no part of it does either.
    pub local_needs_quotes: bool,
    /// Whether the domain has a byte that a local part can only carry quoted (an address
    /// literal's brackets, say): an SRS local part holding it would need quotes.
    pub domain_needs_quotes: bool,
    /// Whether the domain contains `=`.
    pub domain_has_equals: bool,
}

/// RFC 5321's limit on a local part, in octets.
pub(crate) const MAX_LOCAL_OCTETS: usize = 64;

// Blanks around an address are SMTP's, so ASCII: a non-ASCII space (U+00A0) is part of
// the address, or parsing `a@b\u{a0}` and `<a@b\u{a0}>` would give different domains.

/// Whether the address is the null reverse-path (`<>` or empty).
pub(crate) fn is_null(address: &str) -> bool {
    let a = address.trim_ascii();
    a.is_empty() || a == "<>"
}

/// The address without surrounding blanks and angle brackets.
pub(crate) fn strip_brackets(address: &str) -> &str {
    let a = address.trim_ascii();
    a.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a)
}

/// Parses `local@domain`, optionally in angle brackets.
pub(crate) fn parse(address: &str) -> Result<Mailbox<'_>, &'static str> {
    let mut a = address.trim_ascii();
    if let Some(inner) = a.strip_prefix('<') {
        a = inner.strip_suffix('>').ok_or("unbalanced angle bracket")?;
    }
    let at = rfind_at(a.as_bytes()).ok_or("no @ in address")?;
    let (local, domain) = (&a[..at], &a[at + 1..]);
    if local.is_empty() {
        return Err("empty local part");
    }
    if domain.is_empty() {
        return Err("empty domain");
    }
    let domain_class = classes(domain.as_bytes());
    if domain_class & BAD_IN_DOMAIN != 0 {
        return Err("invalid character in domain");
    }
    let (local, local_class) = if local.len() >= 2 && local.starts_with('"') && local.ends_with('"')
    {
        let local = unquote(&local[1..local.len() - 1])?;
        if local.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err("control character in local part");
        }
        let class = classes(local.as_bytes());
        (Cow::Owned(local), class)
    } else {
        let class = classes(local.as_bytes());
        // Also refuses CR, LF and NUL (control characters), as the quoted branch does.
        if class & BAD_IN_LOCAL != 0 {
            return Err("invalid character in unquoted local part");
        }
        (Cow::Borrowed(local), class)
    };
    if local.is_empty() {
        return Err("empty local part");
    }
    Ok(Mailbox {
        local,
        domain,
        local_needs_quotes: local_class & QUOTE != 0,
        domain_needs_quotes: domain_class & QUOTE != 0,
        domain_has_equals: domain_class & EQUALS != 0,
    })
}

/// Whether `domain` is one [`parse`] accepts: not empty, and nothing that would end or
/// break an address on the wire.
pub(crate) fn valid_domain(domain: &str) -> bool {
    !domain.is_empty() && classes(domain.as_bytes()) & BAD_IN_DOMAIN == 0
}

/// Position of the last `@`: eight bytes per step (the domain is usually a few words long;
/// `memrchr` costs more to set up than this whole loop).
fn rfind_at(s: &[u8]) -> Option<usize> {
    let mut end = s.len();
    while end >= 8 {
        let word = u64::from_le_bytes(s[end - 8..end].try_into().expect("8 bytes"));
        let found = bytes_equal(word, b'@');
        if found != 0 {
            return Some(end - 8 + (63 - found.leading_zeros() as usize) / 8);
        }
        end -= 8;
    }
    s[..end].iter().rposition(|&b| b == b'@')
}

/// Position of the first `byte` in `s`, eight bytes per step (for the codec's short
/// fields, where `memchr`'s set-up costs more than the search).
#[inline]
pub(crate) fn find_byte(s: &[u8], byte: u8) -> Option<usize> {
    let mut start = 0;
    while start + 8 <= s.len() {
        let word = u64::from_le_bytes(s[start..start + 8].try_into().expect("8 bytes"));
        let found = bytes_equal(word, byte);
        if found != 0 {
            return Some(start + found.trailing_zeros() as usize / 8);
        }
        start += 8;
    }
    s[start..]
        .iter()
        .position(|&b| b == byte)
        .map(|i| start + i)
}

/// The high bit of each byte of `word` that equals `byte`, exactly (no false positives,
/// unlike the shorter `(x - 0x01..) & !x & 0x80..`).
fn bytes_equal(word: u64, byte: u8) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    let x = word ^ (ONES * u64::from(byte));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// [`CLASS`] bit: ASCII whitespace or control, `"` or `\`: not in an unquoted local part.
const BAD_IN_LOCAL: u8 = 1;
/// [`CLASS`] bit: not in a domain (what [`BAD_IN_LOCAL`] refuses, and `@`, `<`, `>`).
const BAD_IN_DOMAIN: u8 = 2;
/// [`CLASS`] bit: a local part holding it is written quoted (neither atext, nor `.`, nor
/// a UTF-8 octet).
const QUOTE: u8 = 4;
/// [`CLASS`] bit: `=`.
const EQUALS: u8 = 8;

/// Character classes, one table lookup per byte on the hot path.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_whitespace() || c.is_ascii_control() || c == b'"' || c == b'\\' {
            t[i] = BAD_IN_LOCAL | BAD_IN_DOMAIN;
        } else if c == b'@' || c == b'<' || c == b'>' {
            t[i] = BAD_IN_DOMAIN;
        } else if c == b'=' {
            t[i] = EQUALS;
        }
        if !UNQUOTED[i] {
            t[i] |= QUOTE;
        }
        i += 1;
    }
    t
};

/// The [`CLASS`] bits of all the bytes of `s`, or'ed together.
fn classes(s: &[u8]) -> u8 {
    s.iter().fold(0, |acc, &b| acc | CLASS[usize::from(b)])
}

fn unquote(quoted: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(
                chars
                    .next()
                    .ok_or("dangling backslash in quoted local part")?,
            ),
            '"' => return Err("unescaped quote in quoted local part"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// RFC 5322 atext, extended to UTF-8 by RFC 6531 (every non-ASCII octet); `.` is let
/// through too so that the dotted local parts seen in the field (`john..doe`) round-trip
/// unquoted. (Folded into [`CLASS`] as its [`QUOTE`] bit.)
const UNQUOTED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || c >= 0x80;
        i += 1;
    }
    let specials = b"!#$%&'*+-/=?^_`{|}~.";
    let mut j = 0;
    while j < specials.len() {
        t[specials[j] as usize] = true;
        j += 1;
    }
    t
};

/// Whether `local` is written quoted.
fn needs_quotes(local: &str) -> bool {
    classes(local.as_bytes()) & QUOTE != 0
}

/// The octets `local` takes on the wire (with quotes and escapes if it needs them).
pub(crate) fn wire_len(local: &str) -> usize {
    if needs_quotes(local) {
        2 + local.len() + local.bytes().filter(|b| matches!(b, b'"' | b'\\')).count()
    } else {
        local.len()
    }
}

/// Writes `local@domain`, quoting the local part only when it needs it.
pub(crate) fn render(local: &str, domain: &str) -> String {
    if !needs_quotes(local) {
        return render_plain(&["", local], domain);
    }
    let mut out = String::with_capacity(wire_len(local) + 1 + domain.len());
    push_local(&mut out, local);
    out.push('@');
    out.push_str(domain);
    out
}

/// Writes `local[0]local[1]@domain`, for a local part known to need no quotes (see
/// [`Mailbox::local_needs_quotes`]): one allocation of the exact size, no scan.
#[inline]
pub(crate) fn render_plain(local: &[&str; 2], domain: &str) -> String {
    debug_assert!(!needs_quotes(local[0]) && !needs_quotes(local[1]));
    let mut out = String::with_capacity(local[0].len() + local[1].len() + 1 + domain.len());
    out.push_str(local[0]);
    out.push_str(local[1]);
    out.push('@');
    out.push_str(domain);
    out
}

/// Appends `local`, quoted if it needs it.
pub(crate) fn push_local(out: &mut String, local: &str) {
    if !needs_quotes(local) {
        out.push_str(local);
        return;
    }
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Whether `domain` is `target` or, for a `local_domains` entry with a leading dot, a
/// subdomain of it (ASCII case-insensitive, as DNS is).
#[inline]
pub(crate) fn domain_matches(domain: &str, entry: &str) -> bool {
    match entry.strip_prefix('.') {
        Some(parent) => {
            domain.len() > parent.len() + 1
                && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent)
        }
        None => domain.eq_ignore_ascii_case(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_last_at() {
        let m = parse("\"a@b\"@example.org").unwrap();
        assert_eq!(m.local, "a@b");
        assert_eq!(m.domain, "example.org");
        let m = parse("<bob@example.org>").unwrap();
        assert_eq!((m.local.as_ref(), m.domain), ("bob", "example.org"));
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(render("john.doe", "x.org"), "john.doe@x.org");
        assert_eq!(render("john doe", "x.org"), "\"john doe\"@x.org");
        assert_eq!(render("a\"b\\c", "x.org"), "\"a\\\"b\\\\c\"@x.org");
        assert_eq!(render("jöhn", "x.org"), "jöhn@x.org");
        let rendered = render("a\"b\\c", "x.org");
        let back = parse(&rendered).unwrap();
        assert_eq!(back.local, "a\"b\\c");
    }

    #[test]
    fn refuses_broken_addresses() {
        for bad in [
            "",
            "bob",
            "@x.org",
            "bob@",
            "bo b@x.org",
            "\"bob@x.org",
            "b\r\nob@x.org",
            "<bob@x.org",
            "bob@x y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_ascii_blanks_are_trimmed() {
        // Found by the fuzz target srs_reverse: reverse gave `a@b\u{a0}`, read back as `a@b`.
        for a in [
            "bob@example.org\u{a0}",
            "<bob@example.org\u{a0}>",
            " bob@example.org\u{a0}\t",
        ] {
            assert_eq!(parse(a).unwrap().domain, "example.org\u{a0}", "{a:?}");
        }
        assert!(!is_null("\u{a0}"));
        assert_eq!(strip_brackets(" <a@b> "), "a@b");
    }

    #[test]
    fn every_ascii_byte_everywhere() {
        // Addresses of 14 to 66 bytes, `@` early, midway and late, with every ASCII byte
        // and a two-byte character at every position, against the reference below.
        for len in 14..=66usize {
            for at in [1, len / 2, len - 3] {
                let mut base = vec![b'a'; len];
                base[len - 4] = b'.';
                base[at] = b'@';
                assert!(parse(std::str::from_utf8(&base).unwrap()).is_ok());
                for pos in 0..len {
                    for b in 0..=127u8 {
                        let mut bytes = base.clone();
                        bytes[pos] = b;
                        let s = std::str::from_utf8(&bytes).unwrap();
                        assert_eq!(parse(s), parse_reference(s), "{s:?}");
                    }
                    if pos + 1 < len {
                        let mut bytes = base.clone();
                        bytes[pos..pos + 2].copy_from_slice("é".as_bytes());
                        let s = std::str::from_utf8(&bytes).unwrap();
                        assert_eq!(parse(s), parse_reference(s), "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn finds_the_last_at() {
        for s in [
            "",
            "@",
            "a",
            "a@b",
            "@@",
            "abcdefgh@",
            "@abcdefgh",
            "a@bcdefgh@ijklmnop",
            "A@A@AAAAAAAAAAAAAAA",
            "@AAAAAAAAAAAAAAAAAAAAAAAA",
            "xx@\u{40}é@ü",
            "\u{c0}\u{80}@A@",
        ] {
            assert_eq!(rfind_at(s.as_bytes()), s.rfind('@'), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn prop_rfind_at(s in proptest::collection::vec(proptest::sample::select(b"@A?a\x00\xc0\x80\x7f".to_vec()), 0..40)) {
            proptest::prop_assert_eq!(rfind_at(&s), s.iter().rposition(|&b| b == b'@'));
        }

        #[test]
        fn prop_find_byte(s in proptest::collection::vec(proptest::sample::select(b"=<>\x3c\x3e\x00\xbd\xff".to_vec()), 0..40)) {
            proptest::prop_assert_eq!(find_byte(&s, b'='), s.iter().position(|&b| b == b'='));
        }
    }

    /// `parse` written plainly, each check a pass of its own: the definition the table-driven
    /// one must match, result for result and error for error.
    fn parse_reference(address: &str) -> Result<Mailbox<'_>, &'static str> {
        let mut a = address.trim_ascii();
        if let Some(inner) = a.strip_prefix('<') {
            a = inner.strip_suffix('>').ok_or("unbalanced angle bracket")?;
        }
        let (local, domain) = a.rsplit_once('@').ok_or("no @ in address")?;
        if local.is_empty() {
            return Err("empty local part");
        }
        if domain.is_empty() {
            return Err("empty domain");
        }
        if domain.bytes().any(|b| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || matches!(b, b'@' | b'<' | b'>' | b'"' | b'\\')
        }) {
            return Err("invalid character in domain");
        }
        let local = if local.len() >= 2 && local.starts_with('"') && local.ends_with('"') {
            Cow::Owned(unquote(&local[1..local.len() - 1])?)
        } else {
            if local
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"' || b == b'\\')
            {
                return Err("invalid character in unquoted local part");
            }
            Cow::Borrowed(local)
        };
        if local.is_empty() {
            return Err("empty local part");
        }
        if local.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err("control character in local part");
        }
        // RFC 5322 atext, `.` and every non-ASCII octet go unquoted.
        let quoted = |s: &str| {
            !s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
            })
        };
        Ok(Mailbox {
            local_needs_quotes: quoted(&local),
            domain_needs_quotes: quoted(domain),
            domain_has_equals: domain.contains('='),
            local,
            domain,
        })
    }

    proptest::proptest! {
        #[test]
        fn prop_parse_matches_reference(s in "[ a.@<>\"\\\\\r\n\t\u{0}\u{b}\u{7f}é\u{a0}=+(,\\[\\]]{0,20}|[a-z]{0,20}[ a.@<>\"\\\\\r\n\t\u{0}\u{7f}é=+(,:;\\[\\]]{0,4}[a-z.=]{0,30}@[a-z.]{0,20}[ a.@<>\"\r\u{7f}=(\\]]{0,3}") {
            proptest::prop_assert_eq!(parse(&s), parse_reference(&s));
            let t = s.trim_ascii();
            proptest::prop_assert_eq!(is_null(&s), t.is_empty() || t == "<>");
            let stripped = t.strip_prefix('<').and_then(|t| t.strip_suffix('>')).unwrap_or(t);
            proptest::prop_assert_eq!(strip_brackets(&s), stripped);
        }
    }

    #[test]
    fn domain_matching() {
        assert!(domain_matches("Example.ORG", "example.org"));
        assert!(!domain_matches("sub.example.org", "example.org"));
        assert!(domain_matches("sub.example.org", ".example.org"));
        assert!(!domain_matches("example.org", ".example.org"));
        assert!(!domain_matches("badexample.org", ".example.org"));
    }
}
