//! DNS records the checks use (SPF and DMARC policies, DKIM and ARC keys, addresses),
//! kept parsed until their TTL runs out: mail from a domain seen a moment ago is checked
//! without asking the resolver again or parsing its records again. Bounded in entries, so
//! a flood of mail from random domains only evicts older ones. NXDOMAIN answers are not
//! kept here; hickory's own cache keeps them for as long as their SOA says.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use mail_auth::{MX, Parameters, RecordSet, ResolverCache, Txt};

/// Entries per record type.
const CAPACITY: u64 = 10_000;
/// The longest a record is kept, whatever its TTL (as hickory's default maximum).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// One record type's entries, each with the instant its TTL runs out.
pub struct Records<K: Hash + Eq + Send + Sync + 'static, V: Clone + Send + Sync + 'static> {
    entries: moka::sync::Cache<K, (V, Instant)>,
}

impl<K, V> Records<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new() -> Self {
        Records {
            entries: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(MAX_TTL)
                .build(),
        }
    }
}

impl<K, V> ResolverCache<K, V> for Records<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, valid_until) = self.entries.get(name)?;
        if valid_until <= Instant::now() {
            self.entries.invalidate(name);
            return None;
        }
        Some(value)
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(name).map(|(value, _)| value)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        if valid_until > Instant::now() {
            self.entries.insert(key, (value, valid_until));
        }
    }
}

/// The records of every type the checks look up.
pub struct DnsCache {
    txt: Records<Box<str>, Txt>,
    mx: Records<Box<str>, RecordSet<MX>>,
    ipv4: Records<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: Records<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: Records<IpAddr, RecordSet<Box<str>>>,
}

/// The parameters of one check, with every cache.
pub type Cached<'x, P> = Parameters<
    'x,
    P,
    Records<Box<str>, Txt>,
    Records<Box<str>, RecordSet<MX>>,
    Records<Box<str>, RecordSet<Ipv4Addr>>,
    Records<Box<str>, RecordSet<Ipv6Addr>>,
    Records<IpAddr, RecordSet<Box<str>>>,
>;

impl DnsCache {
    pub fn new() -> Self {
        DnsCache {
            txt: Records::new(),
            mx: Records::new(),
            ipv4: Records::new(),
            ipv6: Records::new(),
            ptr: Records::new(),
        }
    }

    /// `params` for mail-auth, looking up through this cache.
    pub fn params<P>(&self, params: P) -> Cached<'_, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_gone_when_its_ttl_runs_out() {
        let records: Records<Box<str>, u32> = Records::new();
        let now = Instant::now();
        records.insert("live.example.".into(), 1, now + Duration::from_secs(60));
        records.insert("short.example.".into(), 2, now + Duration::from_millis(30));
        records.insert("expired.example.".into(), 3, now);
        assert_eq!(records.get("live.example."), Some(1));
        assert_eq!(records.get("short.example."), Some(2));
        assert_eq!(records.get("expired.example."), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(records.get("short.example."), None);
        assert_eq!(records.get("live.example."), Some(1));
        assert_eq!(records.remove("live.example."), Some(1));
        assert_eq!(records.get("live.example."), None);
    }
}
