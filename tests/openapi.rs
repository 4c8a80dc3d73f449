//! Help and OpenAPI from the path tables: `sys/internal/specs/openapi` is a valid OpenAPI
//! 3.0 document (checked by `openapi-spec-validator`, installed by `scripts/test` into
//! `target/clients-venv`, or the venv named by `COFFER_CLIENTS_VENV`) covering every
//! mount and the native paths; `?help=1` answers Vault's help shape from the table
//! without running the engine, and only to callers that may see the path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use coffer_tests::{Coffer, Reply, Value, json, run_python, temp_dir};

/// Validates `document` with `openapi_spec_validator.validate`, failing the test with
/// the validator's message if it is not a valid OpenAPI document.
fn validate(document: &Value, label: &str) {
    let file = temp_dir("openapi").join(format!("{label}.json"));
    std::fs::write(&file, document.to_string()).unwrap();
    let script = r#"
import json, sys
from openapi_spec_validator import validate
with open(sys.argv[1]) as f:
    document = json.load(f)
validate(document)
print("ok")
"#;
    run_python(script, &[file.to_str().unwrap()]);
}

fn get(coffer: &Coffer, token: Option<&str>, path: &str) -> Reply {
    coffer.raw("GET", path, token, None, &[])
}

/// The request body schema of `operation`, resolved through `components.schemas`.
fn request_schema<'a>(document: &'a Value, operation: &'a Value) -> &'a Value {
    let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.strip_prefix("#/components/schemas/").unwrap();
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[test]
fn the_openapi_document_is_valid_and_covers_every_mount() {
    let coffer = Coffer::dev();
    let reply = coffer.call("GET", "sys/internal/specs/openapi", None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let document = &reply.json;
    validate(document, "document");
    assert_eq!(document["openapi"], json!("3.0.2"));
    let paths = document["paths"].as_object().unwrap();
    for mount in ["/pki/", "/database/", "/secret/", "/sys/", "/auth/token/"] {
        assert!(
            paths.keys().any(|p| p.starts_with(mount)),
            "{mount} is missing: {:?}",
            paths.keys()
        );
    }
    // Issuing a certificate: a POST whose body takes common_name, the role in the path.
    let issue = &paths["/pki/issue/{role}"];
    let schema = request_schema(document, &issue["post"]);
    assert_eq!(schema["properties"]["common_name"]["type"], json!("string"));
    assert!(schema["properties"].get("role").is_none(), "{schema}");
    assert_eq!(issue["parameters"][0]["name"], json!("role"));
    assert_eq!(issue["parameters"][0]["in"], json!("path"));
    // Database credentials are a GET; role lists are Vault's `?list=true` form.
    assert!(paths["/database/creds/{name}"].get("get").is_some());
    assert!(paths["/database/creds/{name}"].get("post").is_none());
    assert_eq!(
        paths["/database/roles/"]["get"]["parameters"][0]["name"],
        json!("list")
    );
    // Unauthenticated paths are flagged; others are not.
    assert_eq!(paths["/pki/ca/pem"]["x-vault-unauthenticated"], json!(true));
    assert_eq!(paths["/sys/health"]["x-vault-unauthenticated"], json!(true));
    assert!(
        paths["/pki/issue/{role}"]
            .get("x-vault-unauthenticated")
            .is_none()
    );
    assert!(
        paths["/sys/mounts"]
            .get("x-vault-unauthenticated")
            .is_none()
    );
    // The native paths: tokens are created with a POST taking a ttl.
    let create = request_schema(document, &paths["/auth/token/create"]["post"]);
    assert_eq!(create["properties"]["ttl"]["type"], json!("string"));
    assert!(paths["/sys/mounts/{path}"].get("delete").is_some());
    // Every operation has a unique operationId (client generators name methods by it).
    let mut ids = std::collections::HashSet::new();
    for item in paths.values() {
        for method in ["get", "post", "delete"] {
            if let Some(operation) = item.get(method) {
                let id = operation["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "operationId {id} twice");
            }
        }
    }
    // A mount enabled later is in the next document.
    let enabled = coffer.call("POST", "sys/mounts/kv2", Some(json!({"type": "kv"})));
    assert_eq!(enabled.status, 204, "{}", enabled.text);
    let again = coffer.call("GET", "sys/internal/specs/openapi", None);
    assert!(
        again.json["paths"]
            .as_object()
            .unwrap()
            .keys()
            .any(|p| p.starts_with("/kv2/")),
        "{}",
        again.text
    );
    validate(&again.json, "document-with-kv2");
}

#[test]
fn help_answers_from_the_path_table_without_running_the_engine() {
    let coffer = Coffer::dev();
    let root = Some("root");
    // A path: Vault's help shape, the fields with their types, the path's fragment.
    let issue = get(&coffer, root, "pki/issue/web?help=1");
    assert_eq!(issue.status, 200, "{}", issue.text);
    let help = issue.json["help"].as_str().unwrap();
    assert!(help.contains("Request:        pki/issue/web"), "{help}");
    assert!(help.contains("Matching Route: ^issue/"), "{help}");
    assert!(help.contains("common_name (string)"), "{help}");
    assert!(help.contains("ttl (duration (sec))"), "{help}");
    assert_eq!(issue.json["see_also"], json!([]));
    let fragment = &issue.json["openapi"];
    assert!(
        fragment["paths"].get("/pki/issue/{role}").is_some(),
        "{fragment}"
    );
    validate(fragment, "help-fragment");
    assert_eq!(
        get(&coffer, root, "pki/issue/web?help=true").json["help"],
        issue.json["help"]
    );
    // The mount root: Vault's root help, every path of the engine.
    let pki = get(&coffer, root, "pki?help=1");
    assert_eq!(pki.status, 200, "{}", pki.text);
    let help = pki.json["help"].as_str().unwrap();
    assert!(help.contains("## PATHS"), "{help}");
    assert!(help.contains("^issue/"), "{help}");
    assert!(pki.json["openapi"]["paths"].as_object().unwrap().len() >= 15);
    validate(&pki.json["openapi"], "root-help");
    assert_eq!(
        get(&coffer, root, "pki/?help=1").json["help"],
        pki.json["help"]
    );
    // Native paths.
    let mounts = get(&coffer, root, "sys/mounts?help=1");
    assert_eq!(mounts.status, 200, "{}", mounts.text);
    assert!(
        mounts.json["openapi"]["paths"].get("/sys/mounts").is_some(),
        "{}",
        mounts.text
    );
    let create = get(&coffer, root, "auth/token/create?help=1");
    assert_eq!(create.status, 200, "{}", create.text);
    assert!(
        create.json["help"]
            .as_str()
            .unwrap()
            .contains("ttl (duration (sec))"),
        "{}",
        create.text
    );
    let tune = get(&coffer, root, "sys/mounts/pki/tune?help=1");
    assert!(
        tune.json["help"]
            .as_str()
            .unwrap()
            .contains("sys/mounts/{path}/tune"),
        "{}",
        tune.text
    );
    assert_eq!(get(&coffer, root, "sys?help=1").status, 200);
    // No help for what nothing serves: a clear 404.
    for path in [
        "sys/no-such-thing?help=1",
        "no-such-mount/x?help=1",
        "pki/no/such/route?help=1",
        "auth/token/nope?help=1",
    ] {
        let reply = get(&coffer, root, path);
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
        assert!(
            reply.errors().contains("no help for this path"),
            "{}",
            reply.text
        );
    }
    // No engine runs: a help "write" of a connection config stores nothing, and a help
    // read of a missing secret is help, not a 404.
    let written = coffer.raw(
        "POST",
        "database/config/db?help=1",
        root,
        Some(r#"{"connection_url": "postgresql://127.0.0.1:1/x", "plugin_name": "postgresql-database-plugin"}"#),
        &[],
    );
    assert_eq!(written.status, 200, "{}", written.text);
    assert!(
        written.json["help"]
            .as_str()
            .unwrap()
            .contains("connection_url")
    );
    assert_eq!(get(&coffer, root, "database/config/db").status, 404);
    assert_eq!(get(&coffer, root, "secret/missing?help=1").status, 200);
    // Vault's test is a non-empty first `help` value.
    assert_eq!(
        get(&coffer, root, "secret/missing?help=1&help=0").status,
        200
    );
    assert_eq!(get(&coffer, root, "secret/missing?help=").status, 404);
    assert_eq!(get(&coffer, root, "secret/missing?help").status, 404);
    let long = format!("secret/missing?help={}", "x".repeat(6000));
    assert_eq!(get(&coffer, root, &long).status, 200);
    let odd = get(&coffer, root, "secret/missing?help=%ff%00&list=true&help=0");
    assert_eq!(odd.status, 200, "{}", odd.text);
}

#[test]
fn help_is_refused_to_callers_that_may_not_see_the_path() {
    let coffer = Coffer::dev();
    assert_eq!(
        coffer
            .call("POST", "secret/app", Some(json!({"v": "1"})))
            .status,
        204
    );
    // Without a token: only the engines' public paths, as in Vault.
    for token in [None, Some("cvs.bogusbogusbogusbogusbogusbogus12")] {
        for path in [
            "secret/app?help=1",
            "pki/issue/web?help=1",
            "pki?help=1",
            "sys/mounts?help=1",
            "auth/token/create?help=1",
            "no-such-mount/x?help=1",
        ] {
            let reply = get(&coffer, token, path);
            assert_eq!(reply.status, 403, "{path} with {token:?}: {}", reply.text);
            assert!(reply.json.get("help").is_none(), "{}", reply.text);
        }
    }
    let public = get(&coffer, None, "pki/ca/pem?help=1");
    assert_eq!(public.status, 200, "{}", public.text);
    assert!(public.json["help"].is_string());
    assert_eq!(get(&coffer, None, "sys/health?help=1").status, 200);
    // A token needs some capability on the path; an unknown mount is a 403 too, so a
    // token cannot tell which mounts exist.
    coffer.policy(
        "secret-reader",
        r#"path "secret/*" { capabilities = ["read"] }"#,
    );
    let reader = coffer.token_with(&["secret-reader"]);
    let user = Some(reader.as_str());
    assert_eq!(get(&coffer, user, "secret/app?help=1").status, 200);
    assert_eq!(get(&coffer, user, "secret?help=1").status, 200);
    for path in [
        "pki/issue/web?help=1",
        "pki?help=1",
        "database/creds/x?help=1",
        "sys/mounts?help=1",
        "sys/policies/acl/x?help=1",
        "no-such-mount/x?help=1",
    ] {
        let reply = get(&coffer, user, path);
        assert_eq!(reply.status, 403, "{path}: {}", reply.text);
    }
    // Its own token paths, which `default` grants.
    assert_eq!(
        get(&coffer, user, "auth/token/lookup-self?help=1").status,
        200
    );
    // The document itself still needs read on its path.
    assert_eq!(get(&coffer, user, "sys/internal/specs/openapi").status, 403);
    assert_eq!(get(&coffer, None, "sys/internal/specs/openapi").status, 403);
    // A mount's root help, and the document, show the mounts a token has some grant on
    // or below (Vault's hasMountAccess), and only those.
    coffer.policy(
        "issuer",
        r#"
path "pki/issue/web" { capabilities = ["update"] }
path "sys/internal/specs/openapi" { capabilities = ["read"] }
"#,
    );
    let issuer = coffer.token_with(&["issuer"]);
    let issuer = Some(issuer.as_str());
    assert_eq!(get(&coffer, issuer, "pki?help=1").status, 200);
    assert_eq!(get(&coffer, issuer, "pki/issue/web?help=1").status, 200);
    assert_eq!(get(&coffer, issuer, "pki/roles/web?help=1").status, 403);
    assert_eq!(get(&coffer, issuer, "secret?help=1").status, 403);
    let spec = get(&coffer, issuer, "sys/internal/specs/openapi");
    assert_eq!(spec.status, 200, "{}", spec.text);
    validate(&spec.json, "filtered-document");
    let paths = spec.json["paths"].as_object().unwrap();
    assert!(
        paths.contains_key("/pki/issue/{role}"),
        "{:?}",
        paths.keys()
    );
    assert!(
        !paths
            .keys()
            .any(|p| p.starts_with("/secret/") || p.starts_with("/database/")),
        "{:?}",
        paths.keys()
    );
}

/// The host's own table describes paths the host serves: every read, list and write of
/// `sys/` and `auth/token/` in the document is routed (no "unsupported path", no 405) for
/// root.
#[test]
fn the_native_paths_in_the_document_are_served() {
    let coffer = Coffer::dev();
    let reply = coffer.call("GET", "sys/internal/specs/openapi", None);
    let paths = reply.json["paths"].as_object().unwrap();
    let mut checked = 0;
    for (template, item) in paths {
        if !(template.starts_with("/sys/") || template.starts_with("/auth/token/")) {
            continue;
        }
        let path = template
            .trim_start_matches('/')
            .replace("{path}", "secret")
            .replace("{prefix}", "secret")
            .replace("{name}", "default")
            .replace("{role_name}", "nope");
        let mut methods = Vec::new();
        if item.get("get").is_some() {
            methods.push(if path.ends_with('/') { "LIST" } else { "GET" });
        }
        // Writes with an empty body, but for the two that would end the test.
        if item.get("post").is_some()
            && !["sys/seal", "auth/token/revoke-self"].contains(&path.as_str())
        {
            methods.push("POST");
        }
        for method in methods {
            let body = (method == "POST").then_some("{}");
            let reply = coffer.raw(method, &path, Some("root"), body, &[]);
            assert!(
                reply.status != 405 && !reply.errors().contains("unsupported path"),
                "{method} {path}: {} {}",
                reply.status,
                reply.text
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} native requests checked");
}
