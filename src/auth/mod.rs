//! DMARC-safe forwarding (issue 16): what arriving mail is checked for, and the ARC seal
//! on what the relay forwards, with the mail-auth crate (Stalwart).
//!
//! # Where this runs
//!
//! DATA streams into the spool as it arrives (in memory up to 64 KiB, then an unnamed
//! file). DKIM and ARC need the whole message, so the checks run after the final dot and
//! before the `250`: on the message in memory, or read back once from its file. The
//! results and the seal are *added* to the message before it is queued (an edit of the
//! incoming message: [`Incoming::edit`](crate::spool::Incoming::edit)), not at delivery
//! time: the queue file keeps holding the octets exactly as they are sent, so the seal is
//! made once per message rather than once per attempt and envelope, covers the message
//! as sent, and delivery, DSNs and the spool format stay as they were. The only other
//! edit is the removal of `Authentication-Results` fields that claim our authserv-id
//! (RFC 8601 §5); nothing a DKIM signature covers changes.
//!
//! DNS goes through hickory (the resolver delivery uses, `[dns]`), each query bounded by
//! `dns.timeout`, the whole check by `auth.timeout`: a DNS failure is `temperror`, never
//! an error of the session. Parsed SPF and DMARC records are kept for their TTL, bounded
//! by size (`src/auth/cache.rs`).

mod cache;
mod headers;
pub mod keys;

use std::net::IpAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimError, DkimSigner, Done};
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};

pub use headers::forged_results;
pub use keys::SigningKey;

use crate::config::{Config, ConfigError, DmarcRejectAction};

/// Header fields the ARC-Message-Signature covers, when present (RFC 8617 §4.1.2 refers
/// to DKIM's choice: those that make the message what it is).
const SEALED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "DKIM-Signature",
];

/// Header fields our DKIM signatures cover, when present.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "X-Original-From",
];

/// Answers hickory keeps for the checks (NXDOMAIN, DKIM and ARC keys, and what
/// [`cache`] keeps parsed). hickory counts answers, not bytes, and the names are the
/// sender's to choose: an answer may be a 64 KiB DNS message of thousands of records,
/// perhaps a megabyte once parsed. So it keeps few: the most used (NXDOMAIN for the
/// `_dmarc.` of top-level domains, the keys of big senders).
const RESOLVER_CACHE_ENTRIES: u64 = 64;

/// The ARC sealer for the configured key, and a DKIM signer with the same key, domain
/// and selector (for `rewrite-from`, and the relay's own mail).
enum Sealer {
    Ed25519(Box<Signers<Ed25519Key>>),
    Rsa(Box<Signers<RsaKey<Sha256>>>),
}

/// An ARC sealer and a DKIM signer with one key.
type Signers<K> = (ArcSealer<K, Done>, DkimSigner<K, Done>);

impl Sealer {
    /// The `DKIM-Signature` field for `message` (whole, as it will be sent).
    fn dkim_sign(&self, message: &[u8]) -> Result<String, mail_auth::Error> {
        match self {
            Sealer::Ed25519(b) => b.1.sign(message).map(|s| s.to_header()),
            Sealer::Rsa(b) => b.1.sign(message).map(|s| s.to_header()),
        }
    }
}

/// The checks and the seal, as `[auth]`, `[arc]` and `[dns]` set them up.
pub struct Authenticator {
    resolver: MessageAuthenticator,
    cache: cache::DnsCache,
    authserv_id: String,
    /// Our name, for SPF's `%{r}` (`server.hostname`).
    hostname: String,
    timeout: Duration,
    sealer: Option<Sealer>,
    /// `auth.dmarc_reject_action`.
    pub dmarc_reject_action: DmarcRejectAction,
}

/// What the checks of one message found, in short: for the log and the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub spf: String,
    pub dkim: String,
    pub dmarc: String,
    /// The policy the header From domain publishes (`none`, `quarantine`, `reject`).
    pub dmarc_policy: String,
    pub arc: String,
    /// The instance of our ARC set, if the message was sealed.
    pub sealed: Option<u32>,
    /// The header From was rewritten (`auth.dmarc_reject_action = "rewrite-from"`).
    pub from_rewritten: bool,
    /// SPF passed for MAIL FROM, or a DKIM signature aligned with the header From did:
    /// the sender may get DSNs (no backscatter to forged senders).
    pub sender_authenticated: bool,
}

impl Summary {
    /// `spf=pass dkim=pass dmarc=pass arc=none`.
    pub fn line(&self) -> String {
        format!(
            "spf={} dkim={} dmarc={} arc={}",
            self.spf, self.dkim, self.dmarc, self.arc
        )
    }

    /// DMARC failed for a domain that asks for rejection.
    pub fn dmarc_reject(&self) -> bool {
        self.dmarc == "fail" && self.dmarc_policy == "reject"
    }

    /// As a JSON object, for the trace.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "spf": self.spf,
            "dkim": self.dkim,
            "dmarc": self.dmarc,
            "dmarc_policy": self.dmarc_policy,
            "arc": self.arc,
            "arc_sealed": self.sealed,
            "from_rewritten": self.from_rewritten,
            "sender_authenticated": self.sender_authenticated,
        })
    }
}

/// The outcome of [`Authenticator::check`]: how the message is to be edited, and why.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Header fields to put in front: `Authentication-Results`, then the ARC set.
    pub prepend: String,
    /// Octet ranges of the message to leave out (forged results fields).
    pub remove: Vec<Range<u64>>,
    pub summary: Summary,
    /// How long the checks and the seal took.
    pub elapsed: Duration,
}

/// `auth.dmarc_reject_action` and the sealer of `arc.key` (its file read and parsed), and
/// the rule that binds them: "rewrite-from" needs a key.
fn action_and_sealer(cfg: &Config) -> Result<(DmarcRejectAction, Option<Sealer>), ConfigError> {
    let action = cfg.dmarc_reject_action()?;
    let sealer = match &cfg.arc.key {
        None => None,
        Some(path) => Some(sealer(cfg, &cfg.resolve(path))?),
    };
    if action == DmarcRejectAction::RewriteFrom && sealer.is_none() {
        return Err(ConfigError::key(
            "auth.dmarc_reject_action",
            "\"rewrite-from\" needs arc.key: the rewritten message is DKIM-signed with it",
        ));
    }
    Ok((action, sealer))
}

impl Authenticator {
    /// The authenticator the configuration asks for: `None` when neither `auth.verify`
    /// nor `arc.key` is set. Reads the key file.
    pub fn from_config(cfg: &Config) -> Result<Option<Authenticator>, ConfigError> {
        let (dmarc_reject_action, sealer) = action_and_sealer(cfg)?;
        let timeout = crate::config::duration("auth.timeout", &cfg.auth.timeout)?;
        if timeout.is_zero() {
            return Err(ConfigError::key("auth.timeout", "must be longer than zero"));
        }
        let dns = cfg.dns_settings()?;
        if !cfg.auth.verify && sealer.is_none() {
            return Ok(None);
        }
        let resolver = crate::delivery::build_resolver(&dns, Some(RESOLVER_CACHE_ENTRIES))
            .map_err(|e| ConfigError::key("dns.servers", e))?;
        let authserv_id = match cfg.auth.authserv_id.trim() {
            "" => cfg.server.hostname.trim().to_owned(),
            id => id.to_owned(),
        };
        Ok(Some(Authenticator {
            resolver: MessageAuthenticator(resolver),
            cache: cache::DnsCache::new(),
            authserv_id,
            hostname: cfg.server.hostname.trim().to_owned(),
            timeout,
            sealer,
            dmarc_reject_action,
        }))
    }

    /// Checks `[auth]` and `[arc]` as [`Authenticator::from_config`] does (the key file
    /// read and parsed) without setting up a resolver: for `srs-relay check-config`.
    pub fn check_config(cfg: &Config) -> Result<(), ConfigError> {
        action_and_sealer(cfg).map(|_| ())
    }

    /// The authserv-id of our results.
    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// Checks `message` (as received, our `Received:` first) that came from `ip`, which
    /// said `helo` and `MAIL FROM:<mail_from>`: SPF, DKIM, ARC and DMARC; makes the
    /// results header and, with a key, the ARC set; finds forged results to remove.
    /// `forwarder` is the address the message was sent to (the alias): the header From
    /// of a `rewrite-from`.
    pub async fn check(
        &self,
        message: &[u8],
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        forwarder: &str,
    ) -> Checked {
        let started = Instant::now();
        let mut remove = forged_results(message, &self.authserv_id);
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // Not a message mail-auth can read (no header section): nothing to say of it.
            let summary = Summary {
                spf: "none".into(),
                dkim: "none".into(),
                dmarc: "none".into(),
                dmarc_policy: "none".into(),
                arc: "none".into(),
                sealed: None,
                from_rewritten: false,
                sender_authenticated: false,
            };
            return Checked {
                prepend: format!("Authentication-Results: {}; none\r\n", self.authserv_id),
                remove,
                summary,
                elapsed: started.elapsed(),
            };
        };
        let checks =
            tokio::time::timeout(self.timeout, self.verify(&parsed, ip, helo, mail_from)).await;
        let (prepend, summary) = match checks {
            Ok(v) => {
                let arrival = Arrival {
                    ip,
                    helo,
                    mail_from,
                    forwarder,
                };
                let seal = || self.results_and_seal(&parsed, &arrival, &mut remove, v);
                // RSA signatures (two per seal, a third for rewrite-from) take about a
                // millisecond each: off the worker that drives other sessions' I/O, when
                // the runtime has other workers to take it over.
                let rsa = matches!(self.sealer, Some(Sealer::Rsa(_)));
                let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
                    == tokio::runtime::RuntimeFlavor::MultiThread;
                if rsa && multi_thread {
                    tokio::task::block_in_place(seal)
                } else {
                    seal()
                }
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "mail authentication timed out: temperror");
                let summary = Summary {
                    spf: "temperror".into(),
                    dkim: "temperror".into(),
                    dmarc: "temperror".into(),
                    dmarc_policy: "none".into(),
                    arc: "temperror".into(),
                    sealed: None,
                    from_rewritten: false,
                    sender_authenticated: false,
                };
                let header = format!(
                    "Authentication-Results: {};\r\n\tspf=temperror;\r\n\tdkim=temperror;\r\n\
                     \tarc=temperror;\r\n\tdmarc=temperror (verification timed out)\r\n",
                    self.authserv_id
                );
                (header, summary)
            }
        };
        Checked {
            prepend,
            remove,
            summary,
            elapsed: started.elapsed(),
        }
    }

    async fn verify<'x>(
        &'x self,
        message: &'x AuthenticatedMessage<'x>,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> Verified<'x> {
        let helo_domain = helo_domain(helo);
        let spf = if mail_from.is_empty() {
            self.resolver
                .verify_spf(self.cache.params(SpfParameters::verify_ehlo(
                    ip,
                    helo_domain,
                    &self.hostname,
                )))
                .await
        } else {
            self.resolver
                .verify_spf(self.cache.params(SpfParameters::verify_mail_from(
                    ip,
                    helo_domain,
                    &self.hostname,
                    mail_from,
                )))
                .await
        };
        let dkim = body_hash_mismatch_is_fail(
            message,
            self.resolver.verify_dkim(self.cache.params(message)).await,
        );
        let arc = self.resolver.verify_arc(self.cache.params(message)).await;
        let mail_from_domain = match mail_from.rsplit_once('@') {
            Some((_, d)) => d,
            None => helo_domain,
        };
        let dmarc = if message.from().is_empty() {
            None
        } else {
            Some(
                self.resolver
                    .verify_dmarc(self.cache.params(DmarcParameters::new(
                        message,
                        &dkim,
                        mail_from_domain,
                        &spf,
                    )))
                    .await,
            )
        };
        Verified {
            spf,
            dkim,
            arc,
            dmarc,
        }
    }

    /// The results header (and ARC set) from what [`Authenticator::verify`] found, with
    /// the DMARC check that needs those results.
    fn results_and_seal(
        &self,
        message: &AuthenticatedMessage<'_>,
        arrival: &Arrival<'_>,
        remove: &mut Vec<Range<u64>>,
        v: Verified<'_>,
    ) -> (String, Summary) {
        let Arrival {
            ip,
            helo,
            mail_from,
            forwarder,
        } = *arrival;
        let dmarc = &v.dmarc;
        let header_from = message.from().to_owned();
        let results = AuthenticationResults::new(&self.authserv_id)
            .with_spf_mailfrom_result(&v.spf, ip, mail_from, helo_domain(helo))
            .with_dkim_results(&v.dkim, &header_from)
            .with_arc_result(&v.arc, ip);
        let results = match &dmarc {
            Some(d) => results.with_dmarc_result(d),
            None => results,
        };
        let mut summary = Summary {
            spf: spf_word(v.spf.result()).into(),
            dkim: dkim_word(&v.dkim),
            dmarc: dmarc
                .as_ref()
                .map_or("none".into(), |d| dmarc_word(&d.result()).into()),
            dmarc_policy: match dmarc.as_ref().map(|d| d.policy()) {
                Some(Policy::Reject) => "reject",
                Some(Policy::Quarantine) => "quarantine",
                _ => "none",
            }
            .into(),
            arc: dkim_result_word(v.arc.result()).into(),
            sealed: None,
            from_rewritten: false,
            sender_authenticated: (!mail_from.is_empty() && v.spf.result() == SpfResult::Pass)
                || dmarc
                    .as_ref()
                    .is_some_and(|d| d.dkim_result() == &DmarcResult::Pass),
        };
        // rewrite-from: our From (and Reply-To, X-Original-From) and our DKIM signature in
        // front of the message, its own From left out.
        let mut ours = String::new();
        let rewritten: Option<Vec<u8>> = match &self.sealer {
            Some(sealer)
                if summary.dmarc_reject()
                    && self.dmarc_reject_action == DmarcRejectAction::RewriteFrom =>
            {
                self.rewrite_from(message.raw_message, forwarder, sealer, remove, &mut ours)
            }
            _ => None,
        };
        summary.from_rewritten = rewritten.is_some();
        let mut prepend = results.to_header() + &ours;
        let Some(sealer) = &self.sealer else {
            return (prepend, summary);
        };
        if !v.arc.can_be_sealed() {
            tracing::info!("not sealed: the ARC chain already failed (cv=fail)");
            return (prepend, summary);
        }
        // The seal covers the message as sent: the rewritten one, when it was.
        let reparsed = rewritten.as_deref().and_then(AuthenticatedMessage::parse);
        let sealed_message = reparsed.as_ref().unwrap_or(message);
        let sealed = match sealer {
            Sealer::Ed25519(b) => {
                b.0.seal(sealed_message, &results, &v.arc)
                    .map(|set| (set.seal.i, set.to_header()))
            }
            Sealer::Rsa(b) => {
                b.0.seal(sealed_message, &results, &v.arc)
                    .map(|set| (set.seal.i, set.to_header()))
            }
        };
        match sealed {
            Ok((i, set)) => {
                summary.sealed = Some(i);
                // The ARC set above the results: the newest trace fields first.
                prepend = set + &prepend;
            }
            Err(e) => tracing::warn!(error = %e, "ARC seal failed; forwarded unsealed"),
        }
        (prepend, summary)
    }
}

impl Authenticator {
    /// For `rewrite-from`: adds the header From's range to `remove`, our fields to
    /// `ours` (DKIM-Signature, From, Reply-To unless the message has one,
    /// X-Original-From), and returns the message as it will be sent from our fields on.
    /// `None` (nothing changed) without a From to rewrite or a forwarding address.
    fn rewrite_from(
        &self,
        raw: &[u8],
        forwarder: &str,
        sealer: &Sealer,
        remove: &mut Vec<Range<u64>>,
        ours: &mut String,
    ) -> Option<Vec<u8>> {
        if forwarder.is_empty() || !forwarder.contains('@') {
            return None;
        }
        let named = |n: &'static str| {
            headers::fields(raw)
                .find(|(_, name)| name.trim_ascii().eq_ignore_ascii_case(n.as_bytes()))
        };
        let (from_range, from_name) = named("From")?;
        let has_reply_to = named("Reply-To").is_some();
        let parsed = mail_parser::MessageParser::new().parse_headers(raw)?;
        let original = parsed.from().and_then(|a| a.first())?;
        let original_address = original.address()?.to_owned();
        let display = original.name().unwrap_or(&original_address).to_owned();
        let original_value =
            String::from_utf8_lossy(&raw[from_range.start + from_name.len() + 1..from_range.end])
                .trim()
                .to_owned();
        let mut fields_text = format!("From: {} <{forwarder}>\r\n", phrase(&display));
        if !has_reply_to {
            fields_text.push_str(&format!("Reply-To: <{original_address}>\r\n"));
        }
        fields_text.push_str(&format!("X-Original-From: {original_value}\r\n"));
        remove.push(from_range.start as u64..from_range.end as u64);
        remove.sort_by_key(|r| r.start);
        let mut sent = fields_text.clone().into_bytes();
        let mut at = 0usize;
        for r in remove.iter() {
            sent.extend_from_slice(&raw[at..r.start as usize]);
            at = r.end as usize;
        }
        sent.extend_from_slice(&raw[at..]);
        let signature = match sealer.dkim_sign(&sent) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "DKIM signing failed; From not rewritten");
                remove.retain(|r| r.start != from_range.start as u64);
                return None;
            }
        };
        ours.push_str(&signature);
        ours.push_str(&fields_text);
        let mut whole = signature.into_bytes();
        whole.extend_from_slice(&sent);
        Some(whole)
    }
}

/// A display name as an RFC 5322 phrase: a quoted string when it is printable ASCII,
/// else an RFC 2047 encoded word (UTF-8, base64).
fn phrase(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    if name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        format!(
            "=?utf-8?b?{}?=",
            data_encoding::BASE64.encode(name.as_bytes())
        )
    }
}

/// DKIM signatures on the relay's own mail (DSNs, delay warnings): `arc.key` and
/// `arc.selector`, for `srs.default_domain`.
pub struct OwnMailSigner {
    sealer: Sealer,
    domain: String,
}

impl std::fmt::Debug for OwnMailSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnMailSigner")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl OwnMailSigner {
    /// The signer the configuration asks for: `None` without `arc.key` or
    /// `srs.default_domain`.
    pub fn from_config(cfg: &Config) -> Result<Option<OwnMailSigner>, ConfigError> {
        let (Some(path), Some(domain)) = (&cfg.arc.key, &cfg.srs.default_domain) else {
            return Ok(None);
        };
        let domain = domain.trim().to_ascii_lowercase();
        let sealer = make_sealer(cfg, &cfg.resolve(path), &domain)?;
        Ok(Some(OwnMailSigner { sealer, domain }))
    }

    /// The domain signed for (`d=`), also the domain of the DSN's `From:`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `message` with a `DKIM-Signature` field in front; unsigned (and logged) if signing
    /// fails.
    pub fn sign(&self, message: Vec<u8>) -> Vec<u8> {
        match self.sealer.dkim_sign(&message) {
            Ok(field) => {
                let mut out = field.into_bytes();
                out.extend_from_slice(&message);
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "DKIM signing of our own message failed; sent unsigned");
                message
            }
        }
    }
}

/// A signature whose body hash does not match is `fail` (RFC 6376 §6.3: PERMFAIL "body
/// hash did not verify"; dkimpy says the same), where mail-auth says `neutral`: the
/// common breakage (a list footer) then reads as what it is.
fn body_hash_mismatch_is_fail<'x>(
    message: &'x AuthenticatedMessage<'x>,
    outputs: Vec<DkimOutput<'x>>,
) -> Vec<DkimOutput<'x>> {
    outputs
        .into_iter()
        .map(|o| {
            let mismatch = matches!(
                o.result(),
                DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch))
            );
            let signature = o.signature().and_then(|sig| {
                message
                    .dkim_headers
                    .iter()
                    .find(|h| std::ptr::eq(&h.header, sig))
                    .map(|h| &h.header)
            });
            match (mismatch, signature) {
                (true, Some(sig)) => {
                    DkimOutput::fail(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch))
                        .with_signature(sig)
                }
                _ => o,
            }
        })
        .collect()
}

/// Where a message came from, as the session knows it.
#[derive(Clone, Copy)]
struct Arrival<'a> {
    ip: IpAddr,
    helo: &'a str,
    mail_from: &'a str,
    /// The address it was sent to.
    forwarder: &'a str,
}

/// What the DNS-bound checks found.
struct Verified<'x> {
    spf: SpfOutput,
    dkim: Vec<DkimOutput<'x>>,
    arc: ArcOutput<'x>,
    /// None without a header From.
    dmarc: Option<DmarcOutput>,
}

/// The sealer of `arc.key` (at `path`) for `arc.domain` (or `srs.default_domain`) and
/// `arc.selector`.
fn sealer(cfg: &Config, path: &std::path::Path) -> Result<Sealer, ConfigError> {
    let domain = match cfg.arc.domain.trim() {
        "" => cfg.srs.default_domain.as_deref().unwrap_or_default().trim(),
        d => d,
    };
    if domain.is_empty() {
        return Err(ConfigError::key(
            "arc.domain",
            "needed with arc.key (or srs.default_domain)",
        ));
    }
    make_sealer(cfg, path, domain)
}

/// The signers of the key at `path` with `arc.selector`, for `domain`.
fn make_sealer(cfg: &Config, path: &std::path::Path, domain: &str) -> Result<Sealer, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::key("arc.key", format!("{}: {e}", path.display())))?;
    let key = SigningKey::from_pem(&pem)
        .map_err(|e| ConfigError::key("arc.key", format!("{}: {e}", path.display())))?;
    let selector = cfg.arc.selector.trim();
    if selector.is_empty() {
        return Err(ConfigError::key("arc.selector", "needed with arc.key"));
    }
    // The key once for each signer (neither lends it out).
    let again = SigningKey::from_pem(&pem)
        .map_err(|e| ConfigError::key("arc.key", format!("{}: {e}", path.display())))?;
    Ok(match (key, again) {
        (SigningKey::Ed25519(k), SigningKey::Ed25519(d)) => {
            Sealer::Ed25519(signers(k, d, domain, selector))
        }
        (SigningKey::Rsa(k), SigningKey::Rsa(d)) => Sealer::Rsa(signers(k, d, domain, selector)),
        _ => return Err(ConfigError::key("arc.key", "read as two kinds of key")),
    })
}

/// The ARC sealer (with `seal`) and the DKIM signer (with `sign`), each with its copy of
/// one key, for `domain` and `selector`.
fn signers<K: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
    seal: K,
    sign: K,
    domain: &str,
    selector: &str,
) -> Box<Signers<K>> {
    Box::new((
        ArcSealer::from_key(seal)
            .domain(domain)
            .selector(selector)
            .headers(SEALED_HEADERS.iter().copied()),
        DkimSigner::from_key(sign)
            .domain(domain)
            .selector(selector)
            .headers(SIGNED_HEADERS.iter().copied()),
    ))
}

/// The domain of a HELO/EHLO argument (an address literal stays as it is).
fn helo_domain(helo: &str) -> &str {
    helo.trim().trim_end_matches('.')
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_result_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

/// The DKIM results of all signatures: `pass`, `fail`, or `pass,fail` for several.
fn dkim_word(outputs: &[DkimOutput<'_>]) -> String {
    if outputs.is_empty() {
        return "none".into();
    }
    outputs
        .iter()
        .map(|o| dkim_result_word(o.result()))
        .collect::<Vec<_>>()
        .join(",")
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_become_quoted_strings_or_encoded_words() {
        assert_eq!(phrase("Alice"), "\"Alice\"");
        assert_eq!(phrase("A \"B\" \\ C"), "\"A \\\"B\\\" \\\\ C\"");
        assert_eq!(phrase("Zoë"), "=?utf-8?b?Wm/Dqw==?=");
        // No line break can be smuggled into the new From.
        assert_eq!(phrase("Eve\r\nBcc: x@y"), "\"EveBcc: x@y\"");
    }

    #[test]
    fn a_summary_reads_as_one_line_and_says_when_dmarc_asks_for_rejection() {
        let mut s = Summary {
            spf: "none".into(),
            dkim: "fail".into(),
            dmarc: "fail".into(),
            dmarc_policy: "reject".into(),
            arc: "none".into(),
            sealed: Some(1),
            from_rewritten: false,
            sender_authenticated: false,
        };
        assert_eq!(s.line(), "spf=none dkim=fail dmarc=fail arc=none");
        assert!(s.dmarc_reject());
        s.dmarc_policy = "quarantine".into();
        assert!(!s.dmarc_reject());
        assert_eq!(s.to_json()["arc_sealed"], 1);
    }
}
