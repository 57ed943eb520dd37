//! Arbitrary header sections through the one edit the relay makes to what it forwards:
//! `Authentication-Results` fields that claim our authserv-id are removed (RFC 8601 §5).
//! Then mail-auth's parser, which the checks run on every arriving message, on the same
//! octets: it must not panic.
//!
//! The oracle is written here from the RFCs, apart from the code under test: RFC 5322
//! §2.2 (a header section is the lines before the first empty one; a field is a line
//! with a name and a colon, and the lines starting with white space after it) and RFC
//! 8601 §2.2 (after optional CFWS, the authserv-id is a token or a quoted string, then
//! optional CFWS and a version, then `;`), and the simpler reading many readers use
//! (a comment ends at the first `)`; the id at `;`, white space or `(`), and the
//! reading of any reader whatever it makes of comments (our id as a whole token before
//! the first `;`). Every field that claims our id by one of them must be removed, whole;
//! a field naming another id by all must stay; only `Authentication-Results` fields may
//! go; a malformed one may go either way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srs_relay::auth::forged_results;

const ID: &str = "relay.test";
/// The relay's own trace field comes first in every message it checks.
const RECEIVED: &[u8] =
    b"Received: from client.example by relay.test; Fri, 4 Dec 2026 12:00:00 +0000\r\n";

fuzz_target!(|data: &[u8]| {
    let message = as_received(data);
    let removed: Vec<(usize, usize)> = forged_results(&message, ID)
        .into_iter()
        .map(|r| (r.start as usize, r.end as usize))
        .collect();
    let fields = header_fields(&message);
    let mut last_end = 0;
    for &(start, end) in &removed {
        assert!(start >= last_end, "removals out of order or overlapping");
        last_end = end;
        let field = fields
            .iter()
            .find(|f| f.start == start && f.end == end)
            .unwrap_or_else(|| panic!("removed {start}..{end}: not one whole header field"));
        assert!(
            field.results != Name::Other,
            "removed a field that is not Authentication-Results"
        );
        assert!(
            field.claim != Claim::Other || field.simply_ours || field.mentions_us,
            "removed the results of another authserv-id"
        );
    }
    for f in fields.iter().filter(|f| {
        f.results == Name::Results && (f.claim == Claim::Ours || f.simply_ours || f.mentions_us)
    }) {
        assert!(
            removed.contains(&(f.start, f.end)),
            "kept a field claiming our authserv-id: {:?}",
            String::from_utf8_lossy(&message[f.start..f.end])
        );
    }
    let _ = mail_auth::AuthenticatedMessage::parse(&message);
});

/// `data` as the checks see a message: our Received first, then the client's lines, each
/// ended by CRLF (DATA with a bare CR or LF is refused before the checks).
fn as_received(data: &[u8]) -> Vec<u8> {
    let mut out = RECEIVED.to_vec();
    for line in data.split(|&b| b == b'\n') {
        out.extend(line.iter().filter(|&&b| b != b'\r'));
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Claim {
    Ours,
    Other,
    Malformed,
}

/// What a field's name says.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Name {
    Results,
    Other,
    /// Not a field name (RFC 5322 §3.6.8 `ftext`: printable US-ASCII but the colon, and
    /// white space before the colon): a line no reader takes for a field.
    Invalid,
}

struct Field {
    start: usize,
    end: usize,
    results: Name,
    claim: Claim,
    /// The simple reading finds our id.
    simply_ours: bool,
    /// Our id is a token before the first `;`.
    mentions_us: bool,
}

/// The header fields of `m` (RFC 5322 §2.2): octet ranges with their CRLF and folded lines.
fn header_fields(m: &[u8]) -> Vec<Field> {
    let mut lines = Vec::new();
    let mut at = 0;
    while at < m.len() {
        let end = m[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(m.len(), |i| at + i + 2);
        lines.push((at, end));
        at = end;
    }
    let mut fields: Vec<(usize, usize)> = Vec::new();
    for (start, end) in lines {
        if end - start == 2 {
            break; // the empty line: the body follows
        }
        if matches!(m[start], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.1 = end;
                continue;
            }
        }
        fields.push((start, end));
    }
    fields
        .into_iter()
        .map(|(start, end)| {
            let text = &m[start..end];
            let colon = text.iter().position(|&b| b == b':');
            let results = match colon {
                None => Name::Invalid,
                Some(c) => {
                    // obs-optional (RFC 5322 §4.5.8): white space may precede the colon.
                    let name = &text[..c];
                    let wsp = name.iter().rev().take_while(|&&b| b == b' ' || b == b'\t');
                    let name = &name[..name.len() - wsp.count()];
                    if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                        Name::Invalid
                    } else if name.eq_ignore_ascii_case(b"Authentication-Results") {
                        Name::Results
                    } else {
                        Name::Other
                    }
                }
            };
            let claim = match colon {
                Some(c) if results == Name::Results => {
                    authserv_id(&unfold(&text[c + 1..])).map_or(Claim::Malformed, |id| {
                        if id.eq_ignore_ascii_case(ID.as_bytes()) {
                            Claim::Ours
                        } else {
                            Claim::Other
                        }
                    })
                }
                _ => Claim::Malformed,
            };
            let simply_ours = results == Name::Results
                && colon
                    .is_some_and(|c| simple_id(&text[c + 1..]).eq_ignore_ascii_case(ID.as_bytes()));
            let mentions_us =
                results == Name::Results && colon.is_some_and(|c| mentions(&text[c + 1..]));
            Field {
                start,
                end,
                results,
                claim,
                simply_ours,
                mentions_us,
            }
        })
        .collect()
}

/// The value with its folds undone (RFC 5322 §2.2.3: a CRLF before white space goes).
fn unfold(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i..].starts_with(b"\r\n") {
            i += 2;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// RFC 8601 §2.2 `authres-payload` up to the `;` after the id and version: the id, or
/// `None` when the field does not parse that far.
fn authserv_id(v: &[u8]) -> Option<Vec<u8>> {
    let mut p = Parser { v, at: 0 };
    p.cfws()?;
    let id = if p.peek() == Some(b'"') {
        p.quoted_string()?
    } else {
        let start = p.at;
        while p.peek().is_some_and(token_char) {
            p.at += 1;
        }
        if p.at == start {
            return None;
        }
        v[start..p.at].to_vec()
    };
    // [CFWS authres-version] then [CFWS] ";" (no-result or the first resinfo).
    p.cfws()?;
    if p.peek().is_some_and(|b| b.is_ascii_digit()) {
        while p.peek().is_some_and(|b| b.is_ascii_digit()) {
            p.at += 1;
        }
        p.cfws()?;
    }
    (p.peek() == Some(b';')).then_some(id)
}

struct Parser<'a> {
    v: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.v.get(self.at).copied()
    }

    /// `[CFWS]` (RFC 5322 §3.2.2): white space and comments; `None` for an open comment.
    fn cfws(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.at += 1,
                Some(b'(') => self.comment()?,
                _ => return Some(()),
            }
        }
    }

    /// `comment = "(" *([FWS] ccontent) [FWS] ")"`, `ccontent = ctext / quoted-pair /
    /// comment`.
    fn comment(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            match self.peek()? {
                b')' => {
                    self.at += 1;
                    return Some(());
                }
                b'(' => self.comment()?,
                b'\\' => {
                    self.peek_at(1)?;
                    self.at += 2;
                }
                _ => self.at += 1,
            }
        }
    }

    /// `quoted-string`: DQUOTE *(qtext / quoted-pair / FWS) DQUOTE, the value unescaped.
    fn quoted_string(&mut self) -> Option<Vec<u8>> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push(self.peek_at(1)?);
                    self.at += 2;
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.v.get(self.at + n).copied()
    }
}

/// The id as a reader without nesting or quoting takes it: past white space (folds
/// included) and comments that each end at the first `)`, up to `;`, white space or `(`.
/// An unclosed comment leaves no id.
fn simple_id(value: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c');
    let mut rest = value;
    loop {
        let skip = rest.iter().take_while(|b| is_space(b)).count();
        rest = &rest[skip..];
        if rest.first() != Some(&b'(') {
            break;
        }
        match rest.iter().position(|&b| b == b')') {
            Some(close) => rest = &rest[close + 1..],
            None => return b"",
        }
    }
    let len = rest
        .iter()
        .take_while(|b| !is_space(b) && **b != b';' && **b != b'(')
        .count();
    &rest[..len]
}

/// Whether our id is one of the tokens (RFC 2045) before the value's first `;`.
fn mentions(value: &[u8]) -> bool {
    let mut token = Vec::new();
    for &b in value
        .iter()
        .take_while(|&&b| b != b';')
        .chain(std::iter::once(&b' '))
    {
        if token_char(b) {
            token.push(b);
        } else {
            if token.eq_ignore_ascii_case(ID.as_bytes()) {
                return true;
            }
            token.clear();
        }
    }
    false
}

/// RFC 2045 token: any US-ASCII CHAR but SPACE, CTLs and tspecials.
fn token_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?=".contains(&b)
}
