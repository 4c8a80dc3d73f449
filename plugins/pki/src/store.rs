//! PKI storage and the objects behind it: issuers, keys, roles' neighbours (URLs, default
//! issuer), stored certificates, and the host-key signer rcgen signs through.
//!
//! Layout in the mount's view: `issuer/<id>`, `issuer-name/<name>`, `key/<id>`,
//! `key-name/<name>`, `key-pending-name/<key-id>`, `config/issuers`, `config/urls`,
//! `role/<name>`, `certs/<serial>`, `revoked/<issuer-id>/<serial>`, `crl/<issuer-id>/…`.
//! Private keys are not here: they live in the host (`keys`), named `ca-<key-id>`.

use coffer_sdk::keys::{self, Key, KeyKind, SignatureScheme};
use coffer_sdk::{EngineError, storage};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use serde::{Deserialize, Serialize};

use crate::x509::{KeyFamily, PublicKey, parse_cert, pem_blocks};

/// An issuer: a CA certificate whose key this mount holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IssuerEntry {
    /// Issuer id (UUID form).
    pub id: String,
    /// Operator's name for it.
    pub name: String,
    /// The key it signs with.
    pub key_id: String,
    /// Its certificate, PEM.
    pub certificate: String,
    /// The chain from it to its root, PEM, itself first.
    pub chain: Vec<String>,
    /// `err`, `truncate` or `permit`.
    pub leaf_not_after_behavior: String,
}

/// A key held in the host for this mount.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Key id.
    pub id: String,
    /// Operator's name for it.
    pub name: String,
    /// `rsa`, `ec`, `ed25519`.
    pub key_type: String,
    /// Bits (0 for ed25519).
    pub bits: u32,
    /// Its public key (DER SPKI, base64), to match certificates to keys.
    pub spki: String,
}

/// `config/urls`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Urls {
    /// AIA caIssuers URLs written into certificates.
    pub issuing_certificates: Vec<String>,
    /// CRL distribution points written into certificates.
    pub crl_distribution_points: Vec<String>,
    /// OCSP servers.
    pub ocsp_servers: Vec<String>,
}

/// A stored certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CertEntry {
    /// PEM.
    pub certificate: String,
    /// The issuer that signed it.
    pub issuer_id: String,
    /// NotAfter, unix seconds.
    pub not_after: i64,
    /// Revocation time, unix seconds.
    pub revoked_at: Option<u64>,
}

/// Shorthand for a 400.
pub fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::InvalidRequest(message.into())
}

/// A random UUID-shaped id.
pub fn new_id() -> Result<String, EngineError> {
    let bytes = random(16)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8).unwrap_or_default(),
        hex.get(8..12).unwrap_or_default(),
        hex.get(12..16).unwrap_or_default(),
        hex.get(16..20).unwrap_or_default(),
        hex.get(20..32).unwrap_or_default()
    ))
}

/// Random bytes from wasi:random.
pub fn random(n: usize) -> Result<Vec<u8>, EngineError> {
    coffer_sdk::random::bytes(n)
}

/// A positive 20-byte serial number.
pub fn new_serial() -> Result<Vec<u8>, EngineError> {
    let mut serial = random(20)?;
    if let Some(first) = serial.first_mut() {
        *first = (*first & 0x7f) | 0x01;
    }
    Ok(serial)
}

/// Reads a JSON entry.
pub fn load<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, EngineError> {
    storage::get_json(key)
}

/// The host key name of a key id.
pub fn host_key_name(key_id: &str) -> String {
    format!("ca-{key_id}")
}

/// The id of the default issuer, if any.
pub fn default_issuer_id() -> Result<Option<String>, EngineError> {
    Ok(load::<serde_json::Value>("config/issuers")?
        .and_then(|v| {
            v.get("default")
                .and_then(|d| d.as_str())
                .map(str::to_string)
        })
        .filter(|id| !id.is_empty()))
}

/// Sets the default issuer.
pub fn set_default_issuer(id: &str) -> Result<(), EngineError> {
    storage::put_json("config/issuers", &serde_json::json!({ "default": id }))
}

/// Resolves `default`, an issuer id, or an issuer name.
pub fn resolve_issuer(reference: &str) -> Result<IssuerEntry, EngineError> {
    let reference = if reference.is_empty() {
        "default"
    } else {
        reference
    };
    let id = if reference == "default" {
        default_issuer_id()?.ok_or_else(|| invalid("no default issuer is configured; generate or import a CA first (could not fetch the CA certificate)"))?
    } else if storage::get(&format!("issuer/{reference}"))?.is_some() {
        reference.to_string()
    } else {
        storage::get(&format!("issuer-name/{reference}"))?
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .ok_or_else(|| {
                invalid(format!(
                    "unable to find PKI issuer for reference: {reference}"
                ))
            })?
    };
    load(&format!("issuer/{id}"))?.ok_or_else(|| {
        invalid(format!(
            "unable to find PKI issuer for reference: {reference}"
        ))
    })
}

/// Resolves a key by id or name.
pub fn resolve_key(reference: &str) -> Result<KeyEntry, EngineError> {
    if let Some(entry) = load::<KeyEntry>(&format!("key/{reference}"))? {
        return Ok(entry);
    }
    let id = storage::get(&format!("key-name/{reference}"))?
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .ok_or_else(|| invalid(format!("unable to find PKI key for reference: {reference}")))?;
    load(&format!("key/{id}"))?
        .ok_or_else(|| invalid(format!("unable to find PKI key for reference: {reference}")))
}

/// The `config/urls` settings.
pub fn urls() -> Result<Urls, EngineError> {
    Ok(load("config/urls")?.unwrap_or_default())
}

/// The host key kind for a Vault key_type/key_bits pair, with Vault's defaults and errors.
pub fn key_kind(key_type: &str, bits: i64) -> Result<(KeyKind, KeyFamily), EngineError> {
    match (key_type, bits) {
        ("rsa", 0 | 2048) => Ok((KeyKind::Rsa2048, KeyFamily::Rsa(2048))),
        ("rsa", 3072) => Ok((KeyKind::Rsa3072, KeyFamily::Rsa(3072))),
        ("rsa", 4096) => Ok((KeyKind::Rsa4096, KeyFamily::Rsa(4096))),
        ("rsa", b) if b < 2048 => Err(invalid("RSA keys < 2048 bits are unsafe and not supported")),
        ("rsa", b) => Err(invalid(format!(
            "unsupported RSA key size {b}: use 2048, 3072 or 4096"
        ))),
        ("ec", 0 | 256) => Ok((KeyKind::EcdsaP256, KeyFamily::Ec(256))),
        ("ec", 384) => Ok((KeyKind::EcdsaP384, KeyFamily::Ec(384))),
        ("ec", 521) => Err(invalid(
            "EC P-521 keys are not supported yet; use 256 or 384",
        )),
        ("ec", b) => Err(invalid(format!(
            "unsupported EC key size {b}: use 256 or 384"
        ))),
        ("ed25519", _) => Ok((KeyKind::Ed25519, KeyFamily::Ed25519)),
        (other, _) => Err(invalid(format!(
            "unknown key type {other:?}: use rsa, ec or ed25519"
        ))),
    }
}

fn scheme(family: KeyFamily) -> SignatureScheme {
    match family {
        KeyFamily::Rsa(_) => SignatureScheme::RsaPkcs1Sha256,
        KeyFamily::Ec(384) => SignatureScheme::EcdsaP384Sha384,
        KeyFamily::Ec(_) => SignatureScheme::EcdsaP256Sha256,
        KeyFamily::Ed25519 => SignatureScheme::Ed25519,
    }
}

/// Maps a host error.
pub fn host(error: keys::HostError) -> EngineError {
    coffer_sdk::storage::host_error(error)
}

/// A host-held key that rcgen can sign with; the private half never enters the guest.
pub struct HostSigner {
    key: Key,
    /// Its public half.
    pub public: PublicKey,
}

impl HostSigner {
    /// Wraps a host key handle.
    pub fn new(key: Key) -> Result<Self, EngineError> {
        let public = PublicKey::from_spki(&key.public_key_spki()).map_err(EngineError::Internal)?;
        Ok(Self { key, public })
    }

    /// Opens the stored key with this id.
    pub fn open(key_id: &str) -> Result<Self, EngineError> {
        Self::new(keys::open(&host_key_name(key_id)).map_err(host)?)
    }

    /// PKCS#8 DER of the key; the host refuses unless it is exportable.
    pub fn export(&self) -> Result<Vec<u8>, EngineError> {
        self.key.export_pkcs8().map_err(host)
    }
}

impl PublicKeyData for HostSigner {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.public.algorithm()
    }
}

impl SigningKey for HostSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign(scheme(self.public.family), message)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The scheme a CSR's signature algorithm OID means, if supported.
pub fn scheme_for_oid(oid: &str) -> Option<SignatureScheme> {
    match oid {
        "1.2.840.113549.1.1.11" => Some(SignatureScheme::RsaPkcs1Sha256),
        "1.2.840.10045.4.3.2" => Some(SignatureScheme::EcdsaP256Sha256),
        "1.2.840.10045.4.3.3" => Some(SignatureScheme::EcdsaP384Sha384),
        "1.2.840.10045.4.3.4" => Some(SignatureScheme::EcdsaP521Sha512),
        "1.3.101.112" => Some(SignatureScheme::Ed25519),
        _ => None,
    }
}

/// The issuer's certificate, parsed. One issuance consults it several times (TTL cap,
/// signing, chain); parsing is memoized by the PEM text for the rest of this call (every
/// call runs in a fresh instance, so nothing outlives the request).
pub fn issuer_cert(issuer: &IssuerEntry) -> Result<crate::x509::CertInfo, EngineError> {
    thread_local! {
        static PARSED: std::cell::RefCell<Vec<(String, crate::x509::CertInfo)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let known = PARSED.with_borrow(|parsed| {
        parsed
            .iter()
            .find(|(pem, _)| *pem == issuer.certificate)
            .map(|(_, info)| info.clone())
    });
    if let Some(info) = known {
        return Ok(info);
    }
    let der = pem_blocks(&issuer.certificate, "CERTIFICATE").map_err(EngineError::Internal)?;
    let info = parse_cert(
        der.first()
            .ok_or_else(|| EngineError::Internal("issuer has no certificate".to_string()))?,
    )
    .map_err(EngineError::Internal)?;
    PARSED.with_borrow_mut(|parsed| parsed.push((issuer.certificate.clone(), info.clone())));
    Ok(info)
}
