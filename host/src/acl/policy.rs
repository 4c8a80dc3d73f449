//! Policy text (HCL or JSON) → typed [`Policy`]: every key, capability, pattern and
//! parameter value is checked once here, so the evaluator never meets invalid input.
//! This module must never evaluate a request; it only describes rules.

use std::collections::BTreeMap;

use hcl::{Expression, ObjectKey, Structure};
use serde_json::{Map, Value};

use super::{AclError, Capabilities, Capability};

/// Largest policy text accepted. Vault bounds it only by the request size (32 MiB); a
/// policy of a thousand paths is ~100 KiB, so 1 MiB leaves room without letting one
/// write make every token's ACL build slow.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// Most `path` rules in one policy: the segment-wildcard rules are scanned per request.
pub const MAX_PATHS_PER_POLICY: usize = 4096;
/// Longest path pattern; Vault's longest real paths are well under 1 KiB.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Most parameter entries in one rule: allowed + denied keys and their listed values,
/// plus required names. Values are compared per request parameter.
pub const MAX_PARAMETERS_PER_PATH: usize = 1024;
/// Longest policy name (after trimming); names are storage keys and appear in every token.
pub const MAX_POLICY_NAME_BYTES: usize = 256;
/// Deepest nesting of a listed parameter value (`[[{"a" = [..]}]]`); bounds recursion
/// when comparing against request data.
pub const MAX_VALUE_DEPTH: usize = 16;

/// Keys a `path` rule may hold.
const PATH_KEYS: &[&str] = &[
    "capabilities",
    "policy",
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "comment",
];

/// Keys Vault or OpenBao know that Coffer cannot enforce. Each narrows access, so ignoring
/// one would grant more than the author wrote: they are refused, with the reason.
const UNSUPPORTED_PATH_KEYS: &[(&str, &str)] = &[
    ("mfa_methods", "Coffer has no MFA"),
    ("control_group", "control groups are Vault Enterprise"),
    ("expiration", "per-path expiry is not supported"),
    ("pagination_limit", "list pagination is not supported"),
    (
        "list_scan_response_keys_filter_path",
        "list filtering is not supported",
    ),
    (
        "subscribe_event_types",
        "event subscriptions are not supported",
    ),
];

/// A named, parsed ACL policy: its path rules in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    name: String,
    rules: Vec<PathRule>,
}

/// One `path "pattern" { ... }` rule as written (leading `/` stripped, `*` kept).
#[derive(Debug, Clone, PartialEq)]
pub struct PathRule {
    pattern: String,
    capabilities: Capabilities,
    allowed_parameters: Option<BTreeMap<String, ParameterValues>>,
    denied_parameters: Option<BTreeMap<String, ParameterValues>>,
    required_parameters: Vec<String>,
    min_wrapping_ttl: u64,
    max_wrapping_ttl: u64,
}

/// The values listed for one parameter key.
#[derive(Debug, Clone, PartialEq)]
pub enum ParameterValues {
    /// `key = []`: any value.
    Any,
    /// `key = ["a", "b*", 3]`: one of these (strings may start or end with `*`).
    OneOf(Vec<Value>),
}

impl Policy {
    /// Parses policy text. Text whose first non-blank character is `{` is JSON
    /// (`{"path": {"secret/*": {"capabilities": ["read"]}}}`), as in Vault; anything else
    /// is HCL, walked block by block so repeated `path` blocks are all kept.
    pub fn parse(name: &str, text: &str) -> Result<Policy, AclError> {
        let name = policy_name(name)?;
        if text.len() > MAX_POLICY_BYTES {
            return Err(AclError::TooLarge {
                what: "policy text (bytes)",
                actual: text.len(),
                limit: MAX_POLICY_BYTES,
            });
        }
        let raw_rules = if text.trim_start().starts_with('{') {
            json_rules(text)?
        } else {
            hcl_rules(text)?
        };
        if raw_rules.len() > MAX_PATHS_PER_POLICY {
            return Err(AclError::TooLarge {
                what: "path rules in one policy",
                actual: raw_rules.len(),
                limit: MAX_PATHS_PER_POLICY,
            });
        }
        let rules = raw_rules
            .into_iter()
            .map(|(pattern, fields)| PathRule::from_fields(&pattern, fields))
            .collect::<Result<_, _>>()?;
        Ok(Policy { name, rules })
    }

    /// The policy's name, trimmed and lowercased.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path rules in the order written.
    pub fn rules(&self) -> &[PathRule] {
        &self.rules
    }
}

impl PathRule {
    /// The pattern as written, without a leading `/`; a trailing `*` is still present.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The granted capabilities; `deny` alone if the rule denies.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// `allowed_parameters`, keys lowercased; `None` when absent.
    pub fn allowed_parameters(&self) -> Option<&BTreeMap<String, ParameterValues>> {
        self.allowed_parameters.as_ref()
    }

    /// `denied_parameters`, keys lowercased; `None` when absent.
    pub fn denied_parameters(&self) -> Option<&BTreeMap<String, ParameterValues>> {
        self.denied_parameters.as_ref()
    }

    /// `required_parameters` as written (Vault lowercases them when checking).
    pub fn required_parameters(&self) -> &[String] {
        &self.required_parameters
    }

    /// `min_wrapping_ttl` in seconds, 0 when unset.
    pub fn min_wrapping_ttl(&self) -> u64 {
        self.min_wrapping_ttl
    }

    /// `max_wrapping_ttl` in seconds, 0 when unset.
    pub fn max_wrapping_ttl(&self) -> u64 {
        self.max_wrapping_ttl
    }

    fn from_fields(written: &str, fields: Map<String, Value>) -> Result<PathRule, AclError> {
        let pattern = written.strip_prefix('/').unwrap_or(written).to_owned();
        let invalid = |reason: String| AclError::InvalidRule {
            path: pattern.clone(),
            reason,
        };
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(AclError::TooLarge {
                what: "path pattern (bytes)",
                actual: pattern.len(),
                limit: MAX_PATTERN_BYTES,
            });
        }
        if pattern.contains("+*") {
            return Err(invalid(
                "invalid use of wildcards ('+*' is forbidden); write `+/*` or `+` instead".into(),
            ));
        }
        if pattern.contains("{{") {
            return Err(invalid(
                "identity templating (`{{...}}`) is not supported by Coffer".into(),
            ));
        }
        for key in fields.keys() {
            if PATH_KEYS.contains(&key.as_str()) {
                continue;
            }
            if let Some((_, why)) = UNSUPPORTED_PATH_KEYS.iter().find(|(k, _)| k == key) {
                return Err(invalid(format!("{key:?} is not supported: {why}")));
            }
            return Err(invalid(format!(
                "unknown key {key:?}; a path rule takes {}",
                PATH_KEYS.join(", ")
            )));
        }

        let mut capabilities = Capabilities::NONE;
        if let Some(value) = fields.get("capabilities") {
            for name in strings(value).map_err(|e| invalid(format!("capabilities {e}")))? {
                let capability = Capability::from_name(name).ok_or_else(|| {
                    invalid(format!(
                        "unknown capability {name:?}; expected one of create, read, update, \
                         patch, delete, list, sudo, deny"
                    ))
                })?;
                capabilities = capabilities.with(capability);
            }
        }
        if let Some(value) = fields.get("policy") {
            let legacy = value
                .as_str()
                .ok_or_else(|| invalid("policy must be a string".into()))?;
            capabilities = capabilities.union(legacy_capabilities(legacy).ok_or_else(|| {
                invalid(format!(
                    "invalid policy {legacy:?}; expected \"deny\", \"read\", \"write\" or \"sudo\""
                ))
            })?);
        }

        let allowed_parameters = fields
            .get("allowed_parameters")
            .map(|v| parameter_map(v).map_err(|e| invalid(format!("allowed_parameters: {e}"))))
            .transpose()?;
        let denied_parameters = fields
            .get("denied_parameters")
            .map(|v| parameter_map(v).map_err(|e| invalid(format!("denied_parameters: {e}"))))
            .transpose()?;
        let required_parameters: Vec<String> = match fields.get("required_parameters") {
            Some(value) => strings(value)
                .map_err(|e| invalid(format!("required_parameters {e}")))?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        let entries = parameter_entries(allowed_parameters.as_ref())
            + parameter_entries(denied_parameters.as_ref())
            + required_parameters.len();
        if entries > MAX_PARAMETERS_PER_PATH {
            return Err(AclError::TooLarge {
                what: "parameter entries in one path rule",
                actual: entries,
                limit: MAX_PARAMETERS_PER_PATH,
            });
        }
        let ttl = |key: &str| -> Result<u64, AclError> {
            fields.get(key).map_or(Ok(0), |value| {
                crate::fields::duration(value).map_err(|e| invalid(format!("{key}: {e}")))
            })
        };
        let min_wrapping_ttl = ttl("min_wrapping_ttl")?;
        let max_wrapping_ttl = ttl("max_wrapping_ttl")?;
        if min_wrapping_ttl != 0 && max_wrapping_ttl != 0 && max_wrapping_ttl < min_wrapping_ttl {
            return Err(invalid(
                "max_wrapping_ttl cannot be less than min_wrapping_ttl".into(),
            ));
        }

        // `deny` drops everything else the rule says, as in Vault.
        if capabilities.contains(Capability::Deny) {
            return Ok(PathRule {
                pattern,
                capabilities: Capabilities::DENY,
                allowed_parameters: None,
                denied_parameters: None,
                required_parameters: Vec::new(),
                min_wrapping_ttl: 0,
                max_wrapping_ttl: 0,
            });
        }
        Ok(PathRule {
            pattern,
            capabilities,
            allowed_parameters,
            denied_parameters,
            required_parameters,
            min_wrapping_ttl,
            max_wrapping_ttl,
        })
    }
}

/// Vault's `sanitizeName`: trimmed and lowercased; `root` is built in.
fn policy_name(name: &str) -> Result<String, AclError> {
    let name = name.trim().to_lowercase();
    if name.is_empty() {
        return Err(AclError::InvalidName("policy name missing".into()));
    }
    if name.len() > MAX_POLICY_NAME_BYTES {
        return Err(AclError::TooLarge {
            what: "policy name (bytes)",
            actual: name.len(),
            limit: MAX_POLICY_NAME_BYTES,
        });
    }
    if name == "root" {
        return Err(AclError::InvalidName(
            "\"root\" is built in and cannot be written or combined".into(),
        ));
    }
    Ok(name)
}

/// The legacy `policy = "..."` forms.
fn legacy_capabilities(legacy: &str) -> Option<Capabilities> {
    use Capability::*;
    let list: &[Capability] = match legacy {
        "deny" => &[Deny],
        "read" => &[Read, List],
        "write" => &[Create, Read, Update, Delete, List],
        "sudo" => &[Create, Read, Update, Delete, List, Sudo],
        _ => return None,
    };
    Some(
        list.iter()
            .fold(Capabilities::NONE, |caps, cap| caps.with(*cap)),
    )
}

fn strings(value: &Value) -> Result<Vec<&str>, String> {
    let Value::Array(items) = value else {
        return Err("must be a list of strings, like [\"read\", \"list\"]".into());
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| "must be a list of strings, like [\"read\", \"list\"]".into())
        })
        .collect()
}

fn parameter_map(value: &Value) -> Result<BTreeMap<String, ParameterValues>, String> {
    let Value::Object(map) = value else {
        return Err(
            "must be a map of parameter name to a list of values, like { \"ttl\" = [] }".into(),
        );
    };
    let mut out = BTreeMap::new();
    for (key, values) in map {
        let Value::Array(values) = values else {
            return Err(format!(
                "the value of {key:?} must be a list ([] for any value)"
            ));
        };
        for item in values {
            if depth(item) > MAX_VALUE_DEPTH {
                return Err(format!(
                    "a value of {key:?} nests deeper than {MAX_VALUE_DEPTH} levels (MAX_VALUE_DEPTH)"
                ));
            }
        }
        let parsed = if values.is_empty() {
            ParameterValues::Any
        } else {
            ParameterValues::OneOf(values.clone())
        };
        // Keys differing only in case collapse, as in Vault (the later one wins there;
        // here they are merged like two rules, so the result does not depend on order).
        match out.entry(key.to_lowercase()) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(parsed);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let merged = merge_values(slot.get(), &parsed);
                slot.insert(merged);
            }
        }
    }
    Ok(out)
}

/// Union of two value lists; `[]` (any value) absorbs the other, as in Vault's merge.
pub(super) fn merge_values(a: &ParameterValues, b: &ParameterValues) -> ParameterValues {
    match (a, b) {
        (ParameterValues::OneOf(a), ParameterValues::OneOf(b)) => {
            let mut all = a.clone();
            all.extend(b.iter().filter(|v| !a.contains(v)).cloned());
            ParameterValues::OneOf(all)
        }
        _ => ParameterValues::Any,
    }
}

fn parameter_entries(map: Option<&BTreeMap<String, ParameterValues>>) -> usize {
    map.map_or(0, |map| {
        map.values()
            .map(|values| match values {
                ParameterValues::Any => 1,
                ParameterValues::OneOf(list) => 1 + list.len(),
            })
            .sum()
    })
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

type RawRules = Vec<(String, Map<String, Value>)>;

/// JSON policies: `{"path": {"<pattern>": {...}}}`; `path` may also be a list of such
/// objects (how HCL1's JSON reader keeps a pattern written twice).
fn json_rules(text: &str) -> Result<RawRules, AclError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| AclError::Syntax(format!("invalid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(AclError::Syntax("a JSON policy must be an object".into()));
    };
    let mut out = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            "name" => {}
            "path" => match value {
                Value::Array(items) => {
                    for item in items {
                        json_paths(item, &mut out)?;
                    }
                }
                other => json_paths(other, &mut out)?,
            },
            _ => return Err(unknown_top_level(&key)),
        }
    }
    Ok(out)
}

fn json_paths(value: Value, out: &mut RawRules) -> Result<(), AclError> {
    let Value::Object(paths) = value else {
        return Err(AclError::Syntax(
            "\"path\" must map patterns to rules: {\"path\": {\"secret/*\": {...}}}".into(),
        ));
    };
    for (pattern, body) in paths {
        let Value::Object(fields) = body else {
            return Err(AclError::InvalidRule {
                path: pattern,
                reason: "the rule must be an object like {\"capabilities\": [\"read\"]}".into(),
            });
        };
        out.push((pattern, fields));
    }
    Ok(())
}

/// HCL policies, walked as a body so that repeated `path` blocks are all kept.
fn hcl_rules(text: &str) -> Result<RawRules, AclError> {
    let body = hcl::parse(text).map_err(|e| AclError::Syntax(e.to_string()))?;
    let mut out = Vec::new();
    for structure in body.0 {
        match structure {
            Structure::Attribute(attribute) if attribute.key.as_str() == "name" => {}
            Structure::Attribute(attribute) => {
                return Err(unknown_top_level(attribute.key.as_str()));
            }
            Structure::Block(block) if block.identifier.as_str() == "path" => {
                let [label] = block.labels.as_slice() else {
                    return Err(AclError::Syntax(
                        "a path block takes exactly one label: path \"secret/*\" { ... }".into(),
                    ));
                };
                let pattern = label.as_str().to_owned();
                let mut fields = Map::new();
                for inner in block.body.0 {
                    let invalid = |reason: String| AclError::InvalidRule {
                        path: pattern.clone(),
                        reason,
                    };
                    match inner {
                        Structure::Attribute(attribute) => {
                            let key = attribute.key.as_str().to_owned();
                            let value = hcl_value(&attribute.expr)
                                .map_err(|e| invalid(format!("{key}: {e}")))?;
                            if fields.insert(key.clone(), value).is_some() {
                                return Err(invalid(format!("{key:?} is set twice")));
                            }
                        }
                        Structure::Block(inner) => {
                            let key = inner.identifier.as_str();
                            return Err(invalid(if PATH_KEYS.contains(&key) {
                                format!("write `{key} = {{ ... }}` (with `=`), not a block")
                            } else {
                                format!(
                                    "unknown block {key:?}; a path rule takes {}",
                                    PATH_KEYS.join(", ")
                                )
                            }));
                        }
                    }
                }
                out.push((pattern, fields));
            }
            Structure::Block(block) => return Err(unknown_top_level(block.identifier.as_str())),
        }
    }
    Ok(out)
}

fn unknown_top_level(key: &str) -> AclError {
    AclError::Syntax(format!(
        "unknown top-level key {key:?}; a policy holds `path \"<pattern>\" {{ ... }}` blocks \
         (and an ignored `name`)"
    ))
}

/// A literal HCL expression as JSON. Anything computed (variables, functions, templates)
/// is refused: policies are data.
fn hcl_value(expr: &Expression) -> Result<Value, String> {
    Ok(match expr {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(*b),
        Expression::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{n} is not a finite number"))?
            }
        }
        Expression::String(s) => Value::String(s.clone()),
        Expression::Array(items) => {
            Value::Array(items.iter().map(hcl_value).collect::<Result<_, _>>()?)
        }
        Expression::Object(object) => {
            let mut map = Map::new();
            for (key, value) in object {
                let key = match key {
                    ObjectKey::Identifier(identifier) => identifier.as_str().to_owned(),
                    ObjectKey::Expression(Expression::String(s)) => s.clone(),
                    _ => return Err("object keys must be names or quoted strings".into()),
                };
                if map.insert(key.clone(), hcl_value(value)?).is_some() {
                    return Err(format!("key {key:?} is set twice"));
                }
            }
            Value::Object(map)
        }
        Expression::TemplateExpr(_) => {
            return Err(
                "templates (`${...}`, `%{...}`) and heredocs are not allowed; policies hold \
                 literal values: write a quoted string (with `$${` for a literal `${`)"
                    .into(),
            );
        }
        Expression::Parenthesis(inner) => hcl_value(inner)?,
        _ => {
            return Err(
                "only literal values (strings, numbers, booleans, null, lists and maps) are allowed"
                    .into(),
            );
        }
    })
}
