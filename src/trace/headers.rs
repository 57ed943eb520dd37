//! Message-ID and Subject for the trace, from the header section as it streams into the
//! spool: at most [`MAX_HEADER`] octets are kept, and nothing of the body.

/// Header octets kept at most; a Message-ID or Subject after that is not traced.
pub const MAX_HEADER: usize = 32 * 1024;
/// Subject characters kept at most.
const MAX_SUBJECT: usize = 200;
/// Hosts of the Received chain kept at most, for a loop's trace event.
pub const MAX_RECEIVED_HOSTS: usize = 20;

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

impl HeaderCapture {
    /// The hosts that stamped the Received chain (each field's `by` host, RFC 5321
    /// section 4.4), lower-cased, with how often each appears: most first, then by name;
    /// at most `MAX_RECEIVED_HOSTS`.
    pub fn received_hosts(&self) -> Vec<(String, usize)> {
        let text = String::from_utf8_lossy(&self.buf);
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        for (name, value) in unfolded(&text) {
            if name.eq_ignore_ascii_case("received")
                && let Some(host) = by_host(&value)
            {
                *counts.entry(host).or_default() += 1;
            }
        }
        let mut hosts: Vec<(String, usize)> = counts.into_iter().collect();
        hosts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hosts.truncate(MAX_RECEIVED_HOSTS);
        hosts
    }
}

/// The host after `by` in a Received field, outside comments; `None` if there is none.
fn by_host(value: &str) -> Option<String> {
    let mut plain = String::with_capacity(value.len());
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => break,
            c if depth == 0 => plain.push(c),
            _ => plain.push(' '),
        }
    }
    let mut words = plain.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("by") {
            let host = words.next()?.trim_matches(|c: char| c == '[' || c == ']');
            let ok = !host.is_empty()
                && host.len() <= 255
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
            return ok.then(|| host.to_ascii_lowercase());
        }
    }
    None
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
    fn received_hosts_are_the_by_hosts_most_first() {
        let mut h = HeaderCapture::default();
        h.push(b"Received: from a.example (a.example [192.0.2.1]) by MX.Fwd.test\r\n");
        h.push(b"  (Postfix, by nobody) with ESMTP id 1; Fri, 4 Dec 2026 10:00:00 +0000\r\n");
        h.push(b"Received: from x by relay.other.example with SMTP; date by notme\r\n");
        h.push(b"Received: from y by mx.fwd.test; date\r\n");
        h.push(b"Received: from z (by comment.only)\r\n");
        h.push(b"Received: by [192.0.2.9] id 7\r\n");
        h.push(b"Subject: s\r\n\r\nReceived: by body.example\r\n");
        assert_eq!(
            h.received_hosts(),
            vec![
                ("mx.fwd.test".to_owned(), 2),
                ("192.0.2.9".to_owned(), 1),
                ("relay.other.example".to_owned(), 1),
            ]
        );
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
