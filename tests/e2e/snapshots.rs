//! Snapshots of a session's workspace in a local `SNAPSHOT_DIR`: taken
//! through the agent, forked into independent sessions, owned, bounded by
//! quotas, checksummed.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn snapshot_api(dir: &Dir) -> BrigApi {
    BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,cat,readlink,sha256sum,ls"),
        ("SNAPSHOT_DIR", dir.0.to_str().unwrap()),
        ("SNAPSHOT_QUOTA_COUNT", "3"),
        ("SNAPSHOT_QUOTA_BYTES", "20m"),
    ])
}

async fn take(api: &BrigApi, key: &str, session: &str) -> Reply {
    call(api, Method::POST, &format!("/sessions/{session}/snapshots"), key, None).await
}

/// `POST /sessions` of a new `session` from `snapshot`.
async fn fork(api: &BrigApi, key: &str, session: &str, snapshot: &str) -> Reply {
    let body = json!({"session_id": session, "from_snapshot": snapshot});
    call(api, Method::POST, "/sessions", key, Some(body)).await
}

fn out(value: &serde_json::Value) -> String {
    value["stdout"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_forks_into_an_independent_session_and_is_owned_bounded_and_checked() {
    let dir = Dir(std::env::temp_dir().join(format!("brig-snapshots-{}", new_instance())));
    let api = snapshot_api(&dir);
    run(
        &api,
        ALICE_KEY,
        "orig",
        "sh -c 'mkdir -p a/b && echo one > a/b/f && ln -s b/f a/l && head -c 2000000 /dev/urandom > big'",
    )
    .await;
    let taken = take(&api, ALICE_KEY, "orig").await;
    assert_eq!(taken.status, StatusCode::CREATED, "{:?}", taken.body);
    let id = taken.body["snapshot_id"].as_str().unwrap().to_string();
    assert!(taken.body["bytes"].as_u64().unwrap() > 2_000_000, "{:?}", taken.body);
    let listed = call(&api, Method::GET, "/snapshots", ALICE_KEY, None).await;
    assert_eq!(listed.body["snapshots"][0]["snapshot_id"], id.as_str());
    let one = call(&api, Method::GET, &format!("/snapshots/{id}"), ALICE_KEY, None).await;
    assert_eq!(one.body["session_id"], "orig");
    for (method, path) in [
        (Method::GET, format!("/snapshots/{id}")),
        (Method::DELETE, format!("/snapshots/{id}")),
    ] {
        let stranger = call(&api, method, &path, BOB_KEY, None).await;
        assert_eq!(stranger.status, StatusCode::NOT_FOUND, "{path}");
    }
    let bobs_fork = fork(&api, BOB_KEY, "b", &id).await;
    assert_eq!(bobs_fork.status, StatusCode::NOT_FOUND);

    // A fork: the same workspace, then its own.
    let forked = fork(&api, ALICE_KEY, "fork", &id).await;
    assert_eq!(forked.status, StatusCode::CREATED, "{:?}", forked.body);
    let sums = "sh -c 'cat a/b/f; readlink a/l; sha256sum big'";
    let original = out(&run(&api, ALICE_KEY, "orig", sums).await);
    assert_eq!(out(&run(&api, ALICE_KEY, "fork", sums).await), original);
    assert!(original.starts_with("one\nb/f\n"), "{original}");
    run(&api, ALICE_KEY, "fork", "sh -c 'echo two > a/b/f'").await;
    assert_eq!(out(&run(&api, ALICE_KEY, "orig", "cat a/b/f").await), "one\n");
    assert_eq!(
        call(&api, Method::DELETE, "/sessions/orig", ALICE_KEY, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(out(&run(&api, ALICE_KEY, "fork", "cat a/b/f").await), "two\n");

    // Into an existing session, or from a snapshot that does not exist: refused, nothing made.
    let exists = fork(&api, ALICE_KEY, "fork", &id).await;
    assert_eq!(
        (exists.status, exists.body["error"].as_str()),
        (StatusCode::CONFLICT, Some("session_exists"))
    );
    let unknown = fork(&api, ALICE_KEY, "ghost", "snap-000000000000000000000000").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        call(&api, Method::GET, "/sessions/ghost", ALICE_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );

    // Quotas: bytes, then count.
    run(&api, ALICE_KEY, "huge", "sh -c 'head -c 25000000 /dev/urandom > x'").await;
    let over = take(&api, ALICE_KEY, "huge").await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", over.body);
    assert_eq!(over.body["error"], "snapshot_quota_exceeded");
    assert!(over.body["detail"].as_str().unwrap().contains("SNAPSHOT_QUOTA_BYTES"));
    assert_eq!(take(&api, ALICE_KEY, "fork").await.status, StatusCode::CREATED);
    let third = take(&api, ALICE_KEY, "fork").await;
    assert_eq!(third.status, StatusCode::CREATED);
    let fourth = take(&api, ALICE_KEY, "fork").await;
    assert_eq!(fourth.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(fourth.body["detail"].as_str().unwrap().contains("SNAPSHOT_QUOTA_COUNT"));

    // A damaged archive is never restored: the fork fails and does not stay.
    let third_id = third.body["snapshot_id"].as_str().unwrap();
    let owner_dir = std::fs::read_dir(&dir.0).unwrap().next().unwrap().unwrap().path();
    let tar = owner_dir.join(format!("{third_id}.tar"));
    let mut bytes = std::fs::read(&tar).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&tar, bytes).unwrap();
    let damaged = fork(&api, ALICE_KEY, "bad", third_id).await;
    assert_eq!(damaged.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", damaged.body);
    assert!(
        damaged.body["detail"].as_str().unwrap().contains("checksum"),
        "{:?}",
        damaged.body
    );
    assert_eq!(
        call(&api, Method::GET, "/sessions/bad", ALICE_KEY, None).await.status,
        StatusCode::NOT_FOUND
    );

    // Deleting leaves nothing on disk.
    for snapshot in call(&api, Method::GET, "/snapshots", ALICE_KEY, None).await.body["snapshots"]
        .as_array()
        .unwrap()
    {
        let path = format!("/snapshots/{}", snapshot["snapshot_id"].as_str().unwrap());
        assert_eq!(
            call(&api, Method::DELETE, &path, ALICE_KEY, None).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(&api, Method::GET, &path, ALICE_KEY, None).await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(std::fs::read_dir(&owner_dir).unwrap().count(), 0);
}

/// `SNAPSHOT_STORE=s3` on a real S3-compatible server (moto): snapshots and
/// suspended workspaces live in the bucket, so any replica (or host) restores
/// them; nothing lands in the local directory; an unreachable bucket is a 503
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_suspended_workspaces_live_in_an_s3_bucket_any_replica_restores() {
    let (redis, s3) = (RedisServer::start(), S3Server::start());
    let mut env = s3.env();
    env.extend([
        ("REDIS_URL", redis.url()),
        ("ALLOWED_COMMANDS", "sh,cat,readlink,sha256sum".into()),
    ]);
    let env = env_refs(&env);
    let a = BrigApi::start(&env);
    let b = BrigApi::start_in(&a.instance, &env);
    run(
        &a,
        ALICE_KEY,
        "orig",
        "sh -c 'mkdir -p d && echo one > d/f && ln -s f d/l && head -c 12000000 /dev/urandom > big'",
    )
    .await;
    let sums = "sh -c 'cat d/f; readlink d/l; sha256sum big'";
    let original = out(&run(&a, ALICE_KEY, "orig", sums).await);

    let taken = take(&a, ALICE_KEY, "orig").await;
    assert_eq!(taken.status, StatusCode::CREATED, "{:?}", taken.body);
    let id = taken.body["snapshot_id"].as_str().unwrap().to_string();
    let keys = s3.keys();
    assert!(keys.iter().any(|k| k.ends_with(&format!("/{id}.tar"))), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with(&format!("/{id}.json"))), "{keys:?}");
    // The other replica lists and forks it.
    let listed = call(&b, Method::GET, "/snapshots", ALICE_KEY, None).await;
    assert_eq!(listed.body["snapshots"][0]["snapshot_id"], id.as_str());
    assert_eq!(fork(&b, ALICE_KEY, "fork", &id).await.status, StatusCode::CREATED);
    assert_eq!(out(&run(&b, ALICE_KEY, "fork", sums).await), original);

    // Suspended on one replica, resumed on the other, through the bucket.
    let suspended = call(&b, Method::POST, "/sessions/orig/suspend", ALICE_KEY, None).await;
    assert_eq!(suspended.status, StatusCode::OK, "{:?}", suspended.body);
    assert!(
        s3.keys().iter().any(|k| k.starts_with(".suspended/")),
        "{:?}",
        s3.keys()
    );
    let resumed = run(&a, ALICE_KEY, "orig", sums).await;
    assert_eq!(
        (out(&resumed), resumed["session_resumed"].clone()),
        (original, json!(true))
    );
    assert!(
        !s3.keys().iter().any(|k| k.starts_with(".suspended/")),
        "{:?}",
        s3.keys()
    );

    // Deleted: gone from the bucket; nothing was ever kept locally.
    let deleted = call(&a, Method::DELETE, &format!("/snapshots/{id}"), ALICE_KEY, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
    assert!(!snapshot_dir(&a.instance).exists());

    // A bucket nobody answers for: 503 naming it, and the session is untouched.
    let mut dead = S3Server::start().env();
    dead.retain(|(name, _)| *name != "S3_ENDPOINT");
    dead.push(("S3_ENDPOINT", format!("http://127.0.0.1:{}", free_port())));
    let dead = env_refs(&dead);
    let c = BrigApi::start(
        &[
            dead.as_slice(),
            &[("ALLOWED_COMMANDS", "echo"), ("SESSION_STORE", "memory")],
        ]
        .concat(),
    );
    run(&c, ALICE_KEY, "s", "echo x").await;
    let refused = take(&c, ALICE_KEY, "s").await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("snapshot_store_unavailable")),
        "{:?}",
        refused.body
    );
    assert!(
        refused.body["detail"].as_str().unwrap().contains("S3_BUCKET"),
        "{:?}",
        refused.body
    );
    assert_eq!(run(&c, ALICE_KEY, "s", "echo still").await["stdout"], "still\n");
}
