//! Egress through the agent's loopback proxy, against real servers the test
//! starts on the host's loopback (so brig runs with `EGRESS_ALLOW_PRIVATE`,
//! except where the refusal of private addresses is the point): an HTTP
//! server (busybox wget and Python urllib, from the environment alone), an
//! HTTPS server with its own certificate (TLS through CONNECT), one that never
//! answers and one that trickles. Every group runs under runc and gVisor.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::*;

const PYTHON_IMAGE: &str = "brig-sandbox-python:latest";
const COMMANDS: &str = "sh,echo,wget,curl,nc,python3,cat";
const BIG: usize = 50 * 1024 * 1024;
/// The agent's proxy port (brig_protocol::EGRESS_PROXY_PORT).
const PROXY: u16 = 3128;
/// Where the upstream servers listen: the host's loopback, but not an address
/// the sandbox's `NO_PROXY` names (Python honours it; busybox wget does not).
const UPSTREAM: &str = "127.0.0.2";

/// An HTTP/1.1 server: `/hello` says hello, `/big` sends [`BIG`] bytes,
/// `/trickle` sends 20 bytes one every 100 ms; then it closes.
async fn http_server() -> u16 {
    let listener = TcpListener::bind((UPSTREAM, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                let ok = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
                match path.as_str() {
                    "/big" => {
                        let _ = sock.write_all(ok(BIG).as_bytes()).await;
                        let chunk = vec![b'x'; 64 * 1024];
                        for _ in 0..BIG / chunk.len() {
                            if sock.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    }
                    "/trickle" => {
                        let _ = sock.write_all(ok(20).as_bytes()).await;
                        for _ in 0..20 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if sock.write_all(b"t").await.is_err() {
                                return;
                            }
                        }
                    }
                    _ => {
                        let body = format!("hello from upstream ({line})");
                        let _ = sock.write_all(format!("{}{body}", ok(body.len())).as_bytes()).await;
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

/// Accepts and never answers (keeps every connection).
async fn silent_server() -> u16 {
    let listener = TcpListener::bind((UPSTREAM, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    port
}

/// An HTTPS server (Python's, with a fresh self-signed certificate for
/// 127.0.0.2); the certificate's PEM is returned for the sandbox to trust.
struct TlsServer {
    child: Child,
    port: u16,
    cert: String,
    _dir: Dir,
}

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server() -> TlsServer {
    let dir = std::env::temp_dir().join(format!("brig-egress-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.2",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success(), "openssl could not make a certificate");
    let port = free_port();
    let script = format!(
        "import http.server, ssl\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       body = b'hello over tls'\n\
         \x20       self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n\
         \x20       self.wfile.write(body)\n\
         \x20   def log_message(self, *a): pass\n\
         s = http.server.HTTPServer(('127.0.0.2', {port}), H)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('cert.pem', 'key.pem')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n"
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .current_dir(&dir)
        .spawn()
        .unwrap();
    let cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((UPSTREAM, port)).is_err() {
        assert!(Instant::now() < deadline, "the TLS server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsServer {
        child,
        port,
        cert,
        _dir: Dir(dir),
    }
}

fn start_api(runtime: &str, extra: &[(&str, &str)]) -> BrigApi {
    let mut env = vec![
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", COMMANDS),
        ("CONTAINER_IMAGE", PYTHON_IMAGE),
        ("CONTAINER_RUNTIME", runtime),
    ];
    env.extend_from_slice(extra);
    BrigApi::start(&env)
}

async fn create(api: &BrigApi, session: &str, allow: &[String]) -> Reply {
    let body = json!({"session_id": session, "network": {"allow": allow}});
    call(api, Method::POST, "/sessions", ALICE_KEY, Some(body)).await
}

/// Runs `command` in alice's `session` with `timeout` seconds.
async fn sh(api: &BrigApi, session: &str, command: &str, timeout: u64) -> Value {
    let body = json!({"command": command, "session_id": session, "timeout": timeout});
    let reply = call(api, Method::POST, "/execute", ALICE_KEY, Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{command}: {:?}", reply.body);
    reply.body
}

/// Runs `command` in alice's `session` on a task of its own (the reply,
/// whatever its status, is the task's result).
fn spawn_execute(api: &BrigApi, session: &str, command: String, timeout: u64) -> tokio::task::JoinHandle<Reply> {
    let base = api.base.clone();
    let body = json!({"command": command, "session_id": session, "timeout": timeout});
    tokio::spawn(async move { post(&base, "/execute", ALICE_KEY, &body).await.unwrap() })
}

/// What the in-sandbox proxy answers a `CONNECT target`, first line and reason.
async fn connect_through_proxy(api: &BrigApi, session: &str, target: &str) -> String {
    let command = format!(
        "sh -c \"printf 'CONNECT {target} HTTP/1.1\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {}\"",
        PROXY
    );
    let out = sh(api, session, &command, 15).await;
    out["stdout"].as_str().unwrap().to_string()
}

fn stdout(out: &Value) -> &str {
    out["stdout"].as_str().unwrap()
}

/// The whole group under one runtime.
async fn allowed_denied_tls_and_live_changes(runtime: &str) {
    let http = http_server().await;
    let other = http_server().await;
    let tls = tls_server();
    let api = start_api(runtime, &[("EGRESS_ALLOWED", "*"), ("EGRESS_ALLOW_PRIVATE", "true")]);
    let allow = vec![
        format!("127.0.0.2:{http}"),
        format!("127.0.0.2:{}", tls.port),
        "169.254.0.0/16".into(),
    ];
    let created = create(&api, "net", &allow).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    // Allowed, from the environment alone: busybox wget, curl and Python urllib.
    let got = sh(&api, "net", &format!("wget -q -O - http://127.0.0.2:{http}/hello"), 20).await;
    assert_eq!(got["exit_code"], 0, "{got}");
    assert_eq!(stdout(&got), "hello from upstream (GET /hello HTTP/1.1)");
    let urllib = format!(
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.2:{http}/py').read().decode())\""
    );
    let got = sh(&api, "net", &urllib, 20).await;
    assert_eq!(stdout(&got).trim(), "hello from upstream (GET /py HTTP/1.1)", "{got}");
    let got = sh(&api, "net", &format!("curl -sS http://127.0.0.2:{http}/curl"), 20).await;
    assert_eq!(stdout(&got), "hello from upstream (GET /curl HTTP/1.1)", "{got}");

    // TLS through CONNECT, verified against the server's own certificate.
    let put = reqwest::Client::new()
        .put(api.url("/sessions/net/files/ca.pem"))
        .header("x-api-key", ALICE_KEY)
        .body(tls.cert.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.status());
    let https = format!(
        "python3 -c \"import ssl, urllib.request as u; c = ssl.create_default_context(cafile='/workspace/ca.pem'); \
         print(u.urlopen('https://127.0.0.2:{}/', context=c).read().decode())\"",
        tls.port
    );
    let got = sh(&api, "net", &https, 20).await;
    assert_eq!(stdout(&got).trim(), "hello over tls", "{got}");
    let https = format!("curl -sS --cacert /workspace/ca.pem https://127.0.0.2:{}/", tls.port);
    let got = sh(&api, "net", &https, 20).await;
    assert_eq!(stdout(&got).trim(), "hello over tls", "{got}");

    // Denied: fast, with the reason in the proxy's answer.
    let started = Instant::now();
    let got = sh(&api, "net", &format!("wget -q -O - http://127.0.0.2:{other}/"), 20).await;
    assert_ne!(got["exit_code"], 0, "{got}");
    assert!(got["stderr"].as_str().unwrap().contains("403"), "{got}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a denial took {:?}",
        started.elapsed()
    );
    let answer = connect_through_proxy(&api, "net", &format!("127.0.0.2:{other}")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("not in the session's allow-list"), "{answer}");
    // The metadata service, though its network is on the list and private
    // addresses are allowed.
    let answer = connect_through_proxy(&api, "net", "169.254.169.254:80").await;
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("metadata"),
        "{answer}"
    );

    // A live change: new connections follow the new list.
    let put = call(
        &api,
        Method::PUT,
        "/sessions/net/network",
        ALICE_KEY,
        Some(json!({"allow": [format!("127.0.0.2:{other}")]})),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["allow"], json!([format!("127.0.0.2:{other}")]));
    let got = sh(&api, "net", &format!("wget -q -O - http://127.0.0.2:{other}/now"), 20).await;
    assert_eq!(stdout(&got), "hello from upstream (GET /now HTTP/1.1)", "{got}");
    let answer = connect_through_proxy(&api, "net", &format!("127.0.0.2:{http}")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let read = call(&api, Method::GET, "/sessions/net/network", ALICE_KEY, None).await;
    assert_eq!(read.body["allow"], put.body["allow"]);
    assert_eq!(read.body["enabled"], true);

    // Bob cannot read or change alice's session's list.
    let foreign = call(
        &api,
        Method::PUT,
        "/sessions/net/network",
        BOB_KEY,
        Some(json!({"allow": ["*"]})),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);

    // Without EGRESS_ALLOW_PRIVATE: a private address, and a name that
    // resolves to loopback, are refused although the list allows them.
    let strict = start_api(runtime, &[("EGRESS_ALLOWED", "*")]);
    let created = create(&strict, "strict", &["*".to_string()]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let answer = connect_through_proxy(&strict, "strict", &format!("localhost:{http}")).await;
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("loopback"),
        "{answer}"
    );
    let answer = connect_through_proxy(&strict, "strict", "10.1.2.3:80").await;
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("private"),
        "{answer}"
    );
    let answer = connect_through_proxy(&strict, "strict", "169.254.169.254:80").await;
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("metadata"),
        "{answer}"
    );
}

/// A download, a silent upstream and a trickling one never hold up a command
/// on the same session; a sandbox flooding connections gets refusals and
/// keeps its session.
async fn downloads_silence_and_floods(runtime: &str) {
    let http = http_server().await;
    let silent = silent_server().await;
    let api = start_api(
        runtime,
        &[
            ("EGRESS_ALLOWED", "127.0.0.0/8"),
            ("EGRESS_ALLOW_PRIVATE", "true"),
            ("EGRESS_MAX_CONNECTIONS", "4"),
        ],
    );
    let created = create(&api, "dl", &["127.0.0.2".to_string()]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let echo_p50 = |api: &BrigApi| {
        let base = api.base.clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..15 {
                let started = Instant::now();
                let body = json!({"command": "echo hi", "session_id": "dl"});
                let reply = post(&base, "/execute", ALICE_KEY, &body).await.unwrap();
                assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
                times.push(started.elapsed());
            }
            times.sort();
            times[times.len() / 2]
        }
    };
    let quiet = echo_p50(&api).await;

    // 50 MB through the tunnel while echoes run on the same session.
    let download = spawn_execute(
        &api,
        "dl",
        format!("sh -c \"wget -q -O - http://127.0.0.2:{http}/big | wc -c\""),
        120,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = echo_p50(&api).await;
    let downloaded = download.await.unwrap();
    assert_eq!(downloaded.status, StatusCode::OK, "{:?}", downloaded.body);
    assert_eq!(
        downloaded.body["stdout"].as_str().unwrap().trim(),
        BIG.to_string(),
        "{:?}",
        downloaded.body
    );
    eprintln!("warm echo p50: {quiet:?} alone, {busy:?} during a 50 MB download");
    assert!(
        busy < quiet * 10 + Duration::from_millis(50),
        "echo p50 {busy:?} during the download, {quiet:?} without"
    );

    // A silent upstream and a trickling one, while echoes still answer.
    let hanging = spawn_execute(
        &api,
        "dl",
        format!(
            "sh -c \"wget -q -O - http://127.0.0.2:{silent}/ & wget -q -O - http://127.0.0.2:{http}/trickle; wait\""
        ),
        4,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = echo_p50(&api).await;
    assert!(
        during < quiet * 10 + Duration::from_millis(50),
        "echo p50 {during:?} beside a silent upstream"
    );
    let hung = hanging.await.unwrap();
    assert_eq!(hung.body["timed_out"], true, "{:?}", hung.body);
    assert_eq!(hung.body["stdout"], "tttttttttttttttttttt", "{:?}", hung.body);

    // A flood: ten held connections, at most four open, the rest refused.
    // (The silent upstream's tunnel went when its client was killed: five
    // seconds after the client's end of file with nothing from upstream.)
    tokio::time::sleep(Duration::from_secs(6)).await;
    let flood = format!(
        "import socket\n\
         answers, held = [], []\n\
         for i in range(10):\n\
         \x20   s = socket.create_connection(('127.0.0.1', {PROXY}))\n\
         \x20   s.sendall(b'CONNECT 127.0.0.2:{silent} HTTP/1.1\\r\\n\\r\\n')\n\
         \x20   s.settimeout(10)\n\
         \x20   answers.append(s.recv(200).split(b'\\r\\n')[0].decode())\n\
         \x20   held.append(s)\n\
         print(sum(a.startswith('HTTP/1.1 200') for a in answers), sum(a.startswith('HTTP/1.1 403') for a in answers))\n"
    );
    let put = reqwest::Client::new()
        .put(api.url("/sessions/dl/files/flood.py"))
        .header("x-api-key", ALICE_KEY)
        .body(flood)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.status());
    let flooded = sh(&api, "dl", "python3 /workspace/flood.py", 60).await;
    assert_eq!(stdout(&flooded).trim(), "4 6", "{flooded}");
    let after = sh(&api, "dl", "echo still here", 10).await;
    assert_eq!(stdout(&after), "still here\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_is_off_unless_allowed_and_patterns_are_checked() {
    let off = start_api("runc", &[]);
    let refused = create(&off, "s", &["pypi.org".to_string()]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "egress_not_allowed");
    assert!(refused.body["detail"].as_str().unwrap().contains("EGRESS_ALLOWED"));
    // A session without egress: no proxy environment, and the proxy refuses.
    let plain = sh(&off, "plain", "sh -c 'echo ${HTTP_PROXY:-none}'", 10).await;
    assert_eq!(stdout(&plain), "none\n");
    let answer = connect_through_proxy(&off, "plain", "example.com:443").await;
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("egress is off"),
        "{answer}"
    );

    let on = start_api("runc", &[("EGRESS_ALLOWED", "*.example.com,pypi.org:443")]);
    let bad = create(&on, "s", &["pypi.org".to_string(), "exa mple.com".to_string()]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", bad.body);
    assert_eq!(bad.body["error"], "invalid_egress_pattern");
    assert!(
        bad.body["detail"].as_str().unwrap().contains("exa mple.com"),
        "{:?}",
        bad.body
    );
    let outside = create(&on, "s", &["pypi.org".to_string()]).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN, "{:?}", outside.body);
    assert!(outside.body["detail"]
        .as_str()
        .unwrap()
        .contains("pypi.org is not within EGRESS_ALLOWED"));
    let fine = create(
        &on,
        "s",
        &["api.example.com:443".to_string(), "pypi.org:443".to_string()],
    )
    .await;
    assert_eq!(fine.status, StatusCode::CREATED, "{:?}", fine.body);
    let env = sh(&on, "s", "sh -c 'echo $HTTPS_PROXY $no_proxy'", 10).await;
    assert_eq!(
        stdout(&env),
        format!("http://127.0.0.1:{} localhost,127.0.0.1\n", PROXY)
    );
    // A name outside the list is refused without brig looking it up.
    let answer = connect_through_proxy(&on, "s", "secret.attacker.test:443").await;
    assert!(answer.contains("not in the session's allow-list"), "{answer}");
    let bad_put = call(
        &on,
        Method::PUT,
        "/sessions/s/network",
        ALICE_KEY,
        Some(json!({"allow": ["10.0.0.0/33"]})),
    )
    .await;
    assert_eq!(bad_put.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", bad_put.body);
    let missing = call(&on, Method::GET, "/sessions/nope/network", ALICE_KEY, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// Two replicas on one store: commands through either reach the upstream, and
/// only the process holding the sandbox's channel lease dials (the other,
/// which runs its commands through the engine's exec, never answers a dial).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_replica_serves_egress_through_the_channel_holder() {
    let http = http_server().await;
    let redis = RedisServer::start();
    let env = [
        ("REDIS_URL", redis.url()),
        ("ALLOWED_COMMANDS", COMMANDS.to_string()),
        ("CONTAINER_IMAGE", PYTHON_IMAGE.to_string()),
        ("EGRESS_ALLOWED", UPSTREAM.to_string()),
        ("EGRESS_ALLOW_PRIVATE", "true".to_string()),
    ];
    let first = BrigApi::start(&env_refs(&env));
    let second = BrigApi::start_in(&first.instance, &env_refs(&env));
    let created = create(&first, "shared", &[UPSTREAM.to_string()]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    for (i, api) in [&first, &second, &second, &first].into_iter().enumerate() {
        let got = sh(
            api,
            "shared",
            &format!("wget -q -O - http://{UPSTREAM}:{http}/r{i}"),
            20,
        )
        .await;
        assert_eq!(
            stdout(&got),
            format!("hello from upstream (GET /r{i} HTTP/1.1)"),
            "through replica {i}: {got}"
        );
    }
    let dialled = |api: &BrigApi| {
        api.logs()
            .iter()
            .filter(|line| line.contains("brig::audit") && line.contains("egress") && line.contains("allowed"))
            .count()
    };
    assert_eq!(dialled(&first), 4, "the channel holder dials every connection");
    assert_eq!(dialled(&second), 0, "the other replica never answers a dial");
}

mod runc {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn allowed_denied_tls_and_live_changes() {
        super::allowed_denied_tls_and_live_changes("runc").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn downloads_silence_and_floods() {
        super::downloads_silence_and_floods("runc").await;
    }
}

mod runsc {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn allowed_denied_tls_and_live_changes() {
        super::allowed_denied_tls_and_live_changes("runsc").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn downloads_silence_and_floods() {
        super::downloads_silence_and_floods("runsc").await;
    }
}
