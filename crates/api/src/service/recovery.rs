//! Node mode: the sessions of a lost node are recreated on the live ones.
//! Every node looks each heartbeat; each session goes to whichever node takes
//! its lock first ([`Sessions::adopt`]), which restores its latest snapshot
//! into the new container (one without starts empty). A suspended session
//! stays suspended, for whichever node resumes it. A node takes only the
//! sessions it has room for, as placement would judge it (their runtime and
//! image, a session slot, memory for their limit), and none while drained.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brig_core::config::SandboxConfig;
use brig_core::node::{placement, Announcement, NodeStatus, Placed, Registry, Want};
use brig_core::session::{LostNode, SessionId, SessionRecord, Sessions};
use brig_core::snapshot::SnapshotStore;

/// Sessions one node recreates per pass, so that a pass stays short (the
/// others, and the next pass, take the rest).
const PER_PASS: usize = 32;
/// Tries per session on one node before it leaves the session to the others.
const ATTEMPTS: u32 = 3;
/// Sessions whose failures are remembered (then forgotten all at once).
const MAX_FAILURES_KEPT: usize = 10_000;

fn key(record: &SessionRecord) -> String {
    format!("{}/{}", record.owner.as_str(), record.session_id)
}

pub struct Recovery {
    sessions: Arc<Sessions>,
    registry: Registry,
    snapshots: Arc<SnapshotStore>,
    /// Lost nodes with nothing left to take, by the heartbeat they were lost
    /// at (a node that comes back and is lost again is looked at again).
    done: Mutex<HashMap<String, i64>>,
    /// The configured sandbox, which a session's own options depart from.
    sandbox: SandboxConfig,
    /// Failed recreations here, by session.
    failures: Mutex<HashMap<String, u32>>,
}

/// What a pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub sessions: usize,
    pub from_snapshot: usize,
    pub errors: usize,
}

impl Recovery {
    pub fn new(
        sessions: Arc<Sessions>,
        registry: Registry,
        snapshots: Arc<SnapshotStore>,
        sandbox: SandboxConfig,
    ) -> Self {
        Recovery {
            sessions,
            registry,
            snapshots,
            done: Mutex::new(HashMap::new()),
            sandbox,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// One look at the registry, and the sessions of each lost node.
    pub async fn pass(&self) -> Recovered {
        let mut recovered = Recovered::default();
        let me = self.sessions.node().unwrap_or_default().to_string();
        let Ok(nodes) = self.registry.nodes().await else {
            return recovered;
        };
        // What this node announced: the room it has (none before its first
        // beat, or while drained).
        let Some(mine) = nodes
            .iter()
            .find(|(node, status)| node.node_id == me && *status == NodeStatus::Live && !node.draining)
            .map(|(node, _)| node.clone())
        else {
            return recovered;
        };
        let mut placed = Placed::default();
        let lost: Vec<(String, i64)> = {
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            nodes
                .into_iter()
                .filter(|(node, status)| *status == NodeStatus::Lost && node.node_id != me)
                .filter(|(node, _)| done.get(&node.node_id) != Some(&node.heartbeat_at_ms))
                .map(|(node, _)| (node.node_id, node.heartbeat_at_ms))
                .collect()
        };
        if lost.is_empty() {
            return recovered;
        }
        let Ok(records) = self.sessions.store().list_all().await else {
            recovered.errors += 1;
            return recovered;
        };
        for (node, lost_at) in lost {
            let theirs: Vec<&SessionRecord> = records
                .iter()
                .filter(|record| record.node.as_deref() == Some(node.as_str()) && !record.is_parked())
                .collect();
            if theirs.is_empty() {
                self.done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.clone(), lost_at);
                continue;
            }
            for record in theirs.into_iter().take(PER_PASS) {
                self.recover(record, &node, (&mine, &mut placed), &mut recovered).await;
            }
        }
        recovered
    }

    /// Recreates `record` here if this node (as it announced itself, with
    /// what this pass took on since, counted even when another node won the
    /// session) has room for it.
    async fn recover(
        &self,
        record: &SessionRecord,
        lost: &str,
        (mine, placed): (&Announcement, &mut Placed),
        recovered: &mut Recovered,
    ) {
        let Ok(id) = SessionId::parse(&record.session_id) else {
            return;
        };
        // Left to a node with room for it, and given up on here after a few
        // failures (another node may succeed).
        let want = Want::of(&self.sandbox, &record.options);
        let failed = (self.failures.lock().unwrap_or_else(|p| p.into_inner()))
            .get(&key(record))
            .copied()
            .unwrap_or(0);
        if !placement::fits(mine, placed, &want) || failed >= ATTEMPTS {
            return;
        }
        placed.add(&want);
        let from = LostNode {
            node: lost,
            snapshots: &self.snapshots,
            registry: &self.registry,
        };
        match self.sessions.adopt(&record.owner, &id, &from).await {
            Ok(Some(adopted)) => {
                recovered.sessions += 1;
                let from_snapshot = adopted.restored.is_some();
                recovered.from_snapshot += usize::from(from_snapshot);
                metrics::counter!(brig_core::metrics::SESSIONS_RECOVERED, "from_snapshot" => from_snapshot.to_string())
                    .increment(1);
                tracing::info!(session = %id, lost, snapshot = ?adopted.restored, state = adopted.record.state().as_str(), "took over a lost node's session");
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%err, session = %id, lost, "recreating a lost node's session failed; another pass (or node) tries again");
                recovered.errors += 1;
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                if failures.len() >= MAX_FAILURES_KEPT {
                    failures.clear();
                }
                *failures.entry(key(record)).or_default() += 1;
            }
        }
    }

    /// A pass every `every`, for ever (the caller's shutdown stops it).
    pub async fn run(self, every: Duration) {
        loop {
            let pass = self.pass().await;
            if pass != Recovered::default() {
                tracing::info!(target: "brig::cleanup", sessions = pass.sessions, from_snapshot = pass.from_snapshot, errors = pass.errors, "lost nodes' sessions recreated");
            }
            tokio::time::sleep(every).await;
        }
    }
}
