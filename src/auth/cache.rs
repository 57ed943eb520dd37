//! DNS records the checks use (SPF and DMARC policies, addresses), kept parsed until
//! their TTL runs out: mail from a domain seen a moment ago is checked without asking the
//! resolver again or parsing its records again.
//!
//! The domains are the sender's to choose, and so are their records' sizes (up to a DNS
//! message, 64 KiB), so each type's entries are bounded by their *size*, not their number:
//! a flood of mail from random domains with huge records only evicts older entries. DKIM
//! and ARC keys are not kept here (a key's size cannot be seen through mail-auth's
//! `VerifyingKey`); they come from hickory's cache and are parsed again, a few
//! microseconds. NXDOMAIN answers are not kept here either; hickory keeps them for as long
//! as their SOA says.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use mail_auth::dmarc::Dmarc;
use mail_auth::spf::{Directive, Macro, Mechanism, Spf};
use mail_auth::{MX, Parameters, RecordSet, ResolverCache, Txt};

/// Bytes of parsed records per record type, as [`Weight`] counts them.
const CAPACITY: u64 = 8 * 1024 * 1024;
/// The longest a record is kept, whatever its TTL (as hickory's default maximum).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// One record type's entries, each with the instant its TTL runs out.
pub struct Records<K: Key, V: Weight> {
    entries: moka::sync::Cache<K, (V, Instant)>,
}

/// A cache key: a name, or an address for PTR.
pub trait Key: Hash + Eq + Send + Sync + 'static {
    fn bytes(&self) -> usize;
    /// The name, for a key that is one.
    fn name(&self) -> Option<&str>;
}

impl Key for Box<str> {
    fn bytes(&self) -> usize {
        self.len()
    }

    fn name(&self) -> Option<&str> {
        Some(self)
    }
}

impl Key for IpAddr {
    fn bytes(&self) -> usize {
        16
    }

    fn name(&self) -> Option<&str> {
        None
    }
}

/// A value's bytes in memory, approximately (heap and inline), or `None` for a value not
/// to keep.
pub trait Weight: Clone + Send + Sync + 'static {
    fn weight(&self) -> Option<usize>;

    /// Whether this value may be kept under `name`. mail-auth keeps every TXT record type
    /// in one cache, by name only: what one check found at a name must not answer another
    /// check's question about it.
    fn belongs_at(&self, _name: Option<&str>) -> bool {
        true
    }
}

/// Bytes counted for an entry besides its key and value: the cache's own.
const ENTRY_OVERHEAD: usize = 128;

impl<K: Key, V: Weight> Records<K, V> {
    fn new() -> Self {
        Records {
            entries: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .weigher(|k: &K, (v, _): &(V, Instant)| {
                    let bytes = ENTRY_OVERHEAD + k.bytes() + v.weight().unwrap_or(0);
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(MAX_TTL)
                .build(),
        }
    }
}

impl<K: Key, V: Weight> ResolverCache<K, V> for Records<K, V> {
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
        if valid_until > Instant::now() && value.weight().is_some() && value.belongs_at(key.name())
        {
            self.entries.insert(key, (value, valid_until));
        }
    }
}

impl Weight for Txt {
    fn weight(&self) -> Option<usize> {
        match self {
            Txt::Spf(spf) => Some(
                size_of::<Spf>()
                    + spf
                        .directives
                        .iter()
                        .map(|d| size_of::<Directive>() + mechanism_bytes(&d.mechanism))
                        .sum::<usize>()
                    + spf.exp.as_ref().map_or(0, macro_bytes)
                    + spf.redirect.as_ref().map_or(0, macro_bytes)
                    + spf.ra.as_ref().map_or(0, |r| r.len()),
            ),
            Txt::Dmarc(d) => Some(
                size_of::<Dmarc>()
                    + d.rua
                        .iter()
                        .chain(&d.ruf)
                        .map(|u| size_of_val(u) + u.uri.capacity())
                        .sum::<usize>(),
            ),
            // DKIM and ARC keys (see above); failures (a record of another kind found by a
            // check that followed a sender's SPF `include:` there) and SPF `exp=` texts,
            // which such an include could also place under another check's name.
            _ => None,
        }
    }

    /// A DMARC policy only at `_dmarc.` names, an SPF policy anywhere else but DKIM key
    /// names: a sender's SPF record can send the SPF check to any name (`include:
    /// _dmarc.victim.example`), and what it found there must not stand for the DMARC
    /// policy (or key) at that name.
    fn belongs_at(&self, name: Option<&str>) -> bool {
        let Some(name) = name else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        let dmarc_name = name.starts_with("_dmarc.");
        match self {
            Txt::Dmarc(_) => dmarc_name,
            Txt::Spf(_) => !dmarc_name && !name.contains("._domainkey."),
            _ => false,
        }
    }
}

fn mechanism_bytes(m: &Mechanism) -> usize {
    match m {
        Mechanism::Include { macro_string }
        | Mechanism::A { macro_string, .. }
        | Mechanism::Mx { macro_string, .. }
        | Mechanism::Ptr { macro_string }
        | Mechanism::Exists { macro_string } => macro_bytes(macro_string),
        Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => 0,
    }
}

/// The heap bytes of a macro string (boxed slices: their length is their capacity).
fn macro_bytes(m: &Macro) -> usize {
    match m {
        Macro::Literal(bytes) => bytes.len(),
        Macro::List(list) => list
            .iter()
            .map(|m| size_of::<Macro>() + macro_bytes(m))
            .sum(),
        Macro::Variable { .. } | Macro::None => 0,
    }
}

impl<T: Clone + Send + Sync + 'static> Weight for RecordSet<T>
where
    RecordSet<T>: HeapBytes,
{
    fn weight(&self) -> Option<usize> {
        Some(size_of::<Self>() + self.heap_bytes())
    }
}

/// The heap bytes of a record set.
pub trait HeapBytes {
    fn heap_bytes(&self) -> usize;
}

impl HeapBytes for RecordSet<Ipv4Addr> {
    fn heap_bytes(&self) -> usize {
        size_of_val(&*self.rrset)
    }
}

impl HeapBytes for RecordSet<Ipv6Addr> {
    fn heap_bytes(&self) -> usize {
        size_of_val(&*self.rrset)
    }
}

impl HeapBytes for RecordSet<Box<str>> {
    fn heap_bytes(&self) -> usize {
        self.rrset
            .iter()
            .map(|n| size_of::<Box<str>>() + n.len())
            .sum()
    }
}

impl HeapBytes for RecordSet<MX> {
    fn heap_bytes(&self) -> usize {
        self.rrset
            .iter()
            .map(|mx| {
                size_of::<MX>()
                    + mx.exchanges
                        .iter()
                        .map(|n| size_of::<Box<str>>() + n.len())
                        .sum::<usize>()
            })
            .sum()
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

    impl Weight for u32 {
        fn weight(&self) -> Option<usize> {
            Some(4)
        }
    }

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

    /// What a sender's SPF `include:` finds at a DMARC or DKIM name is not kept there: a
    /// DMARC check must not take it for the policy, nor a DKIM check for the key.
    #[test]
    fn a_record_is_kept_only_under_the_names_of_its_kind() {
        use mail_auth::common::parse::TxtRecordParser;
        let records: Records<Box<str>, Txt> = Records::new();
        let until = Instant::now() + Duration::from_secs(300);
        let spf = Txt::Spf(std::sync::Arc::new(
            Spf::parse(b"v=spf1 ip4:192.0.2.1 -all").unwrap(),
        ));
        let dmarc = Txt::Dmarc(std::sync::Arc::new(
            Dmarc::parse(b"v=DMARC1; p=reject").unwrap(),
        ));
        let failed = Txt::Error(mail_auth::Error::Dns(
            mail_auth::DnsError::InvalidRecordType,
        ));
        for (name, value) in [
            ("_dmarc.victim.example.", &failed),
            ("_DMARC.victim.example.", &spf),
            ("_dmarc.victim.example.", &spf),
            ("sel._domainkey.victim.example.", &spf),
            ("victim.example.", &dmarc),
        ] {
            records.insert(name.into(), value.clone(), until);
            assert!(records.get(name).is_none(), "{name} kept a record");
        }
        records.insert("_dmarc.victim.example.".into(), dmarc.clone(), until);
        assert!(matches!(
            records.get("_dmarc.victim.example."),
            Some(Txt::Dmarc(_))
        ));
        records.insert("_spf.victim.example.".into(), spf.clone(), until);
        assert!(matches!(
            records.get("_spf.victim.example."),
            Some(Txt::Spf(_))
        ));
    }

    /// SPF records as large as a DNS message allows, from ever new domains (a sender
    /// chooses both): what is kept stays within the budget, however many arrive.
    #[test]
    fn huge_records_from_many_domains_stay_within_the_budget() {
        use mail_auth::common::parse::TxtRecordParser;
        let records: Records<Box<str>, Txt> = Records::new();
        let long = "a".repeat(250);
        let text = format!(
            "v=spf1 {} -all",
            (0..240)
                .map(|i| format!("include:{i}.{long}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let spf = Spf::parse(text.as_bytes()).unwrap();
        let value = Txt::Spf(std::sync::Arc::new(spf));
        let weight = value.weight().unwrap();
        assert!(weight > 60_000, "{weight}");
        let until = Instant::now() + Duration::from_secs(300);
        for i in 0..1_000 {
            records.insert(format!("{i}.evil.example.").into(), value.clone(), until);
        }
        records.entries.run_pending_tasks();
        assert!(records.entries.weighted_size() <= CAPACITY);
        let kept = records.entries.entry_count();
        assert!(
            (100..=140).contains(&kept),
            "{kept} entries of {weight} bytes kept"
        );
        // DKIM keys are never kept here.
        let key = Txt::DomainKey(std::sync::Arc::new(
            mail_auth::common::verify::DomainKey::parse(
                b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
            )
            .unwrap(),
        ));
        records.insert("s._domainkey.example.".into(), key, until);
        assert!(records.get("s._domainkey.example.").is_none());
    }
}
