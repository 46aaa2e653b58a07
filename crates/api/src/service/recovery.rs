//! Node mode: the sessions of a lost node are recreated on the live ones.
//! Every node looks each heartbeat and shares the lost sessions out among
//! the usable nodes as the registry shows them, each to the least loaded
//! with room for it ([`placement::share_out`]): every node computes the same
//! shares, and takes its own. A session still there after [`GRACE`] of this
//! node's passes (its node's view differed, it was full, or failing) goes to
//! whichever node with room takes its lock first. The taking
//! ([`Sessions::adopt`]) restores the session's latest snapshot into the new
//! container (one without starts empty). A suspended session stays
//! suspended, for whichever node resumes it. A node takes only the sessions
//! it has room for, as placement would judge it (their runtime and image, a
//! session slot, memory for their limit), and none while drained.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brig_core::config::SandboxConfig;
use brig_core::node::{placement, Announcement, Lease, NodeStatus, Placed, Registry, Want};
use brig_core::session::{LostNode, SessionError, SessionId, SessionRecord, Sessions};
use brig_core::snapshot::SnapshotStore;

/// Sessions one node recreates per pass, so that a pass stays short (the
/// others, and the next pass, take the rest).
const PER_PASS: usize = 32;
/// Tries per session on one node before it leaves the session to the others.
const ATTEMPTS: u32 = 3;
/// Passes of this node that a lost session is left to the node its share
/// names, before any node with room takes it.
const GRACE: u32 = 2;

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
    /// Passes of this node that saw the session still on a lost node.
    waiting: Mutex<HashMap<String, u32>>,
    /// This node's own hold: it takes nothing over until it has held it for
    /// a loss timeout ([`Lease::settled`]).
    lease: Arc<Lease>,
    /// Each node's last heartbeat as this node saw it change, and when (its
    /// own clock): a node is taken over only once its announcement has
    /// stood still for a loss timeout here too, whatever became of its live
    /// copy (a store restarted from an older state, an eviction).
    observed: Mutex<HashMap<String, (i64, tokio::time::Instant)>>,
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
        lease: Arc<Lease>,
    ) -> Self {
        Recovery {
            lease,
            observed: Mutex::new(HashMap::new()),
            sessions,
            registry,
            snapshots,
            done: Mutex::new(HashMap::new()),
            sandbox,
            failures: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// One look at the registry, and the sessions of each lost node.
    pub async fn pass(&self) -> Recovered {
        let mut recovered = Recovered::default();
        if !self.lease.settled() {
            return recovered;
        }
        let me = self.sessions.node().unwrap_or_default().to_string();
        let Ok(nodes) = self.registry.nodes().await else {
            return recovered;
        };
        // The nodes that take sessions, this one among them (what it
        // announced is the room it has; none before its first beat, or while
        // drained).
        let usable: Vec<&Announcement> = nodes
            .iter()
            .filter(|(node, status)| self.registry.usable(node, *status))
            .map(|(node, _)| node)
            .collect();
        let Some(here) = usable.iter().position(|node| node.node_id == me) else {
            return recovered;
        };
        let mut placed = Placed::default();
        let still = self.standing_still(&nodes);
        let lost: Vec<(String, i64)> = {
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            nodes
                .iter()
                .filter(|(node, status)| *status == NodeStatus::Lost && node.node_id != me)
                .filter(|(node, _)| still.contains(&node.node_id))
                .filter(|(node, _)| done.get(&node.node_id) != Some(&node.heartbeat_at_ms))
                .map(|(node, _)| (node.node_id.clone(), node.heartbeat_at_ms))
                .collect()
        };
        if lost.is_empty() {
            return recovered;
        }
        let Ok(records) = self.sessions.store().list_all().await else {
            recovered.errors += 1;
            return recovered;
        };
        let mut orphans: Vec<&SessionRecord> = Vec::new();
        for (node, lost_at) in lost {
            let theirs = records
                .iter()
                .filter(|record| record.node.as_deref() == Some(node.as_str()) && !record.is_parked());
            let before = orphans.len();
            orphans.extend(theirs);
            if orphans.len() == before {
                self.done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.clone(), lost_at);
            }
        }
        // The same order on every node, for the same shares. A session
        // caught with its workspace in a snapshot (resuming, or suspending
        // past its snapshot) is only parked by its taker: it needs no room,
        // is in no share, and any node may take it.
        orphans.sort_by_cached_key(|record| key(record));
        let (parking, orphans): (Vec<&SessionRecord>, Vec<&SessionRecord>) =
            orphans.into_iter().partition(|record| record.suspended_in().is_some());
        let wants: Vec<Want> = orphans
            .iter()
            .map(|record| Want::of(&self.sandbox, &record.options))
            .collect();
        let shares = placement::share_out(&usable, &wants);
        // Remembered only while a session waits: one taken is forgotten.
        let waiting: HashSet<String> = orphans.iter().map(|record| key(record)).collect();
        let waited = self.waited(&waiting);
        let parked: HashSet<String> = parking.iter().map(|record| key(record)).collect();
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|session, _| waiting.contains(session) || parked.contains(session));
        // This node's share first, then the sessions past their grace (each
        // node starting at its own place among them, so that they do not
        // all queue for the same locks).
        let (mut share, mut overdue) = (Vec::new(), Vec::new());
        for ((record, want), to) in orphans.into_iter().zip(wants).zip(shares) {
            if to == Some(here) {
                share.push((record, Some(want)));
            } else if waited.get(&key(record)).is_some_and(|passes| *passes > GRACE) {
                overdue.push((record, Some(want)));
            }
        }
        if !overdue.is_empty() {
            let start = here * overdue.len() / usable.len();
            overdue.rotate_left(start);
        }
        let parking = parking.into_iter().map(|record| (record, None));
        let mine = usable[here].clone();
        let mut taken = 0;
        for (record, want) in share.into_iter().chain(overdue).chain(parking) {
            // Lapsed midway: this node may be the one cut off.
            if taken == PER_PASS || !self.lease.held() {
                break;
            }
            if self.may_try(record, want.as_ref(), &mine, &placed) {
                taken += 1;
                self.recover(record, want.as_ref(), &mut placed, &mut recovered).await;
            }
        }
        recovered
    }

    /// Notes each node's heartbeat; the nodes whose heartbeat has not
    /// changed for a loss timeout on this node's clock.
    fn standing_still(&self, nodes: &[(Announcement, NodeStatus)]) -> HashSet<String> {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        observed.retain(|id, _| nodes.iter().any(|(node, _)| &node.node_id == id));
        let now = tokio::time::Instant::now();
        let mut still = HashSet::new();
        for (node, _) in nodes {
            let seen = observed
                .entry(node.node_id.clone())
                .or_insert((node.heartbeat_at_ms, now));
            if seen.0 != node.heartbeat_at_ms {
                *seen = (node.heartbeat_at_ms, now);
            }
            if now.duration_since(seen.1) >= self.lease.loss_after() {
                still.insert(node.node_id.clone());
            }
        }
        still
    }

    /// Counts one more pass that saw each of `waiting` still on a lost node
    /// (forgetting the sessions no longer waiting); how many, by session.
    fn waited(&self, waiting: &HashSet<String>) -> HashMap<String, u32> {
        let mut seen = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|session, _| waiting.contains(session));
        for session in waiting {
            *seen.entry(session.clone()).or_default() += 1;
        }
        seen.clone()
    }

    /// Whether this node tries `record` now: it has room for it (as it
    /// announced itself, with what this pass took on since, counted even when
    /// another node won the session; a session only parked needs none), and
    /// it has not failed here [`ATTEMPTS`] times (another node may succeed).
    fn may_try(&self, record: &SessionRecord, want: Option<&Want>, mine: &Announcement, placed: &Placed) -> bool {
        let failed = (self.failures.lock().unwrap_or_else(|p| p.into_inner()))
            .get(&key(record))
            .copied()
            .unwrap_or(0);
        failed < ATTEMPTS && want.is_none_or(|want| placement::fits(mine, placed, want))
    }

    /// Recreates `record` here (`want`: what it takes of this node's room;
    /// `None` for a session only parked).
    async fn recover(
        &self,
        record: &SessionRecord,
        want: Option<&Want>,
        placed: &mut Placed,
        recovered: &mut Recovered,
    ) {
        let Ok(id) = SessionId::parse(&record.session_id) else {
            return;
        };
        if let Some(want) = want {
            placed.add(want);
        }
        let lost = record.node.as_deref().unwrap_or_default();
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
            // This node's own room refused it (a burst of new sessions): not
            // the session's failure; the next pass tries again.
            Err(SessionError::CapacityExhausted) => {}
            Err(err) => {
                tracing::warn!(%err, session = %id, lost, "recreating a lost node's session failed; another pass (or node) tries again");
                recovered.errors += 1;
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
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

#[cfg(test)]
mod tests {
    use brig_core::config::{Quota, SessionExpiry, SnapshotConfig, SnapshotLocation};
    use brig_core::runtime::fake::FakeRuntime;
    use brig_core::session::Owner;
    use brig_core::store::{MemoryStore, SessionStore};

    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    fn node(id: &str, heartbeat_at_ms: i64, sessions: u64) -> Announcement {
        Announcement {
            node_id: id.into(),
            addr: format!("http://{id}:8000"),
            heartbeat_at_ms,
            engine_answered_at_ms: heartbeat_at_ms,
            sessions,
            max_sessions: 10,
            runtimes: vec![SandboxConfig::default().runtime],
            ..Announcement::default()
        }
    }

    struct Setup {
        store: Arc<MemoryStore>,
        registry: Registry,
        a: Recovery,
        b: Recovery,
        /// a's and b's (tokio's clock, paused).
        lease: Arc<Lease>,
        dir: std::path::PathBuf,
    }

    impl Setup {
        /// `seconds` pass, the nodes beating every second.
        async fn time_passes(&self, seconds: u64) {
            for _ in 0..seconds {
                tokio::time::advance(Duration::from_secs(1)).await;
                self.lease.renewed(tokio::time::Instant::now());
            }
        }
    }

    const LOSS: Duration = Duration::from_secs(4);

    /// Announces `node`: live, or (`lost`) only reported.
    async fn announce(registry: &Registry, node: &Announcement, lost: bool) {
        let live_for = if lost { Duration::ZERO } else { LOSS };
        registry.announce(node, live_for).await.unwrap();
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn alice() -> Owner {
        Owner::of_principal("alice")
    }

    /// Two live nodes, a (two sessions already) and b (none), and c, lost
    /// with four sessions, its announcement seen standing still by a and b
    /// for a loss timeout.
    async fn setup(name: &str) -> Setup {
        let store = Arc::new(MemoryStore::new());
        let runtime = Arc::new(FakeRuntime::new());
        let registry = Registry::new(store.clone(), LOSS);
        let now = chrono::Utc::now().timestamp_millis();
        for (announced, lost) in [
            (node("a", now, 2), false),
            (node("b", now, 0), false),
            (node("c", now - 60_000, 4), true),
        ] {
            announce(&registry, &announced, lost).await;
        }
        for i in 0..4 {
            store
                .replace(&on_c(&format!("s{i}"), Default::default()), TTL)
                .await
                .unwrap();
        }
        let dir = std::env::temp_dir().join(format!("brig-recovery-{name}-{}", std::process::id()));
        let snapshots = Arc::new(SnapshotStore::new(SnapshotConfig {
            location: SnapshotLocation::Dir(dir.clone()),
            quota_bytes: 1 << 20,
            quota_count: 1,
            expiry: SessionExpiry::Delete,
            suspended_retention: TTL,
            sweep_after: TTL,
            dir_shared: false,
        }));
        let lease = Arc::new(Lease::new(Duration::from_secs(1), LOSS));
        lease.renewed(tokio::time::Instant::now());
        let recovery = |id: &str| {
            let quota = Quota {
                per_owner: 100,
                total: 100,
            };
            let sessions = Sessions::new(store.clone(), runtime.clone(), TTL, quota)
                .with_node(Some((id.to_string(), format!("http://{id}:8000"))));
            Recovery::new(
                Arc::new(sessions),
                registry.clone(),
                snapshots.clone(),
                SandboxConfig::default(),
                lease.clone(),
            )
        };
        let (a, b) = (recovery("a"), recovery("b"));
        let setup = Setup {
            store,
            registry,
            a,
            b,
            lease,
            dir,
        };
        setup.time_passes(5).await;
        assert!(setup.lease.settled());
        // Their first look: c has stood still for no time yet.
        assert_eq!(setup.a.pass().await, Recovered::default());
        assert_eq!(setup.b.pass().await, Recovered::default());
        assert_eq!(held(&setup.store).await, (0, 0, 4));
        setup.time_passes(5).await;
        setup
    }

    /// A session of alice's on c.
    fn on_c(id: &str, options: brig_core::sandbox::SandboxOptions) -> SessionRecord {
        let now = chrono::Utc::now().timestamp_millis();
        SessionRecord {
            owner: alice(),
            session_id: id.into(),
            container: Some(format!("gone-{id}")),
            created_at_ms: now,
            expires_at_ms: now,
            options,
            suspended: None,
            ttl_ms: None,
            node: Some("c".into()),
            node_addr: Some("http://c:8000".into()),
            recreated: None,
        }
    }

    /// How many of alice's sessions each node holds.
    async fn held(store: &MemoryStore) -> (usize, usize, usize) {
        let nodes: Vec<Option<String>> = store
            .list(&alice())
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.node)
            .collect();
        let on = |id: &str| nodes.iter().filter(|node| node.as_deref() == Some(id)).count();
        (on("a"), on("b"), on("c"))
    }

    /// A node that has not held its lease for a loss timeout (just started,
    /// or back after the store was out of reach, when every node's live copy
    /// is gone) takes nothing over: the others may be about to beat.
    #[tokio::test(start_paused = true)]
    async fn a_node_takes_nothing_over_before_it_has_beaten_for_a_loss_timeout() {
        let fleet = setup("unsettled").await;
        let lease = Lease::new(Duration::from_secs(1), Duration::from_secs(4));
        lease.renewed(tokio::time::Instant::now());
        assert!(lease.held() && !lease.settled());
        let fresh = Recovery::new(
            fleet.a.sessions.clone(),
            fleet.registry.clone(),
            fleet.a.snapshots.clone(),
            SandboxConfig::default(),
            Arc::new(lease),
        );
        // It has seen c stand still as long as a has: only its lease holds it back.
        *fresh.observed.lock().unwrap() = fleet.a.observed.lock().unwrap().clone();
        assert_eq!(fresh.pass().await, Recovered::default());
        assert_eq!(held(&fleet.store).await, (0, 0, 4));
        assert_eq!(fleet.a.pass().await.sessions, 1, "the same node, settled");
    }

    /// A node without a live copy whose announcement still changes (it
    /// beats: the store lost its copy, say by an eviction or a restart from
    /// an older state) is not taken over until its announcement has stood
    /// still for a loss timeout.
    #[tokio::test(start_paused = true)]
    async fn a_node_whose_beats_still_change_its_announcement_is_not_taken_over() {
        let fleet = setup("beating").await;
        let now = chrono::Utc::now().timestamp_millis();
        announce(&fleet.registry, &node("c", now, 4), true).await;
        assert_eq!(fleet.a.pass().await, Recovered::default());
        fleet.time_passes(3).await;
        assert_eq!(fleet.a.pass().await, Recovered::default());
        fleet.time_passes(2).await;
        assert_eq!(
            fleet.a.pass().await.sessions,
            1,
            "still for a loss timeout: a takes its share"
        );
    }

    /// a's pass takes only its share, b's the rest, though a looked first
    /// and had room for all four (first come, a took them all).
    #[tokio::test(start_paused = true)]
    async fn the_live_nodes_share_a_lost_nodes_sessions_by_headroom() {
        let fleet = setup("share").await;
        assert_eq!(fleet.a.pass().await.sessions, 1, "a at 2, b at 0: b's share is three");
        // a's next heartbeat counts what it took; then b's pass.
        let now = chrono::Utc::now().timestamp_millis();
        announce(&fleet.registry, &node("a", now, 3), false).await;
        assert_eq!(fleet.b.pass().await.sessions, 3);
        assert_eq!(held(&fleet.store).await, (1, 3, 0));
    }

    /// b never takes its share (a view of its own, full, failing): after
    /// GRACE passes of a's, a takes what is left.
    #[tokio::test(start_paused = true)]
    async fn a_share_left_untaken_goes_to_any_node_with_room_after_the_grace() {
        let fleet = setup("grace").await;
        for _ in 0..GRACE {
            fleet.a.pass().await;
        }
        let (on_a, _, on_c) = held(&fleet.store).await;
        assert!(on_c >= 2 && on_a + on_c == 4, "b's share waits for b: {on_a} on a");
        assert_eq!(fleet.a.pass().await.sessions, on_c);
        assert_eq!(held(&fleet.store).await, (4, 0, 0));
    }

    /// Sessions no node can take (a runtime none offers) do not use up a
    /// pass's budget: the ones that fit, past their grace, are taken.
    #[tokio::test(start_paused = true)]
    async fn sessions_no_node_can_take_do_not_hold_up_the_others() {
        let fleet = setup("budget").await;
        let runsc = brig_core::sandbox::SandboxOptions {
            runtime: Some("runsc".into()),
            ..Default::default()
        };
        for i in 0..(PER_PASS + 8) {
            let record = on_c(&format!("r{i:02}"), runsc.clone());
            fleet.store.replace(&record, TTL).await.unwrap();
        }
        for _ in 0..=GRACE {
            fleet.a.pass().await;
        }
        let (on_a, on_b, on_c) = held(&fleet.store).await;
        assert_eq!((on_a, on_b, on_c), (4, 0, PER_PASS + 8));
    }
}
