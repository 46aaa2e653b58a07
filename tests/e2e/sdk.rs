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

/// The brig the SDK suites and examples talk to: alice's and bob's keys,
/// Python in the sandboxes (code contexts), a metrics token; for the suites,
/// also a second API that allows two requests a second (the retry tests).
pub(crate) struct Live {
    _redis: RedisServer,
    pub api: BrigApi,
    limited: Option<BrigApi>,
}

impl Live {
    pub(crate) fn start() -> Live {
        let redis = RedisServer::start();
        let url = redis.url();
        let api = BrigApi::start(&[
            ("REDIS_URL", url.as_str()),
            ("CONTAINER_IMAGE", "brig-sandbox-python:latest"),
            ("ALLOWED_COMMANDS", "echo,sh,cat,sleep,pwd,mkdir,env,ls,python3,true"),
            ("METRICS_TOKEN", METRICS_TOKEN),
            ("RATE_LIMIT_REQUESTS", "1000"),
        ]);
        Live {
            _redis: redis,
            api,
            limited: None,
        }
    }

    /// [`Live::start`] and the rate-limited second API (`BRIG_LIMITED_URL`).
    pub(crate) fn with_limited_api() -> Live {
        let limited = BrigApi::start(&[
            ("SESSION_STORE", "memory"),
            ("RATE_LIMIT_REQUESTS", "2"),
            ("RATE_LIMIT_WINDOW_SECONDS", "2"),
        ]);
        Live {
            limited: Some(limited),
            ..Live::start()
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
            .env("BRIG_METRICS_TOKEN", METRICS_TOKEN)
            .env_remove("BRIG_TOKEN");
        if let Some(limited) = &self.limited {
            command.env("BRIG_LIMITED_URL", &limited.base);
        }
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
    let live = Live::with_limited_api();
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
    let live = Live::with_limited_api();
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

/// A chat completion whose message asks for one tool call.
fn tool_call(id: &str, name: &str, arguments: serde_json::Value) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": id, "type": "function",
                            "function": {"name": name, "arguments": arguments.to_string()}}]}}]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_loop_example_runs_the_models_tool_calls_in_a_sandbox() {
    use crate::generate::{stub, Answer};
    let (script, llm) = stub().await;
    script.answer(Answer::Raw(
        200,
        tool_call(
            "call-1",
            "run_command",
            serde_json::json!({"command": "sh -c 'echo $((6 * 7))'"}),
        ),
    ));
    script.answer(Answer::Raw(
        200,
        tool_call(
            "call-2",
            "run_python",
            serde_json::json!({"code": "import os\nos.getuid() + 1"}),
        ),
    ));
    script.answer(Answer::Raw(
        200,
        tool_call("call-3", "run_command", serde_json::json!({"command": "rm -rf /"})),
    ));
    script.answer(Answer::Content("Six times seven is 42.".into()));
    let live = Live::start();
    let mut command = live.command(venv_python());
    command
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("OPENAI_BASE_URL", &llm)
        .env("OPENAI_API_KEY", "stub-provider-key")
        .env("MODEL", "stub-model")
        .args(["examples/agent_loop.py", "What is six times seven?"]);
    let out = tokio::task::spawn_blocking(move || passes(command, "examples/agent_loop.py"))
        .await
        .unwrap();
    assert!(out.contains("Six times seven is 42."), "{out}");

    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer stub-provider-key"));
    let last: serde_json::Value = serde_json::from_str(&seen[3].raw).unwrap();
    assert_eq!(last["model"], "stub-model");
    let tools: Vec<&serde_json::Value> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tools.len(), 3, "{last}");
    // What the sandbox answered went back to the model, call by call.
    let answer =
        |i: usize| -> serde_json::Value { serde_json::from_str(tools[i]["content"].as_str().unwrap()).unwrap() };
    assert_eq!(tools[0]["tool_call_id"], "call-1");
    assert_eq!(answer(0)["stdout"], "42\n");
    assert_eq!(answer(0)["exit_code"], 0);
    assert_eq!(answer(1)["result"], "1001", "uid 1000 in the sandbox");
    assert!(
        answer(2)["error"].as_str().unwrap().contains("command_not_allowed"),
        "{}",
        answer(2)
    );
    // The loop's session was deleted at its end.
    let left = instance_containers(&live.api.instance);
    assert!(left.is_empty(), "{left:?}");
}

/// The official MCP SDK, started from the example configuration as a desktop
/// agent would start it (with the built `brig` for the `brig` on its PATH).
const MCP_FROM_CONFIG: &str = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

config, brig, url, key = sys.argv[1:]
server = json.load(open(config))["mcpServers"]["brig"]
assert server["command"] == "brig", server
env = dict(server["env"], BRIG_URL=url, BRIG_API_KEY=key)
assert set(env) == {"BRIG_URL", "BRIG_API_KEY"}, env

async def main():
    params = StdioServerParameters(command=brig, args=server["args"], env=env)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as session:
            await session.initialize()
            tools = sorted(t.name for t in (await session.list_tools()).tools)
            ran = await session.call_tool("execute", {"session_id": "desk", "command": "echo from the desktop"})
            print(json.dumps({"tools": tools, "stdout": ran.structuredContent["stdout"]}))

asyncio.run(asyncio.wait_for(main(), 60))
"#;

#[test]
fn the_mcp_configuration_example_starts_brig_mcp_for_a_desktop_agent() {
    let live = Live::start();
    let config = repo().join("examples/mcp/claude_desktop_config.json");
    let mut command = Command::new(venv_python());
    command
        .arg("-c")
        .arg(MCP_FROM_CONFIG)
        .arg(&config)
        .arg(binary("brig"))
        .arg(&live.api.base)
        .arg(ALICE_KEY);
    let out = passes(command, "the MCP SDK started from the example configuration");
    let seen: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_else(|err| panic!("{err}: {out}"));
    assert_eq!(seen["stdout"], "from the desktop\n", "{seen}");
    let tools = seen["tools"].as_array().unwrap();
    for tool in ["execute", "run_code", "read_file", "write_file"] {
        assert!(tools.iter().any(|t| t == tool), "{tool}: {seen}");
    }
}

/// The first ```lang block of the README's SDKs section.
fn readme_block(lang: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme.find("\n## SDKs\n").expect("README has no SDKs section")..];
    let start = section
        .find(&format!("\n```{lang}\n"))
        .unwrap_or_else(|| panic!("no {lang} block"))
        + lang.len()
        + 5;
    let end = start + section[start..].find("\n```\n").unwrap();
    section[start..end].to_string()
}

#[test]
fn the_readme_sdk_examples_run_as_written() {
    let live = Live::start();
    let scratch = Scratch(std::env::temp_dir().join(format!("brig-sdk-readme-{}", new_instance())));
    std::fs::create_dir_all(scratch.path()).unwrap();

    let python = scratch.path().join("example.py");
    std::fs::write(&python, readme_block("python")).unwrap();
    let mut command = python_sdk(&live, &[]);
    command.arg(&python);
    let out = passes(command, "the README's Python example");
    assert_eq!(out, "hello\nit's one argument\na,b\n1,2\ndone\n42\n");

    // As after `npm install ./clients/typescript`: the package under node_modules.
    let modules = scratch.path().join("node_modules");
    std::fs::create_dir(&modules).unwrap();
    std::os::unix::fs::symlink(repo().join("clients/typescript"), modules.join("brig-sdk")).unwrap();
    let script = scratch.path().join("example.mjs");
    std::fs::write(&script, readme_block("js")).unwrap();
    let mut command = live.command(node().get_program());
    command.current_dir(scratch.path()).arg(&script);
    let out = passes(command, "the README's TypeScript example");
    assert_eq!(out, "hello\nit's one argument\none\ntwo\n42\n");
    let left = instance_containers(&live.api.instance);
    assert!(left.is_empty(), "{left:?}");
}

/// A directory removed with its contents when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
