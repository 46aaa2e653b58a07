//! Durable sessions: how long a snapshot and a fork from it take for 1, 10
//! and 100 MB workspaces (`SNAPSHOT_DIR` on this machine's disk), how long a
//! suspend takes and how long the first command of a suspended session takes
//! (its resume), beside the Engine API's exec stream carrying the same bytes
//! and a cold session of brig's own (what a resume adds to is a creation).

use std::time::{Duration, Instant};

use bollard::Docker;
use serde::Serialize;
use serde_json::json;

use crate::egress::{exec_stream, Rate};
use crate::scenarios::{http_exec, timed};
use crate::stats::Latency;

/// What brig-api needs for these series: a workspace that holds 100 MB (and
/// its tar on the way in), a snapshot directory of the bench's own, and room
/// in its quota for one snapshot of each size at a time.
pub fn api_env(dir: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CONTAINER_WORKSPACE_SIZE", "512m".into()),
        ("CONTAINER_MEM_LIMIT", "1g".into()),
        ("SNAPSHOT_DIR", dir.into()),
        ("SNAPSHOT_QUOTA_BYTES", "2g".into()),
    ]
}

/// The figures of one workspace size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SizeFigures {
    pub megabytes: u64,
    /// `POST /sessions/{id}/snapshots`.
    pub snapshot: Latency,
    /// `POST /sessions {"from_snapshot"}`: a new session with the workspace.
    pub fork: Latency,
    /// `POST /sessions/{id}/suspend`.
    pub suspend: Latency,
    /// The first `echo` of a suspended session: container, restore, command.
    pub resume: Latency,
    /// The same bytes out of a sandbox through the Engine API's exec stream.
    pub engine_exec_stream: Rate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Durability {
    /// A new session's first `echo` (no pool): what a resume is a kind of.
    pub cold_session: Latency,
    pub sizes: Vec<SizeFigures>,
}

pub async fn measure(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    docker: &Docker,
    container: &str,
    rounds: usize,
) -> anyhow::Result<Durability> {
    let mut cold = Vec::new();
    for i in 0..rounds.max(3) {
        cold.push(timed(http_exec(client, base, key, &format!("durability-cold-{i}"))).await?);
    }
    let mut sizes = Vec::new();
    for megabytes in [1u64, 10, 100] {
        let session = format!("durability-{megabytes}");
        fill(client, base, key, &session, megabytes * 1_000_000).await?;
        let (mut snapshot, mut fork, mut suspend, mut resume) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let started = Instant::now();
            let taken = post(client, base, key, &format!("/sessions/{session}/snapshots"), None).await?;
            snapshot.push(started.elapsed());
            let id = taken["snapshot_id"].as_str().unwrap_or_default().to_string();
            let forked = format!("{session}-fork-{round}");
            let body = json!({"session_id": forked, "from_snapshot": id});
            fork.push(timed(post(client, base, key, "/sessions", Some(body))).await?);
            delete(client, base, key, &format!("/snapshots/{id}")).await?;
            delete(client, base, key, &format!("/sessions/{forked}")).await?;
            suspend.push(timed(post(client, base, key, &format!("/sessions/{session}/suspend"), None)).await?);
            let started = Instant::now();
            let body = http_exec(client, base, key, &session).await?;
            resume.push(started.elapsed());
            anyhow::ensure!(body["session_resumed"] == true, "not resumed: {body}");
        }
        let engine_exec_stream = exec_stream(docker, container, megabytes * 1_000_000).await?;
        delete(client, base, key, &format!("/sessions/{session}")).await?;
        sizes.push(SizeFigures {
            megabytes,
            snapshot: Latency::of(snapshot),
            fork: Latency::of(fork),
            suspend: Latency::of(suspend),
            resume: Latency::of(resume),
            engine_exec_stream,
        });
    }
    Ok(Durability {
        cold_session: Latency::of(cold),
        sizes,
    })
}

/// Puts `bytes` of varied data in the session's workspace (streamed).
async fn fill(client: &reqwest::Client, base: &str, key: &str, session: &str, bytes: u64) -> anyhow::Result<()> {
    http_exec(client, base, key, session).await?;
    let data: Vec<u8> = (0..bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let reply = client
        .put(format!("{base}/sessions/{session}/files/blob"))
        .header("x-api-key", key)
        .body(data)
        .send()
        .await?;
    anyhow::ensure!(reply.status().is_success(), "filling {session}: {}", reply.status());
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = client.post(format!("{base}{path}")).header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let reply = request.timeout(Duration::from_secs(300)).send().await?;
    let status = reply.status();
    let body: serde_json::Value = reply.json().await?;
    anyhow::ensure!(status.is_success(), "{path}: {status}: {body}");
    Ok(body)
}

async fn delete(client: &reqwest::Client, base: &str, key: &str, path: &str) -> anyhow::Result<()> {
    let reply = client
        .delete(format!("{base}{path}"))
        .header("x-api-key", key)
        .send()
        .await?;
    anyhow::ensure!(reply.status().is_success(), "DELETE {path}: {}", reply.status());
    Ok(())
}
