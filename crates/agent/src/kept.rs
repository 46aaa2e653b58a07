//! Kept (durable) executions: the agent keeps each one's output, per stream,
//! in a ring of its last `buffer_bytes` bytes addressed by absolute offsets,
//! so that a reader resumes exactly where it left off (`Read`, which may wait
//! a bounded time for more); it feeds stdin sent after the start (`Stdin`,
//! written by the I/O loop, acknowledged once the command took it all).
//!
//! Bounds a hostile client cannot stretch: every ring is capped; the rings of
//! all kept executions together reserve at most [`BUDGET`] bytes (finished
//! executions are forgotten, oldest first, to make room; running ones never);
//! at most [`MAX_FINISHED`] finished ones are kept; queued stdin is at most
//! [`MAX_STDIN_QUEUED`] bytes and waiting readers [`MAX_WAITERS`] per execution.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use brig_protocol::{ErrorCode, Keep, ReadReply, ReadRequest, RunResult, Stream, TtySize};

/// Ring bytes all kept executions of a sandbox may reserve together, at
/// most: half the sandbox's memory limit when it can be read (the rings
/// count against it).
pub const BUDGET: u64 = 256 << 20;

/// The budget for this sandbox.
fn budget() -> u64 {
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok());
    limit.map_or(BUDGET, |limit| (limit / 2).clamp(1 << 20, BUDGET))
}

/// Finished executions kept for their readers.
pub const MAX_FINISHED: usize = 16;

/// Stdin bytes queued for one execution before writers are told to wait.
const MAX_STDIN_QUEUED: usize = 4 << 20;

/// Readers waiting on one execution at once; more are answered at once.
const MAX_WAITERS: usize = 64;

/// Why a request failed: the error frame's code and message.
pub type Failure = (ErrorCode, String);

/// Answers a `Read`.
pub type OnRead = Box<dyn FnOnce(Result<ReadReply, Failure>) + Send>;

/// Answers a `Stdin`.
pub type OnAck = Box<dyn FnOnce(Result<(), Failure>) + Send>;

fn failure(code: ErrorCode, message: &str) -> Failure {
    (code, message.to_string())
}

/// The last `cap` bytes of one stream, the first of them at offset `start`.
struct Ring {
    start: u64,
    data: VecDeque<u8>,
    cap: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            start: 0,
            data: VecDeque::new(),
            cap,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.end() + bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let over = (self.data.len() + bytes.len()).saturating_sub(self.cap);
        self.data.drain(..over);
        // Grown by doubling, but never past the cap (the budget counts caps).
        let needed = self.data.len() + bytes.len();
        if needed > self.data.capacity() {
            let target = (self.data.capacity() * 2).max(needed).min(self.cap);
            self.data.reserve_exact(target - self.data.len());
        }
        self.data.extend(bytes);
        self.start = end - self.data.len() as u64;
    }

    /// Bytes from `offset` to the end (none if it is outside the ring).
    fn after(&self, offset: u64) -> u64 {
        self.end().saturating_sub(offset.max(self.start))
    }

    /// Up to `max` bytes from `offset` on.
    fn from(&self, offset: u64, max: usize) -> Result<Vec<u8>, Failure> {
        if offset < self.start {
            return Err(failure(
                ErrorCode::CursorExpired,
                "the offset has left the output buffer",
            ));
        }
        if offset > self.end() {
            return Err(failure(
                ErrorCode::InvalidRequest,
                "the offset is past the end of the output",
            ));
        }
        let at = (offset - self.start) as usize;
        let n = (self.data.len() - at).min(max);
        Ok(self.data.range(at..at + n).copied().collect())
    }
}

struct Waiter {
    request: ReadRequest,
    deadline: Instant,
    done: OnRead,
}

#[derive(Default)]
struct StdinQueue {
    /// Chunks not yet written whole, and who waits for each; `written` bytes
    /// of the first are.
    chunks: VecDeque<(Vec<u8>, Option<OnAck>)>,
    written: usize,
    queued: usize,
    /// The client asked for the pipe's end (after what is queued).
    closing: bool,
    /// The pipe is gone: closed as asked, or the command ended or closed it.
    gone: bool,
}

struct State {
    rings: [Ring; 2],
    finished: Option<RunResult>,
    stdin: StdinQueue,
    waiters: Vec<Waiter>,
}

/// One kept execution.
pub struct Exec {
    /// The request id it runs under (for signals through the supervisor).
    pub id: u32,
    /// Its stdin is a pipe fed by `Stdin` frames.
    pub stdin_pipe: bool,
    /// The ring bytes it reserved of the [`BUDGET`].
    reserved: u64,
    state: Mutex<State>,
    /// Its terminal's master, if it runs under one (set once spawned).
    pty: Mutex<Option<OwnedFd>>,
}

impl Exec {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_finished(&self) -> bool {
        self.lock().finished.is_some()
    }

    pub fn set_pty(&self, master: Option<OwnedFd>) {
        *self.pty.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = master;
    }

    /// Gives its terminal a new size.
    pub fn resize(&self, size: TtySize) -> Result<(), Failure> {
        let pty = self.pty.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(master) = pty.as_ref() else {
            return Err(failure(ErrorCode::InvalidRequest, "the execution has no terminal"));
        };
        crate::sys::set_tty_size(master, size).map_err(|err| (ErrorCode::NotRunning, err.to_string()))
    }

    /// Output of the command (all of it, before any cap): kept, and handed to
    /// the readers it satisfies.
    pub fn append(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        state.rings[index(stream)].push(bytes);
        let ready = take_waiters(&mut state, |_| false);
        drop(state);
        answer_all(ready);
    }

    /// Answers `request` now when there is something to say, else once there
    /// is or its wait ends. Returns the deadline of a reader left waiting.
    pub fn read(&self, request: ReadRequest, done: OnRead) -> Option<Instant> {
        let mut state = self.lock();
        if let Some(answer) = answer(&state, &request) {
            drop(state);
            done(answer);
            return None;
        }
        if request.wait_ms == 0 || state.waiters.len() >= MAX_WAITERS {
            let empty = reply(&state, &request);
            drop(state);
            done(empty);
            return None;
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(request.wait_ms));
        state.waiters.push(Waiter {
            request,
            deadline,
            done,
        });
        Some(deadline)
    }

    /// Answers the readers whose wait has ended; the next deadline of those left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        let due = take_waiters(&mut state, |waiter| waiter.deadline <= now);
        let next = state.waiters.iter().map(|w| w.deadline).min();
        drop(state);
        answer_all(due);
        next
    }

    /// Queues stdin for the I/O loop; `done` once it is written.
    pub fn queue_stdin(&self, data: Vec<u8>, close: bool, done: OnAck) -> Result<(), (Failure, OnAck)> {
        let mut state = self.lock();
        let stdin = &mut state.stdin;
        let refused = if stdin.gone || stdin.closing {
            Some(failure(ErrorCode::NotRunning, "the execution's stdin is closed"))
        } else if stdin.queued + data.len() > MAX_STDIN_QUEUED {
            Some((
                ErrorCode::Busy,
                format!("{MAX_STDIN_QUEUED} bytes of stdin already wait to be read"),
            ))
        } else {
            None
        };
        if let Some(refused) = refused {
            return Err((refused, done));
        }
        stdin.queued += data.len();
        stdin.closing = close;
        stdin.chunks.push_back((data, Some(done)));
        Ok(())
    }

    /// Whether the I/O loop has stdin to write (or to close).
    pub fn stdin_pending(&self) -> bool {
        let state = self.lock();
        !state.stdin.gone && (!state.stdin.chunks.is_empty() || state.stdin.closing)
    }

    /// Writes queued stdin to `pipe` without blocking; `false` once the pipe
    /// is to be dropped (closed as asked, or broken).
    pub fn feed_stdin(&self, pipe: &mut impl Write) -> bool {
        let mut state = self.lock();
        let mut acked = Vec::new();
        let mut broken = false;
        let stdin = &mut state.stdin;
        while let Some((chunk, _)) = stdin.chunks.front() {
            if stdin.written < chunk.len() {
                match pipe.write(&chunk[stdin.written..]) {
                    Ok(n) => {
                        stdin.written += n;
                        continue;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            if let Some((chunk, done)) = stdin.chunks.pop_front() {
                stdin.queued -= chunk.len();
                acked.extend(done);
            }
            stdin.written = 0;
        }
        let done = stdin.closing && stdin.chunks.is_empty();
        let keep = !(broken || done);
        drop(state);
        for done in acked {
            done(Ok(()));
        }
        if !keep {
            self.stdin_gone();
        }
        keep
    }

    /// The pipe is gone: whatever still waits to be written never will be.
    pub fn stdin_gone(&self) {
        let mut state = self.lock();
        state.stdin.gone = true;
        let waiting: Vec<OnAck> = state.stdin.chunks.drain(..).filter_map(|(_, done)| done).collect();
        state.stdin.queued = 0;
        drop(state);
        for done in waiting {
            done(Err(failure(
                ErrorCode::NotRunning,
                "the command no longer reads its stdin",
            )));
        }
    }

    fn finish(&self, result: RunResult) {
        self.set_pty(None);
        let mut state = self.lock();
        state.finished = Some(result);
        for ring in &mut state.rings {
            ring.data.shrink_to_fit();
        }
        let all = take_waiters(&mut state, |_| true);
        drop(state);
        answer_all(all);
        self.stdin_gone();
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// The answer to `request` if there is one worth giving now: an error, new
/// bytes, or the end.
fn answer(state: &State, request: &ReadRequest) -> Option<Result<ReadReply, Failure>> {
    match reply(state, request) {
        Ok(reply) if reply.stdout.is_empty() && reply.stderr.is_empty() && reply.finished.is_none() => None,
        other => Some(other),
    }
}

/// What `request` gets now (possibly nothing new).
fn reply(state: &State, request: &ReadRequest) -> Result<ReadReply, Failure> {
    let max = request.max_bytes as usize;
    let [out, err] = &state.rings;
    // Both streams get a fair share: a stdout flood never starves stderr
    // until its bytes leave the ring.
    let stderr_share = (err.after(request.stderr_offset) as usize).min(max / 2);
    let stdout = out.from(request.stdout_offset, max - stderr_share)?;
    let stderr = err.from(request.stderr_offset, max - stdout.len())?;
    let at_end = request.stdout_offset + stdout.len() as u64 == out.end()
        && request.stderr_offset + stderr.len() as u64 == err.end();
    Ok(ReadReply {
        stdout,
        stderr,
        finished: state.finished.clone().filter(|_| at_end),
    })
}

/// Removes the waiters that `due` picks or that have an answer now, each with its answer.
fn take_waiters(state: &mut State, due: impl Fn(&Waiter) -> bool) -> Vec<(OnRead, Result<ReadReply, Failure>)> {
    let mut ready = Vec::new();
    let mut index = 0;
    while index < state.waiters.len() {
        let waiter = &state.waiters[index];
        let answer = match answer(state, &waiter.request) {
            Some(answer) => Some(answer),
            None if due(waiter) => Some(reply(state, &waiter.request)),
            None => None,
        };
        match answer {
            Some(answer) => ready.push((state.waiters.swap_remove(index).done, answer)),
            None => index += 1,
        }
    }
    ready
}

fn answer_all(ready: Vec<(OnRead, Result<ReadReply, Failure>)>) {
    for (done, answer) in ready {
        done(answer);
    }
}

#[derive(Default)]
struct Registry {
    by_key: HashMap<String, Arc<Exec>>,
    /// Keys of finished executions, oldest first.
    finished: VecDeque<String>,
    reserved: u64,
}

impl Registry {
    fn forget_oldest(&mut self) -> bool {
        let Some(key) = self.finished.pop_front() else {
            return false;
        };
        if let Some(exec) = self.by_key.remove(&key) {
            self.reserved -= exec.reserved;
        }
        true
    }
}

/// Every kept execution of the sandbox, by key.
pub struct Kept {
    registry: Mutex<Registry>,
    /// Ring bytes all of them may reserve together.
    budget: u64,
}

impl Default for Kept {
    fn default() -> Self {
        Kept::with_budget(budget())
    }
}

impl Kept {
    pub fn with_budget(budget: u64) -> Self {
        Kept {
            registry: Mutex::default(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for and records a new execution (before it is spawned).
    pub fn register(&self, id: u32, keep: &Keep) -> Result<Arc<Exec>, Failure> {
        let per_stream = keep.buffer_bytes;
        if per_stream == 0 || per_stream > self.budget / 2 {
            return Err((
                ErrorCode::InvalidRequest,
                format!(
                    "buffer_bytes must be between 1 and {} (half the output this sandbox may keep)",
                    self.budget / 2
                ),
            ));
        }
        let mut registry = self.lock();
        if registry.by_key.contains_key(&keep.key) {
            return Err(failure(
                ErrorCode::DuplicateRequest,
                "an execution with this key exists",
            ));
        }
        let need = 2 * per_stream;
        while registry.reserved + need > self.budget {
            if !registry.forget_oldest() {
                return Err(failure(ErrorCode::Busy, "the sandbox keeps as much output as it may"));
            }
        }
        let exec = Arc::new(Exec {
            id,
            stdin_pipe: keep.stdin_pipe,
            reserved: need,
            state: Mutex::new(State {
                rings: [Ring::new(per_stream as usize), Ring::new(per_stream as usize)],
                finished: None,
                stdin: StdinQueue {
                    gone: !keep.stdin_pipe,
                    ..StdinQueue::default()
                },
                waiters: Vec::new(),
            }),
            pty: Mutex::new(None),
        });
        registry.reserved += need;
        registry.by_key.insert(keep.key.clone(), Arc::clone(&exec));
        Ok(exec)
    }

    /// Forgets an execution that did not start.
    pub fn unregister(&self, key: &str) {
        let mut registry = self.lock();
        if let Some(exec) = registry.by_key.remove(key) {
            registry.reserved -= exec.reserved;
        }
    }

    pub fn get(&self, key: &str) -> Result<Arc<Exec>, Failure> {
        self.lock()
            .by_key
            .get(key)
            .cloned()
            .ok_or_else(|| failure(ErrorCode::ExecutionNotFound, "no execution with this key"))
    }

    /// Records the end of `exec` (kept under `key`) and wakes its readers.
    pub fn finished(&self, key: &str, exec: &Exec, result: RunResult) {
        exec.finish(result);
        let mut registry = self.lock();
        registry.finished.push_back(key.to_string());
        while registry.finished.len() > MAX_FINISHED {
            registry.forget_oldest();
        }
    }

    /// Answers every reader whose wait ended; the next deadline of those left.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let execs: Vec<Arc<Exec>> = self.lock().by_key.values().cloned().collect();
        execs.iter().filter_map(|exec| exec.expire(now)).min()
    }
}

/// OOM kills in the sandbox's memory cgroup so far (cgroup v2 or v1), if readable.
pub fn oom_kills() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.events",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ]
    .iter()
    .find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use brig_protocol::Termination;

    use super::*;

    fn keep(key: &str, buffer_bytes: u64) -> Keep {
        Keep {
            key: key.into(),
            buffer_bytes,
            stdin_pipe: true,
            tty: None,
        }
    }

    fn read(key: &str, stdout_offset: u64, stderr_offset: u64, wait_ms: u32) -> ReadRequest {
        ReadRequest {
            key: key.into(),
            stdout_offset,
            stderr_offset,
            max_bytes: 1 << 20,
            wait_ms,
        }
    }

    fn read_now(exec: &Exec, request: ReadRequest) -> Result<ReadReply, Failure> {
        let (tx, rx) = mpsc::channel();
        assert!(exec.read(request, Box::new(move |r| tx.send(r).unwrap())).is_none());
        rx.recv().unwrap()
    }

    fn result() -> RunResult {
        RunResult {
            termination: Termination::Exited(0),
            timed_out: false,
            cancelled: false,
            oom_killed: false,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            duration_us: 0,
        }
    }

    #[test]
    fn offsets_are_absolute_and_bytes_that_left_the_ring_are_an_expired_cursor() {
        let kept = Kept::default();
        let exec = kept.register(1, &keep("a", 8)).unwrap();
        exec.append(Stream::Stdout, b"0123456789");
        exec.append(Stream::Stdout, b"ab");
        exec.append(Stream::Stderr, b"e");
        let got = read_now(&exec, read("a", 6, 0, 0)).unwrap();
        assert_eq!(
            (got.stdout.as_slice(), got.stderr.as_slice()),
            (&b"6789ab"[..], &b"e"[..])
        );
        assert_eq!(
            read_now(&exec, read("a", 3, 0, 0)).unwrap_err().0,
            ErrorCode::CursorExpired
        );
        assert_eq!(
            read_now(&exec, read("a", 13, 0, 0)).unwrap_err().0,
            ErrorCode::InvalidRequest
        );
        // Nothing new: an empty answer, not the end.
        let empty = read_now(&exec, read("a", 12, 1, 0)).unwrap();
        assert!(empty.stdout.is_empty() && empty.finished.is_none());
        kept.finished("a", &exec, result());
        // The end only comes with the last byte.
        let partial = read_now(
            &exec,
            ReadRequest {
                max_bytes: 2,
                ..read("a", 10, 0, 0)
            },
        )
        .unwrap();
        // Both streams share the budget: one byte each.
        assert_eq!(
            (partial.stdout.as_slice(), partial.stderr.as_slice(), partial.finished),
            (&b"a"[..], &b"e"[..], None)
        );
        assert!(read_now(&exec, read("a", 12, 1, 0)).unwrap().finished.is_some());
    }

    #[test]
    fn a_waiting_reader_is_answered_by_new_output_or_its_deadline() {
        let kept = Kept::default();
        let exec = kept.register(1, &keep("a", 64)).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        assert!(exec
            .read(read("a", 0, 0, 10_000), Box::new(move |r| tx.send(r).unwrap()))
            .is_some());
        assert!(rx.try_recv().is_err());
        exec.append(Stream::Stderr, b"late");
        assert_eq!(rx.recv().unwrap().unwrap().stderr, b"late");
        let deadline = exec
            .read(read("a", 0, 4, 1), Box::new(move |r| tx2.send(r).unwrap()))
            .unwrap();
        assert_eq!(kept.expire(Instant::now()), Some(deadline));
        assert!(kept.expire(deadline).is_none());
        let empty = rx.recv().unwrap().unwrap();
        assert!(empty.stdout.is_empty() && empty.stderr.is_empty());
    }

    #[test]
    fn the_budget_forgets_finished_executions_first_and_refuses_past_running_ones() {
        let kept = Kept::with_budget(BUDGET);
        let half = BUDGET / 4;
        let first = kept.register(1, &keep("a", half)).unwrap();
        let _second = kept.register(2, &keep("b", half)).unwrap();
        assert_eq!(kept.register(3, &keep("c", half)).err().unwrap().0, ErrorCode::Busy);
        kept.finished("a", &first, result());
        kept.register(3, &keep("c", half)).unwrap();
        assert_eq!(kept.get("a").err().unwrap().0, ErrorCode::ExecutionNotFound);
        assert_eq!(
            kept.register(4, &keep("b", 1)).err().unwrap().0,
            ErrorCode::DuplicateRequest
        );
    }

    #[test]
    fn stdin_is_acknowledged_once_written_and_refused_after_close() {
        let kept = Kept::default();
        let exec = kept.register(1, &keep("a", 64)).unwrap();
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        assert!(exec
            .queue_stdin(b"hello".to_vec(), true, Box::new(move |r| tx.send(r).unwrap()))
            .is_ok());
        assert!(exec.stdin_pending());
        assert!(!exec.feed_stdin(&mut writer), "closed after the last chunk");
        assert!(rx.recv().unwrap().is_ok());
        drop(writer);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut reader, &mut got).unwrap();
        assert_eq!(got, "hello");
        let Err((refused, _)) = exec.queue_stdin(b"more".to_vec(), false, Box::new(move |r| tx2.send(r).unwrap()))
        else {
            panic!("stdin after close was taken");
        };
        assert_eq!(refused.0, ErrorCode::NotRunning);
    }
}
