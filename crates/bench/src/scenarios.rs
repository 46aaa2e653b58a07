//! The measurements. Each returns plain numbers; `main` prints and saves them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{AttachContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use brig_core::{DockerRuntime, ExecRequest, SandboxRuntime};
use brig_protocol::{FileReply, FileRequest};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::stats::{Latency, Throughput};

/// Warm-up iterations run and discarded before every latency series.
pub const WARM_UP: usize = 20;

/// Runs `once` `WARM_UP + n` times and keeps the last `n` durations.
pub async fn series<T, F, Fut>(n: usize, once: F) -> anyhow::Result<Latency>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    paced_series(n, Duration::ZERO, once).await
}

/// How long `call` took.
pub async fn timed<T>(call: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    call.await?;
    Ok(started.elapsed())
}

/// Like [`series`], idle for `pace` (untimed) before each call.
pub async fn paced_series<T, F, Fut>(n: usize, pace: Duration, mut once: F) -> anyhow::Result<Latency>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        let taken = timed(once(i)).await?;
        if i >= WARM_UP {
            samples.push(taken);
        }
    }
    Ok(Latency::of(samples))
}

/// `echo hi` through the Engine API: create exec, start and read all, inspect.
pub async fn raw_exec(docker: &Docker, container: &str) -> anyhow::Result<()> {
    let options = CreateExecOptions {
        cmd: Some(vec!["echo".to_string(), "hi".to_string()]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await?;
    let mut stdout = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await? {
        while let Some(chunk) = output.next().await {
            if let LogOutput::StdOut { message } = chunk? {
                stdout.extend_from_slice(&message);
            }
        }
    }
    let inspect = docker.inspect_exec(&exec.id).await?;
    anyhow::ensure!(
        stdout == b"hi\n" && inspect.exit_code == Some(0),
        "raw exec gave {stdout:?}"
    );
    Ok(())
}

/// `echo hi` over brig-core's attach channel.
pub async fn channel_exec(runtime: &DockerRuntime, container: &str) -> anyhow::Result<()> {
    let outcome = runtime.exec(container, ExecRequest::new(["echo", "hi"])).await?;
    anyhow::ensure!(outcome.stdout == b"hi\n", "channel gave {:?}", outcome.stdout);
    Ok(())
}

/// A request the agent answers without spawning anything (listing an empty
/// `/workspace`), over the same channel: the relay's cost alone.
pub async fn channel_no_spawn(runtime: &DockerRuntime, container: &str) -> anyhow::Result<()> {
    let listed = runtime
        .file(container, FileRequest::List { path: String::new() })
        .await?;
    anyhow::ensure!(matches!(listed, FileReply::Entries { .. }), "listing gave {listed:?}");
    Ok(())
}

/// `POST /execute` of `command` in `session`; checks for a 200.
pub async fn http_exec(client: &reqwest::Client, base: &str, key: &str, session: &str) -> anyhow::Result<Value> {
    let reply = client
        .post(format!("{base}/execute"))
        .header("x-api-key", key)
        .json(&json!({"command": "echo hi", "session_id": session}))
        .send()
        .await?;
    let status = reply.status();
    let body: Value = reply.json().await?;
    anyhow::ensure!(status.is_success() && body["stdout"] == "hi\n", "{status}: {body}");
    Ok(body)
}

/// `GET /health`: no authentication, store or sandbox behind it.
pub async fn http_health(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let reply = client.get(format!("{base}/health")).send().await?;
    anyhow::ensure!(reply.status().is_success(), "{}", reply.status());
    reply.bytes().await?;
    Ok(())
}

/// `docker run --rm <image> echo hi` through the Engine API: create, attach,
/// start, read to the end, remove.
pub async fn docker_run(docker: &Docker, image: &str) -> anyhow::Result<()> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["echo".into(), "hi".into()]),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(None::<bollard::query_parameters::CreateContainerOptions>, body)
        .await?
        .id;
    // Attached before the start, the stream sees all the output; asking for
    // the logs too could deliver a line twice (once logged, once streamed).
    let attach = AttachContainerOptionsBuilder::default()
        .stdout(true)
        .stream(true)
        .build();
    let mut attached = docker.attach_container(&id, Some(attach)).await?;
    docker
        .start_container(&id, None::<bollard::query_parameters::StartContainerOptions>)
        .await?;
    let mut stdout = Vec::new();
    while let Some(chunk) = attached.output.next().await {
        if let LogOutput::StdOut { message } = chunk? {
            stdout.extend_from_slice(&message);
        }
    }
    docker
        .remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).build()))
        .await?;
    anyhow::ensure!(stdout == b"hi\n", "docker run gave {stdout:?}");
    Ok(())
}

/// Runs `worker(slot)` in `concurrency` tasks, each in a loop, for `duration`;
/// returns commands per second and the latency of every command.
pub async fn throughput<F, Fut>(concurrency: usize, duration: Duration, worker: F) -> anyhow::Result<Throughput>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let worker = Arc::new(worker);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|slot| {
            let worker = Arc::clone(&worker);
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    samples.push(timed(worker(slot)).await?);
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Throughput {
        concurrency,
        commands: samples.len(),
        per_second: samples.len() as f64 / elapsed,
        latency: Latency::of(samples),
    })
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// RSS of a sandbox's agent (its PID 1), read on the host.
pub async fn agent_rss_kib(docker: &Docker, container: &str) -> anyhow::Result<u64> {
    let info = docker.inspect_container(container, None).await?;
    let pid = info
        .state
        .and_then(|s| s.pid)
        .ok_or_else(|| anyhow::anyhow!("no pid"))?;
    rss_kib(pid as u32)
}

/// The runtime of a throwaway bench instance, with one sandbox.
pub async fn bench_sandbox(runtime: &DockerRuntime, session: &str) -> anyhow::Result<String> {
    let request = brig_core::CreateSandbox {
        owner: "bench".into(),
        session_id: session.into(),
        options: Default::default(),
        store: String::new(),
    };
    Ok(runtime.create(&request).await?.0.id)
}
