//! Audit devices end to end: the real binary writes Vault's JSON lines to a real file;
//! the tests read the file. Secrets (a kv value, a token, an issued private key) appear
//! only as `hmac-sha256:` values that `sys/audit-hash` reproduces; a device that cannot
//! write blocks every request (500, no effect) until it can again; SIGHUP reopens the file;
//! only sudo manages devices; the CLI and hvac drive it as they drive Vault.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use coffer_tests::{Coffer, Value, eventually, json, run_python, stdout, temp_dir};

/// Every line of an audit file, parsed (a line that is not JSON fails the test).
fn entries(path: &Path) -> Vec<Value> {
    entries_after_prefix(path, "")
}

/// Every line of an audit file written with `prefix`, parsed without it.
fn entries_after_prefix(path: &Path, prefix: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let body = line
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("line without prefix {prefix:?}: {line}"));
            serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect()
}

/// The entries of type `kind` (`request`, `response`) for `path`.
fn of<'a>(entries: &'a [Value], kind: &str, path: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["type"] == kind && e["request"]["path"] == path)
        .collect()
}

/// Enables a file device at `path` writing to `file` with extra `options`.
fn enable(coffer: &Coffer, path: &str, file: &Path, options: Value) {
    let mut all = json!({ "file_path": file.display().to_string() });
    all.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let reply = coffer.call(
        "PUT",
        &format!("sys/audit/{path}"),
        Some(json!({ "type": "file", "description": "test device", "options": all })),
    );
    assert_eq!(reply.status, 204, "{}", reply.text);
}

/// `sys/audit-hash/<device>` of `input`.
fn audit_hash(coffer: &Coffer, device: &str, input: &str) -> String {
    let reply = coffer.call(
        "POST",
        &format!("sys/audit-hash/{device}"),
        Some(json!({ "input": input })),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let hash = reply.data()["hash"].as_str().unwrap().to_string();
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");
    hash
}

/// A root CA, a role and one issued EC certificate on the dev server's `pki/`; returns the
/// issued private key.
fn issue_certificate(coffer: &Coffer) -> String {
    let root = coffer.call(
        "POST",
        "pki/root/generate/internal",
        Some(json!({"common_name": "audit-root", "key_type": "ec", "ttl": "24h"})),
    );
    assert_eq!(root.status, 200, "{}", root.text);
    let role = coffer.call(
        "POST",
        "pki/roles/web",
        Some(json!({"allowed_domains": "example.com", "allow_subdomains": true, "key_type": "ec", "max_ttl": "1h"})),
    );
    assert!(role.status == 200 || role.status == 204, "{}", role.text);
    let issued = coffer.call(
        "POST",
        "pki/issue/web",
        Some(json!({"common_name": "a.example.com", "ttl": "10m"})),
    );
    assert_eq!(issued.status, 200, "{}", issued.text);
    issued.data()["private_key"].as_str().unwrap().to_string()
}

#[test]
fn a_file_device_logs_each_call_once_in_vaults_shape_with_every_secret_hashed() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit");
    let log = dir.join("audit.log");

    // No device: nothing is logged, and hashing needs a device.
    let missing = coffer.call("POST", "sys/audit-hash/file", Some(json!({"input": "x"})));
    assert_eq!(missing.status, 400, "{}", missing.text);

    enable(&coffer, "file", &log, json!({}));
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file is created with mode 0600");
    let listed = coffer.call("GET", "sys/audit", None);
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.data()["file/"]["type"], "file");
    assert_eq!(listed.data()["file/"]["path"], "file/");
    assert_eq!(listed.data()["file/"]["description"], "test device");
    assert_eq!(
        listed.data()["file/"]["options"]["file_path"],
        log.display().to_string()
    );
    assert!(!listed.text.contains("salt"), "{}", listed.text);

    let password = format!("hunter2-{}", uuid::Uuid::new_v4().simple());
    let write = coffer.call(
        "PUT",
        "secret/app",
        Some(json!({"password": password, "port": 5432})),
    );
    assert_eq!(write.status, 204, "{}", write.text);
    let read = coffer.call("GET", "secret/app", None);
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.data()["password"], password);
    let created = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"], "ttl": "1h"})),
    );
    assert_eq!(created.status, 200, "{}", created.text);
    let new_token = created.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let new_accessor = created.json["auth"]["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let private_key = issue_certificate(&coffer);

    let all = entries(&log);
    // One request and one response entry per call, paired by request id.
    let requests: Vec<&Value> = all.iter().filter(|e| e["type"] == "request").collect();
    let responses: Vec<&Value> = all.iter().filter(|e| e["type"] == "response").collect();
    assert_eq!(requests.len(), responses.len(), "{all:#?}");
    assert_eq!(
        all.len(),
        requests.len() * 2,
        "only request and response lines"
    );
    // GET sys/audit, kv write, kv read, token create, root, role, issue.
    assert_eq!(requests.len(), 7, "{all:#?}");
    for (request, response) in requests.iter().zip(&responses) {
        assert_eq!(request["request"]["id"], response["request"]["id"]);
        assert!(request["time"].as_str().unwrap().ends_with('Z'));
    }

    // The kv write: Vault's field names, the caller's token hashed, data strings hashed.
    let written = of(&all, "request", "secret/app")[0];
    let request = &written["request"];
    assert!(matches!(
        request["operation"].as_str(),
        Some("create" | "update")
    ));
    assert_eq!(request["mount_type"], "kv");
    assert_eq!(request["mount_point"], "secret/");
    assert!(
        request["mount_accessor"]
            .as_str()
            .unwrap()
            .starts_with("kv_")
    );
    assert_eq!(request["namespace"]["id"], "root");
    assert_eq!(request["remote_address"], "127.0.0.1");
    assert_eq!(request["client_token"], audit_hash(&coffer, "file", "root"));
    assert!(
        request["client_token_accessor"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    assert_eq!(
        request["data"]["password"],
        audit_hash(&coffer, "file", &password)
    );
    assert_eq!(request["data"]["port"], 5432, "numbers stay");
    let auth = &written["auth"];
    assert_eq!(auth["client_token"], request["client_token"]);
    assert_eq!(auth["accessor"], request["client_token_accessor"]);
    assert_eq!(auth["display_name"], "root");
    assert_eq!(auth["policies"], json!(["root"]));
    assert_eq!(auth["token_policies"], json!(["root"]));
    assert_eq!(auth["token_type"], "service");

    // The kv read's response: the value hashed, the mount named; the reply's request id
    // is the entries'.
    let read_entry = of(&all, "response", "secret/app")[1];
    assert_eq!(read_entry["request"]["operation"], "read");
    assert_eq!(read_entry["request"]["id"], read.json["request_id"]);
    assert_eq!(read_entry["response"]["mount_type"], "kv");
    assert_eq!(
        read_entry["response"]["data"]["password"],
        audit_hash(&coffer, "file", &password)
    );

    // The token create's response: the new token and its accessor hashed.
    let token_entry = of(&all, "response", "auth/token/create")[0];
    assert_eq!(token_entry["request"]["mount_type"], "token");
    assert_eq!(
        token_entry["response"]["auth"]["client_token"],
        audit_hash(&coffer, "file", &new_token)
    );
    assert_eq!(
        token_entry["response"]["auth"]["accessor"],
        audit_hash(&coffer, "file", &new_accessor)
    );
    assert_eq!(
        token_entry["response"]["auth"]["policies"],
        json!(["default"])
    );

    // The issue's response: the private key hashed, the lease named.
    let issue_entry = of(&all, "response", "pki/issue/web")[0];
    assert_eq!(issue_entry["response"]["mount_type"], "pki");
    assert_eq!(
        issue_entry["response"]["data"]["private_key"],
        audit_hash(&coffer, "file", &private_key)
    );

    // No secret in clear anywhere in the file.
    let text = std::fs::read_to_string(&log).unwrap();
    let key_body: String = private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for (what, secret) in [
        ("kv value", password.as_str()),
        ("token", new_token.as_str()),
        ("accessor", new_accessor.as_str()),
        ("private key", key_body.get(..40).unwrap()),
    ] {
        assert!(!text.contains(secret), "the {what} is in the log in clear");
    }
    assert!(!text.contains("\"client_token\":\"root\""));

    // Disabling stops logging: the DELETE itself is the last call logged, its response
    // included.
    let disabled = coffer.call("DELETE", "sys/audit/file", None);
    assert_eq!(disabled.status, 204, "{}", disabled.text);
    let before = entries(&log).len();
    assert_eq!(coffer.call("GET", "secret/app", None).status, 200);
    assert_eq!(entries(&log).len(), before);
    assert_eq!(of(&entries(&log), "response", "sys/audit/file").len(), 1);
    let listed = coffer.call("GET", "sys/audit", None);
    assert_eq!(listed.data(), &json!({}));
}

#[test]
fn log_raw_prefix_hmac_accessor_and_elided_lists_change_what_is_written() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-options");
    let raw = dir.join("raw.log");
    let accessors = dir.join("accessors.log");
    enable(
        &coffer,
        "raw",
        &raw,
        json!({"log_raw": "true", "mode": "0640"}),
    );
    enable(
        &coffer,
        "plain",
        &accessors,
        json!({"hmac_accessor": "false", "elide_list_responses": "true"}),
    );
    assert_eq!(
        std::fs::metadata(&raw).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let password = format!("raw-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(
        coffer
            .call("PUT", "secret/a", Some(json!({"password": password})))
            .status,
        204
    );
    assert_eq!(
        coffer
            .call("PUT", "secret/b", Some(json!({"x": "y"})))
            .status,
        204
    );
    let listed = coffer.call("LIST", "secret/", None);
    assert_eq!(listed.status, 200, "{}", listed.text);

    // log_raw: every value in clear.
    let raw_entries = entries(&raw);
    let write = of(&raw_entries, "request", "secret/a")[0];
    assert_eq!(write["request"]["data"]["password"], password);
    assert_eq!(write["request"]["client_token"], "root");

    // hmac_accessor=false: the accessor in clear, the token and data still hashed; the
    // list response's keys are a count.
    let plain = entries(&accessors);
    let write = of(&plain, "request", "secret/a")[0];
    let root = coffer.call("GET", "auth/token/lookup-self", None);
    assert_eq!(
        write["request"]["client_token_accessor"],
        root.data()["accessor"]
    );
    assert_eq!(
        write["request"]["client_token"],
        audit_hash(&coffer, "plain", "root")
    );
    assert_eq!(
        write["request"]["data"]["password"],
        audit_hash(&coffer, "plain", &password)
    );
    assert_ne!(
        audit_hash(&coffer, "plain", &password),
        audit_hash(&coffer, "raw", &password),
        "each device has its own salt"
    );
    let list = of(&plain, "response", "secret/")[0];
    assert_eq!(list["request"]["operation"], "list");
    assert_eq!(list["response"]["data"]["keys"], 2);
    let raw_list = of(&raw_entries, "response", "secret/")[0];
    assert_eq!(raw_list["response"]["data"]["keys"], json!(["a", "b"]));

    // Bad options are refused before anything is enabled.
    for (options, why) in [
        (json!({}), "file_path is required"),
        (json!({"file_path": "relative.log"}), "absolute"),
        (
            json!({"file_path": "/tmp/x.log", "log-raw": "true"}),
            "unknown option",
        ),
        // Vault's CVE-2025-6000: no chosen text on every line, no executable log.
        (
            json!({"file_path": "/tmp/x.log", "prefix": "id; #"}),
            "only be set in the config file",
        ),
        (
            json!({"file_path": "/tmp/x.log", "mode": "0777"}),
            "executable",
        ),
    ] {
        let reply = coffer.call(
            "PUT",
            "sys/audit/bad",
            Some(json!({"type": "file", "options": options})),
        );
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert!(reply.errors().contains(why), "{}", reply.text);
    }
    let wrong_type = coffer.call(
        "PUT",
        "sys/audit/sock",
        Some(json!({"type": "socket", "options": {"address": "127.0.0.1:9"}})),
    );
    assert_eq!(wrong_type.status, 400, "{}", wrong_type.text);
    let taken = coffer.call(
        "PUT",
        "sys/audit/raw",
        Some(json!({"type": "file", "options": {"file_path": "discard"}})),
    );
    assert_eq!(taken.status, 400, "{}", taken.text);
    assert!(taken.errors().contains("already in use"), "{}", taken.text);
    let listed = coffer.call("GET", "sys/audit", None);
    let paths: Vec<&String> = listed.data().as_object().unwrap().keys().collect();
    assert_eq!(paths, ["plain/", "raw/"]);
}

/// Points the symlink `link` at `target`, replacing what it pointed at.
fn repoint(link: &Path, target: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Sends SIGHUP to the server.
fn hangup(coffer: &Coffer) {
    let status = Command::new("kill")
        .args(["-HUP", &coffer.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_device_that_cannot_write_blocks_every_request_until_it_can() {
    // The faults work as root too: /dev/full fails every write with ENOSPC, and a path
    // whose parent is a regular file cannot be opened (ENOTDIR), whatever the permissions.
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-fault");
    let link = dir.join("audit.log");
    let real = dir.join("real.log");
    std::fs::write(dir.join("not-a-dir"), "").unwrap();

    // Enabling a device that cannot open its file is refused (Vault's sanity check).
    let refused = coffer.call(
        "PUT",
        "sys/audit/bad",
        Some(json!({"type": "file", "options": {"file_path": dir.join("not-a-dir/audit.log").display().to_string()}})),
    );
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.errors().contains("sanity check failed"),
        "{}",
        refused.text
    );

    repoint(&link, &real);
    enable(&coffer, "file", &link, json!({}));
    assert_eq!(
        coffer
            .call("PUT", "secret/before", Some(json!({"v": "1"})))
            .status,
        204
    );

    // Fault 1: the file is now a full device (writes fail).
    repoint(&link, Path::new("/dev/full"));
    hangup(&coffer);
    // Probed with a read: a write sent before the server saw the SIGHUP would land, as
    // its entry was still written to the old file.
    assert!(
        eventually(Duration::from_secs(5), || coffer
            .call("GET", "secret/before", None)
            .status
            == 500),
        "a request whose entry cannot be logged must fail with 500"
    );
    let blocked = coffer.call("PUT", "secret/blocked", Some(json!({"v": "2"})));
    assert_eq!(blocked.status, 500, "{}", blocked.text);
    assert_eq!(coffer.call("GET", "secret/before", None).status, 500);
    assert_eq!(
        coffer.call("DELETE", "sys/audit/file", None).status,
        500,
        "disabling the device is a request like any other"
    );
    let token = coffer.call("POST", "auth/token/create", Some(json!({"ttl": "1h"})));
    assert_eq!(token.status, 500, "no token is issued without its entry");

    // Fault 2: the file cannot be opened at all.
    repoint(&link, &dir.join("not-a-dir/audit.log"));
    hangup(&coffer);
    std::thread::sleep(Duration::from_millis(300));
    let blocked = coffer.call("PUT", "secret/blocked", Some(json!({"v": "3"})));
    assert_eq!(blocked.status, 500, "{}", blocked.text);
    assert!(
        coffer
            .log_text()
            .contains("audit device failed to write an entry"),
        "the server log says why"
    );

    // The fault clears: the next request reopens the file and service resumes.
    let fixed = dir.join("fixed.log");
    repoint(&link, &fixed);
    let read = coffer.call("GET", "secret/blocked", None);
    assert_eq!(
        read.status, 404,
        "the refused writes never landed: {}",
        read.text
    );
    assert_eq!(coffer.call("GET", "secret/before", None).status, 200);
    let after = entries(&fixed);
    assert_eq!(of(&after, "request", "secret/blocked").len(), 1);
    assert_eq!(of(&after, "response", "secret/before").len(), 1);
    // The real file saw only what happened before the fault.
    let before = entries(&real);
    assert!(of(&before, "request", "secret/blocked").is_empty());
    assert_eq!(
        of(&before, "request", "secret/before")
            .iter()
            .filter(|e| e["request"]["operation"] != "read")
            .count(),
        1
    );

    // With a second, working device, one broken device no longer blocks.
    enable(&coffer, "second", &dir.join("second.log"), json!({}));
    repoint(&link, Path::new("/dev/full"));
    hangup(&coffer);
    std::thread::sleep(Duration::from_millis(300));
    let write = coffer.call("PUT", "secret/landed", Some(json!({"v": "4"})));
    assert_eq!(write.status, 204, "{}", write.text);
    assert_eq!(
        of(
            &entries(&dir.join("second.log")),
            "request",
            "secret/landed"
        )
        .len(),
        1
    );
}

#[test]
fn sighup_reopens_the_file_after_logrotate_moved_it() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-rotate");
    let log = dir.join("audit.log");
    let rotated = dir.join("audit.log.1");
    enable(&coffer, "file", &log, json!({"mode": "0600"}));
    assert_eq!(
        coffer
            .call("PUT", "secret/one", Some(json!({"v": "1"})))
            .status,
        204
    );
    std::fs::rename(&log, &rotated).unwrap();
    // Until SIGHUP, entries follow the open file.
    assert_eq!(
        coffer
            .call("PUT", "secret/two", Some(json!({"v": "2"})))
            .status,
        204
    );
    assert!(!log.exists());
    hangup(&coffer);
    assert!(
        eventually(Duration::from_secs(5), || log.exists()),
        "SIGHUP recreates the file"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        coffer
            .call("PUT", "secret/three", Some(json!({"v": "3"})))
            .status,
        204
    );
    let old = entries(&rotated);
    let new = entries(&log);
    assert_eq!(of(&old, "request", "secret/one").len(), 1);
    assert_eq!(of(&old, "request", "secret/two").len(), 1);
    assert!(of(&old, "request", "secret/three").is_empty());
    assert_eq!(of(&new, "request", "secret/three").len(), 1);
    assert_eq!(of(&new, "response", "secret/three").len(), 1);
}

#[test]
fn only_sudo_manages_devices_and_refusals_are_logged() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-acl");
    let log = dir.join("audit.log");
    coffer.policy(
        "audit-no-sudo",
        r#"
path "sys/audit" { capabilities = ["read"] }
path "sys/audit/*" { capabilities = ["create", "update", "delete", "read"] }
path "sys/audit-hash/*" { capabilities = ["update"] }
"#,
    );
    coffer.policy(
        "audit-sudo",
        r#"
path "sys/audit" { capabilities = ["read", "sudo"] }
path "sys/audit/*" { capabilities = ["create", "update", "delete", "read", "sudo"] }
"#,
    );
    let plain = coffer.token_with(&["audit-no-sudo"]);
    let sudo = coffer.token_with(&["audit-sudo"]);
    let body = json!({"type": "file", "options": {"file_path": log.display().to_string()}});
    let as_token = |token: &str, method: &str, path: &str, body: Option<&Value>| {
        let text = body.map(Value::to_string);
        coffer.raw(method, path, Some(token), text.as_deref(), &[])
    };

    // Without sudo: refused, and nothing is enabled.
    assert_eq!(
        as_token(&plain, "PUT", "sys/audit/file", Some(&body)).status,
        403
    );
    assert_eq!(as_token(&plain, "GET", "sys/audit", None).status, 403);
    assert!(!log.exists());
    // With sudo: enabled, listed.
    assert_eq!(
        as_token(&sudo, "PUT", "sys/audit/file", Some(&body)).status,
        204
    );
    let listed = as_token(&sudo, "GET", "sys/audit", None);
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json["data"]["file/"]["type"], "file");
    // audit-hash needs no sudo (as Vault).
    let hash = as_token(
        &plain,
        "POST",
        "sys/audit-hash/file",
        Some(&json!({"input": "x"})),
    );
    assert_eq!(hash.status, 200, "{}", hash.text);
    // Disabling without sudo is refused; the device stays, and the refusal is in the log
    // with its error.
    assert_eq!(
        as_token(&plain, "DELETE", "sys/audit/file", None).status,
        403
    );
    let all = entries(&log);
    let refused = of(&all, "request", "sys/audit/file");
    assert_eq!(refused.len(), 1, "{all:#?}");
    assert_eq!(refused[0]["error"], "permission denied");
    assert_eq!(refused[0]["request"]["operation"], "delete");
    assert!(of(&all, "response", "sys/audit/file").is_empty());
    assert_eq!(
        as_token(&sudo, "DELETE", "sys/audit/file", None).status,
        204
    );
    let listed = as_token(&sudo, "GET", "sys/audit", None);
    assert_eq!(listed.json["data"], json!({}));
}

#[test]
fn config_file_devices_are_enabled_at_unseal_and_keep_their_salt() {
    let dir = temp_dir("audit-config");
    let log = dir.join("audit.log");
    let config = format!(
        r#"
[listener]
address = "{{addr}}"

[storage]
path = "{{dir}}/data/coffer.db"

[[mount]]
path = "secret"
plugin = "kv"

[[audit]]
path = "file"
type = "file"
description = "from the config file"
options = {{ file_path = "{}", hmac_accessor = "false", prefix = "AUDIT: " }}
"#,
        log.display()
    );
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut coffer = Coffer::with_config(&dir, &config);
    let keys = coffer.init_and_unseal(1, 1);
    let listed = coffer.call("GET", "sys/audit", None);
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        listed.data()["file/"]["description"],
        "from the config file"
    );
    assert_eq!(listed.data()["file/"]["options"]["hmac_accessor"], "false");
    assert_eq!(
        coffer
            .call("PUT", "secret/a", Some(json!({"v": "s3cret"})))
            .status,
        204
    );
    let hash = audit_hash(&coffer, "file", "s3cret");
    // The config file may set a prefix (the API may not): it starts every line.
    assert_eq!(
        of(
            &entries_after_prefix(&log, "AUDIT: "),
            "request",
            "secret/a"
        )[0]["request"]["data"]["v"],
        hash
    );

    coffer.stop();
    coffer.start();
    coffer.unseal(&keys);
    assert_eq!(
        audit_hash(&coffer, "file", "s3cret"),
        hash,
        "the salt survives a restart"
    );
    assert_eq!(coffer.call("GET", "secret/a", None).status, 200);
    let after = entries_after_prefix(&log, "AUDIT: ");
    assert_eq!(of(&after, "response", "secret/a").len(), 2, "{after:#?}");
    let listed = coffer.call("GET", "sys/audit", None);
    assert_eq!(listed.data().as_object().unwrap().len(), 1);
}

#[test]
fn the_cli_enables_lists_and_disables_devices() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-cli");
    let log = dir.join("audit.log");
    let enabled = coffer.cli(&[
        "audit",
        "enable",
        "-description=cli device",
        "file",
        &format!("file_path={}", log.display()),
        "hmac_accessor=false",
    ]);
    assert!(
        stdout(&enabled).contains("Success! Enabled the file audit device at: file/"),
        "{enabled:?}"
    );
    let listed = stdout(&coffer.cli(&["audit", "list"]));
    assert!(
        listed.contains("file/") && listed.contains("cli device"),
        "{listed}"
    );
    let detailed = stdout(&coffer.cli(&["audit", "list", "-detailed"]));
    assert!(
        detailed.contains(&format!("file_path={}", log.display())),
        "{detailed}"
    );
    let as_json: Value =
        serde_json::from_str(&stdout(&coffer.cli(&["audit", "list", "-format=json"]))).unwrap();
    assert_eq!(as_json["file/"]["options"]["hmac_accessor"], "false");
    assert!(!entries(&log).is_empty());
    let refused = coffer.cli(&["audit", "enable", "file", "file_path=relative"]);
    assert!(!refused.status.success(), "{refused:?}");
    let disabled = coffer.cli(&["audit", "disable", "file"]);
    assert!(
        stdout(&disabled).contains("Success! Disabled audit device (if it was enabled) at: file/"),
        "{disabled:?}"
    );
    let listed = stdout(&coffer.cli(&["audit", "list"]));
    assert!(listed.contains("No audit devices are enabled."), "{listed}");
}

#[test]
fn hvac_enables_lists_hashes_and_disables() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-hvac");
    let log = dir.join("audit.log");
    let script = r#"
import sys, json, hvac
client = hvac.Client(url=sys.argv[1], token="root")
log = sys.argv[2]
client.sys.enable_audit_device("file", description="hvac", options={"file_path": log})
devices = client.sys.list_enabled_audit_devices()
assert devices["data"]["file/"]["type"] == "file", devices
assert devices["data"]["file/"]["options"]["file_path"] == log, devices
client.secrets.kv.v1.create_or_update_secret(path="hv", secret={"pw": "hvac-secret"})
hashed = client.sys.calculate_hash(path="file", input_to_hash="hvac-secret")
value = hashed["data"]["hash"]
assert value.startswith("hmac-sha256:"), hashed
entries = [json.loads(line) for line in open(log)]
writes = [e for e in entries if e["type"] == "request" and e["request"]["path"] == "secret/hv" and e["request"]["operation"] != "read"]
assert len(writes) == 1 and writes[0]["request"]["data"]["pw"] == value, writes
assert "hvac-secret" not in open(log).read()
client.sys.disable_audit_device("file")
assert client.sys.list_enabled_audit_devices()["data"] == {}
print("ok")
"#;
    run_python(script, &[&coffer.addr, &log.display().to_string()]);
}

/// Vault's CVE-2025-6000, attacked as the review did: a device enabled over an existing
/// script with a chosen prefix and an executable mode must neither make it run anything
/// nor change its permissions.
#[test]
fn an_audit_device_cannot_turn_a_file_into_a_script() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-victim");
    let victim = dir.join("victim.sh");
    std::fs::write(&victim, "echo hello\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    for options in [
        json!({"file_path": victim, "mode": "0777", "prefix": "id > /tmp/pwned; exit 0 #"}),
        json!({"file_path": victim, "prefix": "id > /tmp/pwned; exit 0 #"}),
        json!({"file_path": victim, "mode": "0755"}),
    ] {
        let refused = coffer.call(
            "PUT",
            "sys/audit/evil",
            Some(json!({"type": "file", "options": options})),
        );
        assert_eq!(refused.status, 400, "{}", refused.text);
    }
    // Without a prefix and with a plain mode, the device appends JSON and leaves the
    // file's permissions as they were.
    enable(&coffer, "evil", &victim, json!({"mode": "0644"}));
    coffer.call("GET", "sys/mounts", None);
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&victim).unwrap();
    assert!(text.starts_with("echo hello\n"), "{text}");
    assert!(
        text.lines().skip(1).all(|line| line.starts_with('{')),
        "{text}"
    );
}

/// Requests refused at admission for their token are audited with their error, as Vault
/// logs failed authentications (token guessing must show in the log).
#[test]
fn refused_tokens_are_audited() {
    let coffer = Coffer::dev();
    let log = temp_dir("audit-refused").join("audit.log");
    enable(&coffer, "file", &log, json!({}));
    let guessed = format!("cvs.{}", uuid::Uuid::new_v4().simple());
    let bogus = coffer.raw("GET", "secret/guessed", Some(&guessed), None, &[]);
    assert_eq!(bogus.status, 403, "{}", bogus.text);
    let anonymous = coffer.raw("GET", "secret/anonymous", None, None, &[]);
    assert_eq!(anonymous.status, 403, "{}", anonymous.text);
    let written = entries(&log);
    let guessed_entry = of(&written, "request", "secret/guessed");
    assert_eq!(guessed_entry.len(), 1, "{written:?}");
    assert!(
        guessed_entry[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid token")),
        "{:?}",
        guessed_entry[0]
    );
    assert_eq!(guessed_entry[0]["request"]["remote_address"], "127.0.0.1");
    assert_eq!(of(&written, "request", "secret/anonymous").len(), 1);
    assert!(!std::fs::read_to_string(&log).unwrap().contains(&guessed));
}

/// Past Vault: leases revoked without a request of their own (expiry, retries, their
/// token's revocation) are audited with the outcome, irrevocable ones too.
#[test]
fn expiries_retries_and_token_revocations_of_leases_are_audited() {
    let dir = temp_dir("audit-expiry");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut coffer = Coffer::with_config(&dir, &coffer_tests::fixtures_config());
    coffer.init_and_unseal(1, 1);
    let log = dir.join("audit.log");
    enable(&coffer, "file", &log, json!({}));
    let revocations = || -> Vec<Value> {
        entries(&log)
            .into_iter()
            .filter(|e| e["type"] == "lease-revocation")
            .collect()
    };
    let lease = |coffer: &Coffer, token: Option<&str>, ttl: &str| -> String {
        let reply = coffer.raw(
            "GET",
            &format!("leasing/creds/app?ttl={ttl}"),
            Some(token.unwrap_or(&coffer.token)),
            None,
            &[],
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["lease_id"].as_str().unwrap().to_string()
    };
    let of_lease = |id: &str| -> Vec<Value> {
        revocations()
            .into_iter()
            .filter(|e| e["lease"]["id"] == id)
            .collect()
    };

    // Expiry.
    let expired = lease(&coffer, None, "1s");
    assert!(
        eventually(Duration::from_secs(10), || !of_lease(&expired).is_empty()),
        "no entry for an expired lease: {:?}",
        revocations()
    );
    let entry = &of_lease(&expired)[0];
    assert_eq!(entry["lease"]["reason"], "expiry");
    assert_eq!(entry["lease"]["outcome"], "revoked");
    assert_eq!(entry["lease"]["mount_point"], "leasing/");

    // Its token's revocation.
    let token = coffer.token_with(&["default"]);
    coffer.policy(
        "default",
        r#"path "leasing/creds/*" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }"#,
    );
    let owned = lease(&coffer, Some(&token), "1h");
    let revoked = coffer.call("POST", "auth/token/revoke", Some(json!({"token": token})));
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert!(
        eventually(Duration::from_secs(10), || !of_lease(&owned).is_empty()),
        "no entry for a lease of a revoked token: {:?}",
        revocations()
    );
    assert_eq!(of_lease(&owned)[0]["lease"]["reason"], "token-revoked");

    // A target that refuses: failed attempts, retries, then irrevocable.
    let failing = coffer.call(
        "POST",
        "leasing/control",
        Some(json!({"fail_revoke": true})),
    );
    assert!(failing.status < 300, "{}", failing.text);
    let stuck = lease(&coffer, None, "1s");
    assert!(
        eventually(Duration::from_secs(30), || {
            of_lease(&stuck)
                .iter()
                .any(|e| e["lease"]["irrevocable"] == true)
        }),
        "no irrevocable entry: {:?}",
        of_lease(&stuck)
    );
    let attempts = of_lease(&stuck);
    assert_eq!(attempts[0]["lease"]["reason"], "expiry");
    assert!(attempts.iter().all(|e| e["lease"]["outcome"] == "failed"));
    assert!(attempts.iter().any(|e| e["lease"]["reason"] == "retry"));
    assert!(attempts[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    coffer.stop();
}

/// The `[[audit]]` entry of a config file: a file device at `file/` writing to `log`.
fn audit_config(log: &Path) -> String {
    format!(
        "\n[[audit]]\npath = \"file\"\ntype = \"file\"\noptions = {{ file_path = \"{}\" }}\n",
        log.display()
    )
}

/// The statements of an entry's `sql` transcript (`response.sql`, `lease.sql`,
/// `rollback.sql`), flattened.
fn statements(transcript: &Value) -> Vec<String> {
    transcript
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .flat_map(|step| step["statements"].as_array().cloned().unwrap_or_default())
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn issued_certificates_are_an_inventory_in_clear_and_keys_stay_hashed() {
    let coffer = Coffer::dev();
    let dir = temp_dir("audit-inventory");
    let log = dir.join("audit.log");
    enable(&coffer, "file", &log, json!({}));
    let private_key = issue_certificate(&coffer);
    let csr = coffer_tests::ec_csr(&dir, "signed", "/CN=b.example.com");
    let signed = coffer.call(
        "POST",
        "pki/sign/web",
        Some(json!({"csr": csr, "ttl": "5m"})),
    );
    assert_eq!(signed.status, 200, "{}", signed.text);
    let all = entries(&log);

    // issue: the request's names and TTL in clear (the path table says they are no
    // secret), the key hashed; the response's serial and expiry in clear.
    let request = &of(&all, "request", "pki/issue/web")[0]["request"];
    assert_eq!(request["data"]["common_name"], "a.example.com");
    assert_eq!(request["data"]["ttl"], "10m");
    let issued = &of(&all, "response", "pki/issue/web")[0]["response"];
    assert_eq!(
        issued["data"]["private_key"],
        audit_hash(&coffer, "file", &private_key)
    );
    assert_eq!(issued["data"]["private_key_type"], "ec");
    let serial = issued["data"]["serial_number"].as_str().unwrap();
    assert!(serial.contains(':'), "the serial is in clear: {serial}");
    assert!(issued["data"]["expiration"].is_u64());
    assert!(
        issued["data"]["certificate"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"),
        "every field not declared clear is hashed"
    );
    // ... and the inventory facts: serial, subject, names, validity, key.
    let facts = &issued["facts"]["certificate"];
    assert_eq!(facts["serial_number"], serial);
    assert_eq!(facts["subject"], "CN=a.example.com");
    assert_eq!(facts["dns_names"], json!(["a.example.com"]));
    assert_eq!(facts["key_type"], "ec");
    let expiration = issued["data"]["expiration"].as_u64().unwrap();
    let not_after = facts["not_after"].as_str().unwrap();
    let openssl_end = Command::new("date")
        .args(["-u", "-d", &format!("@{expiration}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    assert_eq!(not_after, stdout(&openssl_end).trim());

    // sign: the subject and names come from the CSR and the request, as the certificate
    // has them (read back with openssl).
    let signed_facts = &of(&all, "response", "pki/sign/web")[0]["response"]["facts"]["certificate"];
    assert_eq!(
        signed_facts["serial_number"],
        signed.data()["serial_number"]
    );
    assert_eq!(signed_facts["subject"], "CN=b.example.com");
    let pem = signed.data()["certificate"].as_str().unwrap();
    std::fs::write(dir.join("signed.pem"), pem).unwrap();
    let sans = stdout(
        &Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(dir.join("signed.pem"))
            .output()
            .unwrap(),
    );
    for name in signed_facts["dns_names"].as_array().unwrap() {
        assert!(
            sans.contains(&format!("DNS:{}", name.as_str().unwrap())),
            "{name} is not in the certificate: {sans}"
        );
    }
    assert_eq!(
        signed_facts["dns_names"].as_array().unwrap().len(),
        sans.matches("DNS:").count(),
        "every name of the certificate is in the facts: {sans}"
    );

    // A failed issue states no facts.
    let refused = coffer.call(
        "POST",
        "pki/issue/web",
        Some(json!({"common_name": "evil.org"})),
    );
    assert_eq!(refused.status, 400, "{}", refused.text);
    let after = entries(&log);
    let refused_entry = &of(&after, "response", "pki/issue/web")[1];
    assert!(refused_entry["response"]["facts"].is_null());
    assert!(refused_entry["error"].as_str().is_some());

    // The key is nowhere in clear.
    let text = std::fs::read_to_string(&log).unwrap();
    let key_body: String = private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!text.contains(key_body.get(..40).unwrap()));
}

#[test]
fn each_credentials_sql_is_audited_with_its_lease_and_never_its_password() {
    use coffer_tests::Postgres;
    use coffer_tests::tutorial::tutorial_database;
    let pg = Postgres::start(false);
    let dir = temp_dir("audit-sql");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let log = dir.join("audit.log");
    let real = dir.join("real.log");
    repoint(&log, &real);
    let config = coffer_tests::fixtures_config() + &audit_config(&log);
    let mut coffer = Coffer::with_config(&dir, &config);
    let keys = coffer.init_and_unseal(1, 1);
    let mount = coffer.call(
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    );
    assert!(mount.status < 300, "{}", mount.text);
    tutorial_database(&coffer, &pg);
    let creds = |coffer: &Coffer, role: &str| -> Value {
        let reply = coffer.call("GET", &format!("database/creds/{role}"), None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    };

    // Creation: the response entry carries the statements with every literal hidden, the
    // lease id, and the user name in clear; the password only as its HMAC.
    let issued = creds(&coffer, "grade-api-role");
    let (user, password, lease) = (
        issued["data"]["username"].as_str().unwrap().to_string(),
        issued["data"]["password"].as_str().unwrap().to_string(),
        issued["lease_id"].as_str().unwrap().to_string(),
    );
    let all = entries(&log);
    let created = &of(&all, "response", "database/creds/grade-api-role")[0]["response"];
    assert_eq!(created["secret"]["lease_id"], lease);
    assert_eq!(created["data"]["username"], user.as_str());
    assert_eq!(
        created["data"]["password"],
        audit_hash(&coffer, "file", &password)
    );
    let sql = statements(&created["sql"]);
    assert!(
        sql.iter().any(|s| s.starts_with(&format!(
            "CREATE ROLE \"{user}\" WITH LOGIN PASSWORD '***' VALID UNTIL '***'"
        ))),
        "{sql:#?}"
    );
    assert!(
        created["sql"][0]["connection"]
            .as_str()
            .unwrap()
            .starts_with(coffer_tests::PG_ROOT_USER)
    );
    assert!(
        created["sql"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "ok")
    );
    // "What did Coffer do in my database for lease X" is one grep.
    let for_lease: Vec<Value> = entries(&log)
        .into_iter()
        .filter(|e| e["response"]["secret"]["lease_id"] == lease.as_str())
        .collect();
    assert_eq!(for_lease.len(), 1);

    // Renewal: the ALTER ROLE of the renew request.
    let renewed = coffer.call(
        "PUT",
        "sys/leases/renew",
        Some(json!({"lease_id": lease, "increment": "2h"})),
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let renew_sql =
        statements(&of(&entries(&log), "response", "sys/leases/renew")[0]["response"]["sql"]);
    assert!(
        renew_sql
            .iter()
            .any(|s| s.contains(&format!("ALTER ROLE \"{user}\" VALID UNTIL '***'"))),
        "{renew_sql:#?}"
    );

    // Revocation by request: its DROP in the revoke's response entry.
    let revoked = coffer.call("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})));
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert!(!pg.role_exists(&user));
    let revoke_sql =
        statements(&of(&entries(&log), "response", "sys/leases/revoke")[0]["response"]["sql"]);
    assert!(
        revoke_sql
            .iter()
            .any(|s| s.contains("DROP ROLE") && s.contains(&user)),
        "{revoke_sql:#?}"
    );

    // Expiry: the scheduler's DROP in the lease-revocation entry.
    let short = coffer.call("POST", "database/roles/short", Some(json!({"db_name": "grade-api-db", "creation_statements": coffer_tests::tutorial::CREATION, "default_ttl": "1s"})));
    assert_eq!(short.status, 204, "{}", short.text);
    let allow = coffer.call(
        "POST",
        "database/config/grade-api-db",
        Some(json!({"allowed_roles": "grade-api-role,short"})),
    );
    assert!(allow.status < 300, "{}", allow.text);
    let expiring = creds(&coffer, "short");
    let expiring_user = expiring["data"]["username"].as_str().unwrap().to_string();
    let expiring_lease = expiring["lease_id"].as_str().unwrap().to_string();
    let expired = || {
        entries(&log).into_iter().find(|e| {
            e["type"] == "lease-revocation" && e["lease"]["id"] == expiring_lease.as_str()
        })
    };
    assert!(
        eventually(Duration::from_secs(15), || expired().is_some()),
        "no entry for the expiry"
    );
    let entry = expired().unwrap();
    assert_eq!(entry["lease"]["reason"], "expiry");
    let drop_sql = statements(&entry["lease"]["sql"]);
    assert!(
        drop_sql
            .iter()
            .any(|s| s.contains("DROP ROLE") && s.contains(&expiring_user)),
        "{entry:#}"
    );
    assert!(!pg.role_exists(&expiring_user));

    // A device that cannot write: the request fails with 500 and no user is created.
    let before = pg.roles_like("v-");
    repoint(&log, Path::new("/dev/full"));
    hangup(&coffer);
    // Probed with a read (a creation sent before the server saw the SIGHUP would land).
    assert!(eventually(Duration::from_secs(5), || coffer
        .call("GET", "database/roles/grade-api-role", None)
        .status
        == 500));
    for _ in 0..3 {
        let refused = coffer.call("GET", "database/creds/grade-api-role", None);
        assert_eq!(refused.status, 500, "{}", refused.text);
    }
    assert_eq!(
        pg.roles_like("v-"),
        before,
        "a credential was created without its audit entry"
    );
    repoint(&log, &real);
    hangup(&coffer);
    assert!(eventually(Duration::from_secs(5), || coffer
        .call("GET", "database/creds/grade-api-role", None)
        .status
        == 200));
    assert_eq!(pg.roles_like("v-"), before + 1);

    // A crash between CREATE ROLE and the lease: after the restart, the rollback's entry
    // names the request whose response was never written, and shows the DROP.
    let before = pg.roles_like("v-");
    coffer.crash_before_the_lease(&keys, "database/creds/grade-api-role");
    assert_eq!(
        pg.roles_like("v-"),
        before + 1,
        "the role was created before the crash"
    );
    coffer.start();
    coffer.unseal(&keys);
    let rollback = || entries(&log).into_iter().find(|e| e["type"] == "rollback");
    assert!(
        eventually(Duration::from_secs(20), || rollback().is_some()),
        "no rollback entry:\n{}",
        coffer.log_text()
    );
    let rollback = rollback().unwrap();
    assert_eq!(
        rollback["rollback"]["outcome"], "rolled-back",
        "{rollback:#}"
    );
    assert_eq!(rollback["rollback"]["mount_point"], "database/");
    let request_id = rollback["rollback"]["request_id"].as_str().unwrap();
    let all = entries(&log);
    let crashed: Vec<&Value> = all
        .iter()
        .filter(|e| e["request"]["id"] == request_id)
        .collect();
    assert_eq!(
        crashed.len(),
        1,
        "only the request entry of the crashed call: {crashed:#?}"
    );
    assert_eq!(crashed[0]["type"], "request");
    assert_eq!(
        crashed[0]["request"]["path"],
        "database/creds/grade-api-role"
    );
    let undo = statements(&rollback["rollback"]["sql"]);
    assert!(undo.iter().any(|s| s.contains("DROP ROLE")), "{rollback:#}");
    assert!(eventually(Duration::from_secs(5), || pg.roles_like("v-") == before));

    // No password anywhere in clear.
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(!text.contains(&password));
    assert!(!text.contains(coffer_tests::PG_ROOT_PASSWORD));
    coffer.stop();
}

#[test]
fn an_engine_decides_which_of_its_fields_are_clear_and_its_facts_are_bounded() {
    let dir = temp_dir("audit-facts");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let log = dir.join("audit.log");
    let config = coffer_tests::fixtures_config() + &audit_config(&log);
    let mut coffer = Coffer::with_config(&dir, &config);
    coffer.init_and_unseal(1, 1);
    let secret = format!("s3cret-{}", uuid::Uuid::new_v4().simple());
    let stated = coffer.call(
        "POST",
        "hostile/facts",
        Some(json!({"shape": "object", "secret": secret})),
    );
    assert_eq!(stated.status, 200, "{}", stated.text);
    assert!(
        stated.json["data"].get("fixture").is_none() && !stated.text.contains("facts"),
        "facts go to the log, not the client: {}",
        stated.text
    );
    let all = entries(&log);
    let request = &of(&all, "request", "hostile/facts")[0]["request"]["data"];
    assert_eq!(request["shape"], "object", "declared clear");
    assert_eq!(request["secret"], audit_hash(&coffer, "file", &secret));
    let response = &of(&all, "response", "hostile/facts")[0]["response"];
    assert_eq!(response["data"]["shape"], "object");
    assert_eq!(
        response["data"]["secret"],
        audit_hash(&coffer, "file", &secret)
    );
    assert_eq!(response["facts"]["fixture"]["shape"], "object");

    // Facts that are not a JSON object, or too large, are the engine's bug: nothing of
    // them reaches the log.
    // The call has taken effect by then (a certificate issued and stored), so it still
    // succeeds; its entry says the facts were dropped and why.
    for (shape, why) in [
        ("array", "not a JSON object"),
        ("huge", "over the 16384-byte limit"),
    ] {
        let answered = coffer.call("POST", "hostile/facts", Some(json!({"shape": shape})));
        assert_eq!(answered.status, 200, "{shape}: {}", answered.text);
        let all = entries(&log);
        let entry = all
            .iter()
            .rev()
            .find(|e| e["type"] == "response" && e["request"]["path"] == "hostile/facts")
            .unwrap();
        assert_eq!(entry["response"]["data"]["shape"], shape);
        let dropped = entry["response"]["facts"]["facts_dropped"]
            .as_str()
            .unwrap();
        assert!(dropped.contains(why), "{shape}: {dropped}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("xxxxxxxx"), "the huge facts were logged");
    assert!(!text.contains(&secret));
    assert_eq!(coffer.call("GET", "hostile/ok", None).status, 200);
    coffer.stop();
}

/// Every file below `dir`, read whole.
fn files_below(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((path, bytes));
            }
        }
    }
    found
}

#[test]
fn the_tutorial_leaves_no_secret_in_the_log_or_the_storage() {
    use coffer_tests::Postgres;
    use coffer_tests::tutorial::{tutorial_ca, tutorial_database};
    let pg = Postgres::start(false);
    let dir = temp_dir("audit-tutorial");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let log = dir.join("audit.log");
    let config = coffer_tests::fixtures_config() + &audit_config(&log);
    let mut coffer = Coffer::with_config(&dir, &config);
    let unseal_keys = coffer.init_and_unseal(3, 2);
    let root_token = coffer.token.clone();
    for (path, kind) in [("database", "database"), ("pki", "pki")] {
        let mounted = coffer.call(
            "POST",
            &format!("sys/mounts/{path}"),
            Some(json!({"type": kind})),
        );
        assert!(mounted.status < 300, "{}", mounted.text);
    }
    // Every secret the run produces, with whether its HMAC must be in the log (a value
    // some request or response carried) or it must not appear at all (unseal keys).
    let mut secrets: Vec<(String, String, bool)> = unseal_keys
        .iter()
        .map(|k| ("unseal key".to_string(), k.clone(), false))
        .collect();
    secrets.push(("root token".into(), root_token.clone(), true));
    secrets.push((
        "database root password".into(),
        coffer_tests::PG_ROOT_PASSWORD.into(),
        true,
    ));

    // The tutorial: the database role and two credentials, the CA and a certificate.
    tutorial_database(&coffer, &pg);
    for _ in 0..2 {
        let creds = coffer.call("GET", "database/creds/grade-api-role", None);
        assert_eq!(creds.status, 200, "{}", creds.text);
        let password = creds.data()["password"].as_str().unwrap().to_string();
        let user = creds.data()["username"].as_str().unwrap().to_string();
        assert!(
            pg.login(&user, &password, "SELECT 1").is_ok(),
            "a working credential"
        );
        secrets.push(("database password".into(), password, true));
    }
    tutorial_ca(&coffer, &dir);
    let issued = coffer.call(
        "POST",
        "pki_int/issue/grade-api-tls",
        Some(json!({"common_name": "grade-api.grade-api.svc.cluster.local", "ttl": "24h"})),
    );
    assert_eq!(issued.status, 200, "{}", issued.text);
    let private_key = issued.data()["private_key"].as_str().unwrap().to_string();
    secrets.push(("private key".into(), private_key.clone(), true));
    // A kv secret, a child token, an AppRole secret ID and the token of a login with it.
    let value = format!("kv-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(
        coffer
            .call("PUT", "secret/grade-api", Some(json!({"api_key": value})))
            .status,
        204
    );
    secrets.push(("kv value".into(), value, true));
    let child = coffer.call("POST", "auth/token/create", Some(json!({"ttl": "1h"})));
    assert_eq!(child.status, 200, "{}", child.text);
    secrets.push((
        "child token".into(),
        child.json["auth"]["client_token"].as_str().unwrap().into(),
        true,
    ));
    assert!(
        coffer
            .call("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .status
            < 300
    );
    assert!(
        coffer
            .call(
                "POST",
                "auth/approle/role/grade-api",
                Some(json!({"token_ttl": "1h"}))
            )
            .status
            < 300
    );
    let role_id = coffer
        .call("GET", "auth/approle/role/grade-api/role-id", None)
        .data()["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = coffer.call("POST", "auth/approle/role/grade-api/secret-id", None);
    assert_eq!(secret_id.status, 200, "{}", secret_id.text);
    let secret_id = secret_id.data()["secret_id"].as_str().unwrap().to_string();
    let login = coffer.raw(
        "POST",
        "auth/approle/login",
        None,
        Some(&json!({"role_id": role_id, "secret_id": secret_id}).to_string()),
        &[],
    );
    assert_eq!(login.status, 200, "{}", login.text);
    secrets.push(("secret id".into(), secret_id, true));
    secrets.push((
        "login token".into(),
        login.json["auth"]["client_token"].as_str().unwrap().into(),
        true,
    ));
    coffer.stop();

    // Scan: the audit log, the server's own log and every storage file.
    let audit = std::fs::read_to_string(&log).unwrap();
    let server_log = coffer.log_text();
    let storage = files_below(&dir.join("data"));
    assert!(!storage.is_empty());
    for (what, secret, _) in &secrets {
        // A PEM key is looked for line by line (the log escapes its newlines).
        let needles: Vec<&str> = if secret.starts_with("-----") {
            secret
                .lines()
                .filter(|l| l.len() >= 32 && !l.starts_with("-----"))
                .collect()
        } else {
            vec![secret.as_str()]
        };
        assert!(!needles.is_empty());
        for needle in needles {
            assert!(!audit.contains(needle), "the {what} is in the audit log");
            assert!(
                !server_log.contains(needle),
                "the {what} is in the server log"
            );
            for (path, bytes) in &storage {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "the {what} is in {} in clear",
                    path.display()
                );
            }
        }
    }

    // Every secret that passed through a request or a response is in the log as its
    // HMAC, which sys/audit-hash reproduces (after a restart: the salt is kept).
    coffer.start();
    coffer.unseal(&unseal_keys[1..]);
    for (what, secret, logged) in &secrets {
        let hash = audit_hash(&coffer, "file", secret);
        assert_eq!(
            audit.contains(&hash),
            *logged,
            "the {what}'s HMAC {} in the log",
            if *logged { "is not" } else { "is" }
        );
    }
    coffer.stop();
}
