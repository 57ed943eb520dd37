//! Answering one request: framing it in the connection's protocol (socketmap netstrings
//! or tcp_table lines), deciding it, and encoding the answer.

use std::sync::Arc;

use super::lookup::{self, Answer, Map, Rules};
use super::{netstring, tcp_table};
use crate::srs::{Srs, unix_now};

/// Longest socketmap request payload (`<map> <address>`), as postsrsd bounds it. Addresses
/// are at most 256 octets on the wire (RFC 5321); Postfix sends nothing longer here.
pub const MAX_REQUEST: usize = 1024;

/// What answering a request needs: the codec, the sender store and the lookup rules.
pub(super) struct Lookups {
    pub(super) srs: Srs,
    pub(super) stored: Arc<dyn lookup::Stored + Send + Sync>,
    pub(super) rules: Rules,
}

/// What a connection speaks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Protocol {
    Socketmap,
    TcpTable(Map),
}

impl Protocol {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Protocol::Socketmap => "socketmap",
            Protocol::TcpTable(Map::Forward) => "tcp_table forward",
            Protocol::TcpTable(Map::Reverse) => "tcp_table reverse",
        }
    }
}

/// What one pass over the buffered input did.
pub(super) enum Step {
    /// Wait for more input.
    More,
    /// A request of this many octets was answered.
    Answered(usize),
    /// The request was refused as malformed and answered: close the connection.
    Close,
}

/// Frames, decides and answers the first request in `input`.
pub(super) fn answer_one(
    lookups: &Lookups,
    protocol: Protocol,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Step {
    match protocol {
        Protocol::Socketmap => match netstring::read_netstring(input, MAX_REQUEST) {
            Ok(None) => Step::More,
            Ok(Some((payload, used))) => {
                // `<map> <key>`: the map name up to the first space.
                let Some(space) = memchr::memchr(b' ', payload) else {
                    refuse(out, protocol, "invalid query: no map name");
                    return Step::Close;
                };
                let key = &payload[space + 1..];
                let answer = match &payload[..space] {
                    b"forward" => lookup(lookups, Map::Forward, key),
                    b"reverse" => lookup(lookups, Map::Reverse, key),
                    other => {
                        tracing::warn!(map = %String::from_utf8_lossy(other), "unknown socketmap name");
                        Answer::Perm("unknown map: use forward or reverse".into())
                    }
                };
                write_answer(out, protocol, &answer);
                Step::Answered(used)
            }
            Err(e) => {
                refuse(out, protocol, &format!("invalid query: {e}"));
                Step::Close
            }
        },
        Protocol::TcpTable(map) => match tcp_table::read_request(input) {
            Some((_, used)) if used > tcp_table::MAX_LINE => {
                refuse(out, protocol, "request too long");
                Step::Close
            }
            Some((tcp_table::Request::Get(key), used)) => {
                let answer = lookup(lookups, map, &key);
                write_answer(out, protocol, &answer);
                Step::Answered(used)
            }
            Some((tcp_table::Request::Invalid(why), _)) => {
                refuse(out, protocol, why);
                Step::Close
            }
            None if input.len() >= tcp_table::MAX_LINE => {
                refuse(out, protocol, "request too long");
                Step::Close
            }
            None => Step::More,
        },
    }
}

/// A protocol violation: answered, logged, and the caller closes the connection.
fn refuse(out: &mut Vec<u8>, protocol: Protocol, why: &str) {
    tracing::warn!(
        protocol = protocol.describe(),
        reason = why,
        "malformed lookup request; closing the connection"
    );
    write_answer(out, protocol, &Answer::Perm(why.to_owned()));
}

/// The decision for one key of one map.
fn lookup(lookups: &Lookups, map: Map, key: &[u8]) -> Answer {
    // Addresses are UTF-8 (SMTPUTF8) or ASCII; anything else is neither rewritten nor ours.
    let Ok(key) = std::str::from_utf8(key) else {
        return Answer::NotFound("not UTF-8");
    };
    let now = unix_now();
    let answer = match map {
        Map::Forward => lookup::forward(&lookups.srs, &lookups.rules, key, now, &*lookups.stored),
        Map::Reverse => lookup::reverse(&lookups.srs, &lookups.rules, key, now, &*lookups.stored),
    };
    match &answer {
        Answer::Refused(reason) => {
            tracing::info!(map = map.name(), address = key, reason = %reason, "refused")
        }
        Answer::Perm(reason) => {
            tracing::warn!(map = map.name(), address = key, reason = %reason, "bad request")
        }
        Answer::Temp(reason) => {
            tracing::warn!(map = map.name(), address = key, reason = %reason, "lookup failed")
        }
        Answer::Found(rewritten) => {
            tracing::debug!(map = map.name(), address = key, rewritten = %rewritten, "rewritten")
        }
        Answer::NotFound(why) => {
            tracing::debug!(
                map = map.name(),
                address = key,
                reason = why,
                "not rewritten"
            )
        }
    }
    answer
}

/// Encodes `answer` in the connection's protocol.
pub(super) fn write_answer(out: &mut Vec<u8>, protocol: Protocol, answer: &Answer) {
    match protocol {
        Protocol::Socketmap => {
            let (status, text): (&[u8], &[u8]) = match answer {
                Answer::Found(address) => (b"OK ", address.as_bytes()),
                // Postfix wants nothing after NOTFOUND; the reason is in the log.
                Answer::NotFound(_) | Answer::Refused(_) => (b"NOTFOUND ", b""),
                Answer::Temp(reason) => (b"TEMP ", reason.as_bytes()),
                Answer::Perm(reason) => (b"PERM ", reason.as_bytes()),
            };
            netstring::write_netstring_parts(out, &[status, text]);
        }
        Protocol::TcpTable(_) => tcp_table::write_reply(out, answer),
    }
}

/// For the fuzz target: answers every request in `input` as a connection does (no
/// socket, no sender store), until it needs more input or refuses and closes. Returns
/// what would be written, and whether the connection would be closed.
#[cfg(feature = "fuzzing")]
pub(crate) fn answer_all(input: &[u8], tcp_table: Option<Map>) -> (Vec<u8>, bool) {
    use std::sync::OnceLock;

    struct NoStore;
    impl lookup::Stored for NoStore {
        fn get(&self, _: &str) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn put(&self, _: &str) -> Result<String, String> {
            Err("no sender store here".into())
        }
    }

    static LOOKUPS: OnceLock<Lookups> = OnceLock::new();
    let lookups = LOOKUPS.get_or_init(|| {
        let options = crate::srs::Options {
            format: crate::srs::Format::Classic,
            local_domains: vec!["forward.example".into()],
            ..Default::default()
        };
        Lookups {
            srs: Srs::new(&["fuzz secret"], options).expect("valid options"),
            stored: Arc::new(NoStore),
            rules: Rules {
                domain: "forward.example".into(),
                exclude_domains: vec![".partner.example".into()],
            },
        }
    });
    let protocol = match tcp_table {
        Some(map) => Protocol::TcpTable(map),
        None => Protocol::Socketmap,
    };
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        match answer_one(lookups, protocol, &input[at..], &mut out) {
            Step::More => return (out, false),
            Step::Answered(n) => {
                assert!(n > 0, "a request of no octets would loop");
                at += n;
            }
            Step::Close => return (out, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No stored senders in these tests (lookup.rs tests the stored form).
    struct NoStore;

    impl lookup::Stored for NoStore {
        fn get(&self, _: &str) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn put(&self, _: &str) -> Result<String, String> {
            Err("no store in this test".into())
        }
    }

    fn lookups() -> Lookups {
        let options = crate::srs::Options {
            format: crate::srs::Format::Classic,
            ..Default::default()
        };
        Lookups {
            srs: Srs::new(&["tops3cr3t"], options).unwrap(),
            stored: Arc::new(NoStore),
            rules: Rules {
                domain: "example.com".into(),
                exclude_domains: vec![],
            },
        }
    }

    fn socketmap(input: &[u8]) -> (String, Vec<usize>, bool) {
        let s = lookups();
        let mut out = Vec::new();
        let mut used = Vec::new();
        let mut at = 0;
        loop {
            match answer_one(&s, Protocol::Socketmap, &input[at..], &mut out) {
                Step::More => return (String::from_utf8(out).unwrap(), used, false),
                Step::Answered(n) => {
                    used.push(n);
                    at += n;
                }
                Step::Close => return (String::from_utf8(out).unwrap(), used, true),
            }
        }
    }

    fn netstrings(payloads: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            netstring::write_netstring(&mut out, p.as_bytes());
        }
        out
    }

    #[test]
    fn socketmap_requests_and_replies() {
        let input = netstrings(&[
            "reverse bob@otherdomain.com",
            "forward postmaster",
            "lookup bob@x.org",
        ]);
        let (out, used, closed) = socketmap(&input);
        assert_eq!(
            out,
            "9:NOTFOUND ,9:NOTFOUND ,40:PERM unknown map: use forward or reverse,"
        );
        assert_eq!((used, closed), (vec![31, 22, 20], false));
        let (out, _, _) = socketmap(&netstrings(&["forward test@otherdomain.com"]));
        assert!(out.starts_with("48:OK SRS0="), "{out}");
        assert!(out.ends_with("=otherdomain.com=test@example.com,"), "{out}");
    }

    #[test]
    fn socketmap_refuses_malformed_input_and_closes() {
        for input in [
            &b"x:abc,"[..],
            b"5:abcdef,",
            b"7:forward,",
            b"99999:",
            b"01:a,",
        ] {
            let (out, used, closed) = socketmap(input);
            assert!(closed, "{input:?}");
            assert!(used.is_empty(), "{input:?}");
            assert!(out.contains(":PERM invalid query"), "{input:?}: {out}");
        }
        let (out, _, closed) = socketmap(b"1025:");
        assert!(closed);
        assert!(out.contains("longer than 1024"), "{out}");
        // An incomplete request waits for more.
        assert_eq!(
            socketmap(b"28:forward test@"),
            (String::new(), vec![], false)
        );
    }

    #[test]
    fn tcp_table_requests_and_replies() {
        let s = lookups();
        let mut out = Vec::new();
        let forward = Protocol::TcpTable(Map::Forward);
        let Step::Answered(n) = answer_one(&s, forward, b"get test%40otherdomain.com\n", &mut out)
        else {
            panic!()
        };
        assert_eq!(n, 27);
        let reply = String::from_utf8(std::mem::take(&mut out)).unwrap();
        assert!(reply.starts_with("200 SRS0="), "{reply}");
        assert!(matches!(
            answer_one(&s, forward, b"get bob@example.com", &mut out),
            Step::More
        ));
        assert!(matches!(
            answer_one(&s, forward, b"GET x\n", &mut out),
            Step::Close
        ));
        assert_eq!(out, b"500 invalid request\n");
        out.clear();
        let long = vec![b'a'; tcp_table::MAX_LINE];
        assert!(matches!(
            answer_one(&s, forward, &long, &mut out),
            Step::Close
        ));
        assert_eq!(out, b"500 request too long\n");
    }
}
