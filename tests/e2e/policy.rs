//! `ALLOWED_COMMANDS_PATH`: commands, patterns, aliases, roles and cooldowns
//! from a policy file, validated at start-up and reloaded on SIGHUP.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::*;

const POLICY: &str = r#"
commands = ["echo", "sleep"]

[[patterns]]
name = "print-number"
regex = 'printf %s [0-9]+'

[aliases]
my-uid = ["id", "-u"]

[roles.ops]
commands = ["*"]
patterns = ["print-number"]
aliases = ["my-uid"]

[roles.default]
commands = ["echo"]

[api_key_roles]
alice = ["ops"]
"#;

/// A policy file in a directory of its own, removed on drop.
struct PolicyFile(PathBuf);

impl PolicyFile {
    fn new(text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("brig-policy-{}", new_instance()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = PolicyFile(dir.join("policy.toml"));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        // Replace, never truncate in place: a reload must not read half a file.
        let staged = self.0.with_extension("staged");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(staged, &self.0).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

async fn status_of(api: &BrigApi, auth: &Auth<'_>, command: &str, session: &str) -> (StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(api.url("/execute"))
        .json(&json!({"command": command, "session_id": session}));
    request = match auth {
        Auth::Key(key) => request.header("x-api-key", *key),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

enum Auth<'a> {
    Key(&'a str),
    Bearer(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_construct_allows_what_it_should_and_refuses_the_rest() {
    let policy = PolicyFile::new(POLICY);
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS_PATH", policy.path()),
        // Superseded by the file.
        ("ALLOWED_COMMANDS", "sh,printf,id"),
    ]);
    let ops_token = jwt(json!({"sub": "dana", "exp": unix_now() + 60, "roles": ["ops"]}));
    let ghost_token = jwt(json!({"sub": "erin", "exp": unix_now() + 60, "role": "ghost"}));
    let plain_token = jwt(json!({"sub": "finn", "exp": unix_now() + 60}));
    let cases: Vec<(Auth, &str, StatusCode)> = vec![
        // alice's API key has the ops role.
        (Auth::Key(ALICE_KEY), "echo hi", StatusCode::OK),
        (Auth::Key(ALICE_KEY), "printf %s 42", StatusCode::OK),
        (Auth::Key(ALICE_KEY), "printf %s abc", StatusCode::FORBIDDEN),
        (Auth::Key(ALICE_KEY), "printf %s 42; id", StatusCode::FORBIDDEN),
        (Auth::Key(ALICE_KEY), "my-uid", StatusCode::OK),
        (Auth::Key(ALICE_KEY), "my-uid -a", StatusCode::FORBIDDEN),
        (Auth::Key(ALICE_KEY), "id -u", StatusCode::FORBIDDEN),
        (Auth::Key(ALICE_KEY), "sh -c id", StatusCode::FORBIDDEN),
        // bob has no role: the default set.
        (Auth::Key(BOB_KEY), "echo hi", StatusCode::OK),
        (Auth::Key(BOB_KEY), "sleep 0", StatusCode::FORBIDDEN),
        (Auth::Key(BOB_KEY), "printf %s 42", StatusCode::FORBIDDEN),
        (Auth::Key(BOB_KEY), "my-uid", StatusCode::FORBIDDEN),
        // JWT roles.
        (Auth::Bearer(ops_token.clone()), "printf %s 7", StatusCode::OK),
        (Auth::Bearer(ops_token), "sleep 0", StatusCode::OK),
        (Auth::Bearer(ghost_token), "echo hi", StatusCode::FORBIDDEN),
        (Auth::Bearer(plain_token), "echo hi", StatusCode::OK),
    ];
    for (auth, command, expected) in &cases {
        let (status, body) = status_of(&api, auth, command, "p").await;
        assert_eq!(status, *expected, "{command}: {body}");
        if status == StatusCode::FORBIDDEN {
            assert_eq!(body["error"], "command_not_allowed");
        }
    }
    let (_, uid) = status_of(&api, &Auth::Key(ALICE_KEY), "my-uid", "p").await;
    assert_eq!(uid["stdout"], "1000\n", "the alias runs its own argv");
    let (_, number) = status_of(&api, &Auth::Key(ALICE_KEY), "printf %s 42", "p").await;
    assert_eq!(number["stdout"], "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_hold_across_two_api_processes() {
    let policy = PolicyFile::new(&format!(
        "{POLICY}
[[cooldowns]]
pattern = \"print-number\"
seconds = 30
scope = \"global\"

[[cooldowns]]
command = \"sleep\"
seconds = 30
scope = \"session\"
"
    ));
    let redis = RedisServer::start();
    let env = [
        ("REDIS_URL", redis.url()),
        ("ALLOWED_COMMANDS_PATH", policy.path().to_string()),
    ];
    let first = BrigApi::start(&env_refs(&env));
    let second = BrigApi::start_in(&first.instance, &env_refs(&env));
    let alice = Auth::Key(ALICE_KEY);

    assert_eq!(status_of(&first, &alice, "printf %s 1", "a").await.0, StatusCode::OK);
    let response = reqwest::Client::new()
        .post(second.url("/execute"))
        .header("x-api-key", ALICE_KEY)
        .json(&json!({"command": "printf %s 2", "session_id": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "cooldown_active"
    );
    // Other rules are not held back.
    assert_eq!(status_of(&second, &alice, "echo free", "b").await.0, StatusCode::OK);

    // Session scope: once per session, whichever replica.
    assert_eq!(status_of(&first, &alice, "sleep 0", "a").await.0, StatusCode::OK);
    assert_eq!(
        status_of(&second, &alice, "sleep 0", "a").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(status_of(&second, &alice, "sleep 0", "b").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_a_broken_file_keeps_the_previous_one() {
    let policy = PolicyFile::new(POLICY);
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS_PATH", policy.path())]);
    let bob = Auth::Key(BOB_KEY);
    assert_eq!(status_of(&api, &bob, "sleep 0", "r").await.0, StatusCode::FORBIDDEN);

    // A command in flight while the policy changes under it still finishes.
    let base = api.base.clone();
    let in_flight = tokio::spawn(async move {
        post(
            &base,
            "/execute",
            ALICE_KEY,
            &json!({"command": "sleep 2", "session_id": "r"}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    policy.write(&POLICY.replace(
        "[roles.default]\ncommands = [\"echo\"]",
        "[roles.default]\ncommands = [\"echo\", \"sleep\"]",
    ));
    hangup(&api);
    let give_up = Instant::now() + Duration::from_secs(10);
    while status_of(&api, &bob, "sleep 0", "r").await.0 != StatusCode::OK {
        assert!(Instant::now() < give_up, "the reload did not take effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(finished.status, StatusCode::OK, "{:?}", finished.body);

    policy.write("commands = [\"/bin/sh\"]");
    hangup(&api);
    let give_up = Instant::now() + Duration::from_secs(10);
    while !api
        .logs()
        .iter()
        .any(|line| line.contains("command policy not reloaded"))
    {
        assert!(Instant::now() < give_up, "no error logged for the broken policy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status_of(&api, &bob, "sleep 0", "r").await.0,
        StatusCode::OK,
        "the previous policy stays"
    );
}

#[test]
fn an_invalid_policy_stops_start_up_naming_the_entry() {
    let policy = PolicyFile::new("commands = [\"ls\"]\n[[patterns]]\nname = \"broken\"\nregex = \"(unclosed\"\n");
    let output = Command::new(api_binary())
        .env_clear()
        .env("SESSION_STORE", "memory")
        .env("API_KEYS", "k:policy-test-key-0123456789")
        .env("ALLOWED_COMMANDS_PATH", policy.path())
        .output()
        .expect("run brig-api");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ALLOWED_COMMANDS_PATH") && stderr.contains("patterns[0] (\"broken\"): invalid regex"),
        "{stderr}"
    );
}

fn hangup(api: &BrigApi) {
    let sent = Command::new("kill")
        .args(["-HUP", &api.service.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Roles that say `egress` narrow what their principals' sessions may be
/// granted within `EGRESS_ALLOWED`; a role that does not grants none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_narrow_the_egress_a_session_may_be_granted() {
    let policy = PolicyFile::new(
        r#"
commands = ["echo"]

[roles.agents]
commands = ["*"]
egress = ["*.example.com"]

[roles.plain]
commands = ["*"]

[api_key_roles]
alice = ["agents"]
bob = ["plain"]
"#,
    );
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS_PATH", policy.path()),
        ("EGRESS_ALLOWED", "*.example.com,pypi.org:443"),
    ]);
    let create = |key: &'static str, session: &'static str, allow: &'static str| {
        let api = &api;
        async move {
            let body = json!({"session_id": session, "network": {"allow": [allow]}});
            call(api, reqwest::Method::POST, "/sessions", key, Some(body)).await
        }
    };
    let granted = create(ALICE_KEY, "a", "api.example.com:443").await;
    assert_eq!(granted.status, StatusCode::CREATED, "{:?}", granted.body);
    let beyond_role = create(ALICE_KEY, "b", "pypi.org:443").await;
    assert_eq!(beyond_role.status, StatusCode::FORBIDDEN, "{:?}", beyond_role.body);
    assert_eq!(beyond_role.body["error"], "egress_not_allowed");
    assert!(
        beyond_role.body["detail"]
            .as_str()
            .unwrap()
            .contains("pypi.org:443 is not granted to your roles"),
        "{:?}",
        beyond_role.body
    );
    // A live change is bounded alike.
    let put = call(
        &api,
        reqwest::Method::PUT,
        "/sessions/a/network",
        ALICE_KEY,
        Some(json!({"allow": ["pypi.org:443"]})),
    )
    .await;
    assert_eq!(put.status, StatusCode::FORBIDDEN, "{:?}", put.body);
    let kept = call(&api, reqwest::Method::GET, "/sessions/a/network", ALICE_KEY, None).await;
    assert_eq!(kept.body["allow"], json!(["api.example.com:443"]), "{:?}", kept.body);
    // A role without `egress` grants none; a session without egress is fine.
    let none = create(BOB_KEY, "c", "api.example.com:443").await;
    assert_eq!(none.status, StatusCode::FORBIDDEN, "{:?}", none.body);
    let plain = call(
        &api,
        reqwest::Method::POST,
        "/sessions",
        BOB_KEY,
        Some(json!({"session_id": "d"})),
    )
    .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{:?}", plain.body);
    // A token's roles count the same way.
    let token = jwt(json!({"sub": "dana", "exp": unix_now() + 60, "roles": ["plain", "agents"]}));
    let reply = reqwest::Client::new()
        .post(api.url("/sessions"))
        .bearer_auth(token)
        .json(&json!({"session_id": "e", "network": {"allow": ["*.example.com"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
}
