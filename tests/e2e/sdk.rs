//! The SDKs' own suites (`clients/python/tests` under pytest, with mypy
//! --strict over the package, and `clients/typescript/test` under `node
//! --test`) against a live brig: brig-api on a `redis-server` of its own,
//! sandboxes in the real engine. scripts/test.sh installs pytest, httpx and
//! mypy into target/schemathesis; Node ≥ 20 comes with the machine.

use std::path::PathBuf;
use std::process::Command;

use crate::*;

const METRICS_TOKEN: &str = "sdk-metrics-token-0123456789";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub(crate) fn venv_python() -> PathBuf {
    let python = repo().join("target/schemathesis/bin/python");
    assert!(
        python.exists(),
        "no {}: scripts/test.sh makes it (python3 -m venv target/schemathesis, then pip install httpx pytest mypy)",
        python.display()
    );
    python
}

/// The brig the SDK suites talk to: alice's and bob's keys, Python in the
/// sandboxes (code contexts), a metrics token, and a second API that allows
/// two requests a second (the retry tests).
pub(crate) struct Live {
    _redis: RedisServer,
    pub api: BrigApi,
    limited: BrigApi,
}

impl Live {
    pub(crate) fn start(extra: &[(&str, &str)]) -> Live {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut env = vec![
            ("REDIS_URL", url.as_str()),
            ("CONTAINER_IMAGE", "brig-sandbox-python:latest"),
            ("ALLOWED_COMMANDS", "echo,sh,cat,sleep,pwd,mkdir,env,ls,python3,true"),
            ("METRICS_TOKEN", METRICS_TOKEN),
            ("RATE_LIMIT_REQUESTS", "1000"),
        ];
        env.extend_from_slice(extra);
        let api = BrigApi::start(&env);
        let limited = BrigApi::start(&[
            ("SESSION_STORE", "memory"),
            ("RATE_LIMIT_REQUESTS", "2"),
            ("RATE_LIMIT_WINDOW_SECONDS", "2"),
        ]);
        Live {
            _redis: redis,
            api,
            limited,
        }
    }

    /// `command` with the settings the suites read.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(repo())
            .env("BRIG_URL", &self.api.base)
            .env("BRIG_API_KEY", ALICE_KEY)
            .env("BRIG_OTHER_API_KEY", BOB_KEY)
            .env("BRIG_LIMITED_URL", &self.limited.base)
            .env("BRIG_METRICS_TOKEN", METRICS_TOKEN)
            .env_remove("BRIG_TOKEN");
        command
    }
}

/// Runs `command` to its end; fails the test with its output unless it succeeded.
pub(crate) fn passes(mut command: Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot start: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

fn python_sdk(live: &Live, args: &[&str]) -> Command {
    let mut command = live.command(venv_python());
    command
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(args);
    command
}

#[test]
fn the_python_sdk_passes_its_suite_and_strict_typing_against_a_live_brig() {
    let live = Live::start(&[]);
    let mut mypy = python_sdk(&live, &["-m", "mypy", "--no-incremental"]);
    // clients/python/pyproject.toml: strict, over the package, its tests and the example.
    mypy.current_dir(repo().join("clients/python"));
    passes(mypy, "mypy --strict");
    let out = passes(
        python_sdk(
            &live,
            &["-m", "pytest", "-q", "-p", "no:cacheprovider", "clients/python/tests"],
        ),
        "pytest clients/python/tests",
    );
    // Every test ran (none skipped, none deselected).
    assert!(!out.contains("skipped") && !out.contains("deselected"), "{out}");
    assert!(out.contains(" passed"), "{out}");
    // Nothing the suite made is left: its sessions were deleted by their `with`.
    let left = instance_containers(&live.api.instance);
    assert!(left.is_empty(), "{left:?}");
}

fn node() -> Command {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .expect("no node: scripts/test.sh installs it (apt-get install nodejs); the TypeScript SDK needs Node >= 20");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "node {version}: the TypeScript SDK needs Node >= 20 (fetch, web streams)"
    );
    Command::new("node")
}

#[test]
fn the_typescript_sdk_passes_its_suite_against_a_live_brig() {
    let live = Live::start(&[]);
    let tests = repo().join("clients/typescript/test");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let mut command = live.command(node().get_program());
    command.arg("--test").args(&files);
    let out = passes(command, "node --test clients/typescript/test");
    for line in ["# fail 0", "# skipped 0", "# todo 0", "# cancelled 0"] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    let left = instance_containers(&live.api.instance);
    assert!(left.is_empty(), "{left:?}");
}
