//! `sys/internal/specs/openapi`: an OpenAPI 3.0 document of every mounted engine's path
//! table and of the native `sys/` and `auth/token/` paths, in Vault's shape (`/mount/...`
//! path templates with `{field}` parameters, `x-vault-unauthenticated`, request bodies as
//! `components.schemas`), generated from the tables themselves so it cannot drift from
//! what is served. The same pieces make `?help=1`'s `openapi` fragment ([`crate::pipeline::help`]).
//!
//! What it must never do: include a field's default when the field is sensitive (it
//! includes no defaults at all), or describe a path the router would not serve.

use std::collections::HashSet;

use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{Map, Value, json};

use crate::acl::Acl;
use crate::core::{Core, LoadedEngine};
use crate::runtime::{FieldKind, Operation, PathSpec};

/// Templates one pattern may expand to; an engine's optional parts multiply, and a
/// pattern beyond this is described by its first expansions only.
const MAX_TEMPLATES_PER_PATTERN: usize = 64;

/// The document for every mount that has a loaded engine, and for `sys/` and
/// `auth/token/`: those `acl` has access to (Vault's `hasMountAccess`: some capability on
/// the mount or below it; everything for root).
pub fn document(core: &Core, acl: &Acl) -> Value {
    let mut paths = Map::new();
    for mount in core.mounts() {
        let Ok(loaded) = mount.engine.as_ref() else {
            continue;
        };
        if !acl.has_mount_access(&mount.entry.path) {
            continue;
        }
        for spec in &loaded.spec.paths {
            engine_items(&mut paths, &mount.entry.path, loaded, spec);
        }
    }
    if acl.has_mount_access("sys/") {
        native_items(&mut paths, "sys/", SYS_PATHS);
    }
    if acl.has_mount_access("auth/token/") {
        native_items(&mut paths, "auth/token/", TOKEN_PATHS);
    }
    finish(paths)
}

/// A document of `specs`, entries of the path table of the engine mounted at `mount`
/// (with its trailing slash).
pub fn engine_document<'a>(
    mount: &str,
    loaded: &LoadedEngine,
    specs: impl IntoIterator<Item = &'a PathSpec>,
) -> Value {
    let mut paths = Map::new();
    for spec in specs {
        engine_items(&mut paths, mount, loaded, spec);
    }
    finish(paths)
}

/// A document of `entries`, native paths under `prefix` (`sys/`, `auth/token/`).
pub fn native_document(prefix: &str, entries: &[&NativePath]) -> Value {
    let mut paths = Map::new();
    for entry in entries {
        native_items(&mut paths, prefix, std::slice::from_ref(*entry));
    }
    finish(paths)
}

/// One field as the document describes it.
struct DocField<'a> {
    name: &'a str,
    kind: &'a str,
    format: Option<&'a str>,
    description: &'a str,
    required: bool,
}

/// What a path offers, as the document describes it.
#[derive(Clone, Copy, Default)]
struct Offers {
    read: bool,
    write: bool,
    delete: bool,
    list: bool,
}

fn engine_items(
    paths: &mut Map<String, Value>,
    mount: &str,
    loaded: &LoadedEngine,
    spec: &PathSpec,
) {
    let has = |op: Operation| spec.operations.iter().any(|o| *o as u8 == op as u8);
    let offers = Offers {
        read: has(Operation::Read),
        write: has(Operation::Create) || has(Operation::Update),
        delete: has(Operation::Delete),
        list: has(Operation::List),
    };
    let fields: Vec<DocField<'_>> = spec
        .fields
        .iter()
        .map(|f| {
            let (kind, format) = json_type(f.kind);
            DocField {
                name: &f.name,
                kind,
                format,
                description: &f.description,
                required: f.required,
            }
        })
        .collect();
    for template in templates(&spec.pattern) {
        let public = loaded
            .unauthenticated
            .iter()
            .any(|p| crate::core::public_match(p, example(&template).trim_start_matches('/')));
        let full = format!("/{}{template}", mount.trim_end_matches('/'));
        add_items(paths, &full, &spec.synopsis, &fields, offers, public);
    }
}

fn native_items(paths: &mut Map<String, Value>, prefix: &str, entries: &[NativePath]) {
    for entry in entries {
        let fields: Vec<DocField<'_>> = entry
            .fields
            .iter()
            .map(|(name, kind, description)| DocField {
                name,
                kind: if *kind == "duration" { "string" } else { kind },
                format: (*kind == "duration").then_some("duration"),
                description,
                required: false,
            })
            .collect();
        let full = format!("/{prefix}{}", entry.template);
        let full = full.trim_end_matches('/').to_string();
        add_items(
            paths,
            &full,
            entry.synopsis,
            &fields,
            entry.offers(),
            entry.public,
        );
    }
}

/// Adds the path item(s) for `full` (a `/`-rooted template): its read, write and delete
/// operations, and a list operation on `full/` (Vault's `?list=true` form).
fn add_items(
    paths: &mut Map<String, Value>,
    full: &str,
    synopsis: &str,
    fields: &[DocField<'_>],
    offers: Offers,
    public: bool,
) {
    let names = template_names(full);
    let parameters: Vec<Value> = names
        .iter()
        .map(|name| {
            let description = fields
                .iter()
                .find(|f| f.name == name)
                .map_or("", |f| f.description);
            json!({
                "name": name,
                "description": description,
                "in": "path",
                "required": true,
                "schema": {"type": "string"},
            })
        })
        .collect();
    let base = |item: &mut Map<String, Value>| {
        item.insert("description".into(), json!(synopsis));
        if !parameters.is_empty() {
            item.insert("parameters".into(), json!(parameters));
        }
        if public {
            item.insert("x-vault-unauthenticated".into(), json!(true));
        }
    };
    let id = |verb: &str| {
        let name: String = full
            .trim_start_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name: Vec<&str> = name.split('-').filter(|s| !s.is_empty()).collect();
        format!("{verb}-{}", name.join("-"))
    };
    let ok = json!({"200": {"description": "OK"}, "204": {"description": "empty body"}});
    let mut item = Map::new();
    base(&mut item);
    if offers.read {
        item.insert(
            "get".into(),
            json!({"operationId": id("read"), "summary": synopsis, "responses": ok}),
        );
    }
    if offers.write {
        let body_fields: Vec<&DocField<'_>> = fields
            .iter()
            .filter(|f| !names.iter().any(|n| n == f.name))
            .collect();
        let properties: Map<String, Value> = body_fields
            .iter()
            .map(|f| (f.name.to_string(), schema(f)))
            .collect();
        let required: Vec<&str> = body_fields
            .iter()
            .filter(|f| f.required)
            .map(|f| f.name)
            .collect();
        let mut body = Map::new();
        body.insert("type".into(), json!("object"));
        body.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            body.insert("required".into(), json!(required));
        }
        item.insert(
            "post".into(),
            json!({
                "operationId": id("write"),
                "summary": synopsis,
                "requestBody": {
                    "required": !required.is_empty(),
                    "content": {"application/json": {"schema": body}},
                },
                "responses": ok,
            }),
        );
    }
    if offers.delete {
        item.insert(
            "delete".into(),
            json!({"operationId": id("delete"), "summary": synopsis, "responses": ok}),
        );
    }
    if offers.list {
        let list_path = format!("{}/", full.trim_end_matches('/'));
        let mut list_item = Map::new();
        base(&mut list_item);
        list_item.insert(
            "get".into(),
            json!({
                "operationId": id("list"),
                "summary": synopsis,
                "parameters": [{
                    "name": "list",
                    "description": "Must be set to `true`",
                    "in": "query",
                    "required": true,
                    "schema": {"type": "string", "enum": ["true"]},
                }],
                "responses": ok,
            }),
        );
        if list_path == full {
            // `full` itself ends in `/`: its GET is the list.
            item.remove("get");
            merge(paths, list_path, list_item);
        } else {
            merge(paths, list_path, list_item);
        }
    }
    if item
        .keys()
        .any(|k| matches!(k.as_str(), "get" | "post" | "delete"))
    {
        merge(paths, full.to_string(), item);
    }
}

/// Adds `item` at `path`, keeping the operations an earlier entry already put there (the
/// router serves the first table entry that matches, so the first description wins).
fn merge(paths: &mut Map<String, Value>, path: String, item: Map<String, Value>) {
    match paths.get_mut(&path) {
        Some(Value::Object(existing)) => {
            for (key, value) in item {
                existing.entry(key).or_insert(value);
            }
        }
        _ => {
            paths.insert(path, Value::Object(item));
        }
    }
}

/// The `{name}` parameters of a template, in order.
fn template_names(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let tail = rest.get(start + 1..).unwrap_or_default();
        let Some(end) = tail.find('}') else { break };
        let name = tail.get(..end).unwrap_or_default().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    names
}

/// The document around `paths`: operation ids made unique, request bodies moved into
/// `components.schemas` (Vault names them `<Operation>Request`).
fn finish(mut paths: Map<String, Value>) -> Value {
    let mut ids = HashSet::new();
    let mut schemas = Map::new();
    for item in paths.values_mut() {
        let Value::Object(item) = item else { continue };
        for method in ["get", "post", "delete"] {
            let Some(Value::Object(operation)) = item.get_mut(method) else {
                continue;
            };
            let base = operation
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or(method)
                .to_string();
            let mut id = base.clone();
            let mut n = 2;
            while !ids.insert(id.clone()) {
                id = format!("{base}-{n}");
                n += 1;
            }
            operation.insert("operationId".into(), json!(id));
            let Some(content) = operation
                .get_mut("requestBody")
                .and_then(|b| b.get_mut("content"))
                .and_then(|c| c.get_mut("application/json"))
            else {
                continue;
            };
            let Some(schema) = content.get("schema").cloned() else {
                continue;
            };
            let name: String = id
                .trim_start_matches("write-")
                .split('-')
                .map(|word| {
                    let mut chars = word.chars();
                    chars
                        .next()
                        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default()
                })
                .collect::<String>()
                + "Request";
            let mut unique = name.clone();
            let mut n = 2;
            while schemas.contains_key(&unique) {
                unique = format!("{name}{n}");
                n += 1;
            }
            if let Value::Object(content) = content {
                content.insert(
                    "schema".into(),
                    json!({"$ref": format!("#/components/schemas/{unique}")}),
                );
            }
            schemas.insert(unique, schema);
        }
    }
    json!({
        "openapi": "3.0.2",
        "info": {
            "title": "Coffer API",
            "description": "HTTP API that gives you full access to Coffer. All API routes are prefixed with `/v1/`.",
            "version": super::VERSION,
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The JSON schema type (and format) of an engine field kind.
fn json_type(kind: FieldKind) -> (&'static str, Option<&'static str>) {
    match kind {
        FieldKind::String | FieldKind::Lowercase | FieldKind::SqlDsn | FieldKind::HttpsUrl => {
            ("string", None)
        }
        FieldKind::Int => ("integer", None),
        FieldKind::Bool => ("boolean", None),
        FieldKind::Duration => ("string", Some("duration")),
        FieldKind::Strings | FieldKind::CommaStrings => ("array", None),
        FieldKind::KeyValues => ("object", None),
    }
}

/// Vault's name for an engine field kind, as `?help=1` shows it.
pub fn vault_type(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::String | FieldKind::SqlDsn | FieldKind::HttpsUrl => "string",
        FieldKind::Lowercase => "lowercase string",
        FieldKind::Int => "int",
        FieldKind::Bool => "bool",
        FieldKind::Duration => "duration (sec)",
        FieldKind::Strings => "slice",
        FieldKind::CommaStrings => "comma-string slice",
        FieldKind::KeyValues => "map",
    }
}

fn schema(field: &DocField<'_>) -> Value {
    let mut schema = Map::new();
    schema.insert("type".into(), json!(field.kind));
    schema.insert("description".into(), json!(field.description));
    if let Some(format) = field.format {
        schema.insert("format".into(), json!(format));
    }
    if field.kind == "array" {
        schema.insert("items".into(), json!({"type": "string"}));
    }
    Value::Object(schema)
}

/// A path the host serves itself (`sys/`, `auth/token/`), as the document and
/// `?help=1` describe it.
pub struct NativePath {
    /// Below the backend's prefix; `{name}` stands for one or more segments.
    pub template: &'static str,
    /// What it offers: `r`ead, `w`rite, `d`elete, `l`ist.
    pub ops: &'static str,
    /// One-line summary.
    pub synopsis: &'static str,
    /// Body fields: name, JSON type (or `duration`), description.
    pub fields: &'static [(&'static str, &'static str, &'static str)],
    /// Served without a token.
    pub public: bool,
}

impl NativePath {
    fn offers(&self) -> Offers {
        Offers {
            read: self.ops.contains('r'),
            write: self.ops.contains('w'),
            delete: self.ops.contains('d'),
            list: self.ops.contains('l'),
        }
    }

    /// The operations, by Vault's names.
    pub fn operations(&self) -> Vec<&'static str> {
        [
            ('r', "read"),
            ('w', "update"),
            ('d', "delete"),
            ('l', "list"),
        ]
        .into_iter()
        .filter(|(c, _)| self.ops.contains(*c))
        .map(|(_, name)| name)
        .collect()
    }

    /// Whether `rest` (below the prefix, no trailing slash) is served by this entry.
    pub fn matches(&self, rest: &str) -> bool {
        let template: Vec<&str> = self.template.split('/').filter(|s| !s.is_empty()).collect();
        let path: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        segments_match(&template, &path)
    }
}

fn segments_match(template: &[&str], path: &[&str]) -> bool {
    match (template.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((head, tail)), Some(_)) if head.starts_with('{') => {
            // One or more segments.
            (1..=path.len()).any(|n| segments_match(tail, path.get(n..).unwrap_or_default()))
        }
        (Some((head, tail)), Some((segment, rest))) => {
            head == segment && segments_match(tail, rest)
        }
        _ => false,
    }
}

const MOUNT_FIELDS: &[(&str, &str, &str)] = &[
    (
        "type",
        "string",
        "The engine to mount (a name in the plugin catalog).",
    ),
    ("plugin_name", "string", "Alias of `type`."),
    (
        "description",
        "string",
        "User-friendly description of the mount.",
    ),
    (
        "config",
        "object",
        "Mount configuration: default_lease_ttl, max_lease_ttl, and Coffer's engine_call_timeout and engine_memory_limit.",
    ),
    ("options", "object", "Engine options (string map)."),
];

const TUNE_FIELDS: &[(&str, &str, &str)] = &[
    (
        "default_lease_ttl",
        "duration",
        "The mount's default lease TTL.",
    ),
    (
        "max_lease_ttl",
        "duration",
        "The mount's maximum lease TTL.",
    ),
    (
        "description",
        "string",
        "User-friendly description of the mount.",
    ),
    (
        "engine_call_timeout",
        "duration",
        "Coffer: how long one engine call may run (sudo).",
    ),
    (
        "engine_memory_limit",
        "integer",
        "Coffer: the engine instance's memory limit in bytes (sudo).",
    ),
];

const POLICY_FIELDS: &[(&str, &str, &str)] =
    &[("policy", "string", "The policy document, in HCL or JSON.")];

const PATHS_FIELD: (&str, &str, &str) = ("paths", "array", "The paths to report capabilities on.");

const LEASE_FIELD: (&str, &str, &str) = ("lease_id", "string", "The lease's id.");

/// The `sys/` paths Coffer serves.
pub const SYS_PATHS: &[NativePath] = &[
    NativePath {
        template: "health",
        ops: "r",
        synopsis: "Checks the health of the server.",
        fields: &[],
        public: true,
    },
    NativePath {
        template: "leader",
        ops: "r",
        synopsis: "Returns the HA status: whether this node is active and the active node's address.",
        fields: &[],
        public: true,
    },
    NativePath {
        template: "ha-status",
        ops: "r",
        synopsis: "Lists the nodes of an HA cluster that are alive, and which one is active.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "step-down",
        ops: "w",
        synopsis: "Makes the active node give up the HA lock (sudo).",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "metrics",
        ops: "r",
        synopsis: "This node's metrics in Prometheus' text format (format=prometheus).",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "seal-status",
        ops: "r",
        synopsis: "Returns the seal status.",
        fields: &[],
        public: true,
    },
    NativePath {
        template: "init",
        ops: "rw",
        synopsis: "Returns or sets the initialization status (initializing creates the unseal key shares and the root token).",
        fields: &[
            (
                "secret_shares",
                "integer",
                "Number of unseal key shares to create.",
            ),
            (
                "secret_threshold",
                "integer",
                "Number of shares needed to unseal.",
            ),
        ],
        public: true,
    },
    NativePath {
        template: "unseal",
        ops: "w",
        synopsis: "Submits an unseal key share.",
        fields: &[
            ("key", "string", "An unseal key share, hex or base64."),
            ("reset", "boolean", "Discards the shares submitted so far."),
        ],
        public: true,
    },
    NativePath {
        template: "seal",
        ops: "w",
        synopsis: "Seals the server (root).",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "mounts",
        ops: "r",
        synopsis: "Lists the mounted secrets engines.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "mounts/{path}/tune",
        ops: "rw",
        synopsis: "Reads or tunes a mount's configuration.",
        fields: TUNE_FIELDS,
        public: false,
    },
    NativePath {
        template: "mounts/{path}",
        ops: "rwd",
        synopsis: "Reads, mounts or unmounts a secrets engine at a path.",
        fields: MOUNT_FIELDS,
        public: false,
    },
    NativePath {
        template: "policy",
        ops: "r",
        synopsis: "Lists the ACL policies.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "policy/{name}",
        ops: "rwd",
        synopsis: "Reads, writes or deletes an ACL policy.",
        fields: POLICY_FIELDS,
        public: false,
    },
    NativePath {
        template: "policies/acl",
        ops: "l",
        synopsis: "Lists the ACL policies.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "policies/acl/{name}",
        ops: "rwd",
        synopsis: "Reads, writes or deletes an ACL policy.",
        fields: POLICY_FIELDS,
        public: false,
    },
    NativePath {
        template: "capabilities",
        ops: "w",
        synopsis: "A token's capabilities on paths.",
        fields: &[("token", "string", "The token to check."), PATHS_FIELD],
        public: false,
    },
    NativePath {
        template: "capabilities-accessor",
        ops: "w",
        synopsis: "The capabilities on paths of the token with an accessor.",
        fields: &[("accessor", "string", "The token's accessor."), PATHS_FIELD],
        public: false,
    },
    NativePath {
        template: "capabilities-self",
        ops: "w",
        synopsis: "The calling token's capabilities on paths.",
        fields: &[PATHS_FIELD],
        public: false,
    },
    NativePath {
        template: "internal/specs/openapi",
        ops: "r",
        synopsis: "This OpenAPI document.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "internal/ui/mounts/{path}",
        ops: "r",
        synopsis: "The mount serving a path.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "plugins/catalog",
        ops: "r",
        synopsis: "Lists the engines in the plugin catalog.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "leases",
        ops: "r",
        synopsis: "Lists irrevocable leases (`type=irrevocable`).",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "leases/lookup",
        ops: "w",
        synopsis: "Looks up a lease.",
        fields: &[LEASE_FIELD],
        public: false,
    },
    NativePath {
        template: "leases/lookup/{prefix}",
        ops: "l",
        synopsis: "Lists the leases under a prefix.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "leases/renew",
        ops: "w",
        synopsis: "Renews a lease.",
        fields: &[
            LEASE_FIELD,
            ("increment", "duration", "The requested extension."),
        ],
        public: false,
    },
    NativePath {
        template: "leases/revoke",
        ops: "w",
        synopsis: "Revokes a lease.",
        fields: &[LEASE_FIELD],
        public: false,
    },
    NativePath {
        template: "leases/revoke-prefix/{prefix}",
        ops: "w",
        synopsis: "Revokes every lease under a prefix (sudo).",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "leases/revoke-force/{prefix}",
        ops: "w",
        synopsis: "Forgets every lease under a prefix without revoking its secret (sudo).",
        fields: &[],
        public: false,
    },
];

const CREATE_FIELDS: &[(&str, &str, &str)] = &[
    ("id", "string", "The token's id (root only)."),
    (
        "policies",
        "array",
        "Policies of the token (a subset of the caller's unless root).",
    ),
    ("meta", "object", "Metadata (string map)."),
    ("no_parent", "boolean", "Creates an orphan (root or sudo)."),
    (
        "no_default_policy",
        "boolean",
        "Leaves the default policy out.",
    ),
    ("renewable", "boolean", "Whether the token may be renewed."),
    ("ttl", "duration", "The token's TTL."),
    (
        "explicit_max_ttl",
        "duration",
        "A hard limit on the token's life.",
    ),
    ("period", "duration", "Makes a periodic token."),
    ("display_name", "string", "Display name."),
    ("num_uses", "integer", "Uses the token has (0: unlimited)."),
    ("type", "string", "Only `service` is supported."),
];

const TOKEN_FIELD: (&str, &str, &str) = ("token", "string", "The token.");
const ACCESSOR_FIELD: (&str, &str, &str) = ("accessor", "string", "The token's accessor.");
const INCREMENT_FIELD: (&str, &str, &str) = ("increment", "duration", "The requested extension.");

/// The `auth/token/` paths Coffer serves.
pub const TOKEN_PATHS: &[NativePath] = &[
    NativePath {
        template: "create",
        ops: "w",
        synopsis: "Creates a child token.",
        fields: CREATE_FIELDS,
        public: false,
    },
    NativePath {
        template: "create-orphan",
        ops: "w",
        synopsis: "Creates an orphan token.",
        fields: CREATE_FIELDS,
        public: false,
    },
    NativePath {
        template: "create/{role_name}",
        ops: "w",
        synopsis: "Creates a token from a role.",
        fields: CREATE_FIELDS,
        public: false,
    },
    NativePath {
        template: "lookup",
        ops: "rw",
        synopsis: "Looks up a token.",
        fields: &[TOKEN_FIELD],
        public: false,
    },
    NativePath {
        template: "lookup-self",
        ops: "r",
        synopsis: "Looks up the calling token.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "lookup-accessor",
        ops: "w",
        synopsis: "Looks up a token by accessor.",
        fields: &[ACCESSOR_FIELD],
        public: false,
    },
    NativePath {
        template: "renew",
        ops: "w",
        synopsis: "Renews a token.",
        fields: &[TOKEN_FIELD, INCREMENT_FIELD],
        public: false,
    },
    NativePath {
        template: "renew-self",
        ops: "w",
        synopsis: "Renews the calling token.",
        fields: &[INCREMENT_FIELD],
        public: false,
    },
    NativePath {
        template: "renew-accessor",
        ops: "w",
        synopsis: "Renews a token by accessor.",
        fields: &[ACCESSOR_FIELD, INCREMENT_FIELD],
        public: false,
    },
    NativePath {
        template: "revoke",
        ops: "w",
        synopsis: "Revokes a token and its children.",
        fields: &[TOKEN_FIELD],
        public: false,
    },
    NativePath {
        template: "revoke-self",
        ops: "w",
        synopsis: "Revokes the calling token and its children.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "revoke-accessor",
        ops: "w",
        synopsis: "Revokes a token by accessor.",
        fields: &[ACCESSOR_FIELD],
        public: false,
    },
    NativePath {
        template: "revoke-orphan",
        ops: "w",
        synopsis: "Revokes a token, orphaning its children (root or sudo).",
        fields: &[TOKEN_FIELD],
        public: false,
    },
    NativePath {
        template: "accessors",
        ops: "l",
        synopsis: "Lists token accessors (sudo).",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "roles",
        ops: "l",
        synopsis: "Lists token roles.",
        fields: &[],
        public: false,
    },
    NativePath {
        template: "roles/{role_name}",
        ops: "rwd",
        synopsis: "Reads, writes or deletes a token role.",
        fields: &[
            (
                "allowed_policies",
                "array",
                "Policies tokens of the role may have.",
            ),
            (
                "disallowed_policies",
                "array",
                "Policies tokens of the role may not have.",
            ),
            ("orphan", "boolean", "Tokens of the role are orphans."),
            ("renewable", "boolean", "Tokens of the role may be renewed."),
            ("path_suffix", "string", "Suffix of the tokens' path."),
            ("token_type", "string", "Only `service` is supported."),
            (
                "token_period",
                "duration",
                "Makes the role's tokens periodic.",
            ),
            (
                "token_explicit_max_ttl",
                "duration",
                "A hard limit on the life of the role's tokens.",
            ),
            (
                "token_no_default_policy",
                "boolean",
                "Leaves the default policy out.",
            ),
            (
                "token_num_uses",
                "integer",
                "Uses each token of the role has (0: unlimited).",
            ),
            (
                "allowed_policies_glob",
                "array",
                "Policy globs tokens of the role may have.",
            ),
            (
                "disallowed_policies_glob",
                "array",
                "Policy globs tokens of the role may not have.",
            ),
        ],
        public: false,
    },
];

/// A concrete path for `template`: each `{field}` becomes `x`.
pub fn example(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_field = false;
    for c in template.chars() {
        match c {
            '{' => in_field = true,
            '}' if in_field => {
                in_field = false;
                out.push('x');
            }
            _ if in_field => {}
            _ => out.push(c),
        }
    }
    out
}

/// The path templates a table pattern stands for, each starting with `/`: literal text
/// as is, a named capture as `{name}`, each branch of an alternation and each choice of
/// an optional part as its own template. Other classes and repetitions stand for one
/// instance (their first character).
pub fn templates(pattern: &str) -> Vec<String> {
    let Ok(hir) = regex_syntax::parse(pattern) else {
        return Vec::new();
    };
    let mut out: Vec<String> = expand(&hir).into_iter().map(|t| format!("/{t}")).collect();
    out.sort();
    out.dedup();
    out
}

fn expand(hir: &Hir) -> Vec<String> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => vec![String::new()],
        HirKind::Literal(literal) => vec![String::from_utf8_lossy(&literal.0).into_owned()],
        HirKind::Class(class) => vec![first_of(class)],
        HirKind::Capture(capture) => match &capture.name {
            Some(name) => vec![format!("{{{name}}}")],
            None => expand(&capture.sub),
        },
        HirKind::Repetition(repetition) => {
            let once = expand(&repetition.sub);
            if repetition.min == 0 {
                let mut choices = vec![String::new()];
                choices.extend(once);
                choices
            } else {
                once
            }
        }
        HirKind::Concat(parts) => parts.iter().fold(vec![String::new()], |prefixes, part| {
            let tails = expand(part);
            prefixes
                .iter()
                .flat_map(|p| tails.iter().map(move |t| format!("{p}{t}")))
                .take(MAX_TEMPLATES_PER_PATTERN)
                .collect()
        }),
        HirKind::Alternation(branches) => branches
            .iter()
            .flat_map(expand)
            .take(MAX_TEMPLATES_PER_PATTERN)
            .collect(),
    }
}

fn first_of(class: &Class) -> String {
    match class {
        Class::Unicode(class) => class
            .ranges()
            .first()
            .map(|r| r.start().to_string())
            .unwrap_or_default(),
        Class::Bytes(class) => class
            .ranges()
            .first()
            .map(|r| char::from(r.start()).to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_to_vault_style_templates() {
        assert_eq!(
            templates("ca(/pem)?|ca_chain|crl(/pem)?"),
            vec!["/ca", "/ca/pem", "/ca_chain", "/crl", "/crl/pem"]
        );
        assert_eq!(
            templates("issuer/(?P<issuer_ref>[^/]+)/(?P<fetch>pem|der|json)"),
            vec!["/issuer/{issuer_ref}/{fetch}"]
        );
        assert_eq!(templates("certs/?"), vec!["/certs", "/certs/"]);
        assert_eq!(
            templates("sign-verbatim(/(?P<role>\\w+))?"),
            vec!["/sign-verbatim", "/sign-verbatim/{role}"]
        );
        assert_eq!(example("/issuer/{issuer_ref}/{fetch}"), "/issuer/x/x");
    }

    #[test]
    fn native_templates_match_paths_with_slashes_in_parameters() {
        let find = |rest: &str| {
            SYS_PATHS
                .iter()
                .find(|e| e.matches(rest))
                .map(|e| e.template)
        };
        assert_eq!(find("mounts"), Some("mounts"));
        assert_eq!(find("mounts/a/b/tune"), Some("mounts/{path}/tune"));
        assert_eq!(find("mounts/a/b"), Some("mounts/{path}"));
        assert_eq!(find("mounts/tune"), Some("mounts/{path}"));
        assert_eq!(
            find("leases/revoke-prefix/database/creds/x"),
            Some("leases/revoke-prefix/{prefix}")
        );
        assert_eq!(find("leases/lookup"), Some("leases/lookup"));
        assert_eq!(find("nope"), None);
        assert_eq!(find("policy/a/b"), Some("policy/{name}"));
        assert_eq!(template_names("/a/{x}/b/{y}/{x}"), vec!["x", "y"]);
        assert_eq!(template_names("/a/{x"), Vec::<String>::new());
    }

    #[test]
    fn every_native_template_is_described_without_duplicates() {
        let document = native_document("sys/", &SYS_PATHS.iter().collect::<Vec<_>>());
        let paths = document
            .pointer("/paths")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        assert!(paths.contains_key("/sys/mounts/{path}/tune"));
        assert!(paths.contains_key("/sys/policies/acl/"));
        assert!(
            document
                .pointer("/components/schemas")
                .and_then(Value::as_object)
                .is_some_and(|s| s.contains_key("SysMountsPathTuneRequest")),
            "{document}"
        );
    }
}
