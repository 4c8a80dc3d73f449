//! The SDK as a third-party author uses it: `examples/leasing-engine` is copied out of the
//! repository, built there with its own manifest against `plugins/sdk`, pinned by its
//! SHA-256 in a config whose `plugin_directory` is that build's output, and mounted next to
//! the built-in engines (which do not come from that directory).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::Path;
use std::process::Command;

use coffer_tests::{Coffer, json, sha256_file, temp_dir, workspace};

/// Copies the example's manifest and sources to `dir`, as an author's own crate: the SDK by
/// absolute path, a `[workspace]` of its own, this repository's lock file (same versions,
/// so the build needs no network).
fn copy_out_of_tree(dir: &Path) {
    let example = workspace().join("examples/leasing-engine");
    let manifest = std::fs::read_to_string(example.join("Cargo.toml")).unwrap();
    let sdk = workspace().join("plugins/sdk");
    let manifest = manifest.replace(
        r#"path = "../../plugins/sdk""#,
        &format!("path = {:?}", sdk.display().to_string()),
    );
    assert!(manifest.contains(&sdk.display().to_string()), "{manifest}");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), format!("{manifest}\n[workspace]\n")).unwrap();
    std::fs::copy(example.join("src/lib.rs"), dir.join("src/lib.rs")).unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

#[test]
fn an_engine_built_out_of_tree_is_pinned_mounted_and_leases() {
    let crate_dir = temp_dir("out-of-tree-engine");
    copy_out_of_tree(&crate_dir);
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
        .args(["build", "--offline", "--target", "wasm32-wasip2"])
        .current_dir(&crate_dir)
        // The suite's own target directory would belong to the workspace; this build keeps
        // its own (cached between runs) as an author's would.
        .env("CARGO_TARGET_DIR", workspace().join("target/out-of-tree"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "out-of-tree build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let output_dir = workspace().join("target/out-of-tree/wasm32-wasip2/debug");
    let component = output_dir.join("coffer_example_leasing.wasm");
    let sha256 = sha256_file(&component);
    let server_dir = temp_dir("out-of-tree-server");
    let config = format!(
        r#"
plugin_directory = "{output}"

[listener]
address = "{{addr}}"

[storage]
path = "{{dir}}/data/coffer.db"

[[plugin]]
name = "mine"
file = "coffer_example_leasing.wasm"
sha256 = "{sha256}"

[[mount]]
path = "mine"
plugin = "mine"
default_lease_ttl = "1h"

[[mount]]
path = "secret"
plugin = "kv"
"#,
        output = output_dir.display()
    );
    let mut coffer = Coffer::with_config(&server_dir, &config);
    coffer.init_and_unseal(1, 1);
    // The engine leases what it issues, and revocation reaches it.
    let issued = coffer.call("GET", "mine/creds/app", None);
    assert_eq!(issued.status, 200, "{}", issued.text);
    let lease = issued.json["lease_id"].as_str().unwrap().to_string();
    assert!(lease.starts_with("mine/creds/app/"), "{lease}");
    assert_eq!(issued.json["lease_duration"], json!(3600));
    assert_eq!(coffer.list("mine/issued"), vec!["app-1"]);
    let revoked = coffer.call(
        "PUT",
        "sys/leases/revoke",
        Some(json!({ "lease_id": lease })),
    );
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert_eq!(coffer.list("mine/revoked"), vec!["app-1"]);
    assert!(coffer.list("mine/issued").is_empty());
    // The built-in kv engine is there although the plugin directory holds only this one.
    assert_eq!(
        coffer
            .call("PUT", "secret/x", Some(json!({"v": "1"})))
            .status,
        204
    );
    let log = coffer.log_text();
    assert!(
        !log.contains("built-in engines not installed"),
        "built-ins were looked for in the operator's plugin directory:\n{log}"
    );
    // A pin that does not match stops the server with a message naming both hashes.
    coffer.stop();
    let wrong = config.replace(&sha256, &"0".repeat(64));
    let refused = Command::new(coffer_tests::binary())
        .args(["server", "-config"])
        .arg({
            let path = server_dir.join("wrong.toml");
            std::fs::write(
                &path,
                wrong
                    .replace("{addr}", "127.0.0.1:1")
                    .replace("{dir}", &server_dir.display().to_string()),
            )
            .unwrap();
            path
        })
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("sha256 mismatch") && stderr.contains(&sha256),
        "{stderr}"
    );
}
