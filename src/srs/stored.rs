//! The stored form, for senders the stateless forms cannot carry (a rewritten local part
//! over 64 octets), and for relayed mail where the relay is so configured:
//!
//! ```text
//! bounces+SRS=<TOKEN><CHECK>=<TT>@<default-domain>
//! ```
//!
//! * TOKEN: [`TOKEN_LEN`] base32 characters (80 bits) from a CSPRNG, chosen by the caller
//!   (the codec does no I/O). The relay keeps the original sender in its store under it.
//! * CHECK: the first `microsoft_hash_length` characters of the Microsoft-form HMAC over
//!   (TT, "", TOKEN, "bounces"). The empty domain field, which no stateless address can
//!   have, keeps the two kinds of signature apart. A forged or tampered address is refused
//!   here, before any store lookup, and a token is useless without a secret.
//! * TT: the timestamp of the stateless forms, checked against `max_age_days`.
//!
//! Only the token says *who*; the store says *what*, so an unknown or expired token is the
//! store's answer, not the codec's.

use super::{
    RELAY_USER, ReverseError, Srs, address, find_microsoft_tag, push_ascii, timestamp, unix_now,
};

/// Length of a token, base32 characters (80 bits).
pub const TOKEN_LEN: usize = 16;

/// What an SRS address of ours stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A stateless address: the address it decodes to.
    Address(String),
    /// A stored-form address whose signature and age are good: look the token up (upper
    /// case, the store's key).
    Stored { token: String },
}

/// The fields of a stored-form local part.
pub(crate) struct StoredParts<'a> {
    /// Upper case, the store's key.
    pub(crate) token: String,
    pub(crate) check: &'a str,
    pub(crate) tt: &'a str,
    pub(crate) slot: u32,
}

/// Whether `token` is a well-formed token (base32 alphabet, either case).
pub fn is_token(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|c| matches!(c.to_ascii_uppercase(), b'A'..=b'Z' | b'2'..=b'7'))
}

impl Srs {
    /// The stored-form address for `token` (see [`is_token`]) at `domain`, now.
    ///
    /// # Panics
    /// If `token` is not a token: tokens come from the caller's CSPRNG, never from input.
    pub fn stored_address(&self, token: &str, domain: &str) -> String {
        self.stored_address_at(token, domain, unix_now())
    }

    /// [`stored_address`](Self::stored_address) with a fixed clock.
    pub fn stored_address_at(&self, token: &str, domain: &str, now: u64) -> String {
        assert!(is_token(token), "not a stored-form token: {token:?}");
        let token = token.to_ascii_uppercase();
        let tt = timestamp::encode(now);
        let check = self.stored_check(&tt, &token);
        let mut out = String::with_capacity(64 + domain.len());
        out.push_str(RELAY_USER);
        out.push_str("+SRS=");
        out.push_str(&token);
        out.push_str(&check);
        out.push('=');
        push_ascii(&mut out, &tt);
        out.push('@');
        out.push_str(domain);
        out
    }

    /// Decodes an SRS address of ours, whatever its form, now: the stateless forms as
    /// [`reverse`](Self::reverse) does, the stored form to its token.
    pub fn decode(&self, address: &str) -> Result<Decoded, ReverseError> {
        self.decode_at(address, unix_now())
    }

    /// [`decode`](Self::decode) with a fixed clock.
    pub fn decode_at(&self, address: &str, now: u64) -> Result<Decoded, ReverseError> {
        if let Some(stored) = self.stored_token_at(address, now) {
            return stored.map(|token| Decoded::Stored { token });
        }
        self.reverse_at(address, now).map(Decoded::Address)
    }

    /// `None` when `address` does not have the stored form's shape; else the verified token
    /// or why not.
    fn stored_token_at(&self, address: &str, now: u64) -> Option<Result<String, ReverseError>> {
        let mailbox = address::parse(address).ok()?;
        let parts = match self.stored_parts(&mailbox.local)? {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        if self.stored_signer(&parts).is_none() {
            return Some(Err(ReverseError::BadHash));
        }
        Some(self.check_age(parts.slot, now).map(|()| parts.token))
    }

    /// A stored-form local part taken apart (hash unchecked); `None` if it is not one.
    pub(crate) fn stored_parts<'a>(
        &self,
        local: &'a str,
    ) -> Option<Result<StoredParts<'a>, ReverseError>> {
        let tag = find_microsoft_tag(local)?;
        if !local[..tag].eq_ignore_ascii_case(RELAY_USER) {
            return None;
        }
        let (hash, tt) = local[tag + 5..].split_once('=')?;
        if tt.contains('=') {
            return None; // a stateless Microsoft-form address for the user "bounces"
        }
        if hash.len() != TOKEN_LEN + self.options.microsoft_hash_length || !hash.is_ascii() {
            return Some(Err(ReverseError::Malformed(
                "bounces+SRS= stored form with a hash of the wrong length",
            )));
        }
        let (token, check) = hash.split_at(TOKEN_LEN);
        if !is_token(token) {
            return Some(Err(ReverseError::Malformed(
                "bounces+SRS= stored form with a bad token",
            )));
        }
        let Some(slot) = timestamp::decode(tt) else {
            return Some(Err(ReverseError::Malformed("bad timestamp")));
        };
        Some(Ok(StoredParts {
            token: token.to_ascii_uppercase(),
            check,
            tt,
            slot,
        }))
    }

    /// The index of the secret that signed a stored-form address, if one did.
    pub(crate) fn stored_signer(&self, parts: &StoredParts<'_>) -> Option<usize> {
        self.keys.microsoft_verify(
            parts.check,
            &[
                parts.tt.as_bytes(),
                b"",
                parts.token.as_bytes(),
                RELAY_USER.as_bytes(),
            ],
            self.options.microsoft_hash_length,
        )
    }

    fn stored_check(&self, tt: &[u8], token: &str) -> String {
        let len = self.options.microsoft_hash_length;
        let h = self
            .keys
            .microsoft(&[tt, b"", token.as_bytes(), RELAY_USER.as_bytes()], len);
        let mut out = String::with_capacity(len);
        push_ascii(&mut out, &h[..len]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srs::Options;

    const NOW: u64 = 1_577_836_860;
    const TOKEN: &str = "ABCDEFGHIJKLMNOP";

    fn srs(secrets: &[&str]) -> Srs {
        Srs::new(secrets, Options::default()).unwrap()
    }

    #[test]
    fn round_trip_any_case() {
        let s = srs(&["k1"]);
        let a = s.stored_address_at(TOKEN, "fwd.example", NOW);
        assert!(a.starts_with("bounces+SRS=ABCDEFGHIJKLMNOP"), "{a}");
        assert!(a.ends_with("=2W@fwd.example"), "{a}");
        assert!(a.len() - "@fwd.example".len() <= 64);
        let want = Ok(Decoded::Stored {
            token: TOKEN.into(),
        });
        assert_eq!(s.decode_at(&a, NOW), want);
        assert_eq!(s.decode_at(&a.to_ascii_lowercase(), NOW), want);
        assert_eq!(s.decode_at(&a.to_ascii_uppercase(), NOW), want);
        assert_eq!(s.decode_at(&format!("<{a}>"), NOW + 86_400), want);
    }

    #[test]
    fn rotation_and_wrong_secret() {
        let old = srs(&["old"]);
        let a = old.stored_address_at(TOKEN, "fwd.example", NOW);
        assert!(matches!(
            srs(&["new", "old"]).decode_at(&a, NOW),
            Ok(Decoded::Stored { .. })
        ));
        assert_eq!(srs(&["new"]).decode_at(&a, NOW), Err(ReverseError::BadHash));
    }

    #[test]
    fn tampering_is_refused() {
        let s = srs(&["k1"]);
        let a = s.stored_address_at(TOKEN, "fwd.example", NOW);
        // Another token under the same check.
        let other = a.replacen("ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOQ", 1);
        assert_eq!(s.decode_at(&other, NOW), Err(ReverseError::BadHash));
        // Another timestamp.
        let later = a.replace("=2W@", "=2X@");
        assert_eq!(s.decode_at(&later, NOW), Err(ReverseError::BadHash));
        // Expired, and from the future.
        assert!(matches!(
            s.decode_at(&a, NOW + 22 * 86_400),
            Err(ReverseError::Expired { .. })
        ));
        assert!(matches!(
            s.decode_at(&a, NOW - 3 * 86_400),
            Err(ReverseError::Expired { .. })
        ));
        assert!(matches!(
            s.decode_at("bounces+SRS=SHORT=2W@fwd.example", NOW),
            Err(ReverseError::Malformed(_))
        ));
        assert!(matches!(
            s.decode_at("bounces+SRS=ABCDEFGHIJKLMNO1ABCDEFGH=2W@fwd.example", NOW),
            Err(ReverseError::Malformed(_))
        ));
    }

    #[test]
    fn stateless_addresses_still_decode() {
        let s = srs(&["k1"]);
        let ms = s
            .forward_for_domain_at("bob@example.org", "fwd.example", NOW)
            .unwrap();
        assert!(ms.starts_with("bounces+SRS="));
        assert_eq!(
            s.decode_at(&ms, NOW),
            Ok(Decoded::Address("bob@example.org".into()))
        );
        assert_eq!(
            s.decode_at("bob@example.org", NOW),
            Err(ReverseError::NotSrs)
        );
    }

    #[test]
    fn tokens() {
        assert!(is_token(TOKEN));
        assert!(is_token("abcdefghijklmnop"));
        assert!(!is_token("ABCDEFGHIJKLMNO1"));
        assert!(!is_token("ABCDEFGHIJKLMNO"));
    }
}
