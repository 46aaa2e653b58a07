//! Hostile clients at the socket level (red team H2, H4): half-sent requests,
//! idle and hoarded connections, and answers nobody reads. Each is bounded,
//! and other clients keep being served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::*;

fn address(api: &BrigApi) -> SocketAddr {
    api.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `api` from the loopback address `from` (127.0.0.x: each
/// is its own source address), with a small receive buffer.
async fn connect_from(api: &BrigApi, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(address(api)).await.unwrap()
}

/// Reads until the server closes the connection (`Some(bytes read)`), or
/// `None` if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<usize> {
    let mut total = 0;
    let mut buf = vec![0; 64 << 10];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(total),
            Ok(Ok(n)) => total += n,
        }
    }
}

/// `GET /health` from `from`, answered within `wait`?
async fn health_from(api: &BrigApi, from: [u8; 4], wait: Duration) -> bool {
    let attempt = async {
        let mut stream = connect_from(api, from).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(wait, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_and_idle_connections_are_closed() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", HOSTILE_ALLOWLIST),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "1"),
        ("HTTP_WRITE_TIMEOUT_SECONDS", "1"),
    ]);
    // Headers that never end.
    let mut half = connect_from(&api, [127, 0, 0, 1]).await;
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut half, Duration::from_secs(5)).await.is_some(),
        "a half-sent request kept its connection"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed before the timeout"
    );
    // A kept-alive connection that sends nothing more.
    let mut idle = connect_from(&api, [127, 0, 0, 1]).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await.is_some(),
        "an idle keep-alive connection stayed open"
    );
    // Neither timeout cuts a client that waits for a silent command, plain
    // or streamed (the stream's heartbeats are not needed for that).
    let slow = attack(&api, "patient", "sleep 3; echo done", 10).await;
    assert_eq!(slow["stdout"], "done\n", "{slow}");
    let streamed = reqwest::Client::new()
        .post(api.url("/execute"))
        .header("x-api-key", ALICE_KEY)
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"command": "sh -c 'sleep 3; echo streamed'", "session_id": "patient"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        streamed.contains("streamed") && streamed.contains("event: exit"),
        "{streamed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoarded_connections_are_capped_per_address_and_in_total() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "60"),
        ("MAX_CONNECTIONS", "12"),
        ("MAX_CONNECTIONS_PER_IP", "6"),
    ]);
    // One address opens 40 and sends nothing: 6 are held, the rest closed at once.
    let mut hoard = Vec::new();
    for _ in 0..40 {
        hoard.push(connect_from(&api, [127, 0, 0, 1]).await);
    }
    let mut closed = 0;
    for stream in &mut hoard {
        if closed_within(stream, Duration::from_millis(200)).await.is_some() {
            closed += 1;
        }
    }
    assert_eq!(closed, 34, "connections over MAX_CONNECTIONS_PER_IP are closed");
    assert!(
        health_from(&api, [127, 0, 0, 2], Duration::from_secs(5)).await,
        "another address is served"
    );
    // A second address fills the rest: now everyone waits (in the backlog,
    // not on a file descriptor) until a connection goes away.
    let mut second = Vec::new();
    for _ in 0..6 {
        second.push(connect_from(&api, [127, 0, 0, 3]).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !health_from(&api, [127, 0, 0, 2], Duration::from_secs(1)).await,
        "served past MAX_CONNECTIONS"
    );
    hoard.clear();
    second.clear();
    assert!(
        health_from(&api, [127, 0, 0, 2], Duration::from_secs(5)).await,
        "served again once connections closed"
    );
}

/// Red team H4: answers a client never reads neither pile up in brig-api nor
/// stay: past `MAX_UNREAD_RESPONSE_BYTES` the principal's requests are
/// refused (others are served), and the connection is dropped after
/// `HTTP_WRITE_TIMEOUT_SECONDS`, which frees the principal again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_nobody_reads_are_bounded_and_dropped() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", HOSTILE_ALLOWLIST),
        ("HTTP_WRITE_TIMEOUT_SECONDS", "4"),
        ("MAX_UNREAD_RESPONSE_BYTES", "1m"),
    ]);
    attack(&api, "flood", "echo warm", 10).await;
    // 1 MiB of NUL on each stream: a 12 MiB JSON answer.
    let body = serde_json::json!({
        "command": "sh -c 'head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2'",
        "session_id": "flood",
    })
    .to_string();
    let request = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nX-API-Key: {ALICE_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Four at once, all admitted before any answer exists: only one answer
    // may pile up; the others are refused when they are ready (the red
    // team's 30 parallel requests held 424 MiB that way).
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let mut socket = connect_from(&api, [127, 0, 0, 1]).await;
        socket.write_all(request.as_bytes()).await.unwrap();
        sockets.push(socket);
    }
    let sent = Instant::now();
    let mut answered = Vec::new();
    for mut socket in sockets {
        let mut status = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(20), socket.read_exact(&mut status))
            .await
            .expect("an answer began")
            .unwrap();
        answered.push((String::from_utf8_lossy(&status).to_string(), socket));
    }
    answered.sort_by(|a, b| a.0.cmp(&b.0));
    let statuses: Vec<&str> = answered.iter().map(|(status, _)| status.as_str()).collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 200", "HTTP/1.1 429", "HTTP/1.1 429", "HTTP/1.1 429"]
    );
    let mut unread = answered.remove(0).1;
    // Alice is refused while her answer waits; Bob is not.
    let refused = loop {
        let reply = call(&api, reqwest::Method::GET, "/sessions", ALICE_KEY, None).await;
        if reply.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            break reply;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "never refused: {:?}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.body["error"], "unread_responses", "{:?}", refused.body);
    assert!(refused.headers.contains_key("retry-after"));
    let bob = call(&api, reqwest::Method::GET, "/sessions", BOB_KEY, None).await;
    assert_eq!(bob.status, reqwest::StatusCode::OK);
    // After the write timeout the connection is gone, with the answer unsent.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let received = closed_within(&mut unread, Duration::from_secs(10))
        .await
        .expect("the connection of a client that does not read was kept");
    assert!(received < 12 << 20, "the whole answer was sent: {received} bytes");
    let again = call(&api, reqwest::Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(again.status, reqwest::StatusCode::OK, "{:?}", again.body);
    still_fine(&api, "flood").await;
}
