//! `coffer:host/keys`: private keys that stay in the host.
//!
//! A key is a resource handle. `sign` and `public-key-spki` always work; `export-pkcs8`
//! works only for keys created exportable (and for transient keys, which exist to be handed
//! to a caller once). Stored keys are PKCS#8 DER, encrypted by the barrier under the
//! mount's reserved `_keys/` prefix, which the guest's `storage` import refuses to touch.
//! Private key bytes are zeroized when a handle is dropped (OpenSSL frees them).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use base64::Engine as _;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Resource;
use zeroize::Zeroizing;

use crate::barrier::View;
use crate::caps::der;
use crate::runtime::CallState;
use crate::runtime::barrier_to_host;
use crate::runtime::bindings::coffer::host::keys::{self, KeyKind, SignatureScheme};
use crate::runtime::bindings::coffer::host::types::HostError;

/// Where stored keys live inside a mount's view.
const KEYS_PREFIX: &str = "_keys/";
/// Longest key name.
const MAX_KEY_NAME: usize = 128;
/// Largest message a guest may ask the host to sign or verify (TBS certificates and CRLs
/// of large CAs fit; anything bigger is a mistake or an attack).
pub const MAX_SIGNED_MESSAGE: usize = 16 << 20;
/// Largest imported key.
const MAX_KEY_DER: usize = 16 * 1024;

/// A key handle held by a guest.
pub struct Key {
    name: String,
    kind: KeyKind,
    exportable: bool,
    key: PKey<Private>,
    /// The public key as SPKI DER, encoded once: `issue` asks for it and for the PKCS#8,
    /// and each EC encoding would otherwise repeat a field inversion.
    spki: OnceLock<Vec<u8>>,
}

impl Key {
    fn new(name: String, kind: KeyKind, exportable: bool, key: PKey<Private>) -> Self {
        Self {
            name,
            kind,
            exportable,
            key,
            spki: OnceLock::new(),
        }
    }

    fn spki(&self) -> Result<&[u8], der::DerError> {
        if let Some(spki) = self.spki.get() {
            return Ok(spki);
        }
        let spki = der::spki(&self.key)?;
        Ok(self.spki.get_or_init(|| spki))
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kind: String,
    exportable: bool,
    pkcs8: String,
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::EcdsaP256 => "ecdsa-p256",
        KeyKind::EcdsaP384 => "ecdsa-p384",
        KeyKind::EcdsaP521 => "ecdsa-p521",
        KeyKind::Ed25519 => "ed25519",
        KeyKind::Rsa2048 => "rsa2048",
        KeyKind::Rsa3072 => "rsa3072",
        KeyKind::Rsa4096 => "rsa4096",
    }
}

fn kind_from_name(name: &str) -> Option<KeyKind> {
    [
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::EcdsaP521,
        KeyKind::Ed25519,
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::Rsa4096,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

fn crypto(error: openssl::error::ErrorStack) -> HostError {
    HostError::Internal(format!("crypto: {error}"))
}

fn encoding(error: der::DerError) -> HostError {
    HostError::Internal(format!("key encoding: {error}"))
}

/// The named curve, built once: constructing an `EcGroup` costs as much as an EC key
/// generation with OpenSSL 3.
fn curve(nid: Nid) -> Result<&'static EcGroup, HostError> {
    static GROUPS: [OnceLock<EcGroup>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match nid {
        Nid::X9_62_PRIME256V1 => &GROUPS[0],
        Nid::SECP384R1 => &GROUPS[1],
        Nid::SECP521R1 => &GROUPS[2],
        _ => return Err(HostError::Internal(format!("unsupported curve {nid:?}"))),
    };
    if let Some(group) = slot.get() {
        return Ok(group);
    }
    let group = EcGroup::from_curve_name(nid).map_err(crypto)?;
    Ok(slot.get_or_init(|| group))
}

/// Generates an RSA key of `bits` (2048, 3072 or 4096) with AWS-LC, whose key generation
/// is 2-3x faster than OpenSSL 3.0's here, and hands it to OpenSSL as PKCS#8 (the
/// intermediate DER is zeroed when dropped).
pub fn generate_rsa(bits: u32) -> Result<PKey<Private>, HostError> {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => {
            return Err(HostError::Invalid(format!(
                "RSA keys of {other} bits are not supported"
            )));
        }
    };
    let failed = |_| HostError::Internal("RSA key generation failed".to_string());
    let pkcs8 = KeyPair::generate(size)
        .and_then(|pair| pair.as_der())
        .map_err(failed)?;
    PKey::private_key_from_pkcs8(pkcs8.as_ref()).map_err(crypto)
}

/// Generates a fresh private key.
pub fn generate_key(kind: KeyKind) -> Result<PKey<Private>, HostError> {
    let ec = |nid: Nid| -> Result<PKey<Private>, HostError> {
        PKey::from_ec_key(EcKey::generate(curve(nid)?).map_err(crypto)?).map_err(crypto)
    };
    let rsa = |bits: u32| -> Result<PKey<Private>, HostError> {
        match super::rsa_pool::pool().take(bits) {
            Some(key) => Ok(key),
            // Up to a second of CPU (RSA-4096): not on an async worker.
            None => crate::background::blocking(|| generate_rsa(bits)),
        }
    };
    match kind {
        KeyKind::EcdsaP256 => ec(Nid::X9_62_PRIME256V1),
        KeyKind::EcdsaP384 => ec(Nid::SECP384R1),
        KeyKind::EcdsaP521 => ec(Nid::SECP521R1),
        KeyKind::Ed25519 => PKey::generate_ed25519().map_err(crypto),
        KeyKind::Rsa2048 => rsa(2048),
        KeyKind::Rsa3072 => rsa(3072),
        KeyKind::Rsa4096 => rsa(4096),
    }
}

/// The kind of an existing key, if it is one Coffer supports.
fn kind_of(key: &PKey<Private>) -> Option<KeyKind> {
    match key.id() {
        Id::ED25519 => Some(KeyKind::Ed25519),
        Id::RSA => match key.bits() {
            2048 => Some(KeyKind::Rsa2048),
            3072 => Some(KeyKind::Rsa3072),
            4096 => Some(KeyKind::Rsa4096),
            _ => None,
        },
        Id::EC => match key.ec_key().ok()?.group().curve_name()? {
            Nid::X9_62_PRIME256V1 => Some(KeyKind::EcdsaP256),
            Nid::SECP384R1 => Some(KeyKind::EcdsaP384),
            Nid::SECP521R1 => Some(KeyKind::EcdsaP521),
            _ => None,
        },
        _ => None,
    }
}

fn scheme_fits(kind: KeyKind, scheme: SignatureScheme) -> bool {
    matches!(
        (kind, scheme),
        (KeyKind::EcdsaP256, SignatureScheme::EcdsaP256Sha256)
            | (KeyKind::EcdsaP384, SignatureScheme::EcdsaP384Sha384)
            | (KeyKind::EcdsaP521, SignatureScheme::EcdsaP521Sha512)
            | (KeyKind::Ed25519, SignatureScheme::Ed25519)
            | (
                KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096,
                SignatureScheme::RsaPkcs1Sha256 | SignatureScheme::RsaPssSha256
            )
    )
}

fn digest(scheme: SignatureScheme) -> Option<MessageDigest> {
    match scheme {
        SignatureScheme::EcdsaP256Sha256
        | SignatureScheme::RsaPkcs1Sha256
        | SignatureScheme::RsaPssSha256 => Some(MessageDigest::sha256()),
        SignatureScheme::EcdsaP384Sha384 => Some(MessageDigest::sha384()),
        SignatureScheme::EcdsaP521Sha512 => Some(MessageDigest::sha512()),
        SignatureScheme::Ed25519 => None,
    }
}

pub(super) fn sign_with(
    key: &PKey<Private>,
    scheme: SignatureScheme,
    message: &[u8],
) -> Result<Vec<u8>, HostError> {
    let mut signer = match digest(scheme) {
        Some(md) => Signer::new(md, key).map_err(crypto)?,
        None => Signer::new_without_digest(key).map_err(crypto)?,
    };
    if scheme == SignatureScheme::RsaPssSha256 {
        signer.set_rsa_padding(Padding::PKCS1_PSS).map_err(crypto)?;
        signer
            .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
            .map_err(crypto)?;
    }
    signer.sign_oneshot_to_vec(message).map_err(crypto)
}

/// Parsed private keys by the SHA-256 of their PKCS#8 encoding. OpenSSL 3 spends ~400 µs
/// decoding a PKCS#8 key (its provider decoder machinery) against ~25 µs for a signature,
/// so a CA that signs every issued certificate would otherwise spend most of each request
/// here. Content-addressed: `open` still reads (and decrypts) the stored key every time, so
/// sealing, deletion and replacement take effect at once; the cache only skips the decode
/// of bytes it has decoded before. Bounded; emptied when full.
struct ParsedKeys(Mutex<HashMap<[u8; 32], PKey<Private>>>);

/// Most parsed keys kept (a key per CA issuer or role that signs).
const PARSED_KEYS_MAX: usize = 1024;

impl ParsedKeys {
    fn decode(&self, der: &[u8]) -> Result<PKey<Private>, HostError> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cache.get(&digest) {
            return Ok(key.clone());
        }
        drop(cache);
        let key = PKey::private_key_from_pkcs8(der).map_err(crypto)?;
        cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= PARSED_KEYS_MAX {
            cache.clear();
        }
        cache.insert(digest, key.clone());
        Ok(key)
    }
}

/// Drops every cached parsed key (called when the server seals).
pub fn forget_parsed_keys() {
    parsed_keys()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

fn parsed_keys() -> &'static ParsedKeys {
    static KEYS: OnceLock<ParsedKeys> = OnceLock::new();
    KEYS.get_or_init(|| ParsedKeys(Mutex::new(HashMap::new())))
}

/// Parses a guest-supplied SubjectPublicKeyInfo for `scheme` with OpenSSL's type-specific
/// decoders (the generic one costs ~100–170 µs a call with OpenSSL 3; these cost 2–12 µs),
/// and refuses a key of another family than the scheme's. An ECDSA scheme names the hash;
/// the key may be on any curve (a P-384 key signing with SHA-256 is common in CSRs).
fn public_key(spki: &[u8], scheme: SignatureScheme) -> Result<PKey<Public>, HostError> {
    let invalid =
        || HostError::Invalid("not a DER SubjectPublicKeyInfo for this scheme".to_string());
    match scheme {
        SignatureScheme::EcdsaP256Sha256
        | SignatureScheme::EcdsaP384Sha384
        | SignatureScheme::EcdsaP521Sha512 => {
            PKey::from_ec_key(EcKey::public_key_from_der(spki).map_err(|_| invalid())?)
                .map_err(crypto)
        }
        SignatureScheme::RsaPkcs1Sha256 | SignatureScheme::RsaPssSha256 => {
            PKey::from_rsa(Rsa::public_key_from_der(spki).map_err(|_| invalid())?).map_err(crypto)
        }
        SignatureScheme::Ed25519 => {
            let key = PKey::public_key_from_der(spki).map_err(|_| invalid())?;
            if key.id() != Id::ED25519 {
                return Err(invalid());
            }
            Ok(key)
        }
    }
}

/// Whether `signature` over `message` verifies under the SubjectPublicKeyInfo `spki`.
pub(super) fn verify_with(
    spki: &[u8],
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, HostError> {
    if message.len() > MAX_SIGNED_MESSAGE {
        return Err(HostError::Invalid("message too large".to_string()));
    }
    let key = public_key(spki, scheme)?;
    let mut verifier = match digest(scheme) {
        Some(md) => Verifier::new(md, &key).map_err(crypto)?,
        None => Verifier::new_without_digest(&key).map_err(crypto)?,
    };
    if scheme == SignatureScheme::RsaPssSha256 {
        verifier
            .set_rsa_padding(Padding::PKCS1_PSS)
            .map_err(crypto)?;
        verifier
            .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
            .map_err(crypto)?;
    }
    Ok(verifier.verify_oneshot(signature, message).unwrap_or(false))
}

fn check_name(name: &str) -> Result<(), HostError> {
    let clean = !name.is_empty()
        && name.len() <= MAX_KEY_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if clean {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "key name {name:?} must be 1-{MAX_KEY_NAME} of [A-Za-z0-9._-]"
        )))
    }
}

impl CallState {
    fn key_view(&self) -> Result<View, HostError> {
        self.caps
            .storage_view()
            .cloned()
            .ok_or_else(|| HostError::Denied("keys are not available in this call".to_string()))
    }

    fn store_key(
        &mut self,
        name: &str,
        key: PKey<Private>,
        kind: KeyKind,
        exportable: bool,
    ) -> Result<Resource<Key>, HostError> {
        check_name(name)?;
        let view = self.key_view()?;
        let path = format!("{KEYS_PREFIX}{name}");
        if view.get(&path).map_err(barrier_to_host)?.is_some() {
            return Err(HostError::Invalid(format!(
                "a key named {name:?} already exists"
            )));
        }
        let der = der::pkcs8(&key).map_err(encoding)?;
        let stored = StoredKey {
            kind: kind_name(kind).to_string(),
            exportable,
            pkcs8: base64::engine::general_purpose::STANDARD.encode(der.as_slice()),
        };
        let bytes = Zeroizing::new(
            serde_json::to_vec(&stored).map_err(|e| HostError::Internal(e.to_string()))?,
        );
        view.put(&path, &bytes).map_err(barrier_to_host)?;
        self.push_key(Key::new(name.to_string(), kind, exportable, key))
    }

    fn push_key(&mut self, key: Key) -> Result<Resource<Key>, HostError> {
        self.table
            .push(key)
            .map_err(|e| HostError::Internal(format!("resource table: {e}")))
    }

    fn key(&self, handle: &Resource<Key>) -> Result<&Key, HostError> {
        self.table
            .get(handle)
            .map_err(|e| HostError::Invalid(format!("bad key handle: {e}")))
    }
}

/// Links `coffer:host/keys`: what this module implements for every call, reachable only
/// as far as the call's state grants.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    keys::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(linker, |s| s)
}

impl keys::Host for CallState {
    fn generate(
        &mut self,
        name: String,
        kind: KeyKind,
        exportable: bool,
    ) -> Result<Resource<Key>, HostError> {
        let key = generate_key(kind)?;
        self.store_key(&name, key, kind, exportable)
    }

    fn generate_transient(&mut self, kind: KeyKind) -> Result<Resource<Key>, HostError> {
        let key = generate_key(kind)?;
        self.push_key(Key::new(String::new(), kind, true, key))
    }

    fn verify(
        &mut self,
        spki: Vec<u8>,
        scheme: SignatureScheme,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, HostError> {
        verify_with(&spki, scheme, &message, &signature)
    }

    fn import_pkcs8(
        &mut self,
        name: String,
        der: Vec<u8>,
        exportable: bool,
    ) -> Result<Resource<Key>, HostError> {
        if der.len() > MAX_KEY_DER {
            return Err(HostError::Invalid("key too large".to_string()));
        }
        let der = Zeroizing::new(der);
        let key = PKey::private_key_from_pkcs8(&der)
            .map_err(|_| HostError::Invalid("not a PKCS#8 private key".to_string()))?;
        let kind = kind_of(&key)
            .ok_or_else(|| HostError::Invalid("unsupported key type or size".to_string()))?;
        self.store_key(&name, key, kind, exportable)
    }

    fn open(&mut self, name: String) -> Result<Resource<Key>, HostError> {
        check_name(&name)?;
        let view = self.key_view()?;
        let bytes = Zeroizing::new(
            view.get(&format!("{KEYS_PREFIX}{name}"))
                .map_err(barrier_to_host)?
                .ok_or(HostError::NotFound)?,
        );
        let stored: StoredKey = serde_json::from_slice(&bytes)
            .map_err(|_| HostError::Internal(format!("corrupt key {name}")))?;
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&stored.pkcs8)
                .map_err(|_| HostError::Internal(format!("corrupt key {name}")))?,
        );
        let key = parsed_keys().decode(&der)?;
        let kind = kind_from_name(&stored.kind)
            .ok_or_else(|| HostError::Internal(format!("corrupt key {name}")))?;
        self.push_key(Key::new(name, kind, stored.exportable, key))
    }

    fn delete(&mut self, name: String) -> Result<(), HostError> {
        check_name(&name)?;
        self.key_view()?
            .delete(&format!("{KEYS_PREFIX}{name}"))
            .map_err(barrier_to_host)
    }
}

impl keys::HostKey for CallState {
    fn name(&mut self, handle: Resource<Key>) -> String {
        self.key(&handle)
            .map(|k| k.name.clone())
            .unwrap_or_default()
    }

    fn kind(&mut self, handle: Resource<Key>) -> KeyKind {
        self.key(&handle)
            .map(|k| k.kind)
            .unwrap_or(KeyKind::EcdsaP256)
    }

    fn public_key_spki(&mut self, handle: Resource<Key>) -> Vec<u8> {
        self.key(&handle)
            .ok()
            .and_then(|k| k.spki().ok().map(<[u8]>::to_vec))
            .unwrap_or_default()
    }

    fn sign(
        &mut self,
        handle: Resource<Key>,
        scheme: SignatureScheme,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, HostError> {
        if message.len() > MAX_SIGNED_MESSAGE {
            return Err(HostError::Invalid("message too large to sign".to_string()));
        }
        let key = self.key(&handle)?;
        if !scheme_fits(key.kind, scheme) {
            return Err(HostError::Invalid(format!(
                "scheme {scheme:?} does not fit a {} key",
                kind_name(key.kind)
            )));
        }
        sign_with(&key.key, scheme, &message)
    }

    fn export_pkcs8(&mut self, handle: Resource<Key>) -> Result<Vec<u8>, HostError> {
        let key = self.key(&handle)?;
        if !key.exportable {
            tracing::warn!(key = %key.name, "refused export of a non-exportable key");
            return Err(HostError::Denied(format!(
                "key {:?} was created non-exportable",
                key.name
            )));
        }
        let spki = key.spki().map_err(encoding)?;
        Ok(der::pkcs8_with_spki(&key.key, spki)
            .map_err(encoding)?
            .to_vec())
    }

    fn drop(&mut self, handle: Resource<Key>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_signs_and_verifies_with_its_scheme() -> Result<(), HostError> {
        let cases = [
            (KeyKind::EcdsaP256, SignatureScheme::EcdsaP256Sha256),
            (KeyKind::EcdsaP384, SignatureScheme::EcdsaP384Sha384),
            (KeyKind::EcdsaP521, SignatureScheme::EcdsaP521Sha512),
            (KeyKind::Ed25519, SignatureScheme::Ed25519),
            (KeyKind::Rsa2048, SignatureScheme::RsaPkcs1Sha256),
            (KeyKind::Rsa2048, SignatureScheme::RsaPssSha256),
        ];
        for (kind, scheme) in cases {
            let key = generate_key(kind)?;
            assert_eq!(kind_of(&key), Some(kind));
            let signature = sign_with(&key, scheme, b"tbs")?;
            let spki = key.public_key_to_der().map_err(crypto)?;
            assert!(verify_with(&spki, scheme, b"tbs", &signature)?, "{kind:?}");
            assert!(
                !verify_with(&spki, scheme, b"other", &signature)?,
                "{kind:?}"
            );
        }
        assert!(!scheme_fits(
            KeyKind::Ed25519,
            SignatureScheme::RsaPkcs1Sha256
        ));
        Ok(())
    }

    #[test]
    fn aws_lc_rsa_keys_are_valid_openssl_keys_of_the_asked_size() -> Result<(), HostError> {
        for bits in [2048, 3072, 4096] {
            let key = generate_rsa(bits)?;
            let rsa = key.rsa().map_err(crypto)?;
            assert_eq!(rsa.n().num_bits(), i32::try_from(bits).unwrap_or(0));
            assert_eq!(rsa.e().to_dec_str().map_err(crypto)?.to_string(), "65537");
            assert!(
                rsa.check_key().map_err(crypto)?,
                "OpenSSL's consistency check"
            );
            let other = generate_rsa(bits)?;
            assert_ne!(
                other.rsa().map_err(crypto)?.n(),
                rsa.n(),
                "fresh keys differ"
            );
        }
        assert!(matches!(generate_rsa(1024), Err(HostError::Invalid(_))));
        Ok(())
    }

    #[test]
    fn verify_takes_any_curve_for_an_ecdsa_hash_and_refuses_other_families() -> Result<(), HostError>
    {
        // `openssl req` signs a P-384 key's CSR with ecdsa-with-SHA256 by default.
        let p384 = generate_key(KeyKind::EcdsaP384)?;
        let signature = sign_with(&p384, SignatureScheme::EcdsaP256Sha256, b"csr")?;
        let spki = p384.public_key_to_der().map_err(crypto)?;
        assert!(verify_with(
            &spki,
            SignatureScheme::EcdsaP256Sha256,
            b"csr",
            &signature
        )?);
        let rsa = generate_key(KeyKind::Rsa2048)?;
        let rsa_spki = rsa.public_key_to_der().map_err(crypto)?;
        for (spki, scheme) in [
            (rsa_spki.as_slice(), SignatureScheme::EcdsaP256Sha256),
            (spki.as_slice(), SignatureScheme::RsaPkcs1Sha256),
            (spki.as_slice(), SignatureScheme::Ed25519),
            (b"not der".as_slice(), SignatureScheme::EcdsaP256Sha256),
        ] {
            assert!(matches!(
                verify_with(spki, scheme, b"csr", &signature),
                Err(HostError::Invalid(_))
            ));
        }
        Ok(())
    }

    #[test]
    fn sealing_forgets_parsed_keys() -> Result<(), HostError> {
        let der = generate_key(KeyKind::EcdsaP256)?
            .private_key_to_pkcs8()
            .map_err(crypto)?;
        let digest: [u8; 32] = Sha256::digest(&der).into();
        parsed_keys().decode(&der)?;
        let cached = |d: &[u8; 32]| parsed_keys().0.lock().is_ok_and(|c| c.contains_key(d));
        assert!(cached(&digest));
        forget_parsed_keys();
        assert!(!cached(&digest));
        Ok(())
    }

    #[test]
    fn parsed_keys_return_the_key_for_these_bytes_and_stay_bounded() -> Result<(), HostError> {
        let cache = ParsedKeys(Mutex::new(HashMap::new()));
        let first = generate_key(KeyKind::EcdsaP256)?;
        let second = generate_key(KeyKind::EcdsaP256)?;
        let der_first = first.private_key_to_pkcs8().map_err(crypto)?;
        let der_second = second.private_key_to_pkcs8().map_err(crypto)?;
        for _ in 0..2 {
            assert!(cache.decode(&der_first)?.public_eq(&first));
            assert!(cache.decode(&der_second)?.public_eq(&second));
        }
        assert!(cache.decode(b"not a key").is_err());
        assert_eq!(cache.0.lock().map(|c| c.len()).unwrap_or(0), 2);
        for _ in 0..PARSED_KEYS_MAX {
            let der = generate_key(KeyKind::Ed25519)?
                .private_key_to_pkcs8()
                .map_err(crypto)?;
            cache.decode(&der)?;
        }
        assert!(cache.0.lock().map(|c| c.len()).unwrap_or(usize::MAX) <= PARSED_KEYS_MAX);
        Ok(())
    }
}
