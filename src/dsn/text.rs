//! Text for the DSN: header fields and wrapped lines within the line limits, and the
//! cleaning of addresses, tokens and error texts.

/// RFC 5322 §2.1.1: the hard limit of a line, without its CRLF.
pub(super) const MAX_LINE: usize = 998;
/// Where header fields and text are folded or wrapped when they can be.
const WRAP_AT: usize = 76;
/// Longest piece put on one line when a "word" has no place to fold: well under
/// [`MAX_LINE`] with any prefix.
pub(super) const HARD_SPLIT: usize = 900;

/// `Name: value` + CRLF, folded at spaces near [`WRAP_AT`] (RFC 5322 §2.2.3), a word
/// too long for a line split so that no line exceeds [`MAX_LINE`].
pub(crate) fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut column = name.len() + 1;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        for piece in pieces(word) {
            if column + 1 + piece.len() > WRAP_AT && column > name.len() + 1 {
                out.push_str("\r\n");
                column = 0;
            }
            out.push(' ');
            out.push_str(piece);
            column += 1 + piece.len();
        }
    }
    out.push_str("\r\n");
}

/// `text` as CRLF lines of at most [`WRAP_AT`] columns where the words allow, each
/// starting with `indent`. A [`GLUE`] is a space that does not break a line.
pub(crate) fn wrap(out: &mut String, indent: &str, text: &str) {
    let mut column = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        for piece in pieces(word) {
            if column > 0 && column + 1 + piece.len() > WRAP_AT {
                out.push_str("\r\n");
                column = 0;
            }
            if column == 0 {
                out.push_str(indent);
                column = indent.len();
            } else {
                out.push(' ');
                column += 1;
            }
            out.extend(piece.chars().map(|c| if c == GLUE { ' ' } else { c }));
            column += piece.len();
        }
    }
    out.push_str("\r\n");
}

/// Stands for a space that [`wrap`] must not break at. Any no-break space of the
/// texts themselves is a plain space by then ([`clean_text`]).
const GLUE: char = '\u{a0}';

/// `s` kept on one line by [`wrap`].
pub(super) fn glued(s: &str) -> String {
    s.replace(' ', "\u{a0}")
}

/// `word` in pieces of at most [`HARD_SPLIT`] octets, split between characters.
fn pieces(word: &str) -> impl Iterator<Item = &str> {
    let mut rest = word;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(HARD_SPLIT);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// `s` on one line: control characters (CR, LF, TAB, ...) become spaces, runs of white
/// space one space, no space at either end; with `ascii`, non-ASCII becomes `?`.
pub(crate) fn clean_text(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else if ascii && !c.is_ascii() {
            '?'
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

/// An address for the text and headers: without control characters or surrounding
/// white space (an address can hold a space only in a quoted local part).
pub(crate) fn clean_address(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    s.trim().to_owned()
}

/// A host name or queue id: printable ASCII only, at most 255 characters.
pub(crate) fn clean_token(s: &str) -> String {
    s.chars().filter(char::is_ascii_graphic).take(255).collect()
}

/// A queue id as a part of a boundary or Message-ID: letters, digits, `-` and `_` (what
/// [`Spool::new_id`](crate::spool::Spool::new_id) makes anyway).
pub(crate) fn id_token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(64)
        .collect()
}

/// At most `max` characters of `s`, marked when cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{} [...]", &s[..end]),
        None => s.to_owned(),
    }
}
