//! Mail-loop insight: the messages refused as loops (`554 5.4.6`), summed up by the
//! hosts that stamped their Received chains, so the postmaster sees which systems the
//! mail went round between.

use std::collections::HashMap;

/// One host of the Received chains of looping messages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoopHost {
    /// As named in the Received fields' `by` clause.
    pub host: String,
    /// Looping messages whose chain it stamped.
    pub messages: u64,
    /// Received fields it stamped in those messages, all told.
    pub stamps: u64,
    /// The newest of those messages, ms since the epoch.
    pub last: i64,
}

/// Sums refusals (time, detail JSON with `received_hosts: [[host, count], ...]`) by host:
/// most messages first, then most stamps, then by name. Returns the hosts and how many
/// loops there were.
pub fn by_host(refusals: &[(i64, Option<String>)]) -> (Vec<LoopHost>, usize) {
    let mut hosts: HashMap<String, LoopHost> = HashMap::new();
    for (time, detail) in refusals {
        let detail: serde_json::Value = detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let Some(list) = detail["received_hosts"].as_array() else {
            continue;
        };
        for pair in list {
            let (Some(host), Some(count)) = (pair[0].as_str(), pair[1].as_u64()) else {
                continue;
            };
            let h = hosts.entry(host.to_owned()).or_insert_with(|| LoopHost {
                host: host.to_owned(),
                messages: 0,
                stamps: 0,
                last: *time,
            });
            h.messages += 1;
            h.stamps += count;
            h.last = h.last.max(*time);
        }
    }
    let mut list: Vec<LoopHost> = hosts.into_values().collect();
    list.sort_by(|a, b| {
        b.messages
            .cmp(&a.messages)
            .then(b.stamps.cmp(&a.stamps))
            .then_with(|| a.host.cmp(&b.host))
    });
    (list, refusals.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_host() {
        let d = |s: &str| {
            Some(format!(
                "{{\"stage\":\"data\",\"reason\":\"loop\",\"received_hosts\":{s}}}"
            ))
        };
        let refusals = vec![
            (3000, d(r#"[["a.example",30],["b.example",29]]"#)),
            (2000, d(r#"[["a.example",26],["c.example",1]]"#)),
            (1000, Some("not json".into())),
        ];
        let (hosts, loops) = by_host(&refusals);
        assert_eq!(loops, 3);
        let got: Vec<(&str, u64, u64, i64)> = hosts
            .iter()
            .map(|h| (h.host.as_str(), h.messages, h.stamps, h.last))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.example", 2, 56, 3000),
                ("b.example", 1, 29, 3000),
                ("c.example", 1, 1, 2000),
            ]
        );
    }
}
