//! Persistence and encryption at rest: data survives a restart behind the seal, and
//! neither values nor tokens appear in clear in the storage file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use coffer_tests::{Coffer, fixtures_config, json, temp_dir};

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn data_survives_restart_and_is_encrypted_at_rest() {
    let dir = temp_dir("restart");
    let mut coffer = Coffer::with_config(&dir, &fixtures_config());
    let keys = coffer.init_and_unseal(3, 2);
    let marker = format!("plaintext-marker-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(
        coffer
            .call("PUT", "secret/app/db", Some(json!({"password": marker})))
            .status,
        204
    );
    assert_eq!(
        coffer
            .call(
                "POST",
                "sys/mounts/extra",
                Some(json!({"type": "kv", "description": "made over the API"}))
            )
            .status,
        204
    );
    coffer.call("PUT", "extra/x", Some(json!({"y": "z"})));
    let child = coffer.call("POST", "auth/token/create", Some(json!({"ttl": "1h"})));
    let child_token = child.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();

    coffer.stop();
    let file = std::fs::read(dir.join("data/coffer.db")).unwrap();
    assert!(!file.is_empty());
    assert!(
        !contains(&file, &marker),
        "the secret value is in clear in the storage file"
    );
    assert!(
        !contains(&file, &coffer.token),
        "the root token is in clear in the storage file"
    );
    assert!(
        !contains(&file, &child_token),
        "a child token is in clear in the storage file"
    );
    for key in &keys {
        assert!(
            !contains(&file, key),
            "an unseal key share is in the storage file"
        );
    }

    coffer.start();
    let sealed = coffer.call("GET", "secret/app/db", None);
    assert_eq!(sealed.status, 503, "a restarted server must come up sealed");
    assert_eq!(
        coffer.call("GET", "sys/seal-status", None).json["sealed"],
        json!(true)
    );
    coffer.unseal(&keys[..2]);
    let read = coffer.call("GET", "secret/app/db", None);
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.data()["password"], json!(marker));
    assert_eq!(
        coffer.call("GET", "extra/x", None).data()["y"],
        json!("z"),
        "API-made mounts persist"
    );
    assert_eq!(
        coffer.call("GET", "sys/mounts", None).data()["extra/"]["description"],
        json!("made over the API")
    );
    let lookup = coffer.raw(
        "GET",
        "auth/token/lookup-self",
        Some(&child_token),
        None,
        &[],
    );
    assert_eq!(lookup.status, 200, "tokens persist across restarts");
}

#[test]
fn config_file_mounts_are_applied_idempotently() {
    let dir = temp_dir("idempotent");
    let mut coffer = Coffer::with_config(&dir, &fixtures_config());
    let keys = coffer.init_and_unseal(1, 1);
    coffer.call("PUT", "secret/keep", Some(json!({"v": 1})));
    coffer.stop();
    coffer.start();
    coffer.unseal(&keys);
    let mounts = coffer.call("GET", "sys/mounts", None);
    let paths: Vec<&String> = mounts.data().as_object().unwrap().keys().collect();
    assert_eq!(paths, vec!["hostile/", "leasing/", "secret/"]);
    assert_eq!(
        coffer.call("GET", "secret/keep", None).data()["v"],
        json!(1),
        "re-applying the config kept the data"
    );
    assert_eq!(mounts.data()["hostile/"]["type"], json!("hostile"));
}
