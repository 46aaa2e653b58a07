//! Every binary behaves at the command line: `--help` and `--version` print
//! and exit 0 without starting anything (a cleanup worker that starts a pass
//! because someone asked for help removes containers), and an unknown
//! argument is an error, not ignored.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::*;

const BINARIES: [&str; 5] = ["brig-api", "brig-cleanup-worker", "brig-bench", "brig", "brig-agent"];

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `name args` with an empty environment (but a fresh instance name, so
/// a daemon that starts anyway touches nothing of anyone's), for at most 10 s.
fn run_binary(name: &str, args: &[&str]) -> Ran {
    let mut child: Child = Command::new(binary(name))
        .env_clear()
        .env("BRIG_INSTANCE", new_instance())
        .env("SESSION_STORE", "memory")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{name} {}` was still running after 10 s: it started instead of answering",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Ran { code, stdout, stderr }
}

#[test]
fn help_and_version_print_and_exit_zero_without_starting_anything() {
    for name in BINARIES {
        let help = run_binary(name, &["--help"]);
        assert_eq!(help.code, Some(0), "{name} --help: {}", help.stderr);
        assert!(
            help.stdout.contains("sage"),
            "{name} --help printed no usage: {}",
            help.stdout
        );
        assert!(
            !help.stderr.contains("\"msg\""),
            "{name} --help logged, so it started: {}",
            help.stderr
        );
        let version = run_binary(name, &["--version"]);
        assert_eq!(version.code, Some(0), "{name} --version: {}", version.stderr);
        assert!(
            version.stdout.contains(env!("CARGO_PKG_VERSION")),
            "{name} --version: {}",
            version.stdout
        );
    }
}

#[test]
fn an_unknown_argument_is_an_error_naming_it() {
    for name in BINARIES {
        let ran = run_binary(name, &["--no-such-flag"]);
        assert!(
            ran.code.is_some_and(|code| code != 0),
            "{name} accepted --no-such-flag: {}",
            ran.stderr
        );
        assert!(
            ran.stderr.contains("no-such-flag") || ran.stderr.contains("usage"),
            "{name}: {}",
            ran.stderr
        );
    }
}

#[test]
fn log_format_pretty_gives_readable_lines_and_json_stays_the_default() {
    for (format, want_json) in [("pretty", false), ("json", true)] {
        let mut child = Command::new(api_binary())
            .env_clear()
            .env("API_KEYS", "k:daemons-test-key-0123456789")
            .env("SESSION_STORE", "memory")
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("BRIG_INSTANCE", new_instance())
            .env("CONTAINER_IMAGE", test_image())
            .env("LOG_FORMAT", format)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start brig-api");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let listening = loop {
            match received.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("listening") => break line,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("LOG_FORMAT={format}: no `listening` line within 30 s");
                }
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&listening).is_ok(),
            want_json,
            "LOG_FORMAT={format}: {listening}"
        );
        assert!(listening.contains("127.0.0.1:"), "{listening}");
    }
}
