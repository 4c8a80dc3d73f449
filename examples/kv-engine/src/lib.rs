//! A KV version 1 engine: `read`, `write`, `list` and `delete` of JSON objects under its
//! mount, written only against `coffer-sdk`. It is the smallest complete engine and the
//! template for custom ones.
//!
//! Values are stored under `entries/<path>` in the mount's encrypted storage view; the
//! engine never sees any other mount's data, and asks the host for nothing else.

use coffer_sdk::prelude::*;

/// Largest value (serialized JSON) one entry may hold: keeps one entry well inside a storage
/// page and a request body.
const MAX_ENTRY_BYTES: usize = 512 * 1024;

/// The KV engine.
struct Kv;

/// The path table, each entry with its handlers: what `describe` reports and what
/// `handle` dispatches on are one value.
fn routes() -> SpecBuilder {
    spec("kv")
        .help("Stores arbitrary JSON objects at paths under the mount (Vault KV v1).")
        .path(
            path("(?P<path>.*)")
                .field(Field::string(
                    "path",
                    "Location of the secret below the mount.",
                ))
                .synopsis("Read, write, list and delete secrets.")
                .on(Operation::Read, read)
                // Create and update share a handler; binding both (with read) gives the
                // host's existence check, so policies can tell them apart.
                .on(Operation::Create, write)
                .on(Operation::Update, write)
                .on(Operation::Delete, delete)
                .on(Operation::List, list),
        )
}

impl Engine for Kv {
    fn describe() -> BackendSpec {
        routes().build()
    }

    fn handle(req: Request) -> Result<Response, EngineError> {
        routes().dispatch(req)
    }
}

fn list(req: &Request) -> Result<Response, EngineError> {
    let key = req.string("path").unwrap_or_default();
    let prefix = if key.is_empty() || key.ends_with('/') {
        key.to_string()
    } else {
        format!("{key}/")
    };
    respond::list(storage::list(&format!("entries/{prefix}"))?)
}

fn read(req: &Request) -> Result<Response, EngineError> {
    match storage::get(&entry(req)?)? {
        Some(bytes) => {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::Internal(format!("corrupt entry: {e}")))?;
            Ok(respond::data(value))
        }
        // Vault's kv answers a missing key with a bare 404.
        None => Err(EngineError::NotFound(String::new())),
    }
}

fn write(req: &Request) -> Result<Response, EngineError> {
    let key = entry(req)?;
    let body: Value = serde_json::from_str(&req.raw_body)
        .map_err(|e| EngineError::InvalidRequest(format!("invalid body: {e}")))?;
    let is_empty = body.as_object().is_none_or(|o| o.is_empty());
    if is_empty {
        return Err(EngineError::InvalidRequest(
            "no data provided: write at least one key=value".to_string(),
        ));
    }
    let bytes = body.to_string().into_bytes();
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(EngineError::InvalidRequest(format!(
            "entry is {} bytes; the limit is {MAX_ENTRY_BYTES}",
            bytes.len()
        )));
    }
    storage::put(&key, &bytes)?;
    Ok(respond::empty())
}

fn delete(req: &Request) -> Result<Response, EngineError> {
    storage::delete(&entry(req)?)?;
    Ok(respond::empty())
}

/// The storage key of the request's entry; a folder (empty or `/`-terminated) names none.
fn entry(req: &Request) -> Result<String, EngineError> {
    let key = req.string("path").unwrap_or_default();
    if key.is_empty() || key.ends_with('/') {
        return Err(EngineError::InvalidRequest(
            "a secret path must name an entry, not a folder".to_string(),
        ));
    }
    Ok(format!("entries/{key}"))
}

coffer_sdk::engine!(Kv);
