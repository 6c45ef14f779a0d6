//! Signing as a Fabric client (docs/fabric-encoding.md §4.1, §4.3): an [`Identity`] (MSP id,
//! X.509 certificate PEM kept byte for byte, P-256 private key) loaded from an MSP folder's files,
//! and Fabric's signature rules: ECDSA P-256 over SHA-256 of the exact bytes, DER
//! `SEQUENCE{r, s}`, **low-S** (s ≤ n/2) enforced on both sides. Used by [`crate::gateway`] in
//! production; the test identities of the peer simulator (generated keys, self-signed
//! certificates) live in `orchestrator-fabric-testing`.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use prost::Message;
use ring::rand::SystemRandom;
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
    /// Key generation or certificate signing failed (no randomness; test identities only).
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
    /// A certificate or private key file cannot be used (see [`Identity::from_pem`]).
    #[error("cannot load the identity: {0}")]
    Load(String),
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

impl Identity {
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
    let s = if cmp_be(&s, &P256_HALF_ORDER).is_gt() { negate_scalar(&s) } else { s };
    Ok(encode_signature(&r, &s))
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

/// n − s for a P-256 scalar 0 < s < n: the other valid `s` of an ECDSA signature (low-S ↔ high-S).
pub fn negate_scalar(s: &[u8; 32]) -> [u8; 32] {
    sub_be(&P256_ORDER, s)
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

/// Identities loaded from an MSP folder's files (docs/fabric-encoding.md §4.1).
impl Identity {
    /// The identity of `msp_id` from its X.509 certificate PEM (`signcerts/*.pem`, kept byte for
    /// byte as the creator's `id_bytes`, as the peer compares it) and its unencrypted P-256
    /// private key PEM: PKCS#8 `PRIVATE KEY` (cryptogen's `priv_sk`, fabric-ca's `<ski>_sk`) or
    /// SEC1 `EC PRIVATE KEY`. The key must be the certificate's (checked: a mismatch would only
    /// show up later as `access denied` at the peer).
    pub fn from_pem(msp_id: impl Into<String>, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        let load = |what: &str| IdentityError::Load(what.to_owned());
        let cert_der = pem_block(cert_pem, "CERTIFICATE").ok_or_else(|| load("no CERTIFICATE PEM block"))?;
        let public_key = certificate_public_key(&cert_der)
            .ok_or_else(|| load("the certificate is not an X.509 certificate with an ECDSA P-256 key"))?;
        let scalar = if let Some(pkcs8) = pem_block(key_pem, "PRIVATE KEY") {
            pkcs8_private_scalar(&pkcs8).ok_or_else(|| load("the PRIVATE KEY is not a PKCS#8 EC P-256 key"))?
        } else if let Some(sec1) = pem_block(key_pem, "EC PRIVATE KEY") {
            ec_private_scalar(&sec1).ok_or_else(|| load("the EC PRIVATE KEY is not a P-256 key"))?
        } else if pem_block(key_pem, "ENCRYPTED PRIVATE KEY").is_some() {
            return Err(load("encrypted private keys are not supported"));
        } else {
            return Err(load("no PRIVATE KEY or EC PRIVATE KEY PEM block"));
        };
        // ring derives the public key from the scalar and refuses it unless it is the certificate's.
        let key = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &scalar,
            &public_key,
            &SystemRandom::new(),
        )
        .map_err(|rejected| {
            IdentityError::Load(format!("the private key does not match the certificate ({rejected})"))
        })?;
        Ok(Self { msp_id: msp_id.into(), certificate: cert_pem.to_vec(), key: Arc::new(key) })
    }
}

/// The DER content of the first PEM block labelled `label` (whitespace in the body ignored).
fn pem_block(pem: &[u8], label: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let body = text.get(start..)?;
    let body = body.get(..body.find(&end)?)?;
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The TBSCertificate fields after the optional version (RFC 5280 §4.1): serialNumber,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, each as its DER content.
fn tbs_fields(certificate: &[u8]) -> Option<[&[u8]; 6]> {
    let (certificate, _) = der::read(certificate, 0x30)?;
    let (tbs, _) = der::read(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        (_, rest) = der::read(rest, 0xA0)?;
    }
    let mut fields: [&[u8]; 6] = [&[]; 6];
    for (field, tag) in fields.iter_mut().zip([0x02, 0x30, 0x30, 0x30, 0x30, 0x30]) {
        (*field, rest) = der::read(rest, tag)?;
    }
    Some(fields)
}

/// The uncompressed P-256 point of a certificate's SubjectPublicKeyInfo (RFC 5280 §4.1).
fn certificate_public_key(certificate: &[u8]) -> Option<Vec<u8>> {
    let [_, _, _, _, _, spki] = tbs_fields(certificate)?;
    let (algorithm, rest) = der::read(spki, 0x30)?;
    if algorithm != der::ec_p256_algorithm().as_slice() {
        return None;
    }
    let (bits, _) = der::read(rest, 0x03)?;
    // No unused bits, then an uncompressed point (0x04 ‖ x ‖ y).
    match bits {
        [0, point @ ..] if point.len() == 65 && point[0] == 0x04 => Some(point.to_vec()),
        _ => None,
    }
}

/// id-at-organizationalUnitName (2.5.4.11).
const OID_ORGANIZATIONAL_UNIT: &[u8] = &[0x55, 0x04, 0x0B];

/// The organizational units (OU) of an X.509 certificate's Subject, in their order, from its
/// PEM; `None` when `cert_pem` holds no readable certificate. Values of a string type that is
/// not text-compatible with UTF-8 (BMPString, UniversalString) are left out.
///
/// With NodeOUs, this is where Fabric reads an identity's role (`admin`, `client`, `peer`,
/// `orderer`): the chaincode reads a creator's role from it (docs/modes.md §3.7).
pub fn certificate_subject_ous(cert_pem: &[u8]) -> Option<Vec<String>> {
    let certificate = pem_block(cert_pem, "CERTIFICATE")?;
    let [_, _, _, _, subject, _] = tbs_fields(&certificate)?;
    let mut ous = Vec::new();
    // Name ::= SEQUENCE OF RelativeDistinguishedName (a SET OF AttributeTypeAndValue).
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (mut attributes, rest) = der::read(rdns, 0x31)?;
        rdns = rest;
        while !attributes.is_empty() {
            let (attribute, rest) = der::read(attributes, 0x30)?;
            attributes = rest;
            let (kind, value) = der::read(attribute, 0x06)?;
            if kind != OID_ORGANIZATIONAL_UNIT {
                continue;
            }
            let &tag = value.first()?;
            let (text, _) = der::read(value, tag)?;
            // UTF8String, PrintableString, TeletexString (as Fabric's Go reads it), IA5String.
            if matches!(tag, 0x0C | 0x13 | 0x14 | 0x16)
                && let Ok(text) = std::str::from_utf8(text)
            {
                ous.push(text.to_owned());
            }
        }
    }
    Some(ous)
}

/// The private scalar of a PKCS#8 `PrivateKeyInfo` holding an EC P-256 key (RFC 5208, RFC 5915).
fn pkcs8_private_scalar(pkcs8: &[u8]) -> Option<[u8; 32]> {
    let (info, _) = der::read(pkcs8, 0x30)?;
    let (_version, rest) = der::read(info, 0x02)?;
    let (algorithm, rest) = der::read(rest, 0x30)?;
    if algorithm != der::ec_p256_algorithm().as_slice() {
        return None;
    }
    let (ec_private_key, _) = der::read(rest, 0x04)?;
    ec_private_scalar(ec_private_key)
}

/// The private scalar of an `ECPrivateKey` (RFC 5915 §3), left-padded to 32 bytes; the optional
/// curve parameters, when present, must name P-256.
fn ec_private_scalar(ec_private_key: &[u8]) -> Option<[u8; 32]> {
    let (key, _) = der::read(ec_private_key, 0x30)?;
    let (version, rest) = der::read(key, 0x02)?;
    if version != [1] {
        return None;
    }
    let (private_key, rest) = der::read(rest, 0x04)?;
    if rest.first() == Some(&0xA0) {
        let (parameters, _) = der::read(rest, 0xA0)?;
        if parameters != der::prime256v1_oid().as_slice() {
            return None;
        }
    }
    // RFC 5915 pads to the curve size; tolerate shorter (left-pad) or zero-prefixed encodings.
    let digits = match private_key.len().checked_sub(32) {
        Some(extra) => {
            let (zeros, digits) = private_key.split_at(extra);
            if zeros.iter().any(|&byte| byte != 0) {
                return None;
            }
            digits
        }
        None => private_key,
    };
    let mut scalar = [0u8; 32];
    scalar[32 - digits.len()..].copy_from_slice(digits);
    Some(scalar)
}

/// Minimal DER TLV reader and writer for signatures and key files; public for the test
/// certificate issuer of `orchestrator-fabric-testing`.
pub mod der {
    /// id-ecPublicKey.
    pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    /// prime256v1 (P-256).
    pub const OID_PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

    /// One TLV with definite length (up to 2 bytes).
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
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
    pub fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
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
    pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
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

    /// An OBJECT IDENTIFIER from its content bytes.
    pub fn oid(bytes: &[u8]) -> Vec<u8> {
        tlv(0x06, bytes)
    }

    /// Content of the AlgorithmIdentifier `SEQUENCE{id-ecPublicKey, prime256v1}`.
    pub fn ec_p256_algorithm() -> Vec<u8> {
        [oid(OID_EC_PUBLIC_KEY), oid(OID_PRIME256V1)].concat()
    }

    /// The `prime256v1` OID (TLV), as ECPrivateKey's `[0] parameters` holds it.
    pub fn prime256v1_oid() -> Vec<u8> {
        oid(OID_PRIME256V1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use orchestrator_fabric_testing::identity::{flip_s, issued_pem, pem};

    use super::*;

    /// The simulator's identity of `msp_id`, loaded into this crate's [`Identity`] (the testing
    /// crate links its own copy of this crate, so identities cross as PEM files).
    fn issued(msp_id: &str) -> Identity {
        let (cert, key) = issued_pem(msp_id).expect("identity");
        Identity::from_pem(msp_id, &cert, &key).expect("issued identity")
    }

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
        let identity = issued("IdentityTestMSP");
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
        let identity = issued("IdentityTestMSP");
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
        let identity = issued("IdentityTestMSP");
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

    /// A throwaway key and self-signed certificate written by OpenSSL 3 (`ecparam -genkey`,
    /// `pkcs8 -topk8 -nocrypt`, `req -x509`): an encoder other than this module's and ring's.
    const OPENSSL_SEC1: &str = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIAJ5bfGUVJg8AD7vWMO0cmo2gL3lis4oNCFzoJwExlbcoAoGCCqGSM49\nAwEHoUQDQgAEQqkXbTQg9ufYSOL3TqLuipO8kprZeQC1e/S7kcRhtwqjzFxp/kMz\n/GGhyxMZBzUL9hg1UFSQJ+/+LlHR0UiNVA==\n-----END EC PRIVATE KEY-----\n";
    const OPENSSL_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAnlt8ZRUmDwAPu9Y\nw7RyajaAveWKzig0IXOgnATGVtyhRANCAARCqRdtNCD259hI4vdOou6Kk7ySmtl5\nALV79LuRxGG3CqPMXGn+QzP8YaHLExkHNQv2GDVQVJAn7/4uUdHRSI1U\n-----END PRIVATE KEY-----\n";
    const OPENSSL_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBwTCCAWegAwIBAgIUYxnOa8lwmaiQ3e/i6lYFapIiR1MwCgYIKoZIzj0EAwIw\nNTETMBEGA1UECgwKT3BlblNzbE1TUDEPMA0GA1UECwwGY2xpZW50MQ0wCwYDVQQD\nDAR1c2VyMCAXDTI2MTIwMjE0NDIwOFoYDzIxMjYxMTA4MTQ0MjA4WjA1MRMwEQYD\nVQQKDApPcGVuU3NsTVNQMQ8wDQYDVQQLDAZjbGllbnQxDTALBgNVBAMMBHVzZXIw\nWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARCqRdtNCD259hI4vdOou6Kk7ySmtl5\nALV79LuRxGG3CqPMXGn+QzP8YaHLExkHNQv2GDVQVJAn7/4uUdHRSI1Uo1MwUTAd\nBgNVHQ4EFgQUURjBcD/5/oLmg+mDkMdQidjllCQwHwYDVR0jBBgwFoAUURjBcD/5\n/oLmg+mDkMdQidjllCQwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF\nAiAG1gne1QJEXaFJb1aYlKqqKA9E+j7FXLWAkxoXQsAiOgIhAPUXcpj+SnlfUk38\nhZIJWlHLGkP4zGOFI6zOfk6mWeOH\n-----END CERTIFICATE-----\n";

    /// The certificate cryptogen (Fabric 2.5.16) issues an organization's admin with NodeOUs on
    /// (Subject `C=US, ST=California, L=San Francisco, OU=admin, CN=Admin@org1.example.com`).
    const CRYPTOGEN_ADMIN_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIICKTCCAc+gAwIBAgIQY8OV+tXVU0exG3kL/iCfEzAKBggqhkjOPQQDAjBzMQsw\n\
CQYDVQQGEwJVUzETMBEGA1UECBMKQ2FsaWZvcm5pYTEWMBQGA1UEBxMNU2FuIEZy\n\
YW5jaXNjbzEZMBcGA1UEChMQb3JnMS5leGFtcGxlLmNvbTEcMBoGA1UEAxMTY2Eu\n\
b3JnMS5leGFtcGxlLmNvbTAeFw0yNjEyMDMwOTA2MDBaFw0zNjExMzAwOTA2MDBa\n\
MGsxCzAJBgNVBAYTAlVTMRMwEQYDVQQIEwpDYWxpZm9ybmlhMRYwFAYDVQQHEw1T\n\
YW4gRnJhbmNpc2NvMQ4wDAYDVQQLEwVhZG1pbjEfMB0GA1UEAwwWQWRtaW5Ab3Jn\n\
MS5leGFtcGxlLmNvbTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABAzefpWUXRMy\n\
lFDgNGRX76ZM4DB/864JVSYdPgVyJo7EqPwijb2/PIFnHPOVr3NC0tn0oj+CCf+1\n\
sWFhg9mMQE2jTTBLMA4GA1UdDwEB/wQEAwIHgDAMBgNVHRMBAf8EAjAAMCsGA1Ud\n\
IwQkMCKAIEASgGgtmaoasdC8uv4ejJ6AIiH/t7KnZ1lQz/x9dYHxMAoGCCqGSM49\n\
BAMCA0gAMEUCIQDqkQVH6MMxTOQJKAKgjBCvqY0oVFsalBMvmn8g5OwVWAIgc0TJ\n\
WS1DCI1tKLxENBc2+WHeQKwwR21DShob7qaclYo=\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn the_subject_ous_of_a_certificate() {
        assert_eq!(certificate_subject_ous(CRYPTOGEN_ADMIN_CERT.as_bytes()), Some(vec!["admin".to_owned()]));
        assert_eq!(certificate_subject_ous(OPENSSL_CERT.as_bytes()), Some(vec!["client".to_owned()]));
        let (client, _) = orchestrator_fabric_testing::identity::issued_pem("OuMSP").expect("identity");
        assert_eq!(certificate_subject_ous(&client), Some(vec!["client".to_owned()]));
        assert_eq!(certificate_subject_ous(b"no certificate"), None);
        let mut truncated = CRYPTOGEN_ADMIN_CERT.as_bytes().to_vec();
        truncated.drain(100..200);
        assert_eq!(certificate_subject_ous(&truncated), None);
    }

    #[test]
    fn identities_load_from_openssl_pem_files() {
        let pkcs8 = Identity::from_pem("OpenSslMSP", OPENSSL_CERT.as_bytes(), OPENSSL_PKCS8.as_bytes()).expect("pkcs8");
        let sec1 = Identity::from_pem("OpenSslMSP", OPENSSL_CERT.as_bytes(), OPENSSL_SEC1.as_bytes()).expect("sec1");
        assert_eq!(pkcs8.public_key(), sec1.public_key());
        assert_eq!(pkcs8.certificate, OPENSSL_CERT.as_bytes(), "kept byte for byte");
        assert_eq!(pkcs8.msp_id, "OpenSslMSP");
        let signature = pkcs8.sign(b"proposal").expect("sign");
        verify(sec1.public_key(), b"proposal", &signature).expect("low-S, verifies with the certificate's key");
    }

    #[test]
    fn identities_load_from_generated_keys_with_or_without_the_public_key() {
        let rng = SystemRandom::new();
        let (cert, key_pem) = issued_pem("LoadMSP").expect("identity");
        let pkcs8 = pem_block(&key_pem, "PRIVATE KEY").expect("pkcs8");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng).expect("key");
        let loaded = Identity::from_pem("LoadMSP", &cert, &pem("PRIVATE KEY", pkcs8.as_ref())).expect("ring pkcs8");
        assert_eq!(loaded.public_key(), key.public_key().as_ref());

        // The same scalar in a PKCS#8 without the optional public key (ring alone refuses it).
        let scalar = pkcs8_private_scalar(pkcs8.as_ref()).expect("scalar");
        let ec_private_key = der::tlv(0x30, &[der::unsigned_integer(&[1]), der::tlv(0x04, &scalar)].concat());
        let bare = der::tlv(
            0x30,
            &[der::unsigned_integer(&[0]), der::tlv(0x30, &der::ec_p256_algorithm()), der::tlv(0x04, &ec_private_key)]
                .concat(),
        );
        assert!(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &bare, &rng).is_err());
        let loaded = Identity::from_pem("LoadMSP", &cert, &pem("PRIVATE KEY", &bare)).expect("bare pkcs8");
        assert_eq!(loaded.public_key(), key.public_key().as_ref());
        let loaded = Identity::from_pem("LoadMSP", &cert, &pem("EC PRIVATE KEY", &ec_private_key)).expect("bare sec1");
        assert_eq!(loaded.public_key(), key.public_key().as_ref());
    }

    #[test]
    fn unusable_identity_files_are_refused() {
        let load = |cert: &str, key: &str| Identity::from_pem("M", cert.as_bytes(), key.as_bytes());
        let other = issued("IdentityLoadOtherMSP");
        let other_cert = String::from_utf8(other.certificate.clone()).expect("utf-8");
        for (cert, key) in [
            (other_cert.as_str(), OPENSSL_PKCS8),
            ("", OPENSSL_PKCS8),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", OPENSSL_PKCS8),
            (OPENSSL_CERT, ""),
            (OPENSSL_CERT, OPENSSL_CERT),
            (OPENSSL_CERT, "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"),
            (OPENSSL_CERT, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        ] {
            assert!(matches!(load(cert, key), Err(IdentityError::Load(_))), "{cert:?} / {key:?}");
        }
        let error = load(&other_cert, OPENSSL_PKCS8).unwrap_err().to_string();
        assert!(error.contains("does not match the certificate"), "{error}");
    }
}
