//! `coffer:host/http`: outbound HTTPS to the endpoints an operator granted a mount.
//!
//! Grants follow the `sql` capability's model: an `https-url` field in an authenticated
//! write names a destination (scheme, host, port); it is reachable during that write and
//! becomes a lasting grant of the mount, per config path, once the engine accepts it.

use crate::runtime::CallState;
use crate::runtime::bindings::coffer::host::http;
use crate::runtime::bindings::coffer::host::types::HostError;

/// Links `coffer:host/http`.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    http::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(linker, |s| s)
}

impl http::Host for CallState {
    fn send(&mut self, _req: http::Request) -> Result<http::Response, HostError> {
        Err(HostError::Denied(
            "no outbound HTTPS destination is granted to this mount".to_string(),
        ))
    }
}
