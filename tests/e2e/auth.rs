//! Authentication, rate limits, the allowlist and the refusal to start.

use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_curl_example_works_as_written_on_the_embedded_store() {
    // The seed's key was `dev-key`; brig refuses keys under 16 characters.
    let api = BrigApi::start(&[("API_KEYS", "dev-key-0123456789"), ("SESSION_STORE", "memory")]);
    let output = Command::new("curl")
        .args(["-s", "-X", "POST", &api.url("/execute")])
        .args([
            "-H",
            "X-API-Key: dev-key-0123456789",
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-d",
            r#"{"command": "ls -la", "session_id": "my-session-1", "timeout": 30}"#,
        ])
        .output()
        .expect("curl");
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON from brig-api");
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(body["session_id"], "my-session-1");
    assert!(body["stdout"].as_str().unwrap().starts_with("total "), "{body}");
    assert_eq!(body["timed_out"], false);
    assert_eq!(body["session_created"], true);
    for field in [
        "signal",
        "stderr",
        "truncated",
        "execution_time",
        "started_at",
        "finished_at",
    ] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_failures_are_401_and_a_jwt_acts_as_its_subject() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(json!({"sub": "alice", "exp": unix_now() + 60}).to_string())
    );
    let bad = [
        None,
        Some(("x-api-key", "wrong".to_string())),
        Some((
            "authorization",
            format!("Bearer {}", jwt(json!({"sub": "alice", "exp": unix_now() - 600}))),
        )),
        Some(("authorization", format!("Bearer {}", jwt(json!({"sub": "alice"}))))),
        Some(("authorization", format!("Bearer {unsigned}"))),
        Some((
            "authorization",
            format!("Bearer {}x", jwt(json!({"sub": "alice", "exp": unix_now() + 60}))),
        )),
    ];
    let body = json!({"command": "echo hi", "session_id": "s1"});
    for credentials in bad {
        let mut request = reqwest::Client::new().post(api.url("/execute")).json(&body);
        if let Some((name, value)) = &credentials {
            request = request.header(*name, value);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{credentials:?}");
        assert!(reply.headers().contains_key("www-authenticate"));
    }

    // A token whose subject is a key's name is another principal (red team
    // M3), unless JWT_SUBJECT_ALIASES maps it: then a file written with the
    // token is visible through the key.
    let token = jwt(json!({"sub": "alice", "exp": unix_now() + 60}));
    let write_with_token = |api: &BrigApi| {
        reqwest::Client::new()
            .post(api.url("/execute"))
            .bearer_auth(&token)
            .json(&json!({"command": "sh -c 'echo from-jwt > /workspace/who'", "session_id": "s1"}))
            .send()
    };
    assert_eq!(write_with_token(&api).await.unwrap().status(), StatusCode::OK);
    let keys = run(&api, ALICE_KEY, "s1", "cat /workspace/who").await;
    assert_ne!(
        keys["exit_code"], 0,
        "a token named alice wrote into key alice's session: {keys}"
    );
    let aliased = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", "sh,cat,echo"),
        ("JWT_SUBJECT_ALIASES", "alice=alice"),
    ]);
    assert_eq!(write_with_token(&aliased).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        run(&aliased, ALICE_KEY, "s1", "cat /workspace/who").await["stdout"],
        "from-jwt\n"
    );
    let bobs = run(&aliased, BOB_KEY, "s1", "cat /workspace/who").await;
    assert_ne!(bobs["exit_code"], 0, "bob read alice's file: {bobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_is_rate_limited_while_another_is_not() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[
        ("REDIS_URL", &redis.url()),
        ("RATE_LIMIT_REQUESTS", "2"),
        ("RATE_LIMIT_WINDOW_SECONDS", "60"),
    ]);
    let header = |reply: &Reply, name: &str| -> u64 { reply.headers[name].to_str().unwrap().parse().unwrap() };
    for remaining in [1, 0] {
        let reply = call(&api, Method::GET, "/sessions", ALICE_KEY, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        // IETF draft headers: the burst, what is left, seconds until full again.
        assert_eq!(header(&reply, "ratelimit-limit"), 2);
        assert_eq!(header(&reply, "ratelimit-remaining"), remaining);
        let reset = header(&reply, "ratelimit-reset");
        assert!((28..=30 * (2 - remaining)).contains(&reset), "reset {reset}");
    }
    let limited = call(&api, Method::GET, "/sessions", ALICE_KEY, None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["error"], "rate_limited");
    assert_eq!(header(&limited, "ratelimit-remaining"), 0);
    assert_eq!(header(&limited, "ratelimit-reset"), header(&limited, "retry-after"));
    let bob = call(&api, Method::GET, "/sessions", BOB_KEY, None).await;
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!(header(&bob, "ratelimit-remaining"), 1);
    // Unauthenticated requests create no quota state and get no headers.
    let anonymous = call(&api, Method::GET, "/sessions", "", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers.get("ratelimit-limit").is_none());
    assert!(call(&api, Method::GET, "/health", "", None)
        .await
        .headers
        .get("ratelimit-limit")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_holds_and_commands_never_reach_a_shell() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("ALLOWED_COMMANDS", "echo,cat,ls")]);
    for command in ["id", "ls; id", "/bin/id", "sh -c id"] {
        let reply = execute(&api, ALICE_KEY, "s", command).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{command}");
        assert_eq!(reply.body["error"], "command_not_allowed");
    }
    // Metacharacters are plain arguments: nothing after them runs.
    let echoed = run(&api, ALICE_KEY, "s", "echo a; id && id | id $(id) `id`").await;
    assert_eq!(echoed["stdout"], "a; id && id | id $(id) `id`\n");
    let timed_out = call(
        &api,
        Method::POST,
        "/execute",
        ALICE_KEY,
        Some(json!({"command": "cat /dev/zero", "session_id": "s", "timeout": 1})),
    )
    .await;
    assert_eq!(timed_out.status, StatusCode::OK);
    assert_eq!(timed_out.body["timed_out"], true);
    assert_eq!(timed_out.body["exit_code"], 124);
}

#[test]
fn the_service_refuses_to_start_without_usable_auth() {
    for (env, expected) in [
        (vec![], "no authentication configured"),
        (vec![("JWT_SECRET", "too-short")], "at least 32 bytes"),
        (vec![("JWT_SECRET", "change-me-in-production")], "placeholder"),
    ] {
        let mut command = Command::new(api_binary());
        command
            .env_clear()
            .env("SESSION_STORE", "memory")
            .envs(env.iter().copied());
        let output = command.output().expect("run brig-api");
        assert_eq!(output.status.code(), Some(2), "started with {env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_execute_writes_one_audit_line_and_no_secret_is_ever_logged() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "audited", "echo audit-me").await;
    let token = jwt(json!({"sub": "carol", "exp": unix_now() + 60}));
    reqwest::Client::new()
        .get(api.url("/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = api.logs();
    let audit: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["target"] == "brig::audit")
        .collect();
    assert_eq!(audit.len(), 1, "{logs:#?}");
    let line = &audit[0];
    assert_eq!(line["principal"], "alice");
    assert_eq!(line["session_id"], "audited");
    assert_eq!(line["argv"], r#"["echo","audit-me"]"#);
    assert_eq!(line["exit_code"], 0);
    assert_eq!(line["timed_out"], false);
    assert_eq!(line["stdout_bytes"], 9);
    assert!(line["duration_ms"].as_f64().is_some());
    assert!(line["request_id"].as_str().is_some_and(|id| id.len() >= 32), "{line}");
    let all = logs.join("\n");
    for secret in [ALICE_KEY, BOB_KEY, JWT_SECRET, token.as_str()] {
        assert!(!all.contains(secret), "a secret reached the log");
    }
    // At info, a warm command costs its audit line and no other (the bunyan
    // layer wrote a START and an END line per span: issue 17).
    let before = api.logs().len();
    run(&api, ALICE_KEY, "audited", "echo warm").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = api.logs()[before..].to_vec();
    assert_eq!(during.len(), 1, "{during:#?}");
    assert!(
        during[0].contains("brig::audit") && during[0].contains("request_id"),
        "{during:#?}"
    );
}

/// Red team L5: 3,000 wrong keys in 0.6 s were all answered 401. Past
/// `AUTH_FAILURES_PER_MINUTE` an address is refused before its credentials
/// are checked, even a right key; other addresses are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_is_throttled_per_source_address() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("AUTH_FAILURES_PER_MINUTE", "5")]);
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let (attacker, neighbour) = (from(1), from(2));
    let sessions =
        |client: &reqwest::Client, key: &str| client.get(api.url("/sessions")).header("x-api-key", key).send();
    for guess in 0..6 {
        let reply = sessions(&attacker, &format!("guess-{guess:012}")).await.unwrap();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "guess {guess}");
    }
    let right_key = sessions(&attacker, ALICE_KEY).await.unwrap();
    assert_eq!(right_key.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(right_key.headers().contains_key("retry-after"));
    let body: serde_json::Value = right_key.json().await.unwrap();
    assert_eq!(body["error"], "auth_rate_limited", "{body}");
    assert_eq!(sessions(&neighbour, ALICE_KEY).await.unwrap().status(), StatusCode::OK);
}

#[test]
fn a_key_that_can_be_guessed_stops_start_up() {
    let output = Command::new(api_binary())
        .env_clear()
        .env("SESSION_STORE", "memory")
        .env("API_KEYS", "weak:a")
        .output()
        .expect("run brig-api");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("API_KEYS") && stderr.contains("shorter than 16"),
        "{stderr}"
    );
}

/// Keys rotate without a restart (newcomer trial P10): `API_KEYS_FILE` is
/// read again on SIGHUP; the principal keeps its sessions under its new key,
/// the old key stops working, and a broken file leaves the keys in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_file_rotate_on_sighup_and_a_broken_file_keeps_them() {
    const OLD: &str = "carol-old-key-0123456789";
    const NEW: &str = "carol-new-key-0123456789";
    let file = std::env::temp_dir().join(format!("brig-keys-{}", new_instance()));
    std::fs::write(&file, format!("# carol's key\ncarol:{OLD}\n")).unwrap();
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("API_KEYS_FILE", file.to_str().unwrap())]);
    let hangup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &api.service.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    run(&api, OLD, "kept", "echo made").await;
    std::fs::write(&file, format!("carol:{NEW}\n")).unwrap();
    hangup();
    eventually(Duration::from_secs(5), "the new key works", || {
        api.logs().iter().any(|line| line.contains("API keys reloaded"))
    })
    .await;
    let listed = call(&api, Method::GET, "/sessions", NEW, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["sessions"][0]["session_id"], "kept", "{:?}", listed.body);
    assert_eq!(
        call(&api, Method::GET, "/sessions", OLD, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The keys of API_KEYS stay as they were.
    assert_eq!(
        call(&api, Method::GET, "/sessions", ALICE_KEY, None).await.status,
        StatusCode::OK
    );
    // A broken file: logged, and nothing changes.
    std::fs::write(&file, "carol:short\n").unwrap();
    hangup();
    eventually(Duration::from_secs(5), "the broken file is reported", || {
        api.logs().iter().any(|line| line.contains("API keys not reloaded"))
    })
    .await;
    assert!(
        api.logs()
            .iter()
            .all(|line| !line.contains("carol:short") && !line.contains(NEW)),
        "a key was logged"
    );
    assert_eq!(
        call(&api, Method::GET, "/sessions", NEW, None).await.status,
        StatusCode::OK
    );
    let _ = std::fs::remove_file(&file);
}
