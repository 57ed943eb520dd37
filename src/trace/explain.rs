//! One line for `trace show` on what a failure means and what to do about it.

use super::event::{Event, Kind};

/// The advice for `event`, if it is a failure we can say something about.
pub fn explain(event: &Event) -> Option<&'static str> {
    let reply = event.reply.as_deref().unwrap_or("").to_ascii_lowercase();
    let has = |s: &str| reply.contains(s);
    Some(match event.kind {
        Kind::Refused if has("relay access denied") => {
            "not one of our aliases and the client is not trusted: add an alias, or the client's network to relay.trusted_networks"
        }
        Kind::Refused if has("accept only bounces") => {
            "mail (not a bounce) to an SRS address: srs.bounce_senders = \"null\" refuses it; nothing to do"
        }
        Kind::Refused if has("srs") || has("hash") || has("expired") => {
            "a bounce to an SRS address this relay did not sign, or too old: likely backscatter from forged mail; nothing to do"
        }
        Kind::Refused if has("unknown user") => {
            "no alias for this address in our domains: add one if it should exist"
        }
        Kind::Refused if has("5.4.6") => {
            "mail loop (too many Received headers): check the alias targets and the next hop's forwarding"
        }
        Kind::Refused if has("bare lf") || has("bare line") => {
            "the client's software sends bare line ends (SMTP smuggling risk): fix the client"
        }
        Kind::Refused if has("size") => "the message is larger than server.max_message_size",
        Kind::Refused => "refused by this relay; the reply says why",
        Kind::Deferred | Kind::Failed if has("spf") => {
            "the next hop checks SPF: publish an SPF record for the SRS domain that lists this relay"
        }
        Kind::Deferred | Kind::Failed
            if has("4.4.1") || has("connection refused") || has("connect") =>
        {
            "the next hop could not be reached: check it is up, its MX and the firewall; the relay retries"
        }
        Kind::Deferred | Kind::Failed if has("5.1.1") || has("user unknown") => {
            "the next hop has no such mailbox: fix the alias target"
        }
        Kind::Deferred => {
            "the next hop asked to try later; the relay retries until queue.max_lifetime"
        }
        Kind::Failed => "the next hop refused it for good; a DSN goes back to the sender",
        Kind::Expired => "not delivered within queue.max_lifetime; a DSN goes back to the sender",
        Kind::Held => "on hold: not attempted and not expiring until `srs-relay queue release`",
        Kind::Deleted => "deleted by the postmaster; no DSN was sent",
        _ => return None,
    })
}
