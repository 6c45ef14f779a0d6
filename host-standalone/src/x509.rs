//! Just enough X.509 to verify a caller's MSP id: the Subject Organization (O) values, the
//! Subject Key Identifier and the Authority Key Identifier of a DER certificate.
//!
//! A small hand-written DER walk instead of a full X.509 crate: the certificate chain itself is
//! verified by rustls during the handshake; this only reads three fields of an already trusted
//! certificate.

/// A certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct ParseError(&'static str);

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_VERSION: u8 = 0xA0;
const TAG_EXTENSIONS: u8 = 0xA3;
const TAG_AKI_KEY_ID: u8 = 0x80;

const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0A]; // 2.5.4.10
const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1D, 0x0E]; // 2.5.29.14
const OID_AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1D, 0x23]; // 2.5.29.35

/// The fields of a certificate that MSP id verification needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject O= values, in order.
    pub organizations: Vec<String>,
    /// Subject Key Identifier extension, if present.
    pub subject_key_id: Option<Vec<u8>>,
    /// keyIdentifier of the Authority Key Identifier extension, if present.
    pub authority_key_id: Option<Vec<u8>>,
}

/// A DER reader over one level of TLVs.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one TLV: (tag, contents).
    fn read(&mut self) -> Result<(u8, &'a [u8]), ParseError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(ParseError("truncated tag"))?;
        if tag & 0x1F == 0x1F {
            return Err(ParseError("high tag numbers are not supported"));
        }
        let (&first, after_len) = after_tag.split_first().ok_or(ParseError("truncated length"))?;
        let (len, body) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 || after_len.len() < count {
                return Err(ParseError("bad length"));
            }
            let (len_bytes, body) = after_len.split_at(count);
            let len = len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, body)
        };
        if body.len() < len {
            return Err(ParseError("truncated value"));
        }
        let (contents, rest) = body.split_at(len);
        self.rest = rest;
        Ok((tag, contents))
    }

    /// Reads one TLV that must carry `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], ParseError> {
        let (found, contents) = self.read()?;
        if found == tag { Ok(contents) } else { Err(ParseError(what)) }
    }
}

/// Decodes a directory string (UTF8String, PrintableString, IA5String, T61String, BMPString).
fn directory_string(tag: u8, contents: &[u8]) -> String {
    match tag {
        // BMPString: UTF-16 big endian
        0x1E => {
            let units: Vec<u16> = contents
                .chunks(2)
                .map(|pair| match pair {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0xFFFD,
                })
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(contents).into_owned(),
    }
}

/// Reads the fields of a DER certificate.
pub fn parse_certificate(der: &[u8]) -> Result<CertInfo, ParseError> {
    let certificate = Der::new(der).expect(TAG_SEQUENCE, "certificate is not a sequence")?;
    let tbs = Der::new(certificate).expect(TAG_SEQUENCE, "tbsCertificate is not a sequence")?;
    let mut fields = Der::new(tbs);
    if fields.peek_tag() == Some(TAG_VERSION) {
        fields.read()?;
    }
    fields.read()?; // serialNumber
    fields.expect(TAG_SEQUENCE, "bad signature algorithm")?;
    fields.expect(TAG_SEQUENCE, "bad issuer")?;
    fields.expect(TAG_SEQUENCE, "bad validity")?;
    let subject = fields.expect(TAG_SEQUENCE, "bad subject")?;
    fields.expect(TAG_SEQUENCE, "bad subject public key info")?;

    let mut info = CertInfo { organizations: subject_organizations(subject)?, ..CertInfo::default() };
    while !fields.is_empty() {
        let (tag, contents) = fields.read()?;
        if tag == TAG_EXTENSIONS {
            read_extensions(contents, &mut info)?;
        }
    }
    Ok(info)
}

fn subject_organizations(name: &[u8]) -> Result<Vec<String>, ParseError> {
    let mut organizations = Vec::new();
    let mut rdns = Der::new(name);
    while !rdns.is_empty() {
        let rdn = rdns.expect(TAG_SET, "bad relative distinguished name")?;
        let mut attributes = Der::new(rdn);
        while !attributes.is_empty() {
            let attribute = attributes.expect(TAG_SEQUENCE, "bad attribute")?;
            let mut parts = Der::new(attribute);
            let oid = parts.expect(TAG_OID, "bad attribute type")?;
            let (tag, value) = parts.read()?;
            if oid == OID_ORGANIZATION {
                organizations.push(directory_string(tag, value));
            }
        }
    }
    Ok(organizations)
}

fn read_extensions(explicit: &[u8], info: &mut CertInfo) -> Result<(), ParseError> {
    let list = Der::new(explicit).expect(TAG_SEQUENCE, "bad extensions")?;
    let mut extensions = Der::new(list);
    while !extensions.is_empty() {
        let extension = extensions.expect(TAG_SEQUENCE, "bad extension")?;
        let mut parts = Der::new(extension);
        let oid = parts.expect(TAG_OID, "bad extension id")?;
        if parts.peek_tag() == Some(TAG_BOOLEAN) {
            parts.read()?;
        }
        let value = parts.expect(TAG_OCTET_STRING, "bad extension value")?;
        if oid == OID_SUBJECT_KEY_ID {
            let key_id = Der::new(value).expect(TAG_OCTET_STRING, "bad subject key id")?;
            info.subject_key_id = Some(key_id.to_vec());
        } else if oid == OID_AUTHORITY_KEY_ID {
            let aki = Der::new(value).expect(TAG_SEQUENCE, "bad authority key id")?;
            let mut aki_fields = Der::new(aki);
            while !aki_fields.is_empty() {
                let (tag, contents) = aki_fields.read()?;
                if tag == TAG_AKI_KEY_ID {
                    info.authority_key_id = Some(contents.to_vec());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use orchestrator_host_fabric::signing::der::tlv;

    use super::*;

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut seq = tlv(TAG_OID, oid);
        seq.extend(tlv(tag, value));
        tlv(TAG_SET, &tlv(TAG_SEQUENCE, &seq))
    }

    fn certificate(subject: &[u8], extensions: &[u8]) -> Vec<u8> {
        let mut tbs = tlv(TAG_VERSION, &tlv(0x02, &[2]));
        tbs.extend(tlv(0x02, &[1, 2, 3]));
        tbs.extend(tlv(TAG_SEQUENCE, &tlv(TAG_OID, &[0x2A, 0x86])));
        tbs.extend(tlv(TAG_SEQUENCE, &attribute(&[0x55, 0x04, 0x03], 0x0C, b"ca")));
        tbs.extend(tlv(TAG_SEQUENCE, &[]));
        tbs.extend(tlv(TAG_SEQUENCE, subject));
        tbs.extend(tlv(TAG_SEQUENCE, &[0u8; 200]));
        tbs.extend(tlv(TAG_EXTENSIONS, &tlv(TAG_SEQUENCE, extensions)));
        let mut cert = tlv(TAG_SEQUENCE, &tbs);
        cert.extend(tlv(TAG_SEQUENCE, &[]));
        cert.extend(tlv(0x03, &[0]));
        tlv(TAG_SEQUENCE, &cert)
    }

    fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
        let mut seq = tlv(TAG_OID, oid);
        if critical {
            seq.extend(tlv(TAG_BOOLEAN, &[0xFF]));
        }
        seq.extend(tlv(TAG_OCTET_STRING, value));
        tlv(TAG_SEQUENCE, &seq)
    }

    #[test]
    fn reads_organizations_and_key_ids() {
        let mut subject = attribute(&[0x55, 0x04, 0x03], 0x0C, b"user");
        subject.extend(attribute(OID_ORGANIZATION, 0x13, b"MyOrg1MSP"));
        subject.extend(attribute(OID_ORGANIZATION, 0x1E, &[0, b'O', 0, b'2']));
        let mut extensions = extension(OID_SUBJECT_KEY_ID, false, &tlv(TAG_OCTET_STRING, &[1, 2]));
        let mut aki = tlv(TAG_AKI_KEY_ID, &[9, 9, 9]);
        aki.extend(tlv(0x82, &[5]));
        extensions.extend(extension(OID_AUTHORITY_KEY_ID, true, &tlv(TAG_SEQUENCE, &aki)));
        let der = certificate(&subject, &extensions);
        let info = parse_certificate(&der);
        assert_eq!(
            info,
            Ok(CertInfo {
                organizations: vec!["MyOrg1MSP".to_owned(), "O2".to_owned()],
                subject_key_id: Some(vec![1, 2]),
                authority_key_id: Some(vec![9, 9, 9]),
            })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_certificate(&[]).is_err());
        assert!(parse_certificate(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(parse_certificate(&[0x30, 0x03, 0x30, 0x01]).is_err());
        let mut cert = certificate(&[], &[]);
        cert.truncate(cert.len() / 2);
        assert!(parse_certificate(&cert).is_err());
    }
}
