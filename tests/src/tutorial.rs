//! The tutorial's PKI, shared by the tests that need a working CA: the root on `pki/`,
//! the intermediate on `pki_int/`, the `grade-api-tls` role; and `openssl` to check what
//! it issues.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::{Coffer, PG_ROOT_PASSWORD, PG_ROOT_USER, Postgres, clients_venv, json, stdout};

/// `CREATE ROLE` for the database engine's role, as the tutorial writes it.
pub const CREATION: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";";

/// The tutorial's database setup on the dev server's `database/` mount: the connection
/// `grade-api-db` to `pg` and the role `grade-api-role` (1 h credentials).
pub fn tutorial_database(coffer: &Coffer, pg: &Postgres) {
    let config = coffer.call(
        "POST",
        "database/config/grade-api-db",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "allowed_roles": "grade-api-role",
            "connection_url": pg.connection_url("disable"),
            "username": PG_ROOT_USER,
            "password": PG_ROOT_PASSWORD,
        })),
    );
    assert_eq!(config.status, 204, "{}", config.text);
    let role = coffer.call(
        "POST",
        "database/roles/grade-api-role",
        Some(json!({"db_name": "grade-api-db", "creation_statements": CREATION, "default_ttl": "1h"})),
    );
    assert_eq!(role.status, 204, "{}", role.text);
}

/// Starts OpenBao's agent (`bao agent`, a Vault-compatible agent nobody here wrote) with
/// `config` (HCL), in `dir`, logging to `dir/agent.log`. Stop it with [`stop_agent`].
pub fn start_bao_agent(dir: &Path, config: &str) -> Child {
    std::fs::write(dir.join("agent.hcl"), config).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    Command::new(clients_venv().join("bin/bao"))
        .args(["agent", "-config"])
        .arg(dir.join("agent.hcl"))
        .env("HOME", dir)
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Stops an agent a test started, by its own handle.
pub fn stop_agent(mut agent: Child) {
    let _ = agent.kill();
    let _ = agent.wait();
}

/// The tutorial role's `allowed_domains`.
pub const ROLE_DOMAINS: &str = "grade-api.svc.cluster.local,grade-api.grade-api.svc.cluster.local";

/// Runs the real `openssl` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// [`openssl`], failing the test unless it succeeds; its standard output.
pub fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    stdout(&openssl(dir, args))
}

/// The tutorial's setup over HTTP: root on pki/, intermediate on pki_int/, the role.
pub fn tutorial_ca(coffer: &Coffer, dir: &Path) {
    let ok = |status: u16, text: &str| assert!(status == 200 || status == 204, "{text}");
    let r = coffer.call("POST", "sys/mounts/pki_int", Some(json!({"type": "pki"})));
    ok(r.status, &r.text);
    let r = coffer.call(
        "POST",
        "sys/mounts/pki/tune",
        Some(json!({"max_lease_ttl": "87600h"})),
    );
    ok(r.status, &r.text);
    let root = coffer.call("POST", "pki/root/generate/internal", Some(json!({"common_name": "grade-api-root-ca", "issuer_name": "root-2026", "ttl": "87600h"})));
    assert_eq!(root.status, 200, "{}", root.text);
    std::fs::write(
        dir.join("root-ca.crt"),
        root.data()["certificate"].as_str().unwrap(),
    )
    .unwrap();
    for mount in ["pki", "pki_int"] {
        let urls = coffer.call(
            "POST",
            &format!("{mount}/config/urls"),
            Some(json!({
                "issuing_certificates": format!("https://coffer.example:8200/v1/{mount}/ca"),
                "crl_distribution_points": format!("https://coffer.example:8200/v1/{mount}/crl"),
            })),
        );
        ok(urls.status, &urls.text);
    }
    let csr = coffer.call("POST", "pki_int/intermediate/generate/internal", Some(json!({"common_name": "grade-api-intermediate-ca", "issuer_name": "grade-api-intermediate"})));
    assert_eq!(csr.status, 200, "{}", csr.text);
    let signed = coffer.call("POST", "pki/root/sign-intermediate", Some(json!({"issuer_ref": "root-2026", "csr": csr.data()["csr"], "format": "pem_bundle", "ttl": "43800h"})));
    assert_eq!(signed.status, 200, "{}", signed.text);
    let bundle = signed.data()["certificate"].as_str().unwrap();
    std::fs::write(dir.join("intermediate.cert.pem"), bundle).unwrap();
    let set = coffer.call(
        "POST",
        "pki_int/intermediate/set-signed",
        Some(json!({"certificate": bundle})),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let role = coffer.call("POST", "pki_int/roles/grade-api-tls", Some(json!({
        "issuer_ref": "grade-api-intermediate", "allowed_domains": ROLE_DOMAINS, "allow_subdomains": true,
        "allow_localhost": false, "max_ttl": "720h", "key_type": "rsa", "key_bits": 2048, "require_cn": false,
        "server_flag": true, "client_flag": true,
    })));
    assert_eq!(role.status, 200, "{}", role.text);
}

/// `openssl verify` of `leaf` (in `dir`) against the tutorial's root (`root-ca.crt`) with
/// the intermediate (`intermediate.cert.pem`) as untrusted chain.
pub fn verify(dir: &Path, leaf: &str) -> Output {
    openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root-ca.crt",
            "-untrusted",
            "intermediate.cert.pem",
            leaf,
        ],
    )
}
