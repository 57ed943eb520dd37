//! The SRS codec: pure functions from addresses to addresses, no I/O.
//!
//! Two forms are written and both are read:
//!
//! * **Microsoft form** (the default):
//!   `<alias-user>+SRS=<HASH>=<TT>=<orig-domain>=<orig-local>@<forwarding-domain>`.
//!   HASH is HMAC-SHA256 over TT, the original domain, the original local part and the
//!   alias user (lowercased, NUL-separated), in base32, `microsoft_hash_length` characters
//!   (default 8, i.e. 40 bits). Because the alias user is signed, a hash made for
//!   `john@fwd` is refused under `mary@fwd`.
//! * **Classic form** (Mail::SRS, postsrsd, libsrs2), byte for byte:
//!   `SRS0=HHHH=TT=domain=local@srs-domain` and `SRS1=HHHH=hop==rest@srs-domain`.
//!
//! **Re-forwarding.** Classic addresses follow Shevek's scheme (SRS0 → SRS1, SRS1 → SRS1,
//! each reversal goes one hop back). A Microsoft-form address that *we* signed is decoded
//! and signed afresh for the new alias, so one reversal reaches the first sender. One signed
//! by another forwarder is wrapped like any other address: reversing gives back that
//! forwarder's address, which it reverses in turn. Wrapping grows the local part; past 64
//! octets forward returns [`ForwardError::TooLong`] and the relay uses its stored form.
//!
//! ```
//! use srs_relay::srs::{Options, Srs};
//!
//! let srs = Srs::new(&["a secret of at least 256 bits, from `srs-relay keygen`"], Options::default())?;
//! let now = 1_577_836_860; // fixed clock for the example; `forward`/`reverse` use the real one
//! let rewritten = srs.forward_at("bob@example.org", "john@forward.example", now)?;
//! assert!(rewritten.starts_with("john+SRS="));
//! assert!(rewritten.ends_with("=2W=example.org=bob@forward.example"));
//! assert_eq!(srs.reverse_at(&rewritten, now)?, "bob@example.org");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod address;
mod error;
mod explain;
mod hash;
mod options;
mod parts;
mod stored;
mod timestamp;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::{ForwardError, OptionsError, ReverseError};
pub use explain::{AddressForm, Examination};
pub use options::{Format, HashEncoding, Options};
pub use stored::{Decoded, TOKEN_LEN, is_token};

use address::{MAX_LOCAL_OCTETS, Mailbox};
use hash::Keys;
use parts::Parts;

/// User part of the forwarding mailbox for relayed mail (`bounces+SRS=…@default-domain`).
pub const RELAY_USER: &str = "bounces";

/// An SRS codec bound to its secrets (the first signs, all verify) and options.
#[derive(Clone)]
pub struct Srs {
    keys: Keys,
    options: Options,
}

impl fmt::Debug for Srs {
    // Never print the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srs")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Whether `domain` matches a `local_domains` entry: equal, or for an entry with a
/// leading dot, a subdomain of it (ASCII case-insensitive). The one rule the codec and
/// the relay's policy share.
pub fn domain_matches(domain: &str, entry: &str) -> bool {
    address::domain_matches(domain, entry)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Srs {
    /// Builds a codec. `secrets[0]` signs; every secret verifies (key rotation).
    pub fn new<S: AsRef<[u8]>>(secrets: &[S], options: Options) -> Result<Self, OptionsError> {
        if secrets.is_empty() {
            return Err(OptionsError::NoSecret);
        }
        if let Some(i) = secrets.iter().position(|s| s.as_ref().is_empty()) {
            return Err(OptionsError::EmptySecret(i + 1));
        }
        if !(4..=hash::CLASSIC_MAX).contains(&options.hash_length) {
            return Err(OptionsError::HashLength(options.hash_length));
        }
        if !(6..=hash::MICROSOFT_MAX).contains(&options.microsoft_hash_length) {
            return Err(OptionsError::MicrosoftHashLength(
                options.microsoft_hash_length,
            ));
        }
        if !(1..=1000).contains(&options.max_age_days) {
            return Err(OptionsError::MaxAge(options.max_age_days));
        }
        if !matches!(options.separator, '=' | '+' | '-') {
            return Err(OptionsError::Separator(options.separator));
        }
        Ok(Srs {
            keys: Keys::new(secrets),
            options,
        })
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Rewrites `sender` for mail forwarded by the mailbox `alias` (`user@domain`), now.
    /// The null sender and senders in the alias's domain or a local domain come back
    /// unchanged.
    pub fn forward(&self, sender: &str, alias: &str) -> Result<String, ForwardError> {
        self.forward_at(sender, alias, unix_now())
    }

    /// [`forward`](Self::forward) with a fixed clock (seconds since the epoch).
    pub fn forward_at(&self, sender: &str, alias: &str, now: u64) -> Result<String, ForwardError> {
        let parsed = address::parse(alias);
        let alias = match &parsed {
            Ok(alias) => alias,
            Err(e) => return Err(ForwardError::InvalidAlias(e)),
        };
        if find_microsoft_tag(&alias.local).is_some() {
            return Err(ForwardError::InvalidAlias(
                "forwarding mailbox contains +SRS=",
            ));
        }
        // Reverse would read `SRS0=…+SRS=…` (or `srs0+SRS=…`) as the classic form.
        if reads_as_classic(&alias.local) {
            return Err(ForwardError::InvalidAlias(
                "forwarding mailbox starts with SRS0 or SRS1",
            ));
        }
        self.forward_via(sender, alias, now)
    }

    /// Rewrites `sender` for mail relayed through `domain` with no forwarding mailbox (the
    /// classic SRS domain; Microsoft form: `bounces+SRS=…@domain`).
    pub fn forward_for_domain(&self, sender: &str, domain: &str) -> Result<String, ForwardError> {
        self.forward_for_domain_at(sender, domain, unix_now())
    }

    /// [`forward_for_domain`](Self::forward_for_domain) with a fixed clock.
    pub fn forward_for_domain_at(
        &self,
        sender: &str,
        domain: &str,
        now: u64,
    ) -> Result<String, ForwardError> {
        let probe = format!("{RELAY_USER}@{domain}");
        let parsed = address::parse(&probe).map_err(ForwardError::InvalidAlias)?;
        self.forward_via(sender, &parsed, now)
    }

    /// Whether `sender` is left alone when forwarded through `forwarding_domain`: the null
    /// sender, or a sender in that domain or in one of the local domains.
    pub fn is_exempt(&self, sender: &str, forwarding_domain: &str) -> bool {
        if address::is_null(sender) {
            return true;
        }
        match address::parse(sender) {
            Ok(m) => self.is_local(m.domain, forwarding_domain),
            Err(_) => false,
        }
    }

    fn is_local(&self, domain: &str, forwarding_domain: &str) -> bool {
        address::domain_matches(domain, forwarding_domain)
            || self
                .options
                .local_domains
                .iter()
                .any(|d| address::domain_matches(domain, d))
    }

    /// Forwards `sender` through the forwarding mailbox `alias` (whose user part only the
    /// Microsoft form uses).
    fn forward_via(
        &self,
        sender: &str,
        alias: &Mailbox<'_>,
        now: u64,
    ) -> Result<String, ForwardError> {
        let domain = alias.domain;
        let parsed = address::parse(sender);
        let mailbox = match &parsed {
            Ok(mailbox) => mailbox,
            // The null sender has no `@`: it is looked for only when parsing failed.
            Err(_) if address::is_null(sender) => return Ok(sender.trim_ascii().to_owned()),
            Err(e) => return Err(ForwardError::InvalidSender(e)),
        };
        if self.is_local(mailbox.domain, domain) {
            return Ok(address::strip_brackets(sender).to_owned());
        }
        if mailbox.domain_has_equals {
            // Reverse reads the domain up to the next `=`: it would come back split.
            return Err(ForwardError::InvalidSender("'=' in the domain"));
        }
        // Room for `@domain` too, so the common case below does not reallocate.
        let tail = 1 + domain.len();
        let mut local = match self.options.format {
            Format::Classic => self.classic_local(mailbox, now, tail),
            Format::Microsoft => self.microsoft_local(mailbox, &alias.local, now, tail),
        };
        // The new local part is made of the sender's fields (or pieces of them), the alias
        // user, and characters that never need quotes (SRSn, the hash and stamp alphabets,
        // `=`, `+`, `-`): when none of the former needs quotes, it does not either.
        let plain = !(mailbox.local_needs_quotes
            || mailbox.domain_needs_quotes
            || (self.options.format == Format::Microsoft && alias.local_needs_quotes));
        let length = if plain {
            local.len()
        } else {
            address::wire_len(&local)
        };
        if length > MAX_LOCAL_OCTETS {
            return Err(ForwardError::TooLong { length });
        }
        if length != local.len() {
            return Ok(address::render(&local, domain));
        }
        // The common case: no quoting, so the local part's buffer becomes the address.
        local.push('@');
        local.push_str(domain);
        Ok(local)
    }

    /// The classic local part: SRS0 for an ordinary sender, SRS1 for an SRS0/SRS1 one.
    fn classic_local(&self, sender: &Mailbox<'_>, now: u64, tail: usize) -> String {
        let local: &str = &sender.local;
        let sep = self.options.separator;
        let url = self.options.hash_encoding == HashEncoding::Base64Url;
        let len = self.options.hash_length;
        // SRSn=HASH=TT=domain=local (SRS1: SRS1=HASH=hop==rest, no longer).
        let capacity = 10 + len + sender.domain.len() + local.len() + tail;
        // SRS1 from SRS0: the rest keeps its separator, hence the `==` in the output.
        let srs1 = match classic_tag(local) {
            Some((b'0', _)) => Some((sender.domain, &local[4..])),
            // Reverse must give back an address: a hop that is no domain, or nothing after
            // it, makes this sender an ordinary one, wrapped in SRS0 like any other.
            Some((b'1', rest)) => match split3(rest) {
                Some((_, hop, rest)) if address::valid_domain(hop) && !rest.is_empty() => {
                    Some((hop, rest))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((hop, rest)) = srs1 {
            let h = self
                .keys
                .classic(&[hop.as_bytes(), rest.as_bytes()], url, len);
            let mut out = String::with_capacity(capacity);
            out.push_str("SRS1");
            out.push(sep);
            push_ascii(&mut out, &h[..len]);
            for field in [hop, rest] {
                out.push('=');
                out.push_str(field);
            }
            out
        } else {
            let tt = timestamp::encode(now);
            let parts: [&[u8]; 3] = [&tt, sender.domain.as_bytes(), local.as_bytes()];
            let h = self.keys.classic(&parts, url, len);
            let mut out = String::with_capacity(capacity);
            out.push_str("SRS0");
            out.push(sep);
            push_ascii(&mut out, &h[..len]);
            out.push('=');
            push_ascii(&mut out, &tt);
            for field in [sender.domain, local] {
                out.push('=');
                out.push_str(field);
            }
            out
        }
    }

    /// The Microsoft-form local part. A sender we signed ourselves is first decoded, so the
    /// new address leads straight back to the first sender.
    fn microsoft_local(&self, sender: &Mailbox<'_>, user: &str, now: u64, tail: usize) -> String {
        let (domain, local) = match parts::microsoft(&sender.local) {
            Ok(
                p @ Parts::Microsoft {
                    slot,
                    domain,
                    local,
                    ..
                },
            ) if self.signer(&p).is_some() && self.check_age(slot, now).is_ok() => (domain, local),
            _ => (sender.domain, &*sender.local),
        };
        let tt = timestamp::encode(now);
        let len = self.options.microsoft_hash_length;
        let parts: [&[u8]; 4] = [&tt, domain.as_bytes(), local.as_bytes(), user.as_bytes()];
        let h = self.keys.microsoft(&parts, len);
        // user+SRS=HASH=TT=domain=local
        let mut out =
            String::with_capacity(user.len() + 10 + len + domain.len() + local.len() + tail);
        out.push_str(user);
        out.push_str("+SRS=");
        push_ascii(&mut out, &h[..len]);
        out.push('=');
        push_ascii(&mut out, &tt);
        for field in [domain, local] {
            out.push('=');
            out.push_str(field);
        }
        out
    }

    /// Decodes an SRS address of ours (either form, any case, any configured secret) to
    /// the address it stands for, now. Classic SRS1 goes back one hop, to the SRS0 address
    /// at the previous forwarder.
    pub fn reverse(&self, address: &str) -> Result<String, ReverseError> {
        self.reverse_at(address, unix_now())
    }

    /// [`reverse`](Self::reverse) with a fixed clock (seconds since the epoch).
    pub fn reverse_at(&self, address: &str, now: u64) -> Result<String, ReverseError> {
        // The null sender (no `@`) fails to parse, and is NotSrs like anything else that does.
        let parsed = address::parse(address);
        let Ok(mailbox) = &parsed else {
            return Err(ReverseError::NotSrs);
        };
        let parts = parts::split(&mailbox.local)?;
        if self.signer(&parts).is_none() {
            return Err(ReverseError::BadHash);
        }
        match parts {
            Parts::Srs0 {
                slot,
                domain,
                local,
                ..
            }
            | Parts::Microsoft {
                slot,
                domain,
                local,
                ..
            } => {
                self.check_age(slot, now)?;
                Ok(render_part(mailbox, local, domain))
            }
            Parts::Srs1 { hop, rest, .. } => {
                if mailbox.local_needs_quotes {
                    Ok(address::render(&format!("SRS0{rest}"), hop))
                } else {
                    Ok(address::render_plain(&["SRS0", rest], hop))
                }
            }
        }
    }

    /// The index of the secret that signed `parts`, if one did.
    fn signer(&self, parts: &Parts<'_>) -> Option<usize> {
        match *parts {
            Parts::Srs0 {
                hash,
                tt,
                domain,
                local,
                ..
            } => self.keys.classic_verify(
                hash,
                &[tt.as_bytes(), domain.as_bytes(), local.as_bytes()],
                self.options.hash_length,
            ),
            Parts::Srs1 { hash, hop, rest } => self.keys.classic_verify(
                hash,
                &[hop.as_bytes(), rest.as_bytes()],
                self.options.hash_length,
            ),
            Parts::Microsoft {
                user,
                hash,
                tt,
                domain,
                local,
                ..
            } => self.keys.microsoft_verify(
                hash,
                &[
                    tt.as_bytes(),
                    domain.as_bytes(),
                    local.as_bytes(),
                    user.as_bytes(),
                ],
                self.options.microsoft_hash_length,
            ),
        }
    }

    fn check_age(&self, slot: u32, now: u64) -> Result<(), ReverseError> {
        let age_days = timestamp::age_days(slot, now);
        if age_days > self.options.max_age_days {
            return Err(ReverseError::Expired {
                age_days,
                max_age_days: self.options.max_age_days,
            });
        }
        Ok(())
    }
}

/// `local@domain`, for a `local` cut from `mailbox`'s local part: quoted only if it needs
/// it, which it cannot if the whole did not.
#[inline]
fn render_part(mailbox: &Mailbox<'_>, local: &str, domain: &str) -> String {
    if mailbox.local_needs_quotes {
        address::render(local, domain)
    } else {
        address::render_plain(&["", local], domain)
    }
}

/// `SRS0`/`SRS1` followed by `=`, `+` or `-` (any case): the digit and what follows.
#[inline]
fn classic_tag(local: &str) -> Option<(u8, &str)> {
    let b = local.as_bytes();
    if b.len() > 5
        && b[..3].eq_ignore_ascii_case(b"SRS")
        && matches!(b[3], b'0' | b'1')
        && matches!(b[4], b'=' | b'+' | b'-')
    {
        Some((b[3], &local[5..]))
    } else {
        None
    }
}

/// Whether the Microsoft-form local part `<user>+SRS=…` would carry a classic tag.
fn reads_as_classic(user: &str) -> bool {
    let b = user.as_bytes();
    // Past a four-byte user, the separator is the `+` of `+SRS=`.
    let fifth = b.get(4).copied().unwrap_or(b'+');
    b.len() >= 4
        && b[..3].eq_ignore_ascii_case(b"SRS")
        && matches!(b[3], b'0' | b'1')
        && matches!(fifth, b'=' | b'+' | b'-')
}

/// Byte offset of the first `+SRS=` (any case) in a local part.
fn find_microsoft_tag(local: &str) -> Option<usize> {
    local
        .as_bytes()
        .windows(5)
        .position(|w| w.eq_ignore_ascii_case(b"+SRS="))
}

/// Splits at the first two `=`: (a, b, rest), where rest may hold more `=`. (The first two
/// fields are a few characters long, too short for `splitn`'s searcher; a word at a time,
/// both are found in the first.)
#[inline]
fn split3(s: &str) -> Option<(&str, &str, &str)> {
    let (a, rest) = split_eq(s)?;
    let (b, rest) = split_eq(rest)?;
    Some((a, b, rest))
}

/// Splits at the first `=`, a word at a time (for a domain).
#[inline]
fn split_eq(s: &str) -> Option<(&str, &str)> {
    let i = address::find_byte(s.as_bytes(), b'=')?;
    Some((&s[..i], &s[i + 1..]))
}

/// Appends hash or stamp characters (ASCII alphabets), with no UTF-8 check to pay for.
#[inline]
fn push_ascii(out: &mut String, bytes: &[u8]) {
    debug_assert!(bytes.is_ascii());
    for &b in bytes {
        out.push(char::from(b));
    }
}

#[cfg(test)]
mod tests;
