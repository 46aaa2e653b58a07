//! The session flow against the in-process fake runtime and the memory store,
//! under paused tokio time: failures that are slow or hard to provoke against
//! a real engine (a lost container, a wedged agent, another replica's lease,
//! racing creations, cancellation). The same paths against Docker and Redis
//! are in the end-to-end suite.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::runtime::fake::{FakeRuntime, Path};
use crate::store::MemoryStore;

const QUOTA: Quota = Quota {
    per_owner: 3,
    total: 10,
};

/// One replica: its own `Sessions` (and so its own lease holder id) over a
/// shared store and runtime.
fn replica(store: &Arc<MemoryStore>, runtime: &Arc<FakeRuntime>) -> Sessions {
    Sessions::new(store.clone(), runtime.clone(), Duration::from_secs(600), QUOTA)
}

fn setup() -> (Arc<MemoryStore>, Arc<FakeRuntime>, Sessions) {
    let (store, runtime) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()));
    let sessions = replica(&store, &runtime);
    (store, runtime, sessions)
}

fn alice() -> Owner {
    Owner::of_principal("alice")
}

fn sid(id: &str) -> SessionId {
    SessionId::parse(id).unwrap()
}

fn echo(text: &str) -> ExecRequest {
    ExecRequest::new(["echo", text])
}

#[tokio::test(start_paused = true)]
async fn the_first_command_creates_the_session_and_the_next_reuses_it() {
    let (_, runtime, sessions) = setup();
    let first = sessions.execute(&alice(), &sid("s"), echo("one")).await.unwrap();
    assert!(first.created);
    assert_eq!(first.outcome.stdout, b"one\n");
    let second = sessions.execute(&alice(), &sid("s"), echo("two")).await.unwrap();
    assert!(!second.created);
    assert_eq!(
        second.record.container.clone().unwrap(),
        first.record.container.clone().unwrap()
    );
    assert_eq!(runtime.creations(), 1);
}

/// A creator's answer says when the session expires (it once said "now").
#[tokio::test(start_paused = true)]
async fn a_new_session_expires_one_ttl_after_its_creation() {
    let (_, _, sessions) = setup();
    let (record, opened) = sessions.open(&alice(), &sid("s")).await.unwrap();
    assert_eq!(opened, Opened::Created);
    let ttl = record.expires_at_ms - record.created_at_ms;
    assert!((599_000..=600_000).contains(&ttl), "{ttl} ms");
}

#[tokio::test(start_paused = true)]
async fn a_lost_container_is_replaced_and_the_command_runs_in_the_new_one() {
    let (_, runtime, sessions) = setup();
    let first = sessions.execute(&alice(), &sid("s"), echo("one")).await.unwrap();
    runtime.lose(&first.record.container.clone().unwrap());
    let again = sessions.execute(&alice(), &sid("s"), echo("two")).await.unwrap();
    assert!(again.created, "the lost container should have been recreated");
    assert_ne!(
        again.record.container.clone().unwrap(),
        first.record.container.clone().unwrap()
    );
    assert_eq!(again.outcome.stdout, b"two\n");
    assert_eq!(
        sessions.get(&alice(), &sid("s")).await.unwrap().container.unwrap(),
        again.record.container.clone().unwrap()
    );
}

/// The command's last store call runs after the answer, and still runs: the
/// container is not left marked busy until the command's deadline.
#[tokio::test(start_paused = true)]
async fn after_the_answer_the_container_is_no_longer_marked_busy() {
    let (store, _, sessions) = setup();
    let done = sessions.execute(&alice(), &sid("s"), echo("x")).await.unwrap();
    let container = done.record.container.clone().unwrap();
    // A second later (paused time), the command's mark would still stand for
    // its deadline (the timeout and 10 s) had the last call not run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!store.command_running(&container).await.unwrap(), "still marked busy");
}

#[tokio::test(start_paused = true)]
async fn a_wedged_agent_costs_its_container_and_the_next_command_gets_a_new_one_like_it() {
    let (store, runtime, sessions) = setup();
    let options = SandboxOptions {
        memory_bytes: Some(300 << 20),
        ..Default::default()
    };
    sessions.open_with(&alice(), &sid("s"), &options).await.unwrap();
    let first = sessions.execute(&alice(), &sid("s"), echo("one")).await.unwrap();
    runtime.wedge(&first.record.container.clone().unwrap());
    let request = echo("stuck").timeout(Duration::from_secs(2));
    match sessions.execute(&alice(), &sid("s"), request).await {
        Err(SessionError::Runtime(RuntimeError::AgentUnresponsive)) => {}
        other => panic!("{other:?}"),
    }
    let wedged = first.record.container.clone().unwrap();
    assert!(
        !runtime.sandbox_ids().contains(&wedged),
        "the wedged container is still there"
    );
    // A command that failed is not left counted as running (the reaper would
    // treat the container as busy until its deadline).
    assert!(!store.command_running(&wedged).await.unwrap());
    let next = sessions.execute(&alice(), &sid("s"), echo("fresh")).await.unwrap();
    assert!(next.created);
    assert_ne!(next.record.container.as_deref(), Some(wedged.as_str()));
    assert_eq!(next.outcome.stdout, b"fresh\n");
    // The same session: its own limits, not the defaults.
    assert_eq!(next.record.options, options);
    assert_eq!(sessions.get(&alice(), &sid("s")).await.unwrap().options, options);
}

#[tokio::test(start_paused = true)]
async fn a_channel_leased_by_another_replica_is_reached_through_the_engines_exec() {
    let (store, runtime, first) = setup();
    let second = replica(&store, &runtime);
    let created = first.execute(&alice(), &sid("s"), echo("a")).await.unwrap();
    let container = created.record.container.clone().unwrap();
    second.execute(&alice(), &sid("s"), echo("b")).await.unwrap();
    first.execute(&alice(), &sid("s"), echo("c")).await.unwrap();
    assert_eq!(
        runtime.commands(),
        vec![
            (container.clone(), Path::Channel),
            (container.clone(), Path::Detached),
            (container, Path::Channel),
        ]
    );
}

/// The retry after a lost container used to call the channel directly: when
/// another replica re-created the container (and holds its lease), this one
/// became a second writer on that channel.
#[tokio::test(start_paused = true)]
async fn the_retry_after_a_lost_container_respects_the_new_containers_lease() {
    let store = Arc::new(MemoryStore::new());
    let runtime = Arc::new(FakeRuntime::with_create_delay(Duration::from_millis(210)));
    let (one, two) = (replica(&store, &runtime), replica(&store, &runtime));
    let lost = one.execute(&alice(), &sid("s"), echo("a")).await.unwrap();
    runtime.lose(&lost.record.container.clone().unwrap());
    // Both replicas find the lost container; one of them re-creates it.
    let (owner, id) = (alice(), sid("s"));
    let (a, b) = tokio::join!(
        one.execute(&owner, &id, echo("one")),
        two.execute(&owner, &id, echo("two")),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.record.container.clone().unwrap(), b.record.container.clone().unwrap());
    let replacement = a.record.container.clone().unwrap();
    let writers: Vec<Path> = runtime
        .commands()
        .into_iter()
        .filter(|(id, _)| *id == replacement)
        .map(|(_, path)| path)
        .collect();
    assert_eq!(writers.len(), 2, "{writers:?}");
    assert_eq!(
        writers.iter().filter(|path| **path == Path::Channel).count(),
        1,
        "two replicas wrote to one channel: {writers:?}"
    );
    assert_eq!(runtime.creations(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_first_commands_share_one_container() {
    let store = Arc::new(MemoryStore::new());
    let runtime = Arc::new(FakeRuntime::with_create_delay(Duration::from_millis(500)));
    let sessions = Arc::new(replica(&store, &runtime));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let sessions = sessions.clone();
            tokio::spawn(async move { sessions.execute(&alice(), &sid("race"), echo(&i.to_string())).await })
        })
        .collect();
    let mut containers = Vec::new();
    let mut created = 0;
    for task in tasks {
        let executed = task.await.unwrap().unwrap();
        created += usize::from(executed.created);
        containers.push(executed.record.container.clone().unwrap());
    }
    containers.dedup();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!((created, runtime.creations()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_a_running_command_with_cancelled() {
    let (_, _, sessions) = setup();
    let cancel = CancellationToken::new();
    let hooks = ExecHooks {
        cancel: Some(cancel.clone()),
        output: None,
    };
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
    });
    let request = ExecRequest::new(["sleep", "60"]).timeout(Duration::from_secs(120));
    let started = tokio::time::Instant::now();
    let executed = sessions
        .execute_with(&alice(), &sid("s"), request, hooks)
        .await
        .unwrap();
    canceller.await.unwrap();
    assert!(executed.outcome.cancelled && !executed.outcome.timed_out);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn the_owner_quota_counts_sessions_and_deleting_one_frees_a_place() {
    let (_, runtime, sessions) = setup();
    for i in 0..QUOTA.per_owner {
        sessions.open(&alice(), &sid(&format!("s{i}"))).await.unwrap();
    }
    assert!(matches!(
        sessions.open(&alice(), &sid("one-too-many")).await,
        Err(SessionError::OwnerQuotaExceeded { .. })
    ));
    // Another owner is not affected.
    sessions.open(&Owner::of_principal("bob"), &sid("s0")).await.unwrap();
    sessions.delete(&alice(), &sid("s0")).await.unwrap();
    sessions.open(&alice(), &sid("one-too-many")).await.unwrap();
    assert_eq!(runtime.sandbox_ids().len(), QUOTA.per_owner as usize + 1);
}

#[tokio::test(start_paused = true)]
async fn files_need_an_existing_session() {
    let (_, _, sessions) = setup();
    let write = FileRequest::Write {
        path: "a".into(),
        data: b"x".to_vec(),
    };
    assert!(matches!(
        sessions.file(&alice(), &sid("none"), write.clone()).await,
        Err(SessionError::NotFound)
    ));
    sessions.open(&alice(), &sid("s")).await.unwrap();
    sessions.file(&alice(), &sid("s"), write).await.unwrap();
    let read = sessions
        .file(&alice(), &sid("s"), FileRequest::Read { path: "a".into() })
        .await
        .unwrap();
    assert_eq!(read, FileReply::Data(b"x".to_vec()));
}

/// Suspend and resume over the fake's workspace transfers and a snapshot
/// directory of the test's own.
mod suspension {
    use super::*;
    use crate::session::record::Suspension;
    use crate::snapshot::SnapshotStore;
    use brig_protocol::{FileReply, FileRequest};

    struct Shelf {
        dir: std::path::PathBuf,
        store: SnapshotStore,
    }

    impl Drop for Shelf {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn shelf() -> Shelf {
        let dir = std::env::temp_dir().join(format!("brig-suspend-{}", hex::encode(rand::random::<[u8; 8]>())));
        let store = SnapshotStore::new(crate::config::SnapshotConfig {
            location: crate::config::SnapshotLocation::Dir(dir.clone()),
            quota_bytes: 1 << 20,
            quota_count: 1,
            expiry: crate::config::SessionExpiry::Suspend,
            suspended_retention: RETENTION,
            sweep_after: Duration::from_secs(600),
            dir_shared: false,
        });
        Shelf { dir, store }
    }

    const RETENTION: Duration = Duration::from_secs(7 * 86400);

    fn suspending(store: &Arc<MemoryStore>, runtime: &Arc<FakeRuntime>, shelf: &Shelf) -> Sessions {
        replica(store, runtime).with_suspension(shelf.store.for_suspended(), RETENTION, Duration::from_secs(600))
    }

    async fn write(sessions: &Sessions, id: &str, path: &str, data: &[u8]) {
        let request = FileRequest::Write {
            path: path.into(),
            data: data.to_vec(),
        };
        sessions.file(&alice(), &sid(id), request).await.unwrap();
    }

    async fn read(sessions: &Sessions, id: &str, path: &str) -> Vec<u8> {
        let request = FileRequest::Read { path: path.into() };
        match sessions.file(&alice(), &sid(id), request).await.unwrap() {
            FileReply::Data(data) => data,
            other => panic!("{other:?}"),
        }
    }

    async fn kept(shelf: &Shelf) -> usize {
        shelf.store.for_suspended().list(&alice()).await.unwrap().len()
    }

    #[tokio::test]
    async fn a_suspended_session_keeps_its_files_and_resumes_on_its_next_command() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = suspending(&store, &runtime, &shelf);
        let first = sessions.execute(&alice(), &sid("s"), echo("a")).await.unwrap();
        write(&sessions, "s", "notes.txt", b"kept").await;
        let parked = sessions.suspend(&alice(), &sid("s")).await.unwrap();
        assert_eq!(parked.state(), SessionState::Suspended);
        assert!(parked.expires_at_ms > Utc::now().timestamp_millis() + 6 * 86_400_000);
        // Its container went; its workspace waits in a snapshot of its own,
        // outside the owner's snapshots (and their quota of one).
        let old = first.record.container.clone().unwrap();
        assert!(runtime.inspect(&old).await.unwrap().is_none());
        assert_eq!(kept(&shelf).await, 1);
        assert!(shelf.store.list(&alice()).await.unwrap().is_empty());
        // Suspending again changes nothing.
        let again = sessions.suspend(&alice(), &sid("s")).await.unwrap();
        assert_eq!(again.suspended, parked.suspended);
        let next = sessions.execute(&alice(), &sid("s"), echo("b")).await.unwrap();
        assert!(next.resumed && !next.created, "{next:?}");
        assert_eq!(next.outcome.stdout, b"b\n");
        assert_ne!(next.record.container, first.record.container);
        assert_eq!(next.record.state(), SessionState::Active);
        assert_eq!(read(&sessions, "s", "notes.txt").await, b"kept");
        // Restored: the snapshot is no longer kept.
        assert_eq!(kept(&shelf).await, 0);
        let again = sessions.execute(&alice(), &sid("s"), echo("c")).await.unwrap();
        assert!(!again.resumed);
    }

    #[tokio::test]
    async fn a_file_operation_resumes_too_and_deleting_a_suspended_session_drops_its_snapshot() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = suspending(&store, &runtime, &shelf);
        sessions.open(&alice(), &sid("s")).await.unwrap();
        write(&sessions, "s", "a", b"1").await;
        sessions.suspend(&alice(), &sid("s")).await.unwrap();
        assert_eq!(read(&sessions, "s", "a").await, b"1");
        sessions.suspend(&alice(), &sid("s")).await.unwrap();
        assert_eq!(kept(&shelf).await, 1);
        sessions.delete(&alice(), &sid("s")).await.unwrap();
        assert_eq!(kept(&shelf).await, 0);
        assert!(matches!(
            sessions.get(&alice(), &sid("s")).await,
            Err(SessionError::NotFound)
        ));
        assert!(runtime.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_session_running_a_command_is_not_suspended_under_it() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = Arc::new(suspending(&store, &runtime, &shelf));
        sessions.open(&alice(), &sid("s")).await.unwrap();
        let running = {
            let sessions = sessions.clone();
            tokio::spawn(async move {
                let mut sleep = ExecRequest::new(["sleep", "3"]);
                sleep.timeout = Duration::from_secs(5);
                sessions.execute(&alice(), &sid("s"), sleep).await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(matches!(
            sessions.suspend(&alice(), &sid("s")).await,
            Err(SessionError::InUse)
        ));
        let record = sessions.get(&alice(), &sid("s")).await.unwrap();
        assert_eq!(record.state(), SessionState::Active);
        assert_eq!(running.await.unwrap().unwrap().outcome.exit_code, 0);
        assert_eq!(kept(&shelf).await, 0);
        sessions.suspend(&alice(), &sid("s")).await.unwrap();
    }

    /// A process killed mid-suspend or mid-resume leaves a record that says
    /// where the workspace is; the next use goes on from there.
    #[tokio::test]
    async fn a_suspend_or_resume_cut_short_loses_nothing() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = suspending(&store, &runtime, &shelf);
        let (record, _) = sessions.open(&alice(), &sid("s")).await.unwrap();
        write(&sessions, "s", "f", b"one").await;
        // Killed while storing the workspace: the container still holds it.
        let suspending = SessionRecord {
            suspended: Some(Suspension {
                snapshot_id: None,
                since_ms: 0,
                resuming: false,
            }),
            ..record.clone()
        };
        store.replace(&suspending, Duration::from_secs(60)).await.unwrap();
        let next = sessions.execute(&alice(), &sid("s"), echo("x")).await.unwrap();
        assert!(!next.resumed && !next.created);
        assert_eq!(next.record.container, record.container);
        assert_eq!(read(&sessions, "s", "f").await, b"one");
        // Killed while restoring: the snapshot holds it, the new container
        // (here: the old one, still empty of truth) is replaced.
        let parked = sessions.suspend(&alice(), &sid("s")).await.unwrap();
        let (stale, _) = runtime
            .create(&CreateSandbox {
                owner: alice().as_str().into(),
                session_id: "s".into(),
                options: Default::default(),
                store: store.identity().await.unwrap(),
            })
            .await
            .unwrap();
        let resuming = SessionRecord {
            container: Some(stale.id.clone()),
            ..parked
        };
        store.replace(&resuming, Duration::from_secs(60)).await.unwrap();
        let next = sessions.execute(&alice(), &sid("s"), echo("y")).await.unwrap();
        assert!(next.resumed);
        assert_ne!(next.record.container.as_deref(), Some(stale.id.as_str()));
        assert!(runtime.inspect(&stale.id).await.unwrap().is_none());
        assert_eq!(read(&sessions, "s", "f").await, b"one");
    }

    #[tokio::test]
    async fn a_resume_that_fails_leaves_the_session_suspended() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = suspending(&store, &runtime, &shelf);
        sessions.open(&alice(), &sid("s")).await.unwrap();
        let parked = sessions.suspend(&alice(), &sid("s")).await.unwrap();
        let snapshot = parked.suspended_in().unwrap().to_string();
        // The archive is damaged: its checksum fails while it is restored.
        let tar = shelf
            .dir
            .join(".suspended")
            .join(alice().as_str())
            .join(format!("{snapshot}.tar"));
        let mut bytes = std::fs::read(&tar).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&tar, bytes).unwrap();
        let err = sessions.execute(&alice(), &sid("s"), echo("x")).await.unwrap_err();
        assert!(
            matches!(err, SessionError::ResumeFailed(ref m) if m.contains("restored")),
            "{err:?}"
        );
        let record = sessions.get(&alice(), &sid("s")).await.unwrap();
        assert_eq!(record.state(), SessionState::Suspended);
        assert!(
            (record.expires_at_ms - parked.expires_at_ms).abs() < 1000,
            "its retention is kept"
        );
        assert!(
            runtime.list().await.unwrap().is_empty(),
            "the failed resume's container stays"
        );
    }

    #[tokio::test]
    async fn expiring_sessions_are_suspended_and_unclaimed_snapshots_swept() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = suspending(&store, &runtime, &shelf);
        sessions.open(&alice(), &sid("a")).await.unwrap();
        sessions.open(&alice(), &sid("b")).await.unwrap();
        // Nothing expires within a minute (the TTL is ten).
        assert_eq!(sessions.suspend_expiring(Duration::from_secs(60)).await.suspended, 0);
        let sweep = sessions.suspend_expiring(Duration::from_secs(601)).await;
        assert_eq!(sweep.suspended, 2, "{sweep:?}");
        assert!(runtime.list().await.unwrap().is_empty());
        // A snapshot no record names (a suspend killed before its record).
        let orphan = shelf.store.for_suspended();
        orphan
            .write(
                &alice(),
                "gone",
                futures_util::stream::iter([Ok::<_, String>(bytes::Bytes::from("x"))]),
            )
            .await
            .unwrap();
        assert_eq!(kept(&shelf).await, 3);
        // Young, it may be a suspend in flight: kept.
        assert_eq!(sessions.sweep_suspended().await.removed, 0);
        let eager = replica(&store, &runtime).with_suspension(shelf.store.for_suspended(), RETENTION, Duration::ZERO);
        assert_eq!(eager.sweep_suspended().await.removed, 1);
        assert_eq!(kept(&shelf).await, 2);
        for id in ["a", "b"] {
            assert_eq!(
                sessions.get(&alice(), &sid(id)).await.unwrap().state(),
                SessionState::Suspended
            );
        }
    }

    #[tokio::test]
    async fn aged_containers_are_recycled_through_suspend_and_resume() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = suspending(&store, &runtime, &shelf);
        let (first, _) = sessions.open(&alice(), &sid("s")).await.unwrap();
        write(&sessions, "s", "f", b"kept").await;
        // Young: left alone.
        let young = sessions
            .recycle_aged(Duration::from_secs(900), Duration::from_secs(60))
            .await;
        assert_eq!(young.suspended, 0);
        // At the age limit (here: any age) it is suspended, kept only until
        // it would have expired (not a week), and resumed in a new container.
        let sweep = sessions
            .recycle_aged(Duration::from_secs(60), Duration::from_secs(60))
            .await;
        assert_eq!(sweep.suspended, 1, "{sweep:?}");
        let parked = sessions.get(&alice(), &sid("s")).await.unwrap();
        assert_eq!(parked.state(), SessionState::Suspended);
        assert!(
            (parked.expires_at_ms - first.expires_at_ms).abs() < 2000,
            "{parked:?} {first:?}"
        );
        let next = sessions.execute(&alice(), &sid("s"), echo("x")).await.unwrap();
        assert!(next.resumed);
        assert_ne!(next.record.container, first.container);
        assert_eq!(read(&sessions, "s", "f").await, b"kept");
    }

    #[tokio::test]
    async fn a_session_keeps_its_own_ttl_and_renewing_sets_a_new_one() {
        let (store, runtime, shelf) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()), shelf());
        let sessions = suspending(&store, &runtime, &shelf);
        let hour = Duration::from_secs(3600);
        let (record, _) = sessions
            .open_for(&alice(), &sid("s"), &Default::default(), Some(hour))
            .await
            .unwrap();
        let now = Utc::now().timestamp_millis();
        assert!(record.expires_at_ms > now + 3_590_000, "{record:?}");
        let used = sessions.execute(&alice(), &sid("s"), echo("x")).await.unwrap();
        assert!(used.record.expires_at_ms > now + 3_590_000, "{:?}", used.record);
        let renewed = sessions
            .renew(&alice(), &sid("s"), Some(Duration::from_secs(120)))
            .await
            .unwrap();
        assert!(renewed.expires_at_ms < now + 130_000, "{renewed:?}");
        let used = sessions.execute(&alice(), &sid("s"), echo("y")).await.unwrap();
        assert!(used.record.expires_at_ms < Utc::now().timestamp_millis() + 130_000);
        // A suspended session's renewal restarts its retention.
        sessions.suspend(&alice(), &sid("s")).await.unwrap();
        let renewed = sessions.renew(&alice(), &sid("s"), None).await.unwrap();
        assert!(renewed.expires_at_ms > Utc::now().timestamp_millis() + 6 * 86_400_000);
        assert_eq!(renewed.state(), SessionState::Suspended);
        assert!(matches!(
            sessions.renew(&alice(), &sid("nobody"), None).await,
            Err(SessionError::NotFound)
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_serves_only_its_own_sessions_and_never_recreates_another_nodes() {
    // Two nodes over one store; one engine here stands for both (the fake).
    let (store, runtime) = (Arc::new(MemoryStore::new()), Arc::new(FakeRuntime::new()));
    let (a, b) = (
        replica(&store, &runtime).with_node(Some(("a".into(), "http://a:8000".into()))),
        replica(&store, &runtime).with_node(Some(("b".into(), "http://b:8000".into()))),
    );
    let made = a.execute(&alice(), &sid("s"), echo("on a")).await.unwrap();
    assert_eq!(made.record.node.as_deref(), Some("a"));
    for attempt in [
        b.execute(&alice(), &sid("s"), echo("on b")).await.map(drop),
        b.file(
            &alice(),
            &sid("s"),
            brig_protocol::FileRequest::List { path: String::new() },
        )
        .await
        .map(drop),
    ] {
        assert!(
            matches!(attempt, Err(SessionError::Elsewhere(ref node)) if node.to_string() == "a (http://a:8000)"),
            "{attempt:?}"
        );
    }
    assert_eq!(runtime.creations(), 1, "nothing made for it on b");
    // A's commands still run, not held up by b's attempt.
    let again = a.execute(&alice(), &sid("s"), echo("still a")).await.unwrap();
    assert_eq!(again.outcome.stdout, b"still a\n");
    // A single host's process is no node: it serves none of theirs either.
    let single = replica(&store, &runtime);
    assert!(matches!(
        single.execute(&alice(), &sid("s"), echo("x")).await,
        Err(SessionError::Elsewhere(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn any_sandbox_failure_under_a_deleted_session_is_the_sessions_absence() {
    let (_, _, sessions) = setup();
    sessions.execute(&alice(), &sid("s"), echo("made")).await.unwrap();
    let failure = || RuntimeError::Engine("exec failed: unable to start container process".into());
    // While the session exists, the failure is the sandbox's.
    assert!(matches!(
        sessions.went_away(&alice(), &sid("s"), failure()).await,
        SessionError::Runtime(RuntimeError::Engine(_))
    ));
    // Deleted meanwhile: whichever step the deletion cut, the answer is 404.
    sessions.delete(&alice(), &sid("s")).await.unwrap();
    assert!(matches!(
        sessions.went_away(&alice(), &sid("s"), failure()).await,
        SessionError::NotFound
    ));
}

/// A session deleted while its container is being made stays deleted: the
/// creation's answer is its absence, and the new container goes.
#[tokio::test(start_paused = true)]
async fn a_session_deleted_while_its_container_is_made_stays_deleted() {
    let store = Arc::new(MemoryStore::new());
    let runtime = Arc::new(FakeRuntime::with_create_delay(Duration::from_millis(500)));
    let sessions = Arc::new(replica(&store, &runtime));
    let creating = {
        let sessions = sessions.clone();
        tokio::spawn(async move { sessions.execute(&alice(), &sid("s"), echo("x")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    sessions.delete(&alice(), &sid("s")).await.unwrap();
    assert!(matches!(creating.await.unwrap(), Err(SessionError::NotFound)));
    assert_eq!(store.get(&alice(), &sid("s")).await.unwrap(), None);
    assert_eq!(runtime.creations(), 1);
    assert!(runtime.sandbox_ids().is_empty(), "{:?}", runtime.sandbox_ids());
    // The id is free again.
    let again = sessions.execute(&alice(), &sid("s"), echo("y")).await.unwrap();
    assert!(again.created);
}
