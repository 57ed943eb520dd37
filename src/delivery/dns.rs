//! Where a destination's mail goes: the smarthost, an address literal, or the MX hosts of
//! the recipient domain (RFC 5321 §5.1: implicit MX when there is none; RFC 7505: null
//! MX). Lookups go through [`Resolve`], so tests can stand in for DNS.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;

/// A boxed future, as [`Resolve`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a lookup gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist.
    NotFound,
    /// The name exists but has no record of the type asked for.
    NoRecords,
    /// Timeout, SERVFAIL, no reachable server, ...: may work later.
    Temporary(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::NotFound => f.write_str("domain not found (NXDOMAIN)"),
            DnsError::NoRecords => f.write_str("no records"),
            DnsError::Temporary(e) => write!(f, "lookup failed: {e}"),
        }
    }
}

/// DNS as delivery needs it.
pub trait Resolve: Send + Sync {
    /// The MX records of `domain` as (preference, exchange); the exchange has no trailing
    /// dot, and the root name (a null MX, RFC 7505) is `""`.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>>;
    /// The IPv4 and IPv6 addresses of `host`.
    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// Lookups from now on go as `settings` say (a reload). Lookups under way finish as
    /// they started.
    fn use_settings(&self, _settings: &DnsSettings) {}
}

pub use crate::config::DnsSettings;

/// A hickory resolver for `settings`: the configured servers (UDP, then TCP when an answer
/// is truncated), or the system's. Each query waits at most `timeout` per try, two tries.
/// `cache_entries`: how many answers its cache keeps (hickory's default: 8,192).
pub fn build_resolver(
    settings: &DnsSettings,
    cache_entries: Option<u64>,
) -> Result<TokioResolver, String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
    } else {
        let servers = settings
            .servers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = settings.timeout;
    opts.attempts = 2;
    if let Some(entries) = cache_entries {
        opts.cache_size = entries;
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the DNS resolver: {e}"))
}

/// The resolver of `[dns]` (the system's by default) through hickory-resolver, set up on
/// first use, and again on first use after a reload changed `[dns]`.
#[derive(Default)]
pub struct SystemResolver {
    current: arc_swap::ArcSwap<Built>,
}

/// A resolver for one `[dns]`, built on first use.
#[derive(Default)]
struct Built {
    settings: DnsSettings,
    inner: OnceLock<Result<TokioResolver, String>>,
}

impl Built {
    fn new(settings: DnsSettings) -> Built {
        Built {
            settings,
            inner: OnceLock::new(),
        }
    }

    fn resolver(&self) -> Result<&TokioResolver, DnsError> {
        self.inner
            .get_or_init(|| build_resolver(&self.settings, None))
            .as_ref()
            .map_err(|e| DnsError::Temporary(e.clone()))
    }
}

impl SystemResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The resolver `settings` describe.
    pub fn with_settings(settings: DnsSettings) -> Self {
        SystemResolver {
            current: arc_swap::ArcSwap::from_pointee(Built::new(settings)),
        }
    }
}

/// `example.com` → `example.com.`, so that no search domain is tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn dns_error(e: NetError) -> DnsError {
    if e.is_nx_domain() {
        DnsError::NotFound
    } else if e.is_no_records_found() {
        DnsError::NoRecords
    } else {
        DnsError::Temporary(e.to_string())
    }
}

impl Resolve for SystemResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>> {
        Box::pin(async move {
            let built = self.current.load_full();
            let lookup = built
                .resolver()?
                .mx_lookup(fqdn(domain))
                .await
                .map_err(dns_error)?;
            let records: Vec<(u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_ascii().trim_end_matches('.').to_owned(),
                    )),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                Err(DnsError::NoRecords)
            } else {
                Ok(records)
            }
        })
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            let built = self.current.load_full();
            let lookup = built
                .resolver()?
                .lookup_ip(fqdn(host))
                .await
                .map_err(dns_error)?;
            let ips: Vec<IpAddr> = lookup.iter().collect();
            if ips.is_empty() {
                Err(DnsError::NoRecords)
            } else {
                Ok(ips)
            }
        })
    }

    fn use_settings(&self, settings: &DnsSettings) {
        let current = self.current.load();
        // Also built again when building it failed (the system's configuration unreadable).
        if current.settings != *settings || matches!(current.inner.get(), Some(Err(_))) {
            self.current.store(Arc::new(Built::new(settings.clone())));
        }
    }
}

/// Where the recipients of one group go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Destination {
    /// `relay.smarthost`, as configured.
    Smarthost(String),
    /// A recipient domain, lowercase.
    Domain(String),
    /// `user@[192.0.2.1]` or `user@[IPv6:2001:db8::1]`.
    Literal(IpAddr),
    /// An address we cannot route (no domain part, a malformed literal).
    Unroutable,
}

impl Destination {
    /// The destination of `address` when there is no smarthost.
    pub(crate) fn of(address: &str) -> Destination {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Destination::Unroutable;
        };
        if local.is_empty() || domain.is_empty() {
            return Destination::Unroutable;
        }
        if let Some(literal) = domain.strip_prefix('[') {
            let Some(literal) = literal.strip_suffix(']') else {
                return Destination::Unroutable;
            };
            let literal = match literal.get(..5) {
                Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => &literal[5..],
                _ => literal,
            };
            return match literal.parse::<IpAddr>() {
                Ok(ip) => Destination::Literal(ip),
                Err(_) => Destination::Unroutable,
            };
        }
        Destination::Domain(domain.trim_end_matches('.').to_lowercase())
    }

    /// The key of the per-destination connection limit, and the name in logs.
    pub(crate) fn key(&self) -> String {
        match self {
            Destination::Smarthost(h) => h.clone(),
            Destination::Domain(d) => d.clone(),
            Destination::Literal(ip) => format!("[{ip}]"),
            Destination::Unroutable => "(unroutable)".to_owned(),
        }
    }
}

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host's name (for TLS SNI and logs); an IP address in text for literals.
    pub host: String,
    pub addr: SocketAddr,
}

impl Target {
    /// `mx.example.com[192.0.2.1]:25`, as `Recipient::remote` and the logs name it.
    pub(crate) fn describe(&self) -> String {
        format!("{}[{}]:{}", self.host, self.addr.ip(), self.addr.port())
    }
}

/// The result of routing a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Addresses to try, in order.
    Targets(Vec<Target>),
    /// The recipients fail: the text is the `last_error`.
    Permanent(String),
    /// The recipients wait: the text is the `last_error`.
    Temporary(String),
}

/// More addresses than this are not tried in one attempt (Postfix: `smtp_mx_address_limit`).
const MAX_TARGETS: usize = 10;

/// Splits `host:port` or `[v6]:port`.
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.to_owned(), port))
}

/// Works out where `dest` goes.
pub(crate) async fn route(dest: &Destination, resolver: &dyn Resolve, mx_port: u16) -> Route {
    match dest {
        Destination::Unroutable => {
            Route::Permanent("5.1.3 bad destination address syntax".to_owned())
        }
        Destination::Literal(ip) => Route::Targets(vec![Target {
            host: ip.to_string(),
            addr: SocketAddr::new(*ip, mx_port),
        }]),
        Destination::Smarthost(hostport) => {
            let Some((host, port)) = split_host_port(hostport) else {
                return Route::Temporary(format!("4.3.5 bad smarthost {hostport:?}"));
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Route::Targets(vec![Target {
                    host,
                    addr: SocketAddr::new(ip, port),
                }]);
            }
            // A smarthost that does not resolve is our configuration's problem, not the
            // recipient's: wait, never bounce.
            match resolver.addresses(&host).await {
                Ok(ips) => Route::Targets(
                    ips.into_iter()
                        .take(MAX_TARGETS)
                        .map(|ip| Target {
                            host: host.clone(),
                            addr: SocketAddr::new(ip, port),
                        })
                        .collect(),
                ),
                Err(e) => Route::Temporary(format!("4.4.3 smarthost {host}: {e}")),
            }
        }
        Destination::Domain(domain) => route_domain(domain, resolver, mx_port).await,
    }
}

async fn route_domain(domain: &str, resolver: &dyn Resolve, port: u16) -> Route {
    let mut records = match resolver.mx(domain).await {
        Ok(records) => records,
        Err(DnsError::NotFound) => {
            return Route::Permanent(format!("5.1.2 domain {domain} not found (NXDOMAIN)"));
        }
        Err(DnsError::NoRecords) => {
            // RFC 5321 §5.1: no MX, the domain itself is the host.
            return match resolver.addresses(domain).await {
                Ok(ips) => Route::Targets(
                    ips.into_iter()
                        .take(MAX_TARGETS)
                        .map(|ip| Target {
                            host: domain.to_owned(),
                            addr: SocketAddr::new(ip, port),
                        })
                        .collect(),
                ),
                Err(DnsError::NotFound | DnsError::NoRecords) => Route::Permanent(format!(
                    "5.1.2 domain {domain} has no MX and no address record"
                )),
                Err(e @ DnsError::Temporary(_)) => {
                    Route::Temporary(format!("4.4.3 address of {domain}: {e}"))
                }
            };
        }
        Err(e @ DnsError::Temporary(_)) => {
            return Route::Temporary(format!("4.4.3 MX of {domain}: {e}"));
        }
    };

    // RFC 7505: a single MX for the root name says the domain takes no mail; a "." next
    // to real MX records is a misconfiguration, and is skipped.
    if records.iter().all(|(_, host)| host.is_empty()) {
        return Route::Permanent(format!(
            "5.1.10 domain {domain} accepts no mail (null MX, RFC 7505)"
        ));
    }
    records.retain(|(_, host)| !host.is_empty());

    // Preference order; hosts of equal preference in random order (RFC 5321 §5.1).
    let random = RandomState::new();
    records.sort_by_key(|(pref, host)| (*pref, random.hash_one(host)));
    records.dedup_by(|a, b| a.1.eq_ignore_ascii_case(&b.1));

    let mut targets = Vec::new();
    let mut last_error = None;
    for (_, host) in &records {
        if targets.len() >= MAX_TARGETS {
            break;
        }
        match host.parse::<IpAddr>() {
            // An address as exchange is invalid (RFC 1035: a name), but seen in the wild.
            Ok(ip) => targets.push(Target {
                host: host.clone(),
                addr: SocketAddr::new(ip, port),
            }),
            Err(_) => match resolver.addresses(host).await {
                Ok(ips) => targets.extend(ips.into_iter().map(|ip| Target {
                    host: host.clone(),
                    addr: SocketAddr::new(ip, port),
                })),
                Err(e) => last_error = Some(format!("{host}: {e}")),
            },
        }
    }
    targets.truncate(MAX_TARGETS);
    if targets.is_empty() {
        return Route::Temporary(format!(
            "4.4.3 no address for the MX hosts of {domain}: {}",
            last_error.unwrap_or_default()
        ));
    }
    Route::Targets(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        mx: HashMap<String, Result<Vec<(u16, String)>, DnsError>>,
        a: HashMap<String, Result<Vec<IpAddr>, DnsError>>,
    }

    impl Resolve for Fake {
        fn mx<'a>(&'a self, d: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>> {
            let r = self.mx.get(d).cloned().unwrap_or(Err(DnsError::NotFound));
            Box::pin(async move { r })
        }
        fn addresses<'a>(&'a self, h: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
            let r = self.a.get(h).cloned().unwrap_or(Err(DnsError::NotFound));
            Box::pin(async move { r })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn destinations() {
        assert_eq!(
            Destination::of("a@Example.COM"),
            Destination::Domain("example.com".into())
        );
        assert_eq!(
            Destination::of("a@[192.0.2.1]"),
            Destination::Literal(ip("192.0.2.1"))
        );
        assert_eq!(
            Destination::of("a@[IPv6:2001:db8::1]"),
            Destination::Literal(ip("2001:db8::1"))
        );
        assert_eq!(Destination::of("postmaster"), Destination::Unroutable);
        assert_eq!(Destination::of("a@[nonsense]"), Destination::Unroutable);
        assert_eq!(Destination::of("@x.org"), Destination::Unroutable);
    }

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("mx.example:587"),
            Some(("mx.example".into(), 587))
        );
        assert_eq!(split_host_port("[::1]:25"), Some(("::1".into(), 25)));
        assert_eq!(split_host_port("mx.example"), None);
        assert_eq!(split_host_port(":25"), None);
        assert_eq!(split_host_port("h:0"), None);
    }

    #[test]
    fn mx_in_preference_order() {
        let mut f = Fake::default();
        f.mx.insert(
            "d.test".into(),
            Ok(vec![
                (20, "b.d.test".into()),
                (10, "a.d.test".into()),
                (30, "gone.d.test".into()),
            ]),
        );
        f.a.insert("a.d.test".into(), Ok(vec![ip("192.0.2.1")]));
        f.a.insert(
            "b.d.test".into(),
            Ok(vec![ip("192.0.2.2"), ip("2001:db8::2")]),
        );
        let r = rt().block_on(route(&Destination::Domain("d.test".into()), &f, 2525));
        let Route::Targets(t) = r else {
            panic!("{r:?}")
        };
        let addrs: Vec<String> = t.iter().map(Target::describe).collect();
        assert_eq!(
            addrs,
            [
                "a.d.test[192.0.2.1]:2525",
                "b.d.test[192.0.2.2]:2525",
                "b.d.test[2001:db8::2]:2525"
            ]
        );
    }

    #[test]
    fn null_mx_implicit_mx_and_nxdomain() {
        let mut f = Fake::default();
        f.mx.insert("null.test".into(), Ok(vec![(0, String::new())]));
        f.mx.insert("implicit.test".into(), Err(DnsError::NoRecords));
        f.a.insert("implicit.test".into(), Ok(vec![ip("192.0.2.9")]));
        f.mx.insert("bare.test".into(), Err(DnsError::NoRecords));
        f.mx.insert(
            "flaky.test".into(),
            Err(DnsError::Temporary("SERVFAIL".into())),
        );
        f.mx.insert(
            "noaddr.test".into(),
            Ok(vec![(10, "mx.noaddr.test".into())]),
        );
        let rt = rt();
        let go = |d: &str| rt.block_on(route(&Destination::Domain(d.into()), &f, 25));

        assert!(matches!(go("null.test"), Route::Permanent(e) if e.starts_with("5.1.10 ")));
        assert_eq!(
            go("implicit.test"),
            Route::Targets(vec![Target {
                host: "implicit.test".into(),
                addr: "192.0.2.9:25".parse().unwrap()
            }])
        );
        assert!(matches!(go("bare.test"), Route::Permanent(e) if e.starts_with("5.1.2 ")));
        assert!(matches!(go("missing.test"), Route::Permanent(e) if e.starts_with("5.1.2 ")));
        assert!(matches!(go("flaky.test"), Route::Temporary(e) if e.starts_with("4.4.3 ")));
        assert!(matches!(go("noaddr.test"), Route::Temporary(e) if e.starts_with("4.4.3 ")));
    }

    #[test]
    fn smarthost_never_bounces() {
        let f = Fake::default();
        let rt = rt();
        assert_eq!(
            rt.block_on(route(
                &Destination::Smarthost("127.0.0.1:2525".into()),
                &f,
                25
            )),
            Route::Targets(vec![Target {
                host: "127.0.0.1".into(),
                addr: "127.0.0.1:2525".parse().unwrap()
            }])
        );
        assert!(matches!(
            rt.block_on(route(
                &Destination::Smarthost("relay.invalid:25".into()),
                &f,
                25
            )),
            Route::Temporary(_)
        ));
    }
}
