//! DER encodings of keys (SubjectPublicKeyInfo, PKCS#8) built from OpenSSL's type-specific
//! encoders.
//!
//! Why this exists: OpenSSL 3's generic `i2d_PUBKEY` / `i2d_PKCS8PrivateKey` look up an
//! encoder through the provider registry on every call, under global locks. Profiling
//! `pki/issue` at 32 connections put a fifth of all server CPU there. The key-specific
//! encoders (`i2o_ECPublicKey`, `i2d_RSAPublicKey`, raw Ed25519 bytes, ...) skip that
//! machinery; this module wraps their output in the standard outer structures. The unit
//! tests check every encoding byte for byte against OpenSSL's own.

use openssl::bn::BigNumContext;
use openssl::ec::PointConversionForm;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef, Private};
use zeroize::Zeroizing;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
/// Explicit context tags [0] and [1] (constructed).
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_1: u8 = 0xa1;

/// AlgorithmIdentifier for id-ecPublicKey (1.2.840.10045.2.1) without its parameters.
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1 (1.3.132.0.34).
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// secp521r1 (1.3.132.0.35).
const P521_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// AlgorithmIdentifier { id-Ed25519 (1.3.101.112) }.
const ED25519_ALGORITHM: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// Why a key could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum DerError {
    /// OpenSSL refused.
    #[error(transparent)]
    OpenSsl(#[from] ErrorStack),
    /// A key type or curve Coffer does not handle.
    #[error("unsupported key type")]
    Unsupported,
}

/// Appends a DER tag-length-value.
fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

fn ec_algorithm(curve: Option<Nid>) -> Result<Vec<u8>, DerError> {
    let curve_oid = match curve {
        Some(Nid::X9_62_PRIME256V1) => P256_OID,
        Some(Nid::SECP384R1) => P384_OID,
        Some(Nid::SECP521R1) => P521_OID,
        _ => return Err(DerError::Unsupported),
    };
    let mut algorithm = Vec::with_capacity(24);
    tlv(
        &mut algorithm,
        SEQUENCE,
        &[EC_PUBLIC_KEY_OID, curve_oid].concat(),
    );
    Ok(algorithm)
}

/// SubjectPublicKeyInfo of a key, DER.
pub fn spki<T: HasPublic>(key: &PKeyRef<T>) -> Result<Vec<u8>, DerError> {
    let (algorithm, public) = match key.id() {
        Id::EC => {
            let ec = key.ec_key()?;
            let mut ctx = BigNumContext::new()?;
            let point = ec.public_key().to_bytes(
                ec.group(),
                PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )?;
            (ec_algorithm(ec.group().curve_name())?, point)
        }
        Id::RSA => (
            RSA_ALGORITHM.to_vec(),
            key.rsa()?.public_key_to_der_pkcs1()?,
        ),
        Id::ED25519 => (ED25519_ALGORITHM.to_vec(), key.raw_public_key()?),
        _ => return Err(DerError::Unsupported),
    };
    let mut bits = Vec::with_capacity(public.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&public);
    let mut body = algorithm;
    tlv(&mut body, BIT_STRING, &bits);
    let mut out = Vec::with_capacity(body.len() + 4);
    tlv(&mut out, SEQUENCE, &body);
    Ok(out)
}

/// PKCS#8 PrivateKeyInfo of a key, DER; every intermediate copy is zeroized.
pub fn pkcs8(key: &PKeyRef<Private>) -> Result<Zeroizing<Vec<u8>>, DerError> {
    pkcs8_with_spki(key, &spki(key)?)
}

/// [`pkcs8`] for a key whose [`spki`] the caller already has: an EC key's public point is
/// taken from it instead of being converted to affine coordinates again (a field inversion
/// inside OpenSSL on every encoding: ~10 µs, twice per `pki/issue` before).
pub fn pkcs8_with_spki(
    key: &PKeyRef<Private>,
    spki: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DerError> {
    let (algorithm, private) = match key.id() {
        Id::EC => {
            let ec = key.ec_key()?;
            let curve = ec.group().curve_name();
            (ec_algorithm(curve)?, ec_private_key(&ec, curve, spki)?)
        }
        Id::RSA => (
            RSA_ALGORITHM.to_vec(),
            Zeroizing::new(key.rsa()?.private_key_to_der()?),
        ),
        Id::ED25519 => {
            let raw = Zeroizing::new(key.raw_private_key()?);
            let mut inner = Zeroizing::new(Vec::with_capacity(34));
            tlv(&mut inner, OCTET_STRING, &raw);
            (ED25519_ALGORITHM.to_vec(), inner)
        }
        _ => return Err(DerError::Unsupported),
    };
    let mut body = Zeroizing::new(Vec::with_capacity(private.len() + algorithm.len() + 8));
    tlv(&mut body, INTEGER, &[0]);
    body.extend_from_slice(&algorithm);
    tlv(&mut body, OCTET_STRING, &private);
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    tlv(&mut out, SEQUENCE, &body);
    Ok(out)
}

/// RFC 5915 ECPrivateKey { version 1, privateKey, [0] namedCurve, [1] publicKey }, as
/// OpenSSL's `i2d_ECPrivateKey` writes it, with the public point from `spki`.
fn ec_private_key(
    ec: &openssl::ec::EcKeyRef<Private>,
    curve: Option<Nid>,
    spki: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DerError> {
    let (curve_oid, scalar_len, point_len) = match curve {
        Some(Nid::X9_62_PRIME256V1) => (P256_OID, 32, 65),
        Some(Nid::SECP384R1) => (P384_OID, 48, 97),
        Some(Nid::SECP521R1) => (P521_OID, 66, 133),
        _ => return Err(DerError::Unsupported),
    };
    // The SPKI ends with its BIT STRING's content: the uncompressed point.
    let point = spki
        .len()
        .checked_sub(point_len)
        .and_then(|start| spki.get(start..))
        .filter(|point| point.first() == Some(&0x04))
        .ok_or(DerError::Unsupported)?;
    let scalar = Zeroizing::new(ec.private_key().to_vec_padded(scalar_len)?);
    let mut bits = Vec::with_capacity(point_len + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(point);
    let mut public = Vec::with_capacity(point_len + 4);
    tlv(&mut public, BIT_STRING, &bits);
    let mut body = Zeroizing::new(Vec::with_capacity(scalar.len() + point_len + 32));
    tlv(&mut body, INTEGER, &[1]);
    tlv(&mut body, OCTET_STRING, &scalar);
    tlv(&mut body, CONTEXT_0, curve_oid);
    tlv(&mut body, CONTEXT_1, &public);
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    tlv(&mut out, SEQUENCE, &body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::keys::{generate_key, sign_with, verify_with};
    use crate::runtime::bindings::coffer::host::keys::{KeyKind, SignatureScheme};
    use openssl::pkey::PKey;

    const KINDS: [KeyKind; 5] = [
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::EcdsaP521,
        KeyKind::Ed25519,
        KeyKind::Rsa2048,
    ];

    #[test]
    fn spki_matches_openssl_byte_for_byte() -> Result<(), Box<dyn std::error::Error>> {
        for kind in KINDS {
            let key = generate_key(kind).map_err(|e| format!("{e:?}"))?;
            assert_eq!(spki(&key)?, key.public_key_to_der()?, "{kind:?}");
        }
        Ok(())
    }

    #[test]
    fn pkcs8_reads_back_as_the_same_key() -> Result<(), Box<dyn std::error::Error>> {
        for kind in KINDS {
            let key = generate_key(kind).map_err(|e| format!("{e:?}"))?;
            let encoded = pkcs8(&key)?;
            let decoded = PKey::private_key_from_pkcs8(&encoded)?;
            assert!(decoded.public_eq(&key), "{kind:?}");
            // A signature by the decoded key verifies under the original public key.
            let scheme = match kind {
                KeyKind::EcdsaP384 => SignatureScheme::EcdsaP384Sha384,
                KeyKind::EcdsaP521 => SignatureScheme::EcdsaP521Sha512,
                KeyKind::Ed25519 => SignatureScheme::Ed25519,
                KeyKind::Rsa2048 => SignatureScheme::RsaPkcs1Sha256,
                _ => SignatureScheme::EcdsaP256Sha256,
            };
            let signature = sign_with(&decoded, scheme, b"m").map_err(|e| format!("{e:?}"))?;
            assert!(
                verify_with(&spki(&key)?, scheme, b"m", &signature)
                    .map_err(|e| format!("{e:?}"))?,
                "{kind:?}"
            );
            if kind == KeyKind::Rsa2048 || kind == KeyKind::Ed25519 {
                // No optional fields to differ in: identical to OpenSSL's encoding.
                assert_eq!(encoded.as_slice(), key.private_key_to_pkcs8()?, "{kind:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn ec_private_keys_match_openssl_byte_for_byte() -> Result<(), Box<dyn std::error::Error>> {
        for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::EcdsaP521] {
            // Many keys, so scalars with leading zero bytes (padded) are among them.
            for _ in 0..64 {
                let key = generate_key(kind).map_err(|e| format!("{e:?}"))?;
                let ec = key.ec_key()?;
                let ours = ec_private_key(&ec, ec.group().curve_name(), &spki(&key)?)?;
                assert_eq!(ours.as_slice(), ec.private_key_to_der()?, "{kind:?}");
            }
        }
        let key = generate_key(KeyKind::EcdsaP256).map_err(|e| format!("{e:?}"))?;
        let ec = key.ec_key()?;
        assert!(
            ec_private_key(&ec, ec.group().curve_name(), &[0x30, 0x03]).is_err(),
            "a truncated SPKI is refused, not read out of bounds"
        );
        Ok(())
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let mut out = Vec::new();
        tlv(&mut out, OCTET_STRING, &[7u8; 300]);
        assert_eq!(out.get(..4), Some([0x04, 0x82, 0x01, 0x2c].as_slice()));
        assert_eq!(out.len(), 304);
        let mut short = Vec::new();
        tlv(&mut short, OCTET_STRING, &[7u8; 127]);
        assert_eq!(short.get(..2), Some([0x04, 0x7f].as_slice()));
    }
}
