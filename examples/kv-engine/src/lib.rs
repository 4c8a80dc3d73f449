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

impl Engine for Kv {
    fn describe() -> BackendSpec {
        spec("kv")
            .help("Stores arbitrary JSON objects at paths under the mount (Vault KV v1).")
            .path(
                path("(?P<path>.*)")
                    .field(Field::string(
                        "path",
                        "Location of the secret below the mount.",
                    ))
                    .operations(&[
                        Operation::Read,
                        Operation::Create,
                        Operation::Update,
                        Operation::Delete,
                        Operation::List,
                    ])
                    .synopsis("Read, write, list and delete secrets."),
            )
            .build()
    }

    fn handle(req: Request) -> Result<Response, EngineError> {
        let key = req.string("path").unwrap_or_default().to_string();
        match req.operation {
            Operation::List => {
                let prefix = if key.is_empty() || key.ends_with('/') {
                    key
                } else {
                    format!("{key}/")
                };
                respond::list(storage::list(&format!("entries/{prefix}"))?)
            }
            _ if key.is_empty() || key.ends_with('/') => Err(EngineError::InvalidRequest(
                "a secret path must name an entry, not a folder".to_string(),
            )),
            Operation::Read => match storage::get(&entry(&key))? {
                Some(bytes) => {
                    let value: Value = serde_json::from_slice(&bytes)
                        .map_err(|e| EngineError::Internal(format!("corrupt entry: {e}")))?;
                    Ok(respond::data(value))
                }
                // Vault's kv answers a missing key with a bare 404.
                None => Err(EngineError::NotFound(String::new())),
            },
            Operation::Create | Operation::Update => {
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
                storage::put(&entry(&key), &bytes)?;
                Ok(respond::empty())
            }
            Operation::Delete => {
                storage::delete(&entry(&key))?;
                Ok(respond::empty())
            }
        }
    }
}

fn entry(key: &str) -> String {
    format!("entries/{key}")
}

coffer_sdk::engine!(Kv);
