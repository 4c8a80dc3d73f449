//! The pipeline without a socket and without WASM: an in-memory core, the native `sys/`
//! and `auth/token/` backends, calls built by hand.

use std::collections::BTreeMap;

use super::*;
use crate::backend::MemoryBackend;
use crate::barrier::Barrier;
use crate::catalog::Catalog;
use crate::core::CoreOptions;
use crate::runtime::Runtime;
use crate::tokens::{TokenEntry, random_base62, unix_now};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An unsealed in-memory core with no engines, and its root token.
fn core() -> Result<(Arc<Core>, String), Box<dyn std::error::Error>> {
    let runtime = Runtime::new(None)?;
    let catalog = Catalog::load(&runtime, None, None, &[])?;
    let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::default())));
    let core = Core::new(barrier.clone(), runtime, catalog, CoreOptions::default());
    let init = barrier.initialize(1, 1)?;
    for share in &init.shares {
        barrier.submit_share(share)?;
    }
    let root = crate::system::create_root_token(&core, None).map_err(|e| format!("{e:?}"))?;
    core.post_unseal()?;
    Ok((core, root))
}

/// A child of nothing with `policies`, stored directly in the token store.
fn token(core: &Core, policies: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let entry = TokenEntry {
        accessor: random_base62(24),
        policies: policies.iter().map(|p| p.to_string()).collect(),
        meta: BTreeMap::new(),
        display_name: "token".to_string(),
        creation_time: unix_now(),
        creation_ttl: 3600,
        expire_time: Some(unix_now() + 3600),
        explicit_max_ttl: 0,
        renewable: true,
        orphan: true,
        path: "auth/token/create".to_string(),
        parent: None,
        num_uses: 0,
        uses_spent: false,
        period: 0,
        ..TokenEntry::default()
    };
    Ok(core.tokens.create(entry, None, &[])?)
}

fn call(
    core: &Core,
    token: &str,
    op: Op,
    path: &str,
    input: Value,
) -> Result<Call, Box<dyn std::error::Error>> {
    let entry = core.tokens.lookup(token)?.ok_or("unknown token")?;
    Ok(Call {
        op,
        path: path.to_string(),
        query: Vec::new(),
        input: input.as_object().cloned().unwrap_or_default(),
        caller: Some((token.to_string(), entry)),
        creates: false,
        remote: None,
    })
}

fn status(outcome: &Result<Reply, ApiError>) -> u16 {
    match outcome {
        Ok(Reply::Empty(status) | Reply::Bare(status, _)) => status.as_u16(),
        Ok(_) => 200,
        Err(error) => error.status.as_u16(),
    }
}

#[tokio::test]
async fn the_acl_decides_before_the_backend_runs() -> TestResult {
    let (core, root) = core()?;
    let user = token(&core, &["default"])?;
    let write =
        serde_json::json!({ "policy": r#"path "*" { capabilities = ["sudo", "update"] }"# });
    let refused = run(
        &core,
        call(
            &core,
            &user,
            Op::Write,
            "sys/policies/acl/evil",
            write.clone(),
        )?,
        false,
        false,
    )
    .await;
    assert_eq!(status(&refused), 403);
    assert_eq!(
        core.policies.text("evil")?,
        None,
        "a refused write reached the backend"
    );
    // Refused alike whether or not the path exists.
    for path in ["sys/mounts", "sys/no-such-endpoint", "no-such-mount/x"] {
        let outcome = run(
            &core,
            call(&core, &user, Op::Read, path, Value::Null)?,
            false,
            false,
        )
        .await;
        assert_eq!(status(&outcome), 403, "{path}");
    }
    // The same call from root reaches the backend.
    let done = run(
        &core,
        call(&core, &root, Op::Write, "sys/policies/acl/evil", write)?,
        false,
        false,
    )
    .await;
    assert_eq!(status(&done), 204);
    assert!(core.policies.text("evil")?.is_some());
    // And for root an unknown path is the backend's 404.
    let missing = run(
        &core,
        call(&core, &root, Op::Read, "no-such-mount/x", Value::Null)?,
        false,
        false,
    )
    .await;
    assert_eq!(status(&missing), 404);
    Ok(())
}

#[tokio::test]
async fn a_policy_written_through_the_pipeline_decides_the_next_call() -> TestResult {
    let (core, root) = core()?;
    let user = token(&core, &["default", "reader"])?;
    let list = || call(&core, &user, Op::List, "sys/policies/acl", Value::Null);
    assert_eq!(status(&run(&core, list()?, false, false).await), 403);
    let policy =
        serde_json::json!({ "policy": r#"path "sys/policies/acl" { capabilities = ["list"] }"# });
    let written = run(
        &core,
        call(&core, &root, Op::Write, "sys/policies/acl/reader", policy)?,
        false,
        false,
    )
    .await;
    assert_eq!(status(&written), 204);
    let listed = run(&core, list()?, false, false).await;
    let Ok(Reply::Envelope(envelope)) = listed else {
        return Err("LIST did not answer with an envelope".into());
    };
    let data = envelope.data.ok_or("no data")?;
    let keys = data.get("keys").ok_or("no keys")?;
    assert_eq!(keys, &serde_json::json!(["default", "reader", "root"]));
    Ok(())
}

#[tokio::test]
async fn a_use_limited_token_is_revoked_after_its_last_call() -> TestResult {
    let (core, _) = core()?;
    let user = token(&core, &["default"])?;
    let lookup = call(
        &core,
        &user,
        Op::Read,
        "auth/token/lookup-self",
        Value::Null,
    )?;
    assert_eq!(status(&run(&core, lookup, false, true).await), 200);
    let mut gone = false;
    for _ in 0..100 {
        if core.tokens.lookup(&user)?.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(gone, "the token outlived its last use");
    Ok(())
}
