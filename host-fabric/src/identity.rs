//! Client identities of the peer simulator (fabric-protocol.md §3.1, §3.3): per MSP id, an
//! ECDSA P-256 key pair and a self-signed X.509 certificate (PEM, Subject `CN=user, OU=client,
//! O=<MSP id>`), and Fabric's signature rules: ECDSA P-256 over SHA-256 of the exact bytes,
//! DER `SEQUENCE{r, s}`, **low-S** (s ≤ n/2) enforced on both sides.
//!
//! Identities are issued once per MSP id and process ([`Identity::new`] returns the same key
//! and certificate for the same MSP id), so proposals built twice from the same inputs have the
//! same creator, txid and proposal hash. The issued identities are the simulator's MSP
//! configuration: [`issued`] gives the certificate and public key a peer checks a creator
//! against.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};

use crate::fabric::msp::SerializedIdentity;

/// Order n of the P-256 group, big-endian.
pub const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xBC, 0xE6, 0xFA,
    0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// ⌊n / 2⌋, big-endian: the largest low-S value.
pub const P256_HALF_ORDER: [u8; 32] = [
    0x7F, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xDE, 0x73, 0x7D,
    0x56, 0xD3, 0x8B, 0xCF, 0x42, 0x79, 0xDC, 0xE5, 0x61, 0x7E, 0x31, 0x92, 0xA8,
];

/// Failure to create an identity, sign or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Key generation or certificate signing failed (no randomness).
    #[error("cannot create an identity for {0}")]
    KeyGeneration(String),
    /// Signing failed.
    #[error("signing failed")]
    Signing,
    /// The signature is not a DER `SEQUENCE{INTEGER r, INTEGER s}` of P-256 scalars.
    #[error("malformed signature encoding")]
    MalformedSignature,
    /// s > n/2 (Fabric refuses high-S signatures).
    #[error("signature is not in low-S form")]
    HighS,
    /// The signature does not verify with the key.
    #[error("signature verification failed")]
    BadSignature,
}

/// A client identity: MSP id, PEM certificate and the private key.
#[derive(Clone)]
pub struct Identity {
    /// MSP id, e.g. `MyOrg1MSP`.
    pub msp_id: String,
    /// The `id_bytes` of the serialized identity: the PEM certificate.
    pub certificate: Vec<u8>,
    key: Arc<EcdsaKeyPair>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("msp_id", &self.msp_id)
            .field("certificate", &String::from_utf8_lossy(&self.certificate))
            .finish_non_exhaustive()
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.msp_id == other.msp_id
            && self.certificate == other.certificate
            && self.key.public_key().as_ref() == other.key.public_key().as_ref()
    }
}

impl Eq for Identity {}

fn registry() -> &'static Mutex<HashMap<String, Identity>> {
    static ISSUED: OnceLock<Mutex<HashMap<String, Identity>>> = OnceLock::new();
    ISSUED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The identity issued for `msp_id` in this process, if any.
pub fn issued(msp_id: &str) -> Option<Identity> {
    registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(msp_id).cloned()
}

impl Identity {
    /// The identity of `msp_id`: created (key pair and self-signed certificate) on the first
    /// call for this MSP id, the same one afterwards.
    pub fn new(msp_id: impl Into<String>) -> Result<Self, IdentityError> {
        let msp_id = msp_id.into();
        let mut issued = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(identity) = issued.get(&msp_id) {
            return Ok(identity.clone());
        }
        let identity = Self::generate(&msp_id)?;
        issued.insert(msp_id, identity.clone());
        Ok(identity)
    }

    fn generate(msp_id: &str) -> Result<Self, IdentityError> {
        let failed = || IdentityError::KeyGeneration(msp_id.to_owned());
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).map_err(|_| failed())?;
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).map_err(|_| failed())?;
        let mut serial = [0u8; 16];
        rng.fill(&mut serial).map_err(|_| failed())?;
        serial[0] = (serial[0] & 0x7F) | 0x01;
        let tbs = der::tbs_certificate(&serial, msp_id, key.public_key().as_ref());
        let signature = key.sign(&rng, &tbs).map_err(|_| failed())?;
        let signature = normalize_low_s(signature.as_ref()).map_err(|_| failed())?;
        let certificate = der::certificate(&tbs, &signature);
        Ok(Self { msp_id: msp_id.to_owned(), certificate: pem("CERTIFICATE", &certificate), key: Arc::new(key) })
    }

    /// The same key and certificate presented under another MSP id (a forged creator).
    pub fn with_msp_id(&self, msp_id: impl Into<String>) -> Self {
        Self { msp_id: msp_id.into(), ..self.clone() }
    }

    /// `msp.SerializedIdentity` bytes: the proposal's `creator`.
    pub fn serialized(&self) -> Vec<u8> {
        SerializedIdentity { mspid: self.msp_id.clone(), id_bytes: self.certificate.clone() }.encode_to_vec()
    }

    /// The uncompressed public key point (65 bytes).
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// ECDSA P-256 over SHA-256 of `message`, DER-encoded, low-S.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let signature = self.key.sign(&SystemRandom::new(), message).map_err(|_| IdentityError::Signing)?;
        normalize_low_s(signature.as_ref())
    }
}

/// Checks that `signature` is a low-S DER ECDSA P-256/SHA-256 signature of `message` by
/// `public_key` (uncompressed point).
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
    let (_, s) = parse_signature(signature)?;
    if cmp_be(&s, &P256_HALF_ORDER).is_gt() {
        return Err(IdentityError::HighS);
    }
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(message, signature)
        .map_err(|_| IdentityError::BadSignature)
}

/// The low-S form of a DER signature: `(r, n − s)` when s > n/2, else the same value
/// (re-encoded).
pub fn normalize_low_s(signature: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (r, s) = parse_signature(signature)?;
    let s = if cmp_be(&s, &P256_HALF_ORDER).is_gt() { sub_be(&P256_ORDER, &s) } else { s };
    Ok(encode_signature(&r, &s))
}

/// The other valid signature of the same message: `(r, n − s)` (high-S if the input is low-S).
pub fn flip_s(signature: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (r, s) = parse_signature(signature)?;
    Ok(encode_signature(&r, &sub_be(&P256_ORDER, &s)))
}

/// Compares two 32-byte big-endian unsigned integers.
fn cmp_be(a: &[u8; 32], b: &[u8; 32]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    std::cmp::Ordering::Equal
}

/// a − b for 32-byte big-endian unsigned integers with a ≥ b.
fn sub_be(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let (x, y) = (u16::from(a[i]), u16::from(b[i]) + borrow);
        if x >= y {
            out[i] = (x - y) as u8;
            borrow = 0;
        } else {
            out[i] = (x + 256 - y) as u8;
            borrow = 1;
        }
    }
    out
}

/// Parses a DER `SEQUENCE{INTEGER r, INTEGER s}` with 1 ≤ r, s < n (minimal encodings only).
fn parse_signature(signature: &[u8]) -> Result<([u8; 32], [u8; 32]), IdentityError> {
    let malformed = IdentityError::MalformedSignature;
    let (content, rest) = der::read(signature, 0x30).ok_or(malformed.clone())?;
    if !rest.is_empty() {
        return Err(malformed);
    }
    let (r, rest) = der::read(content, 0x02).ok_or(malformed.clone())?;
    let (s, rest) = der::read(rest, 0x02).ok_or(malformed.clone())?;
    if !rest.is_empty() {
        return Err(malformed);
    }
    Ok((scalar(r)?, scalar(s)?))
}

fn scalar(integer: &[u8]) -> Result<[u8; 32], IdentityError> {
    let malformed = IdentityError::MalformedSignature;
    match integer {
        [] => return Err(malformed),
        [first, ..] if first & 0x80 != 0 => return Err(malformed),
        [0, second, ..] if second & 0x80 == 0 => return Err(malformed),
        _ => {}
    }
    let digits = integer.strip_prefix(&[0]).unwrap_or(integer);
    if digits.len() > 32 {
        return Err(malformed);
    }
    let mut out = [0u8; 32];
    out[32 - digits.len()..].copy_from_slice(digits);
    if out == [0u8; 32] || cmp_be(&out, &P256_ORDER).is_ge() {
        return Err(malformed);
    }
    Ok(out)
}

fn encode_signature(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    der::tlv(0x30, &[der::unsigned_integer(r), der::unsigned_integer(s)].concat())
}

/// PEM armour, 64 base64 characters per line.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// Minimal DER writer (and TLV reader) for the certificate and signatures.
mod der {
    const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    const OID_PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    const OID_ECDSA_WITH_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
    const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0A];
    const OID_ORGANIZATIONAL_UNIT: &[u8] = &[0x55, 0x04, 0x0B];

    pub(super) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    /// Reads one TLV with `tag` (definite lengths up to 2 bytes); returns (content, rest).
    pub(super) fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&actual, rest) = input.split_first()?;
        if actual != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            0..=0x7F => (usize::from(first), rest),
            0x81 => {
                let (&len, rest) = rest.split_first()?;
                (len >= 0x80).then_some((usize::from(len), rest))?
            }
            0x82 => {
                let (bytes, rest) = rest.split_at_checked(2)?;
                let len = usize::from(bytes[0]) << 8 | usize::from(bytes[1]);
                (len >= 0x100).then_some((len, rest))?
            }
            _ => return None,
        };
        rest.split_at_checked(len)
    }

    /// A positive INTEGER from big-endian magnitude bytes (minimal encoding).
    pub(super) fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
        let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len().saturating_sub(1));
        let digits = magnitude.get(start..).unwrap_or(&[0]);
        let digits = if digits.is_empty() { &[0][..] } else { digits };
        let mut content = Vec::with_capacity(digits.len() + 1);
        if digits[0] & 0x80 != 0 {
            content.push(0);
        }
        content.extend_from_slice(digits);
        tlv(0x02, &content)
    }

    fn oid(bytes: &[u8]) -> Vec<u8> {
        tlv(0x06, bytes)
    }

    fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    fn name(attributes: &[(&[u8], &str)]) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> = attributes
            .iter()
            .map(|(kind, value)| tlv(0x31, &sequence(&[oid(kind), tlv(0x0C, value.as_bytes())])))
            .collect();
        sequence(&rdns)
    }

    fn signature_algorithm() -> Vec<u8> {
        sequence(&[oid(OID_ECDSA_WITH_SHA256)])
    }

    fn bit_string(bytes: &[u8]) -> Vec<u8> {
        tlv(0x03, &[&[0u8][..], bytes].concat())
    }

    /// TBSCertificate (v3, no extensions) of a self-signed client certificate.
    pub(super) fn tbs_certificate(serial: &[u8], msp_id: &str, public_key: &[u8]) -> Vec<u8> {
        let subject =
            name(&[(OID_ORGANIZATION, msp_id), (OID_ORGANIZATIONAL_UNIT, "client"), (OID_COMMON_NAME, "user")]);
        let validity = sequence(&[tlv(0x17, b"200101000000Z"), tlv(0x17, b"491231235959Z")]);
        let spki = sequence(&[sequence(&[oid(OID_EC_PUBLIC_KEY), oid(OID_PRIME256V1)]), bit_string(public_key)]);
        sequence(&[
            tlv(0xA0, &unsigned_integer(&[2])),
            unsigned_integer(serial),
            signature_algorithm(),
            subject.clone(),
            validity,
            subject,
            spki,
        ])
    }

    /// Certificate ::= SEQUENCE{tbs, signatureAlgorithm, signatureValue}.
    pub(super) fn certificate(tbs: &[u8], signature: &[u8]) -> Vec<u8> {
        sequence(&[tbs.to_vec(), signature_algorithm(), bit_string(signature)])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    fn be(hex_str: &str) -> [u8; 32] {
        hex::decode(hex_str).expect("hex").try_into().expect("32 bytes")
    }

    #[test]
    fn half_order_is_n_over_two() {
        // n is odd: n = 2·⌊n/2⌋ + 1, i.e. n − ⌊n/2⌋ = ⌊n/2⌋ + 1.
        let upper = sub_be(&P256_ORDER, &P256_HALF_ORDER);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(sub_be(&upper, &one), P256_HALF_ORDER);
    }

    #[test]
    fn big_endian_compare_and_subtract() {
        let a = be("0000000000000000000000000000000000000000000000000000000000000100");
        let b = be("00000000000000000000000000000000000000000000000000000000000000ff");
        assert!(cmp_be(&a, &b).is_gt());
        assert!(cmp_be(&b, &a).is_lt());
        assert!(cmp_be(&a, &a).is_eq());
        assert_eq!(sub_be(&a, &b), be("0000000000000000000000000000000000000000000000000000000000000001"));
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(sub_be(&P256_ORDER, &one), be("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550"));
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der::unsigned_integer(&[0, 0, 0x7F]), vec![0x02, 1, 0x7F]);
        assert_eq!(der::unsigned_integer(&[0, 0x80]), vec![0x02, 2, 0, 0x80]);
        assert_eq!(der::unsigned_integer(&[0, 0]), vec![0x02, 1, 0]);
        assert!(scalar(&[0, 0x01]).is_err(), "non-minimal");
        assert!(scalar(&[0x80]).is_err(), "negative");
        assert!(scalar(&P256_ORDER).is_err(), "not below n (and negative)");
        assert!(scalar(&[&[0][..], &P256_ORDER[..]].concat()).is_err(), "not below n");
    }

    #[test]
    fn signatures_are_low_s_and_verify() {
        let identity = Identity::new("IdentityTestMSP").expect("identity");
        for i in 0..32u8 {
            let message = [i; 40];
            let signature = identity.sign(&message).expect("sign");
            let (_, s) = parse_signature(&signature).expect("der");
            assert!(cmp_be(&s, &P256_HALF_ORDER).is_le());
            verify(identity.public_key(), &message, &signature).expect("verifies");
            assert_eq!(verify(identity.public_key(), b"other bytes", &signature), Err(IdentityError::BadSignature));
        }
    }

    #[test]
    fn high_s_is_refused_then_normalized() {
        let identity = Identity::new("IdentityTestMSP").expect("identity");
        let message = b"proposal bytes";
        let low = identity.sign(message).expect("sign");
        let high = flip_s(&low).expect("flip");
        let (r_low, s_low) = parse_signature(&low).expect("der");
        let (r_high, s_high) = parse_signature(&high).expect("der");
        assert_eq!(r_low, r_high);
        assert!(cmp_be(&s_high, &P256_HALF_ORDER).is_gt());
        assert_eq!(sub_be(&P256_ORDER, &s_high), s_low);
        // Mathematically valid (ring accepts it), but Fabric refuses it.
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, identity.public_key())
            .verify(message, &high)
            .expect("high-S is a valid ECDSA signature");
        assert_eq!(verify(identity.public_key(), message, &high), Err(IdentityError::HighS));
        let normalized = normalize_low_s(&high).expect("normalize");
        assert_eq!(normalized, low);
        verify(identity.public_key(), message, &normalized).expect("normalized verifies");
        assert_eq!(normalize_low_s(&low).expect("idempotent"), low);
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let identity = Identity::new("IdentityTestMSP").expect("identity");
        let signature = identity.sign(b"m").expect("sign");
        assert_eq!(verify(identity.public_key(), b"m", &[]), Err(IdentityError::MalformedSignature));
        let mut trailing = signature.clone();
        trailing.push(0);
        assert_eq!(verify(identity.public_key(), b"m", &trailing), Err(IdentityError::MalformedSignature));
        assert_eq!(
            verify(identity.public_key(), b"m", &signature[..signature.len() - 1]),
            Err(IdentityError::MalformedSignature)
        );
    }

    #[test]
    fn one_identity_per_msp_with_a_self_signed_certificate() {
        let a = Identity::new("IdentityCertMSP").expect("identity");
        let b = Identity::new("IdentityCertMSP").expect("identity");
        assert_eq!(a, b);
        assert_eq!(issued("IdentityCertMSP"), Some(a.clone()));
        assert_ne!(Identity::new("IdentityOtherMSP").expect("identity").public_key(), a.public_key());
        let pem = String::from_utf8(a.certificate.clone()).expect("utf-8");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
        let cert = base64::engine::general_purpose::STANDARD.decode(body).expect("base64");
        let (content, rest) = der::read(&cert, 0x30).expect("certificate");
        assert!(rest.is_empty());
        let (tbs_content, rest) = der::read(content, 0x30).expect("tbs");
        let tbs = &content[..content.len() - rest.len()];
        let (_, rest) = der::read(rest, 0x30).expect("algorithm");
        let (signature, rest) = der::read(rest, 0x03).expect("signature");
        assert!(rest.is_empty());
        // Self-signed: the certificate's signature verifies with its own key.
        verify(a.public_key(), tbs, &signature[1..]).expect("self-signed, low-S");
        assert!(tbs_content.windows(b"IdentityCertMSP".len()).any(|w| w == b"IdentityCertMSP"), "Subject O");
        assert!(tbs_content.windows(65).any(|w| w == a.public_key()), "SubjectPublicKeyInfo");
    }
}
