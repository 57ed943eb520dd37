//! The keyed hashes of both forms, keyed once per secret (the HMAC key schedule is done at
//! start, not per address), and their constant-time, case-insensitive check.

use data_encoding::{BASE32_NOPAD, BASE64};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Domain separation for the Microsoft-form hash, so it can never equal a classic one.
const MICROSOFT_TAG: &[u8] = b"srs-relay microsoft v1\0";

/// Longest classic hash (base64 of a 20-byte digest, without padding).
pub(crate) const CLASSIC_MAX: usize = 27;
/// Longest Microsoft-form hash (base32 of a 32-byte digest, without padding).
pub(crate) const MICROSOFT_MAX: usize = 52;

#[derive(Clone)]
pub(crate) struct Keys {
    classic: Vec<Hmac<Sha1>>,
    microsoft: Vec<Hmac<Sha256>>,
}

/// Feeds `parts` into `mac`, ASCII-lowercased, without allocating.
fn update_lowercase<M: Mac>(mac: &mut M, parts: &[&[u8]], separator: Option<u8>) {
    let mut buf = [0u8; 128];
    for (i, part) in parts.iter().enumerate() {
        if let (true, Some(sep)) = (i > 0, separator) {
            mac.update(&[sep]);
        }
        for chunk in part.chunks(buf.len()) {
            for (dst, src) in buf.iter_mut().zip(chunk) {
                *dst = src.to_ascii_lowercase();
            }
            mac.update(&buf[..chunk.len()]);
        }
    }
}

impl Keys {
    pub(crate) fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        let classic = secrets
            .iter()
            .map(|s| {
                Hmac::<Sha1>::new_from_slice(s.as_ref()).expect("HMAC takes keys of any length")
            })
            .collect();
        let microsoft = secrets
            .iter()
            .map(|s| {
                let mut mac = Hmac::<Sha256>::new_from_slice(s.as_ref())
                    .expect("HMAC takes keys of any length");
                mac.update(MICROSOFT_TAG);
                mac
            })
            .collect();
        Keys { classic, microsoft }
    }

    /// Classic hash (Mail::SRS): base64 of HMAC-SHA1 over the lowercased fields joined with
    /// nothing between them, first `len` characters, standard or URL alphabet.
    pub(crate) fn classic(&self, parts: &[&[u8]], url_alphabet: bool) -> [u8; 28] {
        let digest = classic_digest(&self.classic[0], parts);
        let mut out = [0u8; 28];
        BASE64.encode_mut(&digest, &mut out);
        if url_alphabet {
            for c in &mut out {
                *c = match *c {
                    b'+' => b'-',
                    b'/' => b'_',
                    c => c,
                };
            }
        }
        out
    }

    /// Whether `given` is a classic hash of `parts` under any secret: case-insensitive,
    /// either base64 alphabet, constant time per secret.
    pub(crate) fn classic_verify(&self, given: &str, parts: &[&[u8]], len: usize) -> bool {
        let given = given.as_bytes();
        if given.len() != len {
            return false;
        }
        let mut wanted = [0u8; CLASSIC_MAX];
        for (dst, &c) in wanted.iter_mut().zip(given) {
            *dst = match c {
                b'-' => b'+',
                b'_' => b'/',
                c => c.to_ascii_lowercase(),
            };
        }
        let mut ok = subtle::Choice::from(0);
        for key in &self.classic {
            let mut enc = [0u8; 28];
            BASE64.encode_mut(&classic_digest(key, parts), &mut enc);
            enc.make_ascii_lowercase();
            ok |= enc[..len].ct_eq(&wanted[..len]);
        }
        ok.into()
    }

    /// Microsoft-form hash: base32 (RFC 4648, no padding) of HMAC-SHA256 over the
    /// lowercased fields separated by NUL, first `len` characters, upper case.
    pub(crate) fn microsoft(&self, parts: &[&[u8]]) -> [u8; MICROSOFT_MAX] {
        let digest = microsoft_digest(&self.microsoft[0], parts);
        let mut out = [0u8; MICROSOFT_MAX];
        BASE32_NOPAD.encode_mut(&digest, &mut out);
        out
    }

    pub(crate) fn microsoft_verify(&self, given: &str, parts: &[&[u8]], len: usize) -> bool {
        let given = given.as_bytes();
        if given.len() != len {
            return false;
        }
        let mut wanted = [0u8; MICROSOFT_MAX];
        for (dst, &c) in wanted.iter_mut().zip(given) {
            *dst = c.to_ascii_uppercase();
        }
        let mut ok = subtle::Choice::from(0);
        for key in &self.microsoft {
            let mut enc = [0u8; MICROSOFT_MAX];
            BASE32_NOPAD.encode_mut(&microsoft_digest(key, parts), &mut enc);
            ok |= enc[..len].ct_eq(&wanted[..len]);
        }
        ok.into()
    }
}

fn classic_digest(key: &Hmac<Sha1>, parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = key.clone();
    update_lowercase(&mut mac, parts, None);
    mac.finalize().into_bytes().into()
}

fn microsoft_digest(key: &Hmac<Sha256>, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = key.clone();
    update_lowercase(&mut mac, parts, Some(0));
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_matches_public_vector() {
        let keys = Keys::new(&["tops3cr3t"]);
        let h = keys.classic(&[b"2W", b"otherdomain.com", b"test"], false);
        assert_eq!(&h[..4], b"vmyz");
        assert!(keys.classic_verify("VMYZ", &[b"2W", b"otherdomain.com", b"test"], 4));
        assert!(!keys.classic_verify("vmyy", &[b"2W", b"otherdomain.com", b"test"], 4));
        assert!(!keys.classic_verify("vmy", &[b"2W", b"otherdomain.com", b"test"], 4));
    }

    #[test]
    fn classic_url_alphabet() {
        let keys = Keys::new(&["tops3cr3t"]);
        let parts: [&[u8]; 3] = [b"2W", b"somedomain.com", b"hash234"];
        assert_eq!(&keys.classic(&parts, false)[..4], b"+3/5");
        assert_eq!(&keys.classic(&parts, true)[..4], b"-3_5");
        assert!(keys.classic_verify("-3_5", &parts, 4));
        assert!(keys.classic_verify("+3/5", &parts, 4));
    }

    #[test]
    fn microsoft_fields_are_separated() {
        let keys = Keys::new(&["k"]);
        let a = keys.microsoft(&[b"AA", b"ab", b"c", b"u"]);
        let b = keys.microsoft(&[b"AA", b"a", b"bc", b"u"]);
        assert_ne!(a, b);
    }
}
