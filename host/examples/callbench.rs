//! Temporary: time runtime calls in-process.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
use coffer_host::runtime::*;
use std::time::Instant;
fn main() {
    let wasm = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let rt = Runtime::new(None).unwrap();
    let plugin = rt.load("x", &wasm).unwrap();
    let req = Request {
        path_index: 0,
        path: "ok".into(),
        operation: Operation::Read,
        fields: vec![],
        raw_body: "{}".into(),
        display_name: "root".into(),
        mount_default_ttl: 0,
        mount_max_ttl: 0,
    };
    for round in 0..3 {
        let n = 5000;
        let t = Instant::now();
        for _ in 0..n {
            let ctx = CallContext {
                mount: "m/".into(),
                storage: None,
                limits: Limits::default(),
                sql: None,
            };
            let r = rt.handle(&plugin, ctx, &req).unwrap();
            assert!(r.is_ok());
        }
        println!(
            "round {round}: {:.1} us/call",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}
