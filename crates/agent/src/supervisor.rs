//! Runs commands: spawning, the reaper, deadlines, cancellation, output caps and
//! the clean-up of whatever a command leaves behind.
//!
//! Three kinds of thread share one [`Table`]:
//! - the **reaper** waits for any child to exit. For a command's leader it first
//!   SIGKILLs the leader's process group while the unreaped zombie still holds the
//!   group id (so the id cannot have been reused), then reaps it and wakes the
//!   command's supervisor. Any other child (an orphan reparented to PID 1) is
//!   simply reaped: no zombie survives.
//! - the **deadline** thread SIGKILLs the group of every leader whose deadline has
//!   passed. It never touches output, so a stalled client cannot delay a kill.
//! - the **I/O loop** ([`io_loop`](crate::io_loop)) pumps every command's pipes,
//!   and once a leader is gone has its leftovers killed
//!   (see [`leftovers`](crate::leftovers)) and reports.
//!
//! The agent's thread count is fixed (main, reaper, deadlines, I/O): threads count
//! against the sandbox's pids limit, so none is spent per command.
//!
//! Spawning happens under the table lock, and the reaper takes the same lock
//! before reaping, so a pid is registered before anyone can reap it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use brig_protocol::{ErrorCode, RunRequest, RunResult, Termination};

use crate::{kept, leftovers, spawn, sys};

/// Most commands running at once in one sandbox.
pub const MAX_ACTIVE: usize = 64;

/// Longest deadline the agent accepts (the API clamps far below this).
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// The fixed PATH commands run with.
pub const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment variable that marks every process of one command.
pub const MARKER_VAR: &str = "BRIG_CMD";

/// Why a command did not start.
#[derive(Debug)]
pub struct StartError {
    pub code: ErrorCode,
    pub message: String,
}

impl StartError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        StartError {
            code,
            message: message.into(),
        }
    }
}

#[derive(Default)]
struct Outcome {
    termination: Option<Termination>,
    ended: Option<Instant>,
    timed_out: bool,
    cancelled: bool,
}

struct Slot {
    wake: OwnedFd,
    outcome: Mutex<Outcome>,
}

#[derive(Default)]
struct Table {
    /// Leader pid → slot, until the reaper reaps the leader.
    leaders: HashMap<i32, Arc<Slot>>,
    /// Request id → leader pid, until its supervisor has finished.
    requests: HashMap<u32, i32>,
    deadlines: Vec<(Instant, i32)>,
    /// Bumped on every spawn, so an idle reaper notices new children.
    spawned: u64,
}

struct Shared {
    table: Mutex<Table>,
    changed: Condvar,
    /// PID 1 of the sandbox: when no command runs, everything else may be killed.
    is_init: bool,
    /// Markers are `<prefix>.<n>`: our pid, or a tag given by the client.
    marker_prefix: String,
    next_marker: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock is a bug; keep serving rather than cascade.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn lock_outcome(slot: &Slot) -> MutexGuard<'_, Outcome> {
    slot.outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A started command, handed to the I/O loop.
pub struct Running {
    pub(crate) id: u32,
    marker: String,
    slot: Arc<Slot>,
    started: Instant,
    pub(crate) stdin: Option<File>,
    pub(crate) stdin_bytes: Vec<u8>,
    pub(crate) stdout: Option<File>,
    pub(crate) stderr: Option<File>,
    pub(crate) output_cap: u64,
    /// The sandbox's OOM kill count when the command started.
    oom_kills: Option<u64>,
    /// Its terminal's master, if it runs under one.
    pub(crate) pty: Option<OwnedFd>,
}

impl Running {
    /// Readable when the reaper has collected the command's leader.
    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        self.slot.wake.as_raw_fd()
    }
}

/// Runs commands; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

impl Supervisor {
    /// Starts the reaper and deadline threads.
    pub fn start() -> io::Result<Self> {
        Self::start_tagged(&sys::getpid().to_string())
    }

    /// [`start`](Self::start), marking commands `<tag>.<n>` so that a later
    /// `brig-agent kill-tag <tag>` finds them.
    pub fn start_tagged(tag: &str) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            changed: Condvar::new(),
            is_init: sys::getpid() == 1,
            marker_prefix: tag.to_string(),
            next_marker: AtomicU64::new(1),
        });
        let reaper = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap_forever(&reaper))?;
        let deadlines = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("deadlines".into())
            .spawn(move || enforce_deadlines_forever(&deadlines))?;
        Ok(Supervisor { shared })
    }

    /// Validates and spawns `request` as request `id`.
    pub fn spawn(&self, id: u32, request: RunRequest) -> Result<Running, StartError> {
        validate(&request)?;
        // Our pid (or tag) keeps markers distinct from those of a one-shot
        // `brig-agent run` started through `docker exec` in the same sandbox.
        let marker = format!(
            "{MARKER_VAR}={}.{}",
            self.shared.marker_prefix,
            self.shared.next_marker.fetch_add(1, Ordering::Relaxed)
        );
        let env = [("PATH", COMMAND_PATH), ("HOME", "/workspace")]
            .into_iter()
            .chain(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .chain([(MARKER_VAR, &marker[MARKER_VAR.len() + 1..])])
            .collect();
        let spec = spawn::Spec {
            argv: &request.argv,
            env,
            cwd: &request.cwd,
            stdin: !request.stdin.is_empty() || request.keep.as_ref().is_some_and(|keep| keep.stdin_pipe),
            tty: request.keep.as_ref().and_then(|keep| keep.tty),
        };
        let wake = sys::eventfd().map_err(|err| StartError::new(ErrorCode::Busy, err.to_string()))?;

        let mut table = self.shared.lock();
        if table.requests.contains_key(&id) {
            return Err(StartError::new(
                ErrorCode::DuplicateRequest,
                "request id already running",
            ));
        }
        if table.requests.len() >= MAX_ACTIVE {
            return Err(StartError::new(
                ErrorCode::Busy,
                format!("{MAX_ACTIVE} commands already running"),
            ));
        }
        let child = spawn::spawn(&spec).map_err(|err| spawn_error(&request, &err))?;
        // spawn returns once the command has exec'd. It fails only for a
        // command that is already gone.
        let _ = sys::prefer_oom_kill(child.pid as u32);
        let started = Instant::now();
        let oom_kills = kept::oom_kills();
        let pid = child.pid;
        let slot = Arc::new(Slot {
            wake,
            outcome: Mutex::new(Outcome::default()),
        });
        table.leaders.insert(pid, Arc::clone(&slot));
        table.requests.insert(id, pid);
        table
            .deadlines
            .push((started + Duration::from_millis(request.timeout_ms), pid));
        table.spawned += 1;
        drop(table);
        self.shared.changed.notify_all();

        Ok(Running {
            id,

            marker,
            slot,
            started,
            stdin: child.stdin,
            stdin_bytes: request.stdin,
            stdout: Some(child.stdout),
            stderr: child.stderr,
            pty: child.pty,
            output_cap: request.output_cap,
            oom_kills,
        })
        // The reaper owns reaping.
    }

    /// Kills request `id`'s process group; ignored if it is not running.
    pub fn cancel(&self, id: u32) {
        let table = self.shared.lock();
        let Some(&pid) = table.requests.get(&id) else { return };
        if let Some(slot) = table.leaders.get(&pid) {
            lock_outcome(slot).cancelled = true;
            sys::kill_group(pid);
        }
    }

    /// Sends `signal` to request `id`'s process group: `false` if it is not running.
    pub fn signal(&self, id: u32, signal: i32) -> bool {
        let table = self.shared.lock();
        let Some(&pid) = table.requests.get(&id) else {
            return false;
        };
        // The leader's zombie keeps the group id ours until the reaper, under
        // this lock, reaps it.
        table.leaders.contains_key(&pid) && sys::signal_group(pid, signal)
    }

    /// The command has ended (its slot was woken): kill its leftovers once.
    /// Returns false if the leader is in fact still running.
    pub(crate) fn leader_ended(&self, running: &Running) -> bool {
        sys::eventfd_clear(&running.slot.wake);
        if lock_outcome(&running.slot).termination.is_none() {
            return false;
        }
        self.kill_leftovers(&running.marker);
        true
    }

    /// Forgets a command whose supervision is over and builds its result.
    pub(crate) fn finish(&self, running: &Running, stdout_bytes: u64, stderr_bytes: u64) -> RunResult {
        self.shared.lock().requests.remove(&running.id);
        let outcome = lock_outcome(&running.slot);
        let termination = outcome.termination.unwrap_or(Termination::Signaled(libc::SIGKILL));
        // Killed, not by us, while the sandbox's OOM killer struck.
        let oom_killed = termination == Termination::Signaled(libc::SIGKILL)
            && !outcome.timed_out
            && !outcome.cancelled
            && matches!((running.oom_kills, kept::oom_kills()), (Some(before), Some(after)) if after > before);
        RunResult {
            termination,
            timed_out: outcome.timed_out,
            cancelled: outcome.cancelled,
            oom_killed,
            stdout_bytes,
            stderr_bytes,
            stdout_truncated: stdout_bytes > running.output_cap,
            stderr_truncated: stderr_bytes > running.output_cap,
            duration_us: outcome
                .ended
                .map_or(Duration::ZERO, |ended| ended - running.started)
                .as_micros() as u64,
        }
    }

    /// Kills what a finished command left behind: every process carrying its
    /// marker, and, when the agent is PID 1 and no other command runs, every other
    /// process in the sandbox. Repeats until nothing was found, so a fork in
    /// flight cannot slip through.
    fn kill_leftovers(&self, marker: &str) {
        // A process caught mid-exec shows no environment; look again a few
        // times before calling the sandbox clean (a process that really has
        // none is left to the idle sweep).
        let mut unsure_passes = 0;
        for _ in 0..200 {
            let table = self.shared.lock();
            let sweep = leftovers::kill_marked(marker);
            let mut killed = sweep.killed;
            // `requests` still holds this command until supervise returns.
            if self.shared.is_init && table.requests.len() <= 1 {
                killed |= leftovers::kill_all_but_exec_sessions();
            }
            drop(table);
            if sweep.unsure && !killed {
                unsure_passes += 1;
            }
            if !killed && (!sweep.unsure || unsure_passes > 5) {
                return;
            }
            // Let the reaper collect the victims before looking again.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Why a command did not start, naming the working directory when it is the
/// cause (the spawn error alone, "ls: No such file or directory", blames the
/// program).
fn spawn_error(request: &RunRequest, err: &std::io::Error) -> StartError {
    let cwd = std::path::Path::new(&request.cwd);
    let message = match std::fs::metadata(cwd) {
        Err(_) => format!("working directory {} does not exist", request.cwd),
        Ok(meta) if !meta.is_dir() => format!("working directory {} is not a directory", request.cwd),
        Ok(_) => format!("{}: {err}", request.argv[0]),
    };
    StartError::new(ErrorCode::SpawnFailed, message)
}

fn validate(request: &RunRequest) -> Result<(), StartError> {
    let invalid = |message: &str| Err(StartError::new(ErrorCode::InvalidRequest, message));
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return invalid("argv is empty");
    }
    if request.timeout_ms == 0 || request.timeout_ms > MAX_TIMEOUT_MS {
        return invalid("timeout must be positive and at most one day");
    }
    if !request.cwd.starts_with('/') {
        return invalid("cwd must be an absolute path");
    }
    let has_nul = |s: &str| s.contains('\0');
    if request.argv.iter().any(|a| has_nul(a)) || has_nul(&request.cwd) {
        return invalid("NUL byte in argv or cwd");
    }
    for (key, value) in &request.env {
        if key.is_empty() || key.contains('=') || has_nul(key) || has_nul(value) || key == MARKER_VAR {
            return invalid("invalid environment variable");
        }
    }
    Ok(())
}

fn reap_forever(shared: &Shared) {
    loop {
        let generation = shared.lock().spawned;
        match sys::wait_any_exited() {
            Ok(Some(pid)) => {
                let mut table = shared.lock();
                let Some(slot) = table.leaders.remove(&pid) else {
                    drop(table);
                    sys::reap(pid);
                    continue;
                };
                // The zombie leader keeps the group id reserved: safe to kill by it.
                sys::kill_group(pid);
                let termination = sys::reap(pid);
                table.deadlines.retain(|&(_, p)| p != pid);
                drop(table);
                let mut outcome = lock_outcome(&slot);
                outcome.termination = Some(termination.unwrap_or(Termination::Signaled(libc::SIGKILL)));
                outcome.ended = Some(Instant::now());
                drop(outcome);
                sys::eventfd_signal(&slot.wake);
            }
            Ok(None) => {
                let table = shared.lock();
                if table.spawned == generation {
                    let _unused = shared
                        .changed
                        .wait_timeout(table, Duration::from_secs(1))
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            }
            Err(err) => {
                eprintln!("brig-agent: waitid failed: {err}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn enforce_deadlines_forever(shared: &Shared) {
    let mut table = shared.lock();
    loop {
        let now = Instant::now();
        let (due, pending): (Vec<_>, Vec<_>) = table.deadlines.iter().partition(|(at, _)| *at <= now);
        table.deadlines = pending;
        for (_, pid) in due {
            if let Some(slot) = table.leaders.get(&pid) {
                lock_outcome(slot).timed_out = true;
                sys::kill_group(pid);
            }
        }
        let next = table.deadlines.iter().map(|(at, _)| *at).min();
        table = match next {
            Some(at) => {
                shared
                    .changed
                    .wait_timeout(table, at.saturating_duration_since(now))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0
            }
            None => shared
                .changed
                .wait(table)
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        };
    }
}
