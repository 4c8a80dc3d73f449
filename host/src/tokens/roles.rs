//! Token roles (`auth/token/roles/<name>`): named rules for `auth/token/create/<name>`,
//! stored in the barrier under `sys/token/role/<name>`, with Vault's fields and Vault's
//! policy rules (`resolve_policies`). A role is the authorization for what it allows: a
//! caller allowed to `update` `auth/token/create/<name>` gets the role's policies even when
//! its own token does not hold them, and orphans from an orphan role without sudo.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{MAX_POLICIES, TokenError, TokenStore, poisoned};
use crate::fields;

/// Most roles stored: `LIST auth/token/roles` answers all of them in one reply.
pub const MAX_ROLES: usize = 4096;
/// Longest role name, in bytes: names are storage keys and part of every token path the
/// role makes (`auth/token/create/<name>`).
pub const MAX_ROLE_NAME_BYTES: usize = 128;
/// Longest `path_suffix`, in bytes (it is appended to the same token paths).
pub const MAX_PATH_SUFFIX_BYTES: usize = 128;

const ROLE_PREFIX: &str = "sys/token/role/";

/// The token type a role makes when the request does not say (Vault's `default-service`).
pub const DEFAULT_SERVICE: &str = "default-service";

/// A stored token role. The `token_*` fields are the ones applied; `period` and
/// `explicit_max_ttl` keep what was written through the deprecated names, as Vault shows
/// both on read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRole {
    /// The role's name.
    pub name: String,
    /// Policies a token made with this role may have (empty: not restricted).
    pub allowed_policies: Vec<String>,
    /// Policies a token made with this role may not have.
    pub disallowed_policies: Vec<String>,
    /// Glob patterns extending `allowed_policies`.
    pub allowed_policies_glob: Vec<String>,
    /// Glob patterns extending `disallowed_policies`.
    pub disallowed_policies_glob: Vec<String>,
    /// Tokens made are orphans (no sudo needed).
    pub orphan: bool,
    /// Tokens made may be renewed.
    pub renewable: bool,
    /// Deprecated `period` as written, seconds.
    pub period: u64,
    /// Period of the tokens made, seconds; 0 = not periodic.
    pub token_period: u64,
    /// Deprecated `explicit_max_ttl` as written, seconds.
    pub explicit_max_ttl: u64,
    /// Explicit max TTL of the tokens made, seconds; 0 = none.
    pub token_explicit_max_ttl: u64,
    /// Appended to the path of tokens made (`auth/token/create/<name>/<suffix>`).
    pub path_suffix: String,
    /// `service` or `default-service`.
    pub token_type: String,
    /// Uses of the tokens made; 0 = unlimited.
    pub token_num_uses: u64,
    /// Do not add `default` to tokens made with allowed or disallowed policies.
    pub token_no_default_policy: bool,
}

/// Fields a role write understands (others are reported back as ignored, as Vault does).
const ROLE_FIELDS: &[&str] = &[
    "allowed_policies",
    "disallowed_policies",
    "allowed_policies_glob",
    "disallowed_policies_glob",
    "orphan",
    "renewable",
    "period",
    "token_period",
    "explicit_max_ttl",
    "token_explicit_max_ttl",
    "path_suffix",
    "token_type",
    "token_num_uses",
    "token_no_default_policy",
    "bound_cidrs",
    "token_bound_cidrs",
    "allowed_entity_aliases",
];

/// Whether `name` is a role name Vault accepts (`\w([\w.-]*\w)?`), within the bound.
pub fn valid_role_name(name: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !name.is_empty()
        && name.len() <= MAX_ROLE_NAME_BYTES
        && name.chars().all(|c| word(c) || c == '-' || c == '.')
        && name.starts_with(word)
        && name.ends_with(word);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a role name is 1 to {MAX_ROLE_NAME_BYTES} letters, digits, '_', '-' or '.', starting and ending with a letter, digit or '_'"
        ))
    }
}

/// Vault's `SanitizePolicies`: trimmed, lowercased, no empties; `root` alone if present;
/// `default` added when `add_default` (and not root); sorted, without duplicates.
pub fn sanitize_policies(policies: &[String], add_default: bool) -> Vec<String> {
    let mut out: Vec<String> = policies
        .iter()
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if out.iter().any(|p| p == "root") {
        return vec!["root".to_string()];
    }
    if add_default && !out.iter().any(|p| p == "default") {
        out.push("default".to_string());
    }
    out.sort();
    out.dedup();
    out
}

/// `go-glob`'s match, as Vault's `StrListContainsGlob` uses it: `*` matches any run of
/// characters (a pattern without `*` must be equal).
pub fn glob_matches(pattern: &str, subject: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == subject;
    };
    if parts.len() == 1 {
        return pattern == subject;
    }
    let Some(mut rest) = subject.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn any_glob(patterns: &[String], subject: &str) -> bool {
    patterns.iter().any(|p| glob_matches(p, subject))
}

impl TokenRole {
    /// Whether the role restricts policies itself (Vault then skips the parent-subset
    /// rule: the role is the authorization).
    pub fn restricts_policies(&self) -> bool {
        !(self.allowed_policies.is_empty()
            && self.disallowed_policies.is_empty()
            && self.allowed_policies_glob.is_empty()
            && self.disallowed_policies_glob.is_empty())
    }

    /// The policies of a token made with this role when it restricts policies (Vault's
    /// `resolveTokenPolicies`, role branch): the requested ones must be within the allowed
    /// (plain or glob); none requested means the allowed ones (or the parent's, when only
    /// disallowed are set); none may be disallowed; `default` is added unless the request
    /// or the role says not to, or the role disallows it.
    pub fn resolve_policies(
        &self,
        requested: &[String],
        no_default_policy: bool,
        parent_policies: &[String],
    ) -> Result<Vec<String>, String> {
        let add_default = !no_default_policy
            && !self.token_no_default_policy
            && !self.disallowed_policies.iter().any(|p| p == "default")
            && !any_glob(&self.disallowed_policies_glob, "default");
        let mut policies = if requested.is_empty() {
            Vec::new()
        } else {
            sanitize_policies(requested, add_default)
        };
        if !self.allowed_policies.is_empty() || !self.allowed_policies_glob.is_empty() {
            let allowed = sanitize_policies(&self.allowed_policies, add_default);
            if policies.is_empty() {
                policies = allowed;
            } else if let Some(outside) = policies
                .iter()
                .find(|p| !allowed.contains(p) && !any_glob(&self.allowed_policies_glob, p))
            {
                return Err(format!(
                    "token policies ({policies:?}) must be subset of the role's allowed policies ({allowed:?}) or glob policies ({:?}); {outside:?} is not",
                    self.allowed_policies_glob
                ));
            }
        } else if policies.is_empty() {
            policies = sanitize_policies(parent_policies, add_default);
        }
        if let Some(refused) = policies.iter().find(|p| {
            self.disallowed_policies.contains(p) || any_glob(&self.disallowed_policies_glob, p)
        }) {
            return Err(format!(
                "token policy {refused:?} is disallowed by this role"
            ));
        }
        let mut policies = sanitize_policies(&policies, false);
        if no_default_policy {
            policies.retain(|p| p != "default");
        }
        Ok(policies)
    }

    /// Applies a role write's fields. On `create` unset fields take Vault's defaults
    /// (`renewable` true, type `default-service`); on an update they keep their values.
    /// Returns Vault's warnings; any bad field is an error naming it, and nothing is
    /// changed by the caller then.
    pub fn apply(
        &mut self,
        input: &Map<String, Value>,
        create: bool,
    ) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        let given = |name: &str| input.get(name).filter(|v| !v.is_null());
        let flag = |name: &str| -> Result<Option<bool>, String> {
            given(name)
                .map(|v| fields::boolean(v).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let duration = |name: &str| -> Result<Option<u64>, String> {
            given(name)
                .map(|v| fields::duration(v).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let list = |name: &str| -> Result<Option<Vec<String>>, String> {
            let Some(value) = given(name) else {
                return Ok(None);
            };
            let items = fields::strings(value, true).map_err(|e| format!("{name}: {e}"))?;
            if items.len() > MAX_POLICIES {
                return Err(format!("{name}: at most {MAX_POLICIES} entries"));
            }
            if let Some(long) = items
                .iter()
                .find(|p| p.len() > crate::acl::MAX_POLICY_NAME_BYTES)
            {
                return Err(format!(
                    "{name}: {:?}... is longer than a policy name may be ({} bytes)",
                    long.chars().take(32).collect::<String>(),
                    crate::acl::MAX_POLICY_NAME_BYTES
                ));
            }
            Ok(Some(items))
        };
        if create {
            self.renewable = true;
            self.token_type = DEFAULT_SERVICE.to_string();
        }
        if let Some(orphan) = flag("orphan")? {
            self.orphan = orphan;
        }
        if let Some(renewable) = flag("renewable")? {
            self.renewable = renewable;
        }
        if let Some(value) = given("path_suffix") {
            let suffix = fields::string(value).map_err(|e| format!("path_suffix: {e}"))?;
            let ok = suffix.len() <= MAX_PATH_SUFFIX_BYTES
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
                && !suffix.contains("..")
                && !suffix.starts_with('/')
                && !suffix.ends_with('/');
            if !ok {
                return Err(format!(
                    "path_suffix: at most {MAX_PATH_SUFFIX_BYTES} letters, digits, '_', '-', '.' or inner '/', without '..'"
                ));
            }
            self.path_suffix = suffix;
        }
        if let Some(policies) = list("allowed_policies")? {
            self.allowed_policies = sanitize_policies(&policies, false);
        }
        if let Some(policies) = list("disallowed_policies")? {
            self.disallowed_policies = sanitize_policies(&policies, false);
        }
        if let Some(policies) = list("allowed_policies_glob")? {
            self.allowed_policies_glob = sanitize_policies(&policies, false);
        }
        if let Some(policies) = list("disallowed_policies_glob")? {
            self.disallowed_policies_glob = sanitize_policies(&policies, false);
        }
        if let Some(value) = input.get("token_type") {
            let kind = match value {
                Value::String(kind) => kind.as_str(),
                other => return Err(format!("invalid 'token_type' value: {other}")),
            };
            self.token_type = match kind {
                "service" => "service".to_string(),
                "default-service" | "default" | "" => DEFAULT_SERVICE.to_string(),
                "batch" | "default-batch" => {
                    return Err(format!(
                        "token_type {kind:?} is not supported: Coffer issues service tokens only"
                    ));
                }
                other => return Err(format!("invalid 'token_type' value {other:?}")),
            };
        }
        for refused in ["bound_cidrs", "token_bound_cidrs", "allowed_entity_aliases"] {
            let set = match given(refused) {
                None => false,
                Some(Value::String(s)) => !s.is_empty(),
                Some(Value::Array(items)) => !items.is_empty(),
                Some(_) => true,
            };
            if set {
                return Err(format!("{refused} is not supported by Coffer yet"));
            }
        }
        match (duration("token_period")?, duration("period")?) {
            (Some(period), legacy) => {
                if legacy.is_some() {
                    warnings.push("Both 'token_period' and deprecated 'period' value supplied, ignoring the deprecated value".to_string());
                }
                self.token_period = period;
                self.period = 0;
            }
            (None, Some(period)) => {
                self.period = period;
                self.token_period = period;
            }
            (None, None) => {}
        }
        match (
            duration("token_explicit_max_ttl")?,
            duration("explicit_max_ttl")?,
        ) {
            (Some(max), legacy) => {
                if legacy.is_some() {
                    warnings.push("Both 'token_explicit_max_ttl' and deprecated 'explicit_max_ttl' value supplied, ignoring the deprecated value".to_string());
                }
                self.token_explicit_max_ttl = max;
                self.explicit_max_ttl = 0;
            }
            (None, Some(max)) => {
                self.explicit_max_ttl = max;
                self.token_explicit_max_ttl = max;
            }
            (None, None) => {}
        }
        if self.token_explicit_max_ttl > super::SYSTEM_MAX_TTL {
            warnings.push(format!(
                "Given explicit max TTL of {} is greater than system/mount allowed value of {} seconds; tokens made with this role are capped to it",
                self.token_explicit_max_ttl,
                super::SYSTEM_MAX_TTL
            ));
        }
        if let Some(value) = given("token_num_uses") {
            let uses = fields::int(value).map_err(|e| format!("token_num_uses: {e}"))?;
            self.token_num_uses =
                u64::try_from(uses).map_err(|_| "token_num_uses cannot be negative".to_string())?;
        }
        if let Some(no_default) = flag("token_no_default_policy")? {
            self.token_no_default_policy = no_default;
        }
        let mut unknown: Vec<&str> = input
            .keys()
            .map(String::as_str)
            .filter(|k| !ROLE_FIELDS.contains(k))
            .collect();
        unknown.sort_unstable();
        if !unknown.is_empty() {
            warnings.push(format!(
                "Endpoint ignored these unrecognized parameters: {unknown:?}"
            ));
        }
        Ok(warnings)
    }

    /// Vault's read shape.
    pub fn to_json(&self) -> Value {
        let mut data = json!({
            "name": self.name,
            "allowed_policies": self.allowed_policies,
            "disallowed_policies": self.disallowed_policies,
            "allowed_policies_glob": self.allowed_policies_glob,
            "disallowed_policies_glob": self.disallowed_policies_glob,
            "orphan": self.orphan,
            "renewable": self.renewable,
            "period": self.period,
            "token_period": self.token_period,
            "explicit_max_ttl": self.explicit_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "path_suffix": self.path_suffix,
            "token_type": self.token_type,
            "allowed_entity_aliases": Value::Null,
            "token_no_default_policy": self.token_no_default_policy,
        });
        if self.token_num_uses > 0
            && let Some(object) = data.as_object_mut()
        {
            object.insert("token_num_uses".to_string(), json!(self.token_num_uses));
        }
        data
    }
}

fn role_key(name: &str) -> String {
    format!("{ROLE_PREFIX}{name}")
}

impl TokenStore {
    /// The role `name`, if stored.
    pub fn role(&self, name: &str) -> Result<Option<TokenRole>, TokenError> {
        let Some(bytes) = self.barrier.get(&role_key(name))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| TokenError::Invalid("corrupt token role".to_string()))
    }

    /// Creates or updates the role `name` from a write's fields; returns the warnings.
    /// Nothing is stored when a field is invalid, or when a new role would exceed
    /// [`MAX_ROLES`].
    pub fn write_role(
        &self,
        name: &str,
        input: &Map<String, Value>,
    ) -> Result<Vec<String>, TokenError> {
        valid_role_name(name).map_err(TokenError::Invalid)?;
        // One role write at a time, so the count bound holds and concurrent updates of a
        // role do not interleave field by field.
        let _writing = self.roles.lock().map_err(|_| poisoned())?;
        let existing = self.role(name)?;
        let create = existing.is_none();
        let mut role = existing.unwrap_or_else(|| TokenRole {
            name: name.to_string(),
            ..TokenRole::default()
        });
        let warnings = role.apply(input, create).map_err(TokenError::Invalid)?;
        if create && self.barrier.scan(ROLE_PREFIX, None, MAX_ROLES)?.len() >= MAX_ROLES {
            return Err(TokenError::Invalid(format!(
                "at most {MAX_ROLES} token roles may exist; delete one first"
            )));
        }
        let bytes = serde_json::to_vec(&role).map_err(|e| TokenError::Invalid(e.to_string()))?;
        self.barrier.put(&role_key(name), &bytes)?;
        Ok(warnings)
    }

    /// Deletes the role `name` (nothing to do when it does not exist).
    pub fn delete_role(&self, name: &str) -> Result<(), TokenError> {
        valid_role_name(name).map_err(TokenError::Invalid)?;
        let _writing = self.roles.lock().map_err(|_| poisoned())?;
        Ok(self.barrier.delete(&role_key(name))?)
    }

    /// Role names, in order (at most [`MAX_ROLES`] exist).
    pub fn role_names(&self) -> Result<Vec<String>, TokenError> {
        Ok(self
            .barrier
            .scan(ROLE_PREFIX, None, MAX_ROLES)?
            .iter()
            .filter_map(|k| k.get(ROLE_PREFIX.len()..))
            .map(str::to_string)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_match_as_go_glob_does() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("dev-*", "dev-app"));
        assert!(!glob_matches("dev-*", "prod-app"));
        assert!(glob_matches("*-app", "dev-app"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxcyyb"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
    }

    #[test]
    fn role_policies_follow_vaults_rules() {
        let role = TokenRole {
            allowed_policies: strings(&["a", "b"]),
            renewable: true,
            ..TokenRole::default()
        };
        let parent = strings(&["p"]);
        assert_eq!(
            role.resolve_policies(&[], false, &parent),
            Ok(strings(&["a", "b", "default"]))
        );
        assert_eq!(
            role.resolve_policies(&strings(&["A"]), false, &parent),
            Ok(strings(&["a", "default"]))
        );
        assert!(
            role.resolve_policies(&strings(&["c"]), false, &parent)
                .is_err()
        );
        assert_eq!(
            role.resolve_policies(&strings(&["a"]), true, &parent),
            Ok(strings(&["a"]))
        );
        let denying = TokenRole {
            disallowed_policies: strings(&["secret"]),
            disallowed_policies_glob: strings(&["prod-*"]),
            ..TokenRole::default()
        };
        assert!(
            denying
                .resolve_policies(&strings(&["secret"]), false, &parent)
                .is_err()
        );
        assert!(
            denying
                .resolve_policies(&strings(&["prod-db"]), false, &parent)
                .is_err()
        );
        assert_eq!(
            denying.resolve_policies(&[], false, &parent),
            Ok(strings(&["default", "p"]))
        );
        let no_default = TokenRole {
            allowed_policies: strings(&["a"]),
            token_no_default_policy: true,
            ..TokenRole::default()
        };
        assert_eq!(
            no_default.resolve_policies(&[], false, &parent),
            Ok(strings(&["a"]))
        );
    }

    #[test]
    fn role_writes_check_every_field() {
        let mut role = TokenRole::default();
        let bad = [
            json!({"token_type": "batch"}),
            json!({"token_type": "weird"}),
            json!({"token_type": 5}),
            json!({"orphan": "perhaps"}),
            json!({"token_period": "forever"}),
            json!({"token_num_uses": -1}),
            json!({"allowed_policies": {"a": 1}}),
            json!({"path_suffix": "../x"}),
            json!({"token_bound_cidrs": ["10.0.0.0/8"]}),
        ];
        for input in bad {
            let Value::Object(map) = input.clone() else {
                unreachable!()
            };
            assert!(role.apply(&map, true).is_err(), "{input}");
        }
        let Value::Object(map) = json!({"period": "1h", "allowed_policies": "A, b"}) else {
            unreachable!()
        };
        assert_eq!(role.apply(&map, true), Ok(Vec::new()));
        assert_eq!(role.token_period, 3600);
        assert_eq!(role.allowed_policies, strings(&["a", "b"]));
        assert!(role.renewable);
        assert_eq!(role.token_type, DEFAULT_SERVICE);
        assert!(valid_role_name("ok.role-1").is_ok());
        for bad in ["", "-x", "x-", "a/b", &"x".repeat(MAX_ROLE_NAME_BYTES + 1)] {
            assert!(valid_role_name(bad).is_err(), "{bad}");
        }
    }
}
