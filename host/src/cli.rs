//! The `coffer` command line, mirroring the `vault` CLI: verbs, `-flag=value` syntax,
//! `k=v` / `k=@file` / `k=-` arguments, `-field`, `-format=json|table`, and the
//! address/token lookup order (`-address`, `COFFER_ADDR`, `VAULT_ADDR`; `COFFER_TOKEN`,
//! `VAULT_TOKEN`, then `~/.coffer-token`).
//!
//! Exit codes follow Vault: 0 success, 1 local errors, 2 API errors and "no value found".

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

use crate::fields::go_duration;

/// Default server address.
const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8200";
/// Flags that take no value.
const BOOLEAN_FLAGS: &[&str] = &[
    "dev",
    "force",
    "f",
    "prefix",
    "orphan",
    "self",
    "reset",
    "help",
    "h",
    "sync",
    "output-policy",
    "detailed",
    "local",
    "no-store",
    "token-only",
];

/// A CLI failure and its exit code. Code 0 is not a failure: the command stopped early
/// with `message` for stdout (`-output-policy`).
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: i32,
    /// Printed to stderr (to stdout for code 0).
    pub message: String,
}

impl CliError {
    fn local(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
    fn api(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

/// Parsed flags and positional arguments.
#[derive(Debug, Default)]
pub struct Args {
    flags: BTreeMap<String, Vec<String>>,
    /// Positional arguments in order.
    pub positional: Vec<String>,
}

impl Args {
    /// Parses Go-style flags (`-name=value`, `-name value`, `--name`) anywhere.
    pub fn parse(raw: &[String]) -> Self {
        let mut args = Self::default();
        let mut iter = raw.iter().peekable();
        while let Some(arg) = iter.next() {
            let is_flag = arg.starts_with('-') && arg.len() > 1;
            if !is_flag {
                args.positional.push(arg.clone());
                continue;
            }
            let name = arg.trim_start_matches('-');
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None if BOOLEAN_FLAGS.contains(&name) => (name.to_string(), "true".to_string()),
                None => match iter.next_if(|next| !next.starts_with('-') || next.len() == 1) {
                    Some(value) => (name.to_string(), value.clone()),
                    None => (name.to_string(), String::new()),
                },
            };
            args.flags.entry(name).or_default().push(value);
        }
        args
    }

    /// The last value of a flag.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// All values of a repeatable flag.
    fn flag_all(&self, name: &str) -> Vec<String> {
        self.flags.get(name).cloned().unwrap_or_default()
    }

    /// A boolean flag.
    pub fn bool(&self, name: &str) -> bool {
        self.flag(name)
            .is_some_and(|v| crate::fields::parse_bool(v).unwrap_or(true))
    }
}

struct Api {
    address: String,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    /// `-output-policy`: print the policy the first request needs instead of sending it.
    output_policy: bool,
}

struct ApiReply {
    status: StatusCode,
    body: Option<Value>,
    raw: Bytes,
}

impl Api {
    fn new(args: &Args) -> Result<Self, CliError> {
        let address = args
            .flag("address")
            .map(str::to_string)
            .or_else(|| std::env::var("COFFER_ADDR").ok())
            .or_else(|| std::env::var("VAULT_ADDR").ok())
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        let token = std::env::var("COFFER_TOKEN")
            .ok()
            .or_else(|| std::env::var("VAULT_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .or_else(|| {
                token_file()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|t| t.trim().to_string())
            });
        let ca_cert = args
            .flag("ca-cert")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("COFFER_CACERT").map(PathBuf::from))
            .or_else(|| std::env::var_os("VAULT_CACERT").map(PathBuf::from));
        Ok(Self {
            address: address.trim_end_matches('/').to_string(),
            token,
            ca_cert,
            output_policy: args.bool("output-policy"),
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<ApiReply, CliError> {
        if self.output_policy {
            return Err(CliError {
                code: 0,
                message: output_policy(method, path),
            });
        }
        let url = format!("{}/v1/{}", self.address, path.trim_start_matches('/'));
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|e| CliError::local(e.to_string()))?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("X-Vault-Request", "true");
        if let Some(token) = &self.token {
            builder = builder.header("X-Vault-Token", token);
        }
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let request = builder
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| CliError::local(format!("bad request for {url}: {e}")))?;
        let response = self
            .send(request)
            .await
            .map_err(|e| CliError::api(format!("Error making API request to {url}: {e}")))?;
        let status = response.status();
        let raw = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::api(format!("reading the response from {url}: {e}")))?
            .to_bytes();
        let body = serde_json::from_slice(&raw).ok();
        if status.is_client_error() || status.is_server_error() {
            let errors = body
                .as_ref()
                .and_then(|b: &Value| b.get("errors"))
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|e| format!("\n* {}", e.as_str().unwrap_or_default()))
                        .collect::<String>()
                })
                .unwrap_or_default();
            return Err(CliError::api(format!(
                "Error making API request.\n\nURL: {method} {url}\nCode: {}. Errors:\n{errors}",
                status.as_u16()
            )));
        }
        Ok(ApiReply { status, body, raw })
    }
}

impl Api {
    /// One request on a fresh connection, over TLS for `https://` addresses (the server
    /// certificate and host name are verified against `ca_cert` or the system roots).
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let uri = request.uri().clone();
        let host = uri.host().ok_or("the address has no host")?.to_string();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        if !https {
            return exchange(TokioIo::new(tcp), request).await;
        }
        let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
            .map_err(|e| e.to_string())?;
        if let Some(ca) = &self.ca_cert {
            builder
                .set_ca_file(ca)
                .map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
        }
        let ssl = builder
            .build()
            .configure()
            .and_then(|c| c.into_ssl(&host))
            .map_err(|e| e.to_string())?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        std::pin::Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(TokioIo::new(stream), request).await
    }
}

async fn exchange<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

fn token_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".coffer-token"))
}

/// Runs a CLI command (everything but `server`); returns the text for stdout.
pub async fn run(command: &[String]) -> Result<String, CliError> {
    let (verb, rest) = command
        .split_first()
        .ok_or_else(|| CliError::local(usage()))?;
    let (verb, rest) = match (verb.as_str(), rest.split_first()) {
        (
            "operator" | "secrets" | "token" | "lease" | "policy" | "auth" | "audit",
            Some((sub, tail)),
        ) => (format!("{verb} {sub}"), tail),
        _ => (verb.clone(), rest),
    };
    let args = Args::parse(rest);
    let api = Api::new(&args)?;
    let out = Output::new(&args)?;
    let path_arg = |index: usize, what: &str| -> Result<String, CliError> {
        args.positional
            .get(index)
            .map(|p| p.trim_start_matches('/').to_string())
            .ok_or_else(|| CliError::local(format!("Not enough arguments: expected {what}")))
    };
    let file_arg = |index: usize, what: &str| -> Result<String, CliError> {
        args.positional
            .get(index)
            .cloned()
            .ok_or_else(|| CliError::local(format!("Not enough arguments: expected {what}")))
    };
    match verb.as_str() {
        "status" => {
            let reply = api.call("GET", "sys/seal-status", None).await?;
            let mut body = reply.body.unwrap_or(Value::Null);
            if body.get("sealed").and_then(Value::as_bool) == Some(false) {
                // As `vault status`: the HA mode and the active node's address.
                let leader = api.call("GET", "sys/leader", None).await?;
                let leader = leader.body.unwrap_or(Value::Null);
                let enabled = leader.get("ha_enabled").and_then(Value::as_bool) == Some(true);
                if let Some(object) = body.as_object_mut() {
                    object.insert("ha_enabled".to_string(), Value::Bool(enabled));
                    if enabled {
                        let active = leader.get("is_self").and_then(Value::as_bool) == Some(true);
                        object.insert(
                            "ha_mode".to_string(),
                            Value::from(if active { "active" } else { "standby" }),
                        );
                        object.insert(
                            "active_node_address".to_string(),
                            leader.get("leader_address").cloned().unwrap_or(Value::Null),
                        );
                    }
                }
            }
            let text = out.bare(&body)?;
            if body.get("sealed").and_then(Value::as_bool) == Some(true) {
                return Err(CliError {
                    code: 2,
                    message: text,
                });
            }
            Ok(text)
        }
        "operator init" => {
            let shares: u64 = args
                .flag("key-shares")
                .unwrap_or("5")
                .parse()
                .map_err(|_| CliError::local("-key-shares must be a number"))?;
            let threshold: u64 = args
                .flag("key-threshold")
                .unwrap_or("3")
                .parse()
                .map_err(|_| CliError::local("-key-threshold must be a number"))?;
            let reply = api
                .call(
                    "PUT",
                    "sys/init",
                    Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
                )
                .await?;
            let body = reply.body.unwrap_or(Value::Null);
            let keys_b64 = body.get("keys_base64").cloned().unwrap_or(Value::Null);
            let keys_hex = body.get("keys").cloned().unwrap_or(Value::Null);
            let root = body
                .get("root_token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if out.json {
                return Ok(pretty(&json!({
                    "unseal_keys_b64": keys_b64, "unseal_keys_hex": keys_hex,
                    "unseal_shares": shares, "unseal_threshold": threshold, "root_token": root,
                })));
            }
            let mut text = String::new();
            for (index, key) in keys_b64.as_array().into_iter().flatten().enumerate() {
                text.push_str(&format!(
                    "Unseal Key {}: {}\n",
                    index + 1,
                    key.as_str().unwrap_or_default()
                ));
            }
            text.push_str(&format!("\nInitial Root Token: {root}\n\nCoffer is initialized with {shares} key shares and a key threshold of {threshold}.\nUnseal it with `coffer operator unseal` ({threshold} times)."));
            Ok(text)
        }
        "operator unseal" => {
            let body = if args.bool("reset") {
                json!({"reset": true})
            } else {
                let key = match args.positional.first() {
                    Some(key) => key.clone(),
                    None => read_stdin()?.trim().to_string(),
                };
                json!({ "key": key })
            };
            let reply = api.call("PUT", "sys/unseal", Some(body)).await?;
            out.bare(&reply.body.unwrap_or(Value::Null))
        }
        "operator seal" => {
            api.call("PUT", "sys/seal", None).await?;
            Ok("Success! Coffer is sealed.".to_string())
        }
        "login" if args.flag("method").is_some_and(|m| m != "token") => {
            // An auth method's login: `-method=approle role_id=... secret_id=...`, posted
            // to `auth/<-path or method>/login`; the token it returns is stored as with a
            // token login unless `-no-store`.
            let method = args.flag("method").unwrap_or_default();
            let mount = args
                .flag("path")
                .unwrap_or(method)
                .trim_matches('/')
                .to_string();
            let body = kv_args(&args.positional)?;
            let api = Api { token: None, ..api };
            let reply = api
                .call(
                    "PUT",
                    &format!("auth/{mount}/login"),
                    Some(Value::Object(body)),
                )
                .await?;
            let token = reply
                .body
                .as_ref()
                .and_then(|b| b.pointer("/auth/client_token"))
                .and_then(Value::as_str)
                .ok_or_else(|| CliError::api("the login returned no token"))?
                .to_string();
            if !args.bool("no-store")
                && let Some(file) = token_file()
            {
                crate::server::write_private(&file, token.as_bytes())
                    .map_err(|e| CliError::local(e.to_string()))?;
            }
            if args.bool("token-only") {
                return Ok(token);
            }
            let shown = out.secret(&reply)?;
            Ok(match (out.json, args.bool("no-store")) {
                (true, _) => shown,
                (false, true) => format!("Success! You are now authenticated.\n\n{shown}"),
                (false, false) => format!(
                    "Success! You are now authenticated. The token information displayed below\nis already stored in the token helper.\n\n{shown}"
                ),
            })
        }
        "login" => {
            let token = match args.positional.first() {
                Some(token) => token.clone(),
                None => read_stdin()?.trim().to_string(),
            };
            let api = Api {
                token: Some(token.clone()),
                ..api
            };
            api.call("GET", "auth/token/lookup-self", None).await?;
            if let Some(file) = token_file() {
                crate::server::write_private(&file, token.as_bytes())
                    .map_err(|e| CliError::local(e.to_string()))?;
            }
            Ok("Success! You are now authenticated.".to_string())
        }
        "read" => {
            let path = path_arg(0, "a path")?;
            let query = kv_args(args.positional.get(1..).unwrap_or_default())?;
            let query_string: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            let full = if query_string.is_empty() {
                path.clone()
            } else {
                format!("{path}?{}", query_string.join("&"))
            };
            match api.call("GET", &full, None).await {
                Err(e) if e.message.contains("Code: 404") => {
                    Err(CliError::api(format!("No value found at {path}")))
                }
                Err(e) => Err(e),
                Ok(reply) => out.secret(&reply),
            }
        }
        "list" => {
            let path = path_arg(0, "a path")?;
            match api.call("LIST", &path, None).await {
                Err(e) if e.message.contains("Code: 404") => {
                    Err(CliError::api(format!("No value found at {path}")))
                }
                Err(e) => Err(e),
                Ok(reply) => out.list(&reply),
            }
        }
        "write" => {
            let path = path_arg(0, "a path")?;
            let data = kv_args(args.positional.get(1..).unwrap_or_default())?;
            if data.is_empty() && !(args.bool("force") || args.bool("f")) {
                return Err(CliError::local("Must supply data or use -force"));
            }
            let body = if data.is_empty() {
                Value::Null
            } else {
                Value::Object(data)
            };
            let reply = api.call("PUT", &path, Some(body)).await?;
            if reply.body.is_none() {
                return Ok(if out.json {
                    String::new()
                } else {
                    format!("Success! Data written to: {path}")
                });
            }
            out.secret(&reply)
        }
        "delete" => {
            let path = path_arg(0, "a path")?;
            api.call("DELETE", &path, None).await?;
            Ok(format!("Success! Data deleted (if it existed) at: {path}"))
        }
        "secrets enable" => {
            let engine = path_arg(0, "an engine type")?;
            let path = args
                .flag("path")
                .map(|p| p.trim_matches('/').to_string())
                .unwrap_or_else(|| engine.clone());
            let config = flag_fields(&args, &MOUNT_TTL_FLAGS);
            let body = json!({ "type": engine, "description": args.flag("description").unwrap_or_default(), "config": config });
            api.call("POST", &format!("sys/mounts/{path}"), Some(body))
                .await?;
            Ok(format!(
                "Success! Enabled the {engine} secrets engine at: {path}/"
            ))
        }
        "secrets disable" => {
            let path = path_arg(0, "a mount path")?;
            api.call(
                "DELETE",
                &format!("sys/mounts/{}", path.trim_end_matches('/')),
                None,
            )
            .await?;
            Ok(format!(
                "Success! Disabled the secrets engine (if it existed) at: {}/",
                path.trim_end_matches('/')
            ))
        }
        "secrets list" => {
            let reply = api.call("GET", "sys/mounts", None).await?;
            mount_table(&out, &reply.body.unwrap_or(Value::Null))
        }
        "secrets tune" => {
            let path = path_arg(0, "a mount path")?;
            let mut body = flag_fields(&args, &MOUNT_TTL_FLAGS);
            body.extend(flag_fields(&args, &[("description", "description")]));
            api.call(
                "POST",
                &format!("sys/mounts/{}/tune", path.trim_end_matches('/')),
                Some(Value::Object(body)),
            )
            .await?;
            Ok(format!(
                "Success! Tuned the secrets engine at: {}/",
                path.trim_end_matches('/')
            ))
        }
        "token create" => {
            let mut body = Map::new();
            let policies = args.flag_all("policy");
            if !policies.is_empty() {
                body.insert("policies".to_string(), json!(policies));
            }
            for (flag, key) in [
                ("ttl", "ttl"),
                ("explicit-max-ttl", "explicit_max_ttl"),
                ("display-name", "display_name"),
                ("id", "id"),
                ("period", "period"),
                ("use-limit", "num_uses"),
            ] {
                if let Some(value) = args.flag(flag) {
                    body.insert(key.to_string(), json!(value));
                }
            }
            if let Some(renewable) = args.flag("renewable") {
                body.insert("renewable".to_string(), json!(renewable));
            }
            let path = match args.flag("role") {
                Some(role) => format!("auth/token/create/{role}"),
                None if args.bool("orphan") => "auth/token/create-orphan".to_string(),
                None => "auth/token/create".to_string(),
            };
            let reply = api.call("POST", &path, Some(Value::Object(body))).await?;
            out.secret(&reply)
        }
        "token lookup" => {
            let reply = match args.positional.first() {
                Some(token) => {
                    api.call("POST", "auth/token/lookup", Some(json!({ "token": token })))
                        .await?
                }
                None => api.call("GET", "auth/token/lookup-self", None).await?,
            };
            out.secret(&reply)
        }
        "token renew" => {
            let increment = args.flag("increment").unwrap_or("0");
            let reply = match args.positional.first() {
                Some(token) => {
                    api.call(
                        "PUT",
                        "auth/token/renew",
                        Some(json!({ "token": token, "increment": increment })),
                    )
                    .await?
                }
                None => {
                    api.call(
                        "PUT",
                        "auth/token/renew-self",
                        Some(json!({ "increment": increment })),
                    )
                    .await?
                }
            };
            out.secret(&reply)
        }
        "token revoke" => {
            match args.positional.first() {
                Some(token) if !args.bool("self") => {
                    api.call("POST", "auth/token/revoke", Some(json!({ "token": token })))
                        .await?
                }
                _ => api.call("POST", "auth/token/revoke-self", None).await?,
            };
            Ok("Success! Revoked token (if it existed)".to_string())
        }
        "token capabilities" => {
            let (token, path) = match args.positional.as_slice() {
                [path] => (None, path),
                [token, path] => (Some(token), path),
                _ => {
                    return Err(CliError::local(
                        "Usage: coffer token capabilities [TOKEN] PATH",
                    ));
                }
            };
            let path = path.trim_start_matches('/');
            let reply = match token {
                None => {
                    api.call(
                        "POST",
                        "sys/capabilities-self",
                        Some(json!({ "paths": [path] })),
                    )
                    .await?
                }
                Some(token) => {
                    api.call(
                        "POST",
                        "sys/capabilities",
                        Some(json!({ "token": token, "paths": [path] })),
                    )
                    .await?
                }
            };
            let body = reply.body.unwrap_or(Value::Null);
            let data = body.get("data").unwrap_or(&body);
            let mut capabilities: Vec<String> = data
                .get(path)
                .or_else(|| data.get("capabilities"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            capabilities.sort();
            if out.json {
                return Ok(pretty(&json!(capabilities)));
            }
            Ok(if capabilities.is_empty() {
                "deny".to_string()
            } else {
                capabilities.join(", ")
            })
        }
        "policy write" => {
            let name = path_arg(0, "a policy name and a file (or - for stdin)")?;
            let source = file_arg(1, "a file (or - for stdin) after the policy name")?;
            let text = if source == "-" {
                read_stdin()?
            } else {
                std::fs::read_to_string(&source)
                    .map_err(|e| CliError::local(format!("Error reading {source:?}: {e}")))?
            };
            api.call(
                "PUT",
                &format!("sys/policies/acl/{name}"),
                Some(json!({ "policy": text })),
            )
            .await?;
            Ok(format!("Success! Uploaded policy: {name}"))
        }
        "policy read" => {
            let name = path_arg(0, "a policy name")?;
            let reply = match api
                .call("GET", &format!("sys/policies/acl/{name}"), None)
                .await
            {
                Err(e) if e.message.contains("Code: 404") => {
                    return Err(CliError::api(format!("No policy named: {name}")));
                }
                other => other?,
            };
            let body = reply.body.unwrap_or(Value::Null);
            if out.json {
                return Ok(pretty(body.get("data").unwrap_or(&Value::Null)));
            }
            Ok(body
                .pointer("/data/policy")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim_end()
                .to_string())
        }
        "policy list" => {
            let reply = api.call("LIST", "sys/policies/acl", None).await?;
            out.list(&reply)
        }
        "policy delete" => {
            let name = path_arg(0, "a policy name")?;
            api.call("DELETE", &format!("sys/policies/acl/{name}"), None)
                .await?;
            Ok(format!("Success! Deleted policy: {name}"))
        }
        "policy fmt" => {
            let file = file_arg(0, "a policy file")?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::local(format!("Error reading {file:?}: {e}")))?;
            let formatted = format_policy(&text)
                .map_err(|e| CliError::local(format!("Error formatting {file}: {e}")))?;
            std::fs::write(&file, formatted)
                .map_err(|e| CliError::local(format!("Error writing {file:?}: {e}")))?;
            Ok(format!("Success! Formatted policy: {file}"))
        }
        "audit enable" => {
            let kind = path_arg(0, "an audit device type")?;
            let path = args
                .flag("path")
                .map(|p| p.trim_matches('/').to_string())
                .unwrap_or_else(|| kind.clone());
            let options = kv_args(args.positional.get(1..).unwrap_or_default())?;
            let body = json!({
                "type": kind,
                "description": args.flag("description").unwrap_or_default(),
                "options": options,
                "local": args.bool("local"),
            });
            api.call("PUT", &format!("sys/audit/{path}"), Some(body))
                .await?;
            Ok(format!(
                "Success! Enabled the {kind} audit device at: {path}/"
            ))
        }
        "audit disable" => {
            let path = path_arg(0, "an audit device path")?;
            let path = path.trim_end_matches('/');
            api.call("DELETE", &format!("sys/audit/{path}"), None)
                .await?;
            Ok(format!(
                "Success! Disabled audit device (if it was enabled) at: {path}/"
            ))
        }
        "audit list" => {
            let reply = api.call("GET", "sys/audit", None).await?;
            audit_table(
                &out,
                &reply.body.unwrap_or(Value::Null),
                args.bool("detailed"),
            )
        }
        "auth enable" => {
            let method = path_arg(0, "an auth method type")?;
            let path = args
                .flag("path")
                .map(|p| p.trim_matches('/').to_string())
                .unwrap_or_else(|| method.clone());
            let config = flag_fields(&args, &MOUNT_TTL_FLAGS);
            let body = json!({ "type": method, "description": args.flag("description").unwrap_or_default(), "config": config });
            api.call("POST", &format!("sys/auth/{path}"), Some(body))
                .await?;
            Ok(format!("Success! Enabled {method} auth method at: {path}/"))
        }
        "auth disable" => {
            let path = path_arg(0, "an auth method path")?;
            let path = path.trim_end_matches('/');
            api.call("DELETE", &format!("sys/auth/{path}"), None)
                .await?;
            Ok(format!(
                "Success! Disabled the auth method (if it existed) at: {path}/"
            ))
        }
        "auth list" => {
            let reply = api.call("GET", "sys/auth", None).await?;
            mount_table(&out, &reply.body.unwrap_or(Value::Null))
        }
        "auth tune" => {
            let path = path_arg(0, "an auth method path")?;
            let path = path.trim_end_matches('/');
            let mut body = flag_fields(&args, &MOUNT_TTL_FLAGS);
            body.extend(flag_fields(&args, &[("description", "description")]));
            api.call(
                "POST",
                &format!("sys/auth/{path}/tune"),
                Some(Value::Object(body)),
            )
            .await?;
            Ok(format!("Success! Tuned the auth method at: {path}/"))
        }
        "lease renew" => {
            let id = path_arg(0, "a lease id")?;
            let increment = args
                .flag("increment")
                .map(|v| json!(v))
                .unwrap_or(Value::Null);
            let reply = api
                .call(
                    "PUT",
                    "sys/leases/renew",
                    Some(json!({ "lease_id": id, "increment": increment })),
                )
                .await?;
            out.secret(&reply)
        }
        "lease revoke" => {
            let id = path_arg(0, "a lease id or prefix")?;
            if args.bool("force") || args.bool("f") {
                api.call("PUT", &format!("sys/leases/revoke-force/{id}"), None)
                    .await?;
                return Ok(format!(
                    "Success! Force revoked any leases with prefix: {id}"
                ));
            }
            if args.bool("prefix") {
                api.call("PUT", &format!("sys/leases/revoke-prefix/{id}"), None)
                    .await?;
                return Ok(format!("Success! Revoked any leases with prefix: {id}"));
            }
            api.call("PUT", "sys/leases/revoke", Some(json!({ "lease_id": id })))
                .await?;
            Ok("All revocation operations queued successfully!".to_string())
        }
        "lease lookup" => {
            let id = path_arg(0, "a lease id")?;
            let reply = api
                .call("PUT", "sys/leases/lookup", Some(json!({ "lease_id": id })))
                .await?;
            out.secret(&reply)
        }
        _ => Err(CliError::local(usage())),
    }
}

fn usage() -> String {
    "Usage: coffer <command> [args]\n\n\
     Common commands:\n    \
     read        Read data and retrieves secrets\n    \
     write       Write data, configuration, and secrets\n    \
     delete      Delete secrets and configuration\n    \
     list        List data or secrets\n    \
     login       Authenticate locally\n    \
     server      Start a Coffer server (-dev or -config FILE)\n    \
     status      Print seal and HA status\n\n\
     Other commands:\n    \
     audit       enable | disable | list [-detailed]\n    \
     auth        enable | disable | list | tune\n    \
     lease       renew | revoke [-prefix] [-force] | lookup\n    \
     operator    init | unseal | seal\n    \
     policy      write | read | list | delete | fmt\n    \
     secrets     enable | disable | list | tune\n    \
     token       create [-role] | lookup | renew | revoke | capabilities\n\n\
     Any request command takes -output-policy: print the ACL policy it needs, send nothing."
        .to_string()
}

/// The TTL flags of `secrets`/`auth` `enable` and `tune`, and the API fields they set.
const MOUNT_TTL_FLAGS: [(&str, &str); 2] = [
    ("default-lease-ttl", "default_lease_ttl"),
    ("max-lease-ttl", "max_lease_ttl"),
];

/// The given flags that are set, as API fields (`-max-lease-ttl=1h` → `max_lease_ttl`).
fn flag_fields(args: &Args, flags: &[(&str, &str)]) -> Map<String, Value> {
    flags
        .iter()
        .filter_map(|(flag, key)| args.flag(flag).map(|v| (key.to_string(), json!(v))))
        .collect()
}

/// A mount table (`sys/mounts`, `sys/auth`) as Vault's CLI prints it.
fn mount_table(out: &Output, body: &Value) -> Result<String, CliError> {
    let data = body.get("data").unwrap_or(&Value::Null);
    if out.json {
        return Ok(pretty(data));
    }
    let mut rows = vec![
        [
            "Path".to_string(),
            "Type".to_string(),
            "Accessor".to_string(),
            "Description".to_string(),
        ],
        [
            "----".to_string(),
            "----".to_string(),
            "--------".to_string(),
            "-----------".to_string(),
        ],
    ];
    if let Value::Object(mounts) = data {
        for (path, mount) in mounts {
            let field = |k: &str| {
                mount
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            rows.push([
                path.clone(),
                field("type"),
                field("accessor"),
                field("description"),
            ]);
        }
    }
    Ok(columns(&rows))
}

/// The audit device table (`sys/audit`) as Vault's CLI prints it; `-detailed` adds the
/// options.
fn audit_table(out: &Output, body: &Value, detailed: bool) -> Result<String, CliError> {
    let data = body.get("data").unwrap_or(&Value::Null);
    if out.json {
        return Ok(pretty(data));
    }
    let devices = data.as_object().filter(|d| !d.is_empty());
    let Some(devices) = devices else {
        return Ok("No audit devices are enabled.".to_string());
    };
    let mut header = vec!["Path", "Type", "Description"];
    if detailed {
        header.extend(["Replication", "Options"]);
    }
    let mut rows: Vec<[String; 5]> = vec![
        [0, 1, 2, 3, 4].map(|i| header.get(i).map(|h| h.to_string()).unwrap_or_default()),
        [0, 1, 2, 3, 4].map(|i| {
            header
                .get(i)
                .map(|h| "-".repeat(h.len()))
                .unwrap_or_default()
        }),
    ];
    for (path, device) in devices {
        let field = |k: &str| {
            device
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let options = device
            .get("options")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let (replication, options) = if detailed {
            ("replicated".to_string(), options)
        } else {
            (String::new(), String::new())
        };
        rows.push([
            path.clone(),
            field("type"),
            field("description"),
            replication,
            options,
        ]);
    }
    Ok(columns(&rows).trim_end().to_string())
}

/// What `-output-policy` prints for one request (Vault's `api/output_policy.go`): the
/// path without its query, `read`/`list`/`create, update`/`delete`, and `sudo` on the
/// paths that need it.
fn output_policy(method: &str, path: &str) -> String {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let path = path.trim_start_matches('/');
    let listing = query
        .split('&')
        .any(|pair| matches!(pair.split_once('='), Some(("list", v)) if crate::fields::parse_bool(v).unwrap_or(false)));
    let mut capabilities: Vec<&str> = match method {
        _ if listing => vec!["list"],
        "LIST" => vec!["list"],
        "POST" | "PUT" => vec!["create", "update"],
        "PATCH" => vec!["patch"],
        "DELETE" => vec!["delete"],
        _ => vec!["read"],
    };
    if crate::acl::sudo_required(path) {
        capabilities.push("sudo");
    }
    format!(
        "path \"{path}\" {{\n  capabilities = [\"{}\"]\n}}",
        capabilities.join("\", \"")
    )
}

/// `coffer policy fmt`: the policy checked as Coffer would store it, then printed in
/// canonical HCL.
fn format_policy(text: &str) -> Result<String, String> {
    crate::acl::Policy::parse("fmt", text).map_err(|e| e.to_string())?;
    let body: hcl::Body = hcl::parse(text).map_err(|e| e.to_string())?;
    use hcl::format::Format as _;
    // Arrays on one line, as Vault's `policy fmt` (hclwrite) leaves them.
    let mut formatter = hcl::format::Formatter::builder()
        .compact_arrays(true)
        .build_vec();
    let bytes = body.format_vec(&mut formatter).map_err(|e| e.to_string())?;
    let mut formatted = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    if !formatted.ends_with('\n') {
        formatted.push('\n');
    }
    Ok(formatted)
}

fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::local(format!("reading stdin: {e}")))?;
    Ok(text)
}

/// `k=v`, `k=@file` and `k=-` arguments into a JSON object of strings.
fn kv_args(items: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut data = Map::new();
    for item in items {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            CliError::local(format!(
                "Invalid key/value pair {item:?}: format must be key=value"
            ))
        })?;
        let value = if value == "-" {
            read_stdin()?
        } else if let Some(file) = value.strip_prefix('@') {
            std::fs::read_to_string(file)
                .map_err(|e| CliError::local(format!("Error reading file {file:?}: {e}")))?
        } else {
            value.to_string()
        };
        data.insert(key.to_string(), Value::String(value));
    }
    Ok(data)
}

struct Output {
    json: bool,
    field: Option<String>,
}

impl Output {
    fn new(args: &Args) -> Result<Self, CliError> {
        let json = match args.flag("format").unwrap_or("table") {
            "json" => true,
            "table" => false,
            other => {
                return Err(CliError::local(format!(
                    "Invalid output format: {other} (use json or table)"
                )));
            }
        };
        Ok(Self {
            json,
            field: args.flag("field").map(str::to_string),
        })
    }

    fn bare(&self, body: &Value) -> Result<String, CliError> {
        if self.json {
            return Ok(pretty(body));
        }
        let mut rows = vec![
            ["Key".to_string(), "Value".to_string()],
            ["---".to_string(), "-----".to_string()],
        ];
        if let Value::Object(map) = body {
            for (k, v) in map {
                rows.push([k.clone(), display(v)]);
            }
        }
        Ok(columns(&rows))
    }

    fn secret(&self, reply: &ApiReply) -> Result<String, CliError> {
        let Some(body) = &reply.body else {
            return Ok(String::from_utf8_lossy(&reply.raw).into_owned());
        };
        let auth = body.get("auth").filter(|a| !a.is_null());
        if let Some(field) = &self.field {
            let value = match auth {
                Some(auth) => auth_fields(auth)
                    .into_iter()
                    .find(|(k, _)| k == field)
                    .map(|(_, v)| v),
                None => None,
            }
            .or_else(|| body.get("data").and_then(|d| d.get(field)).cloned())
            .ok_or_else(|| CliError::local(format!("Field \"{field}\" not present in secret")))?;
            return Ok(match value {
                Value::String(s) => s,
                other => display(&other),
            });
        }
        if self.json {
            return Ok(pretty(body));
        }
        let mut rows = vec![
            ["Key".to_string(), "Value".to_string()],
            ["---".to_string(), "-----".to_string()],
        ];
        let lease_id = body
            .get("lease_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let duration = body
            .get("lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if !lease_id.is_empty() {
            rows.push(["lease_id".to_string(), lease_id.to_string()]);
        }
        if !lease_id.is_empty() || duration > 0 {
            rows.push(["lease_duration".to_string(), human_duration(duration)]);
            rows.push([
                "lease_renewable".to_string(),
                display(body.get("renewable").unwrap_or(&Value::Bool(false))),
            ]);
        }
        if let Some(auth) = auth {
            for (k, v) in auth_fields(auth) {
                rows.push([k, display(&v)]);
            }
        }
        if let Some(Value::Object(data)) = body.get("data") {
            for (k, v) in data {
                rows.push([k.clone(), display(v)]);
            }
        }
        let mut text = columns(&rows);
        if let Some(Value::Array(warnings)) = body.get("warnings") {
            let lines: Vec<String> = warnings
                .iter()
                .map(|w| format!("  * {}", w.as_str().unwrap_or_default()))
                .collect();
            text = format!(
                "WARNING! The following warnings were returned from Coffer:\n\n{}\n\n{text}",
                lines.join("\n")
            );
        }
        let _ = reply.status;
        Ok(text)
    }

    fn list(&self, reply: &ApiReply) -> Result<String, CliError> {
        let keys = reply
            .body
            .as_ref()
            .and_then(|b| b.get("data"))
            .and_then(|d| d.get("keys"))
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        if self.json {
            return Ok(pretty(&keys));
        }
        let mut text = "Keys\n----".to_string();
        for key in keys.as_array().into_iter().flatten() {
            text.push('\n');
            text.push_str(key.as_str().unwrap_or_default());
        }
        Ok(text)
    }
}

fn auth_fields(auth: &Value) -> Vec<(String, Value)> {
    let get = |k: &str| auth.get(k).cloned().unwrap_or(Value::Null);
    let duration = auth
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    vec![
        ("token".to_string(), get("client_token")),
        ("token_accessor".to_string(), get("accessor")),
        (
            "token_duration".to_string(),
            Value::String(if duration == 0 {
                "∞".to_string()
            } else {
                human_duration(duration)
            }),
        ),
        ("token_renewable".to_string(), get("renewable")),
        ("token_policies".to_string(), get("token_policies")),
        ("identity_policies".to_string(), get("identity_policies")),
        ("policies".to_string(), get("policies")),
    ]
}

/// Go's `%v` for JSON values, as the vault CLI prints them.
fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(display).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", display(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// `1h0m0s` → `1h`, `5m30s` stays: Vault's humanized durations.
fn human_duration(secs: u64) -> String {
    let text = go_duration(secs);
    let text = text
        .strip_suffix("m0s")
        .map(|t| format!("{t}m"))
        .unwrap_or(text);
    text.strip_suffix("h0m")
        .map(|t| format!("{t}h"))
        .unwrap_or(text)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("    ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_go() {
        let raw: Vec<String> = ["-path=pki_int", "-format", "json", "-force", "pki", "k=v"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let args = Args::parse(&raw);
        assert_eq!(args.flag("path"), Some("pki_int"));
        assert_eq!(args.flag("format"), Some("json"));
        assert!(args.bool("force"));
        assert_eq!(args.positional, vec!["pki", "k=v"]);
    }

    #[test]
    fn every_flag_read_as_a_boolean_takes_no_value() {
        let raw: Vec<String> = [
            "login",
            "-method=approle",
            "-no-store",
            "-token-only",
            "role_id=r",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let args = Args::parse(&raw);
        assert!(args.bool("no-store") && args.bool("token-only"));
        assert_eq!(args.positional, vec!["login", "role_id=r"]);
        // A flag `run` reads with `args.bool` must be listed, or it swallows the next word.
        let source = include_str!("cli.rs");
        for flag in source.split("args.bool(\"").skip(1) {
            let name = flag.split('"').next().unwrap_or_default();
            assert!(
                BOOLEAN_FLAGS.contains(&name),
                "-{name} is read as a boolean but not listed"
            );
        }
    }

    #[test]
    fn humanized_durations_and_values() {
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(2_764_800), "768h");
        assert_eq!(human_duration(90), "1m30s");
        assert_eq!(display(&json!(["a", "b"])), "[a b]");
    }
}
