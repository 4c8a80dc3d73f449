//! Coffer: a secrets host whose engines are WebAssembly components.
//!
//! Layers, with dependencies pointing down:
//! `http` (wire only) → `pipeline` (ACL, routing) → `system` / `tokens` / engines →
//! `core` (mounts, tokens, routing) → `lease` → `runtime` (with its `caps`) → `barrier` →
//! `backend`. `caps` is re-exported at the root for the callers that stage SQL grants.
//! The `cli` module is the `coffer` command's client side; `server` wires a process.

pub mod acl;
pub mod audit;
pub mod backend;
pub mod background;
pub mod barrier;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod core;
pub mod fields;
pub mod ha;
pub mod http;
pub mod lease;
pub mod logical;
pub mod metrics;
pub mod pgstore;
pub mod pipeline;
pub mod policies;
pub mod runtime;
/// The host capabilities, which live under [`runtime`] (they link themselves into it).
pub use runtime::caps;
pub mod server;
pub mod system;
pub mod tokens;
