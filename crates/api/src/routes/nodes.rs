//! `GET /nodes`: the nodes sharing this store; `PUT /nodes/{id}/drain`:
//! drain one (operators only).

use axum::extract::{Path, State};
use axum::Json;
use brig_core::node::NodeStatus;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::state::AppState;

/// These endpoints are for principals with the `admin` role (403 `admin_only`).
fn admin_only(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    match state.rules.current().has_role(principal.caller(), "admin") {
        true => Ok(()),
        false => Err(ApiError::AdminOnly),
    }
}

/// A node as the registry sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub node_id: String,
    /// Where the other nodes reach it (`BRIG_NODE_ADDR`).
    pub addr: String,
    /// `live`, or `lost` once silent past `NODE_LOSS_SECONDS`.
    pub status: String,
    /// Milliseconds since its last heartbeat.
    pub silent_ms: i64,
    /// Sessions' sandboxes on its engine.
    pub sessions: u64,
    pub max_sessions: u64,
    pub runtimes: Vec<String>,
    /// Its engine host's memory, and its sandboxes' memory limits added up.
    pub memory_bytes: u64,
    pub memory_committed: u64,
    /// Its engine host's CPUs, and its sandboxes' CPU limits added up.
    pub cpus: f64,
    pub cpus_committed: f64,
    /// The images sessions may ask for that its engine holds.
    pub images: Vec<String>,
    /// Drained: it takes no new sessions, and its sessions are suspended to
    /// resume on other nodes.
    pub draining: bool,
    /// Whether this is the node that answered.
    pub this_node: bool,
}

/// `GET /nodes`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeList {
    /// This process's node (`BRIG_NODE_ID`); absent on a single host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub nodes: Vec<NodeView>,
}

#[utoipa::path(get, path = "/nodes", operation_id = "listNodes", tag = "health", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The nodes sharing this store, by id (none on a single host); for the admin role", body = NodeList)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<NodeList>, ApiError> {
    admin_only(&state, &principal)?;
    let (Some(node), Some(registry)) = (&state.config.node, state.registry()) else {
        return Ok(Json(NodeList {
            node_id: None,
            nodes: Vec::new(),
        }));
    };
    let now = chrono::Utc::now().timestamp_millis();
    let nodes = registry
        .nodes()
        .await?
        .into_iter()
        .map(|(seen, status)| NodeView {
            this_node: seen.node_id == node.id,
            status: match status {
                NodeStatus::Live => "live",
                NodeStatus::Lost => "lost",
            }
            .into(),
            silent_ms: (now - seen.heartbeat_at_ms).max(0),
            node_id: seen.node_id,
            addr: seen.addr,
            sessions: seen.sessions,
            max_sessions: seen.max_sessions,
            runtimes: seen.runtimes,
            memory_bytes: seen.memory_bytes,
            memory_committed: seen.memory_committed,
            cpus: seen.nano_cpus as f64 / 1e9,
            cpus_committed: seen.nano_cpus_committed as f64 / 1e9,
            images: seen.images,
            draining: seen.draining,
        })
        .collect();
    Ok(Json(NodeList {
        node_id: Some(node.id.clone()),
        nodes,
    }))
}

/// `PUT /nodes/{node_id}/drain`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// `true` drains the node; `false` lifts its drain.
    pub drain: bool,
}

/// A node's drain, as set.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DrainView {
    pub node_id: String,
    pub draining: bool,
}

#[utoipa::path(put, path = "/nodes/{node_id}/drain", operation_id = "drainNode", tag = "health", security(("api_key" = []), ("bearer" = [])),
    params(("node_id" = String, Path)),
    request_body = DrainBody,
    responses(
        (status = 200, description = "Drained (within a heartbeat it takes no new sessions and suspends its own, which resume on other nodes), or no longer; for the admin role", body = DrainView),
        (status = 409, description = "snapshots_not_shared: the nodes keep their snapshots apart, so sessions cannot move")
    ))]
pub async fn drain(
    State(state): State<AppState>,
    principal: Principal,
    Path(node_id): Path<String>,
    ApiJson(body): ApiJson<DrainBody>,
) -> Result<Json<DrainView>, ApiError> {
    admin_only(&state, &principal)?;
    let Some(registry) = state.registry() else {
        return Err(ApiError::NotFound("node"));
    };
    if !registry.nodes().await?.iter().any(|(seen, _)| seen.node_id == node_id) {
        return Err(ApiError::NotFound("node"));
    }
    if body.drain && !state.config.snapshots.shared_between_nodes() {
        return Err(ApiError::SnapshotsNotShared);
    }
    registry.set_draining(&node_id, body.drain).await?;
    tracing::info!(node = %node_id, drain = body.drain, by = %principal.id, "node drain set");
    Ok(Json(DrainView {
        node_id,
        draining: body.drain,
    }))
}
