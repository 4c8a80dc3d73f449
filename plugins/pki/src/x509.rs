//! Reading and writing X.509 pieces in the guest: PEM, certificates, CSRs, public keys,
//! distinguished names, serial numbers, the AIA extension, and PKCS#8 → PKCS#1. Parsing
//! uses x509-parser; everything here is pure and bounded by its input.

use std::net::IpAddr;

use rcgen::{
    CustomExtension, DistinguishedName, DnType, DnValue, PublicKeyData, SignatureAlgorithm,
};
use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

/// Most certificates accepted in one PEM bundle.
const MAX_PEM_BLOCKS: usize = 16;
/// Largest PEM input accepted.
pub const MAX_PEM_BYTES: usize = 256 * 1024;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// A public key's family and size, for role checks and signature choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    /// RSA with this many modulus bits.
    Rsa(u32),
    /// ECDSA on the curve with this many bits (256 or 384).
    Ec(u32),
    /// Ed25519.
    Ed25519,
}

impl KeyFamily {
    /// Vault's `private_key_type` / role `key_type` name.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Rsa(_) => "rsa",
            Self::Ec(_) => "ec",
            Self::Ed25519 => "ed25519",
        }
    }

    /// Key size as Vault counts `key_bits`.
    pub fn bits(self) -> u32 {
        match self {
            Self::Rsa(bits) | Self::Ec(bits) => bits,
            Self::Ed25519 => 0,
        }
    }

    /// The rcgen algorithm a key of this family signs (and is described) with.
    pub fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
            Self::Ec(384) => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ec(_) => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A public key taken from DER SubjectPublicKeyInfo, usable by rcgen.
#[derive(Clone, Debug)]
pub struct PublicKey {
    /// The whole SPKI, DER.
    pub spki: Vec<u8>,
    /// The subjectPublicKey BIT STRING contents.
    raw: Vec<u8>,
    /// Family and size.
    pub family: KeyFamily,
}

impl PublicKey {
    /// Parses DER SubjectPublicKeyInfo.
    pub fn from_spki(spki: &[u8]) -> Result<Self, String> {
        let (_, parsed) =
            SubjectPublicKeyInfo::from_der(spki).map_err(|e| format!("invalid public key: {e}"))?;
        let family = family_of(&parsed)?;
        Ok(Self {
            spki: spki.to_vec(),
            raw: parsed.subject_public_key.data.to_vec(),
            family,
        })
    }

    /// RFC 7093 method 1 key identifier: the leftmost 160 bits of SHA-256 of the key.
    pub fn key_id(&self) -> Vec<u8> {
        Sha256::digest(&self.raw)
            .get(..20)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }
}

impl PublicKeyData for PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.family.algorithm()
    }
}

fn family_of(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyFamily, String> {
    match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                    u32::try_from(rsa.key_size()).unwrap_or(0)
                }
                _ => return Err("malformed RSA public key".to_string()),
            };
            Ok(KeyFamily::Rsa(bits))
        }
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => Ok(KeyFamily::Ec(256)),
                OID_P384 => Ok(KeyFamily::Ec(384)),
                OID_P521 => {
                    Err("EC P-521 keys are not supported yet; use P-256 or P-384".to_string())
                }
                other => Err(format!("unsupported EC curve {other}")),
            }
        }
        OID_ED25519 => Ok(KeyFamily::Ed25519),
        other => Err(format!("unsupported public key algorithm {other}")),
    }
}

/// PEM text for one DER block, without a trailing newline (as Vault returns it).
pub fn pem(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
        .trim_end()
        .to_string()
}

/// Every PEM block of `label` in `text`, in order.
pub fn pem_blocks(text: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    if text.len() > MAX_PEM_BYTES {
        return Err(format!("PEM input is larger than {MAX_PEM_BYTES} bytes"));
    }
    let blocks = pem::parse_many(text).map_err(|e| format!("invalid PEM: {e}"))?;
    if blocks.len() > MAX_PEM_BLOCKS {
        return Err(format!("at most {MAX_PEM_BLOCKS} PEM blocks are accepted"));
    }
    let selected: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == label)
        .map(|b| b.into_contents())
        .collect();
    if selected.is_empty() {
        return Err(format!("no {label} PEM block found"));
    }
    Ok(selected)
}

/// `39:dd:2e` form of a serial.
pub fn serial_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalizes a serial given as `39:dd:2e`, `39-dd-2e` or hex to the storage form `39-dd-2e`.
pub fn serial_key(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty()
        || !hex.len().is_multiple_of(2)
        || hex.len() > 64
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    let pairs: Vec<&str> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| hex.get(i..i + 2))
        .collect();
    Some(pairs.join("-"))
}

/// What Coffer needs from a certificate.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// Serial bytes.
    pub serial: Vec<u8>,
    /// NotBefore, unix seconds.
    pub not_before: i64,
    /// NotAfter, unix seconds.
    pub not_after: i64,
    /// Subject public key.
    pub key: PublicKey,
    /// Whether basic constraints say CA.
    pub is_ca: bool,
    /// Subject, as an rcgen name (for issuing under it).
    pub subject: DistinguishedName,
    /// Subject common name.
    pub common_name: String,
    /// Subject key identifier, when the certificate carries one.
    pub subject_key_id: Option<Vec<u8>>,
    /// Whether issuer and subject are the same name (self-issued).
    pub self_issued: bool,
}

/// Parses one DER certificate.
pub fn parse_cert(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("invalid certificate: {e}"))?;
    Ok(CertInfo {
        serial: cert.raw_serial().to_vec(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key: PublicKey::from_spki(cert.public_key().raw)?,
        is_ca: cert.is_ca(),
        subject: distinguished_name(cert.subject())?,
        common_name: common_name(cert.subject()),
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        subject_key_id: cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            }),
    })
}

fn common_name(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Converts a parsed name into an rcgen name, attribute by attribute, in order.
pub fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for attribute in name.iter_attributes() {
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .map(|arcs| arcs.collect())
            .ok_or("unsupported name attribute")?;
        let value = attribute
            .as_str()
            .map_err(|_| "name attributes must be strings".to_string())?
            .to_string();
        let kind = match oid.as_slice() {
            [2, 5, 4, 3] => DnType::CommonName,
            [2, 5, 4, 6] => DnType::CountryName,
            [2, 5, 4, 7] => DnType::LocalityName,
            [2, 5, 4, 8] => DnType::StateOrProvinceName,
            [2, 5, 4, 10] => DnType::OrganizationName,
            [2, 5, 4, 11] => DnType::OrganizationalUnitName,
            _ => DnType::CustomDnType(oid),
        };
        dn.push(kind, DnValue::Utf8String(value));
    }
    Ok(dn)
}

/// A parsed, signature-checked-by-the-caller CSR.
#[derive(Clone, Debug)]
pub struct Csr {
    /// The requested key.
    pub key: PublicKey,
    /// Requested subject.
    pub subject: DistinguishedName,
    /// Requested common name.
    pub common_name: String,
    /// Requested DNS names.
    pub dns_names: Vec<String>,
    /// Requested email SANs.
    pub emails: Vec<String>,
    /// Requested IP SANs.
    pub ips: Vec<IpAddr>,
    /// Requested URI SANs.
    pub uris: Vec<String>,
    /// The signed bytes (CertificationRequestInfo).
    pub signed: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// The signature algorithm OID.
    pub signature_oid: String,
}

/// Parses a PEM CSR.
pub fn parse_csr(text: &str) -> Result<Csr, String> {
    let der = pem_blocks(text, "CERTIFICATE REQUEST")?
        .into_iter()
        .next()
        .ok_or("no CSR found")?;
    let (_, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| format!("invalid CSR: {e}"))?;
    let info = &csr.certification_request_info;
    let mut parsed = Csr {
        key: PublicKey::from_spki(info.subject_pki.raw)?,
        subject: distinguished_name(&info.subject)?,
        common_name: common_name(&info.subject),
        dns_names: Vec::new(),
        emails: Vec::new(),
        ips: Vec::new(),
        uris: Vec::new(),
        signed: info.raw.to_vec(),
        signature: csr.signature_value.data.to_vec(),
        signature_oid: csr.signature_algorithm.algorithm.to_id_string(),
    };
    if let Some(extensions) = csr.requested_extensions() {
        for extension in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = extension {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(dns) => parsed.dns_names.push((*dns).to_string()),
                        GeneralName::RFC822Name(email) => parsed.emails.push((*email).to_string()),
                        GeneralName::URI(uri) => parsed.uris.push((*uri).to_string()),
                        GeneralName::IPAddress(bytes) => match bytes.len() {
                            4 => parsed.ips.push(IpAddr::from(
                                <[u8; 4]>::try_from(*bytes).map_err(|_| "bad IP SAN")?,
                            )),
                            16 => parsed.ips.push(IpAddr::from(
                                <[u8; 16]>::try_from(*bytes).map_err(|_| "bad IP SAN")?,
                            )),
                            _ => return Err("malformed IP SAN in CSR".to_string()),
                        },
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(parsed)
}

/// The Authority Information Access extension pointing at `issuing_certificates`.
pub fn aia_extension(issuing_certificates: &[String]) -> CustomExtension {
    let content = yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            for url in issuing_certificates {
                writer.next().write_sequence(|writer| {
                    writer
                        .next()
                        .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                            1, 3, 6, 1, 5, 5, 7, 48, 2,
                        ]));
                    writer
                        .next()
                        .write_tagged_implicit(yasna::Tag::context(6), |writer| {
                            writer.write_ia5_string(url)
                        });
                });
            }
        });
    });
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], content)
}

/// PEM of a private key in Vault's default format: PKCS#1 for RSA; PKCS#8 otherwise (and
/// for everything when `pkcs8` is asked for). Returns (PEM, DER-of-that-form).
pub fn private_key_pem(
    pkcs8: &[u8],
    family: KeyFamily,
    want_pkcs8: bool,
) -> Result<(String, Vec<u8>), String> {
    if want_pkcs8 || !matches!(family, KeyFamily::Rsa(_)) {
        return Ok((pem("PRIVATE KEY", pkcs8), pkcs8.to_vec()));
    }
    // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING }
    let inner = yasna::parse_der(pkcs8, |reader| {
        reader.read_sequence(|reader| {
            reader.next().read_u8()?;
            reader.next().read_der()?;
            let key = reader.next().read_bytes()?;
            let _ = reader.read_optional(|r| r.read_der());
            Ok(key)
        })
    })
    .map_err(|e| format!("cannot read PKCS#8 key: {e}"))?;
    Ok((pem("RSA PRIVATE KEY", &inner), inner))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize() {
        assert_eq!(serial_colon(&[0x39, 0xdd, 0x2e]), "39:dd:2e");
        assert_eq!(serial_key("39:DD:2e").as_deref(), Some("39-dd-2e"));
        assert_eq!(serial_key("39-dd-2e").as_deref(), Some("39-dd-2e"));
        assert_eq!(serial_key("zz"), None);
        assert_eq!(serial_key("../x"), None);
        assert_eq!(serial_key(""), None);
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        assert!(parse_csr("not pem").is_err());
        assert!(
            parse_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"
            )
            .is_err()
        );
        assert!(parse_cert(&[0x30, 0x03, 0x02, 0x01]).is_err());
        assert!(PublicKey::from_spki(&[1, 2, 3]).is_err());
        assert!(pem_blocks(&"x".repeat(MAX_PEM_BYTES + 1), "CERTIFICATE").is_err());
    }

    #[test]
    fn pem_has_no_trailing_newline() {
        let text = pem("CERTIFICATE", &[1, 2, 3]);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----"));
        assert_eq!(
            pem_blocks(&text, "CERTIFICATE").unwrap(),
            vec![vec![1, 2, 3]]
        );
    }
}
