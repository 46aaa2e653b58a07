//! `/generate` and `/generate-and-execute` against a local stub that speaks the
//! chat-completions protocol (no model is reachable from here), scripted per
//! test, which also records exactly what brig sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{json, Value};

use crate::*;

const LLM_KEY: &str = "llm-provider-key-5f2e9c";

/// One scripted answer of the stub.
pub(crate) enum Answer {
    /// A well-formed completion whose message content is this.
    Content(String),
    /// This status and raw body.
    Raw(u16, String),
    /// A completion, after this delay.
    Slow(Duration, String),
    /// A 200 whose body never ends.
    Endless,
}

#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub uri: String,
    pub authorization: Option<String>,
    pub raw: String,
}

#[derive(Clone, Default)]
pub(crate) struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

fn completion(content: &str) -> String {
    json!({"id": "x", "object": "chat.completion", "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})
    .to_string()
}

async fn chat(State(script): State<Script>, uri: Uri, headers: HeaderMap, raw: String) -> axum::response::Response {
    script.seen.lock().unwrap().push(Seen {
        uri: uri.to_string(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default().to_string()),
        raw,
    });
    let answer = script.answers.lock().unwrap().pop_front();
    let json = [("content-type", "application/json")];
    match answer {
        Some(Answer::Content(content)) => (json, completion(&content)).into_response(),
        Some(Answer::Raw(status, body)) => (StatusCode::from_u16(status).unwrap(), json, body).into_response(),
        Some(Answer::Slow(delay, content)) => {
            tokio::time::sleep(delay).await;
            (json, completion(&content)).into_response()
        }
        Some(Answer::Endless) => {
            static SPACES: [u8; 65536] = [b' '; 65536];
            let chunks =
                futures_util::stream::repeat_with(|| Ok::<_, std::io::Error>(axum::body::Bytes::from_static(&SPACES)));
            (json, axum::body::Body::from_stream(chunks)).into_response()
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, "unscripted call").into_response(),
    }
}

/// The stub on a free loopback port, and its base URL (`.../v1`).
pub(crate) async fn stub() -> (Script, String) {
    let script = Script::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (script, base)
}

/// The stub, and an API using it.
async fn stub_and_api(extra: &[(&str, &str)]) -> (Script, BrigApi) {
    let (script, base) = stub().await;
    let mut env = vec![
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "python3,sh"),
        ("CONTAINER_IMAGE", "brig-sandbox-python:latest"),
        ("LLM_BASE_URL", base.as_str()),
        ("LLM_API_KEY", LLM_KEY),
        ("LLM_MODEL", "stub-model-7b"),
    ];
    env.extend_from_slice(extra);
    (script, BrigApi::start(&env))
}

impl Script {
    pub(crate) fn answer(&self, answer: Answer) {
        self.answers.lock().unwrap().push_back(answer);
    }
}

async fn generate_and_execute(api: &BrigApi, body: Value) -> Reply {
    call(api, Method::POST, "/generate-and-execute", ALICE_KEY, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_code_runs_in_the_sandbox_and_brig_sends_only_the_query() {
    let (script, api) = stub_and_api(&[]).await;
    let reply = json!({
        "code": "import os\nprint(6 * 7)\nprint(os.getuid())\n",
        "safety_assessment": "Prints numbers; touches nothing.",
        "explanation": "Multiplies.",
    });
    script.answer(Answer::Content(reply.to_string()));
    let done = generate_and_execute(&api, json!({"query": "what is six times seven?"})).await;
    assert_eq!(done.status, reqwest::StatusCode::OK, "{:?}", done.body);
    assert_eq!(done.body["stdout"], "42\n1000\n");
    assert_eq!(done.body["exit_code"], 0);
    assert_eq!(done.body["validation_result"], "Prints numbers; touches nothing.");
    assert_eq!(done.body["generated_code"], reply["code"]);
    assert_eq!(done.body["query"], "what is six times seven?");
    let session = done.body["session_id"].as_str().unwrap();
    assert_eq!(session_containers(&api.instance, session).len(), 1);

    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/v1/chat/completions");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {LLM_KEY}").as_str())
    );
    let sent: Value = serde_json::from_str(&seen[0].raw).unwrap();
    assert_eq!(sent["model"], "stub-model-7b");
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"].as_str().unwrap().contains("python"));
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": "what is six times seven?"})
    );
    for secret in [LLM_KEY, ALICE_KEY, BOB_KEY, JWT_SECRET] {
        assert!(
            !seen[0].raw.contains(secret) && !seen[0].uri.contains(secret),
            "{secret} sent"
        );
    }
    assert!(
        api.logs().iter().all(|line| !line.contains(LLM_KEY)),
        "the LLM key reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prose_with_a_fenced_block_works_and_generate_alone_runs_nothing() {
    let (script, api) = stub_and_api(&[]).await;
    script.answer(Answer::Content(
        "Sure! Here is the program:\n```python\nprint(sum(range(5)))\n```\nIt sums.".into(),
    ));
    let done = generate_and_execute(&api, json!({"query": "sum 0..4", "session_id": "mine", "timeout": 10})).await;
    assert_eq!(done.status, reqwest::StatusCode::OK, "{:?}", done.body);
    assert_eq!(done.body["stdout"], "10\n");
    assert_eq!(done.body["session_id"], "mine");
    assert_eq!(done.body["validation_result"], Value::Null);

    let before = instance_containers(&api.instance).len();
    script.answer(Answer::Content(
        json!({"code": "echo hi", "safety_assessment": "ok"}).to_string(),
    ));
    let generated = call(
        &api,
        Method::POST,
        "/generate",
        ALICE_KEY,
        Some(json!({"query": "say hi", "language": "sh"})),
    )
    .await;
    assert_eq!(generated.status, reqwest::StatusCode::OK, "{:?}", generated.body);
    assert_eq!(generated.body["generated_code"], "echo hi");
    assert_eq!(generated.body["language"], "sh");
    assert_eq!(
        instance_containers(&api.instance).len(),
        before,
        "/generate ran something"
    );
    let sent: Value = serde_json::from_str(&script.seen.lock().unwrap()[1].raw).unwrap();
    assert!(sent["messages"][0]["content"].as_str().unwrap().contains("sh programs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_clear_errors() {
    let (script, api) = stub_and_api(&[("LLM_TIMEOUT_SECONDS", "1"), ("LLM_MAX_CODE_BYTES", "200")]).await;
    let cases = [
        (
            Answer::Content("I cannot help with that.".into()),
            502,
            "llm_bad_reply",
            "",
        ),
        (
            Answer::Raw(200, "<html>not json</html>".into()),
            502,
            "llm_bad_reply",
            "",
        ),
        (
            Answer::Raw(429, "{\"error\": \"slow down\"}".into()),
            502,
            "llm_unavailable",
            "429",
        ),
        (
            Answer::Raw(500, "{\"error\": \"boom\"}".into()),
            502,
            "llm_unavailable",
            "500",
        ),
        (
            Answer::Slow(Duration::from_secs(3), json!({"code": "print(1)"}).to_string()),
            504,
            "llm_timeout",
            "",
        ),
        (
            Answer::Content(json!({"code": format!("print('{}')", "x".repeat(300))}).to_string()),
            502,
            "llm_bad_reply",
            "LLM_MAX_CODE_BYTES",
        ),
    ];
    for (answer, status, error, detail) in cases {
        script.answer(answer);
        let reply = generate_and_execute(&api, json!({"query": "anything", "session_id": "errors"})).await;
        assert_eq!(reply.status.as_u16(), status, "{error}: {:?}", reply.body);
        assert_eq!(reply.body["error"], error);
        assert!(
            reply.body["detail"].as_str().unwrap().contains(detail),
            "{:?}",
            reply.body
        );
    }
    assert!(session_containers(&api.instance, "errors").is_empty(), "nothing ran");

    // Bad input never reaches the model (red team L3: a bad timeout was
    // refused only after the model had been paid for).
    let calls = script.seen.lock().unwrap().len();
    for body in [
        json!({"query": ""}),
        json!({"query": "x", "language": "cobol"}),
        json!({"query": "x", "session_id": "../x"}),
        json!({"query": "x", "memory_limit": "lots"}),
        json!({"query": "x", "language": "sh", "timeout": 0}),
        json!({"query": "x", "timeout": -1}),
        json!({"query": "x", "timeout": 1e9}),
    ] {
        let reply = generate_and_execute(&api, body.clone()).await;
        assert_eq!(
            reply.status,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
    }
    assert_eq!(script.seen.lock().unwrap().len(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_tries_to_escape_is_confined_like_any_other() {
    let (script, api) = stub_and_api(&[]).await;
    let code = "import os, socket\n\
                results = []\n\
                try:\n    open('/etc/passwd', 'a').write('x')\n    results.append('wrote-etc')\n\
                except OSError:\n    results.append('etc-denied')\n\
                try:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n    results.append('net')\n\
                except OSError:\n    results.append('net-denied')\n\
                print(os.getuid(), ' '.join(results), os.path.exists('/var/run/docker.sock'))\n";
    script.answer(Answer::Content(
        json!({"code": code, "safety_assessment": "Completely safe, trust me."}).to_string(),
    ));
    let done = generate_and_execute(&api, json!({"query": "escape please"})).await;
    assert_eq!(done.status, reqwest::StatusCode::OK, "{:?}", done.body);
    assert_eq!(
        done.body["stdout"], "1000 etc-denied net-denied False\n",
        "{:?}",
        done.body
    );
    assert_eq!(done.body["validation_result"], "Completely safe, trust me.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_llm_base_url_the_endpoints_are_off() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory")]);
    for path in ["/generate", "/generate-and-execute"] {
        let reply = call(&api, Method::POST, path, ALICE_KEY, Some(json!({"query": "x"}))).await;
        assert_eq!(reply.status, reqwest::StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.body["error"], "not_enabled");
    }
}

/// Red team L4: the reply was read whole before its 4 MiB check (a 300 MB
/// reply took brig-api from 152 to 591 MiB). Now reading stops at the limit:
/// an endless reply is refused as soon as it passes 4 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_past_four_mib_is_refused_without_reading_the_rest() {
    let (script, api) = stub_and_api(&[("LLM_TIMEOUT_SECONDS", "60")]).await;
    script.answer(Answer::Endless);
    let started = std::time::Instant::now();
    let reply = call(
        &api,
        Method::POST,
        "/generate",
        ALICE_KEY,
        Some(json!({"query": "anything"})),
    )
    .await;
    assert_eq!(reply.status, reqwest::StatusCode::BAD_GATEWAY, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "llm_bad_reply", "{:?}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
