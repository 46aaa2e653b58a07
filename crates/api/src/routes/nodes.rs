//! `GET /nodes`: the nodes sharing this store (operators only).

use axum::extract::State;
use axum::Json;
use brig_core::node::{NodeStatus, Registry};
use serde::Serialize;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

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
    if !state.rules.current().has_role(principal.caller(), "admin") {
        return Err(ApiError::AdminOnly);
    }
    let Some(node) = &state.config.node else {
        return Ok(Json(NodeList {
            node_id: None,
            nodes: Vec::new(),
        }));
    };
    let registry = Registry::new(state.sessions.store().clone(), node.loss_after);
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
        })
        .collect();
    Ok(Json(NodeList {
        node_id: Some(node.id.clone()),
        nodes,
    }))
}
