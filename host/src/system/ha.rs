//! `sys/leader`, `sys/ha-status` and `sys/step-down`, as Vault answers them.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::core::Core;
use crate::logical::{ApiError, Reply};
use crate::system::VERSION;

/// `sys/leader` (unauthenticated, as Vault): whether HA is on, whether this node is the
/// active one, and the active node's address.
pub(crate) fn leader(core: &Core) -> Value {
    let Some(ha) = core.ha.get() else {
        return json!({
            "ha_enabled": false,
            "is_self": false,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        });
    };
    let leader = ha.leader();
    let since = ha.active_since_ms();
    json!({
        "ha_enabled": true,
        "is_self": ha.is_active(),
        "active_time": if since > 0 { crate::fields::rfc3339(since / 1000) } else { "0001-01-01T00:00:00Z".to_string() },
        "leader_address": leader.as_ref().map(|l| l.address.clone()).unwrap_or_default(),
        "leader_cluster_address": leader.as_ref().map(|l| l.address.clone()).unwrap_or_default(),
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
    })
}

/// `sys/ha-status`: the nodes that said they are alive within the last lock TTL.
pub(crate) fn ha_status(core: &Core) -> Result<Reply, ApiError> {
    let Some(ha) = core.ha.get() else {
        return Err(ApiError::bad(
            "high availability is not enabled: storage is not shared",
        ));
    };
    let leader = ha.leader();
    let nodes: Vec<Value> = ha
        .nodes()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .map(|node| {
            json!({
                "hostname": node.identity,
                "api_address": node.address,
                "cluster_address": node.address,
                "active_node": leader.as_ref().is_some_and(|l| l.identity == node.identity),
                "last_echo": crate::fields::rfc3339(u64::try_from(node.last_echo).unwrap_or(0)),
                "version": VERSION,
            })
        })
        .collect();
    Ok(Reply::Bare(
        StatusCode::OK,
        json!({ "nodes": nodes.clone(), "data": { "nodes": nodes } }),
    ))
}

/// `sys/step-down` (sudo): the active node gives up the lock; another takes over.
pub(crate) fn step_down(core: &Core) -> Result<Reply, ApiError> {
    let Some(ha) = core.ha.get() else {
        return Err(ApiError::bad(
            "high availability is not enabled: storage is not shared",
        ));
    };
    ha.step_down_now(core);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}
