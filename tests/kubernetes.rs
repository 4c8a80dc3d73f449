//! The Kubernetes auth engine against a fake kube-apiserver (`coffer_tests::kube`): a real
//! TLS server answering TokenReviews for JWTs it signed. The tutorial flow (a pod of
//! `grade-api` logs in and may sign only its own certificates), every refusal Vault makes,
//! `pem_keys` and ES256, an unreachable API server, and the outbound-HTTPS grant that the
//! config carries (moved by a rewrite, refused for any other destination).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use coffer_tests::kube::{FakeKube, ISSUER, ServiceAccount, Signing};
use coffer_tests::{Coffer, Reply, fixtures_config, free_port, json, temp_dir};
use serde_json::Value;

const AUDIENCE: &str = "vault://grade-api/vault-issuer";

/// A dev server with `auth/kubernetes` enabled and configured for `kube` (with the
/// reviewer's token), the `grade-api` policy and role.
fn server(kube: &FakeKube) -> Coffer {
    let coffer = Coffer::dev();
    let enabled = coffer.call(
        "POST",
        "sys/auth/kubernetes",
        Some(json!({"type": "kubernetes"})),
    );
    assert_eq!(enabled.status, 204, "{}", enabled.text);
    configure(&coffer, kube, Some(&kube.reviewer_token()), &[]);
    coffer.policy(
        "grade-api",
        r#"path "pki_int/sign/grade-api-tls" { capabilities = ["update"] }"#,
    );
    let role = coffer.call(
        "POST",
        "auth/kubernetes/role/grade-api",
        Some(json!({
            "bound_service_account_names": "grade-api",
            "bound_service_account_namespaces": "grade-api",
            "audience": AUDIENCE,
            "token_policies": "grade-api",
            "token_ttl": "20m",
        })),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    coffer
}

fn configure(coffer: &Coffer, kube: &FakeKube, reviewer: Option<&str>, pem_keys: &[&str]) {
    let mut body = json!({
        "kubernetes_host": kube.url,
        "kubernetes_ca_cert": kube.ca_pem,
        "pem_keys": pem_keys,
    });
    if let Some(reviewer) = reviewer {
        body["token_reviewer_jwt"] = json!(reviewer);
    }
    let written = coffer.call("POST", "auth/kubernetes/config", Some(body));
    assert_eq!(written.status, 204, "{}", written.text);
}

/// A login without a token, as a pod makes it.
fn login(coffer: &Coffer, role: &str, jwt: &str) -> Reply {
    let body = json!({"role": role, "jwt": jwt}).to_string();
    coffer.raw("POST", "auth/kubernetes/login", None, Some(&body), &[])
}

fn grade_api() -> ServiceAccount {
    ServiceAccount::new("grade-api", "grade-api")
}

/// A refused login: `status`, an error containing `words`, and no token.
fn assert_refused(reply: &Reply, status: u16, words: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert!(reply.errors().contains(words), "{words:?}: {}", reply.text);
    assert!(reply.json["auth"].is_null(), "{}", reply.text);
}

fn capabilities(coffer: &Coffer, token: &str, path: &str) -> Value {
    let body = json!({"paths": [path]}).to_string();
    let reply = coffer.raw(
        "POST",
        "sys/capabilities-self",
        Some(token),
        Some(&body),
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json[path].clone()
}

#[test]
fn the_tutorial_flow_logs_in_a_pod_that_may_sign_only_its_own_certificates() {
    let kube = FakeKube::start();
    let coffer = server(&kube);

    // The config reads back without the reviewer's token.
    let config = coffer.call("GET", "auth/kubernetes/config", None);
    assert_eq!(config.status, 200, "{}", config.text);
    assert_eq!(config.data()["kubernetes_host"], json!(kube.url));
    assert_eq!(config.data()["token_reviewer_jwt_set"], json!(true));
    assert_eq!(config.data()["disable_iss_validation"], json!(true));
    assert!(config.data().get("token_reviewer_jwt").is_none());
    assert!(!config.text.contains(&kube.reviewer_token()[..40]));
    assert_eq!(coffer.list("auth/kubernetes/role"), vec!["grade-api"]);
    let role = coffer.call("GET", "auth/kubernetes/role/grade-api", None);
    assert_eq!(
        role.data()["bound_service_account_names"],
        json!(["grade-api"])
    );
    assert_eq!(role.data()["audience"], json!(AUDIENCE));
    assert_eq!(
        role.data()["alias_name_source"],
        json!("serviceaccount_uid")
    );
    assert_eq!(role.data()["token_policies"], json!(["grade-api"]));
    assert_eq!(role.data()["token_ttl"], json!(1200));

    let account = grade_api();
    let jwt = kube.token(Signing::Rs256, &account, &[AUDIENCE], 600);
    let reply = login(&coffer, "grade-api", &jwt);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let auth = &reply.json["auth"];
    assert_eq!(auth["policies"], json!(["default", "grade-api"]));
    assert_eq!(auth["token_policies"], json!(["default", "grade-api"]));
    assert_eq!(auth["lease_duration"], json!(1200));
    assert_eq!(auth["renewable"], json!(true));
    assert_eq!(
        auth["metadata"],
        json!({
            "role": "grade-api",
            "service_account_name": "grade-api",
            "service_account_namespace": "grade-api",
            "service_account_secret_name": "",
            "service_account_uid": account.uid,
        })
    );
    // The review went to the fake API server, with the reviewer's token as bearer.
    assert_eq!(kube.reviews(), 1);
    assert_eq!(kube.bearers(), vec![kube.reviewer_token()]);

    let token = auth["client_token"].as_str().unwrap().to_string();
    let me = coffer.raw("GET", "auth/token/lookup-self", Some(&token), None, &[]);
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(
        me.data()["display_name"],
        json!("kubernetes-grade-api-grade-api")
    );
    assert_eq!(me.data()["path"], json!("auth/kubernetes/login"));
    assert_eq!(
        capabilities(&coffer, &token, "pki_int/sign/grade-api-tls"),
        json!(["update"])
    );
    assert_eq!(
        capabilities(&coffer, &token, "pki_int/issue/grade-api-tls"),
        json!(["deny"])
    );
    let forbidden = coffer.raw("GET", "auth/kubernetes/config", Some(&token), None, &[]);
    assert_eq!(forbidden.status, 403, "{}", forbidden.text);

    // Renewal asks the engine: fine while the role admits the account, refused once the
    // role is gone.
    let renewed = coffer.raw(
        "POST",
        "auth/token/renew-self",
        Some(&token),
        Some("{}"),
        &[],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let deleted = coffer.call("DELETE", "auth/kubernetes/role/grade-api", None);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let refused = coffer.raw(
        "POST",
        "auth/token/renew-self",
        Some(&token),
        Some("{}"),
        &[],
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(
        refused.errors().contains("does not exist"),
        "{}",
        refused.text
    );
}

#[test]
fn the_cli_logs_in_with_the_kubernetes_method() {
    let kube = FakeKube::start();
    let coffer = server(&kube);
    let jwt = kube.token(Signing::Rs256, &grade_api(), &[AUDIENCE], 600);
    let output = coffer.cli(&[
        "login",
        "-method=kubernetes",
        "-token-only",
        "role=grade-api",
        &format!("jwt={jwt}"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let me = coffer.raw("GET", "auth/token/lookup-self", Some(&token), None, &[]);
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(
        me.data()["meta"]["service_account_name"],
        json!("grade-api")
    );
}

#[test]
fn every_login_vault_refuses_is_refused_without_a_token() {
    let kube = FakeKube::start();
    let coffer = server(&kube);
    let account = grade_api();

    let other_name = ServiceAccount::new("grade-api", "billing");
    let jwt = kube.token(Signing::Rs256, &other_name, &[AUDIENCE], 600);
    assert_refused(
        &login(&coffer, "grade-api", &jwt),
        403,
        "service account name not authorized",
    );
    let other_namespace = ServiceAccount::new("billing", "grade-api");
    let jwt = kube.token(Signing::Rs256, &other_namespace, &[AUDIENCE], 600);
    assert_refused(
        &login(&coffer, "grade-api", &jwt),
        403,
        "namespace not authorized",
    );
    let jwt = kube.token(Signing::Rs256, &account, &["vault://other/issuer"], 600);
    assert_refused(&login(&coffer, "grade-api", &jwt), 403, "invalid audience");
    let expired = kube.token(Signing::Rs256, &account, &[AUDIENCE], -3600);
    assert_refused(&login(&coffer, "grade-api", &expired), 403, "expired");
    assert_eq!(kube.reviews(), 0, "refused before any TokenReview");

    // Without pem_keys only the API server can tell a forged token: it says no.
    let forged = kube.token(Signing::Foreign, &account, &[AUDIENCE], 600);
    assert_refused(
        &login(&coffer, "grade-api", &forged),
        403,
        "permission denied",
    );
    assert_eq!(kube.reviews(), 1);
    // A deleted service account's token no longer authenticates.
    let jwt = kube.token(Signing::Rs256, &account, &[AUDIENCE], 600);
    assert_eq!(login(&coffer, "grade-api", &jwt).status, 200);
    kube.delete(&account);
    assert_refused(&login(&coffer, "grade-api", &jwt), 403, "permission denied");

    // The caller's mistakes are 400s.
    assert_refused(
        &login(&coffer, "grade-api", "not.a.jwt"),
        400,
        "malformed JWT",
    );
    assert_refused(&login(&coffer, "grade-api", "abc"), 400, "malformed JWT");
    assert_refused(&login(&coffer, "nobody", &jwt), 400, "invalid role name");
    assert_refused(&login(&coffer, "", &jwt), 400, "missing role");
    assert_refused(&login(&coffer, "grade-api", ""), 400, "missing jwt");
    let logged = coffer.log_text();
    assert!(
        !logged.contains(&jwt),
        "a client's JWT reached the server log"
    );
}

#[test]
fn without_a_reviewer_token_the_clients_own_token_is_the_bearer() {
    let kube = FakeKube::start();
    let coffer = server(&kube);
    configure(&coffer, &kube, None, &[]);
    let config = coffer.call("GET", "auth/kubernetes/config", None);
    assert_eq!(config.data()["token_reviewer_jwt_set"], json!(false));
    let account = grade_api();
    // As a bearer the pod's own token must also be meant for the API server.
    let jwt = kube.token(Signing::Rs256, &account, &[AUDIENCE, ISSUER], 600);
    // The pod's account may not create TokenReviews: the API server says 403.
    assert_refused(&login(&coffer, "grade-api", &jwt), 403, "permission denied");
    assert_eq!(kube.bearers(), vec![jwt.clone()]);
    kube.allow_reviews_by(&account);
    assert_eq!(login(&coffer, "grade-api", &jwt).status, 200);
    // Deleted: the API server refuses the bearer itself (401).
    kube.delete(&account);
    assert_refused(&login(&coffer, "grade-api", &jwt), 403, "permission denied");
}

#[test]
fn pem_keys_verify_signatures_in_the_host_and_es256_works() {
    let kube = FakeKube::start();
    let coffer = server(&kube);
    let account = grade_api();
    let reviewer = kube.reviewer_token();

    // ES256 tokens, checked by the API server alone.
    let es = kube.token(Signing::Es256, &account, &[AUDIENCE], 600);
    assert_eq!(login(&coffer, "grade-api", &es).status, 200);

    // With the RSA key: RS256 passes; a forged token is refused before any review; an
    // ES256 token matches no configured key.
    configure(&coffer, &kube, Some(&reviewer), &[&kube.rsa_public_pem]);
    let reviews = kube.reviews();
    let rs = kube.token(Signing::Rs256, &account, &[AUDIENCE], 600);
    assert_eq!(login(&coffer, "grade-api", &rs).status, 200);
    assert_eq!(kube.reviews(), reviews + 1, "the review happens anyway");
    let forged = kube.token(Signing::Foreign, &account, &[AUDIENCE], 600);
    assert_refused(
        &login(&coffer, "grade-api", &forged),
        403,
        "permission denied",
    );
    assert_refused(&login(&coffer, "grade-api", &es), 403, "permission denied");
    assert_eq!(kube.reviews(), reviews + 1);

    // With both keys (ECDSA's r||s converted for the host's verifier), both pass.
    configure(
        &coffer,
        &kube,
        Some(&reviewer),
        &[&kube.rsa_public_pem, &kube.ec_public_pem],
    );
    assert_eq!(login(&coffer, "grade-api", &es).status, 200);
    assert_eq!(login(&coffer, "grade-api", &rs).status, 200);
    // A tampered ES256 token fails the host's check.
    let (head, signature) = es.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}.{flipped}{}", &signature[1..]);
    assert_refused(
        &login(&coffer, "grade-api", &tampered),
        403,
        "permission denied",
    );

    let bad = coffer.call(
        "POST",
        "auth/kubernetes/config",
        Some(json!({"kubernetes_host": kube.url, "pem_keys": ["not a key"]})),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(
        bad.errors().contains("valid RSA or ECDSA public keys"),
        "{}",
        bad.text
    );
}

#[test]
fn an_unreachable_api_server_is_a_502_that_never_shows_the_reviewer_token() {
    let kube = FakeKube::start();
    let coffer = server(&kube);
    let reviewer = kube.reviewer_token();
    let nowhere = format!("https://127.0.0.1:{}", free_port());
    let written = coffer.call(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": nowhere,
            "kubernetes_ca_cert": kube.ca_pem,
            "token_reviewer_jwt": reviewer,
        })),
    );
    assert_eq!(written.status, 204, "{}", written.text);
    let jwt = kube.token(Signing::Rs256, &grade_api(), &[AUDIENCE], 600);
    let reply = login(&coffer, "grade-api", &jwt);
    assert_refused(&reply, 502, "Kubernetes API");
    assert!(!reply.text.contains(&reviewer), "{}", reply.text);

    // An API server whose certificate does not chain to the configured CA.
    let other = FakeKube::start();
    let written = coffer.call(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": kube.url,
            "kubernetes_ca_cert": other.ca_pem,
            "token_reviewer_jwt": reviewer,
        })),
    );
    assert_eq!(written.status, 204, "{}", written.text);
    let reply = login(&coffer, "grade-api", &jwt);
    assert_refused(&reply, 502, "certificate");
    assert!(!reply.text.contains(&reviewer), "{}", reply.text);
    assert_eq!(kube.reviews(), 0);
    assert!(
        !coffer.log_text().contains(&reviewer),
        "the reviewer token reached the server log"
    );
    // Only https:// is accepted as kubernetes_host.
    let plain = coffer.call(
        "POST",
        "auth/kubernetes/config",
        Some(json!({"kubernetes_host": "http://127.0.0.1:6443"})),
    );
    assert_eq!(plain.status, 400, "{}", plain.text);
}

#[test]
fn a_config_rewrite_moves_the_logins_to_the_new_api_server() {
    let first = FakeKube::start();
    let coffer = server(&first);
    let second = FakeKube::start();
    let account = grade_api();
    let jwt = first.token(Signing::Rs256, &account, &[AUDIENCE], 600);
    assert_eq!(login(&coffer, "grade-api", &jwt).status, 200);
    configure(&coffer, &second, Some(&second.reviewer_token()), &[]);
    let jwt = second.token(Signing::Rs256, &account, &[AUDIENCE], 600);
    assert_eq!(login(&coffer, "grade-api", &jwt).status, 200);
    assert_eq!((first.reviews(), second.reviews()), (1, 1));
}

/// The HTTPS grant as a guest sees it, with the hostile fixture: it may reach what its
/// mount's config names, and nothing else.
#[test]
fn a_guest_reaches_only_the_destination_its_config_grants() {
    let first = FakeKube::start();
    let second = FakeKube::start();
    let mut coffer = Coffer::with_config(&temp_dir("kube-grants"), &fixtures_config());
    coffer.init_and_unseal(1, 1);
    let send = |kube: &FakeKube| {
        coffer.call(
            "POST",
            "hostile/https",
            Some(json!({
                "url": format!("{}/apis/authentication.k8s.io/v1/tokenreviews", kube.url),
                "ca": kube.ca_pem,
            })),
        )
    };
    let grant = |body: Value| coffer.call("POST", "hostile/https-config", Some(body));
    // Nothing granted: denied, and nothing reaches the server.
    let denied = send(&first);
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert!(denied.errors().contains("not granted"), "{}", denied.text);
    assert!(first.bearers().is_empty());

    assert_eq!(grant(json!({"url": first.url})).status, 204);
    let reached = send(&first);
    assert_eq!(reached.status, 200, "{}", reached.text);
    assert_eq!(
        reached.data()["status"],
        json!(401),
        "no bearer: kube-apiserver's 401"
    );
    assert_eq!(first.bearers().len(), 1);
    assert_eq!(send(&second).status, 403);

    // A rewrite moves the grant; a refused write grants nothing.
    assert_eq!(grant(json!({"url": second.url})).status, 204);
    assert_eq!(send(&first).status, 403);
    assert_eq!(send(&second).status, 200);
    let refused = grant(json!({"url": first.url, "fail": true}));
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(send(&first).status, 403);
    // Not https, or with credentials: refused at the write and at the send.
    for url in ["http://127.0.0.1:1", "https://user:pw@127.0.0.1:1"] {
        let written = grant(json!({"url": url}));
        assert_eq!(written.status, 400, "{url}: {}", written.text);
        let sent = coffer.call("POST", "hostile/https", Some(json!({"url": url})));
        assert_eq!(sent.status, 403, "{url}: {}", sent.text);
    }
    // A delete withdraws it.
    assert_eq!(
        coffer.call("DELETE", "hostile/https-config", None).status,
        204
    );
    assert_eq!(send(&second).status, 403);
    assert_eq!(first.bearers().len(), 1);
    assert_eq!(second.bearers().len(), 1);
}
