//! Creating, re-attaching to and removing sandboxes.

use std::time::{Duration, Instant};

use brig_core::{CreateSandbox, ExecRequest, RuntimeError, SandboxRuntime};

use crate::helpers::TestRuntime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_same_session_twice_or_concurrently_yields_one_container() {
    let t = TestRuntime::new().await;
    let request = CreateSandbox {
        owner: "owner-hash".into(),
        session_id: "twice".into(),
        options: Default::default(),
        store: String::new(),
    };
    let (a, b) = tokio::join!(t.runtime.create(&request), t.runtime.create(&request));
    let ((a, a_created), (b, b_created)) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id, b.id);
    assert!(a_created ^ b_created, "exactly one call creates the container");
    let (again, created) = t.runtime.create(&request).await.unwrap();
    assert_eq!(again.id, a.id);
    assert!(!created);
    assert_eq!(t.runtime.list().await.unwrap().len(), 1);
    let other_owner = CreateSandbox {
        owner: "someone-else".into(),
        session_id: "twice".into(),
        options: Default::default(),
        store: String::new(),
    };
    assert_ne!(t.runtime.create(&other_owner).await.unwrap().0.id, a.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_working_dir_and_spawn_failures_are_honoured() {
    let t = TestRuntime::new().await;
    let sandbox = t.sandbox("io").await;
    let cat = t
        .run(&sandbox, ExecRequest::new(["cat"]).stdin(b"hello\0world".to_vec()))
        .await;
    assert_eq!(cat.stdout, b"hello\0world");
    let pwd = t.run(&sandbox, ExecRequest::new(["pwd"]).working_dir("/tmp")).await;
    assert_eq!(pwd.stdout_str(), "/tmp\n");

    let missing = t.runtime.exec(&sandbox.id, ExecRequest::new(["no-such-command"])).await;
    assert!(matches!(missing, Err(RuntimeError::SpawnFailed(_))), "{missing:?}");
    let bad_dir = t
        .runtime
        .exec(&sandbox.id, ExecRequest::new(["ls"]).working_dir("/nope"))
        .await;
    assert!(matches!(bad_dir, Err(RuntimeError::SpawnFailed(_))), "{bad_dir:?}");
    let empty = t
        .runtime
        .exec(&sandbox.id, ExecRequest::new(Vec::<String>::new()))
        .await;
    assert!(matches!(empty, Err(RuntimeError::InvalidRequest(_))), "{empty:?}");
    assert_eq!(t.sh(&sandbox, "echo still-fine").await.stdout_str(), "still-fine\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_from_outside_fails_pending_and_later_requests_without_hanging() {
    let t = TestRuntime::new().await;
    let sandbox = t.sandbox("killed").await;
    let runtime = t.runtime.clone();
    let id = sandbox.id.clone();
    let pending = tokio::spawn(async move {
        runtime
            .exec(&id, ExecRequest::new(["sleep", "60"]).timeout(Duration::from_secs(60)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &sandbox.id])
        .output()
        .unwrap();
    assert!(removed.status.success());
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("pending request hung")
        .unwrap();
    assert!(matches!(outcome, Err(RuntimeError::ChannelClosed)), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let later = tokio::time::timeout(
        Duration::from_secs(10),
        t.runtime.exec(&sandbox.id, ExecRequest::new(["true"])),
    )
    .await
    .expect("later request hung");
    assert!(matches!(later, Err(RuntimeError::SandboxNotFound)), "{later:?}");
    // Removing what is already gone succeeds.
    t.runtime.remove(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_is_idempotent_and_ends_the_sandbox() {
    let t = TestRuntime::new().await;
    let sandbox = t.sandbox("remove").await;
    t.runtime.remove(&sandbox.id).await.unwrap();
    t.runtime.remove(&sandbox.id).await.unwrap();
    assert!(t.runtime.inspect(&sandbox.id).await.unwrap().is_none());
    let exec = t.runtime.exec(&sandbox.id, ExecRequest::new(["true"])).await;
    assert!(matches!(exec, Err(RuntimeError::SandboxNotFound)), "{exec:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_reattaches_to_a_running_sandbox() {
    let t = TestRuntime::new().await;
    let sandbox = t.sandbox("reattach").await;
    t.sh(&sandbox, "echo kept > /workspace/state").await;
    let restarted = t.restarted().await;
    // The old runtime's channel goes away, as when an API process exits.
    drop(t.runtime.clone());
    let outcome = restarted
        .exec(&sandbox.id, ExecRequest::new(["cat", "/workspace/state"]))
        .await
        .unwrap();
    assert_eq!(outcome.stdout_str(), "kept\n");
    let by_name = restarted
        .exec(&sandbox.name, ExecRequest::new(["echo", "by-name"]))
        .await
        .unwrap();
    assert_eq!(by_name.stdout_str(), "by-name\n");
}

async fn a_caller_that_stops_waiting_cancels_its_command(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("abandon").await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(500),
        t.runtime
            .exec(&sandbox.id, ExecRequest::new(["sh", "-c", "sleep 30; echo late"])),
    )
    .await;
    assert!(abandoned.is_err(), "the command finished early");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.stray_processes(&sandbox).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_of_another_instance_are_invisible() {
    let t = TestRuntime::new().await;
    let other = TestRuntime::new().await;
    let sandbox = t.sandbox("mine").await;
    assert!(other.runtime.list().await.unwrap().is_empty());
    assert!(other.runtime.inspect(&sandbox.id).await.unwrap().is_none());
    let exec = other.runtime.exec(&sandbox.id, ExecRequest::new(["true"])).await;
    assert!(matches!(exec, Err(RuntimeError::SandboxNotFound)), "{exec:?}");
}

under_both_runtimes!(a_caller_that_stops_waiting_cancels_its_command,);
