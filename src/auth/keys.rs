//! The ARC/DKIM signing key: read from a PEM file (Ed25519 or RSA), made by
//! `srs-relay arc-keygen`, and the DNS TXT record that publishes it.

use std::process::Command;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// A private key the relay signs with.
pub enum SigningKey {
    Ed25519(Ed25519Key),
    Rsa(RsaKey<Sha256>),
}

impl SigningKey {
    /// The key in PEM text: PKCS#8 (`PRIVATE KEY`: Ed25519 as `openssl genpkey -algorithm
    /// ed25519` or `arc-keygen` writes it, or RSA) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM private key: {e}"))?;
        if let PrivateKeyDer::Pkcs8(p) = &der
            && let Ok(k) = Ed25519Key::from_pkcs8_maybe_unchecked_der(p.secret_pkcs8_der())
        {
            return Ok(SigningKey::Ed25519(k));
        }
        let rsa = RsaKey::<Sha256>::from_key_der(der)
            .map_err(|e| format!("neither an Ed25519 nor a usable RSA key: {e}"))?;
        // ring refuses to sign with less than 2048 bits: the public key says how many.
        Ok(SigningKey::Rsa(rsa))
    }

    /// A new Ed25519 key as PEM (PKCS#8).
    pub fn generate_ed25519_pem() -> Result<String, String> {
        let der = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
        Ok(pem("PRIVATE KEY", &der))
    }

    /// A new RSA key of `bits` as PEM (PKCS#8), made by `openssl genpkey` (ring makes no
    /// RSA keys; OpenSSL is what opendkim-genkey uses too). The key goes from openssl's
    /// standard output to the caller, never through a file of its own.
    pub fn generate_rsa_pem(bits: u32) -> Result<String, String> {
        if !(2048..=4096).contains(&bits) {
            return Err(format!(
                "RSA keys of {bits} bits are not offered: 2048 to 4096"
            ));
        }
        let out = Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .arg(format!("rsa_keygen_bits:{bits}"))
            .output()
            .map_err(|e| {
                format!("cannot run openssl to make an RSA key ({e}): install openssl, or use --algorithm ed25519")
            })?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            let why = why.lines().next().unwrap_or("no reason given");
            return Err(format!("openssl could not make an RSA key: {why}"));
        }
        let pem = String::from_utf8(out.stdout)
            .map_err(|_| "openssl wrote a key that is not PEM text".to_owned())?;
        // Read back as the relay will read it: a key that does not load is not written.
        SigningKey::from_pem(pem.as_bytes())?;
        Ok(pem)
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        match self {
            SigningKey::Ed25519(k) => format!(
                "v=DKIM1; k=ed25519; p={}",
                data_encoding::BASE64.encode(&k.public_key())
            ),
            SigningKey::Rsa(k) => format!(
                "v=DKIM1; k=rsa; p={}",
                data_encoding::BASE64.encode(&rsa_spki(&k.public_key()))
            ),
        }
    }

    /// `ed25519` or `rsa`, for the log.
    pub fn kind(&self) -> &'static str {
        match self {
            SigningKey::Ed25519(_) => "ed25519",
            SigningKey::Rsa(_) => "rsa",
        }
    }
}

/// `record` as the quoted strings of a zone file's TXT data: one string holds at most
/// 255 octets (RFC 1035 §3.3), which an RSA key's record exceeds; a DKIM verifier joins
/// them (RFC 6376 §3.6.2.2).
pub fn zone_strings(record: &str) -> String {
    record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// PEM text of `der` with the `label`, 64 base64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An RSA public key (PKCS#1 `RSAPublicKey`, as ring gives it) wrapped in the
/// `SubjectPublicKeyInfo` that DKIM records carry (RFC 6376 §3.6.1).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier: rsaEncryption (1.2.840.113549.1.1.1), NULL parameters.
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut body = ALGORITHM.to_vec();
    body.extend(der_tlv(0x03, &bits));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_and_has_a_record() {
        let pem = SigningKey::generate_ed25519_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.kind(), "ed25519");
        let record = key.dns_record();
        let p = record.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
        assert_eq!(
            data_encoding::BASE64.decode(p.as_bytes()).unwrap().len(),
            32
        );
    }

    #[test]
    fn an_rsa_key_from_openssl_reads_back_with_a_split_record() {
        let pem = SigningKey::generate_rsa_pem(2048).unwrap();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.kind(), "rsa");
        let record = key.dns_record();
        let zone = zone_strings(&record);
        // Two strings of at most 255 octets that join to the record.
        let parts: Vec<&str> = zone
            .strip_prefix('"')
            .and_then(|z| z.strip_suffix('"'))
            .unwrap()
            .split("\" \"")
            .collect();
        assert_eq!(parts.len(), 2, "{zone}");
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts.concat(), record);
        assert!(SigningKey::generate_rsa_pem(1024).is_err());
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(SigningKey::from_pem(b"hello").is_err());
        let pem = pem("PRIVATE KEY", b"not der at all");
        assert!(SigningKey::from_pem(pem.as_bytes()).is_err());
    }

    #[test]
    fn long_der_lengths_use_the_long_form() {
        assert_eq!(der_tlv(0x04, &[1; 3]), [0x04, 3, 1, 1, 1]);
        let long = der_tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}
