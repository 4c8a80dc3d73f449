//! A fake kube-apiserver for the Kubernetes auth tests: a real TLS server (certificates
//! made with the `openssl` CLI) serving `POST /apis/authentication.k8s.io/v1/tokenreviews`
//! as kube-apiserver does, and a minter of projected service-account JWTs signed with its
//! own RS256 and ES256 keys.
//!
//! Like kube-apiserver it authenticates the caller's bearer token first (401 when it is
//! not a valid token it signed, 403 when its service account may not create
//! TokenReviews), then answers `authenticated: false` with an `error` for a token it did
//! not sign, one that expired, one whose service account was deleted, or one not meant for
//! the requested audiences; else the service account's username, uid, groups and extra.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test support"
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use serde_json::{Value, json};

/// The issuer of projected service-account tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The service account whose token the reviewer uses (bound to system:auth-delegator).
pub const REVIEWER: (&str, &str) = ("kube-system", "vault-auth");

/// How a test token is signed.
#[derive(Clone, Copy, Debug)]
pub enum Signing {
    /// RS256 with the cluster's RSA key.
    Rs256,
    /// ES256 with the cluster's P-256 key.
    Es256,
    /// RS256 with a key the cluster does not know.
    Foreign,
}

/// A service account of the fake cluster.
#[derive(Clone, Debug)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl ServiceAccount {
    /// A service account with a fresh uid.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

struct State {
    rsa_public: PKey<Public>,
    ec_public: PKey<Public>,
    /// Usernames allowed to create TokenReviews (system:auth-delegator).
    delegators: Mutex<HashSet<String>>,
    /// Uids of deleted service accounts.
    deleted: Mutex<HashSet<String>>,
    /// Bearer tokens of the TokenReview requests received, in order.
    bearers: Mutex<Vec<String>>,
    reviews: AtomicUsize,
}

/// A running fake API server. Stops when dropped.
pub struct FakeKube {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA that signed its serving certificate, PEM.
    pub ca_pem: String,
    /// Its RSA service-account signing key's public half, PEM (for `pem_keys`).
    pub rsa_public_pem: String,
    /// Its ECDSA P-256 service-account signing key's public half, PEM.
    pub ec_public_pem: String,
    rsa: PKey<Private>,
    ec: PKey<Private>,
    foreign: PKey<Private>,
    reviewer: String,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

impl FakeKube {
    /// Makes the certificates and keys with the `openssl` CLI and starts serving.
    pub fn start() -> Self {
        let dir = crate::temp_dir("fake-kube");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "1"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=fake-kube-ca",
        ]);
        openssl(&dir, &ca);
        let mut csr = vec!["req", "-nodes"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=kube-apiserver",
        ]);
        openssl(&dir, &csr);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                "server.pem",
                "-extfile",
                "ext.cnf",
            ],
        );
        for (file, algorithm, option) in [
            ("sa-rsa.key", "RSA", "rsa_keygen_bits:2048"),
            ("sa-ec.key", "EC", "ec_paramgen_curve:P-256"),
            ("foreign.key", "RSA", "rsa_keygen_bits:2048"),
        ] {
            openssl(
                &dir,
                &[
                    "genpkey",
                    "-algorithm",
                    algorithm,
                    "-pkeyopt",
                    option,
                    "-out",
                    file,
                ],
            );
        }
        openssl(
            &dir,
            &["pkey", "-in", "sa-rsa.key", "-pubout", "-out", "sa-rsa.pub"],
        );
        openssl(
            &dir,
            &["pkey", "-in", "sa-ec.key", "-pubout", "-out", "sa-ec.pub"],
        );
        let private = |file: &str| PKey::private_key_from_pem(read(&dir, file).as_bytes()).unwrap();
        let public = |file: &str| PKey::public_key_from_pem(read(&dir, file).as_bytes()).unwrap();
        let state = Arc::new(State {
            rsa_public: public("sa-rsa.pub"),
            ec_public: public("sa-ec.pub"),
            delegators: Mutex::new(HashSet::from([format!(
                "system:serviceaccount:{}:{}",
                REVIEWER.0, REVIEWER.1
            )])),
            deleted: Mutex::new(HashSet::new()),
            bearers: Mutex::new(Vec::new()),
            reviews: AtomicUsize::new(0),
        });
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        acceptor
            .set_private_key_file(dir.join("server.key"), SslFiletype::PEM)
            .unwrap();
        acceptor
            .set_certificate_chain_file(dir.join("server.pem"))
            .unwrap();
        let acceptor = Arc::new(acceptor.build());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = state.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = serving.clone();
                tokio::spawn(async move {
                    let ssl = Ssl::new(acceptor.context()).unwrap();
                    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                    if std::pin::Pin::new(&mut stream).accept().await.is_err() {
                        return;
                    }
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let mut kube = Self {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem: read(&dir, "ca.pem"),
            rsa_public_pem: read(&dir, "sa-rsa.pub"),
            ec_public_pem: read(&dir, "sa-ec.pub"),
            rsa: private("sa-rsa.key"),
            ec: private("sa-ec.key"),
            foreign: private("foreign.key"),
            reviewer: String::new(),
            state,
            runtime: Some(runtime),
            dir,
        };
        let reviewer = ServiceAccount {
            namespace: REVIEWER.0.to_string(),
            name: REVIEWER.1.to_string(),
            uid: "00000000-0000-4000-8000-000000000001".to_string(),
        };
        kube.reviewer = kube.token(Signing::Rs256, &reviewer, &[ISSUER], 3600);
        kube
    }

    /// A projected service-account token for `account`, for `audiences`, expiring
    /// `expires_in` seconds from now (negative: already expired).
    pub fn token(
        &self,
        signing: Signing,
        account: &ServiceAccount,
        audiences: &[&str],
        expires_in: i64,
    ) -> String {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let issued = now.min(now + expires_in - 600);
        let claims = json!({
            "aud": audiences,
            "exp": now + expires_in,
            "iat": issued,
            "nbf": issued,
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": {
                "namespace": account.namespace,
                "node": {"name": "node-1", "uid": uuid::Uuid::new_v4().to_string()},
                "pod": {"name": format!("{}-7d9f8c6b5-x2x4z", account.name), "uid": uuid::Uuid::new_v4().to_string()},
                "serviceaccount": {"name": account.name, "uid": account.uid},
            },
            "sub": account.username(),
        });
        let (algorithm, key) = match signing {
            Signing::Rs256 => ("RS256", &self.rsa),
            Signing::Es256 => ("ES256", &self.ec),
            Signing::Foreign => ("RS256", &self.foreign),
        };
        let header = json!({"alg": algorithm, "kid": "fake-kube-sa-key"});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
        signer.update(signed.as_bytes()).unwrap();
        let mut signature = signer.sign_to_vec().unwrap();
        if algorithm == "ES256" {
            // JWS ECDSA signatures are r || s, 32 bytes each (RFC 7518 section 3.4).
            let der = EcdsaSig::from_der(&signature).unwrap();
            signature = der.r().to_vec_padded(32).unwrap();
            signature.extend(der.s().to_vec_padded(32).unwrap());
        }
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The reviewer's token (an RS256 token of [`REVIEWER`] for the API server's own
    /// audience, valid for an hour).
    pub fn reviewer_token(&self) -> String {
        self.reviewer.clone()
    }

    /// Lets `account` create TokenReviews (binds it to system:auth-delegator).
    pub fn allow_reviews_by(&self, account: &ServiceAccount) {
        self.state
            .delegators
            .lock()
            .unwrap()
            .insert(account.username());
    }

    /// Deletes `account`: its tokens no longer authenticate.
    pub fn delete(&self, account: &ServiceAccount) {
        self.state
            .deleted
            .lock()
            .unwrap()
            .insert(account.uid.clone());
    }

    /// TokenReview requests received so far.
    pub fn reviews(&self) -> usize {
        self.state.reviews.load(Ordering::SeqCst)
    }

    /// The bearer tokens of the TokenReview requests received, in order.
    pub fn bearers(&self) -> Vec<String> {
        self.state.bearers.lock().unwrap().clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What kube-apiserver's token authenticator concludes about a token.
enum Verdict {
    Valid {
        username: String,
        uid: String,
        audiences: Vec<String>,
        extra: Value,
    },
    Invalid(String),
}

impl State {
    fn verify(&self, token: &str, wanted: &[String]) -> Verdict {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Verdict::Invalid("invalid bearer token, malformed token".to_string());
        }
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).unwrap_or_default();
        let header: Value = serde_json::from_slice(&decode(parts[0])).unwrap_or(Value::Null);
        let claims: Value = serde_json::from_slice(&decode(parts[1])).unwrap_or(Value::Null);
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = decode(parts[2]);
        let verified = match header["alg"].as_str() {
            Some("RS256") => check(&self.rsa_public, signed.as_bytes(), &signature),
            Some("ES256") if signature.len() == 64 => {
                let r = BigNum::from_slice(&signature[..32]).unwrap();
                let s = BigNum::from_slice(&signature[32..]).unwrap();
                let der = EcdsaSig::from_private_components(r, s)
                    .unwrap()
                    .to_der()
                    .unwrap();
                check(&self.ec_public, signed.as_bytes(), &der)
            }
            _ => false,
        };
        if !verified {
            return Verdict::Invalid(
                "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
                    .to_string(),
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if claims["exp"].as_i64().is_none_or(|exp| exp < now) {
            return Verdict::Invalid(
                "[invalid bearer token, service account token has expired]".to_string(),
            );
        }
        let account = &claims["kubernetes.io"]["serviceaccount"];
        let namespace = claims["kubernetes.io"]["namespace"].as_str().unwrap_or("");
        let name = account["name"].as_str().unwrap_or("");
        let uid = account["uid"].as_str().unwrap_or("");
        if self.deleted.lock().unwrap().contains(uid) {
            return Verdict::Invalid(format!(
                "[invalid bearer token, service account {namespace}/{name} has been deleted]"
            ));
        }
        let token_audiences: Vec<String> = claims["aud"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let wanted: Vec<String> = if wanted.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            wanted.to_vec()
        };
        let audiences: Vec<String> = wanted
            .iter()
            .filter(|a| token_audiences.contains(a))
            .cloned()
            .collect();
        if audiences.is_empty() {
            return Verdict::Invalid(format!(
                "[invalid bearer token, token audiences {token_audiences:?} is invalid for the target audiences {wanted:?}]"
            ));
        }
        let pod = &claims["kubernetes.io"]["pod"];
        Verdict::Valid {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_string(),
            audiences,
            extra: json!({
                "authentication.kubernetes.io/credential-id": [format!("JTI={}", claims["jti"].as_str().unwrap_or(""))],
                "authentication.kubernetes.io/node-name": [claims["kubernetes.io"]["node"]["name"]],
                "authentication.kubernetes.io/pod-name": [pod["name"]],
                "authentication.kubernetes.io/pod-uid": [pod["uid"]],
            }),
        }
    }
}

fn check(key: &PKey<Public>, message: &[u8], signature: &[u8]) -> bool {
    let mut verifier = Verifier::new(MessageDigest::sha256(), key).unwrap();
    verifier.update(message).unwrap();
    verifier.verify(signature).unwrap_or(false)
}

fn status(code: u16, reason: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn answer(
    state: &State,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    if request.method() != hyper::Method::POST
        || request.uri().path() != "/apis/authentication.k8s.io/v1/tokenreviews"
    {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    state.bearers.lock().unwrap().push(bearer.clone());
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let caller = match state.verify(&bearer, &[]) {
        Verdict::Valid { username, .. } => username,
        Verdict::Invalid(_) => return status(401, "Unauthorized", "Unauthorized"),
    };
    if !state.delegators.lock().unwrap().contains(&caller) {
        return status(
            403,
            "Forbidden",
            &format!(
                "tokenreviews.authentication.k8s.io is forbidden: User \"{caller}\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
            ),
        );
    }
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if review["kind"] != "TokenReview" || review["apiVersion"] != "authentication.k8s.io/v1" {
        return status(
            400,
            "BadRequest",
            "expected an authentication.k8s.io/v1 TokenReview",
        );
    }
    state.reviews.fetch_add(1, Ordering::SeqCst);
    let token = review["spec"]["token"].as_str().unwrap_or("");
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let status_body = match state.verify(token, &wanted) {
        Verdict::Valid {
            username,
            uid,
            audiences,
            extra,
        } => {
            let namespace = username.split(':').nth(2).unwrap_or("").to_string();
            json!({
                "authenticated": true,
                "user": {
                    "username": username,
                    "uid": uid,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
                    "extra": extra,
                },
                "audiences": audiences,
            })
        }
        Verdict::Invalid(error) => json!({"user": {}, "error": error}),
    };
    let reply = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": review["spec"],
        "status": status_body,
    });
    hyper::Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap()
}
