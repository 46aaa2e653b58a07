//! Durable executions: output kept in the sandbox by offset (read, followed
//! live, resumed after a disconnect with no byte lost or repeated, expired
//! explicitly), a stdin pipe, signals, environment, exit reasons, listing,
//! and another principal seeing none of it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::*;

const ALLOWLIST: &str = "sh,cat,sleep,env,yes,head,ps";

/// 20 MiB of `yes` lines: what the big output tests stream.
const BIG: usize = 20 << 20;
const LINE: &[u8] = b"0123456789abcdef\n";

fn expected_big() -> Vec<u8> {
    LINE.iter().copied().cycle().take(BIG).collect()
}

fn api() -> BrigApi {
    BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", ALLOWLIST),
        ("EXECUTION_BUFFER_BYTES", "24m"),
        ("CONTAINER_MEM_LIMIT", "256m"),
    ])
}

async fn start(api: &BrigApi, session: &str, body: Value) -> String {
    let mut body = body;
    body["session_id"] = json!(session);
    let reply = call(api, Method::POST, "/executions", ALICE_KEY, Some(body)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    reply.body["execution_id"].as_str().unwrap().to_string()
}

/// Polls until the execution is no longer running.
async fn finished(api: &BrigApi, id: &str) -> Value {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = call(api, Method::GET, &format!("/executions/{id}"), ALICE_KEY, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        if reply.body["status"] != "running" {
            return reply.body;
        }
        assert!(Instant::now() < give_up, "still running: {:?}", reply.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// All of stdout from `offset` on, through `GET /output`, page by page.
async fn read_all(api: &BrigApi, id: &str, offset: u64) -> (Vec<u8>, Value) {
    let (mut out, mut at) = (Vec::new(), offset);
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let path = format!("/executions/{id}/output?stdout_offset={at}&stderr_offset=0");
        let reply = call(api, Method::GET, &path, ALICE_KEY, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let text = reply.body["stdout"].as_str().unwrap();
        out.extend_from_slice(text.as_bytes());
        assert_eq!(reply.body["stdout_offset"], at + text.len() as u64);
        at = reply.body["stdout_offset"].as_u64().unwrap();
        if reply.body["complete"] == true {
            return (out, reply.body["ending"].clone());
        }
        assert!(Instant::now() < give_up, "output never completed");
        if text.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An SSE connection to `/executions/{id}/events`.
struct Follow {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Follow {
    async fn open(api: &BrigApi, id: &str, last_event_id: Option<&str>) -> Follow {
        let mut request = reqwest::Client::new()
            .get(api.url(&format!("/executions/{id}/events")))
            .header("x-api-key", ALICE_KEY);
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Follow {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event: (name, id, data).
    async fn next(&mut self) -> Option<(String, String, Value)> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).unwrap();
                let (mut name, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if name.is_empty() {
                    continue; // keep-alive comment
                }
                return Some((name, id, serde_json::from_str(&data).unwrap()));
            }
            let chunk = self.response.chunk().await.unwrap()?;
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_output_is_followed_resumed_after_a_disconnect_and_paged_with_no_byte_lost_or_repeated() {
    let api = api();
    let command = format!("sh -c 'yes 0123456789abcdef | head -c {BIG}'");
    let id = start(&api, "big", json!({"command": command, "timeout": 120})).await;

    // Follow until a few MiB arrived, then drop the connection mid-output.
    let (mut seen, mut last_id) = (Vec::new(), String::new());
    let mut follow = Follow::open(&api, &id, None).await;
    while seen.len() < 5 << 20 {
        let (name, event_id, data) = follow.next().await.expect("the stream ended early");
        assert_eq!(name, "stdout", "{data}");
        seen.extend_from_slice(data["data"].as_str().unwrap().as_bytes());
        assert_eq!(
            event_id,
            format!("{}:0", seen.len()),
            "an event's id is the offsets after it"
        );
        last_id = event_id;
    }
    drop(follow);
    // The command went on without a reader.
    let done = finished(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (done["reason"].as_str(), done["stdout_truncated"].as_bool()),
        (Some("exited"), Some(true))
    );

    // Reconnect where the stream stopped: the rest, then the end.
    let mut follow = Follow::open(&api, &id, Some(&last_id)).await;
    let ending = loop {
        let (name, _, data) = follow.next().await.expect("the stream ended without exit");
        match name.as_str() {
            "stdout" => seen.extend_from_slice(data["data"].as_str().unwrap().as_bytes()),
            "exit" => break data,
            other => panic!("unexpected {other} event: {data}"),
        }
    };
    assert!(seen == expected_big(), "{} bytes, not the 20 MiB written", seen.len());
    assert_eq!(ending["reason"], "exited");
    assert_eq!(ending["exit_code"], 0);
    assert_eq!(ending["stdout_bytes"], BIG as u64);

    // Paged, from anywhere: the same bytes.
    let (all, ending) = read_all(&api, &id, 0).await;
    assert!(all == expected_big(), "paged bytes differ");
    assert_eq!(ending["reason"], "exited");
    let (tail, _) = read_all(&api, &id, 12345).await;
    assert!(tail == expected_big()[12345..], "paged bytes differ");

    // Past the 24 MiB buffer, bytes that left it are said to have, never
    // silently skipped.
    let more = start(
        &api,
        "big",
        json!({"command": "sh -c 'yes | head -c 30000000'", "timeout": 120}),
    )
    .await;
    finished(&api, &more).await;
    let (tail, _) = read_all(&api, &more, 30_000_000 - (24 << 20)).await;
    assert_eq!(tail.len(), 24 << 20);
    let expired = call(
        &api,
        Method::GET,
        &format!("/executions/{more}/output?stdout_offset=0"),
        ALICE_KEY,
        None,
    )
    .await;
    assert_eq!(expired.status, StatusCode::GONE, "{:?}", expired.body);
    assert_eq!(expired.body["error"], "cursor_expired");
    // So is a resumed stream's: a plain 410 before any event.
    let resumed = reqwest::Client::new()
        .get(api.url(&format!("/executions/{more}/events")))
        .header("x-api-key", ALICE_KEY)
        .header("last-event-id", "1:0")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::GONE);
    let body: Value = resumed.json().await.unwrap();
    assert_eq!(body["error"], "cursor_expired");
}

async fn post_stdin(api: &BrigApi, id: &str, data: Vec<u8>, close: bool) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(api.url(&format!("/executions/{id}/stdin?close={close}")))
        .header("x-api-key", ALICE_KEY)
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_go_through_cat_by_the_stdin_pipe() {
    let api = api();
    let id = start(&api, "pipe", json!({"command": "cat", "stdin": "pipe", "timeout": 120})).await;
    let chunk: Vec<u8> = LINE.iter().copied().cycle().take(1 << 20).collect();
    let (status, body) = post_stdin(&api, &id, vec![b'x'; (1 << 20) + 1], false).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("stdin_too_large"))
    );
    assert!(body["detail"].as_str().unwrap().contains("1048576"), "{body}");
    for part in 0..10 {
        let (status, body) = post_stdin(&api, &id, chunk.clone(), part == 9).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "chunk {part}: {body}");
    }
    let done = finished(&api, &id).await;
    assert_eq!(
        (done["status"].as_str(), done["exit_code"].as_i64()),
        (Some("completed"), Some(0))
    );
    let (out, ending) = read_all(&api, &id, 0).await;
    assert!(out == chunk.repeat(10), "{} bytes came out of cat", out.len());
    assert_eq!(ending["stdout_bytes"], 10 << 20);
    // The process has ended: its stdin and signals are refused.
    let (status, body) = post_stdin(&api, &id, b"late".to_vec(), false).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("execution_not_running"))
    );
    let signal = call(
        &api,
        Method::POST,
        &format!("/executions/{id}/signal"),
        ALICE_KEY,
        Some(json!({"signal": "TERM"})),
    )
    .await;
    assert_eq!(signal.status, StatusCode::CONFLICT, "{:?}", signal.body);
    // An execution started without a pipe takes no stdin.
    let plain = start(&api, "pipe", json!({"command": "sleep 5", "timeout": 10})).await;
    let (status, body) = post_stdin(&api, &plain, b"x".to_vec(), false).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("execution_not_running"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_environment_reasons_and_listing_and_nothing_for_another_principal() {
    let api = api();
    // A signal ends the command's group; the result says how.
    let sleeper = start(
        &api,
        "sig",
        json!({"command": "sh -c 'sleep 30; echo never'", "timeout": 60}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("/executions/{sleeper}/signal");
    let bad = call(&api, Method::POST, &path, ALICE_KEY, Some(json!({"signal": "STOP"}))).await;
    assert_eq!(
        (bad.status, bad.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_signal"))
    );
    let sent = call(&api, Method::POST, &path, ALICE_KEY, Some(json!({"signal": "INT"}))).await;
    assert_eq!(sent.status, StatusCode::OK, "{:?}", sent.body);
    let done = finished(&api, &sleeper).await;
    assert_eq!(
        (
            done["reason"].as_str(),
            done["signal"].as_i64(),
            done["exit_code"].as_i64()
        ),
        (Some("signalled"), Some(2), Some(130)),
        "{done}"
    );
    assert_eq!(done["stdout"], "");
    let slow = start(&api, "sig", json!({"command": "sleep 30", "timeout": 1})).await;
    assert_eq!(finished(&api, &slow).await["reason"], "timed_out");

    // Environment: set for the command; brig's own and bad names refused, named.
    let run = |env: Value| {
        let api = &api;
        async move {
            let body = json!({"command": "env", "session_id": "sig", "env": env});
            call(api, Method::POST, "/execute", ALICE_KEY, Some(body)).await
        }
    };
    let set = run(json!({"GREETING": "hello there", "_X1": ""})).await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    let stdout = set.body["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("GREETING=hello there\n") && stdout.contains("_X1=\n"),
        "{stdout}"
    );
    assert_eq!(set.body["reason"], "exited");
    for (env, named) in [
        (json!({"PATH": "/tmp"}), "PATH"),
        (json!({"BRIG_CMD": "x"}), "BRIG_CMD"),
        (json!({"HTTP_PROXY": "http://evil"}), "HTTP_PROXY"),
        (json!({"1BAD": "x"}), "1BAD"),
        (json!({"A=B": "x"}), "A=B"),
        (json!({"NUL": "a\u{0}b"}), "NUL"),
    ] {
        let refused = run(env).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", refused.body);
        assert_eq!(refused.body["error"], "invalid_env");
        assert!(
            refused.body["detail"].as_str().unwrap().contains(named),
            "{:?}",
            refused.body
        );
    }
    // A session's environment: every command's, under the command's own.
    let body = json!({"session_id": "envs", "env": {"TEAM": "blue", "X": "session"}});
    let created = call(&api, Method::POST, "/sessions", ALICE_KEY, Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let body = json!({"command": "env", "session_id": "envs", "env": {"X": "command"}});
    let both = call(&api, Method::POST, "/execute", ALICE_KEY, Some(body)).await;
    let stdout = both.body["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("TEAM=blue\n") && stdout.contains("X=command\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("X=session"), "{stdout}");
    let body = json!({"session_id": "bad-env", "env": {"HOME": "/"}});
    let refused = call(&api, Method::POST, "/sessions", ALICE_KEY, Some(body)).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_env"))
    );

    let with_env = start(&api, "sig", json!({"command": "env", "env": {"FROM_EXECUTIONS": "1"}})).await;
    assert!(finished(&api, &with_env).await["stdout"]
        .as_str()
        .unwrap()
        .contains("FROM_EXECUTIONS=1\n"));

    // The session's executions, oldest first.
    let listed = call(&api, Method::GET, "/sessions/sig/executions", ALICE_KEY, None).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["execution_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sleeper.as_str(), slow.as_str(), with_env.as_str()]);

    // Another principal: every door is a 404.
    for (method, path, body) in [
        (Method::GET, format!("/executions/{sleeper}/output"), None),
        (Method::GET, format!("/executions/{sleeper}/events"), None),
        (
            Method::POST,
            format!("/executions/{sleeper}/signal"),
            Some(json!({"signal": "KILL"})),
        ),
        (Method::GET, "/sessions/sig/executions".to_string(), None),
    ] {
        let reply = call(&api, method, &path, BOB_KEY, body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {:?}", reply.body);
    }
    let response = reqwest::Client::new()
        .post(api.url(&format!("/executions/{sleeper}/stdin")))
        .header("x-api-key", BOB_KEY)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let unknown = call(&api, Method::GET, "/executions/0123/output", ALICE_KEY, None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_resumes_the_stream_and_a_killed_api_leaves_its_output_and_no_process() {
    let redis = RedisServer::start();
    let env = [
        ("REDIS_URL", redis.url()),
        ("ALLOWED_COMMANDS", ALLOWLIST.to_string()),
        ("EXECUTION_BUFFER_BYTES", "24m".to_string()),
        ("CONTAINER_MEM_LIMIT", "256m".to_string()),
    ];
    let mut first = BrigApi::start(&env_refs(&env));
    let second = BrigApi::start_in(&first.instance, &env_refs(&env));

    // Started and followed on the first replica (which owns the sandbox's
    // channel), resumed on the second (which relays to the same agent).
    let command = format!("sh -c 'yes 0123456789abcdef | head -c {BIG}'");
    let id = start(&first, "shared", json!({"command": command, "timeout": 120})).await;
    let (mut seen, mut last_id) = (Vec::new(), String::new());
    let mut follow = Follow::open(&first, &id, None).await;
    while seen.len() < 3 << 20 {
        let (name, event_id, data) = follow.next().await.expect("the stream ended early");
        assert_eq!(name, "stdout", "{data}");
        seen.extend_from_slice(data["data"].as_str().unwrap().as_bytes());
        last_id = event_id;
    }
    drop(follow);
    let mut follow = Follow::open(&second, &id, Some(&last_id)).await;
    loop {
        let (name, _, data) = follow.next().await.expect("the stream ended without exit");
        match name.as_str() {
            "stdout" => seen.extend_from_slice(data["data"].as_str().unwrap().as_bytes()),
            "exit" => break,
            other => panic!("unexpected {other} event: {data}"),
        }
    }
    assert!(seen == expected_big(), "{} bytes, not the 20 MiB written", seen.len());

    // Started by the second replica (relayed), read by the first.
    let relayed = start(
        &second,
        "shared",
        json!({"command": "sh -c 'echo relayed; echo err >&2'"}),
    )
    .await;
    finished(&first, &relayed).await;
    let (out, ending) = read_all(&first, &relayed, 0).await;
    assert_eq!(
        (out.as_slice(), ending["reason"].as_str()),
        (&b"relayed\n"[..], Some("exited"))
    );

    // The replica running an execution dies: its tree dies with it, and what
    // it wrote until then stays readable from the other.
    let cut = start(
        &first,
        "shared",
        json!({"command": "sh -c 'echo before; sleep 200 & sleep 200'", "timeout": 300}),
    )
    .await;
    let give_up = Instant::now() + Duration::from_secs(30);
    while sleepers(&second, "shared").await < 2 {
        assert!(Instant::now() < give_up, "the execution never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.service.kill();
    let give_up = Instant::now() + Duration::from_secs(30);
    let ending = loop {
        let path = format!("/executions/{cut}/output");
        let reply = call(&second, Method::GET, &path, ALICE_KEY, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body["stdout"], "before\n");
        if reply.body["complete"] == true {
            break reply.body["ending"].clone();
        }
        assert!(
            Instant::now() < give_up,
            "the execution outlived its API: {:?}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ending["reason"], "cancelled", "{ending}");
    assert_eq!(
        sleepers(&second, "shared").await,
        0,
        "a process outlived the API that ran it"
    );
}

/// A WebSocket attached to an execution: bytes in, bytes and the last word out.
pub(crate) struct Attached {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    seen: String,
}

impl Attached {
    pub(crate) async fn open(api: &BrigApi, id: &str) -> Attached {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = api.url(&format!("/executions/{id}/attach")).replacen("http", "ws", 1);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("x-api-key", ALICE_KEY.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("attach");
        Attached {
            socket,
            seen: String::new(),
        }
    }

    pub(crate) async fn send(&mut self, message: tokio_tungstenite::tungstenite::Message) {
        use futures_util::SinkExt;
        self.socket.send(message).await.unwrap();
    }

    pub(crate) async fn type_in(&mut self, keys: &str) {
        self.send(tokio_tungstenite::tungstenite::Message::Binary(
            keys.as_bytes().to_vec().into(),
        ))
        .await;
    }

    /// Reads output until `wanted` shows up; the text message that ends the
    /// attachment, if it came instead.
    pub(crate) async fn until(&mut self, wanted: &str) -> Option<Value> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let give_up = Instant::now() + Duration::from_secs(20);
        while !self.seen.contains(wanted) {
            let left = give_up.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{wanted:?} never came: {:?}", self.seen));
            match message {
                Some(Ok(Message::Binary(bytes))) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(_)) => {}
                other => panic!(
                    "the attachment ended before {wanted:?}: {other:?} after {:?}",
                    self.seen
                ),
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_over_a_websocket_survives_ctrl_c_resizes_and_ends() {
    let api = api();
    let body = json!({"command": "sh -i", "tty": {"rows": 24, "cols": 80}, "timeout": 120});
    let id = start(&api, "term", body).await;
    let mut term = Attached::open(&api, &id).await;
    term.type_in("stty size\n").await;
    assert!(term.until("24 80").await.is_none());
    // Ctrl-C ends the foreground sleep; the shell lives on.
    term.type_in("sleep 100\n").await;
    let give_up = Instant::now() + Duration::from_secs(10);
    while sleepers(&api, "term").await == 0 {
        assert!(Instant::now() < give_up, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    term.type_in("\u{3}").await;
    term.type_in("echo alive-$((40+2))\n").await;
    assert!(term.until("alive-42").await.is_none());
    assert_eq!(sleepers(&api, "term").await, 0, "the sleep survived Ctrl-C");
    // A resize reaches the terminal.
    term.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"resize": {"rows": 40, "cols": 100}}).to_string().into(),
    ))
    .await;
    term.type_in("stty size\n").await;
    assert!(term.until("40 100").await.is_none());
    // The shell's end is the attachment's last word.
    term.type_in("exit 3\n").await;
    let last = term.until("never printed").await.expect("no last message");
    assert_eq!(
        (last["exit"]["reason"].as_str(), last["exit"]["exit_code"].as_i64()),
        (Some("exited"), Some(3)),
        "{last}"
    );
    let done = finished(&api, &id).await;
    assert_eq!(done["exit_code"], 3, "{done}");

    // Attaching: to an ended execution 409, without the upgrade 426, as another principal 404.
    let again = call(&api, Method::GET, &format!("/executions/{id}/attach"), ALICE_KEY, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    let running = start(&api, "term", json!({"command": "cat", "stdin": "pipe", "timeout": 30})).await;
    let plain = call(
        &api,
        Method::GET,
        &format!("/executions/{running}/attach"),
        ALICE_KEY,
        None,
    )
    .await;
    assert_eq!(
        (plain.status, plain.body["error"].as_str()),
        (StatusCode::UPGRADE_REQUIRED, Some("upgrade_required"))
    );
    let foreign = call(
        &api,
        Method::GET,
        &format!("/executions/{running}/attach"),
        BOB_KEY,
        None,
    )
    .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    // A piped command attaches too: what is typed comes back through cat.
    let mut piped = Attached::open(&api, &running).await;
    piped.type_in("through cat\n").await;
    assert!(piped.until("through cat\n").await.is_none());
    let tty_on_execute = call(
        &api,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "sh", "session_id": "term", "tty": {"rows": 1, "cols": 1}})),
    )
    .await;
    assert_eq!(tty_on_execute.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_context_keeps_its_variables_survives_an_interrupt_and_is_nobody_elses() {
    const PYTHON_IMAGE: &str = "brig-sandbox-python:latest";
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "python3,ps"),
        ("ALLOWED_IMAGES", PYTHON_IMAGE),
        ("LANGUAGES", "python=python3 -"),
    ]);
    let body = json!({"session_id": "ctx", "image": PYTHON_IMAGE});
    assert_eq!(
        call(&api, Method::POST, "/sessions", ALICE_KEY, Some(body))
            .await
            .status,
        StatusCode::CREATED
    );
    let created = call(
        &api,
        Method::POST,
        "/sessions/ctx/contexts",
        ALICE_KEY,
        Some(json!({"language": "python"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let context = created.body["context_id"].as_str().unwrap().to_string();
    let run = |code: &str, timeout: f64| {
        let (api, path) = (&api, format!("/contexts/{context}/run"));
        let body = json!({"code": code, "timeout": timeout});
        async move { call(api, Method::POST, &path, ALICE_KEY, Some(body)).await }
    };
    let first = run("x = 41\nprint('set')", 30.0).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(
        (first.body["stdout"].as_str(), &first.body["result"]),
        (Some("set\n"), &Value::Null)
    );
    let second = run("x + 1", 30.0).await;
    assert_eq!(second.body["result"], "42", "{:?}", second.body);
    let failed = run("import sys\nprint('to err', file=sys.stderr)\n1 / 0", 30.0).await;
    assert_eq!(failed.body["stderr"], "to err\n");
    assert_eq!(failed.body["error"]["name"], "ZeroDivisionError", "{:?}", failed.body);
    assert!(failed.body["error"]["traceback"].as_str().unwrap().contains("<cell>"));
    // A subprocess writing to fd 1 and a huge error break nothing.
    let sub = run("import os\nos.system('echo from-a-subprocess')", 30.0).await;
    assert_eq!(
        (sub.status, sub.body["result"].as_str()),
        (StatusCode::OK, Some("0")),
        "{:?}",
        sub.body
    );
    let huge = run("raise ValueError('é' * 10**7)", 30.0).await;
    assert_eq!(huge.body["error"]["name"], "ValueError", "{:?}", huge.status);
    assert!(huge.body["error"]["message"].as_str().unwrap().chars().count() <= 256 * 1024);
    assert_eq!(run("x", 30.0).await.body["result"], "41");

    // A runaway cell: interrupted, the context and its variables live on.
    let runaway = tokio::spawn({
        let (base, path) = (api.base.clone(), format!("/contexts/{context}/run"));
        async move {
            let body = json!({"code": "while True: pass", "timeout": 60});
            reqwest::Client::new()
                .post(format!("{base}{path}"))
                .header("x-api-key", ALICE_KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = run("x", 5.0).await;
    assert_eq!(
        (busy.status, busy.body["error"].as_str()),
        (StatusCode::CONFLICT, Some("context_busy"))
    );
    let path = format!("/contexts/{context}/interrupt");
    assert_eq!(
        call(&api, Method::POST, &path, ALICE_KEY, None).await.status,
        StatusCode::NO_CONTENT
    );
    let interrupted = runaway.await.unwrap();
    assert_eq!(interrupted["error"]["name"], "KeyboardInterrupt", "{interrupted}");
    assert_eq!(run("x * 2", 30.0).await.body["result"], "82");
    // A cell past its timeout is interrupted and says so.
    let late = run("import time\ntime.sleep(30)", 1.0).await;
    assert_eq!(
        (late.body["timed_out"].as_bool(), late.body["error"]["name"].as_str()),
        (Some(true), Some("KeyboardInterrupt")),
        "{:?}",
        late.body
    );

    // Another principal: nothing, every way.
    for (method, path) in [
        (Method::POST, format!("/contexts/{context}/run")),
        (Method::POST, format!("/contexts/{context}/interrupt")),
        (Method::DELETE, format!("/contexts/{context}")),
    ] {
        let body = (method == Method::POST && path.ends_with("/run")).then(|| json!({"code": "x"}));
        assert_eq!(
            call(&api, method, &path, BOB_KEY, body).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let other = call(
        &api,
        Method::POST,
        "/sessions/ctx/contexts",
        ALICE_KEY,
        Some(json!({"language": "ruby"})),
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Deleted: its interpreter is gone, and so is the context.
    let path = format!("/contexts/{context}");
    assert_eq!(
        call(&api, Method::DELETE, &path, ALICE_KEY, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(run("x", 5.0).await.status, StatusCode::NOT_FOUND);
    let ps = call(
        &api,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "ps -o args", "session_id": "ctx"})),
    )
    .await;
    assert!(
        !ps.body["stdout"].as_str().unwrap().contains("python3 -u -c"),
        "{:?}",
        ps.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_oom_killer_ends_says_so() {
    let api = api();
    // The shell holds 400 MB of output in a 256 MiB sandbox.
    let body =
        json!({"command": "sh -c 'x=$(yes | head -c 400000000); echo survived'", "session_id": "oom", "timeout": 60});
    let reply = call(&api, Method::POST, "/execute", ALICE_KEY, Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        (reply.body["reason"].as_str(), reply.body["signal"].as_i64()),
        (Some("oom_killed"), Some(9)),
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["stdout"], "");
    // The sandbox itself lives on.
    let after = call(
        &api,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "env", "session_id": "oom"})),
    )
    .await;
    assert_eq!(
        (after.status, after.body["reason"].as_str()),
        (StatusCode::OK, Some("exited"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_a_command_does_not_read_is_queued_not_refused_so_it_is_never_sent_twice() {
    let api = api();
    let id = start(
        &api,
        "slow-reader",
        json!({"command": "sh -c 'sleep 40; wc -c'", "stdin": "pipe", "timeout": 90}),
    )
    .await;
    // More than a pipe holds: the command reads none of it for 40 s.
    let (status, _) = post_stdin(&api, &id, vec![b'x'; 200_000], true).await;
    assert_eq!(status, StatusCode::ACCEPTED, "queued, not yet read");
    let done = finished(&api, &id).await;
    assert_eq!(done["stdout"].as_str().map(str::trim), Some("200000"), "{done}");
}
