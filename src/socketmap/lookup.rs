//! What a lookup answers, whatever protocol asked: plain functions over the codec and the
//! lookup rules, so every decision is unit-tested without sockets.
//!
//! * **forward** (sender_canonical_maps): the SRS address of a sender, in the SRS domain
//!   (`srs.default_domain`). The null sender, senders in the SRS domain, in
//!   `srs.local_domains` or in `socketmap.exclude_domains`, and addresses the codec cannot
//!   rewrite (no domain) are not found: Postfix keeps them as they are. A sender too long
//!   for a stateless address gets the stored form (`bounces+SRS=…`, see
//!   [`crate::sender_store`]), whose reverse looks the sender up again.
//! * **reverse** (recipient_canonical_maps): the original address of one of our SRS
//!   addresses. Addresses that are not SRS, and SRS addresses at other domains that we did
//!   not sign (someone else's), are not found. An SRS address at one of our domains that
//!   fails its check (forged hash, expired, malformed) is refused: not rewritten either, so
//!   Postfix rejects the bounce with `550 5.1.1 User unknown` (the SRS domain is one of its
//!   domains and no mailbox is called `SRS0=…`), and logged.
//!
//! Why a refusal is "not found" and not the socketmap's `PERM`: postsrsd 2.x answers
//! `NOTFOUND` too, and Postfix turns `PERM` into `451 4.3.5 Server configuration error`
//! plus a notice to the postmaster for every forged bounce, which the sender retries for
//! days (seen with Postfix 3.7 in `tests/postfix.rs`).

use crate::srs::{Decoded, ForwardError, ReverseError, Srs, domain_matches};

/// Which table a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// Sender rewriting (`sender_canonical_maps`).
    Forward,
    /// Recipient rewriting (`recipient_canonical_maps`).
    Reverse,
}

impl Map {
    pub fn name(self) -> &'static str {
        match self {
            Map::Forward => "forward",
            Map::Reverse => "reverse",
        }
    }
}

/// The stored form's sender store as lookups see it: blocking calls, errors as text.
pub trait Stored {
    /// The sender kept under `token`, if known and not expired.
    fn get(&self, token: &str) -> Result<Option<String>, String>;
    /// Keeps `sender` under a new token, durably; returns the token.
    fn put(&self, sender: &str) -> Result<String, String>;
}

/// What decides a lookup besides the codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The SRS domain: rewritten senders are `…@domain` (postsrsd's `-d`).
    pub domain: String,
    /// Senders not rewritten besides the codec's local domains; `.example.org` matches
    /// subdomains only (postsrsd's `-X` / `SRS_EXCLUDE_DOMAINS`).
    pub exclude_domains: Vec<String>,
}

/// The answer to one lookup, before a protocol encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The rewritten address.
    Found(String),
    /// Nothing to rewrite; the reason is for logs.
    NotFound(&'static str),
    /// Refused: the address claims to be ours and is not valid (forged, expired,
    /// malformed). Not rewritten, and logged.
    Refused(String),
    /// The lookup failed for now: Postfix tries again later.
    Temp(String),
    /// The request itself is wrong (unknown map, malformed): a configuration or protocol
    /// error on the client's side.
    Perm(String),
}

impl Rules {
    /// Whether `domain` is the SRS domain or one of the codec's local domains: an invalid
    /// SRS address there is a forgery of ours, elsewhere it is someone else's.
    fn is_ours(&self, srs: &Srs, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        domain_matches(domain, &self.domain)
            || srs
                .options()
                .local_domains
                .iter()
                .any(|d| domain_matches(domain, d))
    }

    fn is_excluded(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.exclude_domains
            .iter()
            .any(|d| domain_matches(domain, d))
    }
}

/// The domain of an address as Postfix sends it (no angle brackets): after the last `@`.
fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

/// Sender rewriting for `sender_canonical_maps`.
pub fn forward(srs: &Srs, rules: &Rules, sender: &str, now: u64, stored: &dyn Stored) -> Answer {
    let Some(domain) = domain_of(sender) else {
        // The null sender too: Postfix does not look it up, but other clients may.
        return Answer::NotFound("no domain");
    };
    if srs.is_exempt(sender, &rules.domain) {
        return Answer::NotFound("local domain");
    }
    if rules.is_excluded(domain) {
        return Answer::NotFound("excluded domain");
    }
    match srs.forward_for_domain_at(sender, &rules.domain, now) {
        Ok(rewritten) if rewritten != sender => Answer::Found(rewritten),
        Ok(_) => Answer::NotFound("local domain"),
        Err(ForwardError::InvalidSender(_)) => Answer::NotFound("invalid address"),
        // Too long for a stateless address: the stored form, as the relay does.
        Err(ForwardError::TooLong { .. }) => match stored.put(sender) {
            Ok(token) => Answer::Found(srs.stored_address_at(&token, &rules.domain, now)),
            Err(e) => Answer::Temp(e),
        },
        // The domain is checked at start-up; should it still be refused, say so to
        // Postfix (which retries) rather than send mail with an unrewritten sender.
        Err(e @ ForwardError::InvalidAlias(_)) => Answer::Temp(e.to_string()),
    }
}

/// Recipient rewriting for `recipient_canonical_maps`: the one place an SRS address is
/// reversed for Postfix.
pub fn reverse(srs: &Srs, rules: &Rules, address: &str, now: u64, stored: &dyn Stored) -> Answer {
    match srs.decode_at(address, now) {
        Ok(Decoded::Address(original)) => Answer::Found(original),
        Ok(Decoded::Stored { token }) => match stored.get(&token) {
            Ok(Some(sender)) => Answer::Found(sender),
            Ok(None) => Answer::Refused("unknown or expired stored SRS address".into()),
            Err(e) => Answer::Temp(e),
        },
        Err(ReverseError::NotSrs) => Answer::NotFound("not an SRS address"),
        Err(e) => match domain_of(address) {
            Some(domain) if rules.is_ours(srs, domain) => Answer::Refused(e.to_string()),
            _ => Answer::NotFound("not our SRS address"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srs::{Format, Options};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// The store in memory: tokens counted up.
    #[derive(Default)]
    struct MemStore(Mutex<HashMap<String, String>>);

    impl Stored for MemStore {
        fn get(&self, token: &str) -> Result<Option<String>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&token.to_ascii_uppercase())
                .cloned())
        }
        fn put(&self, sender: &str) -> Result<String, String> {
            let mut m = self.0.lock().unwrap();
            let token = format!("{:A>16}", ["B", "C", "D", "E"][m.len() % 4]);
            m.insert(token.clone(), sender.to_owned());
            Ok(token)
        }
    }

    // postsrsd's public test vectors (see /work/shared/srs-formats.md).
    const NOW: u64 = 1_577_836_860; // TT = 2W

    fn srs() -> Srs {
        let options = Options {
            format: Format::Classic,
            local_domains: vec!["mail.example.com".into(), ".corp.example".into()],
            ..Options::default()
        };
        Srs::new(&["tops3cr3t"], options).unwrap()
    }

    fn rules() -> Rules {
        Rules {
            domain: "example.com".into(),
            exclude_domains: vec!["partner.example".into(), ".friends.example".into()],
        }
    }

    #[test]
    fn forward_rewrites_into_the_srs_domain() {
        assert_eq!(
            forward(
                &srs(),
                &rules(),
                "test@otherdomain.com",
                NOW,
                &MemStore::default()
            ),
            Answer::Found("SRS0=vmyz=2W=otherdomain.com=test@example.com".into())
        );
        assert_eq!(
            forward(
                &srs(),
                &rules(),
                "SRS0=opaque+string@otherdomain.com",
                NOW,
                &MemStore::default()
            ),
            Answer::Found("SRS1=chaI=otherdomain.com==opaque+string@example.com".into())
        );
    }

    #[test]
    fn forward_leaves_alone_what_it_must_not_rewrite() {
        let cases = [
            ("", "no domain"),
            ("<>", "no domain"),
            ("postmaster", "no domain"),
            ("bob@", "no domain"),
            ("bob@example.com", "local domain"),
            ("bob@EXAMPLE.COM", "local domain"),
            (
                "SRS0=vmyz=2W=otherdomain.com=test@example.com",
                "local domain",
            ),
            ("bob@mail.example.com", "local domain"),
            ("bob@x.corp.example", "local domain"),
            ("bob@partner.example", "excluded domain"),
            ("bob@a.friends.example", "excluded domain"),
            ("bob@a.b.friends.example.", "excluded domain"),
            ("a b@example.org", "invalid address"),
        ];
        for (sender, why) in cases {
            assert_eq!(
                forward(&srs(), &rules(), sender, NOW, &MemStore::default()),
                Answer::NotFound(why),
                "{sender:?}"
            );
        }
        // A leading dot matches subdomains only, as in postsrsd's -X; the parent is rewritten.
        assert!(matches!(
            forward(
                &srs(),
                &rules(),
                "bob@friends.example",
                NOW,
                &MemStore::default()
            ),
            Answer::Found(_)
        ));
        assert!(matches!(
            forward(
                &srs(),
                &rules(),
                "bob@sub.partner.example",
                NOW,
                &MemStore::default()
            ),
            Answer::Found(_)
        ));
    }

    #[test]
    fn reverse_decodes_ours_in_any_case() {
        let s = srs();
        for address in [
            "SRS0=XjO9=2V=otherdomain.com=test@example.com",
            "srs0=xjo9=2v=otherdomain.com=test@example.com",
        ] {
            assert_eq!(
                reverse(&s, &rules(), address, NOW, &MemStore::default()),
                Answer::Found("test@otherdomain.com".into())
            );
        }
        assert_eq!(
            reverse(
                &s,
                &rules(),
                "SRS1=JIBX=thirddomain.com==opaque+string@example.com",
                NOW,
                &MemStore::default(),
            ),
            Answer::Found("SRS0=opaque+string@thirddomain.com".into())
        );
        // Signed by us under another domain (the SRS domain changed): still ours.
        assert_eq!(
            reverse(
                &s,
                &rules(),
                "SRS0=XjO9=2V=otherdomain.com=test@old.example",
                NOW,
                &MemStore::default(),
            ),
            Answer::Found("test@otherdomain.com".into())
        );
    }

    #[test]
    fn reverse_refuses_forged_and_expired_addresses_of_ours() {
        let s = srs();
        let cases = [
            (
                "SRS0=FAKE=2V=otherdomain.com=test@example.com",
                "bad SRS hash",
            ),
            ("SRS0=te87=T7=otherdomain.com=test@example.com", "expired"),
            ("SRS0=VcIb=7N=otherdomain.com=test@example.com", "expired"),
            ("SRS0=XjO9=2V@example.com", "malformed"),
            (
                "SRS0=FAKE=2V=otherdomain.com=test@mail.example.com",
                "bad SRS hash",
            ),
            (
                "SRS0=FAKE=2V=otherdomain.com=test@x.corp.example",
                "bad SRS hash",
            ),
        ];
        for (address, why) in cases {
            match reverse(&s, &rules(), address, NOW, &MemStore::default()) {
                Answer::Refused(reason) => assert!(reason.contains(why), "{address}: {reason}"),
                other => panic!("{address}: {other:?}"),
            }
        }
    }

    #[test]
    fn reverse_leaves_alone_what_is_not_ours() {
        let s = srs();
        for address in [
            "bob@example.org",
            "bob@example.com",
            "",
            "postmaster",
            // Someone else's SRS addresses: mail to them must flow.
            "SRS0=FAKE=2V=otherdomain.com=test@foreign.example",
            "SRS0=XjO9=2V@foreign.example",
            "john+SRS=AAAAAAAA=2W=example.org=bob@foreign.example",
        ] {
            assert!(
                matches!(
                    reverse(&s, &rules(), address, NOW, &MemStore::default()),
                    Answer::NotFound(_)
                ),
                "{address}"
            );
        }
    }

    #[test]
    fn microsoft_form_through_the_lookups() {
        let s = Srs::new(&["tops3cr3t"], Options::default()).unwrap();
        let Answer::Found(rewritten) =
            forward(&s, &rules(), "bob@example.org", NOW, &MemStore::default())
        else {
            panic!("not rewritten")
        };
        assert!(rewritten.starts_with("bounces+SRS="), "{rewritten}");
        assert!(
            rewritten.ends_with("=example.org=bob@example.com"),
            "{rewritten}"
        );
        assert_eq!(
            reverse(&s, &rules(), &rewritten, NOW, &MemStore::default()),
            Answer::Found("bob@example.org".into())
        );
        let forged = rewritten.replacen("+SRS=", "+SRS=X", 1);
        assert!(matches!(
            reverse(&s, &rules(), &forged, NOW, &MemStore::default()),
            Answer::Refused(_)
        ));
    }

    #[test]
    fn a_sender_too_long_for_srs_takes_the_stored_form_and_comes_back() {
        let store = MemStore::default();
        let long = "a.very.long.local.part.that.does.not.fit.any.more@example.org";
        let Answer::Found(stored) = forward(&srs(), &rules(), long, NOW, &store) else {
            panic!("not rewritten");
        };
        assert!(stored.starts_with("bounces+SRS="), "{stored}");
        assert!(stored.ends_with("=2W@example.com"), "{stored}");
        assert_eq!(
            reverse(&srs(), &rules(), &stored, NOW, &store),
            Answer::Found(long.into())
        );
        // Signed, but not in this store (another relay's, or expired there).
        assert!(matches!(
            reverse(&srs(), &rules(), &stored, NOW, &MemStore::default()),
            Answer::Refused(_)
        ));
    }
}
