//! Roles and issuance: `roles/<name>`, `issue/<role>`, `sign/<role>`, `sign-verbatim`.

use std::net::IpAddr;

use base64::Engine as _;
use coffer_sdk::keys::{self};
use coffer_sdk::serde_json::{Value, json};
use coffer_sdk::{
    EngineError, Field, FieldExt, FieldSchema, FieldValue, Fields, LeaseRequest, Request, Response,
    respond, storage,
};
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::policy::NamePolicy;
use crate::store::{
    CertEntry, HostSigner, IssuerEntry, host, invalid, issuer_cert, key_kind, load, new_serial,
    resolve_issuer, scheme_for_oid, urls,
};
use crate::x509::{
    KeyFamily, PublicKey, aia_extension, parse_csr, pem, private_key_pem, serial_colon, serial_key,
};

/// Default backdating of NotBefore, seconds (Vault's 30s).
const DEFAULT_NOT_BEFORE: u64 = 30;
/// Most SANs one certificate may carry.
const MAX_SANS: usize = 100;

/// A role (`roles/<name>`), with Vault's fields.
#[allow(
    missing_docs,
    reason = "Vault's role fields, each documented in role_fields()"
)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Role {
    pub issuer_ref: String,
    pub ttl: u64,
    pub max_ttl: u64,
    pub allow_localhost: bool,
    pub allowed_domains: Vec<String>,
    /// `None` = not set: Coffer allows listed domains themselves (effective `true`).
    pub allow_bare_domains: Option<bool>,
    pub allow_subdomains: bool,
    pub allow_glob_domains: bool,
    pub allow_wildcard_certificates: bool,
    pub allow_any_name: bool,
    pub enforce_hostnames: bool,
    pub allow_ip_sans: bool,
    pub allowed_uri_sans: Vec<String>,
    pub server_flag: bool,
    pub client_flag: bool,
    pub code_signing_flag: bool,
    pub email_protection_flag: bool,
    pub key_type: String,
    pub key_bits: i64,
    pub signature_bits: i64,
    pub use_pss: bool,
    pub key_usage: Vec<String>,
    pub ext_key_usage: Vec<String>,
    pub use_csr_common_name: bool,
    pub use_csr_sans: bool,
    pub ou: Vec<String>,
    pub organization: Vec<String>,
    pub country: Vec<String>,
    pub locality: Vec<String>,
    pub province: Vec<String>,
    pub street_address: Vec<String>,
    pub postal_code: Vec<String>,
    pub generate_lease: bool,
    pub no_store: bool,
    pub require_cn: bool,
    pub basic_constraints_valid_for_non_ca: bool,
    pub not_before_duration: u64,
}

/// The role fields, with Vault's defaults.
pub fn role_fields() -> Vec<FieldSchema> {
    let b = |name: &str, default: bool, help: &str| {
        Field::bool(name, help).default(FieldValue::Bool(default))
    };
    let list = |name: &str, help: &str| Field::comma_strings(name, help);
    vec![
        Field::string("issuer_ref", "Issuer to sign with.")
            .default(FieldValue::String("default".to_string())),
        Field::duration("ttl", "Default TTL."),
        Field::duration("max_ttl", "Maximum TTL."),
        b("allow_localhost", true, "Allow localhost."),
        list("allowed_domains", "Domains this role issues for."),
        Field::bool(
            "allow_bare_domains",
            "Allow the listed domains themselves (Coffer: default true).",
        ),
        b(
            "allow_subdomains",
            false,
            "Allow subdomains of the listed domains.",
        ),
        b(
            "allow_glob_domains",
            false,
            "Treat listed domains as globs.",
        ),
        b("allow_wildcard_certificates", true, "Allow wildcard names."),
        b("allow_any_name", false, "Allow any name."),
        b("enforce_hostnames", true, "Require valid hostnames."),
        b("allow_ip_sans", true, "Allow IP SANs."),
        list("allowed_uri_sans", "URI SAN globs."),
        b("server_flag", true, "serverAuth."),
        b("client_flag", true, "clientAuth."),
        b("code_signing_flag", false, "codeSigning."),
        b("email_protection_flag", false, "emailProtection."),
        Field::lowercase("key_type", "rsa, ec, ed25519 or any.")
            .default(FieldValue::String("rsa".to_string())),
        Field::int("key_bits", "Key size (0: default)."),
        Field::int("signature_bits", "Signature hash size (0: default)."),
        b("use_pss", false, "RSA-PSS signatures."),
        list("key_usage", "Key usages.").default(FieldValue::Strings(vec![
            "DigitalSignature".into(),
            "KeyAgreement".into(),
            "KeyEncipherment".into(),
        ])),
        list("ext_key_usage", "Extended key usages."),
        list(
            "ext_key_usage_oids",
            "Extended key usage OIDs (not supported; must be empty).",
        ),
        b("use_csr_common_name", true, "Take the CN from the CSR."),
        b("use_csr_sans", true, "Take SANs from the CSR."),
        list("ou", "OU."),
        list("organization", "O."),
        list("country", "C."),
        list("locality", "L."),
        list("province", "ST."),
        list("street_address", "Street."),
        list("postal_code", "Postal code."),
        b("generate_lease", false, "Lease issued certificates."),
        b("no_store", false, "Do not store issued certificates."),
        b("require_cn", true, "Require a common name."),
        b(
            "basic_constraints_valid_for_non_ca",
            false,
            "Mark leaves CA:FALSE.",
        ),
        Field::duration("not_before_duration", "NotBefore backdating.")
            .default(FieldValue::Duration(DEFAULT_NOT_BEFORE)),
    ]
}

fn strings(req: &Request, name: &str) -> Vec<String> {
    req.strings(name)
        .map(<[String]>::to_vec)
        .unwrap_or_default()
}

/// Writes a role; answers with the role (as Vault does).
pub fn write_role(name: &str, req: &Request) -> Result<Response, EngineError> {
    let flag = |n: &str| req.bool(n).unwrap_or(false);
    if !strings(req, "ext_key_usage_oids").is_empty() {
        return Err(invalid("ext_key_usage_oids is not supported"));
    }
    let role = Role {
        issuer_ref: req.string("issuer_ref").unwrap_or("default").to_string(),
        ttl: req.duration("ttl").unwrap_or(0),
        max_ttl: req.duration("max_ttl").unwrap_or(0),
        allow_localhost: flag("allow_localhost"),
        allowed_domains: strings(req, "allowed_domains")
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        allow_bare_domains: req.bool("allow_bare_domains"),
        allow_subdomains: flag("allow_subdomains"),
        allow_glob_domains: flag("allow_glob_domains"),
        allow_wildcard_certificates: flag("allow_wildcard_certificates"),
        allow_any_name: flag("allow_any_name"),
        enforce_hostnames: flag("enforce_hostnames"),
        allow_ip_sans: flag("allow_ip_sans"),
        allowed_uri_sans: strings(req, "allowed_uri_sans"),
        server_flag: flag("server_flag"),
        client_flag: flag("client_flag"),
        code_signing_flag: flag("code_signing_flag"),
        email_protection_flag: flag("email_protection_flag"),
        key_type: req.string("key_type").unwrap_or("rsa").to_string(),
        key_bits: req.int("key_bits").unwrap_or(0),
        signature_bits: req.int("signature_bits").unwrap_or(0),
        use_pss: flag("use_pss"),
        key_usage: strings(req, "key_usage"),
        ext_key_usage: strings(req, "ext_key_usage"),
        use_csr_common_name: flag("use_csr_common_name"),
        use_csr_sans: flag("use_csr_sans"),
        ou: strings(req, "ou"),
        organization: strings(req, "organization"),
        country: strings(req, "country"),
        locality: strings(req, "locality"),
        province: strings(req, "province"),
        street_address: strings(req, "street_address"),
        postal_code: strings(req, "postal_code"),
        generate_lease: flag("generate_lease"),
        no_store: flag("no_store"),
        require_cn: flag("require_cn"),
        basic_constraints_valid_for_non_ca: flag("basic_constraints_valid_for_non_ca"),
        not_before_duration: req
            .duration("not_before_duration")
            .unwrap_or(DEFAULT_NOT_BEFORE),
    };
    if role.key_type != "any" {
        key_kind(&role.key_type, role.key_bits)?;
    }
    if role.use_pss {
        return Err(invalid(
            "use_pss is not supported yet; RSA certificates are signed with PKCS#1 v1.5",
        ));
    }
    if role.max_ttl > 0 && role.ttl > role.max_ttl {
        return Err(invalid("ttl cannot be larger than max_ttl"));
    }
    for usage in &role.key_usage {
        key_usage(usage)?;
    }
    for usage in &role.ext_key_usage {
        ext_key_usage(usage)?;
    }
    if role.issuer_ref != "default" {
        resolve_issuer(&role.issuer_ref)?;
    }
    storage::put_json(&format!("role/{name}"), &role)?;
    Ok(respond::data(role_json(&role)))
}

/// Every role field, effective values, never null lists (vaultrs requires them).
pub fn role_json(role: &Role) -> Value {
    let (_, family) = key_kind(
        if role.key_type == "any" {
            "rsa"
        } else {
            &role.key_type
        },
        role.key_bits,
    )
    .unwrap_or((keys::KeyKind::Rsa2048, KeyFamily::Rsa(2048)));
    json!({
        "issuer_ref": role.issuer_ref, "ttl": role.ttl, "max_ttl": role.max_ttl,
        "allow_localhost": role.allow_localhost, "allowed_domains": role.allowed_domains,
        "allowed_domains_template": false, "allow_bare_domains": role.allow_bare_domains.unwrap_or(true),
        "allow_subdomains": role.allow_subdomains, "allow_glob_domains": role.allow_glob_domains,
        "allow_wildcard_certificates": role.allow_wildcard_certificates, "allow_any_name": role.allow_any_name,
        "enforce_hostnames": role.enforce_hostnames, "allow_ip_sans": role.allow_ip_sans,
        "allowed_ip_sans_cidr": [], "allowed_uri_sans": role.allowed_uri_sans, "allowed_uri_sans_template": false,
        "allowed_other_sans": [], "allowed_serial_numbers": [], "allowed_user_ids": [],
        "server_flag": role.server_flag, "client_flag": role.client_flag, "code_signing_flag": role.code_signing_flag,
        "email_protection_flag": role.email_protection_flag, "key_type": role.key_type,
        "key_bits": if role.key_type == "any" { 0 } else { family.bits() }, "signature_bits": role.signature_bits,
        "use_pss": role.use_pss, "key_usage": role.key_usage, "ext_key_usage": role.ext_key_usage, "ext_key_usage_oids": [],
        "use_csr_common_name": role.use_csr_common_name, "use_csr_sans": role.use_csr_sans,
        "ou": role.ou, "organization": role.organization, "country": role.country, "locality": role.locality,
        "province": role.province, "street_address": role.street_address, "postal_code": role.postal_code,
        "generate_lease": role.generate_lease, "no_store": role.no_store, "require_cn": role.require_cn,
        "policy_identifiers": [], "basic_constraints_valid_for_non_ca": role.basic_constraints_valid_for_non_ca,
        "not_before_duration": role.not_before_duration, "not_after": "", "cn_validations": ["email", "hostname"],
        "allow_token_displayname": false,
    })
}

fn key_usage(name: &str) -> Result<KeyUsagePurpose, EngineError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "digitalsignature" => KeyUsagePurpose::DigitalSignature,
        "contentcommitment" => KeyUsagePurpose::ContentCommitment,
        "keyencipherment" => KeyUsagePurpose::KeyEncipherment,
        "dataencipherment" => KeyUsagePurpose::DataEncipherment,
        "keyagreement" => KeyUsagePurpose::KeyAgreement,
        "certsign" => KeyUsagePurpose::KeyCertSign,
        "crlsign" => KeyUsagePurpose::CrlSign,
        "encipheronly" => KeyUsagePurpose::EncipherOnly,
        "decipheronly" => KeyUsagePurpose::DecipherOnly,
        _ => return Err(invalid(format!("unknown key_usage {name:?}"))),
    })
}

fn ext_key_usage(name: &str) -> Result<ExtendedKeyUsagePurpose, EngineError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "serverauth" => ExtendedKeyUsagePurpose::ServerAuth,
        "clientauth" => ExtendedKeyUsagePurpose::ClientAuth,
        "codesigning" => ExtendedKeyUsagePurpose::CodeSigning,
        "emailprotection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timestamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocspsigning" => ExtendedKeyUsagePurpose::OcspSigning,
        "any" => ExtendedKeyUsagePurpose::Any,
        _ => return Err(invalid(format!("unknown ext_key_usage {name:?}"))),
    })
}

/// Fields accepted by issue/sign/sign-verbatim.
pub fn issue_fields() -> Vec<FieldSchema> {
    // Names, TTLs and formats are no secret: the audit log shows them in clear, so it
    // says which certificate was asked for. The CSR stays hashed (it is long, not secret).
    let clear = [
        Field::string("common_name", "Requested CN."),
        Field::comma_strings("alt_names", "DNS or email SANs."),
        Field::comma_strings("ip_sans", "IP SANs."),
        Field::comma_strings("uri_sans", "URI SANs."),
        Field::comma_strings("other_sans", "Other SANs (not supported)."),
        Field::duration("ttl", "Requested TTL."),
        Field::string("not_after", "RFC 3339 NotAfter (instead of ttl)."),
        Field::lowercase("format", "pem, der or pem_bundle.")
            .default(FieldValue::String("pem".to_string())),
        Field::lowercase("private_key_format", "der or pkcs8.")
            .default(FieldValue::String("der".to_string())),
        Field::bool("exclude_cn_from_sans", "Do not copy the CN into the SANs.")
            .default(FieldValue::Bool(false)),
        Field::bool(
            "remove_roots_from_chain",
            "Leave self-signed roots out of ca_chain.",
        )
        .default(FieldValue::Bool(false)),
        Field::comma_strings("user_ids", "User IDs (not supported)."),
        Field::lowercase("key_type", "For key_type=any roles."),
        Field::int("key_bits", "For key_type=any roles."),
        Field::comma_strings("key_usage", "sign-verbatim key usages."),
        Field::comma_strings("ext_key_usage", "sign-verbatim extended key usages."),
    ];
    clear
        .into_iter()
        .map(FieldExt::audit_clear)
        .chain([Field::string("csr", "PEM CSR (sign).")])
        .collect()
}

/// Response keys of issue/sign that are no secret, shown in clear in the audit log.
pub const CLEAR_ISSUE_RESPONSE: &[&str] = &["serial_number", "expiration", "private_key_type"];

/// A subject DN as text, RFC 4514 style in the certificate's order (`CN=a,O=b`).
pub fn subject_text(dn: &DistinguishedName) -> String {
    dn.iter()
        .map(|(kind, value)| {
            let name = match kind {
                DnType::CommonName => "CN".to_string(),
                DnType::CountryName => "C".to_string(),
                DnType::LocalityName => "L".to_string(),
                DnType::StateOrProvinceName => "ST".to_string(),
                DnType::OrganizationName => "O".to_string(),
                DnType::OrganizationalUnitName => "OU".to_string(),
                DnType::CustomDnType(oid) => {
                    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
                }
                other => format!("{other:?}"),
            };
            let text = match value {
                DnValue::Utf8String(s) => s.clone(),
                DnValue::PrintableString(s) => s.as_str().to_string(),
                DnValue::Ia5String(s) => s.as_str().to_string(),
                DnValue::TeletexString(s) => s.as_str().to_string(),
                other => format!("{other:?}"),
            };
            format!("{name}={}", text.replace('\\', "\\\\").replace(',', "\\,"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Which issuance endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Server generates the key.
    Issue,
    /// Client sends a CSR; role rules apply.
    Sign,
    /// Client sends a CSR; copied verbatim.
    Verbatim,
}

fn time_of(unix: i64) -> Result<OffsetDateTime, EngineError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| EngineError::Internal(e.to_string()))
}

fn rfc3339(unix: i64) -> String {
    coffer_sdk::time::rfc3339(u64::try_from(unix).unwrap_or(0))
}

/// Checks a CSR's self-signature through the host.
pub fn verified_csr(text: &str) -> Result<crate::x509::Csr, EngineError> {
    let csr = parse_csr(text).map_err(invalid)?;
    let scheme = scheme_for_oid(&csr.signature_oid).ok_or_else(|| {
        invalid(format!(
            "unsupported CSR signature algorithm {}",
            csr.signature_oid
        ))
    })?;
    if !keys::verify(&csr.key.spki, scheme, &csr.signed, &csr.signature).map_err(host)? {
        return Err(invalid("the CSR's signature does not verify"));
    }
    Ok(csr)
}

/// Subject DN from a common name and subject field lists.
pub fn subject(common_name: &str, fields: &[(&DnType, &[String])]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (kind, values) in fields {
        for value in values.iter() {
            dn.push((*kind).clone(), DnValue::Utf8String(value.clone()));
        }
    }
    if !common_name.is_empty() {
        dn.push(
            DnType::CommonName,
            DnValue::Utf8String(common_name.to_string()),
        );
    }
    dn
}

/// Signs `params` for `subject_key` with `issuer`, adding key ids, AIA and CRL points.
pub fn sign_with_issuer(
    params: &mut CertificateParams,
    subject_key: &PublicKey,
    issuer: &IssuerEntry,
) -> Result<rcgen::Certificate, EngineError> {
    let issuer_info = issuer_cert(issuer)?;
    let signer = HostSigner::open(&issuer.key_id)?;
    let config = urls()?;
    params.key_identifier_method = KeyIdMethod::PreSpecified(subject_key.key_id());
    params.use_authority_key_identifier_extension = true;
    if !config.issuing_certificates.is_empty() {
        params
            .custom_extensions
            .push(aia_extension(&config.issuing_certificates));
    }
    if !config.crl_distribution_points.is_empty() {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: config.crl_distribution_points.clone(),
        }];
    }
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = issuer_info.subject.clone();
    issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(
        issuer_info
            .subject_key_id
            .clone()
            .unwrap_or_else(|| issuer_info.key.key_id()),
    );
    issuer_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let rcgen_issuer = rcgen::Issuer::new(issuer_params, signer);
    params
        .signed_by(subject_key, &rcgen_issuer)
        .map_err(|e| EngineError::Internal(format!("signing failed: {e}")))
}

/// The TTL decision shared by issuance and CA signing: (not_after, warnings).
pub fn not_after(
    requested_ttl: Option<u64>,
    requested_not_after: Option<&str>,
    default_ttl: u64,
    max_ttl: u64,
    issuer: &IssuerEntry,
) -> Result<(i64, Vec<String>), EngineError> {
    let now = i64::try_from(coffer_sdk::time::unix_now()?).unwrap_or(i64::MAX);
    let mut warnings = Vec::new();
    let mut end = match (
        requested_ttl.filter(|t| *t > 0),
        requested_not_after.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "Either ttl or not_after should be provided. Both should not be provided in the same request.",
            ));
        }
        (_, Some(text)) => {
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| invalid(format!("not_after {text:?} is not an RFC 3339 time")))?
                .unix_timestamp()
        }
        (ttl, None) => {
            let mut ttl = ttl
                .unwrap_or(default_ttl)
                .min(u64::try_from(i64::MAX).unwrap_or(u64::MAX));
            if max_ttl > 0 && ttl > max_ttl {
                warnings.push(format!(
                    "TTL {:?} is longer than permitted maxTTL {:?}, so maxTTL is being used",
                    crate::go_duration(ttl),
                    crate::go_duration(max_ttl)
                ));
                ttl = max_ttl;
            }
            now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
        }
    };
    if end <= now {
        return Err(invalid(format!(
            "cannot satisfy request, as the certificate's notAfter of {} is not in the future",
            rfc3339(end)
        )));
    }
    let issuer_end = issuer_cert(issuer)?.not_after;
    if end > issuer_end {
        match issuer.leaf_not_after_behavior.as_str() {
            "truncate" => end = issuer_end,
            "permit" => {}
            _ => {
                return Err(invalid(format!(
                    "cannot satisfy request, as TTL would result in notAfter of {} that is beyond the expiration of the CA certificate at {}",
                    rfc3339(end),
                    rfc3339(issuer_end)
                )));
            }
        }
    }
    Ok((end, warnings))
}

/// `issue`, `sign` and `sign-verbatim`.
pub fn issue(
    mode: Mode,
    role_name: Option<&str>,
    issuer_ref: Option<&str>,
    req: &Request,
) -> Result<Response, EngineError> {
    let role: Role = match role_name {
        Some(name) => load(&format!("role/{name}"))?
            .ok_or_else(|| invalid(format!("unknown role: {name}")))?,
        None => serde_json::from_value(role_json_defaults())
            .map_err(|e| EngineError::Internal(e.to_string()))?,
    };
    let issuer = resolve_issuer(issuer_ref.unwrap_or(&role.issuer_ref))?;
    let mut warnings = Vec::new();
    let exclude_cn = req.bool("exclude_cn_from_sans").unwrap_or(false);
    let csr = match mode {
        Mode::Issue => None,
        _ => Some(verified_csr(
            req.string("csr")
                .filter(|c| !c.is_empty())
                .ok_or_else(|| invalid("the csr field is required"))?,
        )?),
    };
    // Names: from the request, or from the CSR when the role says so (Vault's defaults).
    let request_cn = req.string("common_name").unwrap_or_default().to_string();
    let (common_name, mut dns, mut ips, uris) = match (&csr, mode) {
        (Some(csr), Mode::Verbatim) => (
            csr.common_name.clone(),
            [csr.dns_names.clone(), csr.emails.clone()].concat(),
            csr.ips.clone(),
            csr.uris.clone(),
        ),
        (Some(csr), _) => {
            let cn = if role.use_csr_common_name {
                csr.common_name.clone()
            } else {
                request_cn.clone()
            };
            if role.use_csr_sans {
                if !strings(req, "alt_names").is_empty() || !strings(req, "ip_sans").is_empty() {
                    warnings.push("the role takes SANs from the CSR (use_csr_sans); alt_names and ip_sans in the request were ignored".to_string());
                }
                (
                    cn,
                    [csr.dns_names.clone(), csr.emails.clone()].concat(),
                    csr.ips.clone(),
                    csr.uris.clone(),
                )
            } else {
                (
                    cn,
                    strings(req, "alt_names"),
                    parse_ips(&strings(req, "ip_sans"))?,
                    strings(req, "uri_sans"),
                )
            }
        }
        (None, _) => (
            request_cn.clone(),
            strings(req, "alt_names"),
            parse_ips(&strings(req, "ip_sans"))?,
            strings(req, "uri_sans"),
        ),
    };
    if !strings(req, "other_sans").is_empty() || !strings(req, "user_ids").is_empty() {
        return Err(invalid("other_sans and user_ids are not supported"));
    }
    if mode != Mode::Verbatim {
        if common_name.is_empty() && role.require_cn {
            return Err(invalid(
                "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false",
            ));
        }
        let policy = NamePolicy {
            allowed_domains: role.allowed_domains.clone(),
            allow_bare_domains: role.allow_bare_domains.unwrap_or(true),
            allow_subdomains: role.allow_subdomains,
            allow_glob_domains: role.allow_glob_domains,
            allow_localhost: role.allow_localhost,
            allow_any_name: role.allow_any_name,
            enforce_hostnames: role.enforce_hostnames,
            allow_wildcard_certificates: role.allow_wildcard_certificates,
        };
        if !common_name.is_empty() && !policy.allows(&common_name) {
            return Err(invalid(format!(
                "common name {common_name} not allowed by this role"
            )));
        }
        for name in &dns {
            if !policy.allows(name) {
                let what = if name.contains('@') {
                    "email address"
                } else {
                    "subject alternate name"
                };
                return Err(invalid(format!("{what} {name} not allowed by this role")));
            }
        }
        if !ips.is_empty() && !role.allow_ip_sans {
            return Err(invalid(format!(
                "IP Subject Alternative Names are not allowed in this role, but was provided via {}",
                if csr.is_some() { "CSR" } else { "the API" }
            )));
        }
        for uri in &uris {
            if !role
                .allowed_uri_sans
                .iter()
                .any(|pattern| crate::glob(pattern, uri))
            {
                return Err(invalid(format!(
                    "URI Subject Alternative Names are not allowed in this role, but were provided via {}",
                    if csr.is_some() { "CSR" } else { "the API" }
                )));
            }
        }
    }
    if !exclude_cn
        && !common_name.is_empty()
        && !dns.contains(&common_name)
        && (crate::policy::is_hostname(&common_name) || common_name.contains('@'))
    {
        dns.insert(0, common_name.clone());
    }
    ips.dedup();
    if dns.len() + ips.len() + uris.len() > MAX_SANS {
        return Err(invalid(format!(
            "at most {MAX_SANS} subject alternative names per certificate"
        )));
    }
    // The key: generated in the host (issue) or the CSR's (sign).
    let (subject_key, private) = match &csr {
        Some(csr) => {
            if mode == Mode::Sign && role.key_type != "any" {
                let (_, wanted) = key_kind(&role.key_type, role.key_bits)?;
                if csr.key.family.type_name() != role.key_type {
                    return Err(invalid(format!(
                        "role requires keys of type {}",
                        role.key_type
                    )));
                }
                if csr.key.family.bits() < wanted.bits() {
                    return Err(invalid(format!(
                        "role requires a minimum of a {}-bit key, but CSR's key is {} bits",
                        wanted.bits(),
                        csr.key.family.bits()
                    )));
                }
            }
            (csr.key.clone(), None)
        }
        None => {
            let (key_type, bits) = if role.key_type == "any" {
                let requested = req.string("key_type").filter(|t| !t.is_empty()).ok_or_else(|| invalid("role key type \"any\" not allowed for issuing certificates without providing key_type and/or key_bits request parameters"))?;
                (requested.to_string(), req.int("key_bits").unwrap_or(0))
            } else {
                if req.string("key_type").is_some_and(|t| !t.is_empty()) {
                    warnings.push("key_type and key_bits are set by the role; the request's values were ignored".to_string());
                }
                (role.key_type.clone(), role.key_bits)
            };
            let (kind, family) = key_kind(&key_type, bits)?;
            let key = HostSigner::new(keys::generate_transient(kind).map_err(host)?)?;
            let pkcs8 = key.export()?;
            (key.public.clone(), Some((pkcs8, family)))
        }
    };
    let (end, ttl_warnings) = not_after(
        req.duration("ttl"),
        req.string("not_after"),
        if role.ttl > 0 {
            role.ttl
        } else {
            req.mount_default_ttl
        },
        if role.max_ttl > 0 {
            role.max_ttl.min(req.mount_max_ttl)
        } else {
            req.mount_max_ttl
        },
        &issuer,
    )?;
    warnings.extend(ttl_warnings);
    let now = i64::try_from(coffer_sdk::time::unix_now()?).unwrap_or(i64::MAX);
    let serial = new_serial()?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let not_before =
        now - i64::try_from(role.not_before_duration).unwrap_or(DEFAULT_NOT_BEFORE as i64);
    params.not_before = time_of(not_before)?;
    params.not_after = time_of(end)?;
    params.distinguished_name = match (&csr, mode) {
        (Some(csr), Mode::Verbatim) => csr.subject.clone(),
        _ => subject(
            &common_name,
            &[
                (&DnType::OrganizationalUnitName, &role.ou),
                (&DnType::OrganizationName, &role.organization),
                (&DnType::CountryName, &role.country),
                (&DnType::LocalityName, &role.locality),
                (&DnType::StateOrProvinceName, &role.province),
            ],
        ),
    };
    params.is_ca = if role.basic_constraints_valid_for_non_ca {
        IsCa::ExplicitNoCa
    } else {
        IsCa::NoCa
    };
    for name in &dns {
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|_| invalid(format!("{name:?} is not an ASCII name")))?;
        params.subject_alt_names.push(if name.contains('@') {
            SanType::Rfc822Name(ia5)
        } else {
            SanType::DnsName(ia5)
        });
    }
    for ip in &ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for uri in &uris {
        params.subject_alt_names.push(SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|_| invalid(format!("{uri:?} is not an ASCII URI")))?,
        ));
    }
    let (usages, ext_usages) = if mode == Mode::Verbatim {
        (strings(req, "key_usage"), strings(req, "ext_key_usage"))
    } else {
        (role.key_usage.clone(), role.ext_key_usage.clone())
    };
    params.key_usages = usages
        .iter()
        .map(|u| key_usage(u))
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = ext_usages
        .iter()
        .map(|u| ext_key_usage(u))
        .collect::<Result<_, _>>()?;
    let flags = [
        (
            role.server_flag || mode == Mode::Verbatim && ext_usages.is_empty(),
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            role.client_flag || mode == Mode::Verbatim && ext_usages.is_empty(),
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        (role.code_signing_flag, ExtendedKeyUsagePurpose::CodeSigning),
        (
            role.email_protection_flag,
            ExtendedKeyUsagePurpose::EmailProtection,
        ),
    ];
    for (on, purpose) in flags {
        if on && !params.extended_key_usages.contains(&purpose) {
            params.extended_key_usages.push(purpose);
        }
    }
    let certificate = sign_with_issuer(&mut params, &subject_key, &issuer)?;
    let cert_pem = pem("CERTIFICATE", certificate.der());
    let serial_text = serial_colon(&serial);
    let serial_storage =
        serial_key(&serial_text).ok_or_else(|| EngineError::Internal("bad serial".to_string()))?;
    if !role.no_store {
        storage::put_json(
            &format!("certs/{serial_storage}"),
            &CertEntry {
                certificate: cert_pem.clone(),
                issuer_id: issuer.id.clone(),
                not_after: end,
                revoked_at: None,
            },
        )?;
    }
    let private = match private {
        Some((pkcs8, family)) => {
            let want_pkcs8 = req.string("private_key_format") == Some("pkcs8");
            let (key_pem, key_der) =
                private_key_pem(&pkcs8, family, want_pkcs8).map_err(EngineError::Internal)?;
            Some((key_pem, key_der, family.type_name()))
        }
        None => None,
    };
    let data = certificate_data(
        &cert_pem,
        certificate.der(),
        &serial_text,
        end,
        &issuer,
        req,
        private,
    )?;
    let mut response = respond::data(data);
    response.warnings = warnings;
    // The inventory line of the audit log: no secret, so in clear.
    response.audit_facts = Some(
        json!({ "certificate": {
            "serial_number": serial_text,
            "subject": subject_text(&params.distinguished_name),
            "dns_names": dns,
            "ip_addresses": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "uris": uris,
            "not_before": rfc3339(not_before),
            "not_after": rfc3339(end),
            "issuer_id": issuer.id,
            "key_type": subject_key.family.type_name(),
            "key_bits": subject_key.family.bits(),
        }})
        .to_string(),
    );
    if role.generate_lease && !role.no_store {
        response.lease = Some(LeaseRequest {
            secret_type: crate::CERT_SECRET.to_string(),
            ttl: u64::try_from(end - now).unwrap_or(0),
            max_ttl: 0,
            renewable: false,
            internal_data: json!({ "serial_number": serial_text }).to_string(),
        });
    }
    Ok(response)
}

fn role_json_defaults() -> Value {
    json!({
        "issuer_ref": "default", "ttl": 0, "max_ttl": 0, "allow_localhost": true, "allowed_domains": [],
        "allow_bare_domains": null, "allow_subdomains": false, "allow_glob_domains": false,
        "allow_wildcard_certificates": true, "allow_any_name": true, "enforce_hostnames": false, "allow_ip_sans": true,
        "allowed_uri_sans": ["*"], "server_flag": false, "client_flag": false, "code_signing_flag": false,
        "email_protection_flag": false, "key_type": "any", "key_bits": 0, "signature_bits": 0, "use_pss": false,
        "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"], "ext_key_usage": [],
        "use_csr_common_name": true, "use_csr_sans": true, "ou": [], "organization": [], "country": [],
        "locality": [], "province": [], "street_address": [], "postal_code": [], "generate_lease": false,
        "no_store": false, "require_cn": false, "basic_constraints_valid_for_non_ca": false, "not_before_duration": 30,
    })
}

fn parse_ips(values: &[String]) -> Result<Vec<IpAddr>, EngineError> {
    values
        .iter()
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(format!("{v:?} is not an IP address")))
        })
        .collect()
}

/// The data of an issue/sign response in the requested `format`.
pub fn certificate_data(
    cert_pem: &str,
    cert_der: &[u8],
    serial: &str,
    not_after: i64,
    issuer: &IssuerEntry,
    req: &Request,
    private: Option<(String, Vec<u8>, &str)>,
) -> Result<Value, EngineError> {
    let format = req.string("format").unwrap_or("pem");
    let remove_roots = req.bool("remove_roots_from_chain").unwrap_or(false);
    let mut chain: Vec<String> = issuer.chain.clone();
    if remove_roots && chain.len() > 1 {
        chain.pop();
    } else if remove_roots
        && chain.len() == 1
        && issuer_cert(issuer).map(|c| c.is_ca).unwrap_or(false)
    {
        // A self-signed issuer is itself the root.
        chain.clear();
    }
    let der_of = |text: &str| -> String {
        crate::x509::pem_blocks(text, "CERTIFICATE")
            .ok()
            .and_then(|b| b.into_iter().next())
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .unwrap_or_default()
    };
    let mut data = match format {
        "pem" => {
            json!({ "certificate": cert_pem, "issuing_ca": issuer.certificate, "ca_chain": chain })
        }
        "pem_bundle" => {
            let mut bundle = Vec::new();
            if let Some((key_pem, _, _)) = &private {
                bundle.push(key_pem.clone());
            }
            bundle.push(cert_pem.to_string());
            bundle.extend(chain.iter().cloned());
            json!({ "certificate": bundle.join("\n"), "issuing_ca": issuer.certificate, "ca_chain": chain })
        }
        "der" => json!({
            "certificate": base64::engine::general_purpose::STANDARD.encode(cert_der),
            "issuing_ca": der_of(&issuer.certificate),
            "ca_chain": chain.iter().map(|c| der_of(c)).collect::<Vec<_>>(),
        }),
        other => {
            return Err(invalid(format!(
                "unknown format {other:?}: use pem, der or pem_bundle"
            )));
        }
    };
    if let (Some(object), Some((key_pem, key_der, key_type))) = (data.as_object_mut(), private) {
        let key = if format == "der" {
            base64::engine::general_purpose::STANDARD.encode(key_der)
        } else {
            key_pem
        };
        object.insert("private_key".to_string(), json!(key));
        object.insert("private_key_type".to_string(), json!(key_type));
    }
    if let Some(object) = data.as_object_mut() {
        object.insert("serial_number".to_string(), json!(serial));
        object.insert("expiration".to_string(), json!(not_after));
    }
    Ok(data)
}

/// CA certificate params shared by root generation and intermediate signing.
pub fn ca_params(
    dn: DistinguishedName,
    max_path_length: i64,
    serial: &[u8],
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, EngineError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = time_of(not_before)?;
    params.not_after = time_of(not_after)?;
    params.is_ca = IsCa::Ca(match u8::try_from(max_path_length) {
        Ok(n) => BasicConstraints::Constrained(n),
        Err(_) => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}
