//! The PKI secrets engine: an internal certificate authority, as a WASM component.
#![recursion_limit = "256"]
//!
//! CA private keys live in the host (`coffer:host/keys`); this engine builds certificates,
//! CSRs and CRLs with rcgen and asks the host to sign them. Keys made by
//! `.../generate/internal` are non-exportable: no path here can return them.
//!
//! Revocation costs O(1): one commit records the serial under `revoked/<issuer>/` and a
//! marker saying that issuer's CRL is out of date. The CRL is rebuilt when fetched or
//! rotated, and stored in chunks of at most [`CRL_CHUNK`] bytes, so no storage entry grows
//! with the number of revocations (layout and races: [`CrlPointer`]).

pub mod issue;
pub mod policy;
pub mod store;
pub mod x509;

use base64::Engine as _;
use coffer_sdk::keys;
use coffer_sdk::serde_json::{self, Value, json};
use coffer_sdk::{
    BackendSpec, Engine, EngineError, Field, FieldExt, FieldValue, Fields, LeaseRef, Operation,
    PathBuilder, Request, Response, SpecBuilder, path, respond, spec, storage,
};
use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};

use crate::issue::{
    CLEAR_ISSUE_RESPONSE, Mode, ca_params, certificate_data, issue, issue_fields, role_fields,
    role_json, sign_with_issuer, subject, verified_csr, write_role,
};
use crate::store::{
    CertEntry, HostSigner, IssuerEntry, KeyEntry, Urls, default_issuer_id, host, host_key_name,
    invalid, issuer_cert, key_kind, load, new_id, new_serial, resolve_issuer, resolve_key,
    set_default_issuer, urls,
};
use crate::x509::{
    PublicKey, parse_cert, pem, pem_blocks, private_key_pem, serial_colon, serial_key,
};

/// Secret type of certificates issued with `generate_lease`.
pub const CERT_SECRET: &str = "cert";
/// Largest storage entry a CRL chunk may take.
pub const CRL_CHUNK: usize = 512 * 1024;
/// Changes per storage commit (the host's `write-all` bound).
const CRL_BATCH: usize = 256;
/// Lifetime of a generated CRL (Vault's default 72h).
const CRL_LIFETIME: i64 = 72 * 3600;
/// Default tidy safety buffer (72h).
const TIDY_SAFETY_BUFFER: u64 = 72 * 3600;
/// Names of roles, issuers and keys.
const NAME: &str = "[A-Za-z0-9_.-]+";

/// Go's `Duration.String()` for whole seconds.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

pub use coffer_sdk::glob;

/// Unix seconds now, or the request fails (see `coffer_sdk::time`).
fn now() -> Result<i64, EngineError> {
    Ok(i64::try_from(coffer_sdk::time::unix_now()?).unwrap_or(i64::MAX))
}

fn subject_fields() -> Vec<coffer_sdk::FieldSchema> {
    [
        "ou",
        "organization",
        "country",
        "locality",
        "province",
        "street_address",
        "postal_code",
    ]
    .into_iter()
    .map(|n| Field::comma_strings(n, "Subject field."))
    .collect()
}

fn ca_fields() -> Vec<coffer_sdk::FieldSchema> {
    let mut fields = vec![
        Field::string("common_name", "CA common name."),
        Field::comma_strings("alt_names", "DNS SANs."),
        Field::comma_strings("ip_sans", "IP SANs."),
        Field::duration("ttl", "Validity."),
        Field::lowercase("key_type", "rsa, ec or ed25519.")
            .default(FieldValue::String("rsa".to_string())),
        Field::int("key_bits", "Key size (0: default)."),
        Field::int("max_path_length", "Path length constraint (-1: none).")
            .default(FieldValue::Int(-1)),
        Field::bool("exclude_cn_from_sans", "Do not copy the CN into SANs."),
        Field::string("issuer_name", "Name for the resulting issuer."),
        Field::string("key_name", "Name for the key."),
        Field::lowercase("format", "pem, der or pem_bundle.")
            .default(FieldValue::String("pem".to_string())),
        Field::lowercase("private_key_format", "der or pkcs8.")
            .default(FieldValue::String("der".to_string())),
        Field::duration("not_before_duration", "NotBefore backdating.")
            .default(FieldValue::Duration(30)),
        Field::bool(
            "use_csr_values",
            "Take subject and extensions from the CSR.",
        ),
        Field::string("csr", "PEM CSR."),
        Field::comma_strings("permitted_dns_domains", "Name constraints (not supported)."),
    ];
    fields.extend(subject_fields());
    fields
}

fn named(pattern: &str) -> String {
    pattern.replace("NAME", NAME)
}

fn with_ref(pattern: &str) -> PathBuilder {
    path(&named(pattern)).field(Field::string("issuer_ref", "Issuer id or name."))
}

struct Pki;

/// The path table with its handlers: what `describe` reports is what `handle` routes.
fn routes() -> SpecBuilder {
    spec("pki")
        .help("An internal certificate authority.")
        .secret(CERT_SECRET, "A certificate issued with generate_lease.")
        // Vault's public PKI paths, exactly; the host serves them to reads only.
        .unauthenticated("ca")
        .unauthenticated("ca/pem")
        .unauthenticated("ca_chain")
        .unauthenticated("crl")
        .unauthenticated("crl/pem")
        .unauthenticated("cert/+")
        .unauthenticated("cert/ca")
        .unauthenticated("cert/ca_chain")
        .unauthenticated("cert/crl")
        .unauthenticated("issuers")
        .unauthenticated("issuer/+/pem")
        .unauthenticated("issuer/+/der")
        .unauthenticated("issuer/+/json")
        .unauthenticated("issuer/+/crl*")
        .path(
            path("ca")
                .synopsis("The default issuer's certificate, DER.")
                .on(Operation::Read, read_ca_der),
        )
        .path(
            path("ca/pem")
                .synopsis("The default issuer's certificate, PEM.")
                .on(Operation::Read, read_ca_pem),
        )
        .path(
            path("ca_chain")
                .synopsis("The default issuer's chain, PEM.")
                .on(Operation::Read, read_ca_chain),
        )
        .path(
            path("crl")
                .synopsis("The default issuer's CRL, DER.")
                .on(Operation::Read, read_crl_der),
        )
        .path(
            path("crl/pem")
                .synopsis("The default issuer's CRL, PEM.")
                .on(Operation::Read, read_crl_pem),
        )
        .path(
            path("crl/rotate")
                .synopsis("Rebuild every issuer's CRL.")
                .on(Operation::Read, rotate_crls),
        )
        .path(
            path("cert/(?P<serial>[0-9A-Fa-f:-]+|ca|ca_chain|crl)")
                .field(Field::string("serial", "Serial number."))
                .synopsis("A certificate by serial number (or the CA, chain or CRL).")
                .on(Operation::Read, read_cert_at),
        )
        .path(
            path("certs/?")
                .synopsis("List issued certificates' serial numbers.")
                .on(Operation::List, list_certs),
        )
        .path(
            path("issuers/?")
                .synopsis("List issuers.")
                .on(Operation::List, list_issuers_at),
        )
        .path(
            with_ref("issuer/(?P<issuer_ref>NAME)/(?P<fetch>pem|der|json)")
                .field(Field::string("fetch", "Form."))
                .synopsis("An issuer's certificate as PEM, DER or JSON.")
                .on(Operation::Read, fetch_issuer_at),
        )
        .path(
            with_ref("issuer/(?P<issuer_ref>NAME)/issue/(?P<role>NAME)")
                .field(Field::string("role", "Role.").audit_clear())
                .fields(issue_fields())
                .audit_clear_response(CLEAR_ISSUE_RESPONSE)
                .synopsis("Issue a certificate and key from this issuer under a role.")
                .on(Operation::Update, issue_from_issuer),
        )
        .path(
            with_ref("issuer/(?P<issuer_ref>NAME)/sign/(?P<role>NAME)")
                .field(Field::string("role", "Role.").audit_clear())
                .fields(issue_fields())
                .audit_clear_response(CLEAR_ISSUE_RESPONSE)
                .synopsis("Sign a CSR with this issuer under a role.")
                .on(Operation::Update, sign_from_issuer),
        )
        .path(
            with_ref("issuer/(?P<issuer_ref>NAME)/sign-intermediate")
                .fields(ca_fields())
                .synopsis("Sign an intermediate CA's CSR with this issuer.")
                .on(Operation::Update, sign_intermediate_at),
        )
        .path(
            with_ref("issuer/(?P<issuer_ref>NAME)")
                .field(Field::string("issuer_name", "New name."))
                .field(Field::lowercase(
                    "leaf_not_after_behavior",
                    "err, truncate or permit.",
                ))
                .synopsis("Read, rename or delete an issuer.")
                .on(Operation::Read, read_issuer)
                .on(Operation::Update, update_issuer_at)
                .on(Operation::Delete, delete_issuer_at),
        )
        .path(
            path("config/issuers")
                .field(Field::string("default", "Default issuer."))
                .synopsis("Read or set the default issuer.")
                .on(Operation::Read, read_default_issuer)
                .on(Operation::Update, write_default_issuer),
        )
        .path(
            path("keys/?")
                .synopsis("List keys.")
                .on(Operation::List, list_keys),
        )
        .path(
            path(&named("key/(?P<key_ref>NAME)"))
                .field(Field::string("key_ref", "Key id or name."))
                .field(Field::string("key_name", "New name."))
                .synopsis("Read or rename a key.")
                .on(Operation::Read, read_key)
                .on(Operation::Update, rename_key_at),
        )
        .path(
            path("config/urls")
                .field(Field::comma_strings("issuing_certificates", "AIA URLs."))
                .field(Field::comma_strings("crl_distribution_points", "CRL URLs."))
                .field(Field::comma_strings("ocsp_servers", "OCSP URLs."))
                .synopsis("URLs written into issued certificates.")
                .on(Operation::Read, read_urls)
                .on(Operation::Update, write_urls_at),
        )
        .path(
            path("root/generate/(?P<exported>internal|exported|existing|kms)")
                .field(Field::string("exported", "Key handling."))
                .fields(ca_fields())
                .synopsis("Generate a root CA.")
                .on(Operation::Update, generate_root),
        )
        .path(
            path("intermediate/generate/(?P<exported>internal|exported|existing|kms)")
                .field(Field::string("exported", "Key handling."))
                .fields(ca_fields())
                .synopsis("Generate an intermediate CA's key and CSR.")
                .on(Operation::Update, generate_intermediate),
        )
        .path(
            with_ref("root/sign-intermediate")
                .fields(ca_fields())
                .synopsis("Sign an intermediate CA's CSR.")
                .on(Operation::Update, sign_intermediate_at),
        )
        .path(
            with_ref("root/sign-self-issued")
                .field(Field::string(
                    "certificate",
                    "PEM self-issued CA certificate.",
                ))
                .field(Field::bool(
                    "require_matching_certificate_algorithms",
                    "Require the issuer's key type.",
                ))
                .synopsis("Cross-sign a self-issued CA certificate.")
                .on(Operation::Update, sign_self_issued_at),
        )
        .path(
            path("intermediate/set-signed")
                .field(Field::string("certificate", "PEM certificate (and chain)."))
                .synopsis("Import the signed intermediate certificate.")
                .on(Operation::Update, set_signed_at),
        )
        .path(
            path("roles/?")
                .synopsis("List roles.")
                .on(Operation::List, list_roles),
        )
        .path(
            path(&named("roles/(?P<name>NAME)"))
                .field(Field::string("name", "Role."))
                .fields(role_fields())
                .synopsis("Read, write or delete a role.")
                .on(Operation::Read, read_role)
                .on(Operation::Update, write_role_at)
                .on(Operation::Delete, delete_role),
        )
        .path(
            path(&named("issue/(?P<role>NAME)"))
                .field(Field::string("role", "Role.").audit_clear())
                .fields(issue_fields())
                .audit_clear_response(CLEAR_ISSUE_RESPONSE)
                .synopsis("Issue a certificate and key under a role.")
                .on(Operation::Update, issue_at),
        )
        .path(
            path(&named("sign/(?P<role>NAME)"))
                .field(Field::string("role", "Role.").audit_clear())
                .fields(issue_fields())
                .audit_clear_response(CLEAR_ISSUE_RESPONSE)
                .synopsis("Sign a CSR under a role.")
                .on(Operation::Update, sign_at),
        )
        .path(
            path(&named("sign-verbatim(/(?P<role>NAME))?"))
                .field(Field::string("role", "Role.").audit_clear())
                .fields(issue_fields())
                .audit_clear_response(CLEAR_ISSUE_RESPONSE)
                .synopsis("Sign a CSR as it is (sudo-free in Vault, but only with policy).")
                .on(Operation::Update, sign_verbatim_at),
        )
        .path(
            path("revoke")
                .field(Field::string("serial_number", "Serial.").audit_clear())
                .field(Field::string("certificate", "PEM certificate."))
                .synopsis("Revoke a certificate.")
                .on(Operation::Update, revoke_at),
        )
        .path(
            path("tidy")
                .field(
                    Field::bool("tidy_cert_store", "Delete expired certificates.")
                        .default(FieldValue::Bool(false)),
                )
                .field(
                    Field::bool("tidy_revoked_certs", "Drop expired revocations.")
                        .default(FieldValue::Bool(false)),
                )
                .field(
                    Field::duration("safety_buffer", "Age past expiry.")
                        .default(FieldValue::Duration(TIDY_SAFETY_BUFFER)),
                )
                .synopsis("Remove expired certificates and revocations.")
                .on(Operation::Update, tidy_at),
        )
}

/// A string field of the request, empty when absent.
fn text(req: &Request, name: &str) -> String {
    req.string(name).unwrap_or_default().to_string()
}

fn read_ca_der(_: &Request) -> Result<Response, EngineError> {
    raw_ca(false)
}

fn read_ca_pem(_: &Request) -> Result<Response, EngineError> {
    raw_ca(true)
}

fn read_ca_chain(_: &Request) -> Result<Response, EngineError> {
    let issuer = match default_issuer_id()? {
        Some(_) => resolve_issuer("default")?,
        None => return Ok(respond::raw("application/pkix-cert", Vec::new())),
    };
    Ok(respond::raw(
        "application/pkix-cert",
        issuer.chain.join("\n").into_bytes(),
    ))
}

fn read_crl_der(_: &Request) -> Result<Response, EngineError> {
    raw_crl(false)
}

fn read_crl_pem(_: &Request) -> Result<Response, EngineError> {
    raw_crl(true)
}

fn rotate_crls(_: &Request) -> Result<Response, EngineError> {
    for id in storage::list("issuer/")? {
        rebuild_crl(&id)?;
    }
    Ok(respond::data(json!({ "success": true })))
}

fn read_cert_at(req: &Request) -> Result<Response, EngineError> {
    read_cert(&text(req, "serial"))
}

fn list_certs(_: &Request) -> Result<Response, EngineError> {
    respond::list(storage::list("certs/")?)
}

fn list_issuers_at(_: &Request) -> Result<Response, EngineError> {
    list_issuers()
}

fn fetch_issuer_at(req: &Request) -> Result<Response, EngineError> {
    fetch_issuer(&text(req, "issuer_ref"), &text(req, "fetch"))
}

fn issue_from_issuer(req: &Request) -> Result<Response, EngineError> {
    issue(
        Mode::Issue,
        Some(&text(req, "role")),
        Some(&text(req, "issuer_ref")),
        req,
    )
}

fn sign_from_issuer(req: &Request) -> Result<Response, EngineError> {
    issue(
        Mode::Sign,
        Some(&text(req, "role")),
        Some(&text(req, "issuer_ref")),
        req,
    )
}

fn sign_intermediate_at(req: &Request) -> Result<Response, EngineError> {
    sign_intermediate(&text(req, "issuer_ref"), req)
}

fn read_issuer(req: &Request) -> Result<Response, EngineError> {
    Ok(respond::data(issuer_json(&resolve_issuer(&text(
        req,
        "issuer_ref",
    ))?)))
}

fn update_issuer_at(req: &Request) -> Result<Response, EngineError> {
    update_issuer(&text(req, "issuer_ref"), req)
}

fn delete_issuer_at(req: &Request) -> Result<Response, EngineError> {
    delete_issuer(&text(req, "issuer_ref"))
}

fn read_default_issuer(_: &Request) -> Result<Response, EngineError> {
    Ok(respond::data(
        json!({ "default": default_issuer_id()?.unwrap_or_default(), "default_follows_latest_issuer": false }),
    ))
}

fn write_default_issuer(req: &Request) -> Result<Response, EngineError> {
    let issuer = resolve_issuer(&text(req, "default"))?;
    set_default_issuer(&issuer.id)?;
    Ok(respond::data(
        json!({ "default": issuer.id, "default_follows_latest_issuer": false }),
    ))
}

fn list_keys(_: &Request) -> Result<Response, EngineError> {
    let ids = storage::list("key/")?;
    let mut info = serde_json::Map::new();
    for id in &ids {
        if let Some(key) = load::<KeyEntry>(&format!("key/{id}"))? {
            info.insert(id.clone(), json!({ "key_name": key.name }));
        }
    }
    if ids.is_empty() {
        return Err(EngineError::NotFound(String::new()));
    }
    Ok(respond::data(json!({ "keys": ids, "key_info": info })))
}

fn read_key(req: &Request) -> Result<Response, EngineError> {
    let key = resolve_key(&text(req, "key_ref"))?;
    Ok(respond::data(
        json!({ "key_id": key.id, "key_name": key.name, "key_type": key.key_type }),
    ))
}

fn rename_key_at(req: &Request) -> Result<Response, EngineError> {
    rename_key(&text(req, "key_ref"), &text(req, "key_name"))
}

fn read_urls(_: &Request) -> Result<Response, EngineError> {
    let urls = urls()?;
    Ok(respond::data(
        json!({ "issuing_certificates": urls.issuing_certificates, "crl_distribution_points": urls.crl_distribution_points, "ocsp_servers": urls.ocsp_servers, "enable_templating": false }),
    ))
}

fn write_urls_at(req: &Request) -> Result<Response, EngineError> {
    write_urls(req)
}

fn generate_root(req: &Request) -> Result<Response, EngineError> {
    generate_ca(true, &text(req, "exported"), req)
}

fn generate_intermediate(req: &Request) -> Result<Response, EngineError> {
    generate_ca(false, &text(req, "exported"), req)
}

fn sign_self_issued_at(req: &Request) -> Result<Response, EngineError> {
    sign_self_issued(
        &text(req, "issuer_ref"),
        &text(req, "certificate"),
        req.bool("require_matching_certificate_algorithms")
            .unwrap_or(false),
    )
}

fn set_signed_at(req: &Request) -> Result<Response, EngineError> {
    set_signed(&text(req, "certificate"))
}

fn list_roles(_: &Request) -> Result<Response, EngineError> {
    respond::list(storage::list("role/")?)
}

fn read_role(req: &Request) -> Result<Response, EngineError> {
    let name = text(req, "name");
    let role: issue::Role = load(&format!("role/{name}"))?
        .ok_or_else(|| EngineError::NotFound(format!("no role named {name:?}")))?;
    Ok(respond::data(role_json(&role)))
}

fn write_role_at(req: &Request) -> Result<Response, EngineError> {
    write_role(&text(req, "name"), req)
}

fn delete_role(req: &Request) -> Result<Response, EngineError> {
    storage::delete(&format!("role/{}", text(req, "name")))?;
    Ok(respond::empty())
}

fn issue_at(req: &Request) -> Result<Response, EngineError> {
    issue(Mode::Issue, Some(&text(req, "role")), None, req)
}

fn sign_at(req: &Request) -> Result<Response, EngineError> {
    issue(Mode::Sign, Some(&text(req, "role")), None, req)
}

fn sign_verbatim_at(req: &Request) -> Result<Response, EngineError> {
    let role = text(req, "role");
    issue(
        Mode::Verbatim,
        (!role.is_empty()).then_some(role.as_str()),
        None,
        req,
    )
}

fn revoke_at(req: &Request) -> Result<Response, EngineError> {
    revoke(&text(req, "serial_number"), &text(req, "certificate"))
}

fn tidy_at(req: &Request) -> Result<Response, EngineError> {
    tidy(req)
}

impl Engine for Pki {
    fn describe() -> BackendSpec {
        routes().build()
    }

    fn handle(req: Request) -> Result<Response, EngineError> {
        routes().dispatch(req)
    }

    fn revoke(lease: LeaseRef) -> Result<(), EngineError> {
        let data: Value = serde_json::from_str(&lease.internal_data)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let serial = data
            .get("serial_number")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match revoke(serial, "") {
            Ok(_) => Ok(()),
            Err(EngineError::InvalidRequest(message)) if message.contains("not found") => Ok(()),
            Err(error) => Err(error),
        }
    }
}

fn check_name(name: &str, what: &str) -> Result<(), EngineError> {
    let ok = name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "default";
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {name:?} must be up to 128 of [A-Za-z0-9._-] and not \"default\""
        )))
    }
}

fn issuer_name_free(name: &str) -> Result<(), EngineError> {
    if !name.is_empty() && storage::get(&format!("issuer-name/{name}"))?.is_some() {
        return Err(invalid(format!("issuer name {name:?} is already in use")));
    }
    Ok(())
}

fn request_subject(req: &Request, common_name: &str) -> rcgen::DistinguishedName {
    let list = |n: &str| req.strings(n).map(<[String]>::to_vec).unwrap_or_default();
    subject(
        common_name,
        &[
            (&rcgen::DnType::OrganizationalUnitName, &list("ou")),
            (&rcgen::DnType::OrganizationName, &list("organization")),
            (&rcgen::DnType::CountryName, &list("country")),
            (&rcgen::DnType::LocalityName, &list("locality")),
            (&rcgen::DnType::StateOrProvinceName, &list("province")),
        ],
    )
}

fn store_key(signer: &HostSigner, key_id: &str, name: &str) -> Result<KeyEntry, EngineError> {
    let entry = KeyEntry {
        id: key_id.to_string(),
        name: name.to_string(),
        key_type: signer.public.family.type_name().to_string(),
        bits: signer.public.family.bits(),
        spki: base64::engine::general_purpose::STANDARD.encode(&signer.public.spki),
    };
    let mut batch = storage::Batch::new();
    batch.put_json(&format!("key/{key_id}"), &entry)?;
    if !name.is_empty() {
        batch.put(&format!("key-name/{name}"), key_id.as_bytes());
    }
    batch.commit()?;
    Ok(entry)
}

fn store_issuer(issuer: &IssuerEntry) -> Result<(), EngineError> {
    let mut batch = storage::Batch::new();
    batch.put_json(&format!("issuer/{}", issuer.id), issuer)?;
    if !issuer.name.is_empty() {
        batch.put(
            &format!("issuer-name/{}", issuer.name),
            issuer.id.as_bytes(),
        );
    }
    batch.commit()?;
    if default_issuer_id()?.is_none() {
        set_default_issuer(&issuer.id)?;
    }
    Ok(())
}

fn store_cert(
    pem_text: &str,
    serial: &[u8],
    issuer_id: &str,
    not_after: i64,
) -> Result<(), EngineError> {
    let key = serial_key(&serial_colon(serial))
        .ok_or_else(|| EngineError::Internal("bad serial".to_string()))?;
    storage::put_json(
        &format!("certs/{key}"),
        &CertEntry {
            certificate: pem_text.to_string(),
            issuer_id: issuer_id.to_string(),
            not_after,
            revoked_at: None,
        },
    )
}

/// `root/generate/:type` and `intermediate/generate/:type`.
fn generate_ca(root: bool, exported: &str, req: &Request) -> Result<Response, EngineError> {
    let exportable = match exported {
        "internal" => false,
        "exported" => true,
        other => {
            return Err(invalid(format!(
                "key handling {other:?} is not supported; use internal or exported"
            )));
        }
    };
    let common_name = req.string("common_name").unwrap_or_default().to_string();
    if common_name.is_empty() {
        return Err(invalid("the common_name field is required"));
    }
    if req
        .strings("permitted_dns_domains")
        .is_some_and(|d| !d.is_empty())
    {
        return Err(invalid("permitted_dns_domains is not supported yet"));
    }
    let issuer_name = req.string("issuer_name").unwrap_or_default().to_string();
    let key_name = req.string("key_name").unwrap_or_default().to_string();
    if !issuer_name.is_empty() {
        check_name(&issuer_name, "issuer_name")?;
        issuer_name_free(&issuer_name)?;
    }
    if !key_name.is_empty() {
        check_name(&key_name, "key_name")?;
        if storage::get(&format!("key-name/{key_name}"))?.is_some() {
            return Err(invalid(format!("key name {key_name:?} is already in use")));
        }
    }
    let (kind, _) = key_kind(
        req.string("key_type").unwrap_or("rsa"),
        req.int("key_bits").unwrap_or(0),
    )?;
    let key_id = new_id()?;
    let signer =
        HostSigner::new(keys::generate(&host_key_name(&key_id), kind, exportable).map_err(host)?)?;
    let entry = store_key(&signer, &key_id, &key_name)?;
    let dn = request_subject(req, &common_name);
    let mut sans = Vec::new();
    for name in req.strings("alt_names").unwrap_or_default() {
        sans.push(SanType::DnsName(
            name.clone()
                .try_into()
                .map_err(|_| invalid(format!("{name:?} is not an ASCII name")))?,
        ));
    }
    for ip in req.strings("ip_sans").unwrap_or_default() {
        sans.push(SanType::IpAddress(
            ip.parse()
                .map_err(|_| invalid(format!("{ip:?} is not an IP address")))?,
        ));
    }
    let mut warnings = Vec::new();
    let mut data = if root {
        let mut ttl = req
            .duration("ttl")
            .filter(|t| *t > 0)
            .unwrap_or(req.mount_default_ttl);
        if ttl > req.mount_max_ttl {
            warnings.push(format!(
                "TTL {:?} is longer than permitted maxTTL {:?}, so maxTTL is being used",
                go_duration(ttl),
                go_duration(req.mount_max_ttl)
            ));
            ttl = req.mount_max_ttl;
        }
        let serial = new_serial()?;
        let start =
            now()? - i64::try_from(req.duration("not_before_duration").unwrap_or(30)).unwrap_or(30);
        let end = now()?.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        let mut params = ca_params(
            dn,
            req.int("max_path_length").unwrap_or(-1),
            &serial,
            start,
            end,
        )?;
        params.subject_alt_names = sans;
        params.key_identifier_method = KeyIdMethod::PreSpecified(signer.public.key_id());
        let certificate = params
            .self_signed(&signer)
            .map_err(|e| EngineError::Internal(format!("signing failed: {e}")))?;
        let cert_pem = pem("CERTIFICATE", certificate.der());
        let issuer = IssuerEntry {
            id: new_id()?,
            name: issuer_name.clone(),
            key_id: key_id.clone(),
            certificate: cert_pem.clone(),
            chain: vec![cert_pem.clone()],
            leaf_not_after_behavior: "err".to_string(),
        };
        store_issuer(&issuer)?;
        store_cert(&cert_pem, &serial, &issuer.id, end)?;
        let mut data = json!({
            "certificate": cert_pem, "issuing_ca": cert_pem, "serial_number": serial_colon(&serial), "expiration": end,
            "issuer_id": issuer.id, "issuer_name": issuer.name, "key_id": key_id, "key_name": key_name,
        });
        if req.string("format") == Some("der")
            && let Some(object) = data.as_object_mut()
        {
            let der = base64::engine::general_purpose::STANDARD.encode(certificate.der());
            object.insert("certificate".to_string(), json!(der));
            object.insert("issuing_ca".to_string(), json!(der));
        }
        data
    } else {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let csr = params
            .serialize_request(&signer)
            .map_err(|e| EngineError::Internal(format!("CSR failed: {e}")))?;
        if !issuer_name.is_empty() {
            // Coffer remembers the name for the issuer set-signed will create from this key.
            storage::put(
                &format!("key-pending-name/{key_id}"),
                issuer_name.as_bytes(),
            )?;
        }
        json!({ "csr": pem("CERTIFICATE REQUEST", csr.der()), "key_id": key_id, "key_name": key_name })
    };
    if exportable && let Some(object) = data.as_object_mut() {
        let pkcs8 = signer.export()?;
        let (key_pem, key_der) = private_key_pem(
            &pkcs8,
            signer.public.family,
            req.string("private_key_format") == Some("pkcs8"),
        )
        .map_err(EngineError::Internal)?;
        let key = if req.string("format") == Some("der") {
            base64::engine::general_purpose::STANDARD.encode(key_der)
        } else {
            key_pem
        };
        object.insert("private_key".to_string(), json!(key));
        object.insert("private_key_type".to_string(), json!(entry.key_type));
    }
    let mut response = respond::data(data);
    response.warnings = warnings;
    Ok(response)
}

/// `root/sign-intermediate` and `issuer/:ref/sign-intermediate`.
fn sign_intermediate(issuer_ref: &str, req: &Request) -> Result<Response, EngineError> {
    let issuer = resolve_issuer(issuer_ref)?;
    let csr = verified_csr(
        req.string("csr")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| invalid("the csr field is required"))?,
    )?;
    let dn = if req.bool("use_csr_values").unwrap_or(false) {
        csr.subject.clone()
    } else {
        let cn = req
            .string("common_name")
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| csr.common_name.clone());
        if cn.is_empty() {
            return Err(invalid(
                "the common_name field is required (or put a CN in the CSR)",
            ));
        }
        request_subject(req, &cn)
    };
    let (end, warnings) = issue::not_after(
        req.duration("ttl"),
        None,
        req.mount_default_ttl,
        req.mount_max_ttl,
        &issuer,
    )?;
    let serial = new_serial()?;
    let start =
        now()? - i64::try_from(req.duration("not_before_duration").unwrap_or(30)).unwrap_or(30);
    let mut params = ca_params(
        dn,
        req.int("max_path_length").unwrap_or(-1),
        &serial,
        start,
        end,
    )?;
    params.subject_alt_names = csr
        .dns_names
        .iter()
        .filter_map(|n| n.clone().try_into().ok().map(SanType::DnsName))
        .collect();
    let certificate = sign_with_issuer(&mut params, &csr.key, &issuer)?;
    let cert_pem = pem("CERTIFICATE", certificate.der());
    store_cert(&cert_pem, &serial, &issuer.id, end)?;
    let data = certificate_data(
        &cert_pem,
        certificate.der(),
        &serial_colon(&serial),
        end,
        &issuer,
        req,
        None,
    )?;
    let mut response = respond::data(data);
    response.warnings = warnings;
    Ok(response)
}

/// `root/sign-self-issued`: re-signs a self-issued CA certificate (subject = issuer, e.g.
/// a new root during rotation) with this mount's issuer, keeping its subject, key, serial,
/// validity and CA constraint.
fn sign_self_issued(
    issuer_ref: &str,
    certificate: &str,
    matching: bool,
) -> Result<Response, EngineError> {
    let issuer = resolve_issuer(issuer_ref)?;
    let der = pem_blocks(certificate, "CERTIFICATE")
        .map_err(invalid)?
        .into_iter()
        .next()
        .unwrap_or_default();
    let info = parse_cert(&der).map_err(invalid)?;
    if !info.self_issued {
        return Err(invalid(
            "the certificate is not self-issued (its subject and issuer differ)",
        ));
    }
    if !info.is_ca {
        return Err(invalid("the certificate is not a CA certificate"));
    }
    if matching && issuer_cert(&issuer)?.key.family.type_name() != info.key.family.type_name() {
        return Err(invalid(
            "the certificate's key type differs from the issuer's (require_matching_certificate_algorithms)",
        ));
    }
    let mut params = ca_params(
        info.subject.clone(),
        -1,
        &info.serial,
        info.not_before,
        info.not_after,
    )?;
    let certificate = sign_with_issuer(&mut params, &info.key, &issuer)?;
    Ok(respond::data(
        json!({ "certificate": pem("CERTIFICATE", certificate.der()), "issuing_ca": issuer.certificate }),
    ))
}

/// `intermediate/set-signed`: makes an issuer from a signed certificate whose key we hold.
fn set_signed(certificate: &str) -> Result<Response, EngineError> {
    let blocks = pem_blocks(certificate, "CERTIFICATE").map_err(invalid)?;
    let mut parsed = Vec::new();
    for der in &blocks {
        parsed.push((der.clone(), parse_cert(der).map_err(invalid)?));
    }
    let keys: Vec<KeyEntry> = storage::list("key/")?
        .iter()
        .filter_map(|id| load::<KeyEntry>(&format!("key/{id}")).ok().flatten())
        .collect();
    let matched = parsed.iter().enumerate().find_map(|(index, (_, info))| {
        let spki = base64::engine::general_purpose::STANDARD.encode(&info.key.spki);
        keys.iter()
            .find(|k| k.spki == spki)
            .map(|k| (index, k.clone()))
    });
    let Some((index, key)) = matched else {
        return Err(invalid(
            "no key in this mount matches the certificate's public key: generate the CSR with intermediate/generate on this mount",
        ));
    };
    let (der, _) = parsed
        .get(index)
        .ok_or_else(|| EngineError::Internal("index".to_string()))?;
    let cert_pem = pem("CERTIFICATE", der);
    for id in storage::list("issuer/")? {
        if let Some(existing) = load::<IssuerEntry>(&format!("issuer/{id}"))?
            && existing.certificate == cert_pem
        {
            return Ok(respond::data(
                json!({ "imported_issuers": null, "imported_keys": null, "mapping": { existing.id.clone(): existing.key_id }, "existing_issuers": [existing.id], "existing_keys": [] }),
            ));
        }
    }
    let mut chain = vec![cert_pem.clone()];
    chain.extend(
        parsed
            .iter()
            .enumerate()
            .filter(|(i, (_, info))| *i != index && info.is_ca)
            .map(|(_, (der, _))| pem("CERTIFICATE", der)),
    );
    let pending = storage::get(&format!("key-pending-name/{}", key.id))?
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    let name = if pending.is_empty() || storage::get(&format!("issuer-name/{pending}"))?.is_some() {
        String::new()
    } else {
        pending
    };
    let issuer = IssuerEntry {
        id: new_id()?,
        name,
        key_id: key.id.clone(),
        certificate: cert_pem,
        chain,
        leaf_not_after_behavior: "err".to_string(),
    };
    store_issuer(&issuer)?;
    storage::delete(&format!("key-pending-name/{}", key.id))?;
    Ok(respond::data(json!({
        "imported_issuers": [issuer.id], "imported_keys": null, "mapping": { issuer.id.clone(): key.id },
        "existing_issuers": [], "existing_keys": [],
    })))
}

fn issuer_json(issuer: &IssuerEntry) -> Value {
    let urls: Urls = urls().unwrap_or_default();
    json!({
        "issuer_id": issuer.id, "issuer_name": issuer.name, "key_id": issuer.key_id,
        "certificate": issuer.certificate, "ca_chain": issuer.chain, "manual_chain": null,
        "leaf_not_after_behavior": issuer.leaf_not_after_behavior,
        "usage": "read-only,issuing-certificates,crl-signing,ocsp-signing", "revocation_signature_algorithm": "",
        "issuing_certificates": urls.issuing_certificates, "crl_distribution_points": urls.crl_distribution_points, "ocsp_servers": urls.ocsp_servers,
    })
}

fn list_issuers() -> Result<Response, EngineError> {
    let ids = storage::list("issuer/")?;
    if ids.is_empty() {
        return Err(EngineError::NotFound(String::new()));
    }
    let default = default_issuer_id()?;
    let mut info = serde_json::Map::new();
    for id in &ids {
        if let Some(issuer) = load::<IssuerEntry>(&format!("issuer/{id}"))? {
            info.insert(id.clone(), json!({ "issuer_name": issuer.name, "is_default": default.as_deref() == Some(id.as_str()) }));
        }
    }
    Ok(respond::data(json!({ "keys": ids, "key_info": info })))
}

fn fetch_issuer(reference: &str, form: &str) -> Result<Response, EngineError> {
    let issuer = resolve_issuer(reference)?;
    match form {
        "pem" => Ok(respond::raw(
            "application/pem-certificate-chain",
            issuer.certificate.into_bytes(),
        )),
        "der" => Ok(respond::raw(
            "application/pkix-cert",
            pem_blocks(&issuer.certificate, "CERTIFICATE")
                .map_err(EngineError::Internal)?
                .into_iter()
                .next()
                .unwrap_or_default(),
        )),
        _ => Ok(respond::data(
            json!({ "certificate": issuer.certificate, "ca_chain": issuer.chain, "issuer_id": issuer.id, "issuer_name": issuer.name }),
        )),
    }
}

fn update_issuer(reference: &str, req: &Request) -> Result<Response, EngineError> {
    let mut issuer = resolve_issuer(reference)?;
    if let Some(name) = req.string("issuer_name").filter(|n| *n != issuer.name) {
        if !name.is_empty() {
            check_name(name, "issuer_name")?;
            issuer_name_free(name)?;
        }
        if !issuer.name.is_empty() {
            storage::delete(&format!("issuer-name/{}", issuer.name))?;
        }
        issuer.name = name.to_string();
    }
    if let Some(behavior) = req
        .string("leaf_not_after_behavior")
        .filter(|b| !b.is_empty())
    {
        if !matches!(behavior, "err" | "truncate" | "permit") {
            return Err(invalid(
                "leaf_not_after_behavior must be err, truncate or permit",
            ));
        }
        issuer.leaf_not_after_behavior = behavior.to_string();
    }
    store_issuer(&issuer)?;
    Ok(respond::data(issuer_json(&issuer)))
}

fn delete_issuer(reference: &str) -> Result<Response, EngineError> {
    let issuer = match resolve_issuer(reference) {
        Ok(issuer) => issuer,
        Err(_) => return Ok(respond::empty()),
    };
    let mut batch = storage::Batch::new();
    batch.delete(&format!("issuer/{}", issuer.id));
    if !issuer.name.is_empty() {
        batch.delete(&format!("issuer-name/{}", issuer.name));
    }
    if default_issuer_id()?.as_deref() == Some(issuer.id.as_str()) {
        batch.delete("config/issuers");
    }
    batch.commit()?;
    Ok(respond::empty())
}

fn rename_key(reference: &str, name: &str) -> Result<Response, EngineError> {
    let mut key = resolve_key(reference)?;
    if !name.is_empty() {
        check_name(name, "key_name")?;
        if storage::get(&format!("key-name/{name}"))?.is_some() {
            return Err(invalid(format!("key name {name:?} is already in use")));
        }
    }
    let mut batch = storage::Batch::new();
    if !key.name.is_empty() {
        batch.delete(&format!("key-name/{}", key.name));
    }
    key.name = name.to_string();
    batch.put_json(&format!("key/{}", key.id), &key)?;
    if !name.is_empty() {
        batch.put(&format!("key-name/{name}"), key.id.as_bytes());
    }
    batch.commit()?;
    Ok(respond::data(
        json!({ "key_id": key.id, "key_name": key.name, "key_type": key.key_type }),
    ))
}

fn write_urls(req: &Request) -> Result<Response, EngineError> {
    let mut config = urls()?;
    let take = |name: &str, target: &mut Vec<String>| -> Result<(), EngineError> {
        if let Some(values) = req.strings(name) {
            for url in values {
                let valid = (url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with("ldap://"))
                    && url.is_ascii()
                    && !url.contains(char::is_whitespace);
                if !valid {
                    return Err(invalid(format!("invalid URL {url:?} in {name}")));
                }
            }
            *target = values.to_vec();
        }
        Ok(())
    };
    take("issuing_certificates", &mut config.issuing_certificates)?;
    take(
        "crl_distribution_points",
        &mut config.crl_distribution_points,
    )?;
    take("ocsp_servers", &mut config.ocsp_servers)?;
    storage::put_json("config/urls", &config)?;
    Ok(respond::data(
        json!({ "issuing_certificates": config.issuing_certificates, "crl_distribution_points": config.crl_distribution_points, "ocsp_servers": config.ocsp_servers, "enable_templating": false }),
    ))
}

fn raw_ca(as_pem: bool) -> Result<Response, EngineError> {
    if default_issuer_id()?.is_none() {
        return Ok(respond::raw(
            if as_pem {
                "application/pem-certificate-chain"
            } else {
                "application/pkix-cert"
            },
            Vec::new(),
        ));
    }
    let issuer = resolve_issuer("default")?;
    if as_pem {
        return Ok(respond::raw(
            "application/pem-certificate-chain",
            issuer.certificate.into_bytes(),
        ));
    }
    let der = pem_blocks(&issuer.certificate, "CERTIFICATE")
        .map_err(EngineError::Internal)?
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok(respond::raw("application/pkix-cert", der))
}

/// The not-found of paths that need the default issuer when there is none.
fn no_default_issuer() -> EngineError {
    EngineError::NotFound("no default issuer: generate or import a CA first".to_string())
}

fn read_cert(serial: &str) -> Result<Response, EngineError> {
    match serial {
        "ca" | "ca_chain" => {
            let issuer = resolve_issuer("default").map_err(|_| no_default_issuer())?;
            let mut data = json!({ "certificate": issuer.certificate, "revocation_time": 0, "revocation_time_rfc3339": "", "issuer_id": issuer.id });
            if serial == "ca_chain"
                && let Some(object) = data.as_object_mut()
            {
                object.insert("ca_chain".to_string(), json!(issuer.chain.join("\n")));
            }
            Ok(respond::data(data))
        }
        "crl" => {
            let id = default_issuer_id()?.ok_or_else(no_default_issuer)?;
            Ok(respond::data(
                json!({ "certificate": pem("X509 CRL", &crl_der(&id)?), "revocation_time": 0, "revocation_time_rfc3339": "" }),
            ))
        }
        _ => {
            let key = serial_key(serial)
                .ok_or_else(|| invalid(format!("{serial:?} is not a serial number")))?;
            let entry: CertEntry = load(&format!("certs/{key}"))?.ok_or_else(|| {
                EngineError::NotFound(format!("no certificate with serial number {serial}"))
            })?;
            let revoked = entry.revoked_at.unwrap_or(0);
            Ok(respond::data(json!({
                "certificate": entry.certificate, "issuer_id": entry.issuer_id, "revocation_time": revoked,
                "revocation_time_rfc3339": if revoked > 0 { coffer_sdk::time::rfc3339(revoked) } else { String::new() },
            })))
        }
    }
}

/// Revokes by serial or by certificate: O(1) — a record and a stale mark, no CRL rebuild.
fn revoke(serial: &str, certificate: &str) -> Result<Response, EngineError> {
    let serial_text = if !serial.is_empty() {
        serial.to_string()
    } else if !certificate.is_empty() {
        let der = pem_blocks(certificate, "CERTIFICATE")
            .map_err(invalid)?
            .into_iter()
            .next()
            .unwrap_or_default();
        serial_colon(&parse_cert(&der).map_err(invalid)?.serial)
    } else {
        return Err(invalid("either serial_number or certificate is required"));
    };
    let key = serial_key(&serial_text)
        .ok_or_else(|| invalid(format!("{serial_text:?} is not a serial number")))?;
    let mut entry: CertEntry = load(&format!("certs/{key}"))?
        .ok_or_else(|| invalid(format!("certificate with serial {serial_text} not found.")))?;
    for id in storage::list("issuer/")? {
        if let Some(issuer) = load::<IssuerEntry>(&format!("issuer/{id}"))?
            && issuer.certificate == entry.certificate
        {
            return Err(invalid(format!(
                "adding issuer (id: {}) to its own CRL is not allowed",
                issuer.id
            )));
        }
    }
    let mut response_warnings = Vec::new();
    if entry.not_after < now()? {
        response_warnings
            .push("certificate has already expired; it was revoked anyway".to_string());
    }
    let time = match entry.revoked_at {
        Some(time) => time,
        None => {
            let time = coffer_sdk::time::unix_now()?;
            entry.revoked_at = Some(time);
            // One commit: a revoked certificate is never missing from the CRL's index.
            let mut batch = storage::Batch::new();
            batch
                .put_json(&format!("certs/{key}"), &entry)?
                .put_json(&format!("revoked/{}/{key}", entry.issuer_id), &time)?
                .put(&crl_pending_key(&entry.issuer_id, &key), b"");
            batch.commit()?;
            time
        }
    };
    let mut response = respond::data(
        json!({ "revocation_time": time, "revocation_time_rfc3339": coffer_sdk::time::rfc3339(time), "state": "revoked" }),
    );
    response.warnings = response_warnings;
    Ok(response)
}

/// Where an issuer's CRL lives: `crl/<issuer>/current` names the latest build and its
/// chunk count; each build's DER is in 512 KiB chunks under `crl/<issuer>/<build>/`, so two
/// rebuilds racing (or one cut short by a crash) never mix their chunks, and each rebuild
/// removes every other build once it has switched `current` to its own. A revocation
/// commits a marker under `crl/<issuer>/pending/` together with its index entry; a fetch
/// that finds markers rebuilds, and a rebuild deletes only the markers it saw before it
/// listed the revocations — one made meanwhile keeps its marker for the next fetch.
#[derive(serde::Serialize, serde::Deserialize)]
struct CrlPointer {
    number: u64,
    build: String,
    chunks: u64,
}

fn crl_pending_key(issuer_id: &str, serial_key: &str) -> String {
    format!("crl/{issuer_id}/pending/{serial_key}")
}

/// The issuer's current CRL, rebuilt first if revocations happened since.
fn crl_der(issuer_id: &str) -> Result<Vec<u8>, EngineError> {
    let pointer: Option<CrlPointer> = load(&format!("crl/{issuer_id}/current"))?;
    let Some(pointer) = pointer else {
        return rebuild_crl(issuer_id);
    };
    if !storage::list(&format!("crl/{issuer_id}/pending/"))?.is_empty() {
        return rebuild_crl(issuer_id);
    }
    let mut der = Vec::new();
    for index in 0..pointer.chunks {
        match storage::get(&format!("crl/{issuer_id}/{}/{index}", pointer.build))? {
            Some(chunk) => der.extend(chunk),
            // A concurrent rebuild replaced this build while it was read.
            None => return rebuild_crl(issuer_id),
        }
    }
    Ok(der)
}

/// Rebuilds and stores an issuer's CRL (see [`CrlPointer`]).
fn rebuild_crl(issuer_id: &str) -> Result<Vec<u8>, EngineError> {
    // Markers first: each one's revocation is committed with it, so the listing below
    // includes every revocation whose marker this rebuild will delete.
    let pending = storage::list(&format!("crl/{issuer_id}/pending/"))?;
    let previous: Option<CrlPointer> = load(&format!("crl/{issuer_id}/current"))?;
    let issuer: IssuerEntry = load(&format!("issuer/{issuer_id}"))?
        .ok_or_else(|| EngineError::NotFound(format!("no issuer with id {issuer_id}")))?;
    let info = issuer_cert(&issuer)?;
    let mut revoked = Vec::new();
    for key in storage::list(&format!("revoked/{issuer_id}/"))? {
        let time: u64 = load(&format!("revoked/{issuer_id}/{key}"))?.unwrap_or(0);
        let bytes: Vec<u8> = key
            .split('-')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: time::OffsetDateTime::from_unix_timestamp(
                i64::try_from(time).unwrap_or(0),
            )
            .map_err(|e| EngineError::Internal(e.to_string()))?,
            reason_code: None,
            invalidity_date: None,
        });
    }
    // Before CrlPointer, the number lived at crl/<issuer>/number.
    let legacy_number: Option<u64> = load(&format!("crl/{issuer_id}/number"))?;
    let number = previous
        .as_ref()
        .map(|p| p.number)
        .or(legacy_number)
        .unwrap_or(0)
        + 1;

    let params = CertificateRevocationListParams {
        this_update: time::OffsetDateTime::from_unix_timestamp(now()?)
            .map_err(|e| EngineError::Internal(e.to_string()))?,
        next_update: time::OffsetDateTime::from_unix_timestamp(now()? + CRL_LIFETIME)
            .map_err(|e| EngineError::Internal(e.to_string()))?,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::PreSpecified(
            info.subject_key_id
                .clone()
                .unwrap_or_else(|| info.key.key_id()),
        ),
    };
    let mut issuer_params = rcgen::CertificateParams::default();
    issuer_params.distinguished_name = info.subject.clone();
    issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(
        info.subject_key_id
            .clone()
            .unwrap_or_else(|| info.key.key_id()),
    );
    issuer_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let signer = rcgen::Issuer::new(issuer_params, HostSigner::open(&issuer.key_id)?);
    let crl = params
        .signed_by(&signer)
        .map_err(|e| EngineError::Internal(format!("CRL signing failed: {e}")))?;
    let der = crl.der().to_vec();
    store_crl_build(issuer_id, number, &der, &pending)?;
    Ok(der)
}

/// Stores a signed CRL as a new build, switches `current` to it (clearing the `pending`
/// markers the rebuild saw) and removes every other build (see [`CrlPointer`]).
fn store_crl_build(
    issuer_id: &str,
    number: u64,
    der: &[u8],
    pending: &[String],
) -> Result<(), EngineError> {
    let build = crate::store::new_id()?;
    let own_folder = format!("{build}/");
    let chunks: Vec<&[u8]> = der.chunks(CRL_CHUNK).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        storage::put(&format!("crl/{issuer_id}/{build}/{index}"), chunk)?;
    }
    // The switch to the new build, and as many markers as fit, in one commit.
    let mut markers = pending.iter().map(|key| crl_pending_key(issuer_id, key));
    let mut batch = storage::Batch::new();
    batch.put_json(
        &format!("crl/{issuer_id}/current"),
        &CrlPointer {
            number,
            build,
            chunks: chunks.len() as u64,
        },
    )?;
    for marker in markers.by_ref().take(CRL_BATCH - 1) {
        batch.delete(&marker);
    }
    batch.commit()?;
    // Everything else under crl/<issuer>/ is stale: earlier builds (also one a racing
    // rebuild switched to and lost; a reader that finds its chunks gone rebuilds) and the
    // keys of the layout before CrlPointer (chunks, number, stale, chunk/<i>).
    let mut leftovers: Vec<String> = markers.collect();
    for entry in storage::list(&format!("crl/{issuer_id}/"))? {
        if entry == "current" || entry == "pending/" || entry == own_folder {
            continue;
        }
        match entry.strip_suffix('/') {
            Some(folder) => leftovers.extend(
                storage::list(&format!("crl/{issuer_id}/{folder}/"))?
                    .iter()
                    .map(|key| format!("crl/{issuer_id}/{folder}/{key}")),
            ),
            None => leftovers.push(format!("crl/{issuer_id}/{entry}")),
        }
    }
    for group in leftovers.chunks(CRL_BATCH) {
        let mut batch = storage::Batch::new();
        for key in group {
            batch.delete(key);
        }
        batch.commit()?;
    }
    Ok(())
}

fn raw_crl(as_pem: bool) -> Result<Response, EngineError> {
    let Some(id) = default_issuer_id()? else {
        return Ok(respond::raw("application/pkix-crl", Vec::new()));
    };
    let der = crl_der(&id)?;
    if as_pem {
        Ok(respond::raw(
            "application/x-pem-file",
            pem("X509 CRL", &der).into_bytes(),
        ))
    } else {
        Ok(respond::raw("application/pkix-crl", der))
    }
}

/// `tidy`: removes certificates (and their revocation records) past expiry + safety buffer.
fn tidy(req: &Request) -> Result<Response, EngineError> {
    let buffer = i64::try_from(req.duration("safety_buffer").unwrap_or(TIDY_SAFETY_BUFFER))
        .unwrap_or(i64::MAX);
    let (store, revoked) = (
        req.bool("tidy_cert_store").unwrap_or(false),
        req.bool("tidy_revoked_certs").unwrap_or(false),
    );
    let mut removed = 0u64;
    if store || revoked {
        for key in storage::list("certs/")? {
            let Some(entry) = load::<CertEntry>(&format!("certs/{key}"))? else {
                continue;
            };
            if entry.not_after.saturating_add(buffer) >= now()?
                || (entry.revoked_at.is_some() && !revoked)
                || (entry.revoked_at.is_none() && !store)
            {
                continue;
            }
            let mut batch = storage::Batch::new();
            batch.delete(&format!("certs/{key}"));
            if entry.revoked_at.is_some() {
                batch
                    .delete(&format!("revoked/{}/{key}", entry.issuer_id))
                    .put(&crl_pending_key(&entry.issuer_id, &key), b"");
            }
            batch.commit()?;
            removed += 1;
        }
    }
    let mut response = respond::data(json!({ "certificates_deleted": removed }));
    response
        .warnings
        .push("Tidy operation completed.".to_string());
    Ok(response)
}

/// The public key of a PEM certificate (test helper and for imports).
pub fn certificate_key(pem_text: &str) -> Result<PublicKey, String> {
    let der = pem_blocks(pem_text, "CERTIFICATE")?
        .into_iter()
        .next()
        .ok_or("no certificate")?;
    Ok(parse_cert(&der)?.key)
}

coffer_sdk::engine!(Pki);
