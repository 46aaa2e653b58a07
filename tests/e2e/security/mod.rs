//! The security suite: attacks through the public API against the real
//! binaries and engine. The allowlist includes `sh`, so what holds is the
//! container, not the allowlist. SECURITY.md's table names these tests.

mod allowlist;
mod connections;
mod escape;
mod exhaustion;
mod input;
mod tenancy;

use crate::*;

/// Commands the escape and exhaustion suites may run: `sh` means anything.
pub const HOSTILE_ALLOWLIST: &str = "sh,echo,cat,ls,brig-probe,brig-probe-suid";

/// An API whose sandboxes are what a hostile tenant gets (memory store; the
/// store plays no part in these attacks).
pub fn hostile_api() -> BrigApi {
    BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", HOSTILE_ALLOWLIST)])
}

/// `sh -c script` in `session` as alice, with a deadline of `timeout` seconds.
pub async fn attack(api: &BrigApi, session: &str, script: &str, timeout: u32) -> serde_json::Value {
    let body = serde_json::json!({"command": format!("sh -c '{script}'"), "session_id": session, "timeout": timeout});
    let reply = call(api, reqwest::Method::POST, "/execute", ALICE_KEY, Some(body)).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{script}: {:?}", reply.body);
    reply.body
}

/// After an attack: the same sandbox, a neighbour sandbox and the API answer.
pub async fn still_fine(api: &BrigApi, session: &str) {
    assert_eq!(
        attack(api, session, "echo alive", 10).await["stdout"],
        "alive\n",
        "the attacked sandbox"
    );
    assert_eq!(
        attack(api, "neighbour", "echo alive", 10).await["stdout"],
        "alive\n",
        "a neighbour sandbox"
    );
    assert_eq!(
        call(api, reqwest::Method::GET, "/health", "", None).await.status,
        reqwest::StatusCode::OK
    );
}

/// SECURITY.md's table is only worth something if its rows are real tests.
#[test]
fn security_md_names_only_tests_that_exist() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let table = std::fs::read_to_string(repo.join("SECURITY.md")).unwrap();
    let named: Vec<&str> = table
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            span.contains("::")
                && span
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
        })
        .filter_map(|path| path.rsplit("::").next().filter(|name| !name.is_empty()))
        .collect();
    assert!(named.len() >= 40, "only {} tests named", named.len());
    let mut sources = String::new();
    let mut dirs = vec![repo.join("crates"), repo.join("tests")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("target") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    for name in named {
        assert!(
            sources.contains(&format!("fn {name}(")),
            "SECURITY.md names {name}, which is no test"
        );
    }
}
