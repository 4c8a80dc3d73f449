//! `sys/internal/specs/openapi`: an OpenAPI 3 document of every mounted engine's path
//! table, in Vault's shape (path templates with `{field}` parameters, `x-vault-*`
//! extensions), generated from the tables themselves so it cannot drift from what is
//! served.
//!
//! What it must never do: include a field's default when the field is sensitive (it
//! includes no defaults at all), or describe a path the router would not serve.

use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{Map, Value, json};

use hyper::StatusCode;

use crate::core::{Core, LoadedEngine, Mount};
use crate::logical::{ApiError, Reply};
use crate::runtime::{FieldKind, Operation, PathSpec};

/// Templates one pattern may expand to; an engine's optional parts multiply, and a
/// pattern beyond this is described by its first expansions only.
const MAX_TEMPLATES_PER_PATTERN: usize = 64;

/// The document for every mount that has a loaded engine.
pub fn document(core: &Core) -> Value {
    let mut paths = Map::new();
    for mount in core.mounts() {
        let Ok(loaded) = mount.engine.as_ref() else {
            continue;
        };
        for spec in &loaded.spec.paths {
            describe_path(&mut paths, &mount.entry.path, loaded, spec);
        }
    }
    wrap(paths)
}

/// An OpenAPI 3 document around `paths`.
fn wrap(paths: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.0.2",
        "info": {
            "title": "Coffer API",
            "description": "HTTP API that gives you full access to Coffer. All API routes are prefixed with `/v1/`.",
            "version": super::VERSION,
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "paths": paths,
        "components": {"schemas": {}},
    })
}

/// Adds the OpenAPI path items of one path-table entry of the engine mounted at
/// `mount_path`.
fn describe_path(
    paths: &mut Map<String, Value>,
    mount_path: &str,
    loaded: &LoadedEngine,
    spec: &PathSpec,
) {
    for template in templates(&spec.pattern) {
        let public_reads = loaded
            .unauthenticated
            .iter()
            .any(|p| crate::core::public_match(p, example(&template).trim_start_matches('/')));
        let full = format!("/{}{template}", mount_path.trim_end_matches('/'));
        let mut item = Map::new();
        item.insert("description".into(), json!(spec.synopsis));
        let parameters: Vec<Value> = spec
            .fields
            .iter()
            .filter(|f| template.contains(&format!("{{{}}}", f.name)))
            .map(|f| {
                json!({
                    "name": f.name,
                    "description": f.description,
                    "in": "path",
                    "required": true,
                    "schema": {"type": "string"},
                })
            })
            .collect();
        if !parameters.is_empty() {
            item.insert("parameters".into(), json!(parameters));
        }
        if public_reads {
            item.insert("x-vault-unauthenticated".into(), json!(true));
        }
        let body_fields: Vec<_> = spec
            .fields
            .iter()
            .filter(|f| !template.contains(&format!("{{{}}}", f.name)))
            .collect();
        let has = |op: Operation| spec.operations.iter().any(|o| *o as u8 == op as u8);
        let operation_id = |verb: &str| {
            let name: String = template
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            format!("{verb}-{}{}", mount_path.trim_end_matches('/'), name)
        };
        let ok = json!({"200": {"description": "OK"}, "204": {"description": "empty body"}});
        if has(Operation::Read) {
            item.insert(
                "get".into(),
                json!({"operationId": operation_id("read"), "summary": spec.synopsis, "responses": ok}),
            );
        }
        if has(Operation::Create) || has(Operation::Update) {
            let properties: Map<String, Value> = body_fields
                .iter()
                .map(|f| (f.name.clone(), schema(f.kind, &f.description)))
                .collect();
            let required: Vec<&str> = body_fields
                .iter()
                .filter(|f| f.required)
                .map(|f| f.name.as_str())
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
                    "operationId": operation_id("write"),
                    "summary": spec.synopsis,
                    "requestBody": {"content": {"application/json": {"schema": body}}},
                    "responses": ok,
                }),
            );
        }
        if has(Operation::Delete) {
            item.insert(
                "delete".into(),
                json!({"operationId": operation_id("delete"), "summary": spec.synopsis, "responses": ok}),
            );
        }
        if has(Operation::List) {
            let list_path = if full.ends_with('/') {
                full.clone()
            } else {
                format!("{full}/")
            };
            let mut list_item = Map::new();
            list_item.insert("description".into(), json!(spec.synopsis));
            if let Some(parameters) = item.get("parameters") {
                list_item.insert("parameters".into(), parameters.clone());
            }
            if public_reads {
                list_item.insert("x-vault-unauthenticated".into(), json!(true));
            }
            list_item.insert(
                "get".into(),
                json!({
                    "operationId": operation_id("list"),
                    "summary": spec.synopsis,
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
                item.extend(list_item.into_iter().filter(|(k, _)| k == "get"));
            } else {
                paths.insert(list_path, Value::Object(list_item));
            }
        }
        if item
            .keys()
            .any(|k| matches!(k.as_str(), "get" | "post" | "delete"))
        {
            paths.insert(full, Value::Object(item));
        }
    }
}

/// Vault's help (`GET /v1/<path>?help=1`) for an engine path, from its path table: the
/// route, synopsis and fields as text, and the OpenAPI of that path. On the mount itself
/// (`rest` empty) the engine's description and every route. No engine code runs.
pub(crate) fn help(mount: &Mount, loaded: &LoadedEngine, rest: &str) -> Result<Reply, ApiError> {
    let mut paths = Map::new();
    let text = if rest.is_empty() {
        let mut routes: Vec<&PathSpec> = loaded.spec.paths.iter().collect();
        routes.sort_by(|a, b| a.pattern.cmp(&b.pattern));
        let mut text = format!(
            "## DESCRIPTION\n\n{}\n\n## PATHS\n\nThe following paths are supported by this backend. To view help for\nany of the paths below, use the help command with any route matching\nthe path pattern. Note that depending on the policy of your auth token,\nyou may or may not be able to access certain paths.\n\n",
            or_none(&loaded.spec.help, "<no description>")
        );
        for spec in routes {
            text.push_str(&format!(
                "    ^{}$\n        {}\n\n",
                spec.pattern,
                or_none(&spec.synopsis, "<no synopsis>")
            ));
            describe_path(&mut paths, &mount.entry.path, loaded, spec);
        }
        text
    } else {
        let (_, _, spec) = crate::pipeline::engine::matched(loaded, rest)?;
        let mut fields: Vec<_> = spec.fields.iter().collect();
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        let mut text = format!(
            "Request:        {rest}\nMatching Route: ^{}$\n\n{}\n\n",
            spec.pattern,
            or_none(&spec.synopsis, "<no synopsis>")
        );
        if !fields.is_empty() {
            text.push_str("## PARAMETERS\n\n");
            for field in fields {
                text.push_str(&format!(
                    "    {} ({}{})\n        {}\n\n",
                    field.name,
                    kind_name(field.kind),
                    if field.required { ", required" } else { "" },
                    or_none(&field.description, "<no description>")
                ));
            }
        }
        text.push_str(&format!(
            "## DESCRIPTION\n\n{}",
            or_none(&spec.synopsis, "<no description>")
        ));
        describe_path(&mut paths, &mount.entry.path, loaded, spec);
        text
    };
    Ok(Reply::Bare(
        StatusCode::OK,
        json!({ "help": text, "openapi": wrap(paths), "see_also": Value::Null }),
    ))
}

fn or_none<'a>(text: &'a str, none: &'a str) -> &'a str {
    if text.trim().is_empty() {
        none
    } else {
        text.trim()
    }
}

/// A field kind as Vault's help names types.
fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::String | FieldKind::Lowercase | FieldKind::SqlDsn => "string",
        FieldKind::Int => "int",
        FieldKind::Bool => "bool",
        FieldKind::Duration => "duration (sec)",
        FieldKind::Strings => "slice",
        FieldKind::CommaStrings => "comma-string slice",
        FieldKind::KeyValues => "map",
    }
}

fn schema(kind: FieldKind, description: &str) -> Value {
    let (kind, format) = match kind {
        FieldKind::String | FieldKind::Lowercase | FieldKind::SqlDsn => ("string", None),
        FieldKind::Int => ("integer", None),
        FieldKind::Bool => ("boolean", None),
        FieldKind::Duration => ("string", Some("duration")),
        FieldKind::Strings | FieldKind::CommaStrings => ("array", None),
        FieldKind::KeyValues => ("object", None),
    };
    let mut schema = Map::new();
    schema.insert("type".into(), json!(kind));
    schema.insert("description".into(), json!(description));
    if let Some(format) = format {
        schema.insert("format".into(), json!(format));
    }
    if kind == "array" {
        schema.insert("items".into(), json!({"type": "string"}));
    }
    Value::Object(schema)
}

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
}
