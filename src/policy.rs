//! Who may send what to whom — the one place that decides relaying, so srs-relay is
//! never an open relay. A recipient is accepted when it is an alias (any client), or when
//! the client is on a trusted network (any recipient outside our domains). An unknown
//! address in one of our domains is 550 5.1.1; anything else is 550 5.7.1.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use crate::config::{Config, ConfigError};

/// The decision for one RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// An alias of ours: deliver to its targets, rewriting the sender for the alias.
    Alias { alias: String, targets: Vec<String> },
    /// A trusted client relaying out: deliver to the address as given.
    Relay,
    /// An address in one of our domains that we do not know.
    UnknownLocal,
    /// A stranger asking us to relay.
    Denied,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    aliases: HashMap<String, Vec<String>>,
    trusted: Vec<IpNet>,
    local_domains: Vec<String>,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Result<Policy, ConfigError> {
        let aliases = match &cfg.relay.aliases_file {
            Some(p) => read_aliases(&cfg.resolve(p))?,
            None => HashMap::new(),
        };
        let trusted = cfg.trusted_networks()?;
        let mut local_domains: Vec<String> = cfg
            .srs
            .local_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        // Relayed mail's (and the stored form's) SRS addresses come back to this domain.
        let srs_domain = cfg
            .srs
            .default_domain
            .clone()
            .unwrap_or_else(|| cfg.server.hostname.clone())
            .to_ascii_lowercase();
        if !local_domains.contains(&srs_domain) {
            local_domains.push(srs_domain);
        }
        for alias in aliases.keys() {
            if let Some((_, d)) = alias.rsplit_once('@')
                && !local_domains.iter().any(|l| l == d)
            {
                local_domains.push(d.to_owned());
            }
        }
        Ok(Policy {
            aliases,
            trusted,
            local_domains,
        })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Whether `domain` is one of ours (a leading dot in the list matches subdomains).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.local_domains
            .iter()
            .any(|entry| crate::srs::domain_matches(domain, entry))
    }

    /// How many aliases there are.
    pub fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// The user parts of the aliases, each once (`srs-relay explain` tries them on a hash
    /// made for another alias).
    pub fn alias_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .aliases
            .keys()
            .filter_map(|a| a.rsplit_once('@').map(|(u, _)| u.to_owned()))
            .collect();
        users.sort();
        users.dedup();
        users
    }

    pub fn recipient(&self, address: &str, client: IpAddr) -> Recipient {
        let key = address.to_ascii_lowercase();
        if let Some(targets) = self.aliases.get(&key) {
            return Recipient::Alias {
                alias: key,
                targets: targets.clone(),
            };
        }
        let domain = match address.rsplit_once('@') {
            Some((_, d)) => d,
            None => return Recipient::Denied,
        };
        if self.is_local_domain(domain) {
            return Recipient::UnknownLocal;
        }
        if self.is_trusted(client) {
            return Recipient::Relay;
        }
        Recipient::Denied
    }
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, as dual-stack sockets report) as plain IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Reads the alias map: `alias@domain: target@x, target@y` per line, `#` comments,
/// case-insensitive aliases. Errors name the file and line.
pub fn read_aliases(path: &Path) -> Result<HashMap<String, Vec<String>>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::key(
            "relay.aliases_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse_aliases(&text).map_err(|(line, why)| {
        ConfigError::key(
            "relay.aliases_file",
            format!("{}:{line}: {why}", path.display()),
        )
    })
}

fn parse_aliases(text: &str) -> Result<HashMap<String, Vec<String>>, (usize, String)> {
    let mut map = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (alias, targets) = line
            .split_once(':')
            .ok_or((n + 1, "expected `alias@domain: target, ...`".to_owned()))?;
        let alias = alias.trim().to_ascii_lowercase();
        if !is_plain_address(&alias) {
            return Err((n + 1, format!("{alias:?} is not an address")));
        }
        let targets: Vec<String> = targets
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if targets.is_empty() {
            return Err((n + 1, format!("{alias} has no target")));
        }
        if let Some(bad) = targets.iter().find(|t| !is_plain_address(t)) {
            return Err((n + 1, format!("{bad:?} is not an address")));
        }
        if map.insert(alias.clone(), targets).is_some() {
            return Err((n + 1, format!("{alias} is listed twice")));
        }
    }
    Ok(map)
}

fn is_plain_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((l, d)) => {
            !l.is_empty() && !d.is_empty() && !a.contains(char::is_whitespace) && !d.contains('@')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let aliases = parse_aliases(
            "# aliases\njohn@Forward.example: john@home.example, other@else.example\n\nsales@forward.example: a@b.example # inline comment\n",
        )
        .unwrap();
        Policy {
            aliases,
            trusted: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            local_domains: vec!["forward.example".into(), ".corp.example".into()],
        }
    }

    #[test]
    fn decisions() {
        let p = policy();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        let onprem: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            p.recipient("JOHN@forward.EXAMPLE", stranger),
            Recipient::Alias {
                alias: "john@forward.example".into(),
                targets: vec!["john@home.example".into(), "other@else.example".into()]
            }
        );
        assert_eq!(
            p.recipient("nobody@forward.example", stranger),
            Recipient::UnknownLocal
        );
        assert_eq!(
            p.recipient("nobody@x.corp.example", onprem),
            Recipient::UnknownLocal
        );
        assert_eq!(
            p.recipient("someone@elsewhere.example", stranger),
            Recipient::Denied
        );
        assert_eq!(
            p.recipient("someone@elsewhere.example", onprem),
            Recipient::Relay
        );
        assert_eq!(
            p.recipient(
                "someone@elsewhere.example",
                "::ffff:10.9.9.9".parse().unwrap()
            ),
            Recipient::Relay
        );
        assert_eq!(
            p.recipient("someone@elsewhere.example", "::1".parse().unwrap()),
            Recipient::Relay
        );
        for trick in [
            "someone%elsewhere.example@forward.example",
            "elsewhere.example!someone@forward.example",
            "someone@elsewhere.example@forward.example",
        ] {
            assert_eq!(
                p.recipient(trick, stranger),
                Recipient::UnknownLocal,
                "{trick}"
            );
        }
        assert_eq!(
            p.recipient("\"john@forward.example\"@elsewhere.example", stranger),
            Recipient::Denied
        );
        assert_eq!(p.recipient("no-domain", onprem), Recipient::Denied);
    }

    #[test]
    fn alias_file_errors_name_the_line() {
        assert_eq!(parse_aliases("a@b: c@d\nbroken line\n").unwrap_err().0, 2);
        assert_eq!(parse_aliases("a@b:\n").unwrap_err().0, 1);
        assert_eq!(parse_aliases("a@b: c@d\nA@B: e@f\n").unwrap_err().0, 2);
        assert_eq!(parse_aliases("a@b: not-an-address\n").unwrap_err().0, 1);
    }
}
