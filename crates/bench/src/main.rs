//! brig-bench: measures, in one run on this machine, brig's command paths side by
//! side with the raw Docker Engine API, and prints a table (JSON to a file).
//!
//!   cargo build --release --workspace --bins && target/release/brig-bench [--quick] [--json FILE]
//!
//! Needs the sandbox image (images/sandbox/build.sh), redis-server and a
//! Docker engine. Starts its own redis-server, brig-api (one without and one
//! with a warm pool) and brig-cleanup-worker, on a throwaway BRIG_INSTANCE that
//! it removes afterwards.

mod durability;
mod egress;
mod nodes;
mod placement;
mod probes;
mod scenarios;
mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use brig_core::config::{DockerConfig, SandboxConfig};
use brig_core::DockerRuntime;
use brig_testkit::{env_refs, instance_containers, remove_instance_containers, BrigApi, CleanupWorker, RedisServer};
use serde_json::{json, Value};

use crate::probes::{pid_of, pids_of, CpuMeter, Monitor, Probe};
use crate::scenarios::*;
use crate::stats::{Latency, Throughput};

const KEY: &str = "bench-key-0123456789abcdef";

/// Idle time before each pooled cold start, so the refill (one container at a
/// time, ~150 ms each here) has put a spare back: the series measures a session
/// start when the pool has one, which is what the pool is for.
const POOL_PACE: Duration = Duration::from_millis(500);

/// Measures brig's command paths beside the raw Docker Engine API, in one run
/// on this machine, and prints a table (and JSON). Needs the sandbox image,
/// redis-server and a Docker engine; starts its own brig processes on a
/// throwaway BRIG_INSTANCE and removes it afterwards.
#[derive(clap::Parser)]
#[command(name = "brig-bench", version)]
struct Cli {
    /// Short series (a smoke run, not figures to report).
    #[arg(long)]
    quick: bool,
    /// Where the results go as JSON.
    #[arg(long, value_name = "FILE", default_value = "bench-results.json")]
    json: String,
    /// Only one section: `durability` (snapshots, forks, suspend, resume),
    /// `nodes` (the forwarded hop; one, two and three nodes; placement) or
    /// `placement` (the placement policies, simulated; no engine needed).
    #[arg(long, value_name = "SECTION", value_parser = ["durability", "nodes", "placement"])]
    only: Option<String>,
}

struct Options {
    warm: usize,
    cold: usize,
    throughput_for: Duration,
    memory_sessions: usize,
    reap_sessions: usize,
    egress_bytes: u64,
    /// Rounds of each durability series (per workspace size).
    durability_rounds: usize,
    only: Option<String>,
    json: String,
    image: String,
}

fn options() -> anyhow::Result<Options> {
    let Cli { quick, json, only } = <Cli as clap::Parser>::parse();
    Ok(Options {
        warm: if quick { 50 } else { 500 },
        cold: if quick { 5 } else { 30 },
        throughput_for: Duration::from_secs(if quick { 1 } else { 5 }),
        memory_sessions: if quick { 10 } else { 100 },
        reap_sessions: if quick { 10 } else { 50 },
        egress_bytes: if quick { 20_000_000 } else { 200_000_000 },
        durability_rounds: if quick { 1 } else { 5 },
        only,
        json,
        image: std::env::var("CONTAINER_IMAGE").unwrap_or_else(|_| "brig-sandbox-minimal:latest".into()),
    })
}

fn api_env(redis: &RedisServer, image: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("REDIS_URL".to_string(), redis.url()),
        ("API_KEYS".into(), format!("bench:{KEY}")),
        ("CONTAINER_IMAGE".into(), image.into()),
        ("RATE_LIMIT_REQUESTS".into(), "1000000".into()),
        ("MAX_SESSIONS".into(), "1000".into()),
        ("MAX_SESSIONS_PER_USER".into(), "1000".into()),
        ("RUST_LOG".into(), "warn,brig_api=info".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn start_api(env: &[(String, String)], instance: Option<&str>) -> BrigApi {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match instance {
        Some(instance) => BrigApi::start_in(instance, &env),
        None => BrigApi::start(&env),
    }
}

fn row(name: &str, latency: &Latency) {
    println!(
        "{name:<38} {:>9.2} {:>9.2} {:>9.2} {:>6}",
        latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.n
    );
}

fn throughput_row(name: &str, t: &Throughput) {
    println!(
        "{name:<38} {:>9.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} commands)",
        t.per_second, t.latency.p50_ms, t.latency.p99_ms, t.commands
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    if options.only.as_deref() == Some("placement") {
        let report = json!({ "placement": placement::compare() });
        std::fs::write(&options.json, serde_json::to_string_pretty(&report)?)?;
        println!("\nwrote {}", options.json);
        return Ok(());
    }
    let docker = DockerConfig::from_env()
        .connect()
        .await
        .context("connecting to Docker")?;
    let version = docker.version().await?;
    let machine = json!({
        "cpus": std::thread::available_parallelism()?.get(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "docker": version.version,
        "api": version.api_version,
        "image": options.image,
    });
    println!("brig-bench on {machine}");
    let mut report = json!({ "machine": machine });

    let redis = RedisServer::start();
    let api = start_api(&api_env(&redis, &options.image, &[]), None);
    let instance = api.instance.clone();
    let result = match options.only.as_deref() {
        // One section, beside a sandbox of its own for the raw figures.
        Some(section) => match direct(&options, &api, "runc", &format!("bench-{section}")).await {
            Ok((_runtime, sandbox)) if section == "nodes" => {
                run_nodes(&options, &docker, &redis, &sandbox, &mut report).await
            }
            Ok((_runtime, sandbox)) => run_durability(&options, &docker, &redis, &sandbox, &mut report).await,
            Err(err) => Err(err),
        },
        None => run(&options, &docker, &redis, &api, &mut report).await,
    };
    drop(api);
    remove_instance_containers(&instance);
    result?;
    std::fs::write(&options.json, serde_json::to_string_pretty(&report)?)?;
    println!("\nwrote {}", options.json);
    Ok(())
}

async fn run(
    options: &Options,
    docker: &bollard::Docker,
    redis: &RedisServer,
    api: &BrigApi,
    report: &mut Value,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = api.base.clone();
    let (runtime, sandbox) = direct(options, api, "runc", "bench-direct").await?;

    println!(
        "\n{:<38} {:>9} {:>9} {:>9} {:>6}",
        "latency (ms)", "p50", "p95", "p99", "n"
    );
    let raw = series(options.warm.min(300), |_| raw_exec(docker, &sandbox)).await?;
    row("raw engine exec (echo hi)", &raw);
    // In turns, one of each per round, so that the machine's drift during
    // the run weighs on the three alike: their differences are the point.
    http_exec(&client, &base, KEY, "warm").await?;
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..WARM_UP + options.warm {
        let taken = [
            timed(channel_exec(&runtime, &sandbox)).await?,
            timed(channel_no_spawn(&runtime, &sandbox)).await?,
            timed(http_exec(&client, &base, KEY, "warm")).await?,
        ];
        if round >= WARM_UP {
            for (series, taken) in samples.iter_mut().zip(taken) {
                series.push(taken);
            }
        }
    }
    let [channel, no_spawn, warm] = samples.map(Latency::of);
    row("agent channel (brig-core, no HTTP)", &channel);
    row("agent channel, no spawn (list a dir)", &no_spawn);
    row("brig HTTP warm (POST /execute, Redis)", &warm);
    // Counted on a series of its own: MONITOR slows Redis down.
    let monitor = Monitor::start(redis.port)?;
    let counted = 100;
    for _ in 0..counted {
        http_exec(&client, &base, KEY, "warm").await?;
    }
    let redis_commands = monitor.finish()?;
    let per_execute = |n: u64| n as f64 / counted as f64;
    println!(
        "Redis commands per warm /execute       {:>9.2} sent, {:.2} more inside scripts",
        per_execute(redis_commands.sent),
        per_execute(redis_commands.in_scripts)
    );

    let cold = series(options.cold, |i| {
        let (client, base) = (client.clone(), base.clone());
        async move { http_exec(&client, &base, KEY, &format!("cold-{i}")).await }
    })
    .await?;
    row("cold session, WARM_POOL_SIZE=0", &cold);
    let pool_api = start_api(&api_env(redis, &options.image, &[("WARM_POOL_SIZE", "4")]), None);
    let pooled = {
        let base = pool_api.base.clone();
        // Let the pool fill, and pace the claims so that refills keep up: this is
        // the latency of a new session when a pooled container is there.
        tokio::time::sleep(Duration::from_secs(3)).await;
        paced_series(options.cold, POOL_PACE, |i| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let body = http_exec(&client, &base, KEY, &format!("pooled-{i}")).await?;
                anyhow::ensure!(body["session_created"] == true, "{body}");
                Ok(())
            }
        })
        .await?
    };
    row("cold session, WARM_POOL_SIZE=4", &pooled);
    let pool_instance = pool_api.instance.clone();
    drop(pool_api);
    remove_instance_containers(&pool_instance);
    let run_rm = series(options.cold, |_| docker_run(docker, &options.image)).await?;
    row("docker run --rm (Engine API reference)", &run_rm);

    println!("\nthroughput (echo hi, {} s each)", options.throughput_for.as_secs());
    let mut throughputs = Vec::new();
    let mut processes = vec![Probe::of("brig-api", api.service.pid())];
    processes.extend(redis.pid().map(|pid| Probe::of("redis-server", pid)));
    processes.extend(
        ["dockerd", "containerd"]
            .into_iter()
            .filter_map(|name| Some(Probe::of(name, pid_of(name)?))),
    );
    let mut cpu_per_request = Vec::new();
    // brig-api's CPU per request by request and number of callers.
    let mut api_cpu = Vec::new();
    for concurrency in [1usize, 8, 32] {
        for s in 0..concurrency {
            http_exec(&client, &base, KEY, &format!("load-{s}")).await?;
        }
        let (client, base) = (client.clone(), base.clone());
        // The shims relaying attach streams and the agents (with the commands
        // they reaped) of the sessions just created, too.
        let mut processes = processes.clone();
        processes.extend(
            pids_of("containerd-shim")
                .into_iter()
                .map(|pid| Probe::of("containerd-shims", pid)),
        );
        processes.extend(pids_of("brig-agent").into_iter().map(|pid| Probe {
            name: "sandbox agents and their commands",
            pid,
            children: true,
        }));
        processes.push(Probe::of("brig-bench (the client)", std::process::id()));
        let cpu = CpuMeter::start(&processes)?;
        let t = throughput(concurrency, options.throughput_for, move |slot| {
            let (client, base) = (client.clone(), base.clone());
            async move { http_exec(&client, &base, KEY, &format!("load-{slot}")).await.map(drop) }
        })
        .await?;
        throughput_row(&format!("brig HTTP, {concurrency} sessions"), &t);
        throughputs.push(json!({"mode": "http_sessions", "throughput": t}));
        let used = cpu.per_request_us(t.commands)?;
        api_cpu.push(json!({"request": "execute", "concurrency": concurrency, "us": used[0].1}));
        if concurrency == 32 {
            cpu_per_request = used;
        }
    }
    let one_session = {
        let (client, base) = (client.clone(), base.clone());
        throughput(32, options.throughput_for, move |_| {
            let (client, base) = (client.clone(), base.clone());
            async move { http_exec(&client, &base, KEY, "load-0").await.map(drop) }
        })
        .await?
    };
    throughput_row("brig HTTP, 32 commands in 1 session", &one_session);
    throughputs.push(json!({"mode": "http_one_session", "throughput": one_session}));
    let mut raw_sandboxes = Vec::new();
    for s in 0..8 {
        raw_sandboxes.push(bench_sandbox(&runtime, &format!("raw-{s}")).await?);
    }
    let raw_sandboxes = Arc::new(raw_sandboxes);
    let raw32 = {
        let docker = docker.clone();
        throughput(32, options.throughput_for, move |slot| {
            let (docker, sandboxes) = (docker.clone(), Arc::clone(&raw_sandboxes));
            async move { raw_exec(&docker, &sandboxes[slot % sandboxes.len()]).await }
        })
        .await?
    };
    throughput_row("raw engine exec, 32 concurrent", &raw32);
    throughputs.push(json!({"mode": "raw_exec", "throughput": raw32}));
    // The floor under every request: brig-api's HTTP stack alone (every
    // layer, no authentication, store or sandbox), one caller and 32.
    for concurrency in [1usize, 32] {
        let cpu = CpuMeter::start(&processes[..1])?;
        let (client, base) = (client.clone(), base.clone());
        let health = throughput(concurrency, options.throughput_for, move |_| {
            let (client, base) = (client.clone(), base.clone());
            async move { http_health(&client, &base).await }
        })
        .await?;
        throughput_row(&format!("brig HTTP GET /health, {concurrency} callers"), &health);
        let us = cpu.per_request_us(health.commands)?[0].1;
        api_cpu.push(json!({"request": "health", "concurrency": concurrency, "us": us}));
        throughputs.push(json!({"mode": "http_health", "throughput": health}));
    }
    let http32 = throughputs[2]["throughput"]["per_second"].as_f64().unwrap_or(0.0);
    let per_second = |i: usize| throughputs[i]["throughput"]["per_second"].as_f64().unwrap_or(0.0);
    let (http1, http8) = (per_second(0), per_second(1));
    println!("\nCPU per warm /execute at 32 sessions (from /proc/<pid>/stat)");
    for (name, us) in &cpu_per_request {
        println!("  {name:<36} {us:>9.0} µs");
    }
    println!("brig-api CPU per request, by callers at once");
    for row in &api_cpu {
        let label = format!("  {} at {}", row["request"].as_str().unwrap_or(""), row["concurrency"]);
        println!("{label:<38} {:>9.0} µs", row["us"].as_f64().unwrap_or(f64::NAN));
    }

    println!("\nmemory");
    let idle_api = start_api(&api_env(redis, &options.image, &[]), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = rss_kib(idle_api.service.pid())?;
    http_exec(&client, &idle_api.base, KEY, "mem-0").await?;
    let one_kib = rss_kib(idle_api.service.pid())?;
    for s in 1..=options.memory_sessions {
        http_exec(&client, &idle_api.base, KEY, &format!("mem-{s}")).await?;
    }
    let many_kib = rss_kib(idle_api.service.pid())?;
    let per_session_kib = (many_kib as f64 - one_kib as f64) / options.memory_sessions as f64;
    let agent_kib = agent_rss_kib(docker, &sandbox).await?;
    println!(
        "brig-api RSS idle                      {:>9.1} MiB",
        idle_kib as f64 / 1024.0
    );
    println!(
        "brig-api RSS per live session          {per_session_kib:>9.1} KiB  ({} → {} KiB over {} sessions)",
        one_kib, many_kib, options.memory_sessions
    );
    println!(
        "agent RSS in a sandbox                 {:>9.1} MiB",
        agent_kib as f64 / 1024.0
    );
    let idle_instance = idle_api.instance.clone();
    drop(idle_api);
    remove_instance_containers(&idle_instance);

    println!("\nreaping");
    let reaping = reaping(options, redis, &client).await?;
    row(
        &format!("TTL expiry → container gone ({})", options.reap_sessions),
        &reaping,
    );

    println!(
        "\negress (MB/s, best of 3 runs of {} MB)",
        options.egress_bytes / 1_000_000
    );
    let egress = {
        let api = start_api(&api_env(redis, &options.image, &egress::api_env()), None);
        let measured = egress::measure(
            &client,
            &api.base,
            KEY,
            docker,
            &sandbox,
            options.egress_bytes,
            options.warm.min(200),
        )
        .await;
        let instance = api.instance.clone();
        drop(api);
        remove_instance_containers(&instance);
        measured?
    };
    for (name, rate) in [
        ("host loopback (the bench reads itself)", &egress.host_loopback),
        ("Engine API exec stream (head -c)", &egress.engine_exec_stream),
        ("tunnel, 1 connection (wget)", &egress.tunnel_1),
        ("tunnel, 4 connections (wget)", &egress.tunnel_4),
    ] {
        println!("{name:<38} {:>9.1} MB/s", rate.mb_per_second);
    }
    row("warm echo, egress session, quiet", &egress.echo_quiet);
    row("warm echo, same session, downloading", &egress.echo_during_download);

    println!(
        "\nfiles (MB/s, best of 3 of {} MB, streamed)",
        options.egress_bytes / 1_000_000
    );
    let files = {
        let api = start_api(&api_env(redis, &options.image, &egress::files_api_env()), None);
        let measured = egress::file_rates(&client, &api.base, KEY, options.egress_bytes).await;
        let instance = api.instance.clone();
        drop(api);
        remove_instance_containers(&instance);
        measured?
    };
    println!(
        "{:<38} {:>9.1} MB/s",
        "PUT /sessions/{id}/files (upload)", files.upload.mb_per_second
    );
    println!(
        "{:<38} {:>9.1} MB/s",
        "GET /sessions/{id}/files (download)", files.download.mb_per_second
    );

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let ratios = json!({
        "http_warm_over_channel_p50": ratio(warm.p50_ms, channel.p50_ms),
        "http_warm_minus_channel_p50_ms": warm.p50_ms - channel.p50_ms,
        "raw_exec_over_http_warm_p50": ratio(raw.p50_ms, warm.p50_ms),
        "cold_pool_over_http_warm_p50": ratio(pooled.p50_ms, warm.p50_ms),
        "cold_no_pool_over_cold_pool_p50": ratio(cold.p50_ms, pooled.p50_ms),
        "throughput_32_sessions_over_raw_32": ratio(http32, raw32.per_second),
        "throughput_8_sessions_over_1": ratio(http8, http1),
        "channel_spawn_minus_no_spawn_p50_ms": channel.p50_ms - no_spawn.p50_ms,
        "tunnel_1_over_engine_exec_stream": ratio(egress.tunnel_1.mb_per_second, egress.engine_exec_stream.mb_per_second),
        "tunnel_4_over_engine_exec_stream": ratio(egress.tunnel_4.mb_per_second, egress.engine_exec_stream.mb_per_second),
        "tunnel_1_over_host_loopback": ratio(egress.tunnel_1.mb_per_second, egress.host_loopback.mb_per_second),
        "echo_p50_downloading_over_quiet": ratio(egress.echo_during_download.p50_ms, egress.echo_quiet.p50_ms),
        "file_upload_over_engine_exec_stream": ratio(files.upload.mb_per_second, egress.engine_exec_stream.mb_per_second),
        "file_download_over_engine_exec_stream": ratio(files.download.mb_per_second, egress.engine_exec_stream.mb_per_second),
    });
    println!("\nratios (same run)");
    for (name, value) in ratios.as_object().unwrap() {
        println!("  {name:<40} {:>8.2}", value.as_f64().unwrap_or(f64::NAN));
    }
    run_durability(options, docker, redis, &sandbox, report).await?;
    run_nodes(options, docker, redis, &sandbox, report).await?;
    report["latency_ms"] = json!({
        "raw_engine_exec": raw, "agent_channel": channel, "agent_channel_no_spawn": no_spawn, "http_warm": warm,
        "cold_no_pool": cold, "cold_pool": pooled, "docker_run_rm": run_rm,
        "reaping_after_ttl": reaping,
    });
    report["throughput"] = json!(throughputs);
    report["egress"] = json!(egress);
    report["files"] = json!(files);
    report["memory_kib"] = json!({
        "api_idle": idle_kib, "api_one_session": one_kib, "api_many_sessions": many_kib,
        "sessions": options.memory_sessions, "api_per_session": per_session_kib, "agent": agent_kib,
    });
    if let Some(object) = report["ratios"].as_object().cloned() {
        let mut ratios = ratios;
        ratios.as_object_mut().unwrap().extend(object);
        report["ratios"] = ratios;
    } else {
        report["ratios"] = ratios;
    }
    report["redis_commands_per_warm_execute"] = json!({
        "sent": per_execute(redis_commands.sent),
        "in_scripts": per_execute(redis_commands.in_scripts),
    });
    report["api_cpu_us_per_request"] = json!(api_cpu);
    report["cpu_us_per_execute_at_32_sessions"] = cpu_per_request
        .iter()
        .map(|(name, us)| (name.to_string(), json!(us)))
        .collect::<serde_json::Map<_, _>>()
        .into();

    println!("\ngVisor (runsc) beside runc, same run");
    if !runtime.has_runtime("runsc").await? {
        println!("  the engine has no runsc runtime (scripts/gvisor.sh registers it): not measured");
        report["gvisor"] = json!({"measured": false});
        return Ok(());
    }
    let gvisor = gvisor(options, docker, redis, &client).await?;
    let side = |name: &str, runc: f64, runsc: f64, unit: &str| {
        println!(
            "  {name:<34} {runc:>9.2} {runsc:>9.2} {unit:<4} runsc/runc {:>6.2}",
            ratio(runsc, runc)
        );
    };
    println!("  {:<34} {:>9} {:>9}", "p50 unless noted", "runc", "runsc");
    side("raw engine exec", raw.p50_ms, gvisor.raw.p50_ms, "ms");
    side("agent channel", channel.p50_ms, gvisor.channel.p50_ms, "ms");
    side("brig HTTP warm", warm.p50_ms, gvisor.warm.p50_ms, "ms");
    side("cold session, no pool", cold.p50_ms, gvisor.cold.p50_ms, "ms");
    let runc8 = throughputs[1]["throughput"]["per_second"].as_f64().unwrap_or(0.0);
    side("throughput, 8 sessions", runc8, gvisor.throughput8.per_second, "/s");
    report["gvisor"] = json!({
        "measured": true,
        "latency_ms": {
            "raw_engine_exec": gvisor.raw, "agent_channel": gvisor.channel,
            "http_warm": gvisor.warm, "cold_no_pool": gvisor.cold,
        },
        "throughput_8_sessions": gvisor.throughput8,
        "ratios_runsc_over_runc": {
            "raw_engine_exec_p50": ratio(gvisor.raw.p50_ms, raw.p50_ms),
            "agent_channel_p50": ratio(gvisor.channel.p50_ms, channel.p50_ms),
            "http_warm_p50": ratio(gvisor.warm.p50_ms, warm.p50_ms),
            "cold_no_pool_p50": ratio(gvisor.cold.p50_ms, cold.p50_ms),
            "throughput_8_sessions": ratio(gvisor.throughput8.per_second, runc8),
        },
        "raw_exec_over_http_warm_p50_under_runsc": ratio(gvisor.raw.p50_ms, gvisor.warm.p50_ms),
    });
    Ok(())
}

struct Gvisor {
    raw: Latency,
    channel: Latency,
    warm: Latency,
    cold: Latency,
    throughput8: Throughput,
}

/// The warm, cold and throughput paths again with every sandbox under runsc.
async fn gvisor(
    options: &Options,
    docker: &bollard::Docker,
    redis: &RedisServer,
    client: &reqwest::Client,
) -> anyhow::Result<Gvisor> {
    let api = start_api(&api_env(redis, &options.image, &[("CONTAINER_RUNTIME", "runsc")]), None);
    let base = api.base.clone();
    let (runtime, sandbox) = direct(options, &api, "runsc", "gvisor-direct").await?;
    let measured = async {
        let raw = series(options.warm.min(300), |_| raw_exec(docker, &sandbox)).await?;
        let channel = series(options.warm, |_| channel_exec(&runtime, &sandbox)).await?;
        http_exec(client, &base, KEY, "warm").await?;
        let warm = series(options.warm, |_| http_exec(client, &base, KEY, "warm")).await?;
        let cold = series(options.cold, |i| {
            let (client, base) = (client.clone(), base.clone());
            async move { http_exec(&client, &base, KEY, &format!("cold-{i}")).await }
        })
        .await?;
        for s in 0..8 {
            http_exec(client, &base, KEY, &format!("load-{s}")).await?;
        }
        let throughput8 = {
            let (client, base) = (client.clone(), base.clone());
            throughput(8, options.throughput_for, move |slot| {
                let (client, base) = (client.clone(), base.clone());
                async move { http_exec(&client, &base, KEY, &format!("load-{slot}")).await.map(drop) }
            })
            .await?
        };
        Ok::<_, anyhow::Error>(Gvisor {
            raw,
            channel,
            warm,
            cold,
            throughput8,
        })
    }
    .await;
    let instance = api.instance.clone();
    drop(api);
    remove_instance_containers(&instance);
    measured
}

/// The runtime of `api`'s instance under `runtime` (`runc`, `runsc`), and a
/// sandbox of its own named for `session`: for the paths below HTTP.
async fn direct(
    options: &Options,
    api: &BrigApi,
    runtime: &str,
    session: &str,
) -> anyhow::Result<(Arc<DockerRuntime>, String)> {
    let config = SandboxConfig {
        instance: api.instance.clone(),
        image: options.image.clone(),
        runtime: runtime.into(),
        ..SandboxConfig::default()
    };
    let runtime = Arc::new(DockerRuntime::connect(&DockerConfig::from_env(), config, agent()).await?);
    let sandbox = bench_sandbox(&runtime, session).await?;
    Ok((runtime, sandbox))
}

/// Several nodes (see `nodes`): their figures and ratios into `report`.
async fn run_nodes(
    options: &Options,
    docker: &bollard::Docker,
    redis: &RedisServer,
    sandbox: &str,
    report: &mut Value,
) -> anyhow::Result<()> {
    let measured = nodes::measure(options, docker, sandbox, redis).await?;
    let ratios = measured.ratios();
    println!(
        "
ratios (same run)"
    );
    for (name, value) in ratios.as_object().into_iter().flatten() {
        println!("  {name:<40} {:>8.2}", value.as_f64().unwrap_or(f64::NAN));
    }
    report["nodes"] = json!(measured);
    report["placement"] = json!(placement::compare());
    match report["ratios"].as_object_mut() {
        Some(all) => all.extend(ratios.as_object().cloned().unwrap_or_default()),
        None => report["ratios"] = ratios,
    }
    Ok(())
}

/// Snapshots, forks, suspends and resumes of 1, 10 and 100 MB workspaces on
/// an API of their own, beside the Engine API's exec stream (through
/// `sandbox`, a direct one) and a cold session.
async fn run_durability(
    options: &Options,
    docker: &bollard::Docker,
    redis: &RedisServer,
    sandbox: &str,
    report: &mut Value,
) -> anyhow::Result<()> {
    println!(
        "\ndurable sessions (ms, {} rounds per size; SNAPSHOT_DIR on this disk)",
        options.durability_rounds
    );
    let client = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("brig-bench-snapshots-{}", std::process::id()));
    let env = durability::api_env(&dir.to_string_lossy());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let durable = start_api(&api_env(redis, &options.image, &env), None);
    let measured = durability::measure(&client, &durable.base, KEY, docker, sandbox, options.durability_rounds).await;
    let instance = durable.instance.clone();
    drop(durable);
    remove_instance_containers(&instance);
    let _ = std::fs::remove_dir_all(&dir);
    let measured = measured?;
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "p50 (ms)", "snapshot", "fork", "suspend", "resume", "exec MB/s"
    );
    for size in &measured.sizes {
        println!(
            "{:<24} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>14.1}",
            format!("{} MB workspace", size.megabytes),
            size.snapshot.p50_ms,
            size.fork.p50_ms,
            size.suspend.p50_ms,
            size.resume.p50_ms,
            size.engine_exec_stream.mb_per_second
        );
    }
    row("cold session (reference for resume)", &measured.cold_session);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let mut ratios = serde_json::Map::new();
    for size in &measured.sizes {
        let mb = size.megabytes as f64;
        let snapshot_rate = mb / (size.snapshot.p50_ms / 1000.0);
        ratios.insert(
            format!("snapshot_{}mb_rate_over_engine_exec_stream", size.megabytes),
            json!(ratio(snapshot_rate, size.engine_exec_stream.mb_per_second)),
        );
        ratios.insert(
            format!("resume_{}mb_over_cold_session_p50", size.megabytes),
            json!(ratio(size.resume.p50_ms, measured.cold_session.p50_ms)),
        );
    }
    println!("ratios (same run)");
    for (name, value) in &ratios {
        println!("  {name:<44} {:>8.2}", value.as_f64().unwrap_or(f64::NAN));
    }
    report["durability"] = json!(measured);
    report["ratios"] = json!(ratios);
    Ok(())
}

/// Time from each session's expiry to its container's removal, with a cleanup
/// worker passing every second.
async fn reaping(options: &Options, redis: &RedisServer, client: &reqwest::Client) -> anyhow::Result<Latency> {
    let api = start_api(&api_env(redis, &options.image, &[("SESSION_TTL_SECONDS", "3")]), None);
    let worker_env = [
        ("REDIS_URL", redis.url()),
        ("CLEANUP_INTERVAL_SECONDS", "1".into()),
        ("CLEANUP_GRACE_SECONDS", "1".into()),
    ];
    let worker_env = env_refs(&worker_env);
    // The worker runs from the start, as in production: each session's clock
    // starts at its own last use.
    let _worker = CleanupWorker::start(&api.instance, &worker_env);
    let mut expiries = Vec::new();
    for s in 0..options.reap_sessions {
        http_exec(client, &api.base, KEY, &format!("reap-{s}")).await?;
        expiries.push((format!("reap-{s}"), Instant::now() + Duration::from_secs(3)));
    }
    let mut gone = vec![None; expiries.len()];
    let deadline = Instant::now() + Duration::from_secs(120);
    while gone.iter().any(Option::is_none) && Instant::now() < deadline {
        let now = Instant::now();
        for (i, (session, expiry)) in expiries.iter().enumerate() {
            if gone[i].is_none() && brig_testkit::session_containers(&api.instance, session).is_empty() {
                gone[i] = Some(now.saturating_duration_since(*expiry));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let instance = api.instance.clone();
    let left = instance_containers(&instance).len();
    drop(api);
    remove_instance_containers(&instance);
    anyhow::ensure!(
        left == 0 && gone.iter().all(Option::is_some),
        "{left} containers were never reaped"
    );
    Ok(Latency::of(gone.into_iter().flatten().collect()))
}

/// The agent the benchmark's own runtimes publish into sandboxes.
fn agent() -> brig_core::agent_binary::AgentBinary {
    brig_core::agent_binary::AgentBinary::new(brig_agent_embed::AGENT_BINARY)
}
