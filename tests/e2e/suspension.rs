//! Suspend and resume on the real engine and Redis: a session's workspace
//! moves into a snapshot and its container goes; its next use (a command, a
//! file) resumes it. `SESSION_EXPIRY=suspend` does the same at expiry. A
//! churn of suspends, resumes and commands with the API killed (SIGKILL) in
//! the middle loses no acknowledged file and leaks no container or snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::sync::RwLock;

use crate::*;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> Dir {
    Dir(std::env::temp_dir().join(format!("brig-suspension-{}", new_instance())))
}

/// The suspended workspaces kept under `dir` (`SNAPSHOT_DIR`), any owner's.
fn suspended_snapshots(dir: &Path) -> Vec<PathBuf> {
    let Ok(owners) = std::fs::read_dir(dir.join(".suspended")) else {
        return Vec::new();
    };
    owners
        .flatten()
        .flat_map(|owner| std::fs::read_dir(owner.path()).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect()
}

async fn status(api: &BrigApi, session: &str) -> String {
    let got = call(api, Method::GET, &format!("/sessions/{session}"), ALICE_KEY, None).await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    got.body["status"].as_str().unwrap().to_string()
}

async fn suspend(api: &BrigApi, key: &str, session: &str) -> Reply {
    call(api, Method::POST, &format!("/sessions/{session}/suspend"), key, None).await
}

const SUMS: &str = "sh -c 'cat a/b/f; readlink a/l; sha256sum big; ls -la a | wc -l'";
const FILL: &str = "sh -c 'mkdir -p a/b && echo one > a/b/f && ln -s b/f a/l && head -c 3000000 /dev/urandom > big'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_session_keeps_its_workspace_and_its_next_use_resumes_it() {
    let (redis, dir) = (RedisServer::start(), temp_dir());
    let api = BrigApi::start(&[
        ("REDIS_URL", &redis.url()),
        ("ALLOWED_COMMANDS", "sh,cat,sleep,echo"),
        ("SNAPSHOT_DIR", dir.0.to_str().unwrap()),
        // A session's own snapshots are not its suspension's: neither limits the other.
        ("SNAPSHOT_QUOTA_BYTES", "1k"),
    ]);
    run(&api, ALICE_KEY, "s", FILL).await;
    let before = run(&api, ALICE_KEY, "s", SUMS).await["stdout"].clone();
    assert_eq!(instance_containers(&api.instance).len(), 1);

    // Someone else's session is not found; so is a missing one.
    assert_eq!(suspend(&api, BOB_KEY, "s").await.status, StatusCode::NOT_FOUND);
    assert_eq!(suspend(&api, ALICE_KEY, "nobody").await.status, StatusCode::NOT_FOUND);

    let suspended = suspend(&api, ALICE_KEY, "s").await;
    assert_eq!(suspended.status, StatusCode::OK, "{:?}", suspended.body);
    assert_eq!(suspended.body["status"], "suspended");
    assert_eq!(status(&api, "s").await, "suspended");
    let listed = call(&api, Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(listed.body["sessions"][0]["status"], "suspended");
    assert!(instance_containers(&api.instance).is_empty(), "the container stays");
    assert_eq!(suspended_snapshots(&dir.0).len(), 1);
    // Again: answered as it is.
    assert_eq!(suspend(&api, ALICE_KEY, "s").await.body["status"], "suspended");

    // The next command resumes it: a new container with the same workspace.
    let resumed = run(&api, ALICE_KEY, "s", SUMS).await;
    assert_eq!(resumed["stdout"], before);
    assert_eq!(resumed["session_resumed"], true, "{resumed}");
    assert_eq!(resumed["session_created"], false);
    assert_eq!(status(&api, "s").await, "active");
    assert_eq!(run(&api, ALICE_KEY, "s", "echo x").await["session_resumed"], false);
    assert_eq!(suspended_snapshots(&dir.0).len(), 0, "a restored snapshot is not kept");

    // A file read resumes it too.
    assert_eq!(suspend(&api, ALICE_KEY, "s").await.status, StatusCode::OK);
    let file = reqwest::Client::new()
        .get(api.url("/sessions/s/files/a/b/f"))
        .header("x-api-key", ALICE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.bytes().await.unwrap(), "one\n");
    assert_eq!(status(&api, "s").await, "active");

    // Not under a running command.
    let sleeper = {
        let base = api.base.clone();
        tokio::spawn(async move {
            post(
                &base,
                "/execute",
                ALICE_KEY,
                &json!({"command": "sleep 6", "session_id": "s", "timeout": 20}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = suspend(&api, ALICE_KEY, "s").await;
    assert_eq!(
        (busy.status, busy.body["error"].as_str()),
        (StatusCode::CONFLICT, Some("session_in_use")),
        "{:?}",
        busy.body
    );
    assert_eq!(sleeper.await.unwrap().unwrap().status, StatusCode::OK);
    assert_eq!(status(&api, "s").await, "active");

    // Deleting a suspended session drops its workspace.
    assert_eq!(suspend(&api, ALICE_KEY, "s").await.status, StatusCode::OK);
    assert_eq!(suspended_snapshots(&dir.0).len(), 1);
    let deleted = call(&api, Method::DELETE, "/sessions/s", ALICE_KEY, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(suspended_snapshots(&dir.0).is_empty());
    assert_eq!(
        call(&api, Method::GET, "/sessions/s", ALICE_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(instance_containers(&api.instance).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_session_expiry_suspend_an_expired_session_keeps_its_workspace() {
    let dir = temp_dir();
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,cat"),
        ("SNAPSHOT_DIR", dir.0.to_str().unwrap()),
        ("SESSION_EXPIRY", "suspend"),
        ("SESSION_TTL_SECONDS", "20"),
        ("CLEANUP_INTERVAL_SECONDS", "1"),
        ("CLEANUP_GRACE_SECONDS", "1"),
    ]);
    run(&api, ALICE_KEY, "s", FILL).await;
    let before = run(&api, ALICE_KEY, "s", SUMS).await["stdout"].clone();
    // Left alone, it is suspended before it would expire (the embedded
    // reaper, which removes what expired, runs every second meanwhile).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while status(&api, "s").await != "suspended" {
        assert!(std::time::Instant::now() < deadline, "not suspended in time");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eventually(Duration::from_secs(10), "its container removed", || {
        instance_containers(&api.instance).is_empty()
    })
    .await;
    // Past its TTL, still there: its retention is a week.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let resumed = run(&api, ALICE_KEY, "s", SUMS).await;
    assert_eq!(
        (resumed["stdout"].clone(), resumed["session_resumed"].clone()),
        (before, json!(true))
    );
}

const CHURN_SESSIONS: usize = 8;
const CHURN_ROUNDS: usize = 10;

/// What a churn session is known to hold: files whose write was acknowledged.
#[derive(Default)]
struct Known {
    files: Vec<String>,
    suspends: usize,
    resumes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_suspends_resumes_and_api_kills_loses_no_acknowledged_file_and_leaks_nothing() {
    let (redis, dir) = (RedisServer::start(), temp_dir());
    let env = [
        ("REDIS_URL", redis.url()),
        ("ALLOWED_COMMANDS", "sh,cat,ls".into()),
        ("SNAPSHOT_DIR", dir.0.to_str().unwrap().into()),
        ("RATE_LIMIT_REQUESTS", "100000".into()),
        ("CLEANUP_INTERVAL_SECONDS", "1".into()),
        ("SUSPENDED_SWEEP_AFTER_SECONDS", "5".into()),
    ];
    let env = env_refs(&env);
    let first = BrigApi::start(&env);
    let instance = first.instance.clone();
    let base = Arc::new(RwLock::new(first.base.clone()));
    let mut apis = vec![first];
    let known: Arc<std::sync::Mutex<HashMap<usize, Known>>> = Default::default();
    let mut tasks = Vec::new();
    for s in 0..CHURN_SESSIONS {
        let (base, known) = (Arc::clone(&base), Arc::clone(&known));
        tasks.push(tokio::spawn(async move {
            let session = format!("churn-{s}");
            for round in 0..CHURN_ROUNDS {
                let name = format!("f{round}");
                let body = json!({
                    "command": format!("sh -c 'mkdir -p d && echo {session}-{round} > d/{name}'"),
                    "session_id": session,
                    "timeout": 10,
                });
                let reply = post_through(&base, "/execute", &body).await;
                if reply.status == StatusCode::OK && reply.body["exit_code"] == 0 {
                    let mut known = known.lock().unwrap();
                    let entry = known.entry(s).or_default();
                    entry.files.push(name);
                    entry.resumes += usize::from(reply.body["session_resumed"] == true);
                } else {
                    println!("execute {session}: {} {:?}", reply.status, reply.body);
                }
                if !rand::random::<u32>().is_multiple_of(3) {
                    let reply = post_through(&base, &format!("/sessions/{session}/suspend"), &json!({})).await;
                    if reply.status == StatusCode::OK {
                        known.lock().unwrap().entry(s).or_default().suspends += 1;
                    } else {
                        println!("suspend {session}: {} {:?}", reply.status, reply.body);
                    }
                }
            }
        }));
    }
    // Killed twice while the sessions churn; requests in flight fail, later
    // ones go to the restarted process (same instance, store and directory).
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(2500 + u64::from(rand::random::<u16>() % 2000))).await;
        apis.last_mut().unwrap().service.kill();
        let restarted = BrigApi::start_in(&instance, &env);
        *base.write().await = restarted.base.clone();
        apis.push(restarted);
    }
    for task in tasks {
        task.await.unwrap();
    }
    let api = apis.last().unwrap();
    let known = std::mem::take(&mut *known.lock().unwrap());
    let (mut suspends, mut resumes) = (0, 0);
    for s in 0..CHURN_SESSIONS {
        let Some(expected) = known.get(&s) else { continue };
        suspends += expected.suspends;
        resumes += expected.resumes;
        let session = format!("churn-{s}");
        // A suspend killed midway holds the session's lock until it lapses.
        let listed = retry_execute(api, &session, "ls d").await;
        let present: Vec<&str> = listed["stdout"].as_str().unwrap().lines().collect();
        for name in &expected.files {
            assert!(
                present.contains(&name.as_str()),
                "{session} lost {name}: has {present:?}"
            );
            let content = run(api, ALICE_KEY, &session, &format!("cat d/{name}")).await;
            let round = name.trim_start_matches('f');
            assert_eq!(content["stdout"], format!("{session}-{round}\n"));
        }
    }
    println!("suspension churn: {suspends} suspends, {resumes} resumes acknowledged, 2 API kills");
    assert!(
        suspends >= 2 * CHURN_SESSIONS && resumes >= 2 * CHURN_SESSIONS,
        "too little churn"
    );
    for s in 0..CHURN_SESSIONS {
        call(api, Method::DELETE, &format!("/sessions/churn-{s}"), ALICE_KEY, None).await;
    }
    // What kills left behind: unclaimed snapshots are swept once 5 s old;
    // containers no record names go with a reaper pass.
    eventually(Duration::from_secs(30), "every suspended workspace swept", || {
        suspended_snapshots(&dir.0).is_empty()
    })
    .await;
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "3600".into()),
        ("CLEANUP_GRACE_SECONDS", "0.001".into()),
    ];
    let reaper = CleanupWorker::start(&instance, &env_refs(&worker_env));
    eventually(Duration::from_secs(60), "one reaper pass", || {
        !reaper.passes().is_empty()
    })
    .await;
    assert!(
        instance_containers(&instance).is_empty(),
        "{:?}",
        instance_containers(&instance)
    );
    let left = call(api, Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(left.body["sessions"], json!([]));
    drop(apis);
}

/// `POST path` as alice to the API at `base` (whichever runs now): a request
/// that finds no API (killed, restarting) is sent again, one cut by the kill
/// is answered 599.
async fn post_through(base: &RwLock<String>, path: &str, body: &serde_json::Value) -> Reply {
    for _ in 0..100 {
        let at = base.read().await.clone();
        match post(&at, path, ALICE_KEY, body).await {
            Ok(reply) => return reply,
            Err(err) if err.is_connect() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => {
                return Reply {
                    status: StatusCode::from_u16(599).unwrap(),
                    headers: Default::default(),
                    body: serde_json::Value::Null,
                }
            }
        }
    }
    panic!("no API answered {path} for 20 s");
}

/// [`run`], retried while the session waits for a lock a killed process held.
async fn retry_execute(api: &BrigApi, session: &str, command: &str) -> serde_json::Value {
    for _ in 0..3 {
        let reply = execute(api, ALICE_KEY, session, command).await;
        if reply.status == StatusCode::OK {
            return reply.body;
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", reply.body);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("{session}: {command} never answered");
}

/// `ttl_seconds` and renew give a session its own lifetime; a session kept
/// alive past the container age limit keeps its workspace: its container is
/// recycled through suspend and resume instead of removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_have_their_own_lifetimes_and_outlive_the_container_age_limit() {
    let dir = temp_dir();
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,cat"),
        ("SNAPSHOT_DIR", dir.0.to_str().unwrap()),
        ("SESSION_TTL_SECONDS", "5"),
        ("MAX_SESSION_TTL_SECONDS", "120"),
        ("CLEANUP_MAX_CONTAINER_AGE_SECONDS", "40"),
        ("CLEANUP_INTERVAL_SECONDS", "1"),
        ("CLEANUP_GRACE_SECONDS", "1"),
    ]);
    let create = |body: serde_json::Value| call(&api, Method::POST, "/sessions", ALICE_KEY, Some(body));
    for bad in [0, 121] {
        let refused = create(json!({"session_id": "x", "ttl_seconds": bad})).await;
        assert_eq!(
            (refused.status, refused.body["error"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_ttl")),
            "{bad}: {:?}",
            refused.body
        );
        assert!(refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_SESSION_TTL_SECONDS"));
    }
    let long = create(json!({"session_id": "long", "ttl_seconds": 100})).await;
    assert_eq!(long.status, StatusCode::CREATED, "{:?}", long.body);
    assert_eq!(long.body["ttl_seconds"], 100);
    run(&api, ALICE_KEY, "long", "sh -c 'echo kept > f'").await;
    run(&api, ALICE_KEY, "short", "sh -c 'echo gone > f'").await;
    run(&api, ALICE_KEY, "renewed", "sh -c 'echo kept > f'").await;
    let renew = |session: &'static str, body: Option<serde_json::Value>| {
        let api = &api;
        async move {
            call(
                api,
                Method::POST,
                &format!("/sessions/{session}/renew"),
                ALICE_KEY,
                body,
            )
            .await
        }
    };
    let renewed = renew("renewed", Some(json!({"ttl_seconds": 60}))).await;
    assert_eq!(
        (renewed.status, renewed.body["ttl_seconds"].clone()),
        (StatusCode::OK, json!(60))
    );
    assert_eq!(renew("renewed", None).await.status, StatusCode::OK);
    assert_eq!(renew("nobody", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        renew("renewed", Some(json!({"ttl_seconds": 500}))).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Past the default TTL: the default session is gone, the others are not.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        call(&api, Method::GET, "/sessions/short", ALICE_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(run(&api, ALICE_KEY, "renewed", "cat f").await["stdout"], "kept\n");
    // Kept busy past the 40 s container age limit: recycled (suspended and
    // resumed in a new container) with its workspace, never lost.
    let (started, mut resumed) = (std::time::Instant::now(), 0);
    while started.elapsed() < Duration::from_secs(50) {
        let used = run(&api, ALICE_KEY, "long", "cat f").await;
        assert_eq!(used["stdout"], "kept\n", "{used}");
        resumed += usize::from(used["session_resumed"] == true);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(resumed >= 1, "the aged container was not recycled");
}
