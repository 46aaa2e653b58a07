//! `POST /execute` with `Accept: text/event-stream`: output as it is produced,
//! then the result; a client that goes away cancels the command.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::*;

const ALLOWLIST: &str = "sh,echo,ps,sleep,yes";

/// Opens a streamed execute.
async fn open(api: &BrigApi, body: Value) -> reqwest::Response {
    let response = reqwest::Client::new()
        .post(api.url("/execute"))
        .header("x-api-key", ALICE_KEY)
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

/// Reads events off an SSE response: (name, data as JSON, when it arrived).
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn next(&mut self) -> Option<(String, Value, Instant)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if name.is_empty() {
                    continue; // keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap(), Instant::now()));
            }
            let chunk = self.response.chunk().await.unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_arrives_while_the_command_runs_then_the_result() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", ALLOWLIST)]);
    run(&api, ALICE_KEY, "live", "echo warm").await;
    let body = json!({"command": "sh -c 'echo first; echo oops >&2; sleep 2; echo second'", "session_id": "live"});
    let opened = Instant::now();
    let mut events = Events {
        response: open(&api, body).await,
        buffer: String::new(),
    };
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        seen.push(event);
    }
    let first = seen
        .iter()
        .find(|(name, data, _)| name == "stdout" && data["data"] == "first\n")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert!(
        first.2 - opened < Duration::from_millis(1500),
        "first chunk after {:?}",
        first.2 - opened
    );
    assert!(seen
        .iter()
        .any(|(name, data, _)| name == "stderr" && data["data"] == "oops\n"));
    let (name, exit, at) = seen.last().unwrap();
    assert_eq!(name, "exit", "{seen:?}");
    assert!(
        *at - first.2 >= Duration::from_millis(1500),
        "the result came with the first chunk"
    );
    assert_eq!(exit["exit_code"], 0);
    assert_eq!(exit["stdout"], "first\nsecond\n");
    assert_eq!(exit["session_id"], "live");
    let streamed: String = seen
        .iter()
        .filter(|(name, _, _)| name == "stdout")
        .map(|(_, data, _)| data["data"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "first\nsecond\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_and_deadlines_hold_when_streaming() {
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", ALLOWLIST),
        ("MAX_OUTPUT_BYTES", "65536"),
    ]);
    let mut events = Events {
        response: open(&api, json!({"command": "yes", "session_id": "flood", "timeout": 1})).await,
        buffer: String::new(),
    };
    let (mut streamed, mut exit) = (0, Value::Null);
    while let Some((name, data, _)) = events.next().await {
        match name.as_str() {
            "stdout" => streamed += data["data"].as_str().unwrap().len(),
            "exit" => exit = data,
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert_eq!(streamed, 65536);
    assert_eq!(exit["truncated"], true, "{exit}");
    assert_eq!(exit["timed_out"], true);
    assert_eq!(exit["exit_code"], 124);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_the_command() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", ALLOWLIST)]);
    let body = json!({"command": "sh -c 'echo go; sleep 300 & sleep 300'", "session_id": "gone", "timeout": 300});
    let mut events = Events {
        response: open(&api, body).await,
        buffer: String::new(),
    };
    let (name, _, _) = events.next().await.unwrap();
    assert_eq!(name, "stdout");
    assert_eq!(sleepers(&api, "gone").await, 2);
    drop(events);
    let give_up = Instant::now() + Duration::from_secs(10);
    while sleepers(&api, "gone").await > 0 {
        assert!(Instant::now() < give_up, "the command outlived its client");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
