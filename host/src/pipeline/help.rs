//! `?help=1` on any API path (Vault's help operation): the path's help text, its OpenAPI
//! fragment and `see_also`, built from the path table alone. No engine code runs.
//!
//! Who may ask: Vault lets any valid token ask for help on any path (its ACL fast-paths
//! the help operation) and anyone on an unauthenticated path. Coffer keeps the second
//! and narrows the first: a token that is not root must hold some capability (other than
//! `deny`) on the path (on a mount root: on the mount or below it, as Vault decides which
//! mounts a token sees), so a token cannot map mounts it has no business with, and a
//! refusal is the pipeline's 403 whether or not the path exists (see `docs/decisions.md`).

use hyper::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, Call, Reply};
use crate::core::Core;
use crate::system::openapi::{self, NativePath};

/// Whether the query asks for help: Vault's test is a non-empty first `help` value (so
/// `?help=1&help=0` is help, and so is `?help=false`).
pub(crate) fn requested(query: &[(String, String)]) -> bool {
    query
        .iter()
        .find(|(k, _)| k == "help")
        .is_some_and(|(_, v)| !v.is_empty())
}

/// Serves a help request the caller may make.
pub(crate) fn help(core: &Core, call: &Call, public: bool) -> Result<Reply, ApiError> {
    authorize(core, call, public)?;
    let path = call.path.trim_end_matches('/');
    let body = if path == "sys" || path.starts_with("sys/") {
        native(
            path,
            "sys/",
            openapi::SYS_PATHS,
            "The system backend: seal, mounts, policies, capabilities, leases.",
        )?
    } else if path == "auth/token" || path.starts_with("auth/token/") {
        native(
            path,
            "auth/token/",
            openapi::TOKEN_PATHS,
            "The token store: create, look up, renew and revoke tokens; token roles.",
        )?
    } else {
        engine(core, path)?
    };
    Ok(Reply::Bare(StatusCode::OK, body))
}

/// Public paths need nothing; root may ask anything; any other token needs some
/// capability on the path, or for a mount root on it or anywhere below it (Vault's
/// `hasMountAccess`).
fn authorize(core: &Core, call: &Call, public: bool) -> Result<(), ApiError> {
    let Some((_, token)) = &call.caller else {
        return if public {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        };
    };
    if public || token.is_root() {
        return Ok(());
    }
    let acl = core.policies.acl(&token.policies)?;
    let path = call.path.trim_end_matches('/');
    let mount_root = match path {
        "sys" => Some("sys/".to_string()),
        "auth/token" => Some("auth/token/".to_string()),
        _ => core
            .route(path)
            .filter(|(_, rest)| rest.is_empty())
            .map(|(mount, _)| mount.entry.path.clone()),
    };
    let granted = match mount_root {
        // Root help lists the mount's paths: Vault's test for showing a mount.
        Some(mount) => acl.has_mount_access(&mount),
        None => acl.capabilities(path).names() != ["deny"],
    };
    if granted {
        Ok(())
    } else {
        tracing::debug!(path = %call.path, "help denied by policy");
        Err(ApiError::forbidden())
    }
}

fn no_help(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no help for this path: {path:?} matches no route"),
    )
}

/// Help for `sys/` or `auth/token/` paths, from their native table.
fn native(
    path: &str,
    prefix: &str,
    table: &'static [NativePath],
    about: &str,
) -> Result<Value, ApiError> {
    let rest = path
        .strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or_default()
        .trim_start_matches('/');
    if rest.is_empty() {
        let mut text = format!("## DESCRIPTION\n\n{about}\n\n## PATHS\n\n{ROOT_PREAMBLE}\n\n");
        for entry in table {
            text.push_str(&format!(
                "    {}\n        {}\n\n",
                entry.template, entry.synopsis
            ));
        }
        let all: Vec<&NativePath> = table.iter().collect();
        return Ok(response(text, openapi::native_document(prefix, &all)));
    }
    let entry = table
        .iter()
        .find(|e| e.matches(rest))
        .ok_or_else(|| no_help(path))?;
    let fields: Vec<(&str, &str, &str)> = entry
        .fields
        .iter()
        .map(|(name, kind, description)| {
            let kind = match *kind {
                "integer" => "int",
                "boolean" => "bool",
                "array" => "comma-string slice",
                "object" => "map",
                "duration" => "duration (sec)",
                other => other,
            };
            (*name, kind, *description)
        })
        .collect();
    let text = path_text(
        path,
        &format!("{prefix}{}", entry.template),
        entry.synopsis,
        &fields,
        &entry.operations(),
    );
    Ok(response(text, openapi::native_document(prefix, &[entry])))
}

/// Help for a path of a mounted engine, from its path table.
fn engine(core: &Core, path: &str) -> Result<Value, ApiError> {
    let (mount, rest) = core.route(path).ok_or_else(|| no_help(path))?;
    let loaded = mount.engine.as_ref().map_err(|reason| {
        ApiError::internal(format!(
            "mount {} is unavailable: {reason}",
            mount.entry.path
        ))
    })?;
    if rest.is_empty() {
        let mut text = format!(
            "## DESCRIPTION\n\n{}\n\n## PATHS\n\n{ROOT_PREAMBLE}\n\n",
            non_empty(loaded.spec.help.trim(), "<no description>")
        );
        let mut patterns: Vec<(&str, &str)> = loaded
            .spec
            .paths
            .iter()
            .map(|p| (p.pattern.as_str(), p.synopsis.as_str()))
            .collect();
        patterns.sort_unstable();
        for (pattern, synopsis) in patterns {
            text.push_str(&format!(
                "    ^{pattern}$\n        {}\n\n",
                non_empty(synopsis.trim(), "<no synopsis>")
            ));
        }
        let document = openapi::engine_document(&mount.entry.path, loaded, &loaded.spec.paths);
        return Ok(response(text, document));
    }
    let (_, _, spec) = super::engine::matched(loaded, &rest).map_err(|_| no_help(path))?;
    let fields: Vec<(&str, &str, &str)> = spec
        .fields
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                openapi::vault_type(f.kind),
                f.description.as_str(),
            )
        })
        .collect();
    let operations: Vec<&str> = spec
        .operations
        .iter()
        .map(|o| match o {
            crate::runtime::Operation::Read => "read",
            crate::runtime::Operation::List => "list",
            crate::runtime::Operation::Create => "create",
            crate::runtime::Operation::Update => "update",
            crate::runtime::Operation::Delete => "delete",
        })
        .collect();
    let text = path_text(
        path,
        &format!("^{}$", spec.pattern),
        &spec.synopsis,
        &fields,
        &operations,
    );
    let document = openapi::engine_document(&mount.entry.path, loaded, [spec]);
    Ok(response(text, document))
}

const ROOT_PREAMBLE: &str = "The following paths are supported by this backend. To view help for\nany of the paths below, use the help command with any route matching\nthe path pattern. Note that depending on the policy of your auth token,\nyou may or may not be able to access certain paths.";

fn non_empty<'a>(text: &'a str, otherwise: &'a str) -> &'a str {
    if text.is_empty() { otherwise } else { text }
}

/// Vault's path help text: the request, the route, the synopsis, the fields
/// (alphabetical, with types), and a description (here: the operations offered).
fn path_text(
    request: &str,
    route: &str,
    synopsis: &str,
    fields: &[(&str, &str, &str)],
    operations: &[&str],
) -> String {
    let mut text = format!(
        "Request:        {request}\nMatching Route: {route}\n\n{}\n\n",
        non_empty(synopsis.trim(), "<no synopsis>")
    );
    if !fields.is_empty() {
        text.push_str("## PARAMETERS\n\n");
        let mut sorted = fields.to_vec();
        sorted.sort_unstable();
        for (name, kind, description) in sorted {
            text.push_str(&format!(
                "    {name} ({kind})\n\n        {}\n\n",
                non_empty(description.trim(), "<no description>")
            ));
        }
    }
    text.push_str(&format!(
        "## DESCRIPTION\n\nOperations: {}.\n",
        operations.join(", ")
    ));
    text
}

/// Vault's `HelpResponse` data, returned bare as Vault's help handler does.
fn response(help: String, openapi: Value) -> Value {
    json!({"help": help, "openapi": openapi, "see_also": []})
}

#[cfg(test)]
mod tests {
    use super::requested;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn help_is_a_non_empty_first_help_value() {
        assert!(requested(&query(&[("help", "1")])));
        assert!(requested(&query(&[("help", "true")])));
        assert!(requested(&query(&[
            ("list", "true"),
            ("help", "1"),
            ("help", "0")
        ])));
        assert!(requested(&query(&[("help", "0")])));
        assert!(!requested(&query(&[("help", "")])));
        assert!(!requested(&query(&[("help", ""), ("help", "1")])));
        assert!(!requested(&query(&[("helpx", "1")])));
        assert!(!requested(&[]));
    }
}
