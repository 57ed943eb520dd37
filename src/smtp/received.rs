//! The `Received:` trace header (RFC 5321 §4.4) srs-relay prepends.

use std::fmt::Write;

use crate::time::rfc5322_date;

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

#[cfg(test)]
mod tests {
    use super::*;

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
