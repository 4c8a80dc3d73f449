//! Kubernetes auth engine, wire-compatible with Vault's `kubernetes` auth method
//! (`vault-plugin-auth-kubernetes`): a pod logs in with its service-account JWT and a role
//! name, and gets a token with the role's policies.
//!
//! Paths: `config` (the Kubernetes API and how to trust it), `role/<name>` (which service
//! accounts may log in, and the `token_*` parameters of their tokens), `login`. A login
//! is checked as Vault checks it, in Vault's order: the JWT is parsed; its signature is
//! verified by the host against `pem_keys` when configured; `iss` when an issuer is
//! configured and validation is on; `aud` when the role names an audience; the service
//! account's name and namespace against the role's bindings; and then, always, the
//! Kubernetes TokenReview API (in [`review`]) must say the token is valid for that same
//! service account. The host mints the token; on renewal the role is checked again.
//!
//! What it must never do: return `token_reviewer_jwt`, or put it or a client's JWT into
//! an error or a log line.

mod jwt;
mod review;

use coffer_sdk::auth::{TokenParams, cidr_contains, token_fields};
use coffer_sdk::prelude::*;
use serde::{Deserialize, Serialize};

struct Kubernetes;

/// Where the config is stored.
const CONFIG_KEY: &str = "config";
/// Where roles are stored, by lower-cased name.
const ROLE_PREFIX: &str = "role/";
/// `alias_name_source` values, the first the default.
const ALIAS_SOURCES: [&str; 2] = ["serviceaccount_uid", "serviceaccount_name"];
/// Longest `kubernetes_ca_cert` or `token_reviewer_jwt` stored.
const MAX_CONFIG_VALUE_BYTES: usize = 64 << 10;
/// Most `pem_keys`.
const MAX_PEM_KEYS: usize = 32;

/// `config`, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    kubernetes_host: String,
    kubernetes_ca_cert: String,
    token_reviewer_jwt: String,
    pem_keys: Vec<String>,
    issuer: String,
    disable_iss_validation: bool,
    disable_local_ca_jwt: bool,
}

/// `role/<name>`, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Role {
    bound_service_account_names: Vec<String>,
    bound_service_account_namespaces: Vec<String>,
    audience: String,
    alias_name_source: String,
    #[serde(flatten)]
    token: TokenParams,
}

impl Role {
    /// Vault's binding checks, with its messages.
    fn admits(&self, name: &str, namespace: &str) -> Result<(), EngineError> {
        let names = &self.bound_service_account_names;
        let any_name = names.len() == 1 && names.first().is_some_and(|n| n == "*");
        if !any_name && !names.iter().any(|pattern| coffer_sdk::glob(pattern, name)) {
            return Err(EngineError::PermissionDenied(
                "service account name not authorized".to_string(),
            ));
        }
        let namespaces = &self.bound_service_account_namespaces;
        let any_namespace = namespaces.first().is_some_and(|n| n == "*");
        if !any_namespace
            && !namespaces
                .iter()
                .any(|pattern| coffer_sdk::glob(pattern, namespace))
        {
            return Err(EngineError::PermissionDenied(
                "namespace not authorized".to_string(),
            ));
        }
        Ok(())
    }
}

/// What a login keeps with its token, for renewal.
#[derive(Serialize, Deserialize)]
struct LoginData {
    role: String,
    service_account_name: String,
    service_account_namespace: String,
}

fn routes() -> SpecBuilder {
    spec("kubernetes")
        .help("Logs in Kubernetes service accounts with their JWTs, checked by the TokenReview API.")
        .unauthenticated("login")
        .path(
            path("config")
                .synopsis("Configures the Kubernetes API and the keys that verify service-account JWTs.")
                .field(Field::https_url(
                    "kubernetes_host",
                    "URL of the Kubernetes API server (https://host[:port]); Coffer may reach it from this mount.",
                ))
                .field(Field::string(
                    "kubernetes_ca_cert",
                    "PEM CA certificate(s) to trust for the API server; empty = the system roots.",
                ))
                .field(Field::string(
                    "token_reviewer_jwt",
                    "Bearer token for the TokenReview API; empty = the logging-in JWT itself. Never returned.",
                ))
                .field(Field::comma_strings(
                    "pem_keys",
                    "PEM public keys or certificates that verify service-account JWT signatures.",
                ))
                .field(Field::string("issuer", "Expected iss claim (deprecated)."))
                .field(Field::bool(
                    "disable_iss_validation",
                    "Skip the iss check (deprecated; default true).",
                ))
                .field(Field::bool(
                    "disable_local_ca_jwt",
                    "Accepted for compatibility: Coffer never reads a pod's local CA or token.",
                ))
                .on(Operation::Read, read_config)
                .on(Operation::Update, write_config),
        )
        .path(
            path("role/?")
                .synopsis("Lists the roles.")
                .on(Operation::List, list_roles),
        )
        .path(
            path(r"role/(?P<name>\w(([\w\-.]+)?\w)?)")
                .synopsis("Binds service accounts to token parameters.")
                .field(Field::string("name", "Name of the role."))
                .field(Field::comma_strings(
                    "bound_service_account_names",
                    "Service account names allowed to log in (globs; \"*\" = any).",
                ))
                .field(Field::comma_strings(
                    "bound_service_account_namespaces",
                    "Namespaces allowed to log in (globs; \"*\" = any).",
                ))
                .field(Field::string("audience", "Audience the JWT must carry."))
                .field(Field::string(
                    "alias_name_source",
                    "serviceaccount_uid (default) or serviceaccount_name.",
                ))
                .fields(token_fields())
                .field(Field::duration("ttl", "Deprecated: use token_ttl."))
                .field(Field::duration("max_ttl", "Deprecated: use token_max_ttl."))
                .field(Field::duration("period", "Deprecated: use token_period."))
                .field(Field::int("num_uses", "Deprecated: use token_num_uses."))
                .field(Field::comma_strings(
                    "bound_cidrs",
                    "Deprecated: use token_bound_cidrs.",
                ))
                .on(Operation::Read, read_role)
                .on(Operation::Create, write_role)
                .on(Operation::Update, write_role)
                .on(Operation::Delete, delete_role),
        )
        .path(
            path("login")
                .synopsis("Logs in with a service-account JWT.")
                .field(Field::string("role", "Name of the role to log in with."))
                .field(Field::string("jwt", "The service account's JWT."))
                .on(Operation::Update, login),
        )
}

impl Engine for Kubernetes {
    fn describe() -> BackendSpec {
        routes().build()
    }

    fn handle(req: Request) -> Result<Response, EngineError> {
        routes().dispatch(req)
    }

    /// A token renewal: the role must still exist and still admit the service account.
    fn renew(lease: LeaseRef) -> Result<(), EngineError> {
        if lease.secret_type != "token" {
            return Err(EngineError::Unsupported);
        }
        let data: LoginData = serde_json::from_str(&lease.internal_data).map_err(|_| {
            EngineError::Internal("failed to fetch role_name during renewal".to_string())
        })?;
        let Some(role) = role(&data.role)? else {
            return Err(EngineError::PermissionDenied(format!(
                "role {} does not exist during renewal",
                data.role
            )));
        };
        role.admits(&data.service_account_name, &data.service_account_namespace)
    }
}

coffer_sdk::engine!(Kubernetes);

fn config() -> Result<Option<Config>, EngineError> {
    storage::get_json(CONFIG_KEY)
}

fn read_config(_req: &Request) -> Result<Response, EngineError> {
    let config = config()?.ok_or_else(|| EngineError::NotFound(String::new()))?;
    Ok(respond::data(json!({
        "kubernetes_host": config.kubernetes_host,
        "kubernetes_ca_cert": config.kubernetes_ca_cert,
        "pem_keys": config.pem_keys,
        "issuer": config.issuer,
        "disable_iss_validation": config.disable_iss_validation,
        "disable_local_ca_jwt": config.disable_local_ca_jwt,
        "token_reviewer_jwt_set": !config.token_reviewer_jwt.is_empty(),
        "use_annotations_as_alias_metadata": false,
    })))
}

/// Replaces the config, as Vault does (fields not given take their defaults).
fn write_config(req: &Request) -> Result<Response, EngineError> {
    let host = req.string("kubernetes_host").unwrap_or_default().trim();
    if host.is_empty() {
        return Err(EngineError::InvalidRequest("no host provided".to_string()));
    }
    let ca = req.string("kubernetes_ca_cert").unwrap_or_default();
    if !ca.is_empty() && !ca.contains("-----BEGIN CERTIFICATE-----") {
        return Err(EngineError::InvalidRequest(
            "The provided CA PEM data contains no valid certificates".to_string(),
        ));
    }
    let reviewer = req.string("token_reviewer_jwt").unwrap_or_default();
    if ca.len() > MAX_CONFIG_VALUE_BYTES || reviewer.len() > MAX_CONFIG_VALUE_BYTES {
        return Err(EngineError::InvalidRequest(format!(
            "kubernetes_ca_cert and token_reviewer_jwt are limited to {MAX_CONFIG_VALUE_BYTES} bytes"
        )));
    }
    let pem_keys: Vec<String> = req
        .strings("pem_keys")
        .unwrap_or_default()
        .iter()
        .filter(|k| !k.trim().is_empty())
        .cloned()
        .collect();
    if pem_keys.len() > MAX_PEM_KEYS {
        return Err(EngineError::InvalidRequest(format!(
            "at most {MAX_PEM_KEYS} pem_keys"
        )));
    }
    jwt::public_keys(&pem_keys)?;
    let config = Config {
        kubernetes_host: host.to_string(),
        kubernetes_ca_cert: ca.to_string(),
        token_reviewer_jwt: reviewer.to_string(),
        pem_keys,
        issuer: req.string("issuer").unwrap_or_default().to_string(),
        disable_iss_validation: req.bool("disable_iss_validation").unwrap_or(true),
        disable_local_ca_jwt: req.bool("disable_local_ca_jwt").unwrap_or(false),
    };
    storage::put_json(CONFIG_KEY, &config)?;
    Ok(respond::empty())
}

fn role(name: &str) -> Result<Option<Role>, EngineError> {
    storage::get_json(&format!("{ROLE_PREFIX}{}", name.to_lowercase()))
}

fn list_roles(_req: &Request) -> Result<Response, EngineError> {
    respond::list(storage::list(ROLE_PREFIX)?)
}

fn read_role(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("name")?;
    let role = role(name)?.ok_or_else(|| EngineError::NotFound(String::new()))?;
    let mut data = role.token.to_json();
    data.insert(
        "bound_service_account_names".to_string(),
        json!(role.bound_service_account_names),
    );
    data.insert(
        "bound_service_account_namespaces".to_string(),
        json!(role.bound_service_account_namespaces),
    );
    data.insert(
        "bound_service_account_namespace_selector".to_string(),
        json!(""),
    );
    if !role.audience.is_empty() {
        data.insert("audience".to_string(), json!(role.audience));
    }
    data.insert(
        "alias_name_source".to_string(),
        json!(role.alias_name_source),
    );
    Ok(respond::data(Value::Object(data)))
}

/// Creates or updates a role with Vault's checks and messages.
fn write_role(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("name")?;
    let creating = req.operation == Operation::Create;
    let mut role = match role(name)? {
        Some(role) => role,
        None if creating => Role::default(),
        None => {
            return Err(EngineError::Internal(
                "role entry not found during update operation".to_string(),
            ));
        }
    };
    role.token.update(req)?;
    deprecated_token_fields(req, &mut role.token)?;
    let bad = |m: String| Err(EngineError::InvalidRequest(m));
    if let Some(names) = req.strings("bound_service_account_names") {
        role.bound_service_account_names = trimmed(names);
    }
    if role.bound_service_account_names.is_empty() {
        return bad("\"bound_service_account_names\" can not be empty".to_string());
    }
    if role.bound_service_account_names.len() > 1
        && role.bound_service_account_names.iter().any(|n| n == "*")
    {
        return bad("can not mix \"*\" with values".to_string());
    }
    if let Some(namespaces) = req.strings("bound_service_account_namespaces") {
        role.bound_service_account_namespaces = trimmed(namespaces);
    }
    if role.bound_service_account_namespaces.is_empty() {
        return bad("\"bound_service_account_namespaces\" can not be empty if \"bound_service_account_namespace_selector\" is not set".to_string());
    }
    if role.bound_service_account_namespaces.len() > 1
        && role
            .bound_service_account_namespaces
            .iter()
            .any(|n| n == "*")
    {
        return bad("can not mix \"*\" with values".to_string());
    }
    if let Some(audience) = req.string("audience") {
        role.audience = audience.to_string();
    }
    match req.string("alias_name_source") {
        Some(source) if !source.is_empty() => role.alias_name_source = source.to_string(),
        _ if role.alias_name_source.is_empty() => {
            role.alias_name_source = ALIAS_SOURCES[0].to_string();
        }
        _ => {}
    }
    if !ALIAS_SOURCES.contains(&role.alias_name_source.as_str()) {
        return bad(format!(
            "invalid alias_name_source, must be one of: {}",
            ALIAS_SOURCES.join(", ")
        ));
    }
    storage::put_json(&format!("{ROLE_PREFIX}{}", name.to_lowercase()), &role)?;
    let mut response = respond::empty();
    if role.audience.trim().is_empty() {
        response.warnings.push(format!(
            "Role {name} does not have an audience configured. While audiences are not required, consider specifying one if your use case would benefit from additional JWT claim verification."
        ));
    }
    Ok(response)
}

/// Vault's pre-`token_*` role fields, honoured when the new ones are not given.
fn deprecated_token_fields(req: &Request, token: &mut TokenParams) -> Result<(), EngineError> {
    if req.duration("token_ttl").is_none()
        && let Some(ttl) = req.duration("ttl")
    {
        token.token_ttl = ttl;
    }
    if req.duration("token_max_ttl").is_none()
        && let Some(ttl) = req.duration("max_ttl")
    {
        token.token_max_ttl = ttl;
    }
    if req.duration("token_period").is_none()
        && let Some(period) = req.duration("period")
    {
        token.token_period = period;
    }
    if req.int("token_num_uses").is_none()
        && let Some(uses) = req.int("num_uses")
    {
        token.token_num_uses = u64::try_from(uses)
            .map_err(|_| EngineError::InvalidRequest("num_uses cannot be negative".to_string()))?;
    }
    if req.strings("token_bound_cidrs").is_none()
        && let Some(cidrs) = req.strings("bound_cidrs")
    {
        token.token_bound_cidrs = trimmed(cidrs);
    }
    if token.token_max_ttl > 0 && token.token_ttl > token.token_max_ttl {
        return Err(EngineError::InvalidRequest(
            "token ttl should not be greater than token max ttl".to_string(),
        ));
    }
    Ok(())
}

fn trimmed(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn delete_role(req: &Request) -> Result<Response, EngineError> {
    let name = req.require_string("name")?;
    storage::delete(&format!("{ROLE_PREFIX}{}", name.to_lowercase()))?;
    Ok(respond::empty())
}

/// The service account a JWT claims to be: the projected token's `kubernetes.io` claim,
/// else the legacy secret-based token's flat claims.
struct ServiceAccount {
    name: String,
    namespace: String,
    uid: String,
    secret_name: String,
}

impl ServiceAccount {
    fn from_claims(claims: &serde_json::Map<String, Value>) -> Self {
        let text = |value: Option<&Value>| {
            value
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let legacy =
            |suffix: &str| text(claims.get(&format!("kubernetes.io/serviceaccount/{suffix}")));
        match claims.get("kubernetes.io") {
            Some(projected @ Value::Object(_)) => {
                let account = projected.get("serviceaccount");
                Self {
                    name: text(account.and_then(|a| a.get("name"))),
                    namespace: text(projected.get("namespace")),
                    uid: text(account.and_then(|a| a.get("uid"))),
                    secret_name: legacy("secret.name"),
                }
            }
            _ => Self {
                name: legacy("service-account.name"),
                namespace: legacy("namespace"),
                uid: legacy("service-account.uid"),
                secret_name: legacy("secret.name"),
            },
        }
    }
}

/// `login`: Vault's checks in Vault's order, then the token's parameters.
fn login(req: &Request) -> Result<Response, EngineError> {
    let missing = |name: &str| EngineError::InvalidRequest(format!("missing {name}"));
    let role_name = req
        .string("role")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| missing("role"))?;
    let token_text = req
        .string("jwt")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| missing("jwt"))?;
    let role = role(role_name)?
        .ok_or_else(|| EngineError::InvalidRequest(format!("invalid role name \"{role_name}\"")))?;
    if !role.token.token_bound_cidrs.is_empty()
        && !role
            .token
            .token_bound_cidrs
            .iter()
            .any(|cidr| cidr_contains(cidr, &req.remote_address))
    {
        return Err(EngineError::PermissionDenied(
            "permission denied".to_string(),
        ));
    }
    let config = config()?
        .ok_or_else(|| EngineError::Internal("could not load backend configuration".to_string()))?;
    let token = jwt::Token::parse(token_text)?;
    token.check_algorithm()?;
    if !config.pem_keys.is_empty() {
        let keys = jwt::public_keys(&config.pem_keys)?;
        if !token.verified_by(&keys)? {
            log::debug("login unauthorized: the JWT's signature matches no pem_keys");
            return Err(EngineError::PermissionDenied(
                "permission denied".to_string(),
            ));
        }
    }
    let now = i64::try_from(time::unix_now()?).unwrap_or(i64::MAX);
    let issuer = (!config.disable_iss_validation && !config.issuer.is_empty())
        .then_some(config.issuer.as_str());
    let audience = (!role.audience.is_empty()).then_some(role.audience.as_str());
    token.check_claims(now, issuer, audience)?;
    let account = ServiceAccount::from_claims(&token.claims);
    role.admits(&account.name, &account.namespace)?;
    let alias_name = match role.alias_name_source.as_str() {
        "serviceaccount_name" if !account.namespace.is_empty() && !account.name.is_empty() => {
            format!("{}/{}", account.namespace, account.name)
        }
        "serviceaccount_name" => {
            return Err(EngineError::InvalidRequest(
                "service account namespace and name must be set".to_string(),
            ));
        }
        _ if account.uid.is_empty() => {
            return Err(EngineError::InvalidRequest(
                "could not parse UID from claims".to_string(),
            ));
        }
        _ => account.uid.clone(),
    };
    let audiences = match audience {
        Some(audience) => vec![audience.to_string()],
        None => token.audiences(),
    };
    let reviewed = review::review(&config, token_text, &audiences)?;
    if let Err(reason) = reviewed.matches(&account.name, &account.namespace, &account.uid) {
        log::debug(&format!("login unauthorized: {reason}"));
        return Err(EngineError::PermissionDenied(
            "permission denied".to_string(),
        ));
    }
    let role_key = role_name.to_lowercase();
    let mut auth = role.token.auth();
    auth.metadata = vec![
        ("role".to_string(), role_name.to_string()),
        ("service_account_name".to_string(), account.name.clone()),
        (
            "service_account_namespace".to_string(),
            account.namespace.clone(),
        ),
        (
            "service_account_secret_name".to_string(),
            account.secret_name.clone(),
        ),
        ("service_account_uid".to_string(), account.uid.clone()),
    ];
    auth.display_name = format!("{}-{}", account.namespace, account.name);
    auth.alias_name = alias_name;
    auth.internal_data = serde_json::to_string(&LoginData {
        role: role_key,
        service_account_name: account.name,
        service_account_namespace: account.namespace,
    })
    .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(respond::login(auth))
}
