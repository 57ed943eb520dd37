//! Refused recipients per client address, against address guessing (issue 11).
//!
//! Every 5xx a client gets at RCPT for an address (forged, expired or malformed SRS,
//! unknown user, relaying denied) is counted against its address: IPv4 per address, IPv6
//! per /64 (one host usually holds a whole /64, so counting single IPv6 addresses would
//! count nothing). The `limit`-th refusal within `window` blocks the address for one
//! `window` from then: its session ends with 421, and new connections get the same 421
//! before the greeting. A client thus gets at most `limit` answers per window.
//!
//! The table is bounded whatever clients do: expired entries are dropped once per
//! window, and at [`MAX_ENTRIES`] the entries closest to expiry (the oldest) are evicted,
//! a tenth at a time so the scan is paid once per many insertions. An entry is 32 bytes.
//! Looking an address up (every connection) is one hash lookup under a mutex.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Addresses tracked at most (about 4.5 MiB of table).
pub const MAX_ENTRIES: usize = 100_000;

/// The reply that ends a session, and refuses a connection, of a blocked client.
pub const TOO_MANY: &str = "421 4.7.0 Too many refused recipients, try again later";

/// What one more refusal means for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit: answer the refusal and carry on.
    Counted(u32),
    /// At or over the limit: answer the refusal, then 421 and close. `new` is true for
    /// the refusal that reached the limit (log it once).
    Blocked { count: u32, new: bool },
}

/// One address's window, in whole seconds since the table was made (compact: the table
/// must stay small with `MAX_ENTRIES` addresses in it).
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    count: u32,
    /// Blocked until this second; 0 = not blocked.
    until: u32,
}

impl Entry {
    /// The second from which the entry says nothing any more.
    fn expires(&self, window: u32) -> u32 {
        self.start.saturating_add(window).max(self.until)
    }
}

struct Table {
    map: HashMap<u128, Entry>,
    /// Next full sweep of expired entries.
    next_prune: u32,
}

/// Refused-recipient counts per client address (see the module's documentation).
pub struct Refusals {
    /// 0: off. A reload may change it ([`Refusals::set_limits`]).
    limit: AtomicU32,
    /// Window and penalty, whole seconds (at least 1).
    window: AtomicU32,
    cap: usize,
    epoch: Instant,
    table: Mutex<Table>,
}

impl Refusals {
    /// `limit` refusals per `window` (rounded up to whole seconds); a `limit` of 0 turns
    /// counting off.
    pub fn new(limit: u32, window: Duration) -> Refusals {
        Self::with_cap(limit, window, MAX_ENTRIES)
    }

    fn with_cap(limit: u32, window: Duration, cap: usize) -> Refusals {
        Refusals {
            limit: AtomicU32::new(limit),
            window: AtomicU32::new(whole_seconds(window)),
            cap: cap.max(10),
            epoch: Instant::now(),
            table: Mutex::new(Table {
                map: HashMap::new(),
                next_prune: 0,
            }),
        }
    }

    /// Counts on with a new limit and window (a reload); the counts so far are kept.
    pub fn set_limits(&self, limit: u32, window: Duration) {
        self.limit.store(limit, Ordering::Relaxed);
        self.window.store(whole_seconds(window), Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.limit() > 0
    }

    fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    fn window(&self) -> u32 {
        self.window.load(Ordering::Relaxed)
    }

    /// The penalty a blocked address serves (one window).
    pub fn penalty(&self) -> Duration {
        Duration::from_secs(u64::from(self.window()))
    }

    /// Seconds since `epoch`, from 1 (0 marks "not blocked").
    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs())
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    /// Counts one refused recipient from `ip`.
    pub fn record(&self, ip: IpAddr) -> Verdict {
        self.record_at(key(ip), self.now())
    }

    /// The refusal count of `ip` while it is blocked; `None` when it may connect.
    pub fn blocked(&self, ip: IpAddr) -> Option<u32> {
        self.blocked_at(key(ip), self.now())
    }

    fn blocked_at(&self, key: u128, now: u32) -> Option<u32> {
        if !self.enabled() {
            return None;
        }
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .map
            .get(&key)
            .filter(|e| now < e.until)
            .map(|e| e.count)
    }

    fn record_at(&self, key: u128, now: u32) -> Verdict {
        if !self.enabled() {
            return Verdict::Counted(0);
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window();
        if now >= table.next_prune {
            table.map.retain(|_, e| now < e.expires(window));
            table.next_prune = now.saturating_add(window);
        }
        if !table.map.contains_key(&key) && table.map.len() >= self.cap {
            self.evict(&mut table.map, now);
        }
        let entry = table.map.entry(key).or_insert(Entry {
            start: now,
            count: 0,
            until: 0,
        });
        if now < entry.until {
            // Still blocked (a session that was open when the limit was reached).
            entry.count = entry.count.saturating_add(1);
            return Verdict::Blocked {
                count: entry.count,
                new: false,
            };
        }
        if entry.until != 0 || now >= entry.start.saturating_add(window) {
            // The penalty or the window is over: a new window.
            *entry = Entry {
                start: now,
                count: 0,
                until: 0,
            };
        }
        entry.count += 1;
        if entry.count >= self.limit() {
            entry.until = now.saturating_add(window);
            return Verdict::Blocked {
                count: entry.count,
                new: true,
            };
        }
        Verdict::Counted(entry.count)
    }

    /// Makes room: drops what expired, then, if still full, the tenth of the entries that
    /// expire first.
    fn evict(&self, map: &mut HashMap<u128, Entry>, now: u32) {
        let window = self.window();
        map.retain(|_, e| now < e.expires(window));
        if map.len() < self.cap {
            return;
        }
        let mut by_expiry: Vec<(u32, u128)> =
            map.iter().map(|(k, e)| (e.expires(window), *k)).collect();
        let n = (self.cap / 10).max(1);
        by_expiry.select_nth_unstable(n - 1);
        for (_, k) in &by_expiry[..n] {
            map.remove(k);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().map.len()
    }
}

/// `window` in whole seconds, rounded up, at least 1.
fn whole_seconds(window: Duration) -> u32 {
    let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// What refusals are counted against: an IPv4 address (IPv4-mapped IPv6 included), or
/// an IPv6 /64.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !(u128::from(u64::MAX)),
        },
    }
}

/// The counted unit of `ip`, for logs: `192.0.2.1` or `2001:db8:1:2::/64`.
pub fn describe(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            format!("{}/64", std::net::Ipv6Addr::from(key(ip)))
        }
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_limit_blocks_for_one_window_then_counting_restarts() {
        let r = Refusals::new(3, Duration::from_secs(60));
        let a = key(ip("192.0.2.1"));
        assert_eq!(r.record_at(a, 1), Verdict::Counted(1));
        assert_eq!(r.record_at(a, 2), Verdict::Counted(2));
        assert_eq!(r.blocked_at(a, 2), None);
        assert_eq!(
            r.record_at(a, 10),
            Verdict::Blocked {
                count: 3,
                new: true
            }
        );
        // Blocked for one window from the refusal that reached the limit.
        assert_eq!(r.blocked_at(a, 10), Some(3));
        assert_eq!(r.blocked_at(a, 69), Some(3));
        // A session still open counts on, blocked.
        assert_eq!(
            r.record_at(a, 20),
            Verdict::Blocked {
                count: 4,
                new: false
            }
        );
        assert_eq!(r.blocked_at(a, 70), None);
        // After the penalty, a fresh window.
        assert_eq!(r.record_at(a, 70), Verdict::Counted(1));
        // Other addresses are not affected.
        assert_eq!(r.blocked_at(key(ip("192.0.2.2")), 20), None);
    }

    #[test]
    fn refusals_spread_over_windows_never_block() {
        let r = Refusals::new(3, Duration::from_secs(60));
        let a = key(ip("192.0.2.1"));
        for t in 0..10 {
            // Two per window of 60 s.
            assert_eq!(r.record_at(a, 1 + t * 60), Verdict::Counted(1));
            assert_eq!(r.record_at(a, 30 + t * 60), Verdict::Counted(2));
        }
        assert_eq!(r.blocked_at(a, 600), None);
    }

    #[test]
    fn zero_turns_it_off() {
        let r = Refusals::new(0, Duration::from_secs(60));
        let a = key(ip("192.0.2.1"));
        for t in 1..1000 {
            assert_eq!(r.record_at(a, t), Verdict::Counted(0));
        }
        assert_eq!(r.blocked_at(a, 1000), None);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key(ip("2001:db8:1:2::1")), key(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(key(ip("2001:db8:1:2::1")), key(ip("2001:db8:1:3::1")));
        assert_eq!(key(ip("::ffff:192.0.2.7")), key(ip("192.0.2.7")));
        assert_ne!(key(ip("192.0.2.7")), key(ip("192.0.2.8")));
        assert_eq!(describe(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(describe(ip("::ffff:192.0.2.7")), "192.0.2.7");
        let r = Refusals::new(2, Duration::from_secs(60));
        r.record(ip("2001:db8::1"));
        assert!(matches!(
            r.record(ip("2001:db8::2")),
            Verdict::Blocked { new: true, .. }
        ));
        assert!(r.blocked(ip("2001:db8::ffff")).is_some());
        assert!(r.blocked(ip("2001:db8:0:1::1")).is_none());
    }

    #[test]
    fn the_table_stays_bounded_and_evicts_the_oldest() {
        let cap = 1000;
        let r = Refusals::with_cap(5, Duration::from_secs(600), cap);
        // A blocked address, early.
        let early = key(ip("198.51.100.1"));
        for _ in 0..5 {
            r.record_at(early, 1);
        }
        // Many addresses, each refused once, one second apart in groups.
        for i in 0..20_000u32 {
            r.record_at(u128::from(i), 2 + i / 100);
            assert!(r.len() <= cap);
        }
        // The newest are still counted; the oldest went first.
        assert!(r.len() > cap / 2);
        assert_eq!(r.record_at(19_999, 300), Verdict::Counted(2));
        assert_eq!(r.record_at(0, 300), Verdict::Counted(1));
    }

    #[test]
    fn expired_entries_are_swept() {
        let r = Refusals::new(5, Duration::from_secs(60));
        for i in 0..500u128 {
            r.record_at(i, 1);
        }
        assert_eq!(r.len(), 500);
        // A window later, the next refusal sweeps the table.
        r.record_at(10_000, 200);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<(u128, Entry)>(), 32);
    }

    #[test]
    fn new_limits_apply_to_the_counts_so_far() {
        let r = Refusals::new(5, Duration::from_secs(60));
        let a = key(ip("192.0.2.1"));
        assert_eq!(r.record_at(a, 1), Verdict::Counted(1));
        assert_eq!(r.record_at(a, 2), Verdict::Counted(2));
        // A reload lowers the limit: the third refusal reaches it.
        r.set_limits(3, Duration::from_secs(10));
        assert_eq!(
            r.record_at(a, 3),
            Verdict::Blocked {
                count: 3,
                new: true
            }
        );
        assert_eq!(r.blocked_at(a, 12), Some(3));
        assert_eq!(r.blocked_at(a, 13), None);
        r.set_limits(0, Duration::from_secs(10));
        assert!(!r.enabled());
        assert_eq!(r.record_at(a, 20), Verdict::Counted(0));
    }

    #[test]
    fn windows_round_up_to_whole_seconds() {
        assert_eq!(Refusals::new(1, Duration::from_millis(1500)).window(), 2);
        assert_eq!(Refusals::new(1, Duration::from_millis(1)).window(), 1);
        assert_eq!(Refusals::new(1, Duration::from_secs(600)).window(), 600);
    }
}
