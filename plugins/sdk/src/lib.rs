//! Guest SDK for Coffer engines.
//!
//! An engine is a wasm32-wasip2 component that exports the `coffer:engine` interfaces. This
//! crate owns the generated bindings and adds builders so that an engine reads as its path
//! table plus handlers:
//!
//! ```text
//! use coffer_sdk::prelude::*;
//!
//! struct Hello;
//!
//! fn routes() -> SpecBuilder {
//!     spec("hello").path(
//!         path("greet/(?P<name>[^/]+)")
//!             .field(Field::string("name", "who to greet"))
//!             .synopsis("Greets someone.")
//!             .on(Operation::Read, greet),
//!     )
//! }
//!
//! fn greet(req: &Request) -> Result<Response, EngineError> {
//!     let name = req.string("name").unwrap_or("world");
//!     Ok(respond::data(json!({ "greeting": format!("hello {name}") })))
//! }
//!
//! impl Engine for Hello {
//!     fn describe() -> BackendSpec { routes().build() }
//!     fn handle(req: Request) -> Result<Response, EngineError> { routes().dispatch(req) }
//! }
//! coffer_sdk::engine!(Hello);
//! ```
//!
//! The path table is the router: each entry's handlers are bound to it with `on`, the
//! operations it declares are the ones bound, and `dispatch` calls the handler the host's
//! match (`req.path_index`) and the operation name — no re-parsing of `req.path`.
//!
//! What it must never do: reach anything the host did not grant. Every capability is an
//! import; this crate only wraps them.

//! The sandbox an engine runs in (clocks and randomness work; stdout/stderr are dropped;
//! no files, sockets or environment; a fresh instance per call) is documented at the top
//! of `wit/host/host.wit`. Panics are written to the server log by [`engine!`].
//!
//! Most engines need only `use coffer_sdk::prelude::*;`.

/// What most engines import: the [`Engine`] trait, the builders, typed field access,
/// responses, storage and logging, and `serde_json`'s `json!` and `Value`.
pub mod prelude {
    pub use crate::{
        AuthResponse, BackendSpec, Engine, EngineError, Field, FieldExt, FieldKind, FieldSchema,
        FieldValue, Fields, Handler, LeaseRef, LeaseRequest, Operation, Request, Response,
        SpecBuilder, log, path, random, respond, spec, storage, time,
    };
    pub use serde_json::{self, Value, json};
}

/// Bindings generated from `wit/engine`: world `coffer:engine/engine`, or
/// `coffer:engine/database-engine` with the `sql` feature.
#[cfg(not(any(feature = "sql", feature = "pki", feature = "http")))]
#[allow(missing_docs, reason = "generated; documented in the WIT files")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/engine",
        world: "coffer:engine/engine",
        pub_export_macro: true,
        export_macro_name: "export_engine",
        default_bindings_module: "coffer_sdk::bindings",
        generate_all,
    });
}

/// Bindings generated from `wit/engine`: world `coffer:engine/all-capabilities`, when a
/// workspace-wide build unifies the `sql` feature with `pki` or `http`. Components are
/// built one by one (`scripts/build-components`), so each ships only its own world's
/// imports.
#[cfg(all(feature = "sql", any(feature = "pki", feature = "http")))]
#[allow(missing_docs, reason = "generated; documented in the WIT files")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/engine",
        world: "coffer:engine/all-capabilities",
        pub_export_macro: true,
        export_macro_name: "export_engine",
        default_bindings_module: "coffer_sdk::bindings",
        generate_all,
    });
}

/// Bindings generated from `wit/engine`: world `coffer:engine/pki-engine`.
#[cfg(all(feature = "pki", not(feature = "sql"), not(feature = "http")))]
#[allow(missing_docs, reason = "generated; documented in the WIT files")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/engine",
        world: "coffer:engine/pki-engine",
        pub_export_macro: true,
        export_macro_name: "export_engine",
        default_bindings_module: "coffer_sdk::bindings",
        generate_all,
    });
}

/// Bindings generated from `wit/engine`: world `coffer:engine/identity-engine` (host-held
/// keys and outbound HTTPS).
#[cfg(all(feature = "http", not(feature = "sql")))]
#[allow(missing_docs, reason = "generated; documented in the WIT files")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/engine",
        world: "coffer:engine/identity-engine",
        pub_export_macro: true,
        export_macro_name: "export_engine",
        default_bindings_module: "coffer_sdk::bindings",
        generate_all,
    });
}

/// Outbound HTTPS to operator-granted endpoints (the `http` feature).
#[cfg(feature = "http")]
pub mod http {
    pub use crate::bindings::coffer::host::http::{Request, Response, send};
    pub use crate::bindings::coffer::host::types::HostError;
}

/// Host-held keys (the `pki` and `http` features).
#[cfg(any(feature = "pki", feature = "http"))]
pub mod keys {
    pub use crate::bindings::coffer::host::keys::{
        Key, KeyKind, SignatureScheme, generate, generate_transient, import_pkcs8, open, verify,
    };
    pub use crate::bindings::coffer::host::types::HostError;
}

/// Bindings generated from `wit/engine`: world `coffer:engine/database-engine`.
#[cfg(all(feature = "sql", not(feature = "pki"), not(feature = "http")))]
#[allow(missing_docs, reason = "generated; documented in the WIT files")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/engine",
        world: "coffer:engine/database-engine",
        pub_export_macro: true,
        export_macro_name: "export_engine",
        default_bindings_module: "coffer_sdk::bindings",
        generate_all,
    });
}

/// SQL connections to operator-granted endpoints (the `sql` feature).
#[cfg(feature = "sql")]
pub mod sql {
    pub use crate::bindings::coffer::host::sql::{
        Connection, SqlValue, connect, scram_sha256_verifier,
    };
    pub use crate::bindings::coffer::host::types::HostError;
}

/// `*` glob matching (a `*` matches any run of characters), as Vault's allow-lists use.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(tail) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, tail.get(i..).unwrap_or_default()))
        }
    }
}

/// Wall-clock time, from `wasi:clocks/wall-clock` (the host's real clock).
pub mod time {
    use crate::EngineError;

    /// Unix seconds now. An error (a host clock before 1970) fails the request loudly
    /// rather than letting an engine compute expiries or codes from a zero time.
    pub fn unix_now() -> Result<u64, EngineError> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| EngineError::Internal("the host clock reads before 1970".to_string()))
    }

    /// (year, month, day, hour, minute, second) in UTC.
    pub fn civil(unix: u64) -> (i64, i64, i64, i64, i64, i64) {
        let secs = i64::try_from(unix).unwrap_or(i64::MAX);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
    }

    /// RFC 3339 in UTC: `2026-08-22T14:03:11Z`.
    pub fn rfc3339(unix: u64) -> String {
        let (y, mo, d, h, mi, s) = civil(unix);
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

/// Randomness from `wasi:random/random`: the host's cryptographically secure generator.
pub mod random {
    use crate::EngineError;

    /// Fills `bytes` with random bytes, or fails the request (never returns predictable
    /// bytes).
    pub fn fill(bytes: &mut [u8]) -> Result<(), EngineError> {
        getrandom::fill(bytes)
            .map_err(|e| EngineError::Internal(format!("no randomness from the host: {e}")))
    }

    /// `n` random bytes.
    pub fn bytes(n: usize) -> Result<Vec<u8>, EngineError> {
        let mut bytes = vec![0u8; n];
        fill(&mut bytes)?;
        Ok(bytes)
    }
}

pub use bindings::coffer::engine::types::{
    AuthResponse, BackendSpec, EngineError, FieldKind, FieldSchema, FieldValue, LeaseRef,
    LeaseRequest, Operation, PathSpec, RawResponse, Request, Response, SecretType,
};
pub use serde_json;

/// What an engine implements. Only `describe` and `handle` are required.
pub trait Engine {
    /// The engine's path table and metadata.
    fn describe() -> BackendSpec;
    /// One API request.
    fn handle(req: Request) -> Result<Response, EngineError>;
    /// Extend a lease's secret to `lease.ttl` seconds from now.
    fn renew(_lease: LeaseRef) -> Result<(), EngineError> {
        Err(EngineError::Unsupported)
    }
    /// Destroy a lease's secret. Must succeed when the secret is already gone.
    fn revoke(_lease: LeaseRef) -> Result<(), EngineError> {
        Ok(())
    }
    /// Periodic housekeeping.
    fn periodic() -> Result<(), EngineError> {
        Ok(())
    }
    /// Undo a half-done side effect recorded with `storage::put_wal`.
    fn rollback(_kind: String, _data: Vec<u8>) -> Result<(), EngineError> {
        Ok(())
    }
}

/// Exports a type implementing [`Engine`] as the component's `coffer:engine` exports.
#[macro_export]
macro_rules! engine {
    ($engine:ty) => {
        struct CofferExports;
        impl $crate::bindings::exports::coffer::engine::schema::Guest for CofferExports {
            fn describe() -> $crate::BackendSpec {
                $crate::panic_hook::install();
                <$engine as $crate::Engine>::describe()
            }
        }
        impl $crate::bindings::exports::coffer::engine::handler::Guest for CofferExports {
            fn handle(req: $crate::Request) -> Result<$crate::Response, $crate::EngineError> {
                $crate::panic_hook::install();
                <$engine as $crate::Engine>::handle(req)
            }
        }
        impl $crate::bindings::exports::coffer::engine::leases::Guest for CofferExports {
            fn renew(lease: $crate::LeaseRef) -> Result<(), $crate::EngineError> {
                $crate::panic_hook::install();
                <$engine as $crate::Engine>::renew(lease)
            }
            fn revoke(lease: $crate::LeaseRef) -> Result<(), $crate::EngineError> {
                $crate::panic_hook::install();
                <$engine as $crate::Engine>::revoke(lease)
            }
        }
        impl $crate::bindings::exports::coffer::engine::maintenance::Guest for CofferExports {
            fn periodic() -> Result<(), $crate::EngineError> {
                $crate::panic_hook::install();
                <$engine as $crate::Engine>::periodic()
            }
            fn rollback(kind: String, data: Vec<u8>) -> Result<(), $crate::EngineError> {
                $crate::panic_hook::install();
                <$engine as $crate::Engine>::rollback(kind, data)
            }
        }
        // Component exports exist only on wasm32; native builds (unit tests of an
        // engine's pure logic) compile the same code without them.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export_engine!(CofferExports);
        // Natively, keep the engine reachable so unit-test builds do not call it dead.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <CofferExports as $crate::bindings::exports::coffer::engine::schema::Guest>::describe;
            let _ = <CofferExports as $crate::bindings::exports::coffer::engine::handler::Guest>::handle;
            let _ = <CofferExports as $crate::bindings::exports::coffer::engine::leases::Guest>::renew;
            let _ = <CofferExports as $crate::bindings::exports::coffer::engine::leases::Guest>::revoke;
            let _ = <CofferExports as $crate::bindings::exports::coffer::engine::maintenance::Guest>::periodic;
            let _ = <CofferExports as $crate::bindings::exports::coffer::engine::maintenance::Guest>::rollback;
        };
    };
}

/// Starts a backend spec for an engine type.
pub fn spec(engine_type: &str) -> SpecBuilder {
    SpecBuilder {
        spec: BackendSpec {
            engine_type: engine_type.to_string(),
            paths: Vec::new(),
            secrets: Vec::new(),
            unauthenticated: Vec::new(),
            help: String::new(),
        },
        handlers: Vec::new(),
    }
}

/// A function that answers one operation on one path-table entry.
pub type Handler = fn(&Request) -> Result<Response, EngineError>;

/// Builds a [`BackendSpec`], and with handlers bound to its paths ([`PathBuilder::on`]),
/// routes requests to them ([`SpecBuilder::dispatch`]): the table is the router.
pub struct SpecBuilder {
    spec: BackendSpec,
    /// Per path entry, in table order: the handler of each operation bound with `on`.
    handlers: Vec<Vec<(Operation, Handler)>>,
}

impl SpecBuilder {
    /// Adds a path (matched in the order added).
    pub fn path(mut self, path: PathBuilder) -> Self {
        self.spec.paths.push(path.spec);
        self.handlers.push(path.handlers);
        self
    }
    /// Declares a secret type that responses may lease.
    pub fn secret(mut self, name: &str, description: &str) -> Self {
        self.spec.secrets.push(SecretType {
            name: name.to_string(),
            description: description.to_string(),
        });
        self
    }
    /// Lets reads (GET, LIST, HEAD) of `pattern` (below the mount) through without a
    /// token; writes and deletes always need one. Vault's syntax: `+` is any one segment,
    /// `*` (only as the last character) makes the last segment a prefix.
    pub fn unauthenticated(mut self, pattern: &str) -> Self {
        self.spec.unauthenticated.push(pattern.to_string());
        self
    }
    /// Sets the engine's help text.
    pub fn help(mut self, help: &str) -> Self {
        self.spec.help = help.to_string();
        self
    }
    /// Finishes the spec.
    pub fn build(self) -> BackendSpec {
        self.spec
    }
    /// Answers `req` with the handler bound to its path entry (`req.path_index`, which the
    /// host matched) and operation. The host sends only operations the entry declares;
    /// one declared without a handler (a path of a hand-written `handle`) is unsupported.
    pub fn dispatch(&self, req: Request) -> Result<Response, EngineError> {
        let handler = usize::try_from(req.path_index)
            .ok()
            .and_then(|index| self.handlers.get(index))
            .and_then(|handlers| {
                handlers
                    .iter()
                    .find(|(operation, _)| *operation == req.operation)
                    .map(|(_, handler)| *handler)
            })
            .ok_or(EngineError::Unsupported)?;
        handler(&req)
    }
}

/// Starts a path whose regex `pattern` is matched against the whole path below the mount.
pub fn path(pattern: &str) -> PathBuilder {
    PathBuilder {
        spec: PathSpec {
            pattern: pattern.to_string(),
            fields: Vec::new(),
            operations: Vec::new(),
            synopsis: String::new(),
            audit_clear_response: Vec::new(),
        },
        handlers: Vec::new(),
    }
}

/// Builds a [`PathSpec`] and the handlers bound to it.
pub struct PathBuilder {
    spec: PathSpec,
    handlers: Vec<(Operation, Handler)>,
}

impl PathBuilder {
    /// Declares a field.
    pub fn field(mut self, field: FieldSchema) -> Self {
        self.spec.fields.push(field);
        self
    }
    /// Declares several fields (for shared field sets).
    pub fn fields(mut self, fields: impl IntoIterator<Item = FieldSchema>) -> Self {
        self.spec.fields.extend(fields);
        self
    }
    /// Sets the supported operations (for an engine that writes its own `handle`; with
    /// [`PathBuilder::on`] the operations are those bound).
    pub fn operations(mut self, operations: &[Operation]) -> Self {
        self.spec.operations = operations.to_vec();
        self
    }
    /// Binds `handler` to `operation` on this path, and declares the operation. Bind
    /// both `Create` and `Update` (often to one handler) to get the host's existence
    /// check; `Read` too, so the host can tell them apart.
    pub fn on(mut self, operation: Operation, handler: Handler) -> Self {
        if !self.spec.operations.contains(&operation) {
            self.spec.operations.push(operation);
        }
        self.handlers.retain(|(bound, _)| *bound != operation);
        self.handlers.push((operation, handler));
        self
    }
    /// Sets the one-line summary.
    pub fn synopsis(mut self, synopsis: &str) -> Self {
        self.spec.synopsis = synopsis.to_string();
        self
    }
    /// Declares top-level keys of this path's response `data` as not sensitive: audit
    /// entries show them in clear (everything else is an HMAC). Only for what is no
    /// secret, such as a serial number or a generated user name, never a password or key.
    pub fn audit_clear_response(mut self, keys: &[&str]) -> Self {
        self.spec
            .audit_clear_response
            .extend(keys.iter().map(|k| k.to_string()));
        self
    }
}

/// Field constructors: `Field::string("name", "help").required()`.
pub struct Field;

macro_rules! field_constructor {
    ($(#[$doc:meta] $name:ident => $kind:ident),* $(,)?) => {
        impl Field {
            $(
                #[$doc]
                pub fn $name(name: &str, description: &str) -> FieldSchema {
                    FieldSchema {
                        name: name.to_string(),
                        kind: FieldKind::$kind,
                        description: description.to_string(),
                        required: false,
                        default: None,
                        audit_clear: false,
                    }
                }
            )*
        }
    };
}

field_constructor! {
    /// A string field.
    string => String,
    /// A string field the host lower-cases.
    lowercase => Lowercase,
    /// An integer field.
    int => Int,
    /// A boolean field.
    bool => Bool,
    /// A duration field, in seconds.
    duration => Duration,
    /// A list of strings (a single string becomes one element).
    strings => Strings,
    /// A list of strings (a string is split on commas).
    comma_strings => CommaStrings,
    /// A PostgreSQL connection string; its endpoints stay granted once the engine accepts it.
    sql_dsn => SqlDsn,
    /// An `https://` URL; its host and port stay granted (`http`) once the engine accepts it.
    https_url => HttpsUrl,
    /// A string-to-string map.
    map => KeyValues,
}

/// Modifiers on a [`FieldSchema`].
pub trait FieldExt {
    /// Marks the field required.
    fn required(self) -> Self;
    /// Sets the value used when the request omits the field.
    fn default(self, value: FieldValue) -> Self;
    /// Marks the field not sensitive: audit entries show its value in clear instead of
    /// an HMAC. Only for what is no secret (a name, a TTL), never a password or key.
    fn audit_clear(self) -> Self;
}

impl FieldExt for FieldSchema {
    fn audit_clear(mut self) -> Self {
        self.audit_clear = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn default(mut self, value: FieldValue) -> Self {
        self.default = Some(value);
        self
    }
}

/// Typed access to request fields.
pub trait Fields {
    /// The raw typed value of a field.
    fn field(&self, name: &str) -> Option<&FieldValue>;
    /// A string field.
    fn string(&self, name: &str) -> Option<&str> {
        match self.field(name) {
            Some(FieldValue::String(s)) => Some(s),
            _ => None,
        }
    }
    /// A string field that must be present and non-empty.
    fn require_string(&self, name: &str) -> Result<&str, EngineError> {
        match self.string(name) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(EngineError::InvalidRequest(format!("missing {name}"))),
        }
    }
    /// An integer field.
    fn int(&self, name: &str) -> Option<i64> {
        match self.field(name) {
            Some(FieldValue::Int(i)) => Some(*i),
            _ => None,
        }
    }
    /// A boolean field.
    fn bool(&self, name: &str) -> Option<bool> {
        match self.field(name) {
            Some(FieldValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    /// A duration field, in seconds.
    fn duration(&self, name: &str) -> Option<u64> {
        match self.field(name) {
            Some(FieldValue::Duration(d)) => Some(*d),
            _ => None,
        }
    }
    /// A string-list field.
    fn strings(&self, name: &str) -> Option<&[String]> {
        match self.field(name) {
            Some(FieldValue::Strings(v)) => Some(v),
            _ => None,
        }
    }
    /// A map field.
    fn map(&self, name: &str) -> Option<&[(String, String)]> {
        match self.field(name) {
            Some(FieldValue::KeyValues(v)) => Some(v),
            _ => None,
        }
    }
}

impl Fields for Request {
    fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Response constructors.
pub mod respond {
    use super::{AuthResponse, EngineError, LeaseRequest, RawResponse, Response};

    /// A JSON `data` response.
    pub fn data(data: serde_json::Value) -> Response {
        Response {
            data: Some(data.to_string()),
            warnings: Vec::new(),
            lease: None,
            raw: None,
            release_wal: Vec::new(),
            auth: None,
            audit_facts: None,
        }
    }
    /// A response with no data: a write answers 204. Not for a read or a list: the host
    /// answers those with 404 "the engine returned no data for this read" (return
    /// `EngineError::NotFound` with a message instead, naming what is missing).
    pub fn empty() -> Response {
        Response {
            data: None,
            warnings: Vec::new(),
            lease: None,
            raw: None,
            release_wal: Vec::new(),
            auth: None,
            audit_facts: None,
        }
    }
    /// A LIST response; an empty list becomes a 404 as in Vault.
    pub fn list(keys: Vec<String>) -> Result<Response, EngineError> {
        if keys.is_empty() {
            return Err(EngineError::NotFound(String::new()));
        }
        Ok(data(serde_json::json!({ "keys": keys })))
    }
    /// A leased JSON response.
    pub fn leased(data_value: serde_json::Value, lease: LeaseRequest) -> Response {
        let mut response = data(data_value);
        response.lease = Some(lease);
        response
    }
    /// A login's answer on an auth engine: the host mints a token for `auth` and
    /// answers with Vault's `auth` block (and no `data`).
    pub fn login(auth: AuthResponse) -> Response {
        let mut response = empty();
        response.auth = Some(auth);
        response
    }
    /// A raw, non-JSON body.
    pub fn raw(content_type: &str, body: Vec<u8>) -> Response {
        Response {
            data: None,
            warnings: Vec::new(),
            lease: None,
            raw: Some(RawResponse {
                content_type: content_type.to_string(),
                body,
            }),
            release_wal: Vec::new(),
            auth: None,
            audit_facts: None,
        }
    }
}

/// The mount's storage, with JSON helpers.
pub mod storage {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::EngineError;
    use crate::bindings::coffer::host::storage as host;
    use crate::bindings::coffer::host::types::HostError;

    /// Turns a host error into the engine error the client should see.
    pub fn host_error(error: HostError) -> EngineError {
        match error {
            HostError::Denied(m) => EngineError::PermissionDenied(m),
            HostError::NotFound => EngineError::NotFound(String::new()),
            HostError::Invalid(m) => EngineError::InvalidRequest(m),
            HostError::Unavailable(m) => EngineError::Upstream(m),
            HostError::Internal(m) => EngineError::Internal(m),
        }
    }

    /// Raw bytes at `key`.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        host::get(key).map_err(host_error)
    }
    /// Stores raw bytes.
    pub fn put(key: &str, value: &[u8]) -> Result<(), EngineError> {
        host::put(key, value).map_err(host_error)
    }
    /// Deletes a key.
    pub fn delete(key: &str) -> Result<(), EngineError> {
        host::delete(key).map_err(host_error)
    }
    /// Lists one level below `prefix`.
    pub fn list(prefix: &str) -> Result<Vec<String>, EngineError> {
        host::list(prefix).map_err(host_error)
    }
    /// Reads and decodes a JSON value.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, EngineError> {
        match get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                // The key is the engine's storage layout: logged, not shown to the client.
                crate::log::error(&format!("corrupt entry {key}: {e}"));
                EngineError::Internal(
                    "a stored entry is corrupt (details in the server log)".to_string(),
                )
            }),
        }
    }
    /// Encodes and stores a JSON value.
    pub fn put_json<T: Serialize>(key: &str, value: &T) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec(value).map_err(|e| EngineError::Internal(e.to_string()))?;
        put(key, &bytes)
    }
    /// Changes applied together by [`Batch::commit`]: one durable commit, after which
    /// either all of them are stored or none is (the host's `write-all`; at most 256
    /// changes and 16 MiB of values).
    #[derive(Default)]
    pub struct Batch {
        changes: Vec<host::Change>,
    }

    impl Batch {
        /// An empty batch.
        pub fn new() -> Self {
            Self::default()
        }
        /// Stores raw bytes at `key`.
        pub fn put(&mut self, key: &str, value: &[u8]) -> &mut Self {
            self.changes.push(host::Change {
                key: key.to_string(),
                value: Some(value.to_vec()),
            });
            self
        }
        /// Encodes and stores a JSON value at `key`.
        pub fn put_json<T: Serialize>(
            &mut self,
            key: &str,
            value: &T,
        ) -> Result<&mut Self, EngineError> {
            let bytes =
                serde_json::to_vec(value).map_err(|e| EngineError::Internal(e.to_string()))?;
            Ok(self.put(key, &bytes))
        }
        /// Deletes `key`.
        pub fn delete(&mut self, key: &str) -> &mut Self {
            self.changes.push(host::Change {
                key: key.to_string(),
                value: None,
            });
            self
        }
        /// Applies every change in one commit.
        pub fn commit(self) -> Result<(), EngineError> {
            host::write_all(&self.changes).map_err(host_error)
        }
        /// Applies every change in one commit only if the value at `key` is now exactly
        /// `expected` (`None`: nothing stored); returns whether it did (the host's
        /// `compare-and-write`). Serialized against every other `commit_if` on `key`,
        /// whichever instance runs it, so a read-modify-write of `key` retried until this
        /// returns `true` loses no update. Plain writes of `key` are not ordered against
        /// it: change a contended key only this way.
        pub fn commit_if(self, key: &str, expected: Option<&[u8]>) -> Result<bool, EngineError> {
            host::compare_and_write(key, expected, &self.changes).map_err(host_error)
        }
    }

    /// Records a write-ahead entry; returns its id.
    pub fn put_wal(kind: &str, data: &[u8]) -> Result<String, EngineError> {
        host::put_wal(kind, data).map_err(host_error)
    }
    /// Deletes a write-ahead entry.
    pub fn delete_wal(id: &str) -> Result<(), EngineError> {
        host::delete_wal(id).map_err(host_error)
    }
}

/// Logging through the host.
pub mod log {
    use crate::bindings::coffer::host::log::{Level, log};

    /// Logs at info.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Logs at warn.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Logs at debug.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Logs at error.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Guest panics, reported where an operator looks: the [`engine!`] exports install a hook
/// that writes the panic's message and source location to the server log (through the
/// `log` capability, at error, tagged with the mount) before the call traps. The client
/// gets a 500 without the message, which may hold data it should not see.
#[doc(hidden)]
pub mod panic_hook {
    /// Installs the hook for this instance (each call runs in a fresh instance).
    pub fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(a panic without a message)");
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_else(|| "an unknown location".to_string());
                crate::log::error(&format!("engine panicked at {location}: {message}"));
            }));
        });
    }
}

/// For auth engines: Vault's `token_*` role parameters (`tokenutil`), shared by every
/// auth method, and the [`AuthResponse`] a login answers with.
pub mod auth {
    use super::{AuthResponse, Field, FieldSchema, Fields};
    use serde::{Deserialize, Serialize};

    /// Whether `cidr` (`10.0.0.0/8`, `::1/128`, or a bare address) contains the address
    /// `ip` (a request's `remote-address`). Unparseable input contains nothing.
    pub fn cidr_contains(cidr: &str, ip: &str) -> bool {
        let Ok(ip) = ip.trim().parse::<std::net::IpAddr>() else {
            return false;
        };
        let cidr = cidr.trim();
        let (base, bits) = match cidr.split_once('/') {
            Some((base, bits)) => match bits.parse::<u32>() {
                Ok(bits) => (base, Some(bits)),
                Err(_) => return false,
            },
            None => (cidr, None),
        };
        let Ok(base) = base.parse::<std::net::IpAddr>() else {
            return false;
        };
        let (base, ip, width) = match (base, ip) {
            (std::net::IpAddr::V4(b), std::net::IpAddr::V4(i)) => {
                (u128::from(b.to_bits()), u128::from(i.to_bits()), 32)
            }
            (std::net::IpAddr::V6(b), std::net::IpAddr::V6(i)) => (b.to_bits(), i.to_bits(), 128),
            _ => return false,
        };
        let bits = bits.unwrap_or(width);
        if bits > width {
            return false;
        }
        let shift = width - bits;
        shift == width || (base >> shift) == (ip >> shift)
    }

    /// Whether `cidr` parses as a CIDR block or a bare address.
    pub fn valid_cidr(cidr: &str) -> bool {
        let probe = match cidr.trim().split_once('/') {
            Some((base, _)) => base.to_string(),
            None => cidr.trim().to_string(),
        };
        cidr_contains(cidr, &probe)
    }

    /// A role's token parameters, as stored by the engine.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct TokenParams {
        /// `token_policies` (Vault also accepts the older `policies`).
        pub token_policies: Vec<String>,
        /// `token_ttl`, seconds; 0 = the mount's default.
        pub token_ttl: u64,
        /// `token_max_ttl`, seconds; 0 = the mount's maximum.
        pub token_max_ttl: u64,
        /// `token_explicit_max_ttl`, seconds; 0 = none.
        pub token_explicit_max_ttl: u64,
        /// `token_period`, seconds; 0 = not periodic.
        pub token_period: u64,
        /// `token_num_uses`; 0 = unlimited.
        pub token_num_uses: u64,
        /// `token_no_default_policy`.
        pub token_no_default_policy: bool,
        /// `token_bound_cidrs`.
        pub token_bound_cidrs: Vec<String>,
        /// `token_type`: only `service` (and `default`) are issued.
        pub token_type: String,
    }

    /// The `token_*` fields, for a role path's field list.
    pub fn token_fields() -> Vec<FieldSchema> {
        vec![
            Field::comma_strings("token_policies", "Policies of the tokens this role issues."),
            Field::comma_strings("policies", "Deprecated: use token_policies."),
            Field::duration("token_ttl", "Initial TTL of issued tokens."),
            Field::duration(
                "token_max_ttl",
                "Maximum lifetime of issued tokens over renewals.",
            ),
            Field::duration(
                "token_explicit_max_ttl",
                "Hard cap on issued tokens' lifetime, periodic ones included.",
            ),
            Field::duration(
                "token_period",
                "Issue periodic tokens renewed to this period.",
            ),
            Field::int(
                "token_num_uses",
                "Uses before an issued token is revoked (0 = unlimited).",
            ),
            Field::bool("token_no_default_policy", "Do not add the default policy."),
            Field::comma_strings(
                "token_bound_cidrs",
                "CIDR blocks from which issued tokens may be used.",
            ),
            Field::string("token_type", "Type of issued tokens: service or default."),
        ]
    }

    impl TokenParams {
        /// Applies the `token_*` fields a write supplied (an update keeps the rest).
        pub fn update(&mut self, req: &impl Fields) -> Result<(), super::EngineError> {
            if let Some(policies) = req
                .strings("token_policies")
                .or_else(|| req.strings("policies"))
            {
                self.token_policies = policies
                    .iter()
                    .map(|p| p.trim().to_lowercase())
                    .filter(|p| !p.is_empty())
                    .collect();
            }
            if let Some(ttl) = req.duration("token_ttl") {
                self.token_ttl = ttl;
            }
            if let Some(ttl) = req.duration("token_max_ttl") {
                self.token_max_ttl = ttl;
            }
            if let Some(ttl) = req.duration("token_explicit_max_ttl") {
                self.token_explicit_max_ttl = ttl;
            }
            if let Some(period) = req.duration("token_period") {
                self.token_period = period;
            }
            if let Some(uses) = req.int("token_num_uses") {
                self.token_num_uses = u64::try_from(uses).map_err(|_| {
                    super::EngineError::InvalidRequest(
                        "token_num_uses cannot be negative".to_string(),
                    )
                })?;
            }
            if let Some(flag) = req.bool("token_no_default_policy") {
                self.token_no_default_policy = flag;
            }
            if let Some(cidrs) = req.strings("token_bound_cidrs") {
                let cidrs: Vec<String> = cidrs
                    .iter()
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect();
                if let Some(bad) = cidrs.iter().find(|c| !valid_cidr(c)) {
                    return Err(super::EngineError::InvalidRequest(format!(
                        "token_bound_cidrs: {bad:?} is not a CIDR block or an IP address"
                    )));
                }
                self.token_bound_cidrs = cidrs;
            }
            if let Some(kind) = req.string("token_type") {
                match kind {
                    "" | "default" | "service" | "default-service" => {
                        self.token_type = kind.to_string();
                    }
                    other => {
                        return Err(super::EngineError::InvalidRequest(format!(
                            "token_type {other:?} is not supported: Coffer issues service tokens"
                        )));
                    }
                }
            }
            if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
                return Err(super::EngineError::InvalidRequest(
                    "token_ttl cannot be greater than token_max_ttl".to_string(),
                ));
            }
            Ok(())
        }

        /// The fields as Vault reads them back on a role.
        pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
            let mut out = serde_json::Map::new();
            let kind = if self.token_type.is_empty() {
                "default"
            } else {
                &self.token_type
            };
            for (key, value) in [
                ("token_policies", serde_json::json!(self.token_policies)),
                ("policies", serde_json::json!(self.token_policies)),
                ("token_ttl", serde_json::json!(self.token_ttl)),
                ("token_max_ttl", serde_json::json!(self.token_max_ttl)),
                (
                    "token_explicit_max_ttl",
                    serde_json::json!(self.token_explicit_max_ttl),
                ),
                ("token_period", serde_json::json!(self.token_period)),
                ("token_num_uses", serde_json::json!(self.token_num_uses)),
                (
                    "token_no_default_policy",
                    serde_json::json!(self.token_no_default_policy),
                ),
                (
                    "token_bound_cidrs",
                    serde_json::json!(self.token_bound_cidrs),
                ),
                ("token_type", serde_json::json!(kind)),
            ] {
                out.insert(key.to_string(), value);
            }
            out
        }

        /// The login answer for these parameters; the caller fills in metadata, display
        /// name, alias and internal data.
        pub fn auth(&self) -> AuthResponse {
            AuthResponse {
                policies: self.token_policies.clone(),
                no_default_policy: self.token_no_default_policy,
                ttl: self.token_ttl,
                max_ttl: self.token_max_ttl,
                explicit_max_ttl: self.token_explicit_max_ttl,
                period: self.token_period,
                num_uses: self.token_num_uses,
                renewable: true,
                bound_cidrs: self.token_bound_cidrs.clone(),
                metadata: Vec::new(),
                display_name: String::new(),
                alias_name: String::new(),
                internal_data: String::new(),
            }
        }
    }
}
