//! The tutorial's workloads, end to end, as the tools it names drive Coffer: cert-manager's
//! Vault issuer (request for request: health, a Kubernetes login for every certificate,
//! a sign with every value a string) and the agent injector's agent (OpenBao's `bao agent`
//! with `auto_auth` kubernetes) rendering the tutorial's database template, against a fake
//! kube-apiserver (`coffer_tests::kube`) and a real PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::Duration;

use coffer_tests::kube::{FakeKube, ServiceAccount, Signing};
use coffer_tests::tutorial::{
    openssl_ok, start_bao_agent, stop_agent, tutorial_ca, tutorial_database, verify,
};
use coffer_tests::{Coffer, Postgres, Reply, eventually, json, temp_dir};

/// The audience cert-manager's Vault issuer `vault-issuer` in namespace `grade-api` puts
/// on the service-account tokens it requests.
const ISSUER_AUDIENCE: &str = "vault://grade-api/vault-issuer";

/// Enables and configures `auth/kubernetes` for `kube` as the tutorial does.
fn kubernetes_auth(coffer: &Coffer, kube: &FakeKube) {
    let enabled = coffer.cli(&["auth", "enable", "kubernetes"]);
    assert!(enabled.status.success(), "{enabled:?}");
    let config = coffer.call(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": kube.url,
            "kubernetes_ca_cert": kube.ca_pem,
            "token_reviewer_jwt": kube.reviewer_token(),
        })),
    );
    assert_eq!(config.status, 204, "{}", config.text);
}

/// What cert-manager sends, with no token: `POST auth/kubernetes/login`.
fn login(coffer: &Coffer, role: &str, jwt: &str) -> Reply {
    coffer.raw(
        "POST",
        "auth/kubernetes/login",
        None,
        Some(&json!({"role": role, "jwt": jwt}).to_string()),
        &[],
    )
}

#[test]
fn cert_manager_logs_in_for_every_certificate_and_may_only_sign() {
    let coffer = Coffer::dev();
    let dir = temp_dir("workload-cert-manager");
    tutorial_ca(&coffer, &dir);
    let kube = FakeKube::start();
    kubernetes_auth(&coffer, &kube);
    coffer.policy(
        "grade-api-pki",
        r#"path "pki_int/sign/grade-api-tls" { capabilities = ["create", "update"] }"#,
    );
    let role = coffer.call(
        "POST",
        "auth/kubernetes/role/grade-api",
        Some(json!({
            "bound_service_account_names": "grade-api-sa",
            "bound_service_account_namespaces": "grade-api",
            "audience": ISSUER_AUDIENCE,
            "token_policies": "grade-api-pki",
            "token_ttl": "20m",
        })),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    let account = ServiceAccount::new("grade-api", "grade-api-sa");

    let mut tokens = Vec::new();
    for certificate in ["api", "grpc"] {
        // cert-manager checks health without a token first.
        let health = coffer.raw("GET", "sys/health", None, None, &[]);
        assert_eq!(health.status, 200, "{}", health.text);
        let jwt = kube.token(Signing::Rs256, &account, &[ISSUER_AUDIENCE], 600);
        let logged_in = login(&coffer, "grade-api", &jwt);
        assert_eq!(logged_in.status, 200, "{}", logged_in.text);
        let token = logged_in.json["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            logged_in.json["auth"]["policies"],
            json!(["default", "grade-api-pki"])
        );
        assert_eq!(
            logged_in.json["auth"]["metadata"]["service_account_name"],
            json!("grade-api-sa")
        );
        // The CSR cert-manager generates, and its sign request with every value a string.
        let name = format!("{certificate}.grade-api.svc.cluster.local");
        openssl_ok(
            &dir,
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{certificate}.key"),
                "-out",
                &format!("{certificate}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        let csr = std::fs::read_to_string(dir.join(format!("{certificate}.csr"))).unwrap();
        let request = json!({
            "common_name": name, "alt_names": name, "ip_sans": "", "uri_sans": "",
            "ttl": "24h0m0s", "csr": csr, "exclude_cn_from_sans": "true",
        });
        let signed = coffer.raw(
            "POST",
            "pki_int/sign/grade-api-tls",
            Some(&token),
            Some(&request.to_string()),
            &[],
        );
        assert_eq!(signed.status, 200, "{}", signed.text);
        let leaf = format!("{certificate}.pem");
        std::fs::write(
            dir.join(&leaf),
            signed.data()["certificate"].as_str().unwrap(),
        )
        .unwrap();
        let verified = verify(&dir, &leaf);
        assert!(
            verified.status.success(),
            "openssl verify: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1], "every login is a token of its own");

    // The token can do nothing else.
    let token = &tokens[0];
    for (method, path, body) in [
        (
            "POST",
            "pki_int/issue/grade-api-tls",
            json!({"common_name": "x.grade-api.svc.cluster.local"}),
        ),
        (
            "POST",
            "pki/root/generate/internal",
            json!({"common_name": "evil-root"}),
        ),
        ("GET", "database/creds/grade-api-role", json!({})),
        ("GET", "sys/mounts", json!({})),
        (
            "POST",
            "auth/kubernetes/role/grade-api",
            json!({"token_policies": "root"}),
        ),
    ] {
        let reply = coffer.raw(method, path, Some(token), Some(&body.to_string()), &[]);
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
    }

    // Another service account of the namespace gets no token.
    let other = ServiceAccount::new("grade-api", "analytics-sa");
    let refused = login(
        &coffer,
        "grade-api",
        &kube.token(Signing::Rs256, &other, &[ISSUER_AUDIENCE], 600),
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.json["auth"].is_null(), "{}", refused.text);
    // So does the right account with a token meant for another audience.
    let elsewhere = login(
        &coffer,
        "grade-api",
        &kube.token(Signing::Rs256, &account, &["https://other.example"], 600),
    );
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.text);
}

#[test]
fn the_injected_agent_logs_in_with_its_pod_token_and_renders_database_credentials() {
    let pg = Postgres::start(false);
    let coffer = Coffer::dev();
    tutorial_database(&coffer, &pg);
    let kube = FakeKube::start();
    kubernetes_auth(&coffer, &kube);
    coffer.policy(
        "grade-api-db",
        r#"path "database/creds/grade-api-role" { capabilities = ["read"] }"#,
    );
    let role = coffer.cli(&[
        "write",
        "auth/kubernetes/role/grade-api",
        "bound_service_account_names=grade-api",
        "bound_service_account_namespaces=grade-api",
        "token_policies=grade-api-db",
        "token_ttl=1h",
    ]);
    assert!(role.status.success(), "{role:?}");

    // The pod's projected token, where the injector mounts it.
    let dir = temp_dir("workload-agent");
    let account = ServiceAccount::new("grade-api", "grade-api");
    std::fs::write(
        dir.join("token"),
        kube.token(
            Signing::Rs256,
            &account,
            &["https://kubernetes.default.svc.cluster.local"],
            3600,
        ),
    )
    .unwrap();
    let config = format!(
        r#"
pid_file = "{dir}/agent.pid"
vault {{
  address = "{addr}"
}}
auto_auth {{
  method "kubernetes" {{
    mount_path = "auth/kubernetes"
    config = {{
      role = "grade-api"
      token_path = "{dir}/token"
    }}
  }}
  sink "file" {{
    config = {{
      path = "{dir}/vault-token"
    }}
  }}
}}
template {{
  contents = "{{{{- with secret \"database/creds/grade-api-role\" -}}}}postgresql://{{{{ .Data.username }}}}:{{{{ .Data.password }}}}@postgres:5432/gradedb{{{{- end -}}}}"
  destination = "{dir}/db-creds"
}}
"#,
        dir = dir.display(),
        addr = coffer.addr,
    );
    let agent = start_bao_agent(&dir, &config);
    let rendered = eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(dir.join("db-creds")).is_ok_and(|c| c.contains('@'))
    });
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let creds = std::fs::read_to_string(dir.join("db-creds")).unwrap_or_default();
    let token = std::fs::read_to_string(dir.join("vault-token")).unwrap_or_default();
    stop_agent(agent);
    assert!(rendered, "the agent rendered nothing:\n{log}");

    // postgresql://<user>:<password>@postgres:5432/gradedb, and the user logs in.
    let userinfo = creds
        .trim()
        .strip_prefix("postgresql://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo)
        .unwrap();
    let (username, password) = userinfo.split_once(':').unwrap();
    assert!(pg.role_exists(username), "{username} is not a role");
    assert_eq!(
        pg.login(
            username,
            password,
            "SELECT grade FROM grades WHERE student = 'ada'"
        ),
        Ok("1".to_string())
    );
    // The agent's token is the Kubernetes login's, bound by its role's policy.
    let looked = coffer.raw(
        "GET",
        "auth/token/lookup-self",
        Some(token.trim()),
        None,
        &[],
    );
    assert_eq!(looked.status, 200, "{}", looked.text);
    assert_eq!(looked.data()["path"], json!("auth/kubernetes/login"));
    assert_eq!(
        looked.data()["meta"]["service_account_namespace"],
        json!("grade-api")
    );
    let denied = coffer.raw(
        "GET",
        "pki_int/issue/grade-api-tls",
        Some(token.trim()),
        None,
        &[],
    );
    assert_eq!(denied.status, 403, "{}", denied.text);

    // A pod whose service account was deleted: its agent gets no token, renders nothing.
    kube.delete(&account);
    let gone = temp_dir("workload-agent-deleted");
    std::fs::write(
        gone.join("token"),
        std::fs::read_to_string(dir.join("token")).unwrap(),
    )
    .unwrap();
    let agent = start_bao_agent(
        &gone,
        &config.replace(&dir.display().to_string(), &gone.display().to_string()),
    );
    let complained = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(gone.join("agent.log"))
            .unwrap_or_default()
            .contains("permission denied")
    });
    let log = std::fs::read_to_string(gone.join("agent.log")).unwrap_or_default();
    stop_agent(agent);
    assert!(complained, "the refused login was not reported:\n{log}");
    assert!(!gone.join("vault-token").exists(), "{log}");
    assert!(!gone.join("db-creds").exists(), "{log}");
}

/// cert-manager's `appRole` auth: a login with role_id and secret_id for every
/// certificate, then the sign request; the token may do nothing else.
#[test]
fn cert_manager_with_approle_logs_in_and_signs() {
    let coffer = Coffer::dev();
    let dir = temp_dir("workload-approle");
    tutorial_ca(&coffer, &dir);
    assert!(coffer.cli(&["auth", "enable", "approle"]).status.success());
    coffer.policy(
        "grade-api-pki",
        r#"path "pki_int/sign/grade-api-tls" { capabilities = ["create", "update"] }"#,
    );
    let role = coffer.call(
        "POST",
        "auth/approle/role/cert-manager",
        Some(json!({"token_policies": "grade-api-pki", "token_ttl": "20m"})),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    let role_id = coffer
        .call("GET", "auth/approle/role/cert-manager/role-id", None)
        .data()["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = coffer
        .call("POST", "auth/approle/role/cert-manager/secret-id", None)
        .data()["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    openssl_ok(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "web.key",
            "-out",
            "web.csr",
            "-subj",
            "/CN=web.grade-api.svc.cluster.local",
        ],
    );
    let csr = std::fs::read_to_string(dir.join("web.csr")).unwrap();
    for _ in 0..2 {
        let logged_in = coffer.raw(
            "POST",
            "auth/approle/login",
            None,
            Some(&json!({"role_id": role_id, "secret_id": secret_id}).to_string()),
            &[],
        );
        assert_eq!(logged_in.status, 200, "{}", logged_in.text);
        let token = logged_in.json["auth"]["client_token"].as_str().unwrap();
        let request = json!({
            "common_name": "web.grade-api.svc.cluster.local", "alt_names": "", "ip_sans": "",
            "uri_sans": "", "ttl": "24h0m0s", "csr": csr, "exclude_cn_from_sans": "true",
        });
        let signed = coffer.raw(
            "POST",
            "pki_int/sign/grade-api-tls",
            Some(token),
            Some(&request.to_string()),
            &[],
        );
        assert_eq!(signed.status, 200, "{}", signed.text);
        std::fs::write(
            dir.join("web.pem"),
            signed.data()["certificate"].as_str().unwrap(),
        )
        .unwrap();
        assert!(verify(&dir, "web.pem").status.success());
        let issue = coffer.raw(
            "POST",
            "pki_int/issue/grade-api-tls",
            Some(token),
            Some(r#"{"common_name": "web.grade-api.svc.cluster.local"}"#),
            &[],
        );
        assert_eq!(issue.status, 403, "{}", issue.text);
    }
}

/// A cert-manager fleet logging in and never renewing: 1,000 logins leave 1,000 tokens,
/// and every one of them is gone once its TTL has passed.
#[test]
fn a_thousand_logins_leave_a_thousand_tokens_that_expire_on_time() {
    let coffer = Coffer::dev();
    let kube = FakeKube::start();
    kubernetes_auth(&coffer, &kube);
    let role = coffer.call(
        "POST",
        "auth/kubernetes/role/fleet",
        Some(json!({
            "bound_service_account_names": "*",
            "bound_service_account_namespaces": "fleet",
            "token_policies": "default",
            "token_ttl": "4s",
        })),
    );
    // 200: Vault's warning that the role has no audience.
    assert_eq!(role.status, 200, "{}", role.text);
    let before = coffer.list("auth/token/accessors").len();
    let jwts: Vec<String> = (0..10)
        .map(|i| {
            let account = ServiceAccount::new("fleet", &format!("issuer-{i}"));
            kube.token(
                Signing::Es256,
                &account,
                &["https://kubernetes.default.svc"],
                600,
            )
        })
        .collect();
    let minted = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (coffer, jwts, minted) = (&coffer, &jwts, &minted);
            scope.spawn(move || {
                for i in (worker..1000).step_by(4) {
                    let reply = login(coffer, "fleet", &jwts[i % jwts.len()]);
                    assert_eq!(reply.status, 200, "{}", reply.text);
                    let accessor = reply.json["auth"]["accessor"].as_str().unwrap().to_string();
                    minted
                        .lock()
                        .unwrap()
                        .push((accessor, std::time::Instant::now()));
                }
            });
        }
    });
    let minted = minted.into_inner().unwrap();
    let distinct: std::collections::HashSet<&String> = minted.iter().map(|(a, _)| a).collect();
    assert_eq!(distinct.len(), 1000, "1,000 logins, 1,000 tokens");
    // Not early: the tokens of the last second are all still there.
    let last = minted.iter().map(|(_, at)| *at).max().unwrap();
    for (accessor, at) in &minted {
        if last.duration_since(*at) < Duration::from_secs(1)
            && at.elapsed() < Duration::from_secs(3)
        {
            let looked = coffer.call(
                "POST",
                "auth/token/lookup-accessor",
                Some(json!({"accessor": accessor})),
            );
            assert_eq!(looked.status, 200, "a token expired early: {}", looked.text);
        }
    }
    let took = last.elapsed();
    // Each expires within a scheduler pass of its TTL; none outlives it.
    let expired = eventually(took + Duration::from_secs(15), || {
        coffer.list("auth/token/accessors").len() == before
    });
    assert!(
        expired,
        "{} login tokens outlived their 4 s TTL",
        coffer.list("auth/token/accessors").len() - before
    );
}
