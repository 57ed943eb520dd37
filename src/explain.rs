//! What `srs-relay explain ADDRESS` and the dashboard's Explain page say: every hop of an
//! SRS address, field by field, and where a bounce to it goes or exactly why the relay
//! refuses it. The hops are followed as the relay does at RCPT (at most 3, while the
//! address decodes into one of our domains).

use serde_json::json;

use crate::config::{BounceSenders, Config};
use crate::policy::{Policy, Recipient};
use crate::srs::{AddressForm, Decoded, Examination, ReverseError, Srs};

/// One hop: the address and what it says, or why it cannot be read.
pub struct Hop {
    address: String,
    examined: Result<Examination, ReverseError>,
    /// Stored form: the sender the store has for the token.
    stored: Option<Option<String>>,
}

/// The end of the walk.
pub enum Verdict {
    GoesTo(String),
    Refused(String),
}

/// The walk through an address's hops, and where it ends.
pub struct Explanation {
    pub hops: Vec<Hop>,
    pub verdict: Verdict,
    /// `srs.bounce_senders = null`: only mail from `<>` is taken for this address.
    pub only_from_null_sender: bool,
    pub now: u64,
}

/// Explains `address` at `now` as the relay configured by `cfg` would treat it at RCPT.
/// `stored` looks a stored-form token up in `srs.store`.
pub fn explain(
    cfg: &Config,
    srs: &Srs,
    address: &str,
    now: u64,
    stored: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
) -> Result<Explanation, String> {
    let policy = Policy::from_config(cfg).map_err(|e| e.to_string())?;
    let users = policy.alias_users();
    let candidates: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut hops: Vec<Hop> = Vec::new();
    let mut current = address.to_owned();
    // At RCPT only an address in one of our domains, not an alias, is decoded (as from a
    // stranger: a trusted client's mail to another domain is relayed as it is).
    let stranger = std::net::IpAddr::from([192, 0, 2, 1]);
    let first = match policy.recipient(address, stranger) {
        Recipient::UnknownLocal => None,
        Recipient::Alias { .. } => Some("an alias of ours, not an SRS address".to_owned()),
        Recipient::Denied | Recipient::Relay => Some(
            "not in one of our domains (srs.local_domains, srs.default_domain, the aliases' domains): the relay does not decode it but refuses it (550 5.7.1 relaying denied), or relays it as it is for a trusted client"
                .to_owned(),
        ),
    };
    let verdict = loop {
        if let Some(reason) = &first {
            break Verdict::Refused(reason.clone());
        }
        if hops.len() == 3 {
            break Verdict::Refused(
                "more than 3 hops back through our own domains; refused as unknown".into(),
            );
        }
        let examined = srs.examine_at(&current, now, &candidates);
        if matches!(examined, Err(ReverseError::NotSrs)) {
            break if hops.is_empty() {
                Verdict::Refused("not an SRS address".into())
            } else {
                Verdict::GoesTo(current)
            };
        }
        let mut hop = Hop {
            address: current.clone(),
            examined,
            stored: None,
        };
        let next = match &hop.examined {
            Err(e) => Err(e.to_string()),
            Ok(e) => match &e.verdict {
                Ok(Decoded::Address(a)) => Ok(a.clone()),
                Ok(Decoded::Stored { token }) => {
                    let found = stored(token)?;
                    hop.stored = Some(found.clone());
                    found.ok_or_else(|| "its token is unknown or expired in srs.store".into())
                }
                Err(err) => Err(why(e, err)),
            },
        };
        hops.push(hop);
        match next {
            Err(reason) => break Verdict::Refused(reason),
            Ok(next) => {
                let ours = next
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| policy.is_local_domain(d));
                if !ours {
                    break Verdict::GoesTo(next);
                }
                current = next;
            }
        }
    };
    // srs.bounce_senders = null: the relay takes mail to its SRS addresses only from <>.
    let only_from_null_sender = matches!(
        cfg.srs.bounce_senders().map_err(|e| e.to_string())?,
        BounceSenders::Null
    ) && matches!(verdict, Verdict::GoesTo(_));
    Ok(Explanation {
        hops,
        verdict,
        only_from_null_sender,
        now,
    })
}

impl Explanation {
    /// Why the relay refuses it, or `None` if a bounce to it goes on.
    pub fn refused(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::GoesTo(_) => None,
            Verdict::Refused(r) => Some(r),
        }
    }

    /// As `srs-relay explain` prints it; `secret` names the i-th secret (never shows it).
    pub fn text(&self, secret: &dyn Fn(usize) -> String) -> String {
        let mut out = to_text(&self.hops, &self.verdict, secret);
        if self.only_from_null_sender {
            out.push_str("note: srs.bounce_senders = null: only mail from the null sender <> is taken (550 5.7.1 otherwise)\n");
        }
        out
    }

    /// As `srs-relay explain --json` prints it.
    pub fn json(&self, secret: &dyn Fn(usize) -> String) -> serde_json::Value {
        let mut out = to_json(&self.hops, &self.verdict, secret, self.now);
        out["only_from_null_sender"] = self.only_from_null_sender.into();
        out
    }
}

/// Why a checked address is refused, in a postmaster's words.
fn why(e: &Examination, err: &ReverseError) -> String {
    match err {
        ReverseError::BadHash => match (&e.made_for, &e.alias_user) {
            (Some(made_for), Some(user)) => format!(
                "wrong alias: signed for {made_for}@{}, not {user}@{}; a bounce must come back to the address the message was forwarded from",
                e.forwarder, e.forwarder
            ),
            _ => "bad hash: not signed by any configured secret; made by another forwarder or altered".into(),
        },
        ReverseError::Expired {
            age_days,
            max_age_days,
        } if *age_days > 1000 => format!(
            "expired: its timestamp is {age_days} days back (or in the future), max_age_days is {max_age_days}"
        ),
        ReverseError::Expired {
            age_days,
            max_age_days,
        } => format!("expired: made {age_days} days ago, max_age_days is {max_age_days}"),
        other => other.to_string(),
    }
}

fn to_text(hops: &[Hop], verdict: &Verdict, secret: &dyn Fn(usize) -> String) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (n, hop) in hops.iter().enumerate() {
        let _ = writeln!(out, "hop {}  {}", n + 1, hop.address);
        let mut line = |name: &str, value: &str| {
            let _ = writeln!(out, "    {name:<11} {value}");
        };
        let e = match &hop.examined {
            Ok(e) => e,
            Err(err) => {
                line("malformed", &err.to_string());
                continue;
            }
        };
        let form = match (&e.alias_user, e.form) {
            (Some(u), AddressForm::Microsoft) => {
                format!("{} for alias user {u}", e.form.describe())
            }
            _ => e.form.describe().to_owned(),
        };
        line("form", &form);
        line("forwarder", &e.forwarder);
        if let Some(hop) = &e.hop {
            line("previous", &format!("{hop} (the forwarder before us)"));
        }
        if let Some(token) = &e.token {
            line("token", token);
        }
        if let Some(to) = &e.decodes_to {
            line("stands for", to);
        }
        if let Some(stored) = &hop.stored {
            line(
                "store",
                stored
                    .as_deref()
                    .unwrap_or("no sender for this token (unknown or expired)"),
            );
        }
        if let Some(age) = e.age_days {
            let left = i64::from(e.max_age_days) - i64::from(age);
            let until = if left >= 0 {
                format!("accepted for {left} more day(s)")
            } else {
                format!("expired {} day(s) ago", -left)
            };
            line(
                "made",
                &format!("{age} day(s) ago; max_age_days {}: {until}", e.max_age_days),
            );
        }
        let hash = match e.signed_by {
            Some(i) => format!("verifies under {}", secret(i)),
            None => match &e.made_for {
                Some(m) => format!("does not verify for this alias (it does for {m})"),
                None => "does not verify under any configured secret".into(),
            },
        };
        line("hash", &hash);
    }
    match verdict {
        Verdict::GoesTo(a) => {
            let _ = writeln!(out, "verdict: a bounce to this address goes to {a}");
        }
        Verdict::Refused(r) => {
            let _ = writeln!(out, "verdict: refused ({r})");
        }
    }
    out
}

fn to_json(
    hops: &[Hop],
    verdict: &Verdict,
    secret: &dyn Fn(usize) -> String,
    now: u64,
) -> serde_json::Value {
    let hops: Vec<serde_json::Value> = hops
        .iter()
        .map(|hop| match &hop.examined {
            Err(err) => json!({ "address": hop.address, "malformed": err.to_string() }),
            Ok(e) => json!({
                "address": hop.address,
                "form": match e.form {
                    AddressForm::Microsoft => "microsoft",
                    AddressForm::Srs0 => "srs0",
                    AddressForm::Srs1 => "srs1",
                    AddressForm::Stored => "stored",
                },
                "forwarder": e.forwarder,
                "alias_user": e.alias_user,
                "made_for": e.made_for,
                "previous_forwarder": e.hop,
                "token": e.token,
                "stands_for": e.decodes_to,
                "stored_sender": hop.stored.clone().flatten(),
                "age_days": e.age_days,
                "max_age_days": e.max_age_days,
                "verifies": e.signed_by.is_some(),
                "secret": e.signed_by.map(secret),
            }),
        })
        .collect();
    let (accepted, goes_to, reason) = match verdict {
        Verdict::GoesTo(a) => (true, Some(a.as_str()), None),
        Verdict::Refused(r) => (false, None, Some(r.as_str())),
    };
    json!({
        "now": now,
        "hops": hops,
        "accepted": accepted,
        "goes_to": goes_to,
        "reason": reason,
    })
}
