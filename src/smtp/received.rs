//! The `Received:` trace header (RFC 5321 §4.4) srs-relay prepends, and RFC 5322 dates.

use std::fmt::Write;

pub struct Trace<'a> {
    pub helo: &'a str,
    pub ip: std::net::IpAddr,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub smtputf8: bool,
    pub tls: Option<&'a str>,
    pub id: &'a str,
    pub single_recipient: Option<&'a str>,
    pub now: u64,
}

impl Trace<'_> {
    pub fn header(&self) -> String {
        // RFC 3848 / RFC 6531 protocol names.
        let proto = match (self.smtputf8, self.esmtp, self.tls.is_some()) {
            (true, _, true) => "UTF8SMTPS",
            (true, _, false) => "UTF8SMTP",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, _) => "SMTP",
        };
        let ip = match self.ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("IPv6:{v6}"),
            },
        };
        let helo: String = self
            .helo
            .chars()
            .filter(|c| !c.is_control() && *c != '(' && *c != ')')
            .take(255)
            .collect();
        let mut h = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {} (srs-relay) with {proto} id {}",
            self.hostname, self.id
        );
        if let Some(tls) = self.tls {
            let _ = write!(h, "\r\n\t(using {tls})");
        }
        if let Some(rcpt) = self.single_recipient {
            let _ = write!(h, "\r\n\tfor <{rcpt}>");
        }
        let _ = write!(h, ";\r\n\t{}\r\n", rfc5322_date(self.now));
        h
    }
}

/// `Wed, 25 Nov 2026 08:17:18 +0000`.
pub fn rfc5322_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_577_836_860),
            "Wed, 01 Jan 2020 00:01:00 +0000"
        );
        assert_eq!(
            rfc5322_date(1_795_594_638),
            "Wed, 25 Nov 2026 08:17:18 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn header_shape() {
        let h = Trace {
            helo: "client.example",
            ip: "192.0.2.7".parse().unwrap(),
            hostname: "relay.example",
            esmtp: true,
            smtputf8: false,
            tls: Some("TLSv1.3 TLS13_AES_256_GCM_SHA384"),
            id: "ABC",
            single_recipient: Some("john@forward.example"),
            now: 0,
        }
        .header();
        assert!(h.starts_with("Received: from client.example ([192.0.2.7])\r\n\tby relay.example (srs-relay) with ESMTPS id ABC\r\n"));
        assert!(h.contains("(using TLSv1.3 TLS13_AES_256_GCM_SHA384)"));
        assert!(
            h.ends_with("for <john@forward.example>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n")
        );
    }
}
