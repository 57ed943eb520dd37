//! The queue alert (issue 13): every `alerts.check_interval` the delivery queue's size is
//! read; when it passes `alerts.queue_threshold` the relay logs one warning, raises the
//! `srs_relay_queue_alert_active` gauge and mails `alerts.notify` once; when it is back
//! under, one more log line and mail. The rule, with hysteresis so that a queue hovering
//! at the threshold does not flap: **raised when more than `threshold` messages are
//! queued; cleared when fewer than 90% of `threshold` are** ([`Hysteresis`]).
//!
//! The mail is a new message in the spool with the null sender `<>` (never SRS-rewritten,
//! never bounced), due at once: the queue tries it as soon as it is handed over, under the
//! per-destination limit of the notify address's own next hop, so a backlog for another
//! destination does not hold it back.

mod message;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::delivery::QueueHandle;
use crate::spool::{Envelope, Spool};
use crate::srs::unix_now;
pub use message::{AlertMail, Change, compose};

/// Recipient domains listed in the mail.
const TOP_DESTINATIONS: usize = 10;

/// The alert's settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// 0: off.
    pub threshold: usize,
    pub notify: Option<String>,
    pub every: Duration,
    /// Our host name, for the mail.
    pub hostname: String,
}

impl AlertSettings {
    pub fn from_config(cfg: &Config) -> Result<AlertSettings, ConfigError> {
        let (every, notify) = cfg.alerts_settings()?;
        Ok(AlertSettings {
            threshold: cfg.alerts.queue_threshold,
            notify,
            every,
            hostname: cfg.server.hostname.clone(),
        })
    }
}

/// Raised above `threshold`, cleared below 90% of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    threshold: usize,
    active: bool,
}

impl Hysteresis {
    pub fn new(threshold: usize) -> Hysteresis {
        Hysteresis {
            threshold,
            active: false,
        }
    }

    /// The most messages at which a raised alert clears: the largest n with
    /// n < 0.9 × threshold.
    pub fn clears_at(&self) -> usize {
        (self.threshold.saturating_mul(9).saturating_sub(1)) / 10
    }

    /// Takes the queue size; says when the alert is raised or cleared by it.
    pub fn update(&mut self, queued: usize) -> Option<Change> {
        if self.threshold == 0 {
            return None;
        }
        if !self.active && queued > self.threshold {
            self.active = true;
            return Some(Change::Raised);
        }
        if self.active && queued <= self.clears_at() {
            self.active = false;
            return Some(Change::Cleared);
        }
        None
    }
}

/// Watches the queue until `stop` turns true; `active` mirrors the alert (for the gauge).
pub async fn watch_queue(
    settings: AlertSettings,
    queue: QueueHandle,
    spool: Arc<Spool>,
    active: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    if settings.threshold == 0 {
        return;
    }
    let mut state = Hysteresis::new(settings.threshold);
    let mut every = tokio::time::interval(settings.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(snap) = queue.snapshot(TOP_DESTINATIONS).await else {
            return;
        };
        let Some(change) = state.update(snap.queued) else {
            continue;
        };
        active.store(change == Change::Raised, Ordering::Relaxed);
        let oldest = snap.oldest.as_ref().map_or("-", |(id, _)| id.as_str());
        match change {
            Change::Raised => tracing::warn!(
                queued = snap.queued,
                threshold = settings.threshold,
                oldest = %oldest,
                "queue alert: more messages queued than alerts.queue_threshold"
            ),
            Change::Cleared => tracing::warn!(
                queued = snap.queued,
                clears_at = state.clears_at(),
                "queue alert cleared: the queue is back under the threshold"
            ),
        }
        if let Some(to) = &settings.notify {
            let mail = AlertMail {
                change,
                hostname: &settings.hostname,
                to,
                threshold: settings.threshold,
                clears_at: state.clears_at(),
                snapshot: &snap,
                now: unix_now(),
            };
            send(&queue, &spool, &settings.hostname, to, compose(&mail)).await;
        }
    }
}

/// Spools `message` from `<>` to `to`, due now, and hands it to the queue.
async fn send(queue: &QueueHandle, spool: &Arc<Spool>, hostname: &str, to: &str, message: Vec<u8>) {
    let now = unix_now();
    let env = Envelope::from_null_sender(to, hostname, now, message.len() as u64);
    let spool = spool.clone();
    let stored =
        tokio::task::spawn_blocking(move || spool.store(&env, &message).map(|()| env)).await;
    match stored {
        Ok(Ok(env)) => {
            tracing::info!(queue_id = %env.id, to = %to, "queue alert mail queued");
            queue.submit(env);
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot spool the queue alert mail"),
        Err(e) => tracing::error!(error = %e, "spooling the queue alert mail failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_change_per_crossing_with_hysteresis() {
        let mut h = Hysteresis::new(2000);
        assert_eq!(h.clears_at(), 1799);
        let seq = [
            (1999, None),
            (2000, None),
            (2001, Some(Change::Raised)),
            (5000, None),
            (1999, None),
            (1800, None),
            (2500, None),
            (1799, Some(Change::Cleared)),
            (1900, None),
            (2000, None),
            (2001, Some(Change::Raised)),
        ];
        for (n, want) in seq {
            assert_eq!(h.update(n), want, "at {n}");
        }
        let mut h = Hysteresis::new(3);
        assert_eq!(h.clears_at(), 2);
        assert_eq!(h.update(4), Some(Change::Raised));
        assert_eq!(h.update(3), None);
        assert_eq!(h.update(2), Some(Change::Cleared));
        let mut off = Hysteresis::new(0);
        assert_eq!(off.update(1_000_000), None);
    }
}
