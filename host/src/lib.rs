//! Coffer: a secrets host whose engines are WebAssembly components.
//!
//! Layers, with dependencies pointing down:
//! `http` (wire only) → `pipeline` (ACL, routing) → `system` / `tokens` / engines →
//! `core` (mounts, tokens, routing) → `runtime` + `caps` → `barrier` → `backend`.
//! The `cli` module is the `coffer` command's client side; `server` wires a process.

pub mod acl;
pub mod backend;
pub mod background;
pub mod barrier;
pub mod caps;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod core;
pub mod fields;
pub mod http;
pub mod lease;
pub mod pipeline;
pub mod policies;
pub mod runtime;
pub mod server;
pub mod system;
pub mod tokens;
