//! Several nodes: the forwarded hop's cost (a warm `/execute` sent to the
//! session's own node, and to another node that forwards it, in turns), and
//! sessions/s and commands/s with one, two and three nodes. The nodes are
//! brig-api processes on this machine's one engine (each a node id, a port and
//! its own containers' label): the hop is real HTTP over loopback, but the
//! totals share two cores and one dockerd, so they are bounded by the machine,
//! not multiplied by the nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use brig_testkit::{free_port, new_instance, remove_instance_containers, BrigApi, RedisServer};
use serde::Serialize;
use serde_json::{json, Value};

use crate::scenarios::{http_exec, raw_exec, series, throughput, timed, WARM_UP};
use crate::stats::{Latency, Throughput};
use crate::{api_env, row, start_api, throughput_row, Options, KEY};

const SECRET: &str = "bench-node-secret-0123456789abcdef0123";

/// New sessions asked for at once in the sessions/s series.
const CREATORS: usize = 8;

#[derive(Debug, Serialize)]
pub struct NodesReport {
    pub raw_engine_exec: Latency,
    pub warm_local: Latency,
    pub warm_forwarded: Latency,
    /// By number of nodes: new sessions per second, 8 at once.
    pub sessions_per_second: Vec<(usize, f64)>,
    /// By number of nodes: warm commands per second, 32 sessions at once.
    pub commands: Vec<(usize, Throughput)>,
}

/// `n` nodes of one instance on this machine's engine.
fn fleet(options: &Options, redis: &RedisServer, n: usize) -> (String, Vec<BrigApi>) {
    let instance = new_instance();
    let nodes = (0..n)
        .map(|i| {
            let port = free_port().to_string();
            let (id, addr) = (format!("b{i}"), format!("http://127.0.0.1:{port}"));
            let env = api_env(
                redis,
                &options.image,
                &[
                    ("PORT", port.as_str()),
                    ("BRIG_NODE_ID", id.as_str()),
                    ("BRIG_NODE_ADDR", addr.as_str()),
                    ("BRIG_NODE_SECRET", SECRET),
                    ("NODE_HEARTBEAT_SECONDS", "1"),
                    ("NODE_LOSS_SECONDS", "5"),
                ],
            );
            start_api(&env, Some(&instance))
        })
        .collect();
    (instance, nodes)
}

/// The node that served `session` (its `X-Brig-Node`), by index.
async fn owner(client: &reqwest::Client, nodes: &[BrigApi], session: &str) -> anyhow::Result<usize> {
    let reply = client
        .post(format!("{}/execute", nodes[0].base))
        .header("x-api-key", KEY)
        .json(&json!({"command": "echo hi", "session_id": session}))
        .send()
        .await?;
    anyhow::ensure!(reply.status().is_success(), "{}", reply.status());
    let node = reply
        .headers()
        .get("x-brig-node")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix('b')?.parse::<usize>().ok())
        .ok_or_else(|| anyhow::anyhow!("no X-Brig-Node"))?;
    Ok(node)
}

/// Waits until every node sees all `n` live (placement needs the registry).
async fn all_live(client: &reqwest::Client, nodes: &[BrigApi]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    // Placement reads the registry at most twice a heartbeat; a new node is
    // in it after its first beat.
    while Instant::now() < deadline {
        let mut live = 0;
        for (i, node) in nodes.iter().enumerate() {
            let reply = client
                .post(format!("{}/execute", node.base))
                .header("x-api-key", KEY)
                .json(&json!({"command": "echo hi", "session_id": format!("probe-{i}")}))
                .send()
                .await?;
            live += usize::from(reply.status().is_success());
        }
        if live == nodes.len() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the nodes did not come up")
}

pub async fn measure(
    options: &Options,
    docker: &bollard::Docker,
    sandbox: &str,
    redis: &RedisServer,
) -> anyhow::Result<NodesReport> {
    let client = reqwest::Client::new();
    println!(
        "\nnodes (brig-api processes on this machine's engine; {} s per throughput series)",
        options.throughput_for.as_secs()
    );
    println!(
        "{:<38} {:>9} {:>9} {:>9} {:>6}",
        "latency (ms)", "p50", "p95", "p99", "n"
    );
    let raw_engine_exec = series(options.warm.min(300), |_| raw_exec(docker, sandbox)).await?;
    row("raw engine exec (echo hi)", &raw_engine_exec);

    // The hop: one session, asked of its own node and of the other, in turns.
    let (instance, nodes) = fleet(options, redis, 2);
    let measured = async {
        all_live(&client, &nodes).await?;
        let home = owner(&client, &nodes, "hop").await?;
        let (local, remote) = (&nodes[home].base, &nodes[1 - home].base);
        let mut samples: [Vec<Duration>; 2] = Default::default();
        for round in 0..WARM_UP + options.warm {
            let taken = [
                timed(http_exec(&client, local, KEY, "hop")).await?,
                timed(http_exec(&client, remote, KEY, "hop")).await?,
            ];
            if round >= WARM_UP {
                for (series, taken) in samples.iter_mut().zip(taken) {
                    series.push(taken);
                }
            }
        }
        anyhow::Ok(samples.map(Latency::of))
    }
    .await;
    drop(nodes);
    remove_instance_containers(&instance);
    let [warm_local, warm_forwarded] = measured?;
    row("warm /execute, session's own node", &warm_local);
    row("warm /execute, forwarded by another", &warm_forwarded);

    let mut sessions_per_second = Vec::new();
    let mut commands = Vec::new();
    for n in 1..=3 {
        let (instance, nodes) = fleet(options, redis, n);
        let measured = scale(options, &client, &nodes, n).await;
        drop(nodes);
        remove_instance_containers(&instance);
        let (created, ran) = measured?;
        println!(
            "{:<38} {created:>9.1}/s",
            format!("new sessions, {n} node(s), {CREATORS} at once")
        );
        throughput_row(&format!("warm commands, {n} node(s), 32 sessions"), &ran);
        sessions_per_second.push((n, created));
        commands.push((n, ran));
    }
    Ok(NodesReport {
        raw_engine_exec,
        warm_local,
        warm_forwarded,
        sessions_per_second,
        commands,
    })
}

/// New sessions per second (8 at once, asked of the nodes in turn), then warm
/// commands per second over 32 of them (each caller asking its own node).
async fn scale(
    options: &Options,
    client: &reqwest::Client,
    nodes: &[BrigApi],
    n: usize,
) -> anyhow::Result<(f64, Throughput)> {
    all_live(client, nodes).await?;
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(|node| node.base.clone()).collect());
    let count = options.cold.max(CREATORS) * 2;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let creators: Vec<_> = (0..CREATORS)
        .map(|_| {
            let (client, bases, next) = (client.clone(), Arc::clone(&bases), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(());
                    }
                    http_exec(&client, &bases[i % bases.len()], KEY, &format!("new-{n}-{i}")).await?;
                }
            })
        })
        .collect();
    for creator in creators {
        creator.await??;
    }
    let created = count as f64 / started.elapsed().as_secs_f64();
    for s in 0..32 {
        http_exec(client, &bases[s % bases.len()], KEY, &format!("load-{s}")).await?;
    }
    let client = client.clone();
    let ran = throughput(32, options.throughput_for, move |slot| {
        let (client, bases) = (client.clone(), Arc::clone(&bases));
        async move {
            http_exec(&client, &bases[slot % bases.len()], KEY, &format!("load-{slot}"))
                .await
                .map(drop)
        }
    })
    .await?;
    Ok((created, ran))
}

impl NodesReport {
    pub fn ratios(&self) -> Value {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        json!({
            "forwarded_over_local_warm_p50": ratio(self.warm_forwarded.p50_ms, self.warm_local.p50_ms),
            "forwarded_minus_local_warm_p50_ms": self.warm_forwarded.p50_ms - self.warm_local.p50_ms,
            "raw_exec_over_forwarded_warm_p50": ratio(self.raw_engine_exec.p50_ms, self.warm_forwarded.p50_ms),
            "raw_exec_over_local_warm_p50": ratio(self.raw_engine_exec.p50_ms, self.warm_local.p50_ms),
        })
    }
}
