//! A newcomer's first hour, end to end: a fresh copy of the repository (no
//! `.env`, no `target/`), a sandbox image tag that does not exist yet, and the
//! README's first command, `scripts/run.sh`, exactly as written. It must build
//! the image and the binaries, say ready only once `/ready` answers, and print
//! commands that work as printed: `ls -la` (exit 0 with a listing), Python code
//! (`print(6*7)` → `42`) and the CLI.
//!
//! Only what a test must own is set from outside: the port, the image tag (so
//! the build runs), the instance label and a cargo target directory under this
//! repository's `target/` (the release build is reused between local runs).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::*;

/// A first release build on 2 cores takes minutes.
const READY_WITHIN: Duration = Duration::from_secs(30 * 60);

/// The working tree as a fresh clone has it: the files git tracks (with any
/// edits not committed yet) and new files not ignored; no `.env`, no `target/`.
fn fresh_copy(repo: &Path, into: &Path) {
    let listed = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(repo)
        .output()
        .expect("git ls-files");
    assert!(listed.status.success(), "git ls-files failed");
    for name in listed.stdout.split(|&b| b == 0).filter(|name| !name.is_empty()) {
        let name = std::str::from_utf8(name).expect("UTF-8 file names");
        let from = repo.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue; // deleted in the working tree
        };
        let to = into.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&from, &to).unwrap(); // keeps the mode (scripts stay executable)
        }
    }
    assert!(!into.join(".env").exists(), "a fresh clone has no .env");
}

/// `scripts/run.sh` in its own process group, so that everything it started
/// goes when the test ends.
struct RunSh {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

/// What the test leaves behind, removed at its end: the instance's
/// containers, the image, the copy.
struct Leftovers {
    image: String,
    instance: String,
    clone: PathBuf,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        remove_instance_containers(&self.instance);
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).output();
        let _ = std::fs::remove_dir_all(&self.clone);
    }
}

impl RunSh {
    fn start(clone: &Path, env: &[(&str, String)]) -> (Self, u16) {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let mut command = Command::new("bash");
        command
            .arg("scripts/run.sh")
            .current_dir(clone)
            .env("PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for variable in [
            "HOST",
            "SESSION_STORE",
            "REDIS_URL",
            "API_KEYS",
            "LOG_FORMAT",
            "RUST_LOG",
        ] {
            command.env_remove(variable);
        }
        let mut child = command.spawn().expect("start scripts/run.sh");
        let (send, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
        }
        let run = RunSh {
            child,
            lines,
            output: Vec::new(),
        };
        (run, port)
    }

    /// Reads its output until a line contains `needle`; the reason (with the
    /// output so far) if it exits or takes longer than `within`.
    fn wait_for(&mut self, needle: &str, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.output.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        // What it printed last may still be in the channel.
                        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                            self.output.push(line);
                        }
                        return Err(format!(
                            "scripts/run.sh exited ({status}) before {needle:?}:\n{}",
                            self.tail()
                        ));
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "no {needle:?} from scripts/run.sh within {within:?}:\n{}",
                        self.tail()
                    ))
                }
            }
        }
    }

    /// What it printed after the line containing `marker`.
    fn printed_after(&mut self, marker: &str) -> Vec<String> {
        // Let the rest of the help text arrive.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.output.push(line);
        }
        self.output
            .iter()
            .skip_while(|line| !line.contains(marker))
            .skip(1)
            .cloned()
            .collect()
    }

    fn tail(&self) -> String {
        let start = self.output.len().saturating_sub(60);
        self.output[start..].join("\n")
    }
}

impl Drop for RunSh {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// The commands run.sh printed (continuation lines joined), each run with sh.
fn run_printed(commands: &[String], clone: &Path) -> Vec<std::process::Output> {
    let text = commands.join("\n").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with("curl ") || line.starts_with("BRIG_URL="))
        .map(|line| {
            Command::new("sh")
                .args(["-c", line])
                .current_dir(clone)
                .output()
                .expect("run a printed command")
        })
        .collect()
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn the_readmes_first_command_works_on_a_fresh_clone() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let clone = tempdir("brig-newcomer");
    fresh_copy(repo, &clone);
    let instance = new_instance();
    let env = [
        ("CONTAINER_IMAGE", format!("brig-sandbox-newcomer:{instance}")),
        ("BRIG_INSTANCE", instance.clone()),
        ("CARGO_TARGET_DIR", repo.join("target/newcomer").display().to_string()),
    ];
    let _leftovers = Leftovers {
        image: env[0].1.clone(),
        instance: instance.clone(),
        clone: clone.clone(),
    };
    let (mut run, port) = RunSh::start(&clone, &env);
    let ready = run.wait_for("brig is ready", READY_WITHIN);
    let built = run
        .output
        .iter()
        .any(|line| line.contains("building the sandbox image"));
    // The port was free when chosen, minutes of build ago; if something took
    // it meanwhile, once more on another (the build is done by now).
    let (mut run, port) = match ready {
        Ok(()) => (run, port),
        Err(why) if why.contains("in use") => {
            drop(run);
            let (mut again, port) = RunSh::start(&clone, &env);
            again
                .wait_for("brig is ready", READY_WITHIN)
                .unwrap_or_else(|why| panic!("{why}"));
            (again, port)
        }
        Err(why) => panic!("{why}"),
    };
    assert!(built, "the image was not built:\n{}", run.tail());
    let env_file = std::fs::metadata(clone.join(".env")).expect("run.sh wrote .env");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&env_file.permissions()) & 0o777,
        0o600,
        ".env holds the key: private"
    );
    let printed = run.printed_after("Try:");
    assert!(
        printed.iter().any(|line| line.contains(&format!("localhost:{port}"))),
        "{printed:?}"
    );
    let outputs = run_printed(&printed, &clone);
    assert_eq!(outputs.len(), 3, "two curl commands and one CLI command: {printed:?}");

    let listing = json_of(&outputs[0]);
    assert_eq!(listing["exit_code"], 0, "{listing}");
    let stdout = listing["stdout"].as_str().unwrap();
    assert!(stdout.contains(" ..") && stdout.lines().count() >= 3, "{listing}");

    let python = json_of(&outputs[1]);
    assert_eq!(python["exit_code"], 0, "{python}");
    assert_eq!(python["stdout"], "42\n", "{python}");

    let cli = &outputs[2];
    assert!(
        cli.status.success(),
        "the printed CLI command failed: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains(" .."));
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", new_instance()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
