//! Harness for the end-to-end suite (and brig-bench): a `redis-server` and a `brig-api` process
//! per test, each on a free loopback port, each API with its own
//! `BRIG_INSTANCE` (so tests run in parallel and clean up only their own
//! containers). Missing prerequisites fail loudly, naming the fix.

pub mod layering;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A throwaway S3-compatible server: moto's server mode (scripts/test.sh
/// installs it from PyPI into target/schemathesis), with one empty bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

impl S3Server {
    pub fn start() -> Self {
        let moto = std::env::var_os("BRIG_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/schemathesis/bin/moto_server")
            });
        let port = free_port();
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {} ({err}); scripts/test.sh installs it (target/schemathesis/bin/pip install \
                     'moto[server]')",
                    moto.display()
                )
            });
        let server = S3Server {
            child,
            port,
            bucket: format!("brig-{}", new_instance()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // moto takes any credentials; an unsigned PUT makes the bucket.
            match http_status(port, &format!("PUT /{} HTTP/1.1", server.bucket)) {
                Some(200) => return server,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                other => panic!("moto_server on port {port} did not make a bucket: {other:?}"),
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points brig at this bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SNAPSHOT_STORE", "s3".into()),
            ("S3_ENDPOINT", self.endpoint()),
            ("S3_BUCKET", self.bucket.clone()),
            ("S3_REGION", "us-east-1".into()),
            ("S3_ACCESS_KEY_ID", "testing".into()),
            ("S3_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// The keys in the bucket (a `GET` of its listing, unsigned).
    pub fn keys(&self) -> Vec<String> {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return Vec::new();
        };
        let request = format!(
            "GET /{}?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.bucket, self.port
        );
        let mut answer = String::new();
        if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut answer).is_err() {
            return Vec::new();
        }
        answer
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next().map(String::from))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a bodiless request line sent to 127.0.0.1:`port`.
fn http_status(port: u16, line: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("{line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).ok()?;
    status.split_whitespace().nth(1)?.parse().ok()
}

/// A throwaway redis-server.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Another address it listens on besides loopback (a test network's).
    also: Option<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A server also listening on `addr` (a test network of this machine's,
    /// reached from other network namespaces), without protected mode.
    pub fn start_also_on(addr: &str) -> Self {
        Self::launch(Some(addr.to_string()))
    }

    fn launch(also: Option<String>) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            also,
        };
        server.restart();
        server
    }

    /// Its URL at `addr` (one it listens on).
    pub fn url_at(&self, addr: &str) -> String {
        format!("redis://{addr}:{}/", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// (Re)starts the server on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let bind = match &self.also {
            Some(addr) => format!("127.0.0.1 {addr}"),
            None => "127.0.0.1".into(),
        };
        let protected = if self.also.is_some() { "no" } else { "yes" };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                &bind,
                "--protected-mode",
                protected,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start redis-server ({err}); scripts/test.sh installs it with apt-get")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.pong() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn pong(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    /// Sends one command (e.g. `["FLUSHALL"]`) and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = vec![0u8; 65536];
        let n = stream.read(&mut reply).unwrap();
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Path of a binary built alongside this test (`BRIG_BIN_DIR` overrides the directory).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var("BRIG_BIN_DIR") {
        Ok(dir) => PathBuf::from(dir),
        // Beside the running executable (brig-bench), or one level up from a
        // test binary in target/<profile>/deps/.
        Err(_) => {
            let exe = std::env::current_exe().unwrap();
            let here = exe.parent().expect("an executable lives in a directory").to_path_buf();
            if here.join(name).exists() {
                here
            } else {
                here.parent().expect("target/<profile>/deps/<test>").to_path_buf()
            }
        }
    };
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} not built: run the suite with `cargo nextest run --workspace`",
        binary.display()
    );
    binary
}

pub fn api_binary() -> PathBuf {
    binary("brig-api")
}

/// The image the sandboxes use (images/sandbox-test/build.sh).
pub fn test_image() -> String {
    std::env::var("BRIG_TEST_IMAGE").unwrap_or_else(|_| "brig-sandbox-test:latest".into())
}

pub const ALICE_KEY: &str = "alice-secret-key-1";
pub const BOB_KEY: &str = "bob-secret-key-2";
pub const JWT_SECRET: &str = "e2e-jwt-secret-that-is-long-enough-0123456789";

/// A fresh instance name for one test.
pub fn new_instance() -> String {
    format!("e2e-{:08x}", rand::random::<u32>())
}

/// A child process whose output lines (stdout and stderr) are collected.
pub struct Service {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// Spawns `command`; `ready` picks a value out of a JSON log line and
    /// start returns once one does (or panics with the output after 60 s).
    fn start(mut command: Command, ready: fn(&serde_json::Value) -> Option<String>) -> (Self, String) {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn service");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let (logs, ready_tx) = (Arc::clone(&logs), ready_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(value) = serde_json::from_str(&line).ok().as_ref().and_then(ready) {
                        let _ = ready_tx.send(value);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(value) => (Service { child, logs }, value),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "service did not become ready; its output:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit code once the process has exited (at most `wait`).
    pub fn terminate(&mut self, wait: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn base_command(binary: PathBuf, instance: &str, env: &[(&str, &str)]) -> Command {
    base_command_of(Command::new(binary), instance, env)
}

/// `command` (a binary, or a wrapper that runs one) in the tests' environment.
fn base_command_of(mut command: Command, instance: &str, env: &[(&str, &str)]) -> Command {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("BRIG_INSTANCE", instance)
        .env("CONTAINER_IMAGE", test_image())
        // Each instance its own: tests never share (or fill) one snapshot store.
        .env("SNAPSHOT_DIR", snapshot_dir(instance));
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    command.envs(env.iter().copied());
    command
}

/// The default `SNAPSHOT_DIR` of an instance's processes (removed with the
/// instance by the [`BrigApi`] that owns it).
pub fn snapshot_dir(instance: &str) -> PathBuf {
    std::env::temp_dir().join(format!("brig-test-snapshots-{instance}"))
}

/// Borrows an environment with computed values (`redis.url()`) in the form the
/// `start` functions take.
pub fn env_refs<'a>(env: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A running brig-api.
pub struct BrigApi {
    pub service: Service,
    pub base: String,
    pub instance: String,
    /// Whether dropping this removes the instance's containers.
    owns_instance: bool,
}

impl BrigApi {
    /// Starts brig-api on a fresh instance with the defaults below, overridden
    /// by `env`: API keys for alice and bob, a JWT secret, the test image, and
    /// `REDIS_URL` if given.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut api = Self::start_in(&new_instance(), env);
        api.owns_instance = true;
        api
    }

    /// Starts brig-api on an existing `instance` (a restart, or a second replica).
    pub fn start_in(instance: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(Command::new(api_binary()), instance, env)
    }

    /// Starts brig-api inside the network namespace at `netns` (a path under
    /// `/var/run/netns`), as one node of several: `nsenter` enters its network
    /// only (`ip netns exec` would also remount `/sys`, hiding the cgroups).
    /// `env` must set `HOST` to an address of that namespace.
    pub fn start_in_netns(instance: &str, netns: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={netns}")).arg("--").arg(api_binary());
        Self::start_with(command, instance, env)
    }

    fn start_with(command: Command, instance: &str, env: &[(&str, &str)]) -> Self {
        let mut command = base_command_of(command, instance, &[]);
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("API_KEYS", format!("alice:{ALICE_KEY},bob:{BOB_KEY}"))
            .env("JWT_SECRET", JWT_SECRET)
            .envs(env.iter().copied());
        let (service, addr) = Service::start(command, |entry| {
            entry["msg"].as_str().filter(|m| m.ends_with("listening"))?;
            entry["addr"].as_str().map(String::from)
        });
        BrigApi {
            service,
            base: format!("http://{addr}"),
            instance: instance.to_string(),
            owns_instance: false,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn logs(&self) -> Vec<String> {
        self.service.logs()
    }
}

impl Drop for BrigApi {
    fn drop(&mut self) {
        self.service.kill();
        if self.owns_instance {
            remove_instance_containers(&self.instance);
            let _ = std::fs::remove_dir_all(snapshot_dir(&self.instance));
        }
    }
}

/// brig-cleanup-worker as a one-off command (`--purge`), in the tests' environment.
pub fn worker_command(instance: &str, env: &[(&str, &str)]) -> Command {
    base_command(binary("brig-cleanup-worker"), instance, env)
}

/// A running brig-cleanup-worker.
pub struct CleanupWorker {
    pub service: Service,
}

impl CleanupWorker {
    pub fn start(instance: &str, env: &[(&str, &str)]) -> Self {
        let command = base_command(binary("brig-cleanup-worker"), instance, env);
        let (service, _) = Service::start(command, |entry| {
            entry["msg"]
                .as_str()
                .filter(|m| m.ends_with("cleanup worker started"))
                .map(String::from)
        });
        CleanupWorker { service }
    }

    /// The summary lines of the passes so far.
    pub fn passes(&self) -> Vec<serde_json::Value> {
        self.service
            .logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| entry["target"] == "brig::cleanup")
            .collect()
    }
}

/// Ids of the containers carrying every label in `labels` (`key=value`).
fn containers_labelled(labels: &[String]) -> Vec<String> {
    containers_labelled_on(None, labels)
}

/// [`containers_labelled`] on the engine at `host` (a `DOCKER_HOST` value;
/// `None`: the tests' own engine).
pub fn containers_labelled_on(host: Option<&str>, labels: &[String]) -> Vec<String> {
    let mut command = Command::new("docker");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    command.args(["ps", "-aq"]);
    for label in labels {
        command.args(["--filter", &format!("label={label}")]);
    }
    let listed = command.output().expect("docker ps");
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Removes every container labelled with `instance`.
pub fn remove_instance_containers(instance: &str) {
    // A container whose start was in flight when its creator was killed
    // (a warm-pool refill) can refuse removal for a moment: look again
    // until none is left, a few times.
    for attempt in 0..5 {
        let ids = instance_containers(instance);
        if ids.is_empty() {
            return;
        }
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = Command::new("docker").args(["rm", "-f", "-v"]).args(&ids).output();
    }
}

/// Containers currently labelled with `instance`.
pub fn instance_containers(instance: &str) -> Vec<String> {
    containers_labelled(&[format!("brig.instance={instance}")])
}

/// Containers of `instance` labelled with session `session`.
pub fn session_containers(instance: &str, session: &str) -> Vec<String> {
    containers_labelled(&[format!("brig.instance={instance}"), format!("brig.session={session}")])
}

/// Unclaimed warm-pool spares of `instance` (claimed ones take a session's name).
pub fn spare_containers(instance: &str) -> Vec<String> {
    let listed = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("name=brig-{instance}-pool-")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// `docker inspect --format format container`, trimmed.
pub fn docker_inspect(container: &str, format: &str) -> String {
    let inspected = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&inspected.stdout).trim().to_string()
}
