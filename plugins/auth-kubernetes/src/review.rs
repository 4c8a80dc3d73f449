//! The Kubernetes TokenReview API: asks the API server whether a JWT is (still) valid and
//! for which service account, as Vault's `token_review.go` does, with its error words.
//!
//! What it must never do: put the bearer token or the reviewed JWT into an error or a log
//! line (the host's `http` errors never carry request headers or bodies either).

use coffer_sdk::EngineError;
use coffer_sdk::http::{self, HostError};
use serde_json::{Value, json};

use crate::Config;

/// The path of the TokenReview API below the API server's URL.
const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// How much of an unexpected answer is quoted in a log line.
const MAX_QUOTED_BYTES: usize = 512;

/// The service account the API server says a token belongs to.
pub struct Reviewed {
    name: String,
    namespace: String,
    uid: String,
}

impl Reviewed {
    /// Whether the review names the same service account as the JWT's claims (Vault's
    /// messages, logged only).
    pub fn matches(&self, name: &str, namespace: &str, uid: &str) -> Result<(), &'static str> {
        if self.name != name {
            return Err("JWT names did not match");
        }
        if self.uid != uid {
            return Err("JWT UIDs did not match");
        }
        if self.namespace != namespace {
            return Err("JWT namespaces did not match");
        }
        Ok(())
    }
}

/// Reviews `jwt` for `audiences`. The API server's "no" is a permission-denied (Vault's
/// `permission denied`, the reason logged at debug); an API server that cannot be
/// reached, or answers nonsense, is an upstream failure.
pub fn review(config: &Config, jwt: &str, audiences: &[String]) -> Result<Reviewed, EngineError> {
    let host = config.kubernetes_host.trim_end_matches('/');
    let bearer = if config.token_reviewer_jwt.is_empty() {
        jwt
    } else {
        config.token_reviewer_jwt.as_str()
    };
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": jwt, "audiences": audiences },
    });
    let request = http::Request {
        method: "POST".to_string(),
        url: format!("{host}{TOKEN_REVIEW_PATH}"),
        headers: vec![
            ("Authorization".to_string(), format!("Bearer {bearer}")),
            ("Content-Type".to_string(), "application/json".to_string()),
            ("Accept".to_string(), "application/json".to_string()),
        ],
        body: body.to_string().into_bytes(),
        ca_pem: config.kubernetes_ca_cert.clone(),
    };
    let response = http::send(&request).map_err(|error| upstream(host, error))?;
    let denied = |reason: String| {
        coffer_sdk::log::debug(&format!("login unauthorized: {reason}"));
        EngineError::PermissionDenied("permission denied".to_string())
    };
    if response.status == 401 {
        return Err(denied(
            "lookup failed: service account unauthorized; this could mean it has been deleted or recreated with a new token".to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&response.body);
    if !(200..=206).contains(&response.status) {
        return Err(denied(format!(
            "lookup failed: the TokenReview API answered {}: {}",
            response.status,
            quoted(&text)
        )));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|_| {
        EngineError::Upstream(format!(
            "the Kubernetes API at {host} answered the TokenReview with something that is not JSON"
        ))
    })?;
    if answer.get("kind").and_then(Value::as_str) == Some("Status")
        && answer.get("status").and_then(Value::as_str) != Some("Success")
    {
        let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(denied(format!("lookup failed: {}", quoted(message))));
    }
    let status = answer.get("status").cloned().unwrap_or(Value::Null);
    let error = status.get("error").and_then(Value::as_str).unwrap_or("");
    if !error.is_empty() {
        return Err(denied(format!("lookup failed: {}", quoted(error))));
    }
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        return Err(denied(
            "lookup failed: service account jwt not valid".to_string(),
        ));
    }
    if !audiences.is_empty() {
        let granted: Vec<&str> = status
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !audiences.iter().any(|a| granted.contains(&a.as_str())) {
            return Err(denied(format!(
                "lookup failed: service account jwt valid for audience(s) {granted:?}, but wanted {audiences:?}"
            )));
        }
    }
    let user = status.get("user").cloned().unwrap_or(Value::Null);
    let username = user.get("username").and_then(Value::as_str).unwrap_or("");
    let parts: Vec<&str> = username.split(':').collect();
    let [kind, group, namespace, name] = parts.as_slice() else {
        return Err(denied(
            "lookup failed: unexpected username format".to_string(),
        ));
    };
    if *kind != "system" || *group != "serviceaccount" {
        return Err(denied(
            "lookup failed: username returned is not a service account".to_string(),
        ));
    }
    Ok(Reviewed {
        name: name.to_string(),
        namespace: namespace.to_string(),
        uid: user
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

/// A host refusal or failure on the way to the API server: the client gets a 502 that
/// names the API server and the reason, never the request.
fn upstream(host: &str, error: HostError) -> EngineError {
    let reason = match error {
        HostError::Denied(m) => {
            format!("{m} (rewrite this mount's config to grant the Kubernetes API again)")
        }
        HostError::Unavailable(m) | HostError::Invalid(m) | HostError::Internal(m) => m,
        HostError::NotFound => "not found".to_string(),
    };
    EngineError::Upstream(format!(
        "error reaching the Kubernetes API at {host}: {reason}"
    ))
}

/// At most [`MAX_QUOTED_BYTES`] of `text`, for a log line.
fn quoted(text: &str) -> String {
    let mut end = text.len().min(MAX_QUOTED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().trim().to_string()
}
