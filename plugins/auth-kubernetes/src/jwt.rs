//! Service-account JWTs: parsed once at the edge into [`Token`], their signatures checked
//! with the host's `keys.verify` against the operator's `pem_keys`, their claims checked as
//! Vault's `cap/jwt` validator does (exp, nbf, iss, aud).
//!
//! What it must never do: trust a signature on its own (the guest has no crypto of its
//! own here; the host verifies), or put the token into an error message.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_sdk::EngineError;
use coffer_sdk::keys::{self, SignatureScheme};
use serde_json::Value;

/// Longest JWT accepted; Kubernetes tokens are about 1 KiB.
pub const MAX_JWT_BYTES: usize = 16 << 10;
/// Clock skew allowed on exp, nbf and iat (`cap/jwt`'s default leeway).
const LEEWAY_SECONDS: i64 = 150;

/// Signing algorithms Kubernetes may use, as Vault allows them; the ones the host can
/// check are mapped in [`scheme`].
const ALLOWED_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
];

/// A parsed, not yet trusted, JWT.
pub struct Token {
    algorithm: String,
    /// `header.payload`, the signed bytes.
    signed: String,
    signature: Vec<u8>,
    /// The claims object.
    pub claims: serde_json::Map<String, Value>,
}

fn malformed(what: &str) -> EngineError {
    EngineError::InvalidRequest(format!("malformed JWT: {what}"))
}

fn segment(part: &str, what: &str) -> Result<Vec<u8>, EngineError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| malformed(&format!("the {what} is not base64url")))
}

impl Token {
    /// Parses the compact serialization `header.payload.signature`.
    pub fn parse(jwt: &str) -> Result<Self, EngineError> {
        if jwt.len() > MAX_JWT_BYTES {
            return Err(malformed(&format!("longer than {MAX_JWT_BYTES} bytes")));
        }
        let mut parts = jwt.trim().split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        let header: Value = serde_json::from_slice(&segment(header, "header")?)
            .map_err(|_| malformed("the header is not JSON"))?;
        let algorithm = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("the header has no alg"))?
            .to_string();
        let claims = match serde_json::from_slice(&segment(payload, "payload")?) {
            Ok(Value::Object(claims)) => claims,
            _ => return Err(malformed("the payload is not a JSON object")),
        };
        let signed_len = jwt.trim().len().saturating_sub(signature.len() + 1);
        Ok(Self {
            algorithm,
            signed: jwt.trim().get(..signed_len).unwrap_or_default().to_string(),
            signature: segment(signature, "signature")?,
            claims,
        })
    }

    /// Refuses algorithms Kubernetes never signs with (`none`, HMAC), as Vault does.
    pub fn check_algorithm(&self) -> Result<(), EngineError> {
        if ALLOWED_ALGORITHMS.contains(&self.algorithm.as_str()) {
            Ok(())
        } else {
            Err(EngineError::PermissionDenied(format!(
                "unsupported signing algorithm {:?}",
                self.algorithm
            )))
        }
    }

    /// Whether one of `keys` (DER SubjectPublicKeyInfo) verifies the signature, checked
    /// by the host.
    pub fn verified_by(&self, keys: &[Vec<u8>]) -> Result<bool, EngineError> {
        let Some(scheme) = scheme(&self.algorithm) else {
            return Err(EngineError::PermissionDenied(format!(
                "signing algorithm {} cannot be verified with pem_keys here (use RS256, PS256, ES256, ES384 or ES512)",
                self.algorithm
            )));
        };
        let signature = match scheme {
            SignatureScheme::EcdsaP256Sha256
            | SignatureScheme::EcdsaP384Sha384
            | SignatureScheme::EcdsaP521Sha512 => match ecdsa_der(&self.signature) {
                Some(der) => der,
                None => return Ok(false),
            },
            _ => self.signature.clone(),
        };
        for spki in keys {
            // A key of another type or curve is an error from the host: not this key.
            if let Ok(true) = keys::verify(spki, scheme, self.signed.as_bytes(), &signature) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks exp, nbf and iat against `now` (each optional, as Vault allows), the issuer
    /// when `issuer` is given, and that `audience` is among the token's audiences when
    /// given. The messages are `cap/jwt`'s.
    pub fn check_claims(
        &self,
        now: i64,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<(), EngineError> {
        let denied = |m: &str| Err(EngineError::PermissionDenied(m.to_string()));
        let number = |name: &str| self.claims.get(name).and_then(Value::as_f64);
        if let Some(exp) = number("exp")
            && (exp as i64).saturating_add(LEEWAY_SECONDS) < now
        {
            return denied("invalid expiration time (exp) claim: token is expired");
        }
        if let Some(nbf) = number("nbf")
            && (nbf as i64).saturating_sub(LEEWAY_SECONDS) > now
        {
            return denied("invalid not before (nbf) claim: token not yet valid");
        }
        if let Some(iat) = number("iat")
            && (iat as i64).saturating_sub(LEEWAY_SECONDS) > now
        {
            return denied("invalid issued at (iat) claim: token issued in the future");
        }
        if let Some(issuer) = issuer
            && self.claims.get("iss").and_then(Value::as_str) != Some(issuer)
        {
            return denied("invalid issuer (iss) claim");
        }
        if let Some(audience) = audience
            && !self.audiences().iter().any(|a| a == audience)
        {
            return denied(
                "invalid audience (aud) claim: audience claim does not match any expected audience",
            );
        }
        Ok(())
    }

    /// The `aud` claim, a string or a list of strings.
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The host's signature scheme for a JWT algorithm, where it has one.
fn scheme(algorithm: &str) -> Option<SignatureScheme> {
    Some(match algorithm {
        "RS256" => SignatureScheme::RsaPkcs1Sha256,
        "PS256" => SignatureScheme::RsaPssSha256,
        "ES256" => SignatureScheme::EcdsaP256Sha256,
        "ES384" => SignatureScheme::EcdsaP384Sha384,
        "ES512" => SignatureScheme::EcdsaP521Sha512,
        _ => return None,
    })
}

/// A JWS ECDSA signature (`r || s`, each the curve's size, RFC 7518 section 3.4) as the
/// DER `ECDSA-Sig-Value` the host's verifier takes; `None` if it is not two equal halves.
pub fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = der_integer(r);
    body.extend(der_integer(s));
    let mut out = vec![0x30];
    out.extend(der_length(body.len()));
    out.extend(body);
    Some(out)
}

/// An unsigned big-endian number as a DER INTEGER.
fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let mut value: Vec<u8> = bytes.get(start..).unwrap_or_default().to_vec();
    if value.first().is_none_or(|b| b & 0x80 != 0) {
        value.insert(0, 0);
    }
    let mut out = vec![0x02];
    out.extend(der_length(value.len()));
    out.extend(value);
    out
}

fn der_length(length: usize) -> Vec<u8> {
    match u8::try_from(length) {
        Ok(short) if short < 0x80 => vec![short],
        Ok(long) => vec![0x81, long],
        Err(_) => vec![0x82, (length >> 8) as u8, length as u8],
    }
}

/// The DER SubjectPublicKeyInfo of each PEM public key or certificate in `pem_keys`, each
/// required to be RSA or ECDSA (Vault's rule and message).
pub fn public_keys(pem_keys: &[String]) -> Result<Vec<Vec<u8>>, EngineError> {
    const RSA: &str = "1.2.840.113549.1.1.1";
    const EC: &str = "1.2.840.10045.2.1";
    let refused = || {
        EngineError::InvalidRequest(
            "data does not contain any valid RSA or ECDSA public keys".to_string(),
        )
    };
    let mut keys = Vec::with_capacity(pem_keys.len());
    for text in pem_keys {
        let block = pem::parse(text.trim()).map_err(|_| refused())?;
        let spki = match block.tag() {
            "PUBLIC KEY" => {
                let (_, info) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(block.contents())
                    .map_err(|_| refused())?;
                (info.algorithm.algorithm.to_id_string(), info.raw.to_vec())
            }
            "CERTIFICATE" => {
                let (_, certificate) =
                    x509_parser::parse_x509_certificate(block.contents()).map_err(|_| refused())?;
                let info = certificate.public_key();
                (info.algorithm.algorithm.to_id_string(), info.raw.to_vec())
            }
            _ => return Err(refused()),
        };
        match spki {
            (oid, der) if oid == RSA || oid == EC => keys.push(der),
            _ => return Err(refused()),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_minimal_der() {
        // r = 1; s = 0x80 followed by zeros: its high bit needs a leading zero byte.
        let mut raw = vec![0u8; 31];
        raw.push(1);
        raw.push(0x80);
        raw.extend([0u8; 31]);
        let der = ecdsa_der(&raw).unwrap_or_default();
        let mut expected = vec![0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80];
        expected.extend([0u8; 31]);
        assert_eq!(der, expected);
        assert!(ecdsa_der(&[1, 2, 3]).is_none());
    }

    #[test]
    fn malformed_tokens_are_invalid_requests() {
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.sig", "e30.bm90IGpzb24.c2ln"] {
            assert!(
                matches!(Token::parse(bad), Err(EngineError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }
}
