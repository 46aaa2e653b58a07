//! Churn: 300 sessions created, used, abandoned or deleted at random, with the
//! API and the cleanup worker each killed (SIGKILL) and restarted once in the
//! middle. Afterwards one reaper pass must leave no container without a live
//! session.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::{RwLock, Semaphore};

use crate::*;

const SESSIONS: usize = 300;
const TTL_SECONDS: u64 = 4;

#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    deleted: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_crashes_leaves_no_orphan_after_one_pass() {
    let redis = RedisServer::start();
    let ttl = TTL_SECONDS.to_string();
    let api_env = [
        ("REDIS_URL", redis.url()),
        ("SESSION_TTL_SECONDS", ttl.clone()),
        ("MAX_SESSIONS_PER_USER", "1000".into()),
        ("MAX_SESSIONS", "1000".into()),
        ("RATE_LIMIT_REQUESTS", "100000".into()),
    ];
    let api_env = env_refs(&api_env);
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "1".into()),
        ("CLEANUP_GRACE_SECONDS", "2".into()),
    ];
    let worker_env = env_refs(&worker_env);

    let first_api = BrigApi::start(&api_env);
    let instance = first_api.instance.clone();
    let base = Arc::new(RwLock::new(first_api.base.clone()));
    let mut apis = vec![first_api];
    let mut worker = CleanupWorker::start(&instance, &worker_env);
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(6));
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let mut tasks = Vec::new();

    for i in 0..SESSIONS {
        if i == SESSIONS / 3 {
            // Crash the API mid-stream; requests in flight fail, then go to the new one.
            apis[0].service.kill();
            let restarted = BrigApi::start_in(&instance, &api_env);
            *base.write().await = restarted.base.clone();
            apis.push(restarted);
        }
        if i == 2 * SESSIONS / 3 {
            worker.service.kill();
            worker = CleanupWorker::start(&instance, &worker_env);
        }
        let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
        let (base, tally) = (Arc::clone(&base), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let key = if i % 2 == 0 { ALICE_KEY } else { BOB_KEY };
            let session = format!("churn-{i}");
            let client = reqwest::Client::new();
            let uses = 1 + rand::random::<u32>() % 3;
            for _ in 0..uses {
                let url = format!("{}/execute", base.read().await);
                let reply = client
                    .post(url)
                    .header("x-api-key", key)
                    .json(&json!({
                        "command": "sh -c 'echo x > /workspace/f; cat /workspace/f'",
                        "session_id": session,
                        // Short: a command cut off by the API crash stays "busy"
                        // (the agent still runs it) until its deadline passes.
                        "timeout": 3,
                    }))
                    .send()
                    .await;
                let mut tally = tally.lock().unwrap();
                match reply {
                    Ok(reply) if reply.status() == StatusCode::OK => tally.ok += 1,
                    _ => tally.failed += 1,
                }
            }
            if rand::random::<bool>() {
                let url = format!("{}/sessions/{session}", base.read().await);
                if let Ok(reply) = client.delete(url).header("x-api-key", key).send().await {
                    if reply.status() == StatusCode::NO_CONTENT {
                        tally.lock().unwrap().deleted += 1;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let churn_time = started.elapsed();
    worker.service.kill();

    // Let every session expire, then keep a few alive on purpose.
    tokio::time::sleep(Duration::from_secs(TTL_SECONDS + 1)).await;
    let api = apis.last().unwrap();
    let mut kept = HashSet::new();
    for i in 0..5 {
        let session = format!("keep-{i}");
        assert_eq!(run(api, ALICE_KEY, &session, "echo alive").await["stdout"], "alive\n");
        kept.extend(session_containers(&instance, &session));
    }
    let before = instance_containers(&instance).len();

    // One pass of a fresh worker, with no grace: everything settled long ago
    // except the kept sessions, which are live.
    let final_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "3600".into()),
        ("CLEANUP_GRACE_SECONDS", "0.001".into()),
    ];
    let final_env = env_refs(&final_env);
    let reaper = CleanupWorker::start(&instance, &final_env);
    eventually(Duration::from_secs(120), "one reaper pass", || {
        !reaper.passes().is_empty()
    })
    .await;
    let pass = reaper.passes()[0].clone();
    let remaining: HashSet<String> = instance_containers(&instance).into_iter().collect();
    let orphans: Vec<&String> = remaining.difference(&kept).collect();
    let tally = tally.lock().unwrap();
    println!(
        "churn: {SESSIONS} sessions, {} ok / {} failed executes, {} deleted, {:.1} s; before the final pass \
         {before} containers; the pass: {pass}; orphans left: {}",
        tally.ok,
        tally.failed,
        tally.deleted,
        churn_time.as_secs_f64(),
        orphans.len()
    );
    assert!(
        orphans.is_empty(),
        "containers without a live session remain: {orphans:?}"
    );
    assert_eq!(remaining.len(), kept.len(), "a live session lost its container");
    assert!(tally.ok > SESSIONS, "too few executes succeeded: {}", tally.ok);
    assert_eq!(pass["errors"], 0, "{pass}");
    drop(apis);
    remove_instance_containers(&instance);
}
