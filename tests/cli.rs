//! The `coffer` CLI against a live server, as a Vault user would type it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use coffer_tests::{Coffer, Value, json, stdout};

#[test]
fn write_read_list_delete_round_trip() {
    let coffer = Coffer::dev();
    let file = coffer.home.join("cert.pem");
    std::fs::write(&file, "-----BEGIN X-----\nabc\n-----END X-----\n").unwrap();
    let written = stdout(&coffer.cli(&[
        "write",
        "secret/app",
        "user=alice",
        &format!("pem=@{}", file.display()),
    ]));
    assert_eq!(written, "Success! Data written to: secret/app");
    assert_eq!(
        stdout(&coffer.cli(&["read", "-field=user", "secret/app"])),
        "alice"
    );
    assert_eq!(
        stdout(&coffer.cli(&["read", "-field=pem", "secret/app"])),
        "-----BEGIN X-----\nabc\n-----END X-----"
    );
    let json_out: Value = serde_json::from_str(&stdout(&coffer.cli(&[
        "read",
        "-format=json",
        "secret/app",
    ])))
    .unwrap();
    assert_eq!(json_out["data"]["user"], json!("alice"));
    assert_eq!(json_out["lease_id"], json!(""));
    let table = stdout(&coffer.cli(&["read", "secret/app"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("user") && l.ends_with("alice")),
        "{table}"
    );

    stdout(&coffer.cli_with_stdin(&["write", "secret/piped", "value=-"], Some("from-stdin")));
    assert_eq!(
        stdout(&coffer.cli(&["read", "-field=value", "secret/piped"])),
        "from-stdin"
    );
    let list = stdout(&coffer.cli(&["list", "secret/"]));
    assert_eq!(list, "Keys\n----\napp\npiped");

    let missing_field = coffer.cli(&["read", "-field=nope", "secret/app"]);
    assert!(!missing_field.status.success());
    assert!(
        String::from_utf8_lossy(&missing_field.stderr)
            .contains("Field \"nope\" not present in secret")
    );
    let no_data = coffer.cli(&["write", "secret/empty"]);
    assert!(!no_data.status.success());
    assert!(String::from_utf8_lossy(&no_data.stderr).contains("Must supply data or use -force"));

    assert_eq!(
        stdout(&coffer.cli(&["delete", "secret/app"])),
        "Success! Data deleted (if it existed) at: secret/app"
    );
    let gone = coffer.cli(&["read", "secret/app"]);
    assert_eq!(gone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("No value found at secret/app"));
}

#[test]
fn secrets_enable_list_tune_disable() {
    let coffer = Coffer::dev();
    assert_eq!(
        stdout(&coffer.cli(&[
            "secrets",
            "enable",
            "-path=team",
            "-description=team kv",
            "kv"
        ])),
        "Success! Enabled the kv secrets engine at: team/"
    );
    let list = stdout(&coffer.cli(&["secrets", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("team/") && l.contains("kv") && l.contains("team kv")),
        "{list}"
    );
    assert_eq!(
        stdout(&coffer.cli(&[
            "secrets",
            "tune",
            "-max-lease-ttl=87600h",
            "-default-lease-ttl=1h",
            "team"
        ])),
        "Success! Tuned the secrets engine at: team/"
    );
    let tune = coffer.call("GET", "sys/mounts/team/tune", None);
    assert_eq!(tune.data()["max_lease_ttl"], json!(315_360_000));
    assert_eq!(tune.data()["default_lease_ttl"], json!(3600));
    let json_list: Value =
        serde_json::from_str(&stdout(&coffer.cli(&["secrets", "list", "-format=json"]))).unwrap();
    assert_eq!(json_list["team/"]["type"], json!("kv"));
    let bad = coffer.cli(&["secrets", "enable", "no-such-engine"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("plugin not found in the catalog"));
    stdout(&coffer.cli(&["secrets", "disable", "team"]));
    assert!(!stdout(&coffer.cli(&["secrets", "list"])).contains("team/"));
}

#[test]
fn token_create_lookup_revoke() {
    let coffer = Coffer::dev();
    let token = stdout(&coffer.cli(&["token", "create", "-policy=app", "-ttl=1h", "-field=token"]));
    assert!(token.starts_with("cvs."), "{token}");
    let lookup: Value = serde_json::from_str(&stdout(&coffer.cli(&[
        "token",
        "lookup",
        "-format=json",
        &token,
    ])))
    .unwrap();
    assert_eq!(lookup["data"]["policies"], json!(["app", "default"]));
    stdout(&coffer.cli(&["token", "revoke", &token]));
    let after = coffer.cli(&["token", "lookup", &token]);
    assert!(!after.status.success());
}

#[test]
fn status_and_errors_exit_non_zero() {
    let coffer = Coffer::dev();
    let status = stdout(&coffer.cli(&["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("sealed") && l.ends_with("false")),
        "{status}"
    );
    let unreachable = std::process::Command::new(coffer_tests::binary())
        .args(["read", "secret/x"])
        .env("COFFER_ADDR", "http://127.0.0.1:1")
        .env("HOME", &coffer.home)
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    // VAULT_ADDR / VAULT_TOKEN are honoured when the COFFER_ variables are absent.
    let vault_env = std::process::Command::new(coffer_tests::binary())
        .args(["write", "secret/v", "k=v"])
        .env_remove("COFFER_ADDR")
        .env_remove("COFFER_TOKEN")
        .env("VAULT_ADDR", &coffer.addr)
        .env("VAULT_TOKEN", "root")
        .env("HOME", coffer_tests::temp_dir("nohome"))
        .output()
        .unwrap();
    assert!(
        vault_env.status.success(),
        "{}",
        String::from_utf8_lossy(&vault_env.stderr)
    );
}

#[test]
fn tls_listener_serves_the_api_and_the_cli_verifies_it() {
    let dir = coffer_tests::temp_dir("tls");
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "tls.key",
            "-out",
            "tls.crt",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(openssl.status.success());
    let port = coffer_tests::free_port();
    let config = coffer_tests::fixtures_config()
        .replace("{addr}", &format!("127.0.0.1:{port}"))
        .replace("{dir}", &dir.display().to_string())
        .replace(
            "{plugins}",
            &coffer_tests::plugin_dir().display().to_string(),
        )
        .replace(
            "[storage]",
            &format!(
                "tls_cert_file = \"{0}/tls.crt\"\ntls_key_file = \"{0}/tls.key\"\n\n[storage]",
                dir.display()
            ),
        );
    std::fs::write(dir.join("coffer.toml"), config).unwrap();
    let mut server = std::process::Command::new(coffer_tests::binary())
        .args([
            "server",
            "-config",
            dir.join("coffer.toml").to_str().unwrap(),
        ])
        .env("COFFER_CACHE_DIR", coffer_tests::cache_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let address = format!("https://127.0.0.1:{port}");
    let ca = dir.join("tls.crt");
    let cli = |args: &[&str], token: &str, ca: Option<&std::path::Path>| {
        let mut command = std::process::Command::new(coffer_tests::binary());
        command
            .args(args)
            .env("COFFER_ADDR", &address)
            .env("COFFER_TOKEN", token)
            .env("HOME", &dir);
        if let Some(ca) = ca {
            command.env("COFFER_CACERT", ca);
        }
        command.output().unwrap()
    };
    assert!(
        coffer_tests::eventually(std::time::Duration::from_secs(60), || {
            let status = cli(&["status"], "", Some(&ca));
            String::from_utf8_lossy(&status.stderr).contains("initialized")
        }),
        "the TLS server never answered"
    );
    let init: Value = serde_json::from_str(&stdout(&cli(
        &[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ],
        "",
        Some(&ca),
    )))
    .unwrap();
    let token = init["root_token"].as_str().unwrap();
    stdout(&cli(
        &[
            "operator",
            "unseal",
            init["unseal_keys_b64"][0].as_str().unwrap(),
        ],
        "",
        Some(&ca),
    ));
    stdout(&cli(
        &["write", "secret/tls", "over=https"],
        token,
        Some(&ca),
    ));
    assert_eq!(
        stdout(&cli(
            &["read", "-field=over", "secret/tls"],
            token,
            Some(&ca)
        )),
        "https"
    );
    let untrusted = cli(&["read", "secret/tls"], token, None);
    assert!(
        !untrusted.status.success(),
        "the CLI must not trust an unknown CA"
    );
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("TLS"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    let plain = std::process::Command::new(coffer_tests::binary())
        .args(["read", "secret/tls"])
        .env("COFFER_ADDR", format!("http://127.0.0.1:{port}"))
        .env("COFFER_TOKEN", token)
        .env("HOME", &dir)
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plain HTTP must not be served on the TLS listener"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// `coffer policy write|read|list|delete|fmt` and `token capabilities`, and that the policy
/// written through the CLI is the one the server enforces.
#[test]
fn policy_verbs_and_token_capabilities() {
    let mut coffer = Coffer::dev();
    coffer.call("POST", "secret/app", Some(json!({"v": "1"})));
    let file = coffer.home.join("app.hcl");
    std::fs::write(
        &file,
        "path \"secret/app\" {\n  capabilities = [\"read\", \"list\"]\n}\n",
    )
    .unwrap();
    assert_eq!(
        stdout(&coffer.cli(&["policy", "write", "app", &file.display().to_string()])),
        "Success! Uploaded policy: app"
    );
    let from_stdin = coffer.cli_with_stdin(
        &["policy", "write", "other", "-"],
        Some("path \"secret/other\" { capabilities = [\"deny\"] }"),
    );
    assert_eq!(stdout(&from_stdin), "Success! Uploaded policy: other");
    assert_eq!(
        stdout(&coffer.cli(&["policy", "read", "app"])),
        std::fs::read_to_string(&file).unwrap().trim_end()
    );
    let listed = stdout(&coffer.cli(&["policy", "list"]));
    for name in ["app", "other", "default", "root"] {
        assert!(listed.lines().any(|l| l == name), "{name} in {listed}");
    }
    // Refusals are errors with a reason, and change nothing.
    for name in ["default", "root"] {
        let refused = coffer.cli(&["policy", "delete", name]);
        assert_eq!(refused.status.code(), Some(2), "deleting {name}");
        assert!(
            String::from_utf8_lossy(&refused.stderr)
                .contains(&format!("cannot delete the {name} policy")),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    let missing = coffer.cli(&["policy", "read", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    let bad = coffer.home.join("bad.hcl");
    std::fs::write(&bad, "path \"x\" { capabilities = [\"fly\"] }").unwrap();
    let refused = coffer.cli(&["policy", "write", "bad", &bad.display().to_string()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(!stdout(&coffer.cli(&["policy", "list"])).contains("bad"));

    // A token with the policy: capabilities for self and, from root, for it.
    let created = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["app"], "ttl": "1h"})),
    );
    let user = created.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        stdout(&coffer.cli(&["token", "capabilities", &user, "secret/app"])),
        "list, read"
    );
    assert_eq!(
        stdout(&coffer.cli(&["token", "capabilities", &user, "secret/other"])),
        "deny"
    );
    assert_eq!(
        stdout(&coffer.cli(&["token", "capabilities", "secret/app"])),
        "root"
    );
    let root = std::mem::replace(&mut coffer.token, user.clone());
    assert_eq!(
        stdout(&coffer.cli(&["token", "capabilities", "secret/app"])),
        "list, read"
    );
    assert_eq!(
        stdout(&coffer.cli(&["read", "-field=v", "secret/app"])),
        "1"
    );
    let denied = coffer.cli(&["write", "secret/app", "v=2"]);
    assert_eq!(denied.status.code(), Some(2));
    coffer.token = root;
    assert_eq!(
        stdout(&coffer.cli(&["policy", "delete", "app"])),
        "Success! Deleted policy: app"
    );
    coffer.token = user;
    assert_eq!(coffer.cli(&["read", "secret/app"]).status.code(), Some(2));
}

#[test]
fn policy_fmt_rewrites_a_valid_file_and_leaves_a_bad_one() {
    let dir = coffer_tests::temp_dir("policy-fmt");
    let messy = dir.join("messy.hcl");
    std::fs::write(
        &messy,
        "path   \"secret/*\"   {\ncapabilities=[\"read\",\"list\"]\n     }\n\n\n",
    )
    .unwrap();
    let output = std::process::Command::new(coffer_tests::binary())
        .args(["policy", "fmt", &messy.display().to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("Success! Formatted policy: {}", messy.display())
    );
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        "path \"secret/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n"
    );
    let bad = dir.join("bad.hcl");
    let text = "path \"secret/*\" { capabilities = [\"read\" }";
    std::fs::write(&bad, text).unwrap();
    let output = std::process::Command::new(coffer_tests::binary())
        .args(["policy", "fmt", &bad.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Error formatting"),
        "{output:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&bad).unwrap(),
        text,
        "a bad file was touched"
    );
}

/// `-output-policy` prints Vault's policy for the request and sends nothing: it works
/// against an address where nothing listens.
#[test]
fn output_policy_prints_the_policy_a_command_needs() {
    let closed = format!("http://127.0.0.1:{}", coffer_tests::free_port());
    let run = |args: &[&str]| {
        let output = std::process::Command::new(coffer_tests::binary())
            .args(args)
            .env("COFFER_ADDR", &closed)
            .env_remove("COFFER_TOKEN")
            .env_remove("VAULT_TOKEN")
            .env("HOME", coffer_tests::temp_dir("output-policy-home"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(
        run(&["read", "-output-policy", "secret/app"]),
        "path \"secret/app\" {\n  capabilities = [\"read\"]\n}"
    );
    assert_eq!(
        run(&["write", "-output-policy", "database/roles/app", "db_name=x"]),
        "path \"database/roles/app\" {\n  capabilities = [\"create\", \"update\"]\n}"
    );
    assert_eq!(
        run(&["list", "-output-policy", "secret/"]),
        "path \"secret/\" {\n  capabilities = [\"list\"]\n}"
    );
    assert_eq!(
        run(&["delete", "-output-policy", "secret/app"]),
        "path \"secret/app\" {\n  capabilities = [\"delete\"]\n}"
    );
    assert_eq!(
        run(&[
            "lease",
            "revoke",
            "-prefix",
            "-output-policy",
            "database/creds/"
        ]),
        "path \"sys/leases/revoke-prefix/database/creds/\" {\n  capabilities = [\"create\", \"update\", \"sudo\"]\n}"
    );
    // Without the flag the same command needs the server, and says so.
    let output = std::process::Command::new(coffer_tests::binary())
        .args(["read", "secret/app"])
        .env("COFFER_ADDR", &closed)
        .env("COFFER_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// `coffer auth list|tune|enable|disable` against the server's `sys/auth`.
#[test]
fn auth_verbs_list_tune_and_refuse_what_cannot_be_done() {
    let coffer = Coffer::dev();
    let table = stdout(&coffer.cli(&["auth", "list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("token/") && l.contains("token")),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&stdout(&coffer.cli(&["auth", "list", "-format=json"]))).unwrap();
    assert_eq!(listed["token/"]["type"], json!("token"));
    assert_eq!(
        stdout(&coffer.cli(&["auth", "tune", "-max-lease-ttl=1h", "token/"])),
        "Success! Tuned the auth method at: token/"
    );
    let created: Value = serde_json::from_str(&stdout(&coffer.cli(&[
        "token",
        "create",
        "-format=json",
        "-ttl=5h",
    ])))
    .unwrap();
    assert_eq!(created["auth"]["lease_duration"], json!(3600), "{created}");
    for (args, reason) in [
        (
            &["auth", "enable", "userpass"][..],
            "unknown auth method type",
        ),
        (&["auth", "disable", "token"][..], "token"),
    ] {
        let refused = coffer.cli(args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    assert!(stdout(&coffer.cli(&["auth", "list"])).contains("token/"));
}
