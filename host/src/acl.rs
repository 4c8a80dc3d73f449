//! Vault's ACL policies as a pure function: (policies, request) → decision.
//!
//! Owns policy parsing ([`Policy::parse`]), merging a token's policies into a compiled
//! [`Acl`], and answering [`Acl::allowed`] and [`Acl::capabilities`] exactly as Vault's
//! `vault/acl.go` does. It must never do I/O, look up tokens or policies, or know about
//! HTTP: the pipeline resolves the token's policies, maps the request to an
//! [`AclRequest`], and turns a [`Denial`] into Vault's 403 `permission denied`.
//!
//! Rule choice (one rule decides; nothing else is consulted):
//! 1. the exact rule for the path; for LIST also the exact rule without the trailing `/`;
//! 2. else the longest `*` prefix rule and every matching `+` rule, ranked by Vault's
//!    priority (see [`Acl`]); for LIST, then the same for the path without its `/`.
//!
//! Within the winning rule `deny` refuses everything; otherwise the operation's
//! capability is needed, `sudo` too when the path is a root path ([`sudo_required`]),
//! the response-wrapping TTL bounds, and the parameter rules.

mod policy;
mod sudo;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};

pub use policy::{
    MAX_PARAMETERS_PER_PATH, MAX_PATHS_PER_POLICY, MAX_PATTERN_BYTES, MAX_POLICY_BYTES,
    MAX_POLICY_NAME_BYTES, MAX_VALUE_DEPTH, ParameterValues, PathRule, Policy,
};
pub use sudo::{
    PKI_SUDO_PATHS, SYS_SUDO_PATHS, TOKEN_SUDO_PATHS, special_path_matches, sudo_required,
};

/// Vault's `default` policy, limited to the paths Coffer serves. Vault's text, minus the
/// identity (`{{identity.entity.id}}`), control-group and OIDC paths Coffer does not have.
pub const DEFAULT_POLICY: &str = r#"
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its resultant ACL from all policies. This is useful
# for UIs. It is an internal path because the format may change at any time
# based on how the internal ACL features and capabilities change.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}
"#;

/// Errors from parsing a policy. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The text is neither valid HCL nor valid JSON, or its top level is wrong.
    #[error("failed to parse policy: {0}")]
    Syntax(String),
    /// One `path` rule is invalid.
    #[error("failed to parse policy: path {path:?}: {reason}")]
    InvalidRule {
        /// The pattern as written (leading `/` stripped).
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The policy name is empty or reserved.
    #[error("invalid policy name: {0}")]
    InvalidName(String),
    /// A bounded quantity is over its limit.
    #[error("{what}: {actual} is over the limit of {limit}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        actual: usize,
        /// The limit (a `MAX_*` constant of this module).
        limit: usize,
    },
}

/// One capability a rule can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Create data at a path that does not exist yet (POST/PUT, existence check false).
    Create,
    /// Read (GET).
    Read,
    /// Update existing data (POST/PUT); also renew, revoke and rollback.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// LIST (or GET with `?list=true`).
    List,
    /// Needed in addition on root paths ([`sudo_required`]).
    Sudo,
    /// Refuses everything, whatever else any policy grants on the same pattern.
    Deny,
}

impl Capability {
    /// Every capability, in Vault's alphabetical display order.
    const DISPLAY_ORDER: [Capability; 8] = [
        Capability::Create,
        Capability::Delete,
        Capability::Deny,
        Capability::List,
        Capability::Patch,
        Capability::Read,
        Capability::Sudo,
        Capability::Update,
    ];

    /// Vault's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Patch => "patch",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Sudo => "sudo",
            Capability::Deny => "deny",
        }
    }

    /// The capability with Vault's name `name`.
    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::DISPLAY_ORDER
            .into_iter()
            .find(|cap| cap.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities (a bitset), or `root` for a root token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u16);

impl Capabilities {
    /// Nothing granted (reported as `["deny"]`).
    pub const NONE: Capabilities = Capabilities(0);
    /// Explicit deny.
    pub const DENY: Capabilities = Capabilities(1 << (Capability::Deny as u16));
    /// A root token: everything, reported as `["root"]`.
    pub const ROOT: Capabilities = Capabilities(1 << 15);

    /// This set plus `capability`.
    pub fn with(self, capability: Capability) -> Capabilities {
        Capabilities(self.0 | capability.bit())
    }

    /// Both sets.
    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    /// Whether `capability` is granted (always, for root; never, under deny).
    pub fn contains(self, capability: Capability) -> bool {
        if self.is_root() {
            return capability != Capability::Deny;
        }
        self.0 & capability.bit() != 0
    }

    /// Whether this is a root token's set.
    pub fn is_root(self) -> bool {
        self.0 & Capabilities::ROOT.0 != 0
    }

    /// What `sys/capabilities-self` reports: `["root"]`; `["deny"]` for deny or nothing;
    /// else the names in Vault's (alphabetical) order.
    pub fn names(self) -> Vec<&'static str> {
        if self.is_root() {
            return vec!["root"];
        }
        if self.0 == 0 || self.contains(Capability::Deny) {
            return vec!["deny"];
        }
        Capability::DISPLAY_ORDER
            .into_iter()
            .filter(|cap| self.contains(*cap))
            .map(Capability::name)
            .collect()
    }
}

impl fmt::Debug for Capabilities {
    /// The set as it is (`[]` for none), unlike [`Capabilities::names`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str("[\"root\"]");
        }
        f.debug_list()
            .entries(
                Capability::DISPLAY_ORDER
                    .into_iter()
                    .filter(|cap| self.contains(*cap))
                    .map(Capability::name),
            )
            .finish()
    }
}

/// The logical operation, as the pipeline classified the request (renew, revoke and
/// rollback are [`Operation::Update`]; help requests never reach the ACL: always allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// POST/PUT where the existence check said "absent".
    Create,
    /// GET.
    Read,
    /// POST/PUT on existing data, renew, revoke, rollback.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// LIST; the path keeps its trailing `/` as Vault's HTTP layer adds it.
    List,
}

impl Operation {
    /// The capability this operation needs.
    pub fn capability(self) -> Capability {
        match self {
            Operation::Create => Capability::Create,
            Operation::Read => Capability::Read,
            Operation::Update => Capability::Update,
            Operation::Patch => Capability::Patch,
            Operation::Delete => Capability::Delete,
            Operation::List => Capability::List,
        }
    }

    /// Whether Vault checks parameter rules for it (it does not for LIST and DELETE).
    fn checks_parameters(self) -> bool {
        matches!(
            self,
            Operation::Create | Operation::Read | Operation::Update | Operation::Patch
        )
    }
}

/// What the ACL needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub struct AclRequest<'a> {
    /// From the API root (`secret/data/x`), without `/v1/`; leading `/`s are ignored.
    pub path: &'a str,
    /// The logical operation.
    pub operation: Operation,
    /// Request data (JSON body or query parameters); `None` or empty when there is none.
    pub parameters: Option<&'a Map<String, Value>>,
    /// Whether the path is a root path ([`sudo_required`], or an engine's own list).
    pub needs_sudo: bool,
    /// The requested response-wrapping TTL in seconds; `None` when not wrapped.
    pub wrap_ttl: Option<u64>,
}

impl<'a> AclRequest<'a> {
    /// A request with no data, not wrapped, needing sudo iff [`sudo_required`] says so.
    pub fn new(path: &'a str, operation: Operation) -> AclRequest<'a> {
        AclRequest {
            path,
            operation,
            parameters: None,
            needs_sudo: sudo_required(path),
            wrap_ttl: None,
        }
    }

    /// The same request with these parameters.
    pub fn with_parameters(self, parameters: &'a Map<String, Value>) -> AclRequest<'a> {
        AclRequest {
            parameters: Some(parameters),
            ..self
        }
    }
}

/// Why a request was refused. The client always gets Vault's `permission denied`; this is
/// for the server log and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No rule of any policy matches the path.
    #[error("no policy rule matches the path")]
    NoMatchingRule,
    /// The winning rule is `deny`.
    #[error("the matching policy rule denies the path")]
    ExplicitDeny,
    /// The winning rule lacks the operation's capability.
    #[error("the matching policy rule does not grant {0:?}")]
    MissingCapability(Capability),
    /// A root path, and the winning rule lacks `sudo`.
    #[error("the path needs sudo, which the matching policy rule does not grant")]
    SudoRequired,
    /// The rule bounds the response-wrapping TTL and the request is outside the bounds.
    #[error("the matching policy rule requires a response-wrapping TTL within its bounds")]
    WrappingTtl,
    /// A `required_parameters` entry is absent.
    #[error("required parameter {0:?} is missing")]
    MissingParameter(String),
    /// A parameter (or `*`, all of them) is in `denied_parameters` with this value.
    #[error("parameter {0:?} is denied")]
    DeniedParameter(String),
    /// A parameter, or its value, is not in `allowed_parameters`.
    #[error("parameter {0:?} is not allowed with this value")]
    ParameterNotAllowed(String),
}

/// A token's policies compiled for evaluation.
///
/// Cost per request, with `R` merged rules: one hash lookup for the exact rule (two for
/// LIST); one hash lookup per distinct `*`-prefix length not longer than the path; a scan
/// of the `+` rules, pre-sorted by Vault's priority so the first match is the best; then
/// one hash lookup per request parameter. Nothing allocates except lowercasing a
/// parameter name that has upper-case letters, and a [`Denial`]'s parameter name.
///
/// Priority between the prefix rule and `+` rules (higher wins): the first `+` or `*`
/// later in the pattern; not ending in `*`; fewer `+` segments; longer; lexicographically
/// greater.
#[derive(Debug, Clone)]
pub struct Acl {
    root: bool,
    rules: Vec<Rule>,
    exact: HashMap<Box<str>, usize>,
    prefix: HashMap<Box<str>, usize>,
    /// Distinct prefix lengths, longest first.
    prefix_lengths: Vec<usize>,
    /// `+` rules, highest priority first.
    segment: Vec<SegmentRule>,
}

/// One merged rule: the union of every rule written with the same pattern.
#[derive(Debug, Clone, Default)]
struct Rule {
    capabilities: Capabilities,
    min_wrapping_ttl: u64,
    max_wrapping_ttl: u64,
    allowed: HashMap<Box<str>, Values>,
    denied: HashMap<Box<str>, Values>,
    /// Lowercased, as Vault looks them up.
    required: Vec<Box<str>>,
}

#[derive(Debug, Clone)]
struct SegmentRule {
    /// The pattern without its trailing `*`, split on `/`.
    parts: Vec<Box<str>>,
    /// The pattern without its trailing `*`.
    path: Box<str>,
    is_prefix: bool,
    wildcards: usize,
    first_wildcard: usize,
    rule: usize,
}

impl SegmentRule {
    /// Whether this `+` rule can match a path below `mount` (`a/b/`): each of the mount's
    /// segments is matched by `+` or spelled out, and the rule goes on past them.
    fn reaches_below(&self, mount: &str) -> bool {
        let segments: Vec<&str> = mount.trim_end_matches('/').split('/').collect();
        let last = self.parts.len().saturating_sub(1);
        let fits = segments
            .iter()
            .enumerate()
            .all(|(i, segment)| match self.parts.get(i) {
                Some(part) if &**part == "+" => true,
                Some(part) if i == last && self.is_prefix => segment.starts_with(&**part),
                Some(part) => **part == **segment,
                None => false,
            });
        fits && (self.parts.len() > segments.len() || self.is_prefix)
    }
}

/// Vault's ranking of non-exact matches; greater wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Priority<'a> {
    first_wildcard: usize,
    is_prefix: bool,
    wildcards: usize,
    path: &'a str,
}

impl Ord for Priority<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.first_wildcard
            .cmp(&other.first_wildcard)
            .then_with(|| other.is_prefix.cmp(&self.is_prefix))
            .then_with(|| other.wildcards.cmp(&self.wildcards))
            .then_with(|| self.path.len().cmp(&other.path.len()))
            .then_with(|| self.path.cmp(other.path))
    }
}

impl PartialOrd for Priority<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl SegmentRule {
    fn priority(&self) -> Priority<'_> {
        Priority {
            first_wildcard: self.first_wildcard,
            is_prefix: self.is_prefix,
            wildcards: self.wildcards,
            path: &self.path,
        }
    }

    /// Vault's segment match: `+` is any one segment (even empty); a prefix pattern's last
    /// part is a prefix of the path's segment at that position.
    fn matches(&self, path: &str, path_segments: usize) -> bool {
        let parts = self.parts.len();
        if path_segments < parts || (!self.is_prefix && path_segments != parts) {
            return false;
        }
        self.parts
            .iter()
            .zip(path.split('/'))
            .enumerate()
            .all(|(index, (part, segment))| {
                &**part == "+"
                    || **part == *segment
                    || (self.is_prefix && index + 1 == parts && segment.starts_with(&**part))
            })
    }
}

/// Listed values of one parameter, compiled.
#[derive(Debug, Clone)]
enum Values {
    Any,
    OneOf(Vec<Expected>),
}

#[derive(Debug, Clone)]
enum Expected {
    /// A listed string: exact, or with a leading and/or trailing `*`.
    Text(Glob),
    /// Anything else: equal as JSON values (numbers by value).
    Other(Value),
}

/// Vault's `GlobbedStringsMatch`: one-character patterns (including `*`) are exact.
#[derive(Debug, Clone)]
enum Glob {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        if pattern.len() < 2 {
            return Glob::Exact(pattern.into());
        }
        match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
            (Some(rest), Some(_)) => Glob::Contains(rest.strip_suffix('*').unwrap_or(rest).into()),
            (Some(suffix), None) => Glob::Suffix(suffix.into()),
            (None, Some(prefix)) => Glob::Prefix(prefix.into()),
            (None, None) => Glob::Exact(pattern.into()),
        }
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Exact(s) => text == &**s,
            Glob::Prefix(s) => text.starts_with(&**s),
            Glob::Suffix(s) => text.ends_with(&**s),
            Glob::Contains(s) => text.contains(&**s),
        }
    }
}

impl Values {
    fn compile(values: &ParameterValues) -> Values {
        match values {
            ParameterValues::Any => Values::Any,
            ParameterValues::OneOf(list) => Values::OneOf(
                list.iter()
                    .map(|value| match value {
                        Value::String(s) => Expected::Text(Glob::new(s)),
                        other => Expected::Other(other.clone()),
                    })
                    .collect(),
            ),
        }
    }

    /// The values as written (`[]` for any value).
    fn shown(&self) -> Value {
        match self {
            Values::Any => Value::Array(Vec::new()),
            Values::OneOf(list) => Value::Array(
                list.iter()
                    .map(|expected| match expected {
                        Expected::Text(Glob::Exact(s)) => Value::String(s.to_string()),
                        Expected::Text(Glob::Prefix(s)) => Value::String(format!("{s}*")),
                        Expected::Text(Glob::Suffix(s)) => Value::String(format!("*{s}")),
                        Expected::Text(Glob::Contains(s)) => Value::String(format!("*{s}*")),
                        Expected::Other(value) => value.clone(),
                    })
                    .collect(),
            ),
        }
    }

    fn contains(&self, value: &Value) -> bool {
        match self {
            Values::Any => true,
            Values::OneOf(list) => list.iter().any(|expected| match (expected, value) {
                (Expected::Text(glob), Value::String(text)) => glob.matches(text),
                (Expected::Text(_), _) => false,
                (Expected::Other(expected), value) => json_equal(expected, value),
            }),
        }
    }
}

/// Deep equality, with numbers equal when their values are (`1` = `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => {
            match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
                (Some(a), Some(b), _, _) => a == b,
                (_, _, Some(a), Some(b)) => a == b,
                _ => a.as_f64().is_some_and(|a| b.as_f64() == Some(a)),
            }
        }
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| json_equal(a, b)))
        }
        _ => false,
    }
}

/// Vault's `strings.ToLower` on a parameter name, borrowing when nothing changes.
fn lowercase(name: &str) -> std::borrow::Cow<'_, str> {
    if name
        .chars()
        .any(|c| c.to_lowercase().ne(std::iter::once(c)))
    {
        std::borrow::Cow::Owned(name.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// How a pattern is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PatternKind {
    Exact,
    /// Ends in `*` (stripped), no `+` segment.
    Prefix,
    /// Has a `+` segment; the trailing `*`, if any, is kept in the key.
    Segment,
}

fn classify(pattern: &str) -> (PatternKind, &str) {
    if pattern == "+" || pattern.contains("/+") || pattern.starts_with("+/") {
        return (PatternKind::Segment, pattern);
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => (PatternKind::Prefix, prefix),
        None => (PatternKind::Exact, pattern),
    }
}

/// A rule while merging: parameter maps kept as written (`None` = absent).
#[derive(Debug, Clone, Default)]
struct Merged {
    capabilities: Capabilities,
    min_wrapping_ttl: u64,
    max_wrapping_ttl: u64,
    allowed: Option<BTreeMap<String, ParameterValues>>,
    denied: Option<BTreeMap<String, ParameterValues>>,
    required: Vec<String>,
}

impl Merged {
    fn from_rule(rule: &PathRule) -> Merged {
        Merged {
            capabilities: rule.capabilities(),
            min_wrapping_ttl: rule.min_wrapping_ttl(),
            max_wrapping_ttl: rule.max_wrapping_ttl(),
            allowed: rule.allowed_parameters().cloned(),
            denied: rule.denied_parameters().cloned(),
            required: rule.required_parameters().to_vec(),
        }
    }

    /// Vault's `NewACL` merge of a rule with the same pattern.
    fn merge(&mut self, rule: &PathRule) {
        if self.capabilities.contains(Capability::Deny) {
            return;
        }
        if rule.capabilities().contains(Capability::Deny) {
            *self = Merged::from_rule(rule);
            return;
        }
        self.capabilities = self.capabilities.union(rule.capabilities());
        self.min_wrapping_ttl = smaller_set(self.min_wrapping_ttl, rule.min_wrapping_ttl());
        self.max_wrapping_ttl = smaller_set(self.max_wrapping_ttl, rule.max_wrapping_ttl());
        merge_parameters(&mut self.allowed, rule.allowed_parameters());
        merge_parameters(&mut self.denied, rule.denied_parameters());
        for name in rule.required_parameters() {
            if !self.required.contains(name) {
                self.required.push(name.clone());
            }
        }
    }

    fn compile(self) -> Rule {
        let compile_map = |map: Option<BTreeMap<String, ParameterValues>>| {
            map.unwrap_or_default()
                .iter()
                .map(|(key, values)| (Box::from(key.as_str()), Values::compile(values)))
                .collect()
        };
        Rule {
            capabilities: self.capabilities,
            min_wrapping_ttl: self.min_wrapping_ttl,
            max_wrapping_ttl: self.max_wrapping_ttl,
            allowed: compile_map(self.allowed),
            denied: compile_map(self.denied),
            required: self
                .required
                .iter()
                .map(|name| Box::from(name.to_lowercase()))
                .collect(),
        }
    }
}

/// The smaller of two TTLs where 0 means unset.
fn smaller_set(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

fn merge_parameters(
    into: &mut Option<BTreeMap<String, ParameterValues>>,
    from: Option<&BTreeMap<String, ParameterValues>>,
) {
    let Some(from) = from.filter(|from| !from.is_empty()) else {
        return;
    };
    let into = into.get_or_insert_with(BTreeMap::new);
    for (key, values) in from {
        let merged = match into.get(key) {
            Some(existing) => policy::merge_values(existing, values),
            None => values.clone(),
        };
        into.insert(key.clone(), merged);
    }
}

impl Acl {
    /// Compiles a token's policies. Rules with the same pattern (in any policies) merge:
    /// capabilities union, `deny` wipes the rest, parameter rules union, the smaller
    /// non-zero wrapping TTLs win. The result does not depend on the order of policies or
    /// rules.
    pub fn new(policies: &[Policy]) -> Acl {
        let mut merged: BTreeMap<(PatternKind, &str), Merged> = BTreeMap::new();
        for rule in policies.iter().flat_map(Policy::rules) {
            let key = classify(rule.pattern());
            match merged.get_mut(&key) {
                Some(existing) => existing.merge(rule),
                None => {
                    merged.insert(key, Merged::from_rule(rule));
                }
            }
        }

        let mut acl = Acl {
            root: false,
            rules: Vec::with_capacity(merged.len()),
            exact: HashMap::new(),
            prefix: HashMap::new(),
            prefix_lengths: Vec::new(),
            segment: Vec::new(),
        };
        for ((kind, pattern), rule) in merged {
            let index = acl.rules.len();
            acl.rules.push(rule.compile());
            match kind {
                PatternKind::Exact => {
                    acl.exact.insert(pattern.into(), index);
                }
                PatternKind::Prefix => {
                    acl.prefix.insert(pattern.into(), index);
                    acl.prefix_lengths.push(pattern.len());
                }
                PatternKind::Segment => {
                    let (path, is_prefix) = match pattern.strip_suffix('*') {
                        Some(path) => (path, true),
                        None => (pattern, false),
                    };
                    let parts: Vec<Box<str>> = path.split('/').map(Box::from).collect();
                    acl.segment.push(SegmentRule {
                        wildcards: parts.iter().filter(|part| &***part == "+").count(),
                        first_wildcard: pattern.find('+').unwrap_or(0),
                        parts,
                        path: path.into(),
                        is_prefix,
                        rule: index,
                    });
                }
            }
        }
        acl.prefix_lengths.sort_unstable_by(|a, b| b.cmp(a));
        acl.prefix_lengths.dedup();
        acl.segment.sort_by(|a, b| b.priority().cmp(&a.priority()));
        acl
    }

    /// The ACL of a root token: everything is allowed, including sudo. A token whose
    /// policies include `root` gets this; Vault refuses to combine `root` with other
    /// policies, and [`Policy::parse`] refuses the name, so no parsed policy is root.
    pub fn root() -> Acl {
        Acl {
            root: true,
            rules: Vec::new(),
            exact: HashMap::new(),
            prefix: HashMap::new(),
            prefix_lengths: Vec::new(),
            segment: Vec::new(),
        }
    }

    /// What `sys/capabilities-self` reports for `path`: the winning rule's capabilities
    /// (looked up as for LIST, like Vault), [`Capabilities::ROOT`] for root, and
    /// [`Capabilities::NONE`] (shown as `["deny"]`) when nothing matches.
    pub fn capabilities(&self, path: &str) -> Capabilities {
        if self.root {
            return Capabilities::ROOT;
        }
        self.winning_rule(normalize(path), true)
            .map_or(Capabilities::NONE, |rule| rule.capabilities)
    }

    /// `sys/internal/ui/resultant-acl`'s `data`: every merged rule, by pattern, in
    /// `exact_paths` or (prefix rules, keyed without their `*`) `glob_paths`, with its
    /// capabilities and parameter and wrapping rules; `root: true` and nothing else for
    /// root. `+` rules go by their shape: with a trailing `*` to `glob_paths`.
    pub fn resultant(&self) -> Value {
        if self.root {
            return serde_json::json!({ "root": true });
        }
        let mut exact = Map::new();
        let mut glob = Map::new();
        let render = |index: usize| self.rules.get(index).map(Rule::resultant);
        for (pattern, index) in &self.exact {
            if let Some(rule) = render(*index) {
                exact.insert(pattern.to_string(), rule);
            }
        }
        for (pattern, index) in &self.prefix {
            if let Some(rule) = render(*index) {
                glob.insert(pattern.to_string(), rule);
            }
        }
        for segment in &self.segment {
            if let Some(rule) = render(segment.rule) {
                let into = if segment.is_prefix {
                    &mut glob
                } else {
                    &mut exact
                };
                into.insert(segment.path.to_string(), rule);
            }
        }
        serde_json::json!({
            "exact_paths": exact,
            "glob_paths": glob,
            "root": false,
        })
    }

    /// Vault's `hasMountAccess`: whether some capability other than `deny` is granted on
    /// the mount at `mount` (with its trailing slash) or on any path below it. Root has
    /// access everywhere. This decides which mounts the OpenAPI document shows a token
    /// and who may ask for a mount's root help.
    pub fn has_mount_access(&self, mount: &str) -> bool {
        if self.root {
            return true;
        }
        let mount = normalize(mount);
        let granting = |rule: &Rule| {
            rule.capabilities != Capabilities::NONE && !rule.capabilities.contains(Capability::Deny)
        };
        let grants = |index: usize| self.rules.get(index).is_some_and(granting);
        if self.winning_rule(mount, true).is_some_and(granting) {
            return true;
        }
        let below = self
            .exact
            .iter()
            .chain(self.prefix.iter())
            .any(|(pattern, index)| pattern.starts_with(mount) && grants(*index));
        below
            || self
                .segment
                .iter()
                .any(|rule| rule.reaches_below(mount) && grants(rule.rule))
    }

    /// Whether the request is allowed; if not, why.
    pub fn allowed(&self, request: &AclRequest<'_>) -> Result<(), Denial> {
        if self.root {
            return Ok(());
        }
        let operation = request.operation;
        let rule = self
            .winning_rule(normalize(request.path), operation == Operation::List)
            .ok_or(Denial::NoMatchingRule)?;
        let capabilities = rule.capabilities;
        if capabilities.contains(Capability::Deny) {
            return Err(Denial::ExplicitDeny);
        }
        if !capabilities.contains(operation.capability()) {
            return Err(Denial::MissingCapability(operation.capability()));
        }
        rule.check_wrapping(request.wrap_ttl)?;
        if operation.checks_parameters() {
            rule.check_parameters(request.parameters)?;
        }
        if request.needs_sudo && !capabilities.contains(Capability::Sudo) {
            return Err(Denial::SudoRequired);
        }
        Ok(())
    }

    fn winning_rule(&self, path: &str, list: bool) -> Option<&Rule> {
        let trimmed = path.strip_suffix('/');
        let index = self
            .exact
            .get(path)
            .or_else(|| {
                trimmed
                    .filter(|_| list)
                    .and_then(|trimmed| self.exact.get(trimmed))
            })
            .copied()
            .or_else(|| self.non_exact(path))
            .or_else(|| {
                trimmed
                    .filter(|_| list)
                    .and_then(|trimmed| self.non_exact(trimmed))
            })?;
        self.rules.get(index)
    }

    /// The best of the longest `*` prefix rule and the matching `+` rules.
    fn non_exact(&self, path: &str) -> Option<usize> {
        let prefix = self.prefix_lengths.iter().find_map(|length| {
            let candidate = path.get(..*length)?;
            self.prefix.get(candidate).map(|index| (candidate, *index))
        });
        let segments = path.split('/').count();
        let segment = self
            .segment
            .iter()
            .find(|rule| rule.matches(path, segments));
        match (prefix, segment) {
            (None, None) => None,
            (Some((_, index)), None) => Some(index),
            (None, Some(rule)) => Some(rule.rule),
            (Some((prefix, index)), Some(rule)) => {
                let prefix_priority = Priority {
                    first_wildcard: prefix.len(),
                    is_prefix: true,
                    wildcards: 0,
                    path: prefix,
                };
                Some(if rule.priority() > prefix_priority {
                    rule.rule
                } else {
                    index
                })
            }
        }
    }
}

/// Vault strips every leading `/` from a request path.
fn normalize(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl Rule {
    /// One rule in `resultant-acl`'s shape.
    fn resultant(&self) -> Value {
        let mut out = Map::new();
        out.insert(
            "capabilities".to_string(),
            serde_json::json!(self.capabilities.names()),
        );
        if self.min_wrapping_ttl != 0 {
            out.insert(
                "min_wrapping_ttl".to_string(),
                serde_json::json!(self.min_wrapping_ttl),
            );
        }
        if self.max_wrapping_ttl != 0 {
            out.insert(
                "max_wrapping_ttl".to_string(),
                serde_json::json!(self.max_wrapping_ttl),
            );
        }
        let parameters = |map: &HashMap<Box<str>, Values>| -> Value {
            map.iter()
                .map(|(name, values)| (name.to_string(), values.shown()))
                .collect::<Map<String, Value>>()
                .into()
        };
        if !self.allowed.is_empty() {
            out.insert("allowed_parameters".to_string(), parameters(&self.allowed));
        }
        if !self.denied.is_empty() {
            out.insert("denied_parameters".to_string(), parameters(&self.denied));
        }
        if !self.required.is_empty() {
            let required: Vec<&str> = self.required.iter().map(|name| &**name).collect();
            out.insert(
                "required_parameters".to_string(),
                serde_json::json!(required),
            );
        }
        Value::Object(out)
    }

    /// Vault's wrapping checks: a bound needs a wrapped request within it.
    fn check_wrapping(&self, wrap_ttl: Option<u64>) -> Result<(), Denial> {
        let (min, max) = (self.min_wrapping_ttl, self.max_wrapping_ttl);
        if max > 0 && wrap_ttl.is_none_or(|ttl| ttl > max) {
            return Err(Denial::WrappingTtl);
        }
        if min > 0 && wrap_ttl.is_none_or(|ttl| ttl < min) {
            return Err(Denial::WrappingTtl);
        }
        // Possible after merging, though one rule cannot say it.
        if min != 0 && max != 0 && max < min {
            return Err(Denial::WrappingTtl);
        }
        Ok(())
    }

    /// Vault's parameter rules, in its order.
    fn check_parameters(&self, parameters: Option<&Map<String, Value>>) -> Result<(), Denial> {
        for name in &self.required {
            if !parameters.is_some_and(|parameters| parameters.contains_key(&**name)) {
                return Err(Denial::MissingParameter(name.to_string()));
            }
        }
        let Some(parameters) = parameters.filter(|parameters| !parameters.is_empty()) else {
            return Ok(());
        };
        if !self.denied.is_empty() {
            if self.denied.contains_key("*") {
                return Err(Denial::DeniedParameter("*".into()));
            }
            for (name, value) in parameters {
                if self
                    .denied
                    .get(&*lowercase(name))
                    .is_some_and(|values| values.contains(value))
                {
                    return Err(Denial::DeniedParameter(name.clone()));
                }
            }
        }
        if self.allowed.is_empty() {
            return Ok(());
        }
        let allowed_all = self.allowed.contains_key("*");
        if allowed_all && self.allowed.len() == 1 {
            return Ok(());
        }
        for (name, value) in parameters {
            let permitted = match self.allowed.get(&*lowercase(name)) {
                Some(values) => values.contains(value),
                None => allowed_all,
            };
            if !permitted {
                return Err(Denial::ParameterNotAllowed(name.clone()));
            }
        }
        Ok(())
    }
}
