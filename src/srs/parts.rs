//! An SRS local part taken apart into its fields, before any hash is checked: the one
//! parser that reversing and explaining share.

use super::{ReverseError, classic_tag, find_microsoft_tag, split_eq, split3, timestamp};

/// The fields of an SRS local part, as written (hashes unchecked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parts<'a> {
    /// `SRS0=HHHH=TT=domain=local`
    Srs0 {
        hash: &'a str,
        tt: &'a str,
        slot: u32,
        domain: &'a str,
        local: &'a str,
    },
    /// `SRS1=HHHH=hop==rest`: `rest` is the SRS0 address's local part after `SRS0`.
    Srs1 {
        hash: &'a str,
        hop: &'a str,
        rest: &'a str,
    },
    /// `user+SRS=HASH=TT=domain=local`
    Microsoft {
        user: &'a str,
        hash: &'a str,
        tt: &'a str,
        slot: u32,
        domain: &'a str,
        local: &'a str,
    },
}

/// Takes `local` apart: `NotSrs` if it carries no SRS tag, `Malformed` if a field is
/// missing, empty or (the timestamp) not valid.
pub(crate) fn split(local: &str) -> Result<Parts<'_>, ReverseError> {
    match classic_tag(local) {
        Some((b'0', rest)) => {
            const FIELDS: &str = "SRS0 needs hash, timestamp, domain and local part";
            let (hash, tt, rest) = split3(rest).ok_or(ReverseError::Malformed(FIELDS))?;
            let (domain, local) = split_eq(rest).ok_or(ReverseError::Malformed(FIELDS))?;
            if domain.is_empty() || local.is_empty() {
                return Err(ReverseError::Malformed(
                    "SRS0 with an empty domain or local part",
                ));
            }
            let slot = timestamp::decode(tt).ok_or(ReverseError::Malformed("bad timestamp"))?;
            Ok(Parts::Srs0 {
                hash,
                tt,
                slot,
                domain,
                local,
            })
        }
        Some((_, rest)) => {
            let (hash, hop, rest) = split3(rest).ok_or(ReverseError::Malformed(
                "SRS1 needs hash, hop domain and the rest",
            ))?;
            if hop.is_empty() || rest.is_empty() {
                return Err(ReverseError::Malformed(
                    "SRS1 with an empty hop domain or rest",
                ));
            }
            Ok(Parts::Srs1 { hash, hop, rest })
        }
        None => microsoft(local),
    }
}

/// Takes a Microsoft-form local part apart; classic tags are not looked for.
pub(crate) fn microsoft(local: &str) -> Result<Parts<'_>, ReverseError> {
    const FIELDS: &str = "+SRS= needs hash, timestamp, domain and local part";
    let tag = find_microsoft_tag(local).ok_or(ReverseError::NotSrs)?;
    let user = &local[..tag];
    let (hash, tt, rest) = split3(&local[tag + 5..]).ok_or(ReverseError::Malformed(FIELDS))?;
    let (domain, orig) = split_eq(rest).ok_or(ReverseError::Malformed(FIELDS))?;
    if user.is_empty() || domain.is_empty() || orig.is_empty() {
        return Err(ReverseError::Malformed(
            "+SRS= with an empty user, domain or local part",
        ));
    }
    let slot = timestamp::decode(tt).ok_or(ReverseError::Malformed("bad timestamp"))?;
    Ok(Parts::Microsoft {
        user,
        hash,
        tt,
        slot,
        domain,
        local: orig,
    })
}
