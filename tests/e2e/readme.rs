//! Every `curl` and `brig` example in README.md runs as written against a live
//! brig-api: the first things a newcomer pastes. Only the address (the
//! README's `localhost:8000`) is this test's; the key (in `BRIG_API_KEY`, as
//! the README assumes) and the metrics token are given to the server.

use std::process::Command;

use crate::*;

const METRICS_TOKEN: &str = "readme-metrics-token-0123456789";
const KEY: &str = "readme-key-0123456789abcdef";

/// The `sh` code blocks of README.md.
fn sh_blocks() -> Vec<String> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The README's curl commands, continuation lines joined.
fn curl_examples() -> Vec<String> {
    sh_blocks()
        .iter()
        .map(|block| block.replace("\\\n", " "))
        .flat_map(|block| block.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| line.trim_start().starts_with("curl "))
        .collect()
}

fn readme_api() -> BrigApi {
    BrigApi::start(&[
        ("API_KEYS", &format!("dev:{KEY}")),
        ("SESSION_STORE", "memory"),
        ("METRICS_TOKEN", METRICS_TOKEN),
        // What scripts/run.sh makes the default: an image with Python.
        ("CONTAINER_IMAGE", "brig-sandbox-python:latest"),
        // The Egress section's examples ask for these (creating the session
        // dials nothing).
        ("EGRESS_ALLOWED", "pypi.org:443,*.pythonhosted.org"),
    ])
}

fn sh(api: &BrigApi, script: &str, dir: &std::path::Path) -> std::process::Output {
    let bin_dir = binary("brig").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new("sh")
        .arg("-ec")
        .arg(
            script
                .replace("http://localhost:8000", &api.base)
                .replace("localhost:8000", api.base.trim_start_matches("http://")),
        )
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", dir)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .env("BRIG_API_KEY", KEY)
        .output()
        .expect("run sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_answers_2xx() {
    let examples = curl_examples();
    assert!(examples.len() >= 4, "found only {examples:?}");
    let api = readme_api();
    let dir = std::env::temp_dir();
    for example in examples {
        let out = sh(&api, &format!("{example} -sS -w '\n%{{http_code}}'"), &dir);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or_default();
        assert!(
            status.starts_with('2'),
            "{example}\nanswered {status}: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The Python example runs Python.
        if example.contains("print(6*7)") {
            assert!(body.contains(r#""stdout":"42\n""#), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_examples_run_as_written() {
    let block = sh_blocks()
        .into_iter()
        .find(|block| block.contains("export BRIG_URL"))
        .expect("the README's CLI block");
    let api = readme_api();
    let dir = std::env::temp_dir().join(format!("brig-readme-{}", new_instance()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.csv"), "a,b\n1,2\n").unwrap();
    let out = sh(&api, &block, &dir);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "the CLI block failed:\n{stdout}\n{stderr}");
    for expected in ["one\ntwo\n", "piped in\n", "a,b\n1,2\n", "ok: alive and ready"] {
        assert!(stdout.contains(expected), "{expected:?} missing from:\n{stdout}");
    }
}
