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
                ("ALLOWED_COMMANDS", "id,echo,cat,sh"),
            ],
        )
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
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
        let _ = &self.tag;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_each_serve_their_own_sessions_on_their_own_engines() {
    let fleet = Fleet::new(3);
    let redis = RedisServer::start_also_on(&fleet.gateway);
    let redis_url = redis.url_at(&fleet.gateway);
    let instance = new_instance();
    let mut nodes: Vec<BrigApi> = (0..3).map(|i| fleet.node(i, &redis_url, &instance)).collect();

    // The registry: every node, live, at its own address; for operators only.
    let seen = nodes_until(&nodes[0], Duration::from_secs(10), "three live nodes", |seen| {
        (0..3).all(|i| status_of(seen, &format!("n{i}")) == "live")
    })
    .await;
    assert_eq!(seen["node_id"], "n0");
    for (i, host) in fleet.hosts.iter().enumerate() {
        let node = seen["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == format!("n{i}"))
            .unwrap();
        assert_eq!(node["addr"], format!("http://{}:8000", host.ip), "{seen}");
    }
    let refused = call(&nodes[1], Method::GET, "/nodes", ALICE_KEY, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"], "admin_only");

    // Each node's sessions run on its own engine, and nowhere else.
    for (i, node) in nodes.iter().enumerate() {
        let ran = run(node, ALICE_KEY, &format!("s{i}"), "echo hello").await;
        assert_eq!(ran["stdout"], "hello\n", "{ran}");
    }
    for (i, host) in fleet.hosts.iter().enumerate() {
        assert_eq!(host.containers(&instance).len(), 1, "node {i}'s engine");
        assert_eq!(
            host.session_containers(&instance, &format!("s{i}")).len(),
            1,
            "s{i} on node {i}'s engine"
        );
    }
    assert!(
        instance_containers(&instance).is_empty(),
        "this machine's own engine holds none"
    );

    // Another node's session is never served here: a clear 421 naming its node,
    // and no container made for it on this engine.
    let elsewhere = execute(&nodes[1], ALICE_KEY, "s0", "echo hi").await;
    assert_eq!(
        elsewhere.status,
        StatusCode::MISDIRECTED_REQUEST,
        "{:?}",
        elsewhere.body
    );
    assert_eq!(elsewhere.body["error"], "wrong_node");
    let owner = format!("n0 (http://{}:8000)", fleet.hosts[0].ip);
    assert!(
        elsewhere.body["detail"].as_str().unwrap().contains(&owner),
        "{:?}",
        elsewhere.body
    );
    let file = call(&nodes[2], Method::GET, "/sessions/s0/files?dir=", ALICE_KEY, None).await;
    assert_eq!(file.status, StatusCode::MISDIRECTED_REQUEST, "{:?}", file.body);
    // Refused before anything is promised: no 202 for a background run, no
    // stream's 200, no deletion that would leave the container behind.
    let started = call(
        &nodes[1],
        Method::POST,
        "/executions",
        ALICE_KEY,
        Some(json!({"command": "echo hi", "session_id": "s0"})),
    )
    .await;
    assert_eq!(started.status, StatusCode::MISDIRECTED_REQUEST, "{:?}", started.body);
    let streamed = reqwest::Client::new()
        .post(nodes[2].url("/execute"))
        .header("X-API-Key", ALICE_KEY)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": "echo hi", "session_id": "s0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::MISDIRECTED_REQUEST);
    let deleted = call(&nodes[1], Method::DELETE, "/sessions/s0", ALICE_KEY, None).await;
    assert_eq!(deleted.status, StatusCode::MISDIRECTED_REQUEST, "{:?}", deleted.body);
    assert_eq!(fleet.hosts[0].session_containers(&instance, "s0").len(), 1);
    assert_eq!(fleet.hosts[1].containers(&instance).len(), 1);
    assert_eq!(fleet.hosts[2].containers(&instance).len(), 1);

    // A suspended session resumes on the node that uses it next: it moves there.
    let written = reqwest::Client::new()
        .put(nodes[0].url("/sessions/s0/files/kept.txt"))
        .header("X-API-Key", ALICE_KEY)
        .body("moved with its workspace")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), StatusCode::NO_CONTENT);
    let suspended = call(&nodes[0], Method::POST, "/sessions/s0/suspend", ALICE_KEY, None).await;
    assert_eq!(suspended.status, StatusCode::OK, "{:?}", suspended.body);
    assert!(fleet.hosts[0].containers(&instance).is_empty());
    let resumed = run(&nodes[1], ALICE_KEY, "s0", "cat kept.txt").await;
    assert_eq!(resumed["stdout"], "moved with its workspace", "{resumed}");
    assert_eq!(resumed["session_resumed"], true);
    assert_eq!(fleet.hosts[1].containers(&instance).len(), 2);
    let now_elsewhere = execute(&nodes[0], ALICE_KEY, "s0", "id").await;
    assert_eq!(now_elsewhere.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(now_elsewhere.body["detail"].as_str().unwrap().contains("n1 (http://"));
    assert_eq!(fleet.hosts[1].session_containers(&instance, "s0").len(), 1);

    // Each node counts its own sessions in its heartbeat.
    nodes_until(&nodes[2], Duration::from_secs(10), "each node's count", |seen| {
        let count = |id: &str| {
            (seen["nodes"].as_array().unwrap().iter())
                .find(|n| n["node_id"] == id)
                .and_then(|n| n["sessions"].as_u64())
        };
        (count("n0"), count("n1"), count("n2")) == (Some(0), Some(2), Some(1))
    })
    .await;

    // A node killed outright is reported lost within the loss timeout; the
    // others' sessions never notice.
    nodes[2].service.kill();
    let killed = Instant::now();
    let seen = nodes_until(&nodes[0], Duration::from_secs(10), "n2 lost", |seen| {
        status_of(seen, "n2") == "lost"
    })
    .await;
    // NODE_LOSS_SECONDS=4, a heartbeat a second, and a read every 200 ms.
    assert!(killed.elapsed() < Duration::from_secs(7), "{:?}", killed.elapsed());
    assert_eq!(status_of(&seen, "n1"), "live");
    assert_eq!(run(&nodes[1], ALICE_KEY, "s1", "echo still").await["stdout"], "still\n");
    assert_eq!(run(&nodes[1], ALICE_KEY, "s0", "echo here").await["stdout"], "here\n");

    // Nothing left behind: sessions deleted on their nodes leave no container.
    for (node, session) in [(1, "s0"), (1, "s1")] {
        let deleted = call(
            &nodes[node],
            Method::DELETE,
            &format!("/sessions/{session}"),
            ALICE_KEY,
            None,
        )
        .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    }
    assert!(fleet.hosts[1].containers(&instance).is_empty());
    for node in &mut nodes {
        node.service.kill();
    }
}
