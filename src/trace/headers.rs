//! Message-ID and Subject for the trace, from the header section as it streams into the
//! spool: at most [`MAX_HEADER`] octets are kept, and nothing of the body.

/// Header octets kept at most; a Message-ID or Subject after that is not traced.
pub const MAX_HEADER: usize = 32 * 1024;
/// Subject characters kept at most.
const MAX_SUBJECT: usize = 200;

/// Collects the header section of a message being received.
#[derive(Debug, Default)]
pub struct HeaderCapture {
    buf: Vec<u8>,
    done: bool,
}

impl HeaderCapture {
    /// Takes the next octets of the message (dot-unstuffed).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        let start = self.buf.len().saturating_sub(3);
        let room = MAX_HEADER - self.buf.len();
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if let Some(end) = find(&self.buf[start..], b"\r\n\r\n") {
            self.buf.truncate(start + end + 2);
            self.done = true;
        } else if self.buf.len() >= MAX_HEADER {
            self.done = true;
        }
    }

    /// The Message-ID (without angle brackets) and the Subject, if present.
    pub fn fields(&self) -> (Option<String>, Option<String>) {
        let text = String::from_utf8_lossy(&self.buf);
        let (mut id, mut subject) = (None, None);
        for (name, value) in unfolded(&text) {
            if id.is_none() && name.eq_ignore_ascii_case("message-id") {
                id = Some(super::query::strip_brackets(&value).to_owned());
            } else if subject.is_none() && name.eq_ignore_ascii_case("subject") {
                let decoded = super::encoded_words::decode(&value);
                subject = Some(decoded.chars().take(MAX_SUBJECT).collect());
            }
        }
        (id.filter(|i| !i.is_empty()), subject)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Header fields as (name, value), continuation lines joined.
fn unfolded(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fields_across_pushes_and_stops_at_the_body() {
        let mut h = HeaderCapture::default();
        h.push(b"Received: from x\r\nSubject: Hello\r\n there\r\nMessage-");
        h.push(b"ID: <a1@b.example>\r\n\r\nSubject: not this\r\n");
        assert_eq!(
            h.fields(),
            (Some("a1@b.example".into()), Some("Hello there".into()))
        );
        assert!(h.done);
    }

    #[test]
    fn bounded() {
        let mut h = HeaderCapture::default();
        for _ in 0..100 {
            h.push(&[b'x'; 1000]);
        }
        assert_eq!(h.buf.len(), MAX_HEADER);
        assert_eq!(h.fields(), (None, None));
    }
}
