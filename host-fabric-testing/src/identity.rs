//! Client identities of the peer simulator (docs/fabric-encoding.md §4.1, §4.3): per MSP id and
//! role, an ECDSA P-256 key pair and a self-signed X.509 certificate (PEM, Subject
//! `O=<MSP id>, OU=<role>, CN=<user|admin>`, the NodeOUs role as cryptogen writes it), signed by
//! the production rules of [`orchestrator_host_fabric::signing`]. A user ([`IssueIdentity::new`],
//! OU=client) and an admin ([`IssueIdentity::admin`], OU=admin) per MSP.
//!
//! Identities are issued once per MSP id, role and process ([`IssueIdentity::new`] returns the
//! same key and certificate for the same MSP id), so proposals built twice from the same inputs
//! have the same creator, txid and proposal hash. The issued identities are the simulator's MSP
//! configuration: [`issued`] and [`issued_with_certificate`] give the certificate and public key
//! a peer checks a creator against.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use orchestrator_host_fabric::signing::{IdentityError, der, negate_scalar, normalize_low_s};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use crate::Identity;

/// An issued identity and its key file, for clients that load identities from PEM files.
#[derive(Clone)]
struct Issued {
    identity: Identity,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// The NodeOUs role of an issued identity: its certificate's Subject OU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `OU=client`, `CN=user`: what the scenarios and the facade sign with.
    Client,
    /// `OU=admin`, `CN=admin`: an administrator of the organization.
    Admin,
}

impl Role {
    fn organizational_unit(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    fn common_name(self) -> &'static str {
        match self {
            Role::Client => "user",
            Role::Admin => "admin",
        }
    }
}

type Registry = HashMap<(String, Role), Issued>;

fn registry() -> &'static Mutex<Registry> {
    static ISSUED: OnceLock<Mutex<Registry>> = OnceLock::new();
    ISSUED.get_or_init(|| Mutex::new(HashMap::new()))
}

fn issued_identities() -> std::sync::MutexGuard<'static, Registry> {
    registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The client identity issued for `msp_id` in this process, if any.
pub fn issued(msp_id: &str) -> Option<Identity> {
    issued_identities().get(&(msp_id.to_owned(), Role::Client)).map(|issued| issued.identity.clone())
}

/// The identity of any role issued for `msp_id` whose certificate is `certificate` (PEM), if any:
/// what a peer checks a creator against.
pub fn issued_with_certificate(msp_id: &str, certificate: &[u8]) -> Option<Identity> {
    issued_identities()
        .iter()
        .find(|((msp, _), issued)| msp == msp_id && issued.cert_pem == certificate)
        .map(|(_, issued)| issued.identity.clone())
}

fn issue(msp_id: &str, role: Role) -> Result<Issued, IdentityError> {
    let mut issued = issued_identities();
    let key = (msp_id.to_owned(), role);
    if let Some(identity) = issued.get(&key) {
        return Ok(identity.clone());
    }
    let identity = generate(msp_id, role)?;
    issued.insert(key, identity.clone());
    Ok(identity)
}

/// The certificate PEM and PKCS#8 private key PEM of the client identity issued for `msp_id`
/// (issued on the first call), as an MSP folder holds them: for code that loads identities from
/// files, or links its own copy of `orchestrator-host-fabric` (its unit tests).
pub fn issued_pem(msp_id: &str) -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
    issued_pem_of(msp_id, Role::Client)
}

/// [`issued_pem`] for the identity of `role`.
pub fn issued_pem_of(msp_id: &str, role: Role) -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
    issue(msp_id, role).map(|issued| (issued.cert_pem, issued.key_pem))
}

/// Issuing simulator identities, as associated functions of [`Identity`] (`Identity::new`).
pub trait IssueIdentity: Sized {
    /// The identity of `msp_id`: created (key pair and self-signed certificate) on the first
    /// call for this MSP id, the same one afterwards.
    fn new(msp_id: impl Into<String>) -> Result<Self, IdentityError>;

    /// [`IssueIdentity::new`] for an admin of `msp_id` (Subject `OU=admin`): another key and
    /// certificate, valid for the same MSP.
    fn admin(msp_id: impl Into<String>) -> Result<Self, IdentityError>;

    /// The same key and certificate presented under another MSP id (a forged creator).
    fn with_msp_id(&self, msp_id: impl Into<String>) -> Self;
}

impl IssueIdentity for Identity {
    fn new(msp_id: impl Into<String>) -> Result<Self, IdentityError> {
        issue(&msp_id.into(), Role::Client).map(|issued| issued.identity)
    }

    fn admin(msp_id: impl Into<String>) -> Result<Self, IdentityError> {
        issue(&msp_id.into(), Role::Admin).map(|issued| issued.identity)
    }

    fn with_msp_id(&self, msp_id: impl Into<String>) -> Self {
        // Only the MSP id is public to set: the key stays inside the production type.
        let mut forged = self.clone();
        forged.msp_id = msp_id.into();
        forged
    }
}

fn generate(msp_id: &str, role: Role) -> Result<Issued, IdentityError> {
    let failed = || IdentityError::KeyGeneration(msp_id.to_owned());
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).map_err(|_| failed())?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).map_err(|_| failed())?;
    let mut serial = [0u8; 16];
    rng.fill(&mut serial).map_err(|_| failed())?;
    serial[0] = (serial[0] & 0x7F) | 0x01;
    let tbs = certificate::tbs_certificate(&serial, msp_id, role, key.public_key().as_ref());
    let signature = key.sign(&rng, &tbs).map_err(|_| failed())?;
    let signature = normalize_low_s(signature.as_ref()).map_err(|_| failed())?;
    let cert_pem = pem("CERTIFICATE", &certificate::certificate(&tbs, &signature));
    let key_pem = pem("PRIVATE KEY", pkcs8.as_ref());
    // Loaded as a client loads its MSP folder: the certificate kept byte for byte.
    let identity = Identity::from_pem(msp_id, &cert_pem, &key_pem).map_err(|_| failed())?;
    Ok(Issued { identity, cert_pem, key_pem })
}

/// The other valid signature of the same message: `(r, n − s)` (high-S if the input is low-S).
pub fn flip_s(signature: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let malformed = IdentityError::MalformedSignature;
    // Checked as the peer checks it first: a well-formed low- or high-S signature.
    normalize_low_s(signature)?;
    let (content, _) = der::read(signature, 0x30).ok_or(malformed.clone())?;
    let (r, rest) = der::read(content, 0x02).ok_or(malformed.clone())?;
    let (s, _) = der::read(rest, 0x02).ok_or(malformed)?;
    let digits = s.strip_prefix(&[0]).unwrap_or(s);
    let mut s = [0u8; 32];
    s[32 - digits.len()..].copy_from_slice(digits);
    Ok(der::tlv(0x30, &[der::unsigned_integer(r), der::unsigned_integer(&negate_scalar(&s))].concat()))
}

/// PEM armour, 64 base64 characters per line.
pub fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// Minimal DER writer of the self-signed client certificates.
mod certificate {
    use orchestrator_host_fabric::signing::der::{OID_EC_PUBLIC_KEY, OID_PRIME256V1, oid, tlv, unsigned_integer};

    use super::Role;

    const OID_ECDSA_WITH_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
    const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0A];
    const OID_ORGANIZATIONAL_UNIT: &[u8] = &[0x55, 0x04, 0x0B];

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

    /// TBSCertificate (v3, no extensions) of a self-signed certificate of `role`.
    pub(super) fn tbs_certificate(serial: &[u8], msp_id: &str, role: Role, public_key: &[u8]) -> Vec<u8> {
        let subject = name(&[
            (OID_ORGANIZATION, msp_id),
            (OID_ORGANIZATIONAL_UNIT, role.organizational_unit()),
            (OID_COMMON_NAME, role.common_name()),
        ]);
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

    use orchestrator_host_fabric::signing::verify;

    use super::*;
    use crate::IssueIdentity;

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
