//! Egress through the agent's proxy: bytes per second through the tunnel, with
//! one connection and four, beside the same bytes straight over the host's
//! loopback and through an Engine API exec stream; and the warm `echo` of the
//! same session while a download runs, beside the same `echo` without one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::scenarios::{http_exec, series};
use crate::stats::Latency;

/// Where the upstream listens: the host's loopback, outside the sandbox's
/// `NO_PROXY` (which names 127.0.0.1).
const UPSTREAM: &str = "127.0.0.2";
/// The session the egress series run in.
const SESSION: &str = "egress";

/// Bytes per second of one way of moving the same bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rate {
    pub connections: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_second: f64,
}

impl Rate {
    fn of(connections: usize, bytes: u64, taken: Duration) -> Rate {
        let seconds = taken.as_secs_f64();
        Rate {
            connections,
            bytes,
            seconds,
            mb_per_second: bytes as f64 / seconds / 1e6,
        }
    }
}

/// The egress figures of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Egress {
    /// The bench reading the upstream itself over the host's loopback.
    pub host_loopback: Rate,
    /// `head -c N /dev/zero` in a sandbox, read through the Engine API's exec
    /// stream: how fast Docker's own relay carries a sandbox's bytes.
    pub engine_exec_stream: Rate,
    pub tunnel_1: Rate,
    pub tunnel_4: Rate,
    pub echo_quiet: Latency,
    pub echo_during_download: Latency,
}

/// An upstream answering `GET /<n>` with `n` bytes, then closing.
pub async fn upstream() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((UPSTREAM, 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock));
        }
    });
    Ok(port)
}

async fn serve(mut sock: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if head.len() + n > 16 * 1024 => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut left: u64 = path.trim_start_matches('/').parse().unwrap_or(0);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {left}\r\nConnection: close\r\n\r\n");
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b'x'; 64 * 1024];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if sock.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = sock.shutdown().await;
}

/// What brig-api needs for the egress series: wget and sh allowed, the
/// upstream grantable although private, no byte cap in the way.
pub fn api_env() -> [(&'static str, &'static str); 4] {
    [
        ("ALLOWED_COMMANDS", "echo,wget,sh"),
        ("EGRESS_ALLOWED", UPSTREAM),
        ("EGRESS_ALLOW_PRIVATE", "true"),
        ("EGRESS_MAX_BYTES", "1024g"),
    ]
}

/// Runs every egress series against `base`, an API started with [`api_env`].
pub async fn measure(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    docker: &Docker,
    sandbox: &str,
    bytes: u64,
    echoes: usize,
) -> anyhow::Result<Egress> {
    let port = upstream().await?;
    let created = client
        .post(format!("{base}/sessions"))
        .header("x-api-key", key)
        .json(&json!({"session_id": SESSION, "network": {"allow": [UPSTREAM]}}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating the egress session: {}",
        created.status()
    );

    let host_loopback = best_of(3, || host_download(port, bytes)).await?;
    let engine_exec_stream = best_of(3, || exec_stream(docker, sandbox, bytes)).await?;
    let (owned_client, owned_base, owned_key) = (client.clone(), base.to_string(), key.to_string());
    let wget = move |n: u64| {
        let (client, base, key) = (owned_client.clone(), owned_base.clone(), owned_key.clone());
        async move { download(&client, &base, &key, port, n).await }
    };
    wget(1024).await?;
    let tunnel_1 = best_of(3, || async {
        let started = Instant::now();
        wget(bytes).await?;
        Ok(Rate::of(1, bytes, started.elapsed()))
    })
    .await?;
    let tunnel_4 = best_of(3, || async {
        let started = Instant::now();
        let each = bytes / 4;
        let all = futures_util::future::join_all((0..4).map(|_| wget(each))).await;
        all.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Rate::of(4, each * 4, started.elapsed()))
    })
    .await?;

    let echo_quiet = series(echoes, |_| http_exec(client, base, key, SESSION)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let downloading = {
        let stop = Arc::clone(&stop);
        let wget = wget.clone();
        tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                wget(bytes).await?;
                rounds += 1;
            }
            anyhow::Ok(rounds)
        })
    };
    // Until the first bytes flow.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let echo_during_download = series(echoes, |_| http_exec(client, base, key, SESSION)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = downloading.await??;
    let echo_during_download = echo_during_download?;
    anyhow::ensure!(rounds > 0, "no download ran beside the echoes");
    Ok(Egress {
        host_loopback,
        engine_exec_stream,
        tunnel_1,
        tunnel_4,
        echo_quiet,
        echo_during_download,
    })
}

/// The fastest of `n` runs (the machine's noise only ever slows a run down).
async fn best_of<F, Fut>(n: usize, mut once: F) -> anyhow::Result<Rate>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Rate>>,
{
    let mut best: Option<Rate> = None;
    for _ in 0..n {
        let rate = once().await?;
        if best.is_none_or(|b| rate.mb_per_second > b.mb_per_second) {
            best = Some(rate);
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no run"))
}

/// `wget` of `bytes` from the upstream in the egress session, counted by `wc`.
async fn download(client: &reqwest::Client, base: &str, key: &str, port: u16, bytes: u64) -> anyhow::Result<()> {
    let command = format!("sh -c \"wget -q -O - http://{UPSTREAM}:{port}/{bytes} | wc -c\"");
    let reply = client
        .post(format!("{base}/execute"))
        .header("x-api-key", key)
        .json(&json!({"command": command, "session_id": SESSION, "timeout": 300}))
        .send()
        .await?;
    let status = reply.status();
    let body: Value = reply.json().await?;
    anyhow::ensure!(
        status.is_success() && body["stdout"].as_str().map(str::trim) == Some(&bytes.to_string()),
        "download of {bytes} bytes: {status}: {body}"
    );
    Ok(())
}

/// The bench reading the upstream itself: the ceiling on this machine.
async fn host_download(port: u16, bytes: u64) -> anyhow::Result<Rate> {
    let started = Instant::now();
    let mut sock = TcpStream::connect((UPSTREAM, port)).await?;
    sock.write_all(format!("GET /{bytes} HTTP/1.1\r\nHost: {UPSTREAM}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        match sock.read(&mut buf).await? {
            0 => break,
            n => read += n as u64,
        }
    }
    anyhow::ensure!(read > bytes, "read {read} bytes of {bytes} and a head");
    Ok(Rate::of(1, bytes, started.elapsed()))
}

/// `head -c bytes /dev/zero` in `container`, read through the Engine API.
pub async fn exec_stream(docker: &Docker, container: &str, bytes: u64) -> anyhow::Result<Rate> {
    let started = Instant::now();
    let options = CreateExecOptions {
        cmd: Some(vec![
            "head".to_string(),
            "-c".to_string(),
            bytes.to_string(),
            "/dev/zero".to_string(),
        ]),
        attach_stdout: Some(true),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await?;
    let mut read = 0u64;
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await? {
        while let Some(chunk) = output.next().await {
            if let LogOutput::StdOut { message } = chunk? {
                read += message.len() as u64;
            }
        }
    }
    anyhow::ensure!(read == bytes, "the exec stream carried {read} bytes of {bytes}");
    Ok(Rate::of(1, bytes, started.elapsed()))
}

/// Upload and download rates of one file through the streamed files API.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FileRates {
    pub upload: Rate,
    pub download: Rate,
}

/// What brig-api needs to hold the files series: a workspace that fits them.
pub fn files_api_env() -> [(&'static str, &'static str); 2] {
    [("CONTAINER_WORKSPACE_SIZE", "512m"), ("CONTAINER_MEM_LIMIT", "1g")]
}

/// `PUT` then `GET /sessions/{id}/files/...` of `bytes`, best of three each.
pub async fn file_rates(client: &reqwest::Client, base: &str, key: &str, bytes: u64) -> anyhow::Result<FileRates> {
    let created = client
        .post(format!("{base}/sessions"))
        .header("x-api-key", key)
        .json(&json!({"session_id": "files"}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating the files session: {}",
        created.status()
    );
    let url = format!("{base}/sessions/files/files/blob");
    let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let upload = best_of(3, || async {
        let chunks = (bytes / chunk.len() as u64) as usize;
        let rest = chunk.slice(..(bytes % chunk.len() as u64) as usize);
        let body = futures_util::stream::iter(
            std::iter::repeat_n(chunk.clone(), chunks)
                .chain(std::iter::once(rest))
                .map(Ok::<_, std::io::Error>),
        );
        let started = Instant::now();
        let reply = client
            .put(&url)
            .header("x-api-key", key)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        anyhow::ensure!(reply.status().is_success(), "upload: {}", reply.status());
        Ok(Rate::of(1, bytes, started.elapsed()))
    })
    .await?;
    let download = best_of(3, || async {
        let started = Instant::now();
        let mut reply = client.get(&url).header("x-api-key", key).send().await?;
        anyhow::ensure!(reply.status().is_success(), "download: {}", reply.status());
        let mut read = 0u64;
        while let Some(chunk) = reply.chunk().await? {
            read += chunk.len() as u64;
        }
        anyhow::ensure!(read == bytes, "downloaded {read} of {bytes} bytes");
        Ok(Rate::of(1, bytes, started.elapsed()))
    })
    .await?;
    Ok(FileRates { upload, download })
}
