//! The keyed hashes of both forms, and their constant-time, case-insensitive check.
//!
//! HMAC from the `hmac` crate, keyed once per secret: each hash starts from a clone of the
//! keyed state, so the key's pad blocks are hashed at start, not per address. Only the few
//! output characters a hash needs are encoded ([`base64_prefix`], [`base32_prefix`]); the
//! tests check them against `data-encoding`.

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

/// The MAC under `keyed` (cloned, not consumed) of `parts` ASCII-lowercased, with
/// `separator` between them if given: the digest as `W` big-endian words. The fields are
/// lowercased in a stack buffer (an address's fields fit it, so one `update`), not
/// allocated.
fn mac_lowercase<M: Mac + Clone, const W: usize>(
    keyed: &M,
    parts: &[&[u8]],
    separator: Option<u8>,
) -> [u32; W] {
    let mut mac = keyed.clone();
    let mut buf = [0u8; 128];
    let mut used = 0;
    let mut push = |mac: &mut M, mut data: &[u8]| {
        while !data.is_empty() {
            let n = (buf.len() - used).min(data.len());
            buf[used..used + n].copy_from_slice(&data[..n]);
            used += n;
            data = &data[n..];
            if used == buf.len() {
                buf.make_ascii_lowercase();
                mac.update(&buf);
                used = 0;
            }
        }
    };
    for (i, part) in parts.iter().enumerate() {
        if let (true, Some(sep)) = (i > 0, separator) {
            push(&mut mac, &[sep]);
        }
        push(&mut mac, part);
    }
    buf[..used].make_ascii_lowercase();
    mac.update(&buf[..used]);
    let digest = mac.finalize().into_bytes();
    debug_assert_eq!(digest.len(), 4 * W);
    let mut words = [0u32; W];
    for (w, b) in words.iter_mut().zip(digest.chunks_exact(4)) {
        *w = u32::from_be_bytes(b.try_into().expect("4 bytes"));
    }
    words
}

/// Mask: all ones if `a < b`, else zero (for values below 128), without a branch.
#[inline]
fn lt(a: u8, b: u8) -> u8 {
    ((i16::from(a) - i16::from(b)) >> 8) as u8
}

/// The base64 character of `v` (0..64), standard or URL alphabet, ASCII-lowercased if
/// `lower`. Arithmetic rather than a table lookup, so the time does not depend on the
/// digest.
#[inline]
fn base64_char(v: u8, url: bool, lower: bool) -> u8 {
    // A..Z, a..z, 0..9 and the two specials, each range an offset from v.
    let mut c = v.wrapping_add(b'A');
    c = c.wrapping_add(!lt(v, 26) & 6);
    c = c.wrapping_sub(!lt(v, 52) & 75);
    // 62 and 63: `+` and `/`, or `-` and `_`.
    let (to_62, to_63) = if url { (13, 49) } else { (15, 3) };
    c = c.wrapping_sub(!lt(v, 62) & to_62);
    c = c.wrapping_add(!lt(v, 63) & to_63);
    if lower {
        c = c.wrapping_add(lt(v, 26) & 32);
    }
    c
}

/// The four base64 characters of the 24 bits `n`, as [`base64_char`] computes each, but
/// a byte lane per character of one `u32`: `lanes_ge(k)` has 1 in the lanes whose value is
/// at least `k` (values below 128: `v | 0x80` minus `k` keeps the high bit exactly then),
/// and no lane's sum leaves 0..=255, so no carry crosses lanes.
#[inline]
fn base64_4(n: u32, url: bool, lower: bool) -> [u8; 4] {
    const ONES: u32 = 0x0101_0101;
    const HIGH: u32 = 0x8080_8080;
    let v = (n >> 18 & 63) | (n >> 12 & 63) << 8 | (n >> 6 & 63) << 16 | (n & 63) << 24;
    let lanes_ge = |k: u32| (((v | HIGH) - k * ONES) & HIGH) >> 7 & ONES;
    let (ge26, ge52, ge62, ge63) = (lanes_ge(26), lanes_ge(52), lanes_ge(62), lanes_ge(63));
    let (to_62, to_63) = if url { (13, 49) } else { (15, 3) };
    let mut c = v + u32::from(b'A') * ONES + ge26 * 6;
    c -= ge52 * 75;
    c -= ge62 * to_62;
    c += ge63 * to_63;
    if lower {
        c += (ONES - ge26) * 32;
    }
    c.to_le_bytes()
}

/// The base32 (RFC 4648) character of `v` (0..32), upper case, without a table.
#[inline]
fn base32_char(v: u8) -> u8 {
    v.wrapping_add(b'A').wrapping_sub(!lt(v, 26) & 41)
}

/// The first `out.len()` (at most 28) characters of the base64 encoding of a SHA-1
/// `digest` (standard or URL alphabet, lowercased if `lower`): what a full encoding starts
/// with, without encoding the rest.
#[inline(always)]
pub(crate) fn base64_prefix(digest: &[u32; 5], url: bool, lower: bool, out: &mut [u8]) {
    if let Ok(out) = <&mut [u8; 4]>::try_from(&mut *out) {
        // The default length (Mail::SRS's): the first 24 bits, four characters at once.
        *out = base64_4(digest[0] >> 8, url, lower);
        return;
    }
    base64_prefix_long(digest, url, lower, out);
}

/// [`base64_prefix`] for the other lengths.
#[inline(never)]
fn base64_prefix_long(digest: &[u32; 5], url: bool, lower: bool, out: &mut [u8]) {
    let words = [digest[0], digest[1], digest[2], digest[3], digest[4], 0];
    // Four characters from each 24 bits.
    for (group, chars) in out.chunks_mut(4).enumerate() {
        let bit = 24 * group;
        let window = u64::from(words[bit / 32]) << 32 | u64::from(words[bit / 32 + 1]);
        let n = (window >> (40 - bit % 32)) as u32;
        for (j, c) in chars.iter_mut().enumerate() {
            *c = base64_char((n >> (18 - 6 * j)) as u8 & 63, url, lower);
        }
    }
}

/// The first `out.len()` (at most 56) characters of the unpadded base32 encoding of a
/// SHA-256 `digest`.
pub(crate) fn base32_prefix(digest: &[u32; 8], out: &mut [u8]) {
    let mut words = [0u32; 9];
    words[..8].copy_from_slice(digest);
    // Eight characters from each 40 bits.
    for (group, chars) in out.chunks_mut(8).enumerate() {
        let bit = 40 * group;
        let window = u64::from(words[bit / 32]) << 32 | u64::from(words[bit / 32 + 1]);
        let n = window >> (24 - bit % 32);
        for (j, c) in chars.iter_mut().enumerate() {
            *c = base32_char((n >> (35 - 5 * j)) as u8 & 31);
        }
    }
}

/// The first eight base32 characters of a SHA-256 `digest` (its first 40 bits), as
/// [`base32_char`] computes each, but a byte lane per character of one `u64` (see
/// [`base64_4`]).
#[inline]
fn base32_8(digest: &[u32; 8]) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = u64::from(digest[0]) << 8 | u64::from(digest[1] >> 24);
    let v = (0..8).fold(0, |acc, j| acc | (n >> (35 - 5 * j) & 31) << (8 * j));
    let ge26 = (((v | HIGH) - 26 * ONES) & HIGH) >> 7;
    (v + u64::from(b'A') * ONES - ge26 * 41).to_le_bytes()
}

/// Whether `a` and `b` are equal, in constant time: every byte is compared, and the
/// verdict comes out through `subtle`. (The hashes compared are zero past their length, so
/// whole buffers are compared, eight bytes at a time.)
fn equal<const N: usize>(a: &[u8; N], b: &[u8; N]) -> subtle::Choice {
    const { assert!(N.is_multiple_of(8)) };
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
    let diff =
        (a.chunks_exact(8).zip(b.chunks_exact(8))).fold(0, |acc, (x, y)| acc | (word(x) ^ word(y)));
    diff.ct_eq(&0)
}

/// The first secret whose hash matched. Each comparison is constant time and every secret
/// is tried; only the verdict, which the caller learns anyway, decides a branch.
#[derive(Default)]
struct Which(Option<usize>);

impl Which {
    fn note(&mut self, index: usize, matched: subtle::Choice) {
        if bool::from(matched) && self.0.is_none() {
            self.0 = Some(index);
        }
    }
}

#[derive(Clone)]
pub(crate) struct Keys {
    /// HMAC-SHA1 keyed with each secret, the first signing.
    classic: Vec<Hmac<Sha1>>,
    /// HMAC-SHA256 keyed with each secret, [`MICROSOFT_TAG`] absorbed.
    microsoft: Vec<Hmac<Sha256>>,
}

impl Keys {
    pub(crate) fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        let keyed = |s: &S| -> (Hmac<Sha1>, Hmac<Sha256>) {
            let key = s.as_ref();
            let classic = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
            let mut microsoft =
                <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
            microsoft.update(MICROSOFT_TAG);
            (classic, microsoft)
        };
        let (classic, microsoft) = secrets.iter().map(keyed).unzip();
        Keys { classic, microsoft }
    }

    /// Classic hash (Mail::SRS): base64 of HMAC-SHA1 over the lowercased fields joined with
    /// nothing between them, first `len` characters, standard or URL alphabet.
    #[inline]
    pub(crate) fn classic(&self, parts: &[&[u8]], url_alphabet: bool, len: usize) -> [u8; 28] {
        let digest: [u32; 5] = mac_lowercase(&self.classic[0], parts, None);
        let mut out = [0u8; 28];
        base64_prefix(&digest, url_alphabet, false, &mut out[..len]);
        out
    }

    /// Which secret (its index) `given` is a classic hash of `parts` under, if any:
    /// case-insensitive, either base64 alphabet, constant time per secret, every secret
    /// tried.
    #[inline]
    pub(crate) fn classic_verify(&self, given: &str, parts: &[&[u8]], len: usize) -> Option<usize> {
        let given = given.as_bytes();
        if given.len() != len {
            return None;
        }
        // Both alphabets and any case compare as standard base64, lowercased.
        let fold = |c: u8| match c {
            b'-' => b'+',
            b'_' => b'/',
            c => c.to_ascii_lowercase(),
        };
        if let Ok(given) = <[u8; 4]>::try_from(given) {
            // The default length: the four characters as one integer, compared in registers.
            let wanted = u32::from_le_bytes(given.map(fold));
            let mut which = Which::default();
            for (i, key) in self.classic.iter().enumerate() {
                let digest: [u32; 5] = mac_lowercase(key, parts, None);
                which.note(
                    i,
                    u32::from_le_bytes(base64_4(digest[0] >> 8, false, true)).ct_eq(&wanted),
                );
            }
            return which.0;
        }
        let mut wanted = [0u8; 32];
        for (dst, &c) in wanted.iter_mut().zip(given) {
            *dst = fold(c);
        }
        let mut which = Which::default();
        for (i, key) in self.classic.iter().enumerate() {
            let mut enc = [0u8; 32];
            let digest: [u32; 5] = mac_lowercase(key, parts, None);
            base64_prefix(&digest, false, true, &mut enc[..len]);
            which.note(i, equal(&enc, &wanted));
        }
        which.0
    }

    /// Microsoft-form hash: base32 (RFC 4648, no padding) of HMAC-SHA256 over the tag and
    /// the lowercased fields separated by NUL, first `len` characters, upper case.
    #[inline]
    pub(crate) fn microsoft(&self, parts: &[&[u8]], len: usize) -> [u8; MICROSOFT_MAX] {
        let digest: [u32; 8] = mac_lowercase(&self.microsoft[0], parts, Some(0));
        let mut out = [0u8; MICROSOFT_MAX];
        if len == 8 {
            out[..8].copy_from_slice(&base32_8(&digest));
        } else {
            base32_prefix(&digest, &mut out[..len]);
        }
        out
    }

    /// Whether `given` is a Microsoft-form hash of `parts` under any secret, as
    /// [`classic_verify`](Self::classic_verify).
    #[inline]
    pub(crate) fn microsoft_verify(
        &self,
        given: &str,
        parts: &[&[u8]],
        len: usize,
    ) -> Option<usize> {
        let given = given.as_bytes();
        if given.len() != len {
            return None;
        }
        if let Ok(given) = <[u8; 8]>::try_from(given) {
            // The default length: eight characters as one integer, as `classic_verify` does
            // four.
            let wanted = u64::from_le_bytes(given.map(|c| c.to_ascii_uppercase()));
            let mut which = Which::default();
            for (i, key) in self.microsoft.iter().enumerate() {
                let digest: [u32; 8] = mac_lowercase(key, parts, Some(0));
                which.note(i, u64::from_le_bytes(base32_8(&digest)).ct_eq(&wanted));
            }
            return which.0;
        }
        let mut wanted = [0u8; 56];
        for (dst, &c) in wanted.iter_mut().zip(given) {
            *dst = c.to_ascii_uppercase();
        }
        let mut which = Which::default();
        for (i, key) in self.microsoft.iter().enumerate() {
            let mut enc = [0u8; 56];
            let digest: [u32; 8] = mac_lowercase(key, parts, Some(0));
            base32_prefix(&digest, &mut enc[..len]);
            which.note(i, equal(&enc, &wanted));
        }
        which.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL};
    use proptest::prelude::*;

    /// The digest words as big-endian bytes, zeros after them.
    fn be_bytes<const W: usize, const N: usize>(words: &[u32; W]) -> [u8; N] {
        let mut out = [0u8; N];
        for (dst, w) in out.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    #[test]
    fn equal_compares_every_byte() {
        let a = [1u8, 2, 3, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9];
        assert!(bool::from(equal(&a, &a.clone())));
        for i in 0..a.len() {
            let mut b = a;
            b[i] ^= 0x40;
            assert!(!bool::from(equal(&a, &b)));
        }
    }

    #[test]
    fn classic_matches_public_vector() {
        let keys = Keys::new(&["tops3cr3t"]);
        let h = keys.classic(&[b"2W", b"otherdomain.com", b"test"], false, 4);
        assert_eq!(&h[..4], b"vmyz");
        assert_eq!(
            keys.classic_verify("VMYZ", &[b"2W", b"otherdomain.com", b"test"], 4),
            Some(0)
        );
        assert!(
            keys.classic_verify("vmyy", &[b"2W", b"otherdomain.com", b"test"], 4)
                .is_none()
        );
        assert!(
            keys.classic_verify("vmy", &[b"2W", b"otherdomain.com", b"test"], 4)
                .is_none()
        );
    }

    #[test]
    fn classic_url_alphabet() {
        let keys = Keys::new(&["tops3cr3t"]);
        let parts: [&[u8]; 3] = [b"2W", b"somedomain.com", b"hash234"];
        assert_eq!(&keys.classic(&parts, false, 4)[..4], b"+3/5");
        assert_eq!(&keys.classic(&parts, true, 4)[..4], b"-3_5");
        assert_eq!(keys.classic_verify("-3_5", &parts, 4), Some(0));
        assert_eq!(keys.classic_verify("+3/5", &parts, 4), Some(0));
    }

    proptest! {
        /// The classic hash and its check against the plain computation (each field
        /// lowercased on its own, one `update` each, data-encoding), for every length and
        /// several secrets; fields long enough to fill the lowercasing buffer, too.
        #[test]
        fn prop_classic_against_reference(
            parts in proptest::collection::vec("[a-zA-Z0-9.=+-]{0,60}", 3),
            len in 4usize..=CLASSIC_MAX,
            url in any::<bool>(),
        ) {
            use hmac::{Hmac, Mac};
            let secrets = ["first secret", "second"];
            let keys = Keys::new(&secrets);
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secrets[0].as_bytes()).unwrap();
            for part in &parts {
                mac.update(&part.to_ascii_lowercase());
            }
            let digest = mac.finalize().into_bytes();
            let full = if url { BASE64URL.encode(&digest) } else { BASE64.encode(&digest) };
            let hash = keys.classic(&parts, url, len);
            prop_assert_eq!(&hash[..len], &full.as_bytes()[..len]);
            let given = std::str::from_utf8(&hash[..len]).unwrap();
            prop_assert_eq!(keys.classic_verify(given, &parts, len), Some(0));
            prop_assert_eq!(keys.classic_verify(&given.to_ascii_uppercase(), &parts, len), Some(0));
            // Under the second secret only, too (every secret verifies).
            let rotated = Keys::new(&["newer", secrets[0]]);
            prop_assert_eq!(rotated.classic_verify(given, &parts, len), Some(1));
            // One character changed (to one that differs even ignoring case) is refused.
            let mut wrong = hash[..len].to_vec();
            wrong[len - 1] = if wrong[len - 1].is_ascii_digit() { b'x' } else { b'7' };
            let wrong = std::str::from_utf8(&wrong).unwrap();
            prop_assert!(keys.classic_verify(wrong, &parts, len).is_none());
            prop_assert!(Keys::new(&["other"]).classic_verify(given, &parts, len).is_none());
        }
    }

    proptest! {
        /// The Microsoft-form hash and its check, as the classic one above.
        #[test]
        fn prop_microsoft_against_reference(
            parts in proptest::collection::vec("[a-zA-Z0-9.=+-]{0,50}", 4),
            len in 6usize..=MICROSOFT_MAX,
        ) {
            use hmac::{Hmac, Mac};
            let secrets = ["first secret", "second"];
            let keys = Keys::new(&secrets);
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secrets[0].as_bytes()).unwrap();
            mac.update(MICROSOFT_TAG);
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    mac.update(&[0]);
                }
                mac.update(&part.to_ascii_lowercase());
            }
            let full = BASE32_NOPAD.encode(&mac.finalize().into_bytes());
            let hash = keys.microsoft(&parts, len);
            prop_assert_eq!(&hash[..len], &full.as_bytes()[..len]);
            let given = std::str::from_utf8(&hash[..len]).unwrap();
            prop_assert_eq!(keys.microsoft_verify(given, &parts, len), Some(0));
            prop_assert_eq!(keys.microsoft_verify(&given.to_ascii_lowercase(), &parts, len), Some(0));
            prop_assert_eq!(Keys::new(&["newer", secrets[0]]).microsoft_verify(given, &parts, len), Some(1));
            let mut wrong = hash[..len].to_vec();
            wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
            prop_assert!(keys.microsoft_verify(std::str::from_utf8(&wrong).unwrap(), &parts, len).is_none());
            prop_assert!(Keys::new(&["other"]).microsoft_verify(given, &parts, len).is_none());
        }
    }

    /// Known answers from another implementation (Python's `hmac`, `hashlib` and `base64`;
    /// `bytes.lower` lowercases ASCII only): full length in both alphabets and both forms,
    /// a key longer than a hash block, every byte value, fields past the lowercasing
    /// buffer.
    #[test]
    fn known_answers() {
        let keys = Keys::new(&["tops3cr3t"]);
        let parts: [&[u8]; 3] = [b"2W", b"SomeDomain.COM", b"Hash234"];
        assert_eq!(
            &keys.classic(&parts, false, 27)[..27],
            b"+3/52K52CUr06sgucy9n7cdwFz0"
        );
        assert_eq!(
            &keys.classic(&parts, true, 27)[..27],
            b"-3_52K52CUr06sgucy9n7cdwFz0"
        );
        let parts: [&[u8]; 4] = [b"2W", b"OtherDomain.com", b"Test", b"John"];
        let want = b"QE3BPJJD2EUJ72XUPRH3GQMRF3XY7KWYQBFL2Q2FEI4RZONRNDXQ";
        assert_eq!(&keys.microsoft(&parts, 52), want);
        assert_eq!(&keys.microsoft(&parts, 8)[..8], &want[..8]);
        assert_eq!(keys.microsoft_verify("qe3bpjjd", &parts, 8), Some(0));
        assert!(keys.microsoft_verify("qe3bpjje", &parts, 8).is_none());

        let keys = Keys::new(&[(0..100).collect::<Vec<u8>>()]);
        let all: Vec<u8> = (0..=255).collect();
        let parts: [&[u8]; 3] = [&all[..100], &all[100..], &[b'X'; 50]];
        assert_eq!(
            &keys.classic(&parts, false, 27)[..27],
            b"bGTGdvYJAxz0emkF0VLFeAv8PuE"
        );
        let parts: [&[u8]; 3] = [&all, b"", &[b'Z'; 130]];
        let want = b"ZSMKSXBWL6MHCWZKZRX6E4XSRRSLDPIKF636PZ2GVILLPZCUXGFQ";
        assert_eq!(&keys.microsoft(&parts, 52), want);
    }

    #[test]
    fn microsoft_fields_are_separated() {
        let keys = Keys::new(&["k"]);
        let a = keys.microsoft(&[b"AA", b"ab", b"c", b"u"], MICROSOFT_MAX);
        let b = keys.microsoft(&[b"AA", b"a", b"bc", b"u"], MICROSOFT_MAX);
        assert_ne!(a, b);
    }

    #[test]
    fn four_characters_at_once() {
        // Every value in every position, next to values that differ in each lane.
        for v in 0..64u32 {
            for shift in [0, 6, 12, 18] {
                for other in [0, 25, 26, 51, 52, 61, 62, 63] {
                    let n = (v << shift) | (other << ((shift + 6) % 24));
                    for (url, lower) in [(false, false), (true, false), (false, true), (true, true)]
                    {
                        let want =
                            [18, 12, 6, 0].map(|s| base64_char((n >> s) as u8 & 63, url, lower));
                        assert_eq!(base64_4(n, url, lower), want, "{n:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn eight_base32_characters_at_once() {
        for v in 0..32u32 {
            for j in 0..8 {
                for other in [0, 25, 26, 31] {
                    let mut n: u64 = 0;
                    for k in 0..8 {
                        n |= u64::from(if k == j { v } else { other }) << (35 - 5 * k);
                    }
                    let digest = [
                        (n >> 8) as u32,
                        ((n & 0xff) << 24) as u32 | 0xab_cdef,
                        1,
                        2,
                        3,
                        4,
                        5,
                        6,
                    ];
                    let mut want = [0u8; 8];
                    base32_prefix(&digest, &mut want);
                    assert_eq!(base32_8(&digest), want, "{n:#x}");
                }
            }
        }
    }

    #[test]
    fn every_character_value() {
        let std = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let url = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for v in 0..64u8 {
            let i = usize::from(v);
            assert_eq!(base64_char(v, false, false), std[i], "{v}");
            assert_eq!(base64_char(v, true, false), url[i], "{v}");
            assert_eq!(
                base64_char(v, false, true),
                std[i].to_ascii_lowercase(),
                "{v}"
            );
        }
        let b32 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        for v in 0..32u8 {
            assert_eq!(base32_char(v), b32[usize::from(v)], "{v}");
        }
    }

    proptest! {
        /// The prefix encoders give the first characters of the full encodings.
        #[test]
        fn prop_prefix_encoders(words in proptest::array::uniform8(any::<u32>()), len in 0usize..=52) {
            let digest: [u8; 32] = be_bytes(&words);
            let sha1 = &digest[..20];
            let sha1_words: [u32; 5] = words[..5].try_into().unwrap();
            for (url, full) in [(false, BASE64.encode(sha1)), (true, BASE64URL.encode(sha1))] {
                let n = len.min(CLASSIC_MAX);
                let mut out = [0u8; CLASSIC_MAX];
                base64_prefix(&sha1_words, url, false, &mut out[..n]);
                prop_assert_eq!(&out[..n], &full.as_bytes()[..n]);
                base64_prefix(&sha1_words, url, true, &mut out[..n]);
                let lower = full.to_ascii_lowercase();
                prop_assert_eq!(&out[..n], &lower.as_bytes()[..n]);
            }
            let full = BASE32_NOPAD.encode(&digest);
            let mut out = [0u8; MICROSOFT_MAX];
            base32_prefix(&words, &mut out[..len]);
            prop_assert_eq!(&out[..len], &full.as_bytes()[..len]);
        }
    }
}
