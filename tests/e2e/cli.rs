//! `brig`, the CLI, against a live brig-api: exit codes, streams, streaming,
//! errors, `--json`, sessions, files, completions.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::*;

fn brig(api: &BrigApi, key: &str, args: &[&str]) -> Output {
    Command::new(binary("brig"))
        .env_clear()
        .env("BRIG_URL", &api.base)
        .env("BRIG_API_KEY", key)
        .args(args)
        .output()
        .expect("run brig")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cli_api() -> BrigApi {
    BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", "sh,echo,cat")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mirrors_the_commands_streams_and_exit_code() {
    let api = cli_api();
    let out = brig(
        &api,
        ALICE_KEY,
        &["exec", "-s", "c", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    // Arguments keep their boundaries (quoted for the API, run without a shell).
    let out = brig(
        &api,
        ALICE_KEY,
        &["exec", "-s", "c", "--", "echo", "a b", "$HOME;", "'q'"],
    );
    assert_eq!(text(&out.stdout), "a b $HOME; 'q'\n");

    let out = brig(
        &api,
        ALICE_KEY,
        &["exec", "-s", "c", "--timeout", "1", "--", "sh", "-c", "sleep 5"],
    );
    assert_eq!(out.status.code(), Some(124));
    assert!(
        text(&out.stderr).contains("timed out after 1s"),
        "{}",
        text(&out.stderr)
    );

    let out = brig(&api, ALICE_KEY, &["--json", "exec", "-s", "c", "--", "echo", "hi"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["stdout"], "hi\n");
    assert_eq!(json["session_id"], "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_output_as_it_is_produced() {
    let api = cli_api();
    let mut child = Command::new(binary("brig"))
        .env_clear()
        .env("BRIG_URL", &api.base)
        .env("BRIG_API_KEY", ALICE_KEY)
        .args([
            "exec",
            "--stream",
            "-s",
            "st",
            "--",
            "sh",
            "-c",
            "echo one; sleep 2; echo two; exit 5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 4];
    stdout.read_exact(&mut first).unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first, b"one\n");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let done_at = started.elapsed();
    assert_eq!(rest, "two\n");
    assert_eq!(status.code(), Some(5));
    assert!(
        done_at - first_at >= Duration::from_millis(1500),
        "first line came at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_clear_line_and_exit_125() {
    let api = cli_api();
    for (key, args, expected) in [
        (ALICE_KEY, vec!["exec", "--", "id"], "403 command_not_allowed"),
        ("wrong-key", vec!["sessions"], "401 unauthorized"),
        (ALICE_KEY, vec!["sessions", "rm", "never-made"], "404 not_found"),
        (
            ALICE_KEY,
            vec!["exec", "-s", "../x", "--", "echo"],
            "422 invalid_session_id",
        ),
    ] {
        let out = brig(&api, key, &args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("brig: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let unreachable = Command::new(binary("brig"))
        .env_clear()
        .env("BRIG_URL", format!("http://127.0.0.1:{}", free_port()))
        .env("BRIG_API_KEY", ALICE_KEY)
        .arg("health")
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(125));
    let stderr = text(&unreachable.stderr);
    assert!(
        stderr.contains("cannot talk to the brig API") && stderr.contains("is brig-api running there? (BRIG_URL)"),
        "{stderr}"
    );
    let without = |env: &[(&str, &str)], args: &[&str]| {
        Command::new(binary("brig"))
            .env_clear()
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap()
    };
    // No key: what to set, not the server's 401.
    let no_key = without(&[("BRIG_URL", &api.base)], &["sessions"]);
    assert_eq!(no_key.status.code(), Some(125));
    assert!(
        text(&no_key.stderr).contains("set BRIG_API_KEY"),
        "{}",
        text(&no_key.stderr)
    );
    // A URL without its scheme is named as such.
    let bare = api.base.trim_start_matches("http://").to_string();
    let schemeless = without(&[("BRIG_URL", &bare), ("BRIG_API_KEY", ALICE_KEY)], &["sessions"]);
    assert!(
        text(&schemeless.stderr).contains("must start with http:// or https://"),
        "{}",
        text(&schemeless.stderr)
    );
    // Health needs no credentials.
    let health = without(&[("BRIG_URL", &api.base)], &["health"]);
    assert!(health.status.success(), "{}", text(&health.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_files_health_and_completions() {
    let api = cli_api();
    let created = brig(&api, ALICE_KEY, &["sessions", "create", "work"]);
    assert!(
        text(&created.stdout).starts_with("created: work (expires "),
        "{}",
        text(&created.stdout)
    );
    let again = brig(&api, ALICE_KEY, &["sessions", "create", "work"]);
    assert!(
        text(&again.stdout).starts_with("exists: work (expires "),
        "{}",
        text(&again.stdout)
    );
    let listed = brig(&api, ALICE_KEY, &["--json", "sessions", "ls"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["sessions"][0]["session_id"], "work");

    let dir = std::env::temp_dir().join(format!("brig-cli-{}", new_instance()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("in.bin");
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&local, &data).unwrap();
    let put = brig(
        &api,
        ALICE_KEY,
        &["files", "-s", "work", "put", local.to_str().unwrap(), "sub/data bin"],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let got = brig(&api, ALICE_KEY, &["files", "-s", "work", "get", "sub/data bin"]);
    assert!(got.stdout == data, "downloaded bytes differ");
    // The session goes before or after the action.
    let ls = brig(&api, ALICE_KEY, &["files", "ls", "sub", "-s", "work"]);
    assert_eq!(text(&ls.stdout), "file\t70000\tdata bin\n");
    // A relative working directory is under /workspace.
    let pwd = brig(
        &api,
        ALICE_KEY,
        &["exec", "-s", "work", "-w", "sub", "--", "sh", "-c", "pwd"],
    );
    assert_eq!(text(&pwd.stdout), "/workspace/sub\n", "{}", text(&pwd.stderr));
    let seen = brig(
        &api,
        ALICE_KEY,
        &["exec", "-s", "work", "--", "sh", "-c", "wc -c < 'sub/data bin'"],
    );
    assert_eq!(text(&seen.stdout).trim(), "70000");
    std::fs::remove_dir_all(&dir).unwrap();

    let removed = brig(&api, ALICE_KEY, &["sessions", "rm", "work"]);
    assert!(removed.status.success());
    assert!(text(&brig(&api, ALICE_KEY, &["sessions"]).stdout).is_empty());

    let health = brig(&api, ALICE_KEY, &["health"]);
    assert_eq!(text(&health.stdout), "ok: alive and ready (memory)\n");
    let completions = brig(&api, ALICE_KEY, &["completions", "bash"]);
    assert!(text(&completions.stdout).contains("complete -F _brig"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sends_piped_stdin_to_the_command_unless_told_not_to() {
    use std::io::Write;
    let api = cli_api();
    let with_input = |args: &[&str], input: &'static [u8]| {
        let mut child = Command::new(binary("brig"))
            .env_clear()
            .env("BRIG_URL", &api.base)
            .env("BRIG_API_KEY", ALICE_KEY)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run brig");
        // A child that does not read may close the pipe first: that is its business.
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    };
    let piped = with_input(&["exec", "-s", "in", "--", "cat"], b"piped in\n");
    assert_eq!(piped.status.code(), Some(0), "{}", text(&piped.stderr));
    assert_eq!(text(&piped.stdout), "piped in\n");
    let ignored = with_input(&["exec", "-n", "-s", "in", "--", "cat"], b"not sent\n");
    assert_eq!(ignored.status.code(), Some(0), "{}", text(&ignored.stderr));
    assert_eq!(text(&ignored.stdout), "");
    let binary_input = with_input(&["exec", "-s", "in", "--", "cat"], b"\xff\xfe");
    assert_ne!(binary_input.status.code(), Some(0));
    assert!(
        text(&binary_input.stderr).contains("not UTF-8"),
        "{}",
        text(&binary_input.stderr)
    );
}

/// `brig mcp` with `lines` on its stdin; its stdout lines as JSON, and stderr.
fn mcp_bridge(env: &[(&str, &str)], lines: &[&str]) -> (Vec<serde_json::Value>, String) {
    use std::io::Write;
    let mut child = Command::new(binary("brig"))
        .env_clear()
        .envs(env.iter().copied())
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run brig mcp");
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin); // EOF: the bridge answers what it read, then ends
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "brig mcp failed: {}", text(&out.stderr));
    let answers = text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    (answers, text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brig_mcp_bridges_stdio_to_the_apis_mcp_server() {
    let api = cli_api();
    let env = [("BRIG_URL", api.base.as_str()), ("BRIG_API_KEY", ALICE_KEY)];
    let (mut answers, stderr) = mcp_bridge(
        &env,
        &[
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute","arguments":{"session_id":"bridge","command":"echo through stdio"}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"#,
        ],
    );
    // Answers come as they finish: match them by id (the broken line has none).
    answers.sort_by_key(|answer| answer["id"].as_i64().unwrap_or(0));
    assert_eq!(
        answers.len(),
        4,
        "one answer per request, none for the notification: {answers:?}\n{stderr}"
    );
    assert_eq!(answers[0]["error"]["code"], -32700, "{}", answers[0]);
    assert_eq!(answers[1]["result"]["serverInfo"]["name"], "brig");
    assert_eq!(answers[2]["result"]["tools"].as_array().unwrap().len(), 7);
    assert_eq!(answers[3]["result"]["structuredContent"]["stdout"], "through stdio\n");

    // What the bridge cannot deliver is an error for that request, with its id.
    let (answers, _) = mcp_bridge(
        &[("BRIG_URL", api.base.as_str()), ("BRIG_API_KEY", "wrong-key")],
        &[r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#],
    );
    assert_eq!(answers[0]["id"], "a");
    let message = answers[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("401 unauthorized"), "{message}");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (answers, _) = mcp_bridge(
        &[("BRIG_URL", nowhere.as_str()), ("BRIG_API_KEY", ALICE_KEY)],
        &[r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#],
    );
    assert_eq!(answers[0]["id"], 9);
    assert!(
        answers[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is brig-api running there?"),
        "{}",
        answers[0]
    );
}

/// Every file under `root` (relative path → bytes, or the link's target).
fn tree(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(format!("{name}/"), Vec::new());
                walk(root, &path, out);
            } else if meta.is_symlink() {
                out.insert(
                    name,
                    std::fs::read_link(&path).unwrap().display().to_string().into_bytes(),
                );
            } else {
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_copies_files_and_directories_both_ways() {
    let api = cli_api();
    let local = std::env::temp_dir().join(format!("brig-cp-{}", new_instance()));
    let src = local.join("src");
    std::fs::create_dir_all(src.join("pkg/deep")).unwrap();
    std::fs::write(src.join("pkg/deep/mod.py"), b"print('deep')\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("data.bin"), &big).unwrap();
    std::os::unix::fs::symlink("pkg/deep/mod.py", src.join("link")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();

    let refused = brig(&api, ALICE_KEY, &["cp", src.to_str().unwrap(), "cp:project"]);
    assert!(
        text(&refused.stderr).contains("session not found"),
        "{}",
        text(&refused.stderr)
    );
    assert!(brig(&api, ALICE_KEY, &["sessions", "create", "cp"]).status.success());
    let up = brig(&api, ALICE_KEY, &["cp", src.to_str().unwrap(), "cp:project"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let file_up = brig(
        &api,
        ALICE_KEY,
        &["cp", src.join("data.bin").to_str().unwrap(), "cp:one/data.bin"],
    );
    assert!(file_up.status.success(), "{}", text(&file_up.stderr));
    let inside = run(&api, ALICE_KEY, "cp", "cat project/pkg/deep/mod.py").await;
    assert_eq!(inside["stdout"], "print('deep')\n");

    let back = local.join("back");
    let down = brig(&api, ALICE_KEY, &["cp", "cp:project", back.to_str().unwrap()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(tree(&back), tree(&src), "the tree came back as it went");
    let file_back = local.join("data.copy");
    let down = brig(&api, ALICE_KEY, &["cp", "cp:one/data.bin", file_back.to_str().unwrap()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(std::fs::read(&file_back).unwrap() == big);
    let stdout = brig(&api, ALICE_KEY, &["cp", "cp:project/pkg/deep/mod.py", "-"]);
    assert_eq!(text(&stdout.stdout), "print('deep')\n");

    let missing = brig(&api, ALICE_KEY, &["cp", "cp:nope", local.join("x").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(text(&missing.stderr).contains("not_found"), "{}", text(&missing.stderr));
    assert!(!local.join("x").exists(), "nothing written for a failed copy");
    let neither = brig(&api, ALICE_KEY, &["cp", "a", "b"]);
    assert_eq!(neither.status.code(), Some(125));
    std::fs::remove_dir_all(&local).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_interactive_streams_a_pipe_through_and_ends_its_stdin() {
    let api = cli_api();
    let mut child = Command::new(binary("brig"))
        .env_clear()
        .env("BRIG_URL", &api.base)
        .env("BRIG_API_KEY", ALICE_KEY)
        .args(["exec", "-i", "-s", "pipe", "--", "sh", "-c", "cat; echo done; exit 4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"first line\nsecond\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "first line\nsecond\ndone\n");
    assert_eq!(out.status.code(), Some(4));
}

/// `brig shell` under a real pseudo-terminal (util-linux `script`), driven
/// by what is typed into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_under_a_real_terminal_passes_ctrl_c_to_the_sandbox_and_its_size() {
    let api = BrigApi::start(&[("SESSION_STORE", "memory"), ("ALLOWED_COMMANDS", "sh,ps")]);
    // The terminal brig runs in is 33x99; brig sizes the sandbox's like it.
    let inner = format!("stty rows 33 cols 99; exec {} shell -s tty", binary("brig").display());
    let mut child = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("BRIG_URL", &api.base)
        .env("BRIG_API_KEY", ALICE_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run script(1)");
    let mut keyboard = child.stdin.take().unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let until = |wanted: &str| {
        let give_up = Instant::now() + Duration::from_secs(20);
        while !screen.lock().unwrap().contains(wanted) {
            assert!(
                Instant::now() < give_up,
                "{wanted:?} never showed: {:?}",
                screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut type_in = |keys: &str| {
        std::io::Write::write_all(&mut keyboard, keys.as_bytes()).unwrap();
        std::io::Write::flush(&mut keyboard).unwrap();
    };
    type_in("stty size\n");
    until("33 99");
    type_in("sleep 100\n");
    let give_up = Instant::now() + Duration::from_secs(10);
    while sleepers(&api, "tty").await == 0 {
        assert!(Instant::now() < give_up, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ctrl-C: raw here, so it travels to the sandbox's terminal, whose
    // foreground job (the sleep) it ends; the shell, and brig, live on.
    type_in("\u{3}");
    type_in("echo alive-$((40+2))\n");
    until("alive-42");
    assert_eq!(sleepers(&api, "tty").await, 0, "the sleep survived Ctrl-C");
    type_in("exit 7\n");
    let give_up = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < give_up, "brig shell did not end with its shell");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(7), "{:?}", screen.lock().unwrap());
}
