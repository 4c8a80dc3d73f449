//! The database secrets engine (`postgresql-database-plugin`), as a WASM component.
//!
//! Paths (Vault's): `config/<name>`, `reset/<name>`, `rotate-root/<name>`, `roles/<name>`,
//! `creds/<role>`, `static-roles/<name>`, `static-creds/<name>`, `rotate-role/<name>`.
//! Storage (the mount's own view): `config/<name>`, `role/<name>`, `static-role/<name>`,
//! and `lock/static-role/<name>/<id>` while a static role is being changed ([`lock`]).
//!
//! Crash safety: a write-ahead entry is stored before `CREATE ROLE`; the host deletes it
//! only after the lease is durable, and rolls the user back otherwise. Password changes
//! (root rotation, static roles) persist the new password as *pending* before the
//! `ALTER ROLE`, and a later connection failure falls back to it, so a crash between the
//! two steps cannot lock Coffer out.

pub mod lock;
pub mod postgres;
pub mod template;

use coffer_sdk::serde_json::{self, Value, json};
use coffer_sdk::{
    BackendSpec, Engine, EngineError, Field, FieldExt, FieldSchema, FieldValue, Fields, Handler,
    LeaseRef, LeaseRequest, Operation, PathBuilder, Request, Response, SpecBuilder, path, respond,
    spec, storage,
};
use serde::{Deserialize, Serialize};

use crate::postgres::{DEFAULT_RENEW, DEFAULT_ROTATION, Database, sql_error};
use crate::template::{
    DEFAULT_MAX_OPEN_CONNECTIONS, USERNAME_RANDOM_CHARS, base62_from, check_username,
    check_username_template, default_username, escape_url_component, is_sql_safe_name,
    password_from, pg_timestamp, render_username, role_allowed, with_pool_settings,
};

/// The only plugin this engine implements.
const PLUGIN_NAME: &str = "postgresql-database-plugin";
/// Secret type of dynamic credentials.
const CREDS: &str = "creds";
/// Extra seconds added to `{{expiration}}` (Vault adds 5).
const EXPIRATION_GRACE: u64 = 5;
/// Shortest static-role rotation period (Vault's minimum).
const MIN_ROTATION_PERIOD: u64 = 5;
/// Names of configs and roles.
const NAME: &str = "[A-Za-z0-9_.-]+";

/// A connection (`config/<name>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DbConfig {
    plugin_name: String,
    connection_url: String,
    username: String,
    password: String,
    /// A new root password persisted before `ALTER ROLE`; promoted when it is in force.
    #[serde(default)]
    pending_password: Option<String>,
    allowed_roles: Vec<String>,
    verify_connection: bool,
    max_open_connections: i64,
    max_idle_connections: i64,
    max_connection_lifetime: u64,
    username_template: String,
    password_policy: String,
    root_rotation_statements: Vec<String>,
    disable_escaping: bool,
    password_authentication: String,
}

/// A dynamic role (`roles/<name>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Role {
    db_name: String,
    creation_statements: Vec<String>,
    revocation_statements: Vec<String>,
    rollback_statements: Vec<String>,
    renew_statements: Vec<String>,
    default_ttl: u64,
    max_ttl: u64,
    credential_type: String,
}

/// A static role (`static-roles/<name>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StaticRole {
    db_name: String,
    username: String,
    rotation_period: u64,
    rotation_statements: Vec<String>,
    credential_type: String,
    password: String,
    #[serde(default)]
    pending_password: Option<String>,
    last_rotation: u64,
}

/// Engine data kept with each lease.
#[derive(Serialize, Deserialize)]
struct LeaseData {
    username: String,
    role: String,
    db_name: String,
    revocation_statements: Vec<String>,
    renew_statements: Vec<String>,
}

/// The write-ahead entry written before `CREATE ROLE`.
#[derive(Serialize, Deserialize)]
struct CreateWal {
    db_name: String,
    username: String,
}

fn random_bytes(n: usize) -> Result<Vec<u8>, EngineError> {
    coffer_sdk::random::bytes(n)
}

fn new_password() -> Result<String, EngineError> {
    loop {
        if let Some(password) = password_from(&random_bytes(template::PASSWORD_LENGTH)?) {
            return Ok(password);
        }
    }
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::InvalidRequest(message.into())
}

fn named(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}

fn load<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, EngineError> {
    storage::get_json(key)
}

fn config_of(name: &str) -> Result<DbConfig, EngineError> {
    load(&named("config", name))?.ok_or_else(|| {
        invalid(format!(
            "no database config named {name:?}; write database/config/{name} first"
        ))
    })
}

fn dsn(config: &DbConfig, password: &str) -> String {
    let (user, pass) = if config.disable_escaping {
        (config.username.clone(), password.to_string())
    } else {
        (
            escape_url_component(&config.username),
            escape_url_component(password),
        )
    };
    with_pool_settings(
        template::render(
            &config.connection_url,
            &[("username", &user), ("password", &pass)],
        ),
        config.max_open_connections,
        config.max_idle_connections,
        config.max_connection_lifetime,
    )
}

fn pool_size(config: &DbConfig) -> u32 {
    u32::try_from(config.max_open_connections).unwrap_or(0)
}

/// Opens the connection named `db_name`, falling back to (and promoting) a pending root
/// password left by an interrupted rotation.
fn open(db_name: &str, config: &mut DbConfig) -> Result<Database, EngineError> {
    match Database::open(&dsn(config, &config.password), pool_size(config)) {
        Ok(database) => Ok(database),
        Err(first) => {
            let Some(pending) = config.pending_password.clone() else {
                return Err(sql_error(first));
            };
            let database = Database::open(&dsn(config, &pending), pool_size(config))
                .map_err(|_| sql_error(first))?;
            coffer_sdk::log::warn(
                "a pending root password from an interrupted rotation is in force; promoting it",
            );
            config.password = pending;
            config.pending_password = None;
            storage::put_json(&named("config", db_name), config)?;
            Ok(database)
        }
    }
}

/// What `{{password}}` becomes: the password, or its SCRAM verifier (computed by the host).
fn password_for_statements(config: &DbConfig, password: &str) -> Result<String, EngineError> {
    if config.password_authentication == "scram-sha-256" {
        coffer_sdk::sql::scram_sha256_verifier(password).map_err(sql_error)
    } else {
        Ok(password.to_string())
    }
}

fn name_field() -> FieldSchema {
    Field::string("name", "Name of the item.").audit_clear()
}

fn ttl_fields() -> Vec<FieldSchema> {
    vec![
        Field::duration(
            "default_ttl",
            "Default TTL of credentials (0: the mount's).",
        ),
        Field::duration("max_ttl", "Maximum TTL of credentials (0: the mount's)."),
    ]
}

fn crud(pattern: &str, read: Handler, write: Handler, delete: Handler) -> PathBuilder {
    path(&pattern.replace("NAME", NAME))
        .field(name_field())
        .on(Operation::Read, read)
        // Create and update share the writer; with read bound too, the host's existence
        // check tells a policy's create from its update.
        .on(Operation::Create, write)
        .on(Operation::Update, write)
        .on(Operation::Delete, delete)
}

/// The `name` captured from the path.
fn name_of(req: &Request) -> String {
    req.string("name").unwrap_or_default().to_string()
}

fn list_configs(_: &Request) -> Result<Response, EngineError> {
    respond::list(storage::list("config/")?)
}

fn read_config_at(req: &Request) -> Result<Response, EngineError> {
    read_config(&name_of(req))
}

fn write_config_at(req: &Request) -> Result<Response, EngineError> {
    write_config(&name_of(req), req)
}

fn delete_config(req: &Request) -> Result<Response, EngineError> {
    storage::delete(&named("config", &name_of(req)))?;
    Ok(respond::empty())
}

fn reset_connection(req: &Request) -> Result<Response, EngineError> {
    let name = name_of(req);
    let mut config = config_of(&name)?;
    open(&name, &mut config)?.ping()?;
    Ok(respond::empty())
}

fn rotate_root_at(req: &Request) -> Result<Response, EngineError> {
    rotate_root(&name_of(req))
}

fn list_roles(_: &Request) -> Result<Response, EngineError> {
    respond::list(storage::list("role/")?)
}

fn read_role(req: &Request) -> Result<Response, EngineError> {
    let name = name_of(req);
    let role: Role = load(&named("role", &name))?
        .ok_or_else(|| EngineError::NotFound(format!("no role named {name:?}")))?;
    Ok(respond::data(role_json(&role)))
}

fn write_role_at(req: &Request) -> Result<Response, EngineError> {
    write_role(&name_of(req), req)
}

fn delete_role(req: &Request) -> Result<Response, EngineError> {
    storage::delete(&named("role", &name_of(req)))?;
    Ok(respond::empty())
}

fn issue_creds(req: &Request) -> Result<Response, EngineError> {
    creds(&name_of(req), req)
}

fn list_static_roles(_: &Request) -> Result<Response, EngineError> {
    respond::list(storage::list("static-role/")?)
}

fn read_static_role(req: &Request) -> Result<Response, EngineError> {
    let name = name_of(req);
    let role: StaticRole = load(&named("static-role", &name))?
        .ok_or_else(|| EngineError::NotFound(format!("no static role named {name:?}")))?;
    Ok(respond::data(json!({
        "db_name": role.db_name, "username": role.username, "rotation_period": role.rotation_period,
        "rotation_statements": role.rotation_statements, "credential_type": role.credential_type,
        "last_vault_rotation": coffer_sdk::time::rfc3339(role.last_rotation),
    })))
}

fn write_static_role_at(req: &Request) -> Result<Response, EngineError> {
    let name = name_of(req);
    static_role_locked(&name, || write_static_role(&name, req))
}

fn delete_static_role(req: &Request) -> Result<Response, EngineError> {
    let name = name_of(req);
    static_role_locked(&name, || {
        storage::delete(&named("static-role", &name))?;
        Ok(respond::empty())
    })
}

fn read_static_creds(req: &Request) -> Result<Response, EngineError> {
    static_creds(&name_of(req))
}

fn rotate_static_role(req: &Request) -> Result<Response, EngineError> {
    let name = name_of(req);
    static_role_locked(&name, || {
        let mut role: StaticRole = load(&named("static-role", &name))?
            .ok_or_else(|| invalid(format!("unknown static role: {name}")))?;
        rotate_static(&name, &mut role)?;
        Ok(respond::empty())
    })
}

struct DatabaseEngine;

/// The path table with its handlers: what `describe` reports is what `handle` routes.
fn routes() -> SpecBuilder {
    spec("database")
        .help("Dynamic and static PostgreSQL credentials.")
        .secret(CREDS, "A PostgreSQL user that exists for the lease's TTL.")
        .path(
            path("config/?")
                .on(Operation::List, list_configs)
                .synopsis("List connections."),
        )
        .path(
            crud(
                "config/(?P<name>NAME)",
                read_config_at,
                write_config_at,
                delete_config,
            )
            .field(Field::string(
                "plugin_name",
                "Must be postgresql-database-plugin.",
            ))
            .field(Field::string("plugin_version", "Ignored."))
            .field(
                Field::bool("verify_connection", "Connect before saving.")
                    .default(FieldValue::Bool(true)),
            )
            .field(Field::comma_strings(
                "allowed_roles",
                "Roles that may use this connection; globs allowed.",
            ))
            .field(Field::strings(
                "root_rotation_statements",
                "Statements for rotate-root.",
            ))
            .field(Field::string(
                "password_policy",
                "Not supported; leave empty.",
            ))
            .field(Field::sql_dsn(
                "connection_url",
                "PostgreSQL URL with {{username}}/{{password}}.",
            ))
            .field(Field::string("username", "Root user."))
            .field(Field::string("password", "Root password (write-only)."))
            .field(Field::int("max_open_connections", "Pool size (0: 4)."))
            .field(Field::int("max_idle_connections", "Idle connections kept."))
            .field(Field::duration(
                "max_connection_lifetime",
                "Connection lifetime.",
            ))
            .field(Field::string(
                "username_template",
                "Template for generated usernames.",
            ))
            .field(Field::bool(
                "disable_escaping",
                "Do not URL-escape credentials in connection_url.",
            ))
            .field(Field::string(
                "password_authentication",
                "password or scram-sha-256.",
            ))
            .synopsis("Configure a PostgreSQL connection."),
        )
        .path(
            path(&format!("reset/(?P<name>{NAME})"))
                .field(name_field())
                .synopsis("Close and reopen a connection's pool.")
                .on(Operation::Update, reset_connection),
        )
        .path(
            path(&format!("rotate-root/(?P<name>{NAME})"))
                .field(name_field())
                .synopsis("Rotate the connection's root password.")
                .on(Operation::Update, rotate_root_at),
        )
        .path(
            path("roles/?")
                .synopsis("List dynamic roles.")
                .on(Operation::List, list_roles),
        )
        .path(
            crud(
                "roles/(?P<name>NAME)",
                read_role,
                write_role_at,
                delete_role,
            )
            .field(Field::string("db_name", "Connection to use.").audit_clear())
            .field(Field::strings(
                "creation_statements",
                "Statements creating the user.",
            ))
            .field(Field::strings(
                "revocation_statements",
                "Statements dropping the user.",
            ))
            .field(Field::strings(
                "rollback_statements",
                "Statements undoing a failed creation.",
            ))
            .field(Field::strings(
                "renew_statements",
                "Statements extending the user.",
            ))
            .fields(ttl_fields())
            .field(Field::string("credential_type", "password (default)."))
            .field(Field::map("credential_config", "Credential options."))
            .synopsis("Dynamic roles."),
        )
        .path(
            path(&format!("creds/(?P<name>{NAME})"))
                .field(name_field())
                .synopsis("Create a PostgreSQL user for the role, leased.")
                // The user name is no secret: in clear, the log says who got which user.
                .audit_clear_response(&["username"])
                .on(Operation::Read, issue_creds),
        )
        .path(
            path("static-roles/?")
                .synopsis("List static roles.")
                .on(Operation::List, list_static_roles),
        )
        .path(
            crud(
                "static-roles/(?P<name>NAME)",
                read_static_role,
                write_static_role_at,
                delete_static_role,
            )
            .field(Field::string("db_name", "Connection to use.").audit_clear())
            .field(Field::string("username", "Existing database user."))
            .field(Field::duration(
                "rotation_period",
                "How often to rotate the password.",
            ))
            .field(Field::strings(
                "rotation_statements",
                "Statements setting the password.",
            ))
            .field(Field::string("credential_type", "password (default)."))
            .synopsis("Static roles."),
        )
        .path(
            path(&format!("static-creds/(?P<name>{NAME})"))
                .field(name_field())
                .synopsis("The static role's current password.")
                .audit_clear_response(&[
                    "username",
                    "last_vault_rotation",
                    "rotation_period",
                    "ttl",
                ])
                .on(Operation::Read, read_static_creds),
        )
        .path(
            path(&format!("rotate-role/(?P<name>{NAME})"))
                .field(name_field())
                .synopsis("Rotate the static role's password now.")
                .on(Operation::Update, rotate_static_role),
        )
}

impl Engine for DatabaseEngine {
    fn describe() -> BackendSpec {
        routes().build()
    }

    fn handle(req: Request) -> Result<Response, EngineError> {
        routes().dispatch(req)
    }

    fn renew(lease: LeaseRef) -> Result<(), EngineError> {
        let data: LeaseData = serde_json::from_str(&lease.internal_data)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut config = config_of(&data.db_name)?;
        let database = open(&data.db_name, &mut config)?;
        let expiration = pg_timestamp(coffer_sdk::time::unix_now()? + lease.ttl + EXPIRATION_GRACE);
        let statements = if data.renew_statements.is_empty() {
            vec![DEFAULT_RENEW.to_string()]
        } else {
            data.renew_statements
        };
        database.run_templates(
            &statements,
            &[
                ("name", &data.username),
                ("username", &data.username),
                ("expiration", &expiration),
            ],
        )
    }

    fn revoke(lease: LeaseRef) -> Result<(), EngineError> {
        let data: LeaseData = serde_json::from_str(&lease.internal_data)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut config = config_of(&data.db_name)?;
        let database = open(&data.db_name, &mut config)?;
        // The role's current statements win; the copy in the lease covers a deleted role.
        let statements = load::<Role>(&named("role", &data.role))?
            .filter(|r| r.db_name == data.db_name)
            .map(|r| r.revocation_statements)
            .unwrap_or(data.revocation_statements);
        if statements.is_empty() {
            return database.drop_user(&data.username);
        }
        if !database.role_exists(&data.username)? {
            return Ok(());
        }
        database.run_templates(
            &statements,
            &[("name", &data.username), ("username", &data.username)],
        )
    }

    fn periodic() -> Result<(), EngineError> {
        let now = coffer_sdk::time::unix_now()?;
        let is_due = |role: &StaticRole| now >= role.last_rotation + role.rotation_period;
        for name in storage::list("static-role/")? {
            if !load::<StaticRole>(&named("static-role", &name))?.is_some_and(|r| is_due(&r)) {
                continue;
            }
            // Looked at again under the lock: a manual rotation may just have happened.
            let rotated = static_role_locked(&name, || {
                match load::<StaticRole>(&named("static-role", &name))? {
                    Some(mut role) if is_due(&role) => rotate_static(&name, &mut role),
                    _ => Ok(()),
                }
            });
            if let Err(error) = rotated {
                coffer_sdk::log::warn(&format!(
                    "static role {name}: rotation failed: {}",
                    describe_error(&error)
                ));
            }
        }
        Ok(())
    }

    fn rollback(kind: String, data: Vec<u8>) -> Result<(), EngineError> {
        if kind != "create-user" {
            return Ok(());
        }
        let wal: CreateWal =
            serde_json::from_slice(&data).map_err(|e| EngineError::Internal(e.to_string()))?;
        let Some(mut config) = load::<DbConfig>(&named("config", &wal.db_name))? else {
            coffer_sdk::log::warn(&format!(
                "rollback of {}: connection {} is gone",
                wal.username, wal.db_name
            ));
            return Ok(());
        };
        open(&wal.db_name, &mut config)?.drop_user(&wal.username)?;
        coffer_sdk::log::info(&format!(
            "rolled back database user {} created without a lease",
            wal.username
        ));
        Ok(())
    }
}

/// Runs `body` holding `name`'s static-role lock ([`lock`]): every change to a static
/// role's record, and every password change of its user, happens under it, so the stored
/// password is always the last one set in PostgreSQL.
fn static_role_locked<T>(
    name: &str,
    body: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    lock::with_lock(name, random_bytes, body)
}

pub(crate) fn describe_error(error: &EngineError) -> String {
    match error {
        EngineError::InvalidRequest(m)
        | EngineError::PermissionDenied(m)
        | EngineError::Upstream(m)
        | EngineError::Internal(m) => m.clone(),
        EngineError::NotFound(m) if m.is_empty() => "not found".to_string(),
        EngineError::NotFound(m) => m.clone(),
        EngineError::Unsupported => "unsupported".to_string(),
    }
}

fn redacted_url(url: &str) -> String {
    // postgresql://user:secret@host → postgresql://user:*****@host (templates stay visible).
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = url.get(scheme + 3..at).unwrap_or_default();
            match userinfo.split_once(':') {
                Some((user, pass)) if pass != "{{password}}" => format!(
                    "{}{user}:*****{}",
                    url.get(..scheme + 3).unwrap_or_default(),
                    url.get(at..).unwrap_or_default()
                ),
                _ => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn read_config(name: &str) -> Result<Response, EngineError> {
    let config: DbConfig = load(&named("config", name))?
        .ok_or_else(|| EngineError::NotFound(format!("no connection named {name:?}")))?;
    let mut details = json!({
        "connection_url": redacted_url(&config.connection_url),
        "username": config.username,
        "max_open_connections": if config.max_open_connections > 0 { config.max_open_connections } else { DEFAULT_MAX_OPEN_CONNECTIONS },
        "max_idle_connections": config.max_idle_connections,
        "max_connection_lifetime": format!("{}s", config.max_connection_lifetime),
        "password_authentication": if config.password_authentication.is_empty() { "password" } else { &config.password_authentication },
    });
    if !config.username_template.is_empty()
        && let Some(object) = details.as_object_mut()
    {
        object.insert(
            "username_template".to_string(),
            json!(config.username_template),
        );
    }
    Ok(respond::data(json!({
        "plugin_name": config.plugin_name,
        "plugin_version": "",
        "allowed_roles": config.allowed_roles,
        "connection_details": details,
        "password_policy": config.password_policy,
        "root_credentials_rotate_statements": config.root_rotation_statements,
        "verify_connection": config.verify_connection,
    })))
}

fn write_config(name: &str, req: &Request) -> Result<Response, EngineError> {
    let mut config: DbConfig = load(&named("config", name))?.unwrap_or_default();
    let is_new = config.plugin_name.is_empty();
    if let Some(plugin) = req.string("plugin_name") {
        config.plugin_name = plugin.to_string();
    }
    if config.plugin_name.is_empty() {
        return Err(invalid("empty plugin name"));
    }
    if config.plugin_name != PLUGIN_NAME {
        return Err(invalid(format!(
            "unsupported plugin_name {:?}: this engine implements {PLUGIN_NAME}",
            config.plugin_name
        )));
    }
    let text = |field: &str, target: &mut String| {
        if let Some(value) = req.string(field) {
            *target = value.to_string();
        }
    };
    text("connection_url", &mut config.connection_url);
    text("username", &mut config.username);
    text("password", &mut config.password);
    text("username_template", &mut config.username_template);
    text("password_policy", &mut config.password_policy);
    text(
        "password_authentication",
        &mut config.password_authentication,
    );
    if let Some(roles) = req.strings("allowed_roles") {
        config.allowed_roles = roles.to_vec();
    }
    if let Some(statements) = req.strings("root_rotation_statements") {
        config.root_rotation_statements = statements.to_vec();
    }
    if let Some(n) = req.int("max_open_connections") {
        config.max_open_connections = n;
    }
    if let Some(n) = req.int("max_idle_connections") {
        config.max_idle_connections = n;
    }
    if let Some(d) = req.duration("max_connection_lifetime") {
        config.max_connection_lifetime = d;
    }
    if let Some(b) = req.bool("disable_escaping") {
        config.disable_escaping = b;
    }
    config.verify_connection = req.bool("verify_connection").unwrap_or(true);
    if config.connection_url.is_empty() {
        return Err(invalid("connection_url is required"));
    }
    if config.username.contains("{{") || config.password.contains("{{") {
        return Err(invalid(
            "username and/or password cannot contain the template variables",
        ));
    }
    if !config.username.is_empty() && !is_sql_safe_name(&config.username) {
        return Err(invalid(
            "username contains quotes, backslashes or semicolons, which cannot be used in SQL names",
        ));
    }
    if !config.password_policy.is_empty() {
        return Err(invalid(
            "password_policy is not supported; passwords follow Vault's default policy",
        ));
    }
    if !matches!(
        config.password_authentication.as_str(),
        "" | "password" | "scram-sha-256"
    ) {
        return Err(invalid(
            "password_authentication must be \"password\" or \"scram-sha-256\"",
        ));
    }
    if !config.username_template.is_empty() {
        check_username_template(&config.username_template).map_err(invalid)?;
    }
    if config.verify_connection {
        let database = Database::open(&dsn(&config, &config.password), pool_size(&config))
            .map_err(|e| {
                invalid(format!(
                    "error creating database object: error verifying connection: {}",
                    describe_error(&sql_error(e))
                ))
            })?;
        database.ping().map_err(|e| {
            invalid(format!(
                "error creating database object: error verifying connection: {}",
                describe_error(&e)
            ))
        })?;
    }
    config.pending_password = None;
    storage::put_json(&named("config", name), &config)?;
    let mut response = respond::empty();
    if redacted_url(&config.connection_url) != config.connection_url {
        response.warnings.push("Password found in connection_url, use a templated url to enable root rotation and prevent read access to password information.".to_string());
    }
    let _ = is_new;
    Ok(response)
}

fn rotate_root(name: &str) -> Result<Response, EngineError> {
    let mut config = config_of(name)?;
    if config.username.is_empty() {
        return Err(invalid(
            "rotate-root needs a username in the connection config",
        ));
    }
    let database = open(name, &mut config)?;
    let new = new_password()?;
    // Phase 1: persist the new password as pending, so no crash can lose it.
    config.pending_password = Some(new.clone());
    storage::put_json(&named("config", name), &config)?;
    let statements = if config.root_rotation_statements.is_empty() {
        vec![DEFAULT_ROTATION.to_string()]
    } else {
        config.root_rotation_statements.clone()
    };
    let secret = password_for_statements(&config, &new)?;
    // Phase 2: change it in PostgreSQL.
    if let Err(error) = database.run_templates(
        &statements,
        &[
            ("username", &config.username),
            ("name", &config.username),
            ("password", &secret),
        ],
    ) {
        config.pending_password = None;
        storage::put_json(&named("config", name), &config)?;
        return Err(error);
    }
    // Phase 3: commit.
    config.password = new;
    config.pending_password = None;
    storage::put_json(&named("config", name), &config)?;
    Ok(respond::empty())
}

fn role_json(role: &Role) -> Value {
    json!({
        "db_name": role.db_name,
        "creation_statements": role.creation_statements,
        "revocation_statements": role.revocation_statements,
        "rollback_statements": role.rollback_statements,
        "renew_statements": role.renew_statements,
        "default_ttl": role.default_ttl,
        "max_ttl": role.max_ttl,
        "credential_type": if role.credential_type.is_empty() { "password" } else { &role.credential_type },
    })
}

fn write_role(name: &str, req: &Request) -> Result<Response, EngineError> {
    if load::<StaticRole>(&named("static-role", name))?.is_some() {
        return Err(invalid("Role and Static Role names must be unique"));
    }
    let mut role: Role = load(&named("role", name))?.unwrap_or_default();
    if let Some(db) = req.string("db_name") {
        role.db_name = db.to_string();
    }
    let list = |field: &str, target: &mut Vec<String>| {
        if let Some(values) = req.strings(field) {
            *target = values.to_vec();
        }
    };
    list("creation_statements", &mut role.creation_statements);
    list("revocation_statements", &mut role.revocation_statements);
    list("rollback_statements", &mut role.rollback_statements);
    list("renew_statements", &mut role.renew_statements);
    if let Some(ttl) = req.duration("default_ttl") {
        role.default_ttl = ttl;
    }
    if let Some(ttl) = req.duration("max_ttl") {
        role.max_ttl = ttl;
    }
    if let Some(kind) = req.string("credential_type") {
        role.credential_type = kind.to_string();
    }
    if role.db_name.is_empty() {
        return Err(invalid("database name is required"));
    }
    if template::split_statements(&role.creation_statements).is_empty() {
        return Err(invalid("creation_statements are required"));
    }
    if !matches!(role.credential_type.as_str(), "" | "password") {
        return Err(invalid(format!(
            "credential_type {:?} is not supported; use password",
            role.credential_type
        )));
    }
    storage::put_json(&named("role", name), &role)?;
    Ok(respond::empty())
}

fn creds(role_name: &str, req: &Request) -> Result<Response, EngineError> {
    let role: Role = load(&named("role", role_name))?
        .ok_or_else(|| invalid(format!("unknown role: {role_name}")))?;
    let mut config = config_of(&role.db_name)?;
    if !role_allowed(&config.allowed_roles, role_name) {
        return Err(invalid(format!("{role_name:?} is not an allowed role")));
    }
    let max = match (role.max_ttl, req.mount_max_ttl) {
        (0, mount) => mount,
        (role_max, mount) => role_max.min(mount),
    };
    let ttl = if role.default_ttl > 0 {
        role.default_ttl
    } else {
        req.mount_default_ttl
    }
    .min(max);
    let now = coffer_sdk::time::unix_now()?;
    let username = if config.username_template.is_empty() {
        default_username(
            &req.display_name,
            role_name,
            &base62_from(&random_bytes(USERNAME_RANDOM_CHARS)?),
            now,
        )
    } else {
        let mut source = |n: usize| random_bytes(n).map(|b| base62_from(&b)).unwrap_or_default();
        render_username(
            &config.username_template,
            &req.display_name,
            role_name,
            now * 1000,
            &mut source,
        )
        .map_err(invalid)?
    };
    // The default template cannot produce a bad name; a custom one can, from a display
    // name or role name it was never checked against.
    check_username(&username).map_err(invalid)?;
    let password = new_password()?;
    let secret = password_for_statements(&config, &password)?;
    let expiration = pg_timestamp(now + ttl + EXPIRATION_GRACE);
    let database = open(&role.db_name, &mut config)?;
    let wal = serde_json::to_vec(&CreateWal {
        db_name: role.db_name.clone(),
        username: username.clone(),
    })
    .map_err(|e| EngineError::Internal(e.to_string()))?;
    let wal_id = storage::put_wal("create-user", &wal)?;
    let vars = [
        ("name", username.as_str()),
        ("username", username.as_str()),
        ("password", secret.as_str()),
        ("expiration", expiration.as_str()),
    ];
    if let Err(error) = database.run_templates(&role.creation_statements, &vars) {
        // The transaction rolled back: nothing exists, so nothing to undo.
        storage::delete_wal(&wal_id)?;
        return Err(error);
    }
    let lease_data = LeaseData {
        username: username.clone(),
        role: role_name.to_string(),
        db_name: role.db_name.clone(),
        revocation_statements: role.revocation_statements.clone(),
        renew_statements: role.renew_statements.clone(),
    };
    let mut response = respond::leased(
        json!({ "username": username, "password": password }),
        LeaseRequest {
            secret_type: CREDS.to_string(),
            ttl,
            max_ttl: max,
            renewable: true,
            internal_data: serde_json::to_string(&lease_data)
                .map_err(|e| EngineError::Internal(e.to_string()))?,
        },
    );
    response.release_wal.push(wal_id);
    Ok(response)
}

fn write_static_role(name: &str, req: &Request) -> Result<Response, EngineError> {
    if load::<Role>(&named("role", name))?.is_some() {
        return Err(invalid("Role and Static Role names must be unique"));
    }
    let existing: Option<StaticRole> = load(&named("static-role", name))?;
    let mut role = existing.clone().unwrap_or_default();
    if let Some(db) = req.string("db_name") {
        role.db_name = db.to_string();
    }
    if let Some(username) = req.string("username") {
        if existing.as_ref().is_some_and(|e| e.username != username) {
            return Err(invalid("cannot update static account username"));
        }
        role.username = username.to_string();
    }
    if let Some(period) = req.duration("rotation_period") {
        role.rotation_period = period;
    }
    if let Some(statements) = req.strings("rotation_statements") {
        role.rotation_statements = statements.to_vec();
    }
    if role.db_name.is_empty() {
        return Err(invalid("database name is required"));
    }
    if role.username.is_empty() || !is_sql_safe_name(&role.username) {
        return Err(invalid(
            "username is required and must be a plain database user name",
        ));
    }
    if role.rotation_period < MIN_ROTATION_PERIOD {
        return Err(invalid(format!(
            "rotation_period must be {MIN_ROTATION_PERIOD} seconds or more"
        )));
    }
    let config = config_of(&role.db_name)?;
    if !role_allowed(&config.allowed_roles, name) {
        return Err(invalid(format!("{name:?} is not an allowed role")));
    }
    if existing.is_none() {
        rotate_static(name, &mut role)?;
    } else {
        storage::put_json(&named("static-role", name), &role)?;
    }
    Ok(respond::empty())
}

fn rotate_static(name: &str, role: &mut StaticRole) -> Result<(), EngineError> {
    let mut config = config_of(&role.db_name)?;
    let database = open(&role.db_name, &mut config)?;
    let new = new_password()?;
    role.pending_password = Some(new.clone());
    storage::put_json(&named("static-role", name), role)?;
    let statements = if role.rotation_statements.is_empty() {
        vec![DEFAULT_ROTATION.to_string()]
    } else {
        role.rotation_statements.clone()
    };
    let secret = password_for_statements(&config, &new)?;
    if let Err(error) = database.run_templates(
        &statements,
        &[
            ("username", &role.username),
            ("name", &role.username),
            ("password", &secret),
        ],
    ) {
        role.pending_password = None;
        storage::put_json(&named("static-role", name), role)?;
        return Err(error);
    }
    role.password = new;
    role.pending_password = None;
    role.last_rotation = coffer_sdk::time::unix_now()?;
    storage::put_json(&named("static-role", name), role)
}

fn static_creds(name: &str) -> Result<Response, EngineError> {
    let role: StaticRole = load(&named("static-role", name))?
        .ok_or_else(|| invalid(format!("unknown static role: {name}")))?;
    let config = config_of(&role.db_name)?;
    if !role_allowed(&config.allowed_roles, name) {
        return Err(invalid(format!("{name:?} is not an allowed role")));
    }
    let next = role.last_rotation + role.rotation_period;
    Ok(respond::data(json!({
        "username": role.username,
        "password": role.password,
        "last_vault_rotation": coffer_sdk::time::rfc3339(role.last_rotation),
        "rotation_period": role.rotation_period,
        "ttl": next.saturating_sub(coffer_sdk::time::unix_now()?),
    })))
}

coffer_sdk::engine!(DatabaseEngine);
