//! Tests for the ACL core: Vault's documented precedence, OpenBao's `acl_test.go` tables,
//! parsing and its errors, and a seeded property test of order independence.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::*;

use Operation::{Create, Delete, List, Patch, Read, Update};

const ALL_OPERATIONS: [Operation; 6] = [Create, Read, Update, Patch, Delete, List];

fn acl(texts: &[&str]) -> Result<Acl> {
    let policies = texts
        .iter()
        .enumerate()
        .map(|(index, text)| Policy::parse(&format!("p{index}"), text))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Acl::new(&policies))
}

fn request(path: &str, operation: Operation) -> AclRequest<'_> {
    AclRequest {
        path,
        operation,
        parameters: None,
        needs_sudo: false,
        wrap_ttl: None,
    }
}

fn allows(acl: &Acl, operation: Operation, path: &str) -> bool {
    acl.allowed(&request(path, operation)).is_ok()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn allows_data(acl: &Acl, operation: Operation, path: &str, data: Value) -> bool {
    let data = object(data);
    acl.allowed(&request(path, operation).with_parameters(&data))
        .is_ok()
}

fn parse_error(text: &str) -> String {
    match Policy::parse("p", text) {
        Ok(_) => "parsed".into(),
        Err(error) => error.to_string(),
    }
}

// Deny by default, first.

#[test]
fn no_policies_deny_everything() {
    let acl = Acl::new(&[]);
    for operation in ALL_OPERATIONS {
        assert_eq!(
            acl.allowed(&request("secret/foo", operation)),
            Err(Denial::NoMatchingRule)
        );
    }
    assert_eq!(acl.capabilities("secret/foo").names(), ["deny"]);
    assert_eq!(acl.capabilities("").names(), ["deny"]);
}

#[test]
fn unmatched_paths_are_denied_next_to_granted_ones() -> Result<()> {
    let acl = acl(&[r#"path "secret/foo" { capabilities = ["read"] }"#])?;
    assert!(allows(&acl, Read, "secret/foo"));
    for path in [
        "secret/fo",
        "secret/foo/",
        "secret/food",
        "secret/foo/bar",
        "Secret/foo",
    ] {
        assert_eq!(
            acl.allowed(&request(path, Read)),
            Err(Denial::NoMatchingRule),
            "{path}"
        );
    }
    Ok(())
}

#[test]
fn root_allows_everything_and_reports_root() {
    let acl = Acl::root();
    for operation in ALL_OPERATIONS {
        let mut req = request("sys/audit/file", operation);
        req.needs_sudo = true;
        assert_eq!(acl.allowed(&req), Ok(()));
    }
    assert_eq!(acl.capabilities("any/path").names(), ["root"]);
}

// Precedence.

/// Vault's policy docs and OpenBao's priority tests: (policies, path, operation, allowed).
#[test]
fn vault_documented_precedence() -> Result<()> {
    type Case<'a> = (&'a [&'a str], &'a str, Operation, bool);
    let cases: &[Case<'_>] = &[
        // An exact rule beats a glob; the glob covers the rest.
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/foo" { capabilities = ["create"] }"#],
            "secret/foo",
            Read,
            false,
        ),
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/foo" { capabilities = ["create"] }"#],
            "secret/foo",
            Create,
            true,
        ),
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/foo" { capabilities = ["create"] }"#],
            "secret/food",
            Read,
            true,
        ),
        // `+` beats `*` at the same position (the glob ends in `*`).
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/+/bar" { capabilities = ["update"] }"#],
            "secret/x/bar",
            Update,
            true,
        ),
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/+/bar" { capabilities = ["update"] }"#],
            "secret/x/bar",
            Read,
            false,
        ),
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/+/bar" { capabilities = ["update"] }"#],
            "secret/x/baz",
            Read,
            true,
        ),
        // `secret/foo*` vs `secret/foo/*`: the longest prefix wins.
        (
            &[r#"path "secret/foo*" { capabilities = ["read"] }
                 path "secret/foo/*" { capabilities = ["update"] }"#],
            "secret/foo/bar",
            Update,
            true,
        ),
        (
            &[r#"path "secret/foo*" { capabilities = ["read"] }
                 path "secret/foo/*" { capabilities = ["update"] }"#],
            "secret/foo/bar",
            Read,
            false,
        ),
        (
            &[r#"path "secret/foo*" { capabilities = ["read"] }
                 path "secret/foo/*" { capabilities = ["update"] }"#],
            "secret/food",
            Read,
            true,
        ),
        (
            &[r#"path "secret/foo*" { capabilities = ["read"] }
                 path "secret/foo/*" { capabilities = ["update"] }"#],
            "secret/foo",
            Read,
            true,
        ),
        // A deny on `secret/*` does not override an allow on `secret/foo` (one rule
        // applies), even from another policy.
        (
            &[
                r#"path "secret/*" { capabilities = ["deny"] }"#,
                r#"path "secret/foo" { capabilities = ["read"] }"#,
            ],
            "secret/foo",
            Read,
            true,
        ),
        (
            &[
                r#"path "secret/*" { capabilities = ["deny"] }"#,
                r#"path "secret/foo" { capabilities = ["read"] }"#,
            ],
            "secret/bar",
            Read,
            false,
        ),
        // The same pattern in two policies: deny wins.
        (
            &[
                r#"path "secret/foo" { capabilities = ["deny"] }"#,
                r#"path "secret/foo" { capabilities = ["read"] }"#,
            ],
            "secret/foo",
            Read,
            false,
        ),
        // The docs' pattern examples.
        (
            &[r#"path "secret/bar/*" { capabilities = ["read"] }"#],
            "secret/bar/zip",
            Read,
            true,
        ),
        (
            &[r#"path "secret/bar/*" { capabilities = ["read"] }"#],
            "secret/bar/zip/zap",
            Read,
            true,
        ),
        (
            &[r#"path "secret/bar/*" { capabilities = ["read"] }"#],
            "secret/bars/zip",
            Read,
            false,
        ),
        (
            &[r#"path "secret/zip-*" { capabilities = ["read"] }"#],
            "secret/zip-zap",
            Read,
            true,
        ),
        (
            &[r#"path "secret/zip-*" { capabilities = ["read"] }"#],
            "secret/zip-zap/zong",
            Read,
            true,
        ),
        (
            &[r#"path "secret/zip-*" { capabilities = ["read"] }"#],
            "secret/zip/zap",
            Read,
            false,
        ),
        (
            &[r#"path "secret/+/teamb" { capabilities = ["read"] }"#],
            "secret/foo/teamb",
            Read,
            true,
        ),
        (
            &[r#"path "secret/+/teamb" { capabilities = ["read"] }"#],
            "secret/foo/bar/teamb",
            Read,
            false,
        ),
        (
            &[r#"path "secret/+/+/teamb" { capabilities = ["read"] }"#],
            "secret/foo/bar/teamb",
            Read,
            true,
        ),
        // `secret/*` outranks `secret/+/*`: same first wildcard, both globs, fewer `+`.
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/+/*" { capabilities = ["update"] }"#],
            "secret/a/b",
            Read,
            true,
        ),
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/+/*" { capabilities = ["update"] }"#],
            "secret/a/b",
            Update,
            false,
        ),
        // `*` only counts as the last character; elsewhere it is literal.
        (
            &[r#"path "secret/*/foo" { capabilities = ["read"] }"#],
            "secret/x/foo",
            Read,
            false,
        ),
        (
            &[r#"path "secret/*/foo" { capabilities = ["read"] }"#],
            "secret/*/foo",
            Read,
            true,
        ),
        // `+` is only a wildcard as a whole segment.
        (
            &[r#"path "secret/a+" { capabilities = ["read"] }"#],
            "secret/ab",
            Read,
            false,
        ),
        (
            &[r#"path "secret/+" { capabilities = ["read"] }"#],
            "secret/ab",
            Read,
            true,
        ),
        (
            &[r#"path "secret/+" { capabilities = ["read"] }"#],
            "secret/",
            Read,
            true,
        ),
        (
            &[r#"path "+" { capabilities = ["read"] }"#],
            "anything",
            Read,
            true,
        ),
        (
            &[r#"path "*" { capabilities = ["read"] }"#],
            "any/thing",
            Read,
            true,
        ),
        // A rule that grants nothing still wins, and so denies.
        (
            &[r#"path "secret/*" { capabilities = ["read"] }
                 path "secret/foo" { capabilities = [] }"#],
            "secret/foo",
            Read,
            false,
        ),
        // Leading slashes in patterns and requests are ignored.
        (
            &[r#"path "/secret/foo" { capabilities = ["read"] }"#],
            "secret/foo",
            Read,
            true,
        ),
        (
            &[r#"path "secret/foo" { capabilities = ["read"] }"#],
            "//secret/foo",
            Read,
            true,
        ),
    ];
    for (index, (policies, path, operation, expected)) in cases.iter().enumerate() {
        let acl = acl(policies)?;
        assert_eq!(
            allows(&acl, *operation, path),
            *expected,
            "case {index}: {operation:?} {path} under {policies:?}"
        );
    }
    Ok(())
}

/// OpenBao's `TestACL_SegmentWildcardPriority`: the `update` rule must win.
#[test]
fn segment_wildcard_priority() -> Result<()> {
    let cases = [
        (
            r#"path "+/*" { capabilities = ["read"] } path "*" { capabilities = ["update"] }"#,
            "foo/bar/bar/baz",
        ),
        (
            r#"path "+/*" { capabilities = ["read"] } path "foo/+/*" { capabilities = ["update"] }"#,
            "foo/bar/bar/baz",
        ),
        (
            r#"path "foo/+/+/*" { capabilities = ["read"] } path "foo/+/bar/baz" { capabilities = ["update"] }"#,
            "foo/bar/bar/baz",
        ),
        (
            r#"path "foo/+/+/baz" { capabilities = ["read"] } path "foo/+/bar/baz" { capabilities = ["update"] }"#,
            "foo/bar/bar/baz",
        ),
        (
            r#"path "foo/+/(ar/baz" { capabilities = ["read"] } path "foo/(ar/+/baz" { capabilities = ["update"] }"#,
            "foo/(ar/(ar/baz",
        ),
        (
            r#"path "foo/bar/+/baz*" { capabilities = ["read"] } path "foo/bar/+/baz" { capabilities = ["update"] }"#,
            "foo/bar/bar/baz",
        ),
        (
            r#"path "foo/bar/+/b*" { capabilities = ["read"] } path "foo/bar/+/ba*" { capabilities = ["update"] }"#,
            "foo/bar/bar/baz",
        ),
    ];
    for (text, path) in cases {
        // One rule per line: HCL2 allows one attribute per single-line block.
        let text = text.replace("} path", "}\npath");
        let acl = acl(&[&text])?;
        assert!(allows(&acl, Update, path), "{text} {path}");
        assert!(!allows(&acl, Read, path), "{text} {path}");
    }
    Ok(())
}

/// OpenBao's `aclPolicy` (minus `scan`, which Vault does not have).
const OPENBAO_POLICY: &str = r#"
name = "DeV"
path "dev/*" {
	policy = "sudo"
}
path "stage/*" {
	policy = "write"
}
path "stage/aws/*" {
	policy = "read"
	capabilities = ["update", "sudo"]
}
path "stage/aws/policy/*" {
	policy = "sudo"
}
path "prod/*" {
	policy = "read"
}
path "prod/aws/*" {
	policy = "deny"
}
path "sys/*" {
	policy = "deny"
}
path "foo/bar" {
	capabilities = ["read", "create", "sudo"]
}
path "baz/quux" {
	capabilities = ["read", "create", "patch"]
}
path "test/+/segment" {
	capabilities = ["read"]
}
path "+/segment/at/front" {
	capabilities = ["read"]
}
path "test/segment/at/end/+" {
	capabilities = ["read"]
}
path "test/segment/at/end/v2/+/" {
	capabilities = ["read"]
}
path "test/+/wildcard/+/*" {
	capabilities = ["read"]
}
path "test/+/wildcardglob/+/end*" {
	capabilities = ["read"]
}
path "1/2/*" {
	capabilities = ["create"]
}
path "1/2/+" {
	capabilities = ["read"]
}
path "1/2/+/+" {
	capabilities = ["update"]
}
"#;

const OPENBAO_POLICY_2: &str = r#"
name = "OpS"
path "dev/hide/*" {
	policy = "deny"
}
path "stage/aws/policy/*" {
	policy = "deny"
	# This should have no effect
	capabilities = ["read", "update", "sudo"]
}
path "prod/*" {
	policy = "write"
}
path "sys/seal" {
	policy = "sudo"
}
path "foo/bar" {
	capabilities = ["deny"]
}
path "baz/quux" {
	capabilities = ["deny"]
}
"#;

/// (operation, path, allowed, sudo granted) as in OpenBao's `TestACL_Single`.
#[test]
fn openbao_single_policy_table() -> Result<()> {
    let acl = acl(&[OPENBAO_POLICY])?;
    let cases = [
        (Read, "root", false, false),
        (Read, "dev/foo", true, true),
        (Update, "dev/foo", true, true),
        (Delete, "stage/foo", true, false),
        (List, "stage/aws/foo", true, true),
        (Update, "stage/aws/foo", true, true),
        (Update, "stage/aws/policy/foo", true, true),
        (Delete, "prod/foo", false, false),
        (Update, "prod/foo", false, false),
        (Read, "prod/foo", true, false),
        (List, "prod/foo", true, false),
        (Read, "prod/aws/foo", false, false),
        (Read, "foo/bar", true, true),
        (List, "foo/bar", false, true),
        (Update, "foo/bar", false, true),
        (Create, "foo/bar", true, true),
        (Read, "baz/quux", true, false),
        (Create, "baz/quux", true, false),
        (Patch, "baz/quux", true, false),
        (List, "baz/quux", false, false),
        (Update, "baz/quux", false, false),
        (Read, "test/foo/bar/segment", false, false),
        (Read, "test/foo/segment", true, false),
        (Read, "test/bar/segment", true, false),
        (Read, "test/segment/at/frond", false, false),
        (Read, "test/segment/at/front", true, false),
        (Read, "test/segment/at/end/foo", true, false),
        (Read, "test/segment/at/end/foo/", false, false),
        (Read, "test/segment/at/end/v2/foo/", true, false),
        (Read, "test/segment/wildcard/at/foo/", true, false),
        (Read, "test/segment/wildcard/at/end", true, false),
        (Read, "test/segment/wildcard/at/end/", true, false),
        (Read, "1/2/3/4", false, false),
        (Read, "1/2/3", true, false),
        (Update, "1/2/3", false, false),
        (Update, "1/2/3/4", true, false),
        (Create, "1/2/3/4/5", true, false),
    ];
    check_table(&acl, &cases);
    Ok(())
}

/// OpenBao's `TestACL_Layered`: the two policies merged.
#[test]
fn openbao_layered_policies_table() -> Result<()> {
    let acl = acl(&[OPENBAO_POLICY, OPENBAO_POLICY_2])?;
    let cases = [
        (Read, "root", false, false),
        (Read, "dev/foo", true, true),
        (Update, "dev/foo", true, true),
        (Read, "dev/hide/foo", false, false),
        (Update, "dev/hide/foo", false, false),
        (Delete, "stage/foo", true, false),
        (List, "stage/aws/foo", true, true),
        (Update, "stage/aws/foo", true, true),
        (Update, "stage/aws/policy/foo", false, false),
        (Delete, "prod/foo", true, false),
        (Update, "prod/foo", true, false),
        (Read, "prod/foo", true, false),
        (List, "prod/foo", true, false),
        (Read, "prod/aws/foo", false, false),
        (Read, "sys/status", false, false),
        (Update, "sys/seal", true, true),
        (Read, "foo/bar", false, false),
        (List, "foo/bar", false, false),
        (Update, "foo/bar", false, false),
        (Create, "foo/bar", false, false),
        (Read, "baz/quux", false, false),
        (List, "baz/quux", false, false),
        (Update, "baz/quux", false, false),
        (Create, "baz/quux", false, false),
        (Patch, "baz/quux", false, false),
    ];
    check_table(&acl, &cases);
    Ok(())
}

fn check_table(acl: &Acl, cases: &[(Operation, &str, bool, bool)]) {
    for (operation, path, allowed, sudo) in cases {
        assert_eq!(
            allows(acl, *operation, path),
            *allowed,
            "{operation:?} {path}"
        );
        // With sudo needed, only a rule granting sudo (and the operation) allows.
        let mut req = request(path, *operation);
        req.needs_sudo = true;
        assert_eq!(
            acl.allowed(&req).is_ok(),
            *allowed && *sudo,
            "sudo {operation:?} {path}"
        );
        assert_eq!(
            acl.capabilities(path).contains(Capability::Sudo),
            *sudo,
            "capabilities {path}"
        );
    }
}

#[test]
fn capabilities_are_reported_like_sys_capabilities_self() -> Result<()> {
    let acl = acl(&[OPENBAO_POLICY])?;
    assert_eq!(acl.capabilities("dev").names(), ["deny"]);
    assert_eq!(
        acl.capabilities("dev/").names(),
        ["create", "delete", "list", "read", "sudo", "update"]
    );
    assert_eq!(
        acl.capabilities("stage/aws/test").names(),
        ["list", "read", "sudo", "update"]
    );
    assert_eq!(acl.capabilities("prod/aws/x").names(), ["deny"]);
    assert_eq!(acl.capabilities("nothing/here").names(), ["deny"]);
    // Looked up as LIST: the exact rule without the trailing slash counts.
    assert_eq!(
        acl.capabilities("foo/bar/").names(),
        ["create", "read", "sudo"]
    );
    Ok(())
}

#[test]
fn each_capability_grants_exactly_its_operation() -> Result<()> {
    for granted in [
        "create", "read", "update", "patch", "delete", "list", "sudo",
    ] {
        let acl = acl(&[&format!(
            "path \"kv/x\" {{ capabilities = [\"{granted}\"] }}"
        )])?;
        for operation in ALL_OPERATIONS {
            let expected = operation.capability().name() == granted;
            let path = if operation == List { "kv/x/" } else { "kv/x" };
            let outcome = acl.allowed(&request(path, operation));
            assert_eq!(outcome.is_ok(), expected, "{granted} vs {operation:?}");
            if !expected {
                assert_eq!(
                    outcome,
                    Err(Denial::MissingCapability(operation.capability()))
                );
            }
        }
    }
    let deny = acl(&[r#"path "kv/x" { capabilities = ["deny"] }"#])?;
    for operation in ALL_OPERATIONS {
        assert_eq!(
            deny.allowed(&request("kv/x", operation)),
            Err(Denial::ExplicitDeny)
        );
    }
    Ok(())
}

#[test]
fn sudo_is_needed_in_addition_on_root_paths() -> Result<()> {
    let without = acl(&[r#"path "sys/audit/*" { capabilities = ["create", "update", "read"] }"#])?;
    let with = acl(&[r#"path "sys/audit/*" { capabilities = ["update", "sudo"] }"#])?;
    let req = AclRequest::new("sys/audit/file", Update);
    assert!(req.needs_sudo);
    assert_eq!(without.allowed(&req), Err(Denial::SudoRequired));
    assert_eq!(with.allowed(&req), Ok(()));
    // Sudo alone does not grant the operation.
    assert_eq!(
        with.allowed(&AclRequest::new("sys/audit/file", Read)),
        Err(Denial::MissingCapability(Capability::Read))
    );
    Ok(())
}

#[test]
fn sudo_paths_follow_vaults_lists() {
    let needs = [
        "sys/auth/approle",
        "sys/auth/",
        "sys/remount",
        "sys/audit",
        "sys/audit/file",
        "sys/raw",
        "sys/raw/core/mounts",
        "sys/rotate",
        "sys/rotate/keyring",
        "sys/config/cors",
        "sys/config/auditing/request-headers/x",
        "sys/config/ui/headers/x",
        "sys/plugins/catalog/secret/x",
        "sys/revoke-prefix/aws/",
        "sys/revoke-force/aws/",
        "sys/leases/revoke-prefix/aws/",
        "sys/leases/revoke-force/aws/",
        "sys/leases/lookup/aws/",
        "sys/leases",
        "sys/internal/inspect/router",
        "sys/seal",
        "sys/step-down",
        "/sys/seal",
        "auth/token/revoke-orphan/x",
        "auth/token/accessors/",
        "auth/token/accessors",
    ];
    let does_not = [
        "sys/auth",
        "sys/mounts/secret",
        "sys/audits",
        "sys/rawx",
        "sys/leases/lookup",
        "sys/leases/renew",
        "sys/leases/revoke",
        "sys/capabilities-self",
        "sys/policies/acl/x",
        "sys/config/ui",
        "auth/token/create",
        "auth/token/revoke-orphan",
        "auth/token/lookup",
        "secret/sys/seal",
        "pki/root",
    ];
    for path in needs {
        assert!(sudo_required(path), "{path}");
    }
    for path in does_not {
        assert!(!sudo_required(path), "{path}");
    }
    assert!(special_path_matches(PKI_SUDO_PATHS, "root"));
    assert!(special_path_matches(
        PKI_SUDO_PATHS,
        "root/sign-self-issued"
    ));
    assert!(!special_path_matches(
        PKI_SUDO_PATHS,
        "root/generate/internal"
    ));
    assert!(!special_path_matches(PKI_SUDO_PATHS, "roles/x"));
}

// LIST and trailing slashes.

#[test]
fn list_uses_the_rule_without_trailing_slash() -> Result<()> {
    let exact = acl(&[r#"path "secret/metadata/foo" { capabilities = ["list"] }"#])?;
    assert!(allows(&exact, List, "secret/metadata/foo/"));
    assert!(allows(&exact, List, "secret/metadata/foo"));
    // Only LIST gets the fallback.
    assert!(!allows(&exact, Read, "secret/metadata/foo/"));

    let glob = acl(&[r#"path "secret/metadata/*" { capabilities = ["list"] }"#])?;
    assert!(allows(&glob, List, "secret/metadata/"));
    assert!(allows(&glob, List, "secret/metadata/a/b/"));
    assert!(!allows(&glob, List, "secret/metadata"));

    // A trailing-slash rule only matches with the slash.
    let slash = acl(&[r#"path "secret/metadata/" { capabilities = ["list"] }"#])?;
    assert!(allows(&slash, List, "secret/metadata/"));
    assert!(!allows(&slash, List, "secret/metadata"));

    // `+` rules get the fallback too: the slash-less path has one segment fewer.
    let segment = acl(&[r#"path "secret/+/foo" { capabilities = ["list"] }"#])?;
    assert!(allows(&segment, List, "secret/x/foo/"));
    assert!(!allows(&segment, Read, "secret/x/foo/"));
    Ok(())
}

/// OpenBao's `TestACL_ListScanWildcardDeny`, for LIST.
#[test]
fn list_under_a_denied_folder() -> Result<()> {
    let acl = acl(&[r#"
path "foo/metadata/*" { capabilities = ["list"] }
path "foo/metadata/private/*" { capabilities = ["deny"] }
path "foo/metadata/private/granted/*" { capabilities = ["list"] }
"#])?;
    let cases = [
        ("foo/", false),
        ("foo/metadata/", true),
        ("foo/metadata/test/", true),
        ("foo/metadata/private/", false),
        ("foo/metadata/private/internal/", false),
        ("foo/metadata/private/granted/", true),
        ("foo/metadata/private/granted/test/", true),
    ];
    for (path, expected) in cases {
        assert_eq!(allows(&acl, List, path), expected, "{path}");
    }
    Ok(())
}

// Parameters.

/// OpenBao's `permissionsPolicy` / `TestACL_AllowOperation` (parameters set to "").
#[test]
fn parameter_rules_allowed_denied_required() -> Result<()> {
    let acl = acl(&[r#"
path "dev/*" {
	policy = "write"
	allowed_parameters = {
		"zip" = []
	}
}
path "foo/bar" {
	policy = "write"
	denied_parameters = {
		"zap" = []
	}
}
path "broken/phone" {
	policy = "write"
	allowed_parameters = {
	  "steve" = []
	}
	denied_parameters = {
	  "steve" = []
	}
}
path "hello/world" {
	policy = "write"
	allowed_parameters = {
		"*" = []
	}
	denied_parameters = {
		"*" = []
	}
}
path "tree/fort" {
	policy = "write"
	allowed_parameters = {
		"*" = []
	}
	denied_parameters = {
		"foo" = []
	}
}
path "fruit/apple" {
	policy = "write"
	allowed_parameters = {
		"pear" = []
	}
	denied_parameters = {
		"*" = []
	}
}
path "cold/weather" {
	policy = "write"
	allowed_parameters = {}
	denied_parameters = {}
}
path "var/aws" {
	policy = "write"
	allowed_parameters = {
		"*" = []
	}
	denied_parameters = {
		"soft" = []
		"warm" = []
		"kitty" = []
	}
}
path "var/req" {
	policy = "write"
	required_parameters = ["foo"]
}
"#])?;
    let cases: [(&str, &[&str], bool); 14] = [
        ("dev/ops", &["zip"], true),
        ("dev/ops", &["zap"], false),
        ("foo/bar", &["zap"], false),
        ("foo/bar", &["zip"], true),
        ("broken/phone", &["steve"], false),
        ("hello/world", &["one"], false),
        ("tree/fort", &["one"], true),
        ("tree/fort", &["foo"], false),
        ("fruit/apple", &["pear"], false),
        ("fruit/apple", &["one"], false),
        ("cold/weather", &["four"], true),
        ("var/aws", &["cold", "warm", "kitty"], false),
        ("var/req", &["cold", "warm", "kitty"], false),
        ("var/req", &["cold", "warm", "kitty", "foo"], true),
    ];
    for (path, names, expected) in cases {
        let data: Map<String, Value> = names
            .iter()
            .map(|name| (name.to_string(), json!("")))
            .collect();
        // Legacy "write" has no patch; Vault checks parameters for reads too.
        for operation in [Create, Update, Read] {
            let outcome = acl.allowed(&request(path, operation).with_parameters(&data));
            assert_eq!(outcome.is_ok(), expected, "{operation:?} {path} {names:?}");
        }
        // LIST and DELETE ignore parameter rules.
        assert!(
            acl.allowed(&request(path, Delete).with_parameters(&data))
                .is_ok()
        );
    }
    // No data: allowed unless something is required.
    assert!(allows(&acl, Update, "hello/world"));
    assert!(allows_data(&acl, Update, "hello/world", json!({})));
    assert_eq!(
        acl.allowed(&request("var/req", Update)),
        Err(Denial::MissingParameter("foo".into()))
    );
    // Vault lowercases the required name, not the request's key.
    assert!(!allows_data(&acl, Update, "var/req", json!({"FOO": 1})));
    Ok(())
}

/// OpenBao's `valuePermissionsPolicy` / `TestACL_ValuePermissions`.
#[test]
fn parameter_values_globs_and_types() -> Result<()> {
    let acl = acl(&[r#"
path "dev/*" {
	policy = "write"
	allowed_parameters = {
		"allow" = ["good"]
	}
}
path "foo/bar" {
	policy = "write"
	denied_parameters = {
		"deny" = ["bad*"]
	}
}
path "foo/baz" {
	policy = "write"
	allowed_parameters = {
		"ALLOW" = ["good"]
	}
	denied_parameters = {
		"dEny" = ["bad"]
	}
}
path "fizz/buzz" {
	policy = "write"
	allowed_parameters = {
		"allow_multi" = ["good", "good1", "good2", "*good3"]
		"allow" = ["good"]
	}
	denied_parameters = {
		"deny_multi" = ["bad", "bad1", "bad2"]
	}
}
path "test/types" {
	policy = "write"
	allowed_parameters = {
		"map" = [{"good" = "one"}]
		"int" = [1, 2]
		"bool" = [false]
		"list" = [["a", "b"]]
	}
	denied_parameters = {
	}
}
path "test/star" {
	policy = "write"
	allowed_parameters = {
		"*" = []
		"foo" = []
		"bar" = [false]
	}
	denied_parameters = {
	}
}
path "test/contains" {
	policy = "write"
	allowed_parameters = {
		"name" = ["*mid*", "*", "x"]
	}
}
"#])?;
    let cases = [
        ("dev/ops", json!({"allow": "good"}), true),
        ("dev/ops", json!({"allow": "bad"}), false),
        ("foo/bar", json!({"deny": "bad"}), false),
        ("foo/bar", json!({"deny": "bad glob"}), false),
        ("foo/bar", json!({"deny": "good"}), true),
        ("foo/bar", json!({"allow": "good"}), true),
        ("foo/bar", json!({"deny": null}), true),
        ("foo/bar", json!({"allow": null}), true),
        ("foo/baz", json!({"aLLow": "good"}), true),
        ("foo/baz", json!({"deny": "bad"}), false),
        ("foo/baz", json!({"deny": "good"}), false),
        ("foo/baz", json!({"allow": "good", "deny": "bad"}), false),
        ("foo/baz", json!({"deNy": "bad", "allow": "good"}), false),
        ("foo/baz", json!({"aLLow": "bad"}), false),
        ("foo/baz", json!({"Neither": "bad"}), false),
        ("foo/baz", json!({"allow": null}), false),
        ("fizz/buzz", json!({"allow_multi": "good"}), true),
        ("fizz/buzz", json!({"allow_multi": "good1"}), true),
        ("fizz/buzz", json!({"allow_multi": "good2"}), true),
        ("fizz/buzz", json!({"allow_multi": "glob good2"}), false),
        ("fizz/buzz", json!({"allow_multi": "glob good3"}), true),
        ("fizz/buzz", json!({"allow_multi": "bad"}), false),
        (
            "fizz/buzz",
            json!({"allow_multi": "good1", "allow": "good"}),
            true,
        ),
        ("fizz/buzz", json!({"deny_multi": "bad2"}), false),
        (
            "fizz/buzz",
            json!({"deny_multi": "good", "allow_multi": "good2"}),
            false,
        ),
        ("test/types", json!({"map": {"good": "one"}}), true),
        ("test/types", json!({"map": {"bad": "one"}}), false),
        (
            "test/types",
            json!({"map": {"good": "one", "extra": 1}}),
            false,
        ),
        ("test/types", json!({"int": 1}), true),
        ("test/types", json!({"int": 1.0}), true),
        ("test/types", json!({"int": 3}), false),
        // Types do not mix: the string "1" is not the number 1.
        ("test/types", json!({"int": "1"}), false),
        ("test/types", json!({"bool": false}), true),
        ("test/types", json!({"bool": true}), false),
        ("test/types", json!({"bool": "false"}), false),
        // A list value is compared whole, not element by element.
        ("test/types", json!({"list": ["a", "b"]}), true),
        ("test/types", json!({"list": ["a"]}), false),
        ("test/types", json!({"list": "a"}), false),
        ("test/star", json!({"anything": true}), true),
        ("test/star", json!({"foo": true}), true),
        ("test/star", json!({"bar": false}), true),
        ("test/star", json!({"bar": true}), false),
        // `*mid*` is a substring; a lone `*` is the literal "*" (Vault's GlobbedStringsMatch).
        ("test/contains", json!({"name": "a-mid-b"}), true),
        ("test/contains", json!({"name": "*"}), true),
        ("test/contains", json!({"name": "other"}), false),
        ("test/contains", json!({"name": "x"}), true),
    ];
    for (path, data, expected) in cases {
        for operation in [Create, Update] {
            assert_eq!(
                allows_data(&acl, operation, path, data.clone()),
                expected,
                "{operation:?} {path} {data}"
            );
        }
    }
    Ok(())
}

/// OpenBao's `mergingPolicies`, checked by behaviour.
#[test]
fn parameter_rules_merge_across_rules() -> Result<()> {
    let acl = acl(&[r#"
path "foo/bar" {
	policy = "write"
	denied_parameters = {
		"baz" = []
	}
	required_parameters = ["baz"]
}
path "foo/bar" {
	policy = "write"
	denied_parameters = {
		"zip" = []
	}
}
path "hello/universe" {
	policy = "write"
	allowed_parameters = {
		"foo" = []
	}
	required_parameters = ["foo"]
}
path "hello/universe" {
	policy = "write"
	allowed_parameters = {
		"bar" = []
	}
	required_parameters = ["bar"]
}
path "allow/all" {
	policy = "write"
	allowed_parameters = {
		"test" = []
		"test1" = ["foo"]
	}
}
path "allow/all" {
	policy = "write"
	allowed_parameters = {
		"*" = []
	}
}
path "value/merge" {
	policy = "write"
	allowed_parameters = {
		"test" = [1, 2]
	}
}
path "value/merge" {
	policy = "write"
	allowed_parameters = {
		"test" = [3, 4]
	}
}
path "value/empty" {
	policy = "write"
	allowed_parameters = {
		"empty" = [1]
	}
}
path "value/empty" {
	policy = "write"
	allowed_parameters = {
		"empty" = []
	}
}
"#])?;
    let cases = [
        // Both required parameters are required, and both denials apply.
        ("foo/bar", json!({"baz": 1}), false),
        ("foo/bar", json!({"other": 1}), false),
        ("hello/universe", json!({"foo": 1, "bar": 2}), true),
        ("hello/universe", json!({"foo": 1}), false),
        (
            "hello/universe",
            json!({"foo": 1, "bar": 2, "baz": 3}),
            false,
        ),
        // `*` joins the named keys, whose values stay constrained.
        ("allow/all", json!({"anything": 1}), true),
        ("allow/all", json!({"test1": "foo"}), true),
        ("allow/all", json!({"test1": "bar"}), false),
        ("value/merge", json!({"test": 1}), true),
        ("value/merge", json!({"test": 4}), true),
        ("value/merge", json!({"test": 5}), false),
        // `[]` absorbs a value list.
        ("value/empty", json!({"empty": 99}), true),
    ];
    for (path, data, expected) in cases {
        assert_eq!(
            allows_data(&acl, Update, path, data.clone()),
            expected,
            "{path} {data}"
        );
    }
    Ok(())
}

#[test]
fn wrapping_ttl_bounds_need_a_wrapped_request() -> Result<()> {
    let acl = acl(&[
        r#"path "foo/bar" {
  policy = "write"
  min_wrapping_ttl = 300
  max_wrapping_ttl = "400s"
}"#,
        r#"path "foo/bar" {
  policy = "write"
  max_wrapping_ttl = "6m"
}"#,
    ])?;
    let outcome = |ttl: Option<u64>| {
        let mut req = request("foo/bar", Update);
        req.wrap_ttl = ttl;
        acl.allowed(&req)
    };
    assert_eq!(outcome(None), Err(Denial::WrappingTtl));
    assert_eq!(outcome(Some(50)), Err(Denial::WrappingTtl));
    assert_eq!(outcome(Some(370)), Err(Denial::WrappingTtl)); // over the merged max (6m)
    assert_eq!(outcome(Some(350)), Ok(()));
    Ok(())
}

// Parsing.

#[test]
fn hcl_and_json_forms_parse_to_the_same_policy() -> Result<()> {
    let hcl = r#"
# comments are fine
path "/secret/a" {
  capabilities = ["create", "read"]
  allowed_parameters = {
    "Name" = ["x*", 3, true, ["l"], {"k" = "v"}]
    "*" = []
  }
  denied_parameters = {
    "ttl" = []
  }
  required_parameters = ["name"]
  min_wrapping_ttl = 60
  max_wrapping_ttl = "1h"
}
path "secret/b/+/c*" {
  policy = "read"
  comment = "ignored"
}
"#;
    let json = r#"{
  "path": {
    "/secret/a": {
      "capabilities": ["create", "read"],
      "allowed_parameters": {"Name": ["x*", 3, true, ["l"], {"k": "v"}], "*": []},
      "denied_parameters": {"ttl": []},
      "required_parameters": ["name"],
      "min_wrapping_ttl": 60,
      "max_wrapping_ttl": "1h"
    },
    "secret/b/+/c*": {"policy": "read", "comment": "ignored"}
  }
}"#;
    let from_hcl = Policy::parse("Mine ", hcl)?;
    let from_json = Policy::parse("mine", json)?;
    assert_eq!(from_hcl, from_json);
    assert_eq!(from_hcl.name(), "mine");
    let rules = from_hcl.rules();
    assert_eq!(rules.len(), 2);
    let first = rules.first().map(PathRule::pattern);
    assert_eq!(first, Some("secret/a"));
    assert_eq!(
        rules
            .first()
            .map(|rule| (rule.min_wrapping_ttl(), rule.max_wrapping_ttl())),
        Some((60, 3600))
    );
    assert!(
        rules
            .first()
            .and_then(PathRule::allowed_parameters)
            .is_some_and(|allowed| allowed.contains_key("name"))
    );

    // And they decide alike.
    let (hcl_acl, json_acl) = (Acl::new(&[from_hcl]), Acl::new(&[from_json]));
    for path in ["secret/a", "secret/b/x/cd", "secret/b/x/d", "secret/a/"] {
        for operation in ALL_OPERATIONS {
            let data = object(json!({"name": "xy", "other": 1}));
            let mut req = request(path, operation).with_parameters(&data);
            req.wrap_ttl = Some(120);
            assert_eq!(hcl_acl.allowed(&req), json_acl.allowed(&req), "{path}");
        }
        assert_eq!(hcl_acl.capabilities(path), json_acl.capabilities(path));
    }
    Ok(())
}

#[test]
fn json_path_may_be_a_list_keeping_repeated_patterns() -> Result<()> {
    let json = r#"{"path": [
        {"kv/x": {"capabilities": ["read"]}},
        {"kv/x": {"capabilities": ["list"]}}
    ]}"#;
    let acl = acl(&[json])?;
    assert_eq!(acl.capabilities("kv/x").names(), ["list", "read"]);
    Ok(())
}

#[test]
fn repeated_hcl_path_blocks_are_all_kept() -> Result<()> {
    let policy = Policy::parse(
        "p",
        r#"
path "kv/x" { capabilities = ["read"] }
path "kv/x" { capabilities = ["update"] }
"#,
    )?;
    assert_eq!(policy.rules().len(), 2);
    let acl = Acl::new(&[policy]);
    assert_eq!(acl.capabilities("kv/x").names(), ["read", "update"]);
    Ok(())
}

#[test]
fn legacy_policy_forms() -> Result<()> {
    let expected: [(&str, &[&str]); 4] = [
        ("deny", &["deny"]),
        ("read", &["list", "read"]),
        ("write", &["create", "delete", "list", "read", "update"]),
        (
            "sudo",
            &["create", "delete", "list", "read", "sudo", "update"],
        ),
    ];
    for (legacy, names) in expected {
        let acl = acl(&[&format!("path \"kv/*\" {{\n policy = \"{legacy}\"\n}}")])?;
        assert_eq!(acl.capabilities("kv/x").names(), names, "{legacy}");
    }
    // `policy` adds to `capabilities`; `deny` in either wipes the rest.
    let acl = acl(&[
        "path \"a\" {\n policy = \"read\"\n capabilities = [\"update\"]\n}\npath \"b\" {\n policy = \"deny\"\n capabilities = [\"read\"]\n}\npath \"c\" {\n capabilities = [\"read\", \"deny\"]\n}",
    ])?;
    assert_eq!(acl.capabilities("a").names(), ["list", "read", "update"]);
    assert_eq!(acl.capabilities("b").names(), ["deny"]);
    assert_eq!(acl.capabilities("c").names(), ["deny"]);
    Ok(())
}

#[test]
fn bad_input_is_refused_with_an_actionable_message() {
    let cases = [
        (
            r#"path "kv/*" { capabilities = ["reed"] }"#,
            "path \"kv/*\": unknown capability \"reed\"; expected one of create, read",
        ),
        (
            r#"path "kv/*" { capabilites = ["read"] }"#,
            "path \"kv/*\": unknown key \"capabilites\"; a path rule takes capabilities, policy",
        ),
        (
            r#"path "kv/+*" { capabilities = ["read"] }"#,
            "invalid use of wildcards ('+*' is forbidden)",
        ),
        (
            "path \"kv/*\" {\n policy = \"admin\"\n}",
            "invalid policy \"admin\"; expected \"deny\", \"read\", \"write\" or \"sudo\"",
        ),
        (
            r#"path "kv/*" { mfa_methods = ["x"] }"#,
            "\"mfa_methods\" is not supported: Coffer has no MFA",
        ),
        (
            r#"path "identity/entity/id/{{identity.entity.id}}" { capabilities = ["read"] }"#,
            "identity templating",
        ),
        (
            r#"path "kv/${x}" { capabilities = ["read"] }"#,
            "failed to parse policy",
        ),
        (
            r#"path "kv/*" { capabilities = ["${x}"] }"#,
            "policies hold literal values",
        ),
        (
            r#"path "kv/*" { capabilities = "read" }"#,
            "must be a list of strings",
        ),
        (
            r#"paths "kv/*" { capabilities = ["read"] }"#,
            "unknown top-level key \"paths\"",
        ),
        (r#"path { capabilities = ["read"] }"#, "exactly one label"),
        (
            "path \"kv/*\" {\n allowed_parameters = { \"a\" = \"b\" }\n}",
            "allowed_parameters: the value of \"a\" must be a list",
        ),
        (
            "path \"kv/*\" {\n min_wrapping_ttl = \"2h\"\n max_wrapping_ttl = \"1h\"\n}",
            "max_wrapping_ttl cannot be less than min_wrapping_ttl",
        ),
        (
            "path \"kv/*\" {\n min_wrapping_ttl = \"soon\"\n}",
            "min_wrapping_ttl: invalid duration",
        ),
        (
            "path \"kv/*\" {\n capabilities = [\"read\"]\n capabilities = [\"list\"]\n}",
            "failed to parse policy",
        ),
        (
            r#"{"path": {"kv/*": {"capabilities": ["read"], "x": 1}}}"#,
            "unknown key \"x\"",
        ),
        (
            r#"{"path": {"kv/*": {"capabilities": ["read"]}"#,
            "invalid JSON",
        ),
        (r#"{"paths": {}}"#, "unknown top-level key \"paths\""),
        ("path \"kv/*\" {", "failed to parse policy"),
    ];
    for (text, expected) in cases {
        let message = parse_error(text);
        assert!(
            message.contains(expected),
            "{text}\n  gave: {message}\n  want: {expected}"
        );
    }
    assert!(
        parse_error("").contains("parsed"),
        "an empty policy is valid"
    );
    assert!(matches!(
        Policy::parse("root", ""),
        Err(AclError::InvalidName(_))
    ));
    assert!(matches!(
        Policy::parse("  ", ""),
        Err(AclError::InvalidName(_))
    ));
}

#[test]
fn oversize_input_names_the_limit() {
    let huge = " ".repeat(MAX_POLICY_BYTES + 1);
    assert_eq!(
        Policy::parse("p", &huge),
        Err(AclError::TooLarge {
            what: "policy text (bytes)",
            actual: MAX_POLICY_BYTES + 1,
            limit: MAX_POLICY_BYTES,
        })
    );
    let many: String = (0..=MAX_PATHS_PER_POLICY)
        .map(|index| format!("path \"p{index}\" {{ capabilities = [\"read\"] }}\n"))
        .collect();
    let message = parse_error(&many);
    assert!(
        message.contains(&format!("over the limit of {MAX_PATHS_PER_POLICY}")),
        "{message}"
    );
    let long = format!(
        "path \"{}\" {{ capabilities = [\"read\"] }}",
        "a".repeat(MAX_PATTERN_BYTES + 1)
    );
    assert!(parse_error(&long).contains("path pattern (bytes)"));
    let values: Vec<String> = (0..MAX_PARAMETERS_PER_PATH)
        .map(|index| format!("\"v{index}\""))
        .collect();
    let parameters = format!(
        "path \"a\" {{\n allowed_parameters = {{ \"k\" = [{}] }}\n}}",
        values.join(", ")
    );
    assert!(parse_error(&parameters).contains("parameter entries in one path rule"));
    let deep = format!(
        "path \"a\" {{\n allowed_parameters = {{ \"k\" = [{}1{}] }}\n}}",
        "[".repeat(MAX_VALUE_DEPTH + 1),
        "]".repeat(MAX_VALUE_DEPTH + 1)
    );
    assert!(
        parse_error(&deep).contains("nests deeper than"),
        "{}",
        parse_error(&deep)
    );
    assert!(matches!(
        Policy::parse(&"n".repeat(MAX_POLICY_NAME_BYTES + 1), ""),
        Err(AclError::TooLarge { .. })
    ));
}

#[test]
fn default_policy_grants_what_vault_does() -> Result<()> {
    let acl = acl(&[DEFAULT_POLICY])?;
    let granted = [
        (Read, "auth/token/lookup-self"),
        (Update, "auth/token/renew-self"),
        (Update, "auth/token/revoke-self"),
        (Update, "sys/capabilities-self"),
        (Read, "sys/internal/ui/resultant-acl"),
        (Update, "sys/renew"),
        (Update, "sys/leases/renew"),
        (Update, "sys/leases/lookup"),
        (Create, "cubbyhole/x"),
        (Read, "cubbyhole/x"),
        (Update, "cubbyhole/x"),
        (Delete, "cubbyhole/x"),
        (List, "cubbyhole/"),
        (Update, "sys/wrapping/wrap"),
        (Update, "sys/wrapping/lookup"),
        (Update, "sys/wrapping/unwrap"),
        (Update, "sys/tools/hash"),
        (Update, "sys/tools/hash/sha2-512"),
    ];
    for (operation, path) in granted {
        assert_eq!(
            acl.allowed(&AclRequest::new(path, operation)),
            Ok(()),
            "{path}"
        );
    }
    let refused = [
        (Read, "auth/token/lookup"),
        (Update, "auth/token/create"),
        (Read, "secret/data/x"),
        (Update, "sys/leases/lookup/x/"),
        (List, "sys/leases/lookup/"),
        (Read, "sys/policies/acl/default"),
        (Patch, "cubbyhole/x"),
    ];
    for (operation, path) in refused {
        assert!(
            acl.allowed(&AclRequest::new(path, operation)).is_err(),
            "{path}"
        );
    }
    Ok(())
}

// Order independence (seeded property test).

const SEGMENTS: [&str; 5] = ["a", "b", "ab", "+", ""];
const PATH_SEGMENTS: [&str; 5] = ["a", "b", "ab", "abc", ""];
const CAPABILITY_NAMES: [&str; 7] = [
    "create", "read", "update", "patch", "delete", "list", "sudo",
];
const KEYS: [&str; 4] = ["k", "K2", "ttl", "*"];
const VALUES: [&str; 5] = ["\"x\"", "\"x*\"", "1", "true", "\"*y\""];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items
        .get(rng.gen_range(0..items.len()))
        .copied()
        .unwrap_or("")
}

fn random_pattern(rng: &mut StdRng) -> String {
    let count = rng.gen_range(1..=4);
    let mut pattern = (0..count)
        .map(|_| pick(rng, &SEGMENTS))
        .collect::<Vec<_>>()
        .join("/");
    match rng.gen_range(0..4) {
        0 if !pattern.ends_with('+') => pattern.push('*'),
        1 => pattern.push('/'),
        _ => {}
    }
    pattern
}

fn random_parameters(rng: &mut StdRng, key: &str) -> String {
    // HCL2 refuses a key written twice in one map, so the keys are distinct.
    let mut keys = KEYS.to_vec();
    keys.shuffle(rng);
    keys.truncate(rng.gen_range(0..3));
    let entries: Vec<String> = keys
        .iter()
        .map(|key| {
            let values: Vec<&str> = (0..rng.gen_range(0..3))
                .map(|_| pick(rng, &VALUES))
                .collect();
            format!("\"{key}\" = [{}]", values.join(", "))
        })
        .collect();
    format!("  {key} = {{\n    {}\n  }}\n", entries.join("\n    "))
}

fn random_rule(rng: &mut StdRng) -> String {
    let mut body = String::new();
    let capabilities: Vec<String> = if rng.gen_range(0..10) == 0 {
        vec!["\"deny\"".into()]
    } else {
        CAPABILITY_NAMES
            .iter()
            .filter(|_| rng.gen_bool(0.4))
            .map(|name| format!("\"{name}\""))
            .collect()
    };
    body.push_str(&format!("  capabilities = [{}]\n", capabilities.join(", ")));
    if rng.gen_bool(0.3) {
        body.push_str(&random_parameters(rng, "allowed_parameters"));
    }
    if rng.gen_bool(0.2) {
        body.push_str(&random_parameters(rng, "denied_parameters"));
    }
    if rng.gen_bool(0.1) {
        body.push_str("  required_parameters = [\"k\"]\n");
    }
    if rng.gen_bool(0.1) {
        body.push_str(&format!(
            "  max_wrapping_ttl = {}\n",
            rng.gen_range(1..3) * 100
        ));
    }
    format!("path \"{}\" {{\n{body}}}\n", random_pattern(rng))
}

/// Splits rules into `count` policies at random.
fn policies_from(rng: &mut StdRng, rules: &[String], count: usize) -> Result<Vec<Policy>> {
    let mut texts = vec![String::new(); count];
    for rule in rules {
        if let Some(text) = texts.get_mut(rng.gen_range(0..count)) {
            text.push_str(rule);
        }
    }
    Ok(texts
        .iter()
        .enumerate()
        .map(|(index, text)| Policy::parse(&format!("p{index}"), text))
        .collect::<Result<_, _>>()?)
}

fn random_request_data(rng: &mut StdRng) -> Map<String, Value> {
    let mut data = Map::new();
    for _ in 0..rng.gen_range(0..3) {
        let value = match rng.gen_range(0..4) {
            0 => json!("x"),
            1 => json!("xy"),
            2 => json!(1),
            _ => json!(true),
        };
        data.insert(
            pick(rng, &["k", "k2", "K", "ttl", "other"]).to_owned(),
            value,
        );
    }
    data
}

#[test]
fn decisions_do_not_depend_on_the_order_of_policies_or_rules() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0xC0FFE4);
    let (mut allowed, mut denied, mut parameter_denials) = (0, 0, 0);
    for round in 0..300 {
        let rules: Vec<String> = (0..rng.gen_range(1..12))
            .map(|_| random_rule(&mut rng))
            .collect();
        let first_count = rng.gen_range(1..4);
        let first = Acl::new(&policies_from(&mut rng, &rules, first_count)?);
        let mut shuffled = rules.clone();
        shuffled.shuffle(&mut rng);
        let second_count = rng.gen_range(1..4);
        let mut second_policies = policies_from(&mut rng, &shuffled, second_count)?;
        second_policies.reverse();
        let second = Acl::new(&second_policies);

        for _ in 0..40 {
            let count = rng.gen_range(1..=5);
            let mut path = (0..count)
                .map(|_| pick(&mut rng, &PATH_SEGMENTS))
                .collect::<Vec<_>>()
                .join("/");
            if rng.gen_bool(0.3) {
                path.push('/');
            }
            let data = random_request_data(&mut rng);
            let operation = *ALL_OPERATIONS
                .get(rng.gen_range(0..ALL_OPERATIONS.len()))
                .unwrap_or(&Read);
            let req = AclRequest {
                path: &path,
                operation,
                parameters: Some(&data),
                needs_sudo: rng.gen_bool(0.2),
                wrap_ttl: rng.gen_bool(0.5).then(|| rng.gen_range(0..300)),
            };
            let outcome = first.allowed(&req);
            assert_eq!(
                outcome.is_ok(),
                second.allowed(&req).is_ok(),
                "round {round}: {req:?}\n{rules:#?}"
            );
            match outcome {
                Ok(()) => allowed += 1,
                Err(
                    Denial::DeniedParameter(_)
                    | Denial::ParameterNotAllowed(_)
                    | Denial::MissingParameter(_),
                ) => parameter_denials += 1,
                Err(_) => denied += 1,
            }
            assert_eq!(
                first.capabilities(&path),
                second.capabilities(&path),
                "round {round}: {path}\n{rules:#?}"
            );
            assert_eq!(
                first.capabilities(&path),
                reference_capabilities(&rules, &path),
                "round {round}: {path} against the reference\n{rules:#?}"
            );
        }
    }
    // The generator reaches every kind of outcome, so the comparison means something.
    assert!(
        allowed > 500 && denied > 1000 && parameter_denials > 100,
        "allowed {allowed}, denied {denied}, by parameters {parameter_denials}"
    );
    Ok(())
}

/// Vault's lookup transcribed naively (collect every candidate, sort by Vault's `less`,
/// take the last), to check the compiled evaluator's shortcuts.
fn reference_capabilities(rules: &[String], path: &str) -> Capabilities {
    let Ok(policy) = Policy::parse("reference", &rules.concat()) else {
        return Capabilities::NONE;
    };
    let union = |pattern: &str| -> Option<Capabilities> {
        let caps: Vec<Capabilities> = policy
            .rules()
            .iter()
            .filter(|rule| rule.pattern() == pattern)
            .map(PathRule::capabilities)
            .collect();
        if caps.is_empty() {
            None
        } else if caps.iter().any(|caps| caps.contains(Capability::Deny)) {
            Some(Capabilities::DENY)
        } else {
            Some(caps.iter().fold(Capabilities::NONE, |a, b| a.union(*b)))
        }
    };
    let is_segment = |p: &str| p == "+" || p.contains("/+") || p.starts_with("+/");
    let exact = |p: &str| {
        policy
            .rules()
            .iter()
            .find(|rule| rule.pattern() == p && !is_segment(p) && !p.ends_with('*'))
            .and_then(|rule| union(rule.pattern()))
    };
    let non_exact = |p: &str| -> Option<Capabilities> {
        // (first wildcard, is prefix, wildcards, path without `*`, pattern)
        let mut candidates: Vec<(usize, bool, usize, String, String)> = Vec::new();
        let longest_prefix = policy
            .rules()
            .iter()
            .filter(|rule| !is_segment(rule.pattern()))
            .filter_map(|rule| {
                rule.pattern()
                    .strip_suffix('*')
                    .map(|prefix| (prefix, rule.pattern()))
            })
            .filter(|(prefix, _)| p.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len());
        if let Some((prefix, pattern)) = longest_prefix {
            candidates.push((prefix.len(), true, 0, prefix.to_owned(), pattern.to_owned()));
        }
        let parts: Vec<&str> = p.split('/').collect();
        for rule in policy
            .rules()
            .iter()
            .filter(|rule| is_segment(rule.pattern()))
        {
            let full = rule.pattern();
            let (wc_path, is_prefix) = match full.strip_suffix('*') {
                Some(stripped) => (stripped, true),
                None => (full, false),
            };
            let rule_parts: Vec<&str> = wc_path.split('/').collect();
            if parts.len() < rule_parts.len() || (!is_prefix && parts.len() != rule_parts.len()) {
                continue;
            }
            let last = rule_parts.len() - 1;
            let matched = rule_parts
                .iter()
                .zip(&parts)
                .enumerate()
                .all(|(i, (a, b))| {
                    *a == "+" || a == b || (is_prefix && i == last && b.starts_with(a))
                });
            if matched {
                let wildcards = rule_parts.iter().filter(|a| **a == "+").count();
                let first = full.find('+').unwrap_or(0);
                candidates.push((
                    first,
                    is_prefix,
                    wildcards,
                    wc_path.to_owned(),
                    full.to_owned(),
                ));
            }
        }
        candidates.sort_by(|i, j| {
            let less = |i: &(usize, bool, usize, String, String),
                        j: &(usize, bool, usize, String, String)| {
                if i.0 != j.0 {
                    return i.0 < j.0;
                }
                if i.1 != j.1 {
                    return i.1 && !j.1;
                }
                if i.2 != j.2 {
                    return i.2 > j.2;
                }
                if i.3.len() != j.3.len() {
                    return i.3.len() < j.3.len();
                }
                i.3 < j.3
            };
            if less(i, j) {
                std::cmp::Ordering::Less
            } else if less(j, i) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        candidates.last().and_then(|candidate| union(&candidate.4))
    };
    let path = path.trim_start_matches('/');
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    exact(path)
        .or_else(|| exact(trimmed))
        .or_else(|| non_exact(path))
        .or_else(|| {
            if path.ends_with('/') {
                non_exact(trimmed)
            } else {
                None
            }
        })
        .unwrap_or(Capabilities::NONE)
}

#[test]
fn hcl2_escapes_and_forms_hcl1_also_took() -> Result<()> {
    // `$${` is HCL2's literal `${`.
    let policy = Policy::parse("p", "path \"a/$${x}\" {\n capabilities = [\"read\",]\n}")?;
    assert_eq!(
        policy.rules().first().map(PathRule::pattern),
        Some("a/${x}")
    );
    // Trailing commas, unquoted keys, negative and float numbers.
    let policy = Policy::parse(
        "p",
        "path \"a\" {\n capabilities = [\"update\"]\n allowed_parameters = { k = [-1, 1.5], \"*\" = [], }\n}",
    )?;
    let acl = Acl::new(&[policy]);
    assert!(allows_data(&acl, Update, "a", json!({"k": 1.5, "z": "x"})));
    assert!(!allows_data(&acl, Update, "a", json!({"k": 1})));
    // HCL1 forms HCL2 does not take: two attributes on one line, quoted attribute names.
    for text in [
        "path \"a\" { capabilities = [\"read\"], policy = \"read\" }",
        "path \"a\" {\n \"capabilities\" = [\"read\"]\n}",
    ] {
        assert!(
            parse_error(text).starts_with("failed to parse policy"),
            "{text}"
        );
    }
    Ok(())
}

#[test]
fn resultant_acl_shows_merged_rules_by_kind() -> Result<()> {
    let acl = acl(&[
        r#"path "a/b" { capabilities = ["read"] }
path "a/*" {
  capabilities = ["list"]
  min_wrapping_ttl = "1m"
}
path "a/+/c" {
  capabilities = ["update"]
  required_parameters = ["Name"]
}
path "a/+/d*" { capabilities = ["deny"] }
path "e" {
  capabilities = ["create"]
  allowed_parameters = { "x" = [], "y" = ["p*", 1] }
  denied_parameters = { "z" = ["*q"] }
}"#,
        r#"path "a/b" { capabilities = ["update"] }"#,
    ])?;
    assert_eq!(
        acl.resultant(),
        json!({
            "root": false,
            "exact_paths": {
                "a/b": {"capabilities": ["read", "update"]},
                "a/+/c": {"capabilities": ["update"], "required_parameters": ["name"]},
                "e": {
                    "capabilities": ["create"],
                    "allowed_parameters": {"x": [], "y": ["p*", 1]},
                    "denied_parameters": {"z": ["*q"]},
                },
            },
            "glob_paths": {
                "a/": {"capabilities": ["list"], "min_wrapping_ttl": 60},
                "a/+/d": {"capabilities": ["deny"]},
            },
        })
    );
    assert_eq!(Acl::root().resultant(), json!({"root": true}));
    Ok(())
}

#[test]
fn mount_access_is_any_grant_on_or_below_the_mount() -> Result<()> {
    let below = acl(&[r#"path "pki/issue/web" { capabilities = ["update"] }"#])?;
    assert!(below.has_mount_access("pki/"));
    assert!(!below.has_mount_access("secret/"));
    assert!(!below.has_mount_access("pk/"));
    let glob = acl(&[r#"path "secret/data/*" { capabilities = ["read"] }"#])?;
    assert!(glob.has_mount_access("secret/"));
    assert!(!glob.has_mount_access("database/"));
    let wide = acl(&[r#"path "*" { capabilities = ["list"] }"#])?;
    assert!(wide.has_mount_access("anything/"));
    let segment = acl(&[r#"path "+/creds/ro" { capabilities = ["read"] }"#])?;
    assert!(segment.has_mount_access("database/"));
    assert!(!segment.has_mount_access("a/b/c/d/"));
    let denied = acl(&[
        r#"path "secret/*" { capabilities = ["deny"] }"#,
        r#"path "pki" { capabilities = ["deny"] }"#,
    ])?;
    assert!(!denied.has_mount_access("secret/"));
    assert!(!denied.has_mount_access("pki/"));
    assert!(Acl::root().has_mount_access("x/"));
    assert!(!acl(&[])?.has_mount_access("secret/"));
    Ok(())
}
