//! Several nodes, each a brig-api with its own Docker engine, in its own
//! network namespace with its own address, sharing one redis-server: made
//! and removed by the test (`ip netns`, veth, a bridge; `dockerd` with its
//! own data-root, exec-root, pidfile and socket). Needs root, iproute2 and
//! nsenter (scripts/test.sh installs what is missing).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::*;

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One node's host: a network namespace, a veth into the fleet's bridge, an engine.
struct Host {
    netns: String,
    veth: String,
    ip: String,
    dir: PathBuf,
    dockerd: Option<Child>,
}

impl Host {
    fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The containers of `instance`'s session `session` on this engine.
    fn session_containers(&self, instance: &str, session: &str) -> Vec<String> {
        let labels = [format!("brig.instance={instance}"), format!("brig.session={session}")];
        containers_labelled_on(Some(&self.socket()), &labels)
    }

    /// The containers of `instance` on this engine.
    fn containers(&self, instance: &str) -> Vec<String> {
        containers_labelled_on(Some(&self.socket()), &[format!("brig.instance={instance}")])
    }

    /// When (unix ns) this engine first reported `event` (`pause`,
    /// `create`...) of a container of each of `instance`'s sessions, since
    /// `since` (unix s). All the engines run on this machine's one clock.
    fn events(&self, instance: &str, event: &str, since: u64) -> std::collections::HashMap<String, u128> {
        let until = (unix_now() + 1).to_string();
        let out = sh(
            "docker",
            &[
                "-H",
                &self.socket(),
                "events",
                "--since",
                &since.to_string(),
                "--until",
                &until,
                "--filter",
                &format!("event={event}"),
                "--filter",
                &format!("label=brig.instance={instance}"),
                "--format",
                "{{index .Actor.Attributes \"brig.session\"}} {{.TimeNano}}",
            ],
        );
        let mut first = std::collections::HashMap::new();
        for line in out.lines() {
            if let Some((session, at)) = line.split_once(' ') {
                let at: u128 = at.trim().parse().expect("TimeNano");
                let seen = first.entry(session.to_string()).or_insert(at);
                *seen = (*seen).min(at);
            }
        }
        first
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The fleet's network and engines; everything is removed when dropped.
struct Fleet {
    tag: String,
    bridge: String,
    gateway: String,
    hosts: Vec<Host>,
}

impl Fleet {
    fn new(nodes: usize) -> Fleet {
        let tag = hex::encode(rand::random::<[u8; 2]>());
        assert!(
            Command::new("ip")
                .args(["netns", "list"])
                .output()
                .is_ok_and(|out| out.status.success()),
            "no iproute2 (`ip netns`): scripts/test.sh installs it"
        );
        // 10.<200-249>.<0-255>.0/24: a private range no test shares.
        let (a, b) = (200 + rand::random::<u8>() % 50, rand::random::<u8>());
        let mut fleet = Fleet {
            bridge: format!("bf{tag}"),
            gateway: format!("10.{a}.{b}.1"),
            tag: tag.clone(),
            hosts: Vec::new(),
        };
        sh("ip", &["link", "add", &fleet.bridge, "type", "bridge"]);
        sh(
            "ip",
            &["addr", "add", &format!("{}/24", fleet.gateway), "dev", &fleet.bridge],
        );
        sh("ip", &["link", "set", &fleet.bridge, "up"]);
        // Node to node across the bridge: bridged packets pass the host's
        // FORWARD chain, which the engine's policy drops.
        sh("iptables", &fleet.forward_rule("-I"));
        let driver = sh("docker", &["info", "--format", "{{.Driver}}"]).trim().to_string();
        for i in 0..nodes {
            let host = Host {
                netns: format!("brig-{tag}-n{i}"),
                veth: format!("bf{tag}n{i}"),
                ip: format!("10.{a}.{b}.{}", 10 + i),
                dir: std::env::temp_dir().join(format!("brig-fleet-{tag}-n{i}")),
                dockerd: None,
            };
            fleet.hosts.push(host);
            let host = fleet.hosts.last_mut().unwrap();
            std::fs::create_dir_all(host.dir.join("data")).unwrap();
            std::fs::write(host.dir.join("daemon.json"), "{}").unwrap();
            sh("ip", &["netns", "add", &host.netns]);
            let peer = format!("{}p", host.veth);
            sh(
                "ip",
                &["link", "add", &host.veth, "type", "veth", "peer", "name", &peer],
            );
            sh("ip", &["link", "set", &host.veth, "master", &fleet.bridge, "up"]);
            sh("ip", &["link", "set", &peer, "netns", &host.netns]);
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &host.netns, "ip"];
                all.extend_from_slice(args);
                sh("ip", &all);
            };
            exec(&["addr", "add", &format!("{}/24", host.ip), "dev", &peer]);
            exec(&["link", "set", &peer, "up"]);
            exec(&["link", "set", "lo", "up"]);
            // Its own engine, on its own network: nothing published, no iptables.
            let dir = host.dir.display().to_string();
            let dockerd = Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{}", host.netns))
                .args(["--", "dockerd", "--config-file"])
                .arg(host.dir.join("daemon.json"))
                .args([
                    "--data-root",
                    &format!("{dir}/data"),
                    "--exec-root",
                    &format!("{dir}/exec"),
                ])
                .args(["--pidfile", &format!("{dir}/docker.pid"), "--host", &host.socket()])
                .args([
                    "--bridge",
                    "none",
                    "--iptables=false",
                    "--ip-masq=false",
                    "--storage-driver",
                    &driver,
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(host.dir.join("dockerd.log")).unwrap())
                .spawn()
                .expect("start dockerd");
            host.dockerd = Some(dockerd);
        }
        for host in &fleet.hosts {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Command::new("docker")
                .args(["-H", &host.socket(), "version"])
                .output()
                .map_or(true, |out| !out.status.success())
            {
                assert!(
                    Instant::now() < deadline,
                    "dockerd of {} did not start: {}",
                    host.netns,
                    std::fs::read_to_string(host.dir.join("dockerd.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            // No registry: the sandbox image comes from this machine's engine.
            let image = test_image();
            let mut save = Command::new("docker")
                .args(["save", &image])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let load = Command::new("docker")
                .args(["-H", &host.socket(), "load", "-q"])
                .stdin(save.stdout.take().unwrap())
                .output()
                .unwrap();
            assert!(save.wait().unwrap().success(), "docker save {image}");
            assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
        }
        sh(
            "docker",
            &["-H", &fleet.hosts[1].socket(), "tag", &test_image(), OTHER_IMAGE],
        );
        fleet
    }

    /// brig-api as node `i`, on its engine, in its namespace.
    fn node(&self, i: usize, redis: &str, instance: &str) -> BrigApi {
        let host = &self.hosts[i];
        let (id, addr) = (format!("n{i}"), format!("http://{}:8000", host.ip));
        let socket = host.socket();
        BrigApi::start_in_netns(
            instance,
            &format!("/var/run/netns/{}", host.netns),
            &[
                ("HOST", host.ip.as_str()),
                ("PORT", "8000"),
                ("DOCKER_HOST", socket.as_str()),
                ("REDIS_URL", redis),
                ("BRIG_NODE_ID", id.as_str()),
                ("BRIG_NODE_ADDR", addr.as_str()),
                ("NODE_HEARTBEAT_SECONDS", "1"),
                ("NODE_LOSS_SECONDS", "4"),
                ("BRIG_NODE_SECRET", SECRET),
                // Every node's SNAPSHOT_DIR is the instance's one directory on this machine.
                ("SNAPSHOT_DIR_SHARED", "true"),
                ("ALLOWED_COMMANDS", "id,echo,cat,sh,sleep"),
                // Only n1's engine holds it (see `Fleet::new`).
                ("ALLOWED_IMAGES", OTHER_IMAGE),
                ("MAX_SESSIONS_PER_USER", "100"),
            ],
        )
    }

    /// brig-cleanup-worker of node `i` (it reaches the engine's socket and
    /// Redis from this machine's own network).
    fn worker(&self, i: usize, redis: &str, instance: &str) -> CleanupWorker {
        let (id, socket) = (format!("n{i}"), self.hosts[i].socket());
        CleanupWorker::start(
            instance,
            &[
                ("DOCKER_HOST", socket.as_str()),
                ("REDIS_URL", redis),
                ("BRIG_NODE_ID", id.as_str()),
                ("CLEANUP_INTERVAL_SECONDS", "1"),
            ],
        )
    }

    /// Cuts node `i` off the network (`up: false`), or puts it back.
    fn link(&self, i: usize, up: bool) {
        sh(
            "ip",
            &["link", "set", &self.hosts[i].veth, if up { "up" } else { "down" }],
        );
    }

    /// The node whose engine holds `instance`'s session `session` (exactly one does).
    fn home(&self, instance: &str, session: &str) -> usize {
        let homes: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| !self.hosts[i].session_containers(instance, session).is_empty())
            .collect();
        assert_eq!(homes.len(), 1, "{session} has containers on nodes {homes:?}");
        homes[0]
    }
}

impl Fleet {
    fn forward_rule(&self, action: &'static str) -> [&str; 8] {
        [
            action,
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ]
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            // Containers first (their mounts live in the data root), then the engine.
            if let Ok(out) = Command::new("docker")
                .args(["-H", &host.socket(), "ps", "-aq"])
                .output()
            {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["-H", &host.socket(), "rm", "-f", "-v"])
                        .args(&ids)
                        .output();
                }
            }
            if let Some(mut dockerd) = host.dockerd.take() {
                let _ = Command::new("kill").arg(dockerd.id().to_string()).status();
                let deadline = Instant::now() + Duration::from_secs(20);
                while dockerd.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = dockerd.kill();
                let _ = dockerd.wait();
            }
            let _ = Command::new("ip").args(["link", "del", &host.veth]).output();
            let _ = Command::new("ip").args(["netns", "del", &host.netns]).output();
            let _ = std::fs::remove_dir_all(&host.dir);
        }
        let _ = Command::new("iptables").args(self.forward_rule("-D")).output();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
        let _ = &self.tag;
    }
}

const SECRET: &str = "fleet-secret-0123456789abcdef0123456789";

/// An image sessions may ask for that only n1's engine holds.
const OTHER_IMAGE: &str = "brig-sandbox-other:latest";

/// Node `id` in a `GET /nodes` answer.
fn node_in<'a>(seen: &'a Value, id: &str) -> &'a Value {
    seen["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == id)
        .unwrap()
}

fn admin() -> String {
    jwt(json!({"sub": "operator", "roles": ["admin"], "exp": unix_now() + 600}))
}

/// `GET /nodes` of `api` until `done` holds (at most `within`); the last answer.
async fn nodes_until(api: &BrigApi, within: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let seen = nodes_seen(api).await;
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {what}; last seen {seen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn nodes_seen(api: &BrigApi) -> Value {
    let reply = reqwest::Client::new()
        .get(api.url("/nodes"))
        .bearer_auth(admin())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    reply.json().await.unwrap()
}

fn status_of(nodes: &Value, id: &str) -> String {
    nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == id)
        .map(|n| n["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Which node answered.
fn served_by(reply: &Reply) -> String {
    reply
        .headers
        .get("x-brig-node")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Runs `command` in `session` through `node`, expecting it to work.
async fn run_via(node: &BrigApi, session: &str, command: &str) -> Reply {
    let reply = execute(node, ALICE_KEY, session, command).await;
    assert_eq!(reply.status, StatusCode::OK, "{command} in {session}: {:?}", reply.body);
    reply
}

/// A session of lost (or unreachable) node: clear 503s, each answered at
/// once, until a live node has recreated it; the first answer that works.
async fn answered_again(node: &BrigApi, session: &str, command: &str, within: Duration) -> (Reply, usize) {
    let deadline = Instant::now() + within;
    let mut unavailable = 0;
    loop {
        let asked = Instant::now();
        let reply = execute(node, ALICE_KEY, session, command).await;
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "a hang: {:?}",
            asked.elapsed()
        );
        if reply.status == StatusCode::OK {
            return (reply, unavailable);
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", reply.body);
        let code = reply.body["error"].as_str().unwrap_or_default().to_string();
        assert!(
            ["node_lost", "node_unreachable"].contains(&code.as_str()),
            "{:?}",
            reply.body
        );
        assert!(reply.headers.contains_key("retry-after"));
        unavailable += 1;
        assert!(Instant::now() < deadline, "{session} not back within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_place_forward_recover_and_fence_sessions() {
    let fleet = Fleet::new(3);
    let redis = RedisServer::start_also_on(&fleet.gateway);
    let redis_url = redis.url_at(&fleet.gateway);
    let instance = new_instance();
    let mut nodes: Vec<BrigApi> = (0..3).map(|i| fleet.node(i, &redis_url, &instance)).collect();
    let _workers: Vec<CleanupWorker> = (0..3).map(|i| fleet.worker(i, &redis.url(), &instance)).collect();

    // The registry: every node, live, at its own address; for operators only.
    let seen = nodes_until(&nodes[0], Duration::from_secs(10), "three live nodes", |seen| {
        (0..3).all(|i| status_of(seen, &format!("n{i}")) == "live")
    })
    .await;
    assert_eq!(seen["node_id"], "n0");
    for (i, host) in fleet.hosts.iter().enumerate() {
        let node = (seen["nodes"].as_array().unwrap().iter())
            .find(|n| n["node_id"] == format!("n{i}"))
            .unwrap();
        assert_eq!(node["addr"], format!("http://{}:8000", host.ip), "{seen}");
    }
    let refused = call(&nodes[1], Method::GET, "/nodes", ALICE_KEY, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"], "admin_only");

    // Placement: nine new sessions, all asked of n0, spread over the nodes
    // (best of two: once the others hold one, a node left out is one never
    // drawn, (1/3)^8: about one run in two thousand).
    let sessions: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
    for session in &sessions {
        let ran = run_via(&nodes[0], session, "echo hello").await;
        assert_eq!(ran.body["stdout"], "hello\n");
    }
    let homes: Vec<usize> = sessions.iter().map(|s| fleet.home(&instance, s)).collect();
    for i in 0..3 {
        assert!(homes.contains(&i), "node {i} got none of them: {homes:?}");
    }
    assert!(
        instance_containers(&instance).is_empty(),
        "this machine's engine holds none"
    );

    // Capacity: each node announces its host's memory and CPUs, what its
    // sandboxes' limits add up to (256 MiB each by default), and its images.
    let counted: Vec<u64> = (0..3)
        .map(|i| fleet.hosts[i].containers(&instance).len() as u64)
        .collect();
    let seen = nodes_until(&nodes[2], Duration::from_secs(10), "every sandbox counted", |seen| {
        (0..3).all(|i| node_in(seen, &format!("n{i}"))["memory_committed"] == counted[i] * (256 << 20))
    })
    .await;
    for (i, &count) in counted.iter().enumerate() {
        let node = node_in(&seen, &format!("n{i}"));
        assert!(node["memory_bytes"].as_u64().unwrap() > 1 << 30, "{node}");
        assert!(node["cpus"].as_f64().unwrap() >= 1.0, "{node}");
        assert_eq!(node["cpus_committed"].as_f64().unwrap(), count as f64, "{node}");
        let mut images = vec![test_image()];
        if i == 1 {
            images.push(OTHER_IMAGE.to_string());
        }
        assert_eq!(node["images"], json!(images), "{node}");
    }
    // A session asking for an image goes to a node holding it, whoever is asked.
    for (via, session) in [(0, "other-0"), (2, "other-2")] {
        let made = call(
            &nodes[via],
            Method::POST,
            "/sessions",
            ALICE_KEY,
            Some(json!({"session_id": session, "image": OTHER_IMAGE})),
        )
        .await;
        assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
        assert_eq!(made.body["image"], OTHER_IMAGE);
        assert_eq!(fleet.home(&instance, session), 1);
        let gone = call(
            &nodes[via],
            Method::DELETE,
            &format!("/sessions/{session}"),
            ALICE_KEY,
            None,
        )
        .await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT);
    }

    // Any node serves any session: on its own node's engine, whichever is asked.
    for (session, &home) in sessions.iter().zip(&homes) {
        let (a, b) = ((home + 1) % 3, (home + 2) % 3);
        let put = reqwest::Client::new()
            .put(nodes[a].url(&format!("/sessions/{session}/files/who.txt")))
            .header("X-API-Key", ALICE_KEY)
            .body(format!("{session} via n{a}"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
        assert_eq!(put.headers()["x-brig-node"], format!("n{home}").as_str());
        let read = run_via(&nodes[b], session, "cat who.txt").await;
        assert_eq!(read.body["stdout"], format!("{session} via n{a}"));
        assert_eq!(served_by(&read), format!("n{home}"));
        let local = run_via(&nodes[home], session, "cat who.txt").await;
        assert_eq!(served_by(&local), format!("n{home}"));
    }
    for (i, host) in fleet.hosts.iter().enumerate() {
        let here = homes.iter().filter(|&&h| h == i).count();
        assert_eq!(host.containers(&instance).len(), here, "node {i}: no second container");
    }

    // Streams pass through: SSE, and a background execution read elsewhere.
    let (session, home) = (&sessions[0], homes[0]);
    let streamed = reqwest::Client::new()
        .post(nodes[(home + 1) % 3].url("/execute"))
        .header("X-API-Key", ALICE_KEY)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": "sh -c 'echo one; sleep 1; echo two'", "session_id": session}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::OK);
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    let events = streamed.text().await.unwrap();
    assert!(events.contains("event: stdout") && events.contains("two"), "{events}");
    let started = call(
        &nodes[(home + 1) % 3],
        Method::POST,
        "/executions",
        ALICE_KEY,
        Some(json!({"command": "echo background", "session_id": session})),
    )
    .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let execution = started.body["execution_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let finished = loop {
        let seen = call(
            &nodes[(home + 2) % 3],
            Method::GET,
            &format!("/executions/{execution}"),
            ALICE_KEY,
            None,
        )
        .await;
        if seen.body["status"] != "running" {
            break seen;
        }
        assert!(Instant::now() < deadline, "{:?}", seen.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished.body["stdout"], "background\n", "{:?}", finished.body);
    let output = call(
        &nodes[(home + 2) % 3],
        Method::GET,
        &format!("/executions/{execution}/output"),
        ALICE_KEY,
        None,
    )
    .await;
    assert_eq!(output.status, StatusCode::OK, "{:?}", output.body);
    assert_eq!(served_by(&output), format!("n{home}"), "read where it ran");

    // A WebSocket attached through another node: bytes both ways, then the exit.
    let piped = call(
        &nodes[(home + 1) % 3],
        Method::POST,
        "/executions",
        ALICE_KEY,
        Some(json!({"command": "cat", "session_id": session, "stdin": "pipe"})),
    )
    .await;
    assert_eq!(piped.status, StatusCode::ACCEPTED, "{:?}", piped.body);
    let piped = piped.body["execution_id"].as_str().unwrap().to_string();
    let mut attached = crate::durable::Attached::open(&nodes[(home + 2) % 3], &piped).await;
    attached.type_in("through two nodes\n").await;
    assert!(attached.until("through two nodes").await.is_none());
    attached
        .send(tokio_tungstenite::tungstenite::Message::Text(r#"{"eof": true}"#.into()))
        .await;
    let last = attached.until("the end, which never comes as output").await.unwrap();
    assert_eq!(last["exit"]["exit_code"], 0, "{last}");

    // The internal channel takes only signed, fresh, unreplayed requests.
    let forged = reqwest::Client::new()
        .get(nodes[1].url(&format!("/sessions/{session}")))
        .header("X-API-Key", ALICE_KEY)
        .header(
            "x-brig-forwarded",
            format!(
                "v1 n0 {} 00112233445566778899aabbccddeeff {}",
                unix_now() * 1000,
                "ab".repeat(32)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(forged.json::<Value>().await.unwrap()["error"], "forward_refused");

    // SIGKILL of n2: its sessions answer a clear 503 at once, then work again
    // on a live node (from their latest snapshot where they have one); the
    // other nodes' sessions never notice.
    let on_n2: Vec<&String> = sessions
        .iter()
        .zip(&homes)
        .filter(|(_, &h)| h == 2)
        .map(|(s, _)| s)
        .collect();
    let snapped = on_n2[0];
    run_via(&nodes[0], snapped, "sh -c 'echo kept > snapped.txt'").await;
    let snapshot = call(
        &nodes[1],
        Method::POST,
        &format!("/sessions/{snapped}/snapshots"),
        ALICE_KEY,
        None,
    )
    .await;
    assert_eq!(snapshot.status, StatusCode::CREATED, "{:?}", snapshot.body);
    run_via(&nodes[0], snapped, "sh -c 'echo lost > after.txt'").await;
    nodes[2].service.kill();
    let killed = Instant::now();
    let others: Vec<&String> = sessions
        .iter()
        .zip(&homes)
        .filter(|(_, &h)| h != 2)
        .map(|(s, _)| s)
        .collect();
    let (back, unavailable) = answered_again(&nodes[0], snapped, "cat snapped.txt", Duration::from_secs(20)).await;
    assert!(unavailable > 0, "no 503 while n2 was down");
    assert!(killed.elapsed() < Duration::from_secs(12), "{:?}", killed.elapsed());
    assert_eq!(back.body["stdout"], "kept\n", "restored from its snapshot");
    assert_ne!(served_by(&back), "n2");
    // The command's own answer says so too.
    assert_eq!(back.body["session_recreated"]["lost_node"], "n2", "{:?}", back.body);
    assert_eq!(
        back.body["session_recreated"]["snapshot_id"], snapshot.body["snapshot_id"],
        "{:?}",
        back.body
    );
    let after = execute(&nodes[1], ALICE_KEY, snapped, "cat after.txt").await;
    assert_ne!(after.body["exit_code"], 0, "written after the snapshot: lost with n2");
    for session in &on_n2[1..] {
        let (back, _) = answered_again(&nodes[1], session, "echo back", Duration::from_secs(20)).await;
        assert_eq!(back.body["stdout"], "back\n");
        assert_eq!(back.body["session_recreated"]["lost_node"], "n2", "{:?}", back.body);
        assert!(back.body["session_recreated"].get("snapshot_id").is_none());
    }
    for session in &others {
        let still = run_via(&nodes[0], session, "cat who.txt").await;
        assert!(still.body["stdout"].as_str().unwrap().starts_with(session.as_str()));
        assert!(still.body.get("session_recreated").is_none(), "{:?}", still.body);
    }
    // Each session says whether it was recreated, and from what: the
    // snapshotted one from its snapshot, the others empty.
    let recreated = |session: &str| {
        let nodes = &nodes;
        let session = session.to_string();
        async move {
            let seen = call(&nodes[1], Method::GET, &format!("/sessions/{session}"), ALICE_KEY, None).await;
            assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
            seen.body["recreated"].clone()
        }
    };
    let from_snapshot = recreated(snapped).await;
    assert_eq!(from_snapshot["lost_node"], "n2", "{from_snapshot}");
    assert_eq!(
        from_snapshot["snapshot_id"], snapshot.body["snapshot_id"],
        "{from_snapshot}"
    );
    for session in &on_n2[1..] {
        let empty = recreated(session).await;
        assert_eq!(empty["lost_node"], "n2", "{empty}");
        assert!(empty.get("snapshot_id").is_none(), "{empty}");
    }
    for session in &others {
        assert!(recreated(session).await.is_null());
    }
    let seen = nodes_seen(&nodes[1]).await;
    assert_eq!(status_of(&seen, "n2"), "lost");

    // n1 cut off, then back: its sessions move to n0 meanwhile; once back,
    // it serves none of them (its stale containers are reaped, its requests
    // for them go to n0), and nothing runs twice. Cut off from Redis, n1
    // freezes its sandboxes before n0 may take them over: n1's engine
    // paused each session's container before n0's made its new one.
    let on_n1: Vec<String> = (sessions.iter().zip(&homes))
        .filter(|(_, &h)| h == 1)
        .map(|(s, _)| s.clone())
        .collect();
    assert!(!on_n1.is_empty());
    let cut_at = unix_now() - 1;
    fleet.link(1, false);
    for session in &on_n1 {
        let (back, _) = answered_again(&nodes[0], session, "echo moved", Duration::from_secs(25)).await;
        assert_eq!(served_by(&back), "n0");
    }
    let paused = fleet.hosts[1].events(&instance, "pause", cut_at);
    let made = fleet.hosts[0].events(&instance, "create", cut_at);
    for session in &on_n1 {
        let (paused, made) = (paused.get(session), made.get(session));
        assert!(
            paused.is_some() && made.is_some() && paused < made,
            "{session}: paused on n1 at {paused:?}, made on n0 at {made:?}"
        );
    }
    fleet.link(1, true);
    nodes_until(&nodes[0], Duration::from_secs(10), "n1 live again", |seen| {
        status_of(seen, "n1") == "live"
    })
    .await;
    for session in &on_n1 {
        let via_n1 = run_via(&nodes[1], session, "sh -c 'echo once >> runs.txt; cat runs.txt'").await;
        assert_eq!(served_by(&via_n1), "n0");
        assert_eq!(via_n1.body["stdout"], "once\n");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while on_n1
        .iter()
        .any(|s| !fleet.hosts[1].session_containers(&instance, s).is_empty())
    {
        assert!(Instant::now() < deadline, "n1's stale containers were not reaped");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for session in &on_n1 {
        assert_eq!(fleet.home(&instance, session), 0);
    }

    // A drain: the drained node takes no new session, and its sessions are
    // suspended to resume (with their workspaces) on the node that uses them.
    let drained_put = |node: &BrigApi, id: &str, drain: bool, token: Option<String>| {
        let request = reqwest::Client::new()
            .put(node.url(&format!("/nodes/{id}/drain")))
            .json(&json!({ "drain": drain }));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request.header("X-API-Key", ALICE_KEY),
        }
        .send()
    };
    run_via(&nodes[1], "d1", "sh -c 'echo drained > d.txt'").await;
    let home = fleet.home(&instance, "d1");
    let other = 1 - home;
    let refused = drained_put(&nodes[other], &format!("n{home}"), true, None)
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let unknown = drained_put(&nodes[other], "n9", true, Some(admin())).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let drained = drained_put(&nodes[other], &format!("n{home}"), true, Some(admin()))
        .await
        .unwrap();
    assert_eq!(drained.status(), StatusCode::OK);
    assert_eq!(drained.json::<Value>().await.unwrap()["draining"], true);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = call(&nodes[other], Method::GET, "/sessions/d1", ALICE_KEY, None).await;
        if seen.body["status"] == "suspended" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "d1 not suspended by the drain: {:?}",
            seen.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    nodes_until(&nodes[home], Duration::from_secs(10), "the drain announced", |seen| {
        (seen["nodes"].as_array().unwrap().iter()).any(|n| n["node_id"] == format!("n{home}") && n["draining"] == true)
    })
    .await;
    let moved = run_via(&nodes[home], "d1", "cat d.txt").await;
    assert_eq!(moved.body["stdout"], "drained\n");
    assert_eq!(moved.body["session_resumed"], true);
    assert_eq!(served_by(&moved), format!("n{other}"));
    let placed = run_via(&nodes[home], "d2", "echo new").await;
    assert_eq!(
        served_by(&placed),
        format!("n{other}"),
        "a drained node takes no new session"
    );
    let lifted = drained_put(&nodes[home], &format!("n{home}"), false, Some(admin()))
        .await
        .unwrap();
    assert_eq!(lifted.status(), StatusCode::OK);
    assert_eq!(lifted.json::<Value>().await.unwrap()["draining"], false);
    let sessions: Vec<String> = sessions.iter().cloned().chain(["d1".into(), "d2".into()]).collect();

    // Nothing left anywhere: every session deleted through any node, the
    // dead node's engine cleared by its worker.
    for (i, session) in sessions.iter().enumerate() {
        let deleted = call(
            &nodes[i % 2],
            Method::DELETE,
            &format!("/sessions/{session}"),
            ALICE_KEY,
            None,
        )
        .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{session}: {:?}", deleted.body);
    }
    let listed = call(&nodes[1], Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(listed.body["sessions"], json!([]), "{:?}", listed.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.hosts.iter().any(|host| !host.containers(&instance).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            fleet.hosts.iter().map(|h| h.containers(&instance)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in &mut nodes {
        node.service.kill();
    }
}

/// The environment of node `id` on this machine's engine and network (a
/// port of its own), sharing `redis`, with `extra` settings.
fn local_node(redis: &RedisServer, id: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let port = free_port().to_string();
    let mut env = vec![
        ("REDIS_URL", redis.url()),
        ("BRIG_NODE_ADDR", format!("http://127.0.0.1:{port}")),
        ("PORT", port),
        ("BRIG_NODE_ID", id.to_string()),
        ("BRIG_NODE_SECRET", SECRET.to_string()),
        ("NODE_HEARTBEAT_SECONDS", "1".to_string()),
        ("NODE_LOSS_SECONDS", "4".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// One node on this machine's engine: placement keeps its `NODE_MAX_SESSIONS`
/// (a new session past it is 503 `capacity_exhausted`, its own sessions go
/// on), and it is not drained while its snapshots are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_no_more_sessions_than_its_own_limit_and_no_drain_without_shared_snapshots() {
    let redis = RedisServer::start();
    let env = local_node(
        &redis,
        "solo",
        &[("NODE_MAX_SESSIONS", "1"), ("ALLOWED_COMMANDS", "echo")],
    );
    let api = BrigApi::start(&env_refs(&env));
    nodes_until(
        &api,
        Duration::from_secs(10),
        "the node live with room for one",
        |seen| status_of(seen, "solo") == "live" && node_in(seen, "solo")["max_sessions"] == 1,
    )
    .await;
    run_via(&api, "one", "echo one").await;
    nodes_until(&api, Duration::from_secs(10), "its session counted", |seen| {
        node_in(seen, "solo")["sessions"] == 1
    })
    .await;
    let full = execute(&api, ALICE_KEY, "two", "echo two").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", full.body);
    assert_eq!(full.body["error"], "capacity_exhausted");
    run_via(&api, "one", "echo again").await;
    // MCP's tools are placed as the API's requests are.
    let refused = crate::mcp::call_tool(
        &api,
        ALICE_KEY,
        1,
        "execute",
        json!({"command": "echo three", "session_id": "three"}),
    )
    .await;
    assert_eq!(refused["isError"], true, "{refused}");
    assert!(refused.to_string().contains("capacity"), "{refused}");
    let listed = call(&api, Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(
        listed.body["sessions"].as_array().unwrap().len(),
        1,
        "{:?}",
        listed.body
    );

    let drain = |on: bool| {
        reqwest::Client::new()
            .put(api.url("/nodes/solo/drain"))
            .bearer_auth(admin())
            .json(&json!({ "drain": on }))
            .send()
    };
    let refused = drain(true).await.unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "snapshots_not_shared");
    assert!(!node_in(&nodes_seen(&api).await, "solo")["draining"].as_bool().unwrap());
    assert_eq!(drain(false).await.unwrap().status(), StatusCode::OK);
}

/// Two nodes on this machine's engine, each with snapshots of its own: MCP
/// tool calls through the node that does not hold a session reach the one
/// that does; a suspended session's workspace is in its node's snapshots
/// only, so its next use through the other node is sent there, and resumes
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_reaches_a_sessions_node_and_a_session_suspended_into_its_nodes_own_snapshots_resumes_there() {
    let redis = RedisServer::start();
    let instance = new_instance();
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| std::env::temp_dir().join(format!("brig-own-snapshots-{instance}-{i}")))
        .collect();
    let nodes: Vec<BrigApi> = (0..2)
        .map(|i| {
            let dir = dirs[i].to_str().unwrap();
            let env = local_node(
                &redis,
                &format!("m{i}"),
                &[("SNAPSHOT_DIR", dir), ("ALLOWED_COMMANDS", "sh,cat")],
            );
            BrigApi::start_in(&instance, &env_refs(&env))
        })
        .collect();
    nodes_until(&nodes[0], Duration::from_secs(10), "both nodes live", |seen| {
        status_of(seen, "m0") == "live" && status_of(seen, "m1") == "live"
    })
    .await;
    let made = run_via(&nodes[0], "kept", "sh -c 'echo kept > k.txt'").await;
    let home = served_by(&made);
    let other = if home == "m0" { 1 } else { 0 };
    let tool = |at: usize, id: u64, name: &'static str, arguments: Value| {
        crate::mcp::call_tool(&nodes[at], ALICE_KEY, id, name, arguments)
    };
    let ran = tool(
        other,
        1,
        "execute",
        json!({"session_id": "kept", "command": "cat k.txt"}),
    )
    .await;
    assert_eq!(ran["structuredContent"]["stdout"], "kept\n", "{ran}");
    let written = json!({"session_id": "kept", "path": "m.txt", "content": "via mcp"});
    let written = tool(other, 2, "write_file", written).await;
    assert_eq!(written["structuredContent"]["written"], true, "{written}");
    let read = tool(other, 3, "read_file", json!({"session_id": "kept", "path": "m.txt"})).await;
    assert_eq!(read["structuredContent"]["content"], "via mcp", "{read}");
    let seen = run_via(&nodes[1 - other], "kept", "cat m.txt").await;
    assert_eq!(seen.body["stdout"], "via mcp");
    // A session made through MCP is placed, and deleted through the node
    // that does not hold it.
    let made = tool(other, 4, "create_session", json!({"session_id": "tooled"})).await;
    assert_eq!(made["structuredContent"]["created"], true, "{made}");
    let found = call(&nodes[0], Method::GET, "/sessions/tooled", ALICE_KEY, None).await;
    assert_eq!(found.status, StatusCode::OK, "{:?}", found.body);
    let stranger = if served_by(&found) == "m0" { 1 } else { 0 };
    let gone = tool(stranger, 5, "delete_session", json!({"session_id": "tooled"})).await;
    assert_eq!(gone["structuredContent"]["deleted"], true, "{gone}");
    let found = call(&nodes[0], Method::GET, "/sessions/tooled", ALICE_KEY, None).await;
    assert_eq!(found.status, StatusCode::NOT_FOUND, "{:?}", found.body);
    let suspended = call(&nodes[other], Method::POST, "/sessions/kept/suspend", ALICE_KEY, None).await;
    assert_eq!(suspended.status, StatusCode::OK, "{:?}", suspended.body);
    assert_eq!(suspended.body["status"], "suspended");
    let read = run_via(&nodes[other], "kept", "cat k.txt").await;
    assert_eq!(read.body["stdout"], "kept\n");
    assert_eq!(read.body["session_resumed"], true);
    assert_eq!(served_by(&read), home);
    let gone = call(&nodes[other], Method::DELETE, "/sessions/kept", ALICE_KEY, None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    drop(nodes);
    remove_instance_containers(&instance);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A TLS terminator (socat) in front of a node's plain port, with a
/// certificate for 127.0.0.1 signed by a CA made for the test.
struct Terminator {
    socat: Child,
    dir: PathBuf,
    port: u16,
}

impl Terminator {
    fn start(to_port: &str) -> Terminator {
        let dir = std::env::temp_dir().join(format!("brig-node-tls-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let in_dir = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        in_dir(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=brig test CA",
                ],
            ]
            .concat(),
        );
        in_dir(
            &[
                &["req"][..],
                &ec,
                &["-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=brig test node"],
            ]
            .concat(),
        );
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        in_dir(&[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "node.pem",
        ]);
        let port = free_port();
        let (cert, key) = (dir.join("node.pem"), dir.join("node.key"));
        let socat = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{to_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        Terminator { socat, dir, port }
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node whose `BRIG_NODE_ADDR` is `https://` (a TLS terminator in front
/// of it): a node given the fleet's CA (`BRIG_NODE_CA`) reaches it, to make a
/// session there and to run in it; a node without that CA refuses the
/// certificate (503 `node_unreachable`): the hop checks it, and trusts only
/// the given CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_an_https_address_is_reached_by_the_nodes_that_trust_its_ca() {
    let redis = RedisServer::start();
    let instance = new_instance();
    let mut behind = local_node(&redis, "t1", &[("ALLOWED_COMMANDS", "sh,cat,echo")]);
    let port = behind.iter().find(|(k, _)| *k == "PORT").unwrap().1.clone();
    let tls = Terminator::start(&port);
    for (key, value) in &mut behind {
        if *key == "BRIG_NODE_ADDR" {
            *value = format!("https://127.0.0.1:{}", tls.port);
        }
    }
    let ca = tls.ca();
    let trusting = local_node(
        &redis,
        "t0",
        &[("ALLOWED_COMMANDS", "sh,cat,echo"), ("BRIG_NODE_CA", &ca)],
    );
    let distrusting = local_node(&redis, "t2", &[("ALLOWED_COMMANDS", "sh,cat,echo")]);
    let nodes: Vec<BrigApi> = [&trusting, &behind, &distrusting]
        .into_iter()
        .map(|env| BrigApi::start_in(&instance, &env_refs(env)))
        .collect();
    nodes_until(&nodes[0], Duration::from_secs(10), "three nodes live", |seen| {
        ["t0", "t1", "t2"].iter().all(|id| status_of(seen, id) == "live")
    })
    .await;
    assert_eq!(
        node_in(&nodes_seen(&nodes[0]).await, "t1")["addr"],
        format!("https://127.0.0.1:{}", tls.port)
    );
    // Sessions made through t0 are placed over the three; the ones on t1
    // were made there over https.
    let (session, made) = placed_on(&nodes[0], "t1", "sh -c 'echo over tls > f.txt'").await;
    let read = run_via(&nodes[0], &session, "cat f.txt").await;
    assert_eq!(
        (served_by(&read).as_str(), read.body["stdout"].as_str()),
        ("t1", Some("over tls\n"))
    );
    let refused = execute(&nodes[2], ALICE_KEY, &session, "cat f.txt").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "node_unreachable", "{:?}", refused.body);
    delete_all(&nodes[0], &made).await;
}

/// Redis loses a beating node's live copy (as an eviction, a flush or a
/// restart from an older state would), over and over for twice the loss
/// timeout: the other node, which sees the node's announcement still change
/// with every beat, takes none of its sessions over; the session stays where
/// it was, with its workspace, and the node notices that its copy vanished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beating_node_whose_live_copy_redis_loses_keeps_its_sessions() {
    let redis = RedisServer::start();
    let instance = new_instance();
    let nodes: Vec<BrigApi> = (0..2)
        .map(|i| {
            let env = local_node(&redis, &format!("v{i}"), &[("ALLOWED_COMMANDS", "sh,cat")]);
            BrigApi::start_in(&instance, &env_refs(&env))
        })
        .collect();
    nodes_until(&nodes[0], Duration::from_secs(10), "both nodes live", |seen| {
        status_of(seen, "v0") == "live" && status_of(seen, "v1") == "live"
    })
    .await;
    let (session, made) = placed_on(&nodes[0], "v1", "sh -c 'echo mine > f.txt'").await;
    // Both nodes have beaten for more than a loss timeout: v0 would take
    // over a node it judged lost.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let key = format!("brig:{instance}:value:node-live:v1");
    let until = Instant::now() + Duration::from_secs(9);
    let mut deleted = 0;
    while Instant::now() < until {
        let out = Command::new("redis-cli")
            .args(["-u", &redis.url(), "DEL", &key])
            .output()
            .expect("redis-cli");
        deleted += String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deleted >= 5, "v1's live copy was deleted {deleted} times");
    // Meanwhile its requests may have answered node_lost; its next beat
    // writes the copy again.
    nodes_until(&nodes[0], Duration::from_secs(5), "v1 live again", |seen| {
        status_of(seen, "v1") == "live"
    })
    .await;
    let read = run_via(&nodes[0], &session, "cat f.txt").await;
    assert_eq!(
        (served_by(&read).as_str(), read.body["stdout"].as_str()),
        ("v1", Some("mine\n"))
    );
    assert!(read.body.get("session_recreated").is_none(), "{:?}", read.body);
    let seen = call(&nodes[0], Method::GET, &format!("/sessions/{session}"), ALICE_KEY, None).await;
    assert!(seen.body.get("recreated").is_none(), "{:?}", seen.body);
    assert!(
        nodes[1]
            .logs()
            .iter()
            .any(|line| line.contains("live copy had vanished")),
        "v1 never noticed"
    );
    delete_all(&nodes[0], &made).await;
}

/// New sessions made through `entry` (running `command`) until one is
/// placed on `node`: that one, and all it made.
async fn placed_on(entry: &BrigApi, node: &str, command: &str) -> (String, Vec<String>) {
    let mut made = Vec::new();
    for i in 0..12 {
        let session = format!("p{i}");
        let reply = run_via(entry, &session, command).await;
        made.push(session.clone());
        if served_by(&reply) == node {
            return (session, made);
        }
    }
    panic!("no session of twelve was placed on {node}");
}

/// Deletes `sessions` through `entry`.
async fn delete_all(entry: &BrigApi, sessions: &[String]) {
    for session in sessions {
        let gone = call(entry, Method::DELETE, &format!("/sessions/{session}"), ALICE_KEY, None).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT, "{session}: {:?}", gone.body);
    }
}
