//! Label values: what the events say, mapped onto fixed sets so that no address, domain
//! or free text becomes a label (bounded cardinality, nothing private in `/metrics`).

/// The `reason` label of a refusal, from the reason its trace event carries. Those
/// starting `srs_` are refused bounces too (their suffix labels `refused_bounces`).
pub fn refusal_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("relay denied") => "relay_denied",
        Some("unknown user") => "unknown_user",
        Some("srs: not a bounce") => "srs_not_a_bounce",
        Some("srs: forged, expired or malformed") => "srs_invalid",
        Some("bare line end") => "bare_line_end",
        Some("size") => "size",
        Some("nul") => "nul",
        Some("loop") => "loop",
        _ => "other",
    }
}

/// The `kind` label of a DSN, from the failure reason its event carries.
pub fn dsn_kind(reason: Option<&str>) -> &'static str {
    match reason {
        Some("permanent") => "permanent",
        Some("expired") => "expired",
        Some("delayed") => "delayed",
        Some("relayed") => "relayed",
        _ => "other",
    }
}

/// The `tls` label: the protocol version of a `"TLSv1.3 TLS13_AES_..."` description,
/// `none` without TLS.
pub fn tls_version(tls: Option<&str>) -> &'static str {
    let Some(tls) = tls else { return "none" };
    match tls.split(' ').next() {
        Some("TLSv1.3") => "TLSv1.3",
        Some("TLSv1.2") => "TLSv1.2",
        _ => "other",
    }
}
