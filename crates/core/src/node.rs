//! Nodes: brig processes that each own one engine and share one store. Each
//! node announces itself (its address, its sessions, its capacity, its
//! runtimes) every heartbeat; a node silent for `NODE_LOSS_SECONDS` is lost.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::runtime::SandboxRuntime;
use crate::store::{SessionStore, StoreError};

/// The node ids of the latest announcements (read back deduplicated).
const INDEX: &str = "nodes";
/// Announcements the index keeps (the oldest fall off first).
const MAX_NODES: usize = 256;
/// How long a node's announcement outlives its last heartbeat, so that a lost
/// node is still reported as lost (not forgotten) for a while.
const REPORTED_FOR: u32 = 60;

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub node_id: String,
    pub addr: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    /// Sandboxes of sessions on its engine now (spares not counted).
    pub sessions: u64,
    /// Sessions it may hold in all (`MAX_SESSIONS`).
    pub max_sessions: u64,
    /// The OCI runtimes it offers sessions (`CONTAINER_RUNTIME`, `ALLOWED_RUNTIMES`).
    pub runtimes: Vec<String>,
}

/// A node as the registry sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Live,
    /// Silent for longer than the loss timeout.
    Lost,
}

/// The shared list of nodes.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn SessionStore>,
    loss_after: Duration,
}

fn key(node_id: &str) -> String {
    format!("node:{node_id}")
}

impl Registry {
    pub fn new(store: Arc<dyn SessionStore>, loss_after: Duration) -> Self {
        Registry { store, loss_after }
    }

    /// Records `me` as alive now, in the index too: the index holds the
    /// latest `MAX_NODES` announcements, so it lives while any node does, is
    /// rebuilt by the next beats if the store lost it, and a lost node drops
    /// out of it once that many beats of the others have come since its last.
    pub async fn announce(&self, me: &Announcement) -> Result<(), StoreError> {
        let json = serde_json::to_string(me).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let kept = self.loss_after * REPORTED_FOR;
        self.store.put_value(&key(&me.node_id), &json, kept).await?;
        self.store.push_bounded(INDEX, &me.node_id, MAX_NODES, kept).await
    }

    /// Every node still reported, with its status; by id.
    pub async fn nodes(&self) -> Result<Vec<(Announcement, NodeStatus)>, StoreError> {
        let mut ids = self.store.list_items(INDEX).await?;
        ids.sort();
        ids.dedup();
        let now = Utc::now().timestamp_millis();
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(raw) = self.store.get_value(&key(&id)).await? else {
                continue;
            };
            let Ok(node) = serde_json::from_str::<Announcement>(&raw) else {
                continue;
            };
            let status = self.status_at(&node, now);
            nodes.push((node, status));
        }
        Ok(nodes)
    }

    fn status_at(&self, node: &Announcement, now_ms: i64) -> NodeStatus {
        if now_ms - node.heartbeat_at_ms > self.loss_after.as_millis() as i64 {
            NodeStatus::Lost
        } else {
            NodeStatus::Live
        }
    }
}

/// This node's heartbeat: what it announces, made fresh each beat.
pub struct Heartbeat {
    pub registry: Registry,
    pub config: NodeConfig,
    pub runtime: Arc<dyn SandboxRuntime>,
    pub max_sessions: u64,
    pub runtimes: Vec<String>,
    pub started_at_ms: i64,
}

impl Heartbeat {
    /// One beat: counts its sandboxes and announces itself.
    pub async fn beat(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let sandboxes = self.runtime.list().await?;
        let sessions = sandboxes.iter().filter(|s| !self.runtime.is_spare(s)).count() as u64;
        let me = Announcement {
            node_id: self.config.id.clone(),
            addr: self.config.addr.clone(),
            started_at_ms: self.started_at_ms,
            heartbeat_at_ms: Utc::now().timestamp_millis(),
            sessions,
            max_sessions: self.max_sessions,
            runtimes: self.runtimes.clone(),
        };
        self.registry.announce(&me).await?;
        Ok(())
    }

    /// Beats every `NODE_HEARTBEAT_SECONDS`, for ever (the caller stops the
    /// task); a failed beat is logged, and the node is reported lost only if
    /// beats keep failing.
    pub async fn run(self) {
        loop {
            if let Err(err) = self.beat().await {
                tracing::warn!(node = %self.config.id, error = %err, "node heartbeat failed");
            }
            tokio::time::sleep(self.config.heartbeat).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn announcement(id: &str, heartbeat_at_ms: i64) -> Announcement {
        Announcement {
            node_id: id.into(),
            addr: format!("http://{id}:8000"),
            started_at_ms: 0,
            heartbeat_at_ms,
            sessions: 1,
            max_sessions: 100,
            runtimes: vec!["runc".into()],
        }
    }

    #[tokio::test]
    async fn nodes_are_listed_once_each_and_lost_once_silent_past_the_timeout() {
        let registry = Registry::new(Arc::new(MemoryStore::new()), Duration::from_secs(10));
        let now = Utc::now().timestamp_millis();
        registry.announce(&announcement("b", now)).await.unwrap();
        registry.announce(&announcement("a", now - 11_000)).await.unwrap();
        registry.announce(&announcement("b", now)).await.unwrap();
        let nodes = registry.nodes().await.unwrap();
        let seen: Vec<(&str, NodeStatus)> = nodes.iter().map(|(n, s)| (n.node_id.as_str(), *s)).collect();
        assert_eq!(seen, vec![("a", NodeStatus::Lost), ("b", NodeStatus::Live)]);
        assert_eq!(nodes[1].0.addr, "http://b:8000");
    }
}
