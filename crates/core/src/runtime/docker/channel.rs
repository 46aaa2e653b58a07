//! The attach channel to one sandbox's agent: one writer task, one reader task,
//! and any number of requests multiplexed over them by request id.
//!
//! Everything from the container is untrusted: frames are size-bounded and
//! strictly decoded, output is capped per request on this side too, and a
//! protocol violation closes the channel (the next request re-attaches).
//! The reader always drains, whatever the requesters do: the engine blocks a
//! container's stdout on its slowest attached reader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptionsBuilder;
use bollard::Docker;
use brig_protocol::{
    DecodeError, ErrorCode, FileReply, FileRequest, Frame, FrameDecoder, RunRequest, RunResult, Stream, Termination,
    MAX_FRAME_LEN, MAX_LIST_LEN, MAX_STDIN_BYTES, MIN_PROTOCOL_VERSION, PING_INTERVAL_MS, PROTOCOL_VERSION,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::tunnel::Tunnels;
use super::{engine_error, TIMEOUT_EXIT_CODE};
use crate::runtime::{Control, ControlReply, RuntimeError};
use crate::sandbox::egress::EgressDialer;
use crate::sandbox::{ExecHooks, ExecOutcome};

/// How long the agent may take to answer `Hello` (it may still be starting).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames queued for the writer task before senders wait.
const WRITE_QUEUE: usize = 256;

/// Tunnel data frames queued for the writer task (served after every
/// command frame, so a download never delays a command by more than one).
const BULK_QUEUE: usize = 16;

/// A finished request: the agent's result and the output kept under the cap.
pub(crate) struct Finished {
    pub result: RunResult,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn into_outcome(self) -> ExecOutcome {
        let result = self.result;
        ExecOutcome {
            exit_code: if result.timed_out {
                TIMEOUT_EXIT_CODE
            } else {
                result.shell_exit_code()
            },
            signal: match result.termination {
                Termination::Signaled(signal) => Some(signal),
                Termination::Exited(_) => None,
            },
            timed_out: result.timed_out,
            cancelled: result.cancelled,
            oom_killed: result.oom_killed,
            stdout: self.stdout,
            stderr: self.stderr,
            stdout_truncated: result.stdout_truncated,
            stderr_truncated: result.stderr_truncated,
            stdout_bytes: result.stdout_bytes,
            stderr_bytes: result.stderr_bytes,
            duration: Duration::from_micros(result.duration_us),
        }
    }
}

/// Appends a chunk of output to `buffer`, keeping at most `cap` bytes (the
/// agent enforces the cap too; its bytes are untrusted all the same). Returns
/// the part kept.
pub(crate) fn append_capped<'a>(buffer: &mut Vec<u8>, data: &'a [u8], cap: u64) -> &'a [u8] {
    let room = (cap as usize).saturating_sub(buffer.len()).min(data.len());
    buffer.extend_from_slice(&data[..room]);
    &data[..room]
}

struct Pending {
    cap: u64,
    hooks: ExecHooks,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    done: oneshot::Sender<Result<Finished, RuntimeError>>,
}

/// The one answer of a request that is not a command.
enum Answer {
    File(FileReply),
    Control(ControlReply),
}

type AnswerWaiter = oneshot::Sender<Result<Answer, RuntimeError>>;

#[derive(Default)]
struct Waiters {
    requests: HashMap<u32, Pending>,
    answers: HashMap<u32, AnswerWaiter>,
    hello: Option<oneshot::Sender<u16>>,
}

impl Waiters {
    fn answer(&mut self, id: u32, answer: Answer) {
        if let Some(waiter) = self.answers.remove(&id) {
            let _ = waiter.send(Ok(answer));
        }
    }
}

struct Shared {
    waiters: Mutex<Waiters>,
    closed: AtomicBool,
    /// The protocol version agreed with the agent (0 until its `HelloOk`).
    version: AtomicU16,
    tunnels: Arc<Tunnels>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the channel dead and fails everything still waiting on it.
    fn close(&self, error: impl Fn() -> RuntimeError) {
        self.closed.store(true, Ordering::SeqCst);
        let mut waiters = self.lock();
        waiters.hello = None;
        for (_, pending) in waiters.requests.drain() {
            let _ = pending.done.send(Err(error()));
        }
        for (_, answer) in waiters.answers.drain() {
            let _ = answer.send(Err(error()));
        }
        drop(waiters);
        self.tunnels.close_all();
    }
}

pub(crate) struct Channel {
    frames: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    tasks: [JoinHandle<()>; 3],
}

impl Drop for Channel {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Channel {
    /// Attaches to `container`'s stdio and greets the agent; `dialer` answers
    /// its egress proxy's dials.
    pub async fn open(
        docker: &Docker,
        container: &str,
        dialer: Option<Weak<dyn EgressDialer>>,
    ) -> Result<Arc<Channel>, RuntimeError> {
        let options = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .build();
        let attached = docker
            .attach_container(container, Some(options))
            .await
            .map_err(engine_error)?;
        Self::start(container, attached.input, attached.output, dialer).await
    }

    /// A relayed conversation with `container`'s agent (`brig-agent relay`
    /// through an engine exec): for a replica that does not own the attach
    /// stream. Commands started on it die when it closes.
    pub async fn relay(docker: &Docker, container: &str) -> Result<Arc<Channel>, RuntimeError> {
        let (input, output) = super::fallback::start_relay(docker, container).await?;
        Self::start(container, input, output, None).await
    }

    async fn start(
        container: &str,
        input: super::fallback::ExecInput,
        output: super::fallback::ExecOutput,
        dialer: Option<Weak<dyn EgressDialer>>,
    ) -> Result<Arc<Channel>, RuntimeError> {
        let (frames, mut queue) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let (bulk, mut bulk_queue) = mpsc::channel::<Vec<u8>>(BULK_QUEUE);
        let shared = Arc::new(Shared {
            waiters: Mutex::default(),
            closed: AtomicBool::new(false),
            version: AtomicU16::new(0),
            tunnels: Tunnels::new(container, dialer, frames.clone(), bulk),
        });

        let mut input = input;
        let writer_shared = Arc::clone(&shared);
        let writer = tokio::spawn(async move {
            loop {
                let bytes = tokio::select! {
                    biased;
                    Some(bytes) = queue.recv() => bytes,
                    Some(bytes) = bulk_queue.recv() => bytes,
                    else => break,
                };
                if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                    break;
                }
            }
            writer_shared.close(|| RuntimeError::ChannelClosed);
        });

        let mut output = output;
        let reader_shared = Arc::clone(&shared);
        let control = frames.clone();
        let container_name = container.to_string();
        let reader = tokio::spawn(async move {
            let mut decoder = FrameDecoder::new();
            let failure = loop {
                match output.next().await {
                    Some(Ok(LogOutput::StdOut { message })) => {
                        decoder.push(&message);
                        if let Err(violation) = dispatch_all(&mut decoder, &reader_shared, &control) {
                            tracing::warn!(container = %container_name, %violation, "closing sandbox channel");
                            break Some(violation);
                        }
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        let text = String::from_utf8_lossy(&message[..message.len().min(512)]).into_owned();
                        tracing::debug!(container = %container_name, agent_stderr = %text);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break None,
                }
            };
            match failure {
                Some(violation) => reader_shared.close(|| RuntimeError::Protocol(violation.clone())),
                None => reader_shared.close(|| RuntimeError::ChannelClosed),
            }
        });

        // The agent takes a silent client for gone, and kills what it
        // started (an agent of version 1 knows no pings, and needs none).
        let (pings, ping_shared) = (frames.clone(), Arc::clone(&shared));
        let pinger = tokio::spawn(async move {
            let ping = Frame::Ping.encode();
            let mut every = tokio::time::interval(Duration::from_millis(PING_INTERVAL_MS));
            loop {
                every.tick().await;
                if ping_shared.version.load(Ordering::SeqCst) < 2 {
                    continue;
                }
                if pings.send(ping.clone()).await.is_err() {
                    return;
                }
            }
        });
        let channel = Arc::new(Channel {
            frames,
            shared,
            next_id: AtomicU32::new(random_start_id()),
            tasks: [writer, reader, pinger],
        });
        channel.hello().await?;
        Ok(channel)
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    async fn hello(&self) -> Result<(), RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.shared.lock().hello = Some(tx);
        self.send(Frame::Hello {
            version: PROTOCOL_VERSION,
        })
        .await?;
        match tokio::time::timeout(HELLO_TIMEOUT, rx).await {
            Ok(Ok(version @ MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION)) => {
                self.shared.version.store(version, Ordering::SeqCst);
                Ok(())
            }
            Ok(Ok(other)) => Err(RuntimeError::Protocol(format!("agent speaks protocol version {other}"))),
            Ok(Err(_)) => Err(RuntimeError::ChannelClosed),
            Err(_) => Err(RuntimeError::AgentUnresponsive),
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), RuntimeError> {
        if self.is_closed() {
            return Err(RuntimeError::ChannelClosed);
        }
        self.frames
            .send(frame.encode())
            .await
            .map_err(|_| RuntimeError::ChannelClosed)
    }

    /// Runs `request` and waits for its result, at most `wait`. A request whose
    /// wait ends (deadline, or the caller dropping this future) is cancelled in
    /// the agent, so nothing keeps running for a caller that is gone. Output
    /// goes to `hooks` as it arrives; its cancel token kills the command and
    /// the result says so.
    pub async fn run(&self, request: RunRequest, wait: Duration, hooks: &ExecHooks) -> Result<Finished, RuntimeError> {
        check_fits(&request)?;
        if request.keep.is_some() {
            self.check_keeps()?;
        }
        let id = self.request_id();
        let (done, finished) = oneshot::channel();
        let cap = request.output_cap;
        self.shared.lock().requests.insert(
            id,
            Pending {
                cap,
                hooks: hooks.clone(),
                stdout: Vec::new(),
                stderr: Vec::new(),
                done,
            },
        );
        let mut guard = CancelOnDrop {
            channel: self,
            id,
            armed: true,
        };
        self.send(Frame::Run { id, request }).await?;
        let waited = tokio::time::timeout(wait, async {
            tokio::pin!(finished);
            tokio::select! {
                finished = &mut finished => return finished,
                () = hooks.cancelled() => {}
            }
            // The agent kills the tree and still answers, with `cancelled`.
            self.send(Frame::Cancel { id }).await.ok();
            finished.await
        });
        let outcome = match waited.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(RuntimeError::ChannelClosed),
            Err(_) => return Err(RuntimeError::AgentUnresponsive),
        };
        guard.armed = false;
        outcome
    }
}

impl Channel {
    fn request_id(&self) -> u32 {
        // Id 0 is the connection's own; skip it when the counter wraps.
        match self.next_id.fetch_add(1, Ordering::Relaxed) {
            0 => self.next_id.fetch_add(1, Ordering::Relaxed),
            id => id,
        }
    }

    /// One file operation, answered within `wait`.
    pub async fn file(&self, request: FileRequest, wait: Duration) -> Result<FileReply, RuntimeError> {
        match self.ask(|id| Frame::File { id, request }, wait).await? {
            Answer::File(reply) => Ok(reply),
            Answer::Control(_) => Err(RuntimeError::Protocol("a file request answered as a control".into())),
        }
    }

    /// An agent published by a brig that predates kept executions (a
    /// sandbox made before an upgrade) cannot keep one.
    fn check_keeps(&self) -> Result<(), RuntimeError> {
        if self.shared.version.load(Ordering::SeqCst) >= 2 {
            return Ok(());
        }
        Err(RuntimeError::InvalidRequest(
            "this session's sandbox runs an agent from an earlier brig, which keeps no executions: delete the \
             session and use a new one"
                .into(),
        ))
    }

    /// One request about a kept execution, answered within `wait`.
    pub async fn control(&self, control: Control, wait: Duration) -> Result<ControlReply, RuntimeError> {
        self.check_keeps()?;
        let frame = |id| match control {
            Control::Read(request) => Frame::Read { id, request },
            Control::Stdin { key, data, close } => Frame::Stdin { id, key, data, close },
            Control::Signal { key, signal } => Frame::Signal { id, key, signal },
            Control::Resize { key, size } => Frame::Resize { id, key, size },
        };
        match self.ask(frame, wait).await? {
            Answer::Control(reply) => Ok(reply),
            Answer::File(_) => Err(RuntimeError::Protocol("a control answered as a file request".into())),
        }
    }

    /// Sends the request `frame` makes with a fresh id; its one answer, within `wait`.
    async fn ask(&self, frame: impl FnOnce(u32) -> Frame, wait: Duration) -> Result<Answer, RuntimeError> {
        let id = self.request_id();
        let (done, answer) = oneshot::channel();
        self.shared.lock().answers.insert(id, done);
        let sent = self.send(frame(id)).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(wait, answer).await,
            Err(err) => Ok(Ok(Err(err))),
        };
        self.shared.lock().answers.remove(&id);
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RuntimeError::ChannelClosed),
            Err(_) => Err(RuntimeError::AgentUnresponsive),
        }
    }
}

/// Refuses a request the protocol cannot carry (one frame, 2 MiB, at most 4096
/// list entries), instead of letting it reach the encoder.
pub(crate) fn check_fits(request: &RunRequest) -> Result<(), RuntimeError> {
    let strings = request.argv.iter().map(|a| a.len() + 4).sum::<usize>()
        + request.env.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
        + request.cwd.len();
    let fits = request.argv.len() <= MAX_LIST_LEN
        && request.env.len() <= MAX_LIST_LEN
        && request.stdin.len() <= MAX_STDIN_BYTES
        && strings + request.stdin.len() + 64 <= MAX_FRAME_LEN;
    if fits {
        Ok(())
    } else {
        Err(RuntimeError::InvalidRequest("request too large for one frame".into()))
    }
}

/// Request ids start at a random point per channel, so that a second channel
/// to the same agent (an old API process not yet gone) rarely reuses ids; the
/// agent refuses a duplicate id that is still running.
fn random_start_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() as u32).max(1)
}

/// Forgets a request whose caller stopped waiting, and tells the agent to kill it.
struct CancelOnDrop<'a> {
    channel: &'a Channel,
    id: u32,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.channel.shared.lock().requests.remove(&self.id);
            let _ = self.channel.frames.try_send(Frame::Cancel { id: self.id }.encode());
        }
    }
}

/// Routes every complete frame to its waiter. `Err` is a protocol violation.
fn dispatch_all(decoder: &mut FrameDecoder, shared: &Shared, control: &mpsc::Sender<Vec<u8>>) -> Result<(), String> {
    while let Some(frame) = decoder.next_frame() {
        let frame = match frame {
            // A newer agent's extension: say so and carry on.
            Err(DecodeError::UnknownKind { id, kind }) => {
                let unsupported = Frame::Error {
                    id,
                    code: ErrorCode::UnsupportedFrame,
                    message: format!("unknown frame kind {kind:#04x}"),
                };
                let _ = control.try_send(unsupported.encode());
                continue;
            }
            other => other.map_err(|err| err.to_string())?,
        };
        if matches!(
            frame,
            Frame::Dial { .. } | Frame::Data { .. } | Frame::Credit { .. } | Frame::Shut { .. } | Frame::Close { .. }
        ) {
            shared.tunnels.on_frame(frame)?;
            continue;
        }
        let mut waiters = shared.lock();
        match frame {
            Frame::HelloOk { version, .. } => {
                if let Some(hello) = waiters.hello.take() {
                    let _ = hello.send(version);
                }
            }
            Frame::Output { id, stream, data } => {
                if let Some(pending) = waiters.requests.get_mut(&id) {
                    let buffer = match stream {
                        Stream::Stdout => &mut pending.stdout,
                        Stream::Stderr => &mut pending.stderr,
                    };
                    let kept = append_capped(buffer, &data, pending.cap);
                    pending.hooks.emit(stream, kept);
                }
            }
            Frame::Exit { id, result } => {
                if let Some(pending) = waiters.requests.remove(&id) {
                    let _ = pending.done.send(Ok(Finished {
                        result,
                        stdout: pending.stdout,
                        stderr: pending.stderr,
                    }));
                }
            }
            Frame::Error { id: 0, code, message } => {
                tracing::warn!(?code, %message, "sandbox agent reported a connection error");
            }
            Frame::Error { id, code, message } => {
                if let Some(pending) = waiters.requests.remove(&id) {
                    let _ = pending.done.send(Err(request_error(code, message)));
                } else if let Some(answer) = waiters.answers.remove(&id) {
                    let _ = answer.send(Err(request_error(code, message)));
                }
            }
            Frame::FileDone { id, reply } => waiters.answer(id, Answer::File(reply)),
            Frame::ReadDone { id, reply } => waiters.answer(id, Answer::Control(ControlReply::Read(reply))),
            Frame::Ack { id } => waiters.answer(id, Answer::Control(ControlReply::Done)),
            other @ (Frame::Hello { .. }
            | Frame::Run { .. }
            | Frame::Cancel { .. }
            | Frame::File { .. }
            | Frame::DialReply { .. }
            | Frame::Data { .. }
            | Frame::Credit { .. }
            | Frame::Shut { .. }
            | Frame::Close { .. }
            | Frame::Dial { .. }
            | Frame::Read { .. }
            | Frame::Stdin { .. }
            | Frame::Signal { .. }
            | Frame::Resize { .. }
            | Frame::Ping) => {
                return Err(format!("agent sent a client-side frame (request {})", other.id()));
            }
        }
    }
    Ok(())
}

pub(crate) fn request_error(code: ErrorCode, message: String) -> RuntimeError {
    match code {
        ErrorCode::SpawnFailed => RuntimeError::SpawnFailed(message),
        ErrorCode::InvalidRequest => RuntimeError::InvalidRequest(message),
        ErrorCode::Busy | ErrorCode::DuplicateRequest => RuntimeError::Busy(message),
        ErrorCode::FileNotFound => RuntimeError::FileNotFound(message),
        ErrorCode::FileRefused => RuntimeError::FileRefused(message),
        ErrorCode::FileTooLarge => RuntimeError::FileTooLarge(message),
        ErrorCode::ExecutionNotFound => RuntimeError::ExecutionNotFound,
        ErrorCode::NotRunning => RuntimeError::NotRunning(message),
        ErrorCode::CursorExpired => RuntimeError::CursorExpired(message),
        ErrorCode::MalformedFrame | ErrorCode::UnsupportedFrame | ErrorCode::Other(_) => {
            RuntimeError::Protocol(format!("{code:?}: {message}"))
        }
    }
}
