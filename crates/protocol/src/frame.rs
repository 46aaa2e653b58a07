//! The frames and their payloads.

/// One protocol message. `id` is the request id the frame belongs to (0 for
/// connection-level frames such as `Hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → agent: opens (or re-opens, after a re-attach) a conversation.
    Hello { version: u16 },
    /// Agent → client: the answer to `Hello`.
    HelloOk {
        version: u16,
        agent_version: String,
        max_frame_len: u32,
    },
    /// Client → agent: run a command.
    Run { id: u32, request: RunRequest },
    /// Client → agent: kill a running request's process tree. Unknown ids are ignored.
    Cancel { id: u32 },
    /// Agent → client: a chunk of a running command's output.
    Output { id: u32, stream: Stream, data: Vec<u8> },
    /// Agent → client: a command ended; no more frames follow for `id`.
    Exit { id: u32, result: RunResult },
    /// Either direction: a request (or, with id 0, the connection) failed.
    Error { id: u32, code: ErrorCode, message: String },
    /// Client → agent: a file operation under `/workspace`.
    File { id: u32, request: FileRequest },
    /// Agent → client: the answer to `File`.
    FileDone { id: u32, reply: FileReply },
    /// Agent → client: a process in the sandbox asks the egress proxy for a
    /// connection to `host:port` (a name or an address, as asked). `id` names
    /// the tunnel, in the agent's own id space (tunnel frames only).
    Dial { id: u32, host: String, port: u16 },
    /// Client → agent: the answer to `Dial`: `None` when the tunnel is open
    /// (both sides may send [`TUNNEL_WINDOW`](crate::TUNNEL_WINDOW) bytes of
    /// `Data` before any `Credit`), else why it was refused (one line).
    DialReply { id: u32, refusal: Option<String> },
    /// Either direction: bytes of an open tunnel, at most
    /// [`MAX_TUNNEL_CHUNK`](crate::MAX_TUNNEL_CHUNK).
    Data { id: u32, data: Vec<u8> },
    /// Either direction: the receiver of `Data` consumed this many bytes; the
    /// sender may send as many more.
    Credit { id: u32, bytes: u32 },
    /// Either direction: the sender sends no more `Data` on the tunnel (its
    /// side of the connection reached end of file).
    Shut { id: u32 },
    /// Either direction: the tunnel is gone (reset, refused midway, or both
    /// sides shut); no more frames follow for `id`.
    Close { id: u32 },
    /// Client → agent: what a kept execution wrote from the given offsets on,
    /// waiting a bounded time for something new. Answered by `ReadDone`.
    Read { id: u32, request: ReadRequest },
    /// Agent → client: the answer to `Read`.
    ReadDone { id: u32, reply: ReadReply },
    /// Client → agent: bytes for a kept execution's stdin pipe (at most
    /// [`MAX_STDIN_BYTES`](crate::MAX_STDIN_BYTES)), then its end if `close`.
    /// Answered by `Ack` once the command has taken them all.
    Stdin {
        id: u32,
        key: String,
        data: Vec<u8>,
        close: bool,
    },
    /// Client → agent: send `signal` to a kept execution's process group.
    /// Answered by `Ack`.
    Signal { id: u32, key: String, signal: i32 },
    /// Client → agent: a kept execution's terminal has a new size (its
    /// foreground group gets SIGWINCH). Answered by `Ack`.
    Resize { id: u32, key: String, size: TtySize },
    /// Agent → client: a request that returns nothing is done.
    Ack { id: u32 },
    /// Client → agent, every [`PING_INTERVAL_MS`](crate::PING_INTERVAL_MS)
    /// on the attach stream: the client is still there (the engine never
    /// ends the stream for a client that died). Not answered.
    Ping,
}

/// A command whose output the agent keeps, by absolute offset, for readers
/// other than the one that started it (`Read`), and which takes stdin and
/// signals after it started (`Stdin`, `Signal`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keep {
    /// Names the execution for `Read`, `Stdin` and `Signal` (at most
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes).
    pub key: String,
    /// Most bytes kept per stream: the last ones; older ones leave the buffer.
    pub buffer_bytes: u64,
    /// stdin is a pipe fed by `Stdin` frames, not the request's bytes.
    pub stdin_pipe: bool,
    /// Run under a pseudo-terminal of this size: stdin, stdout and stderr
    /// are its slave (output comes as stdout; `Stdin` writes to it), the
    /// command leads a session with the terminal as its controlling one.
    pub tty: Option<TtySize>,
}

/// A terminal's size, in characters (1 to 1000 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// `Read`'s question.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadRequest {
    pub key: String,
    /// Absolute offsets: bytes of each stream the reader already has.
    pub stdout_offset: u64,
    pub stderr_offset: u64,
    /// Most bytes of both streams together in the answer (at most
    /// [`MAX_READ_BYTES`](crate::MAX_READ_BYTES)).
    pub max_bytes: u32,
    /// With nothing new yet and the command running: how long to wait for
    /// output or its end before answering empty.
    pub wait_ms: u32,
}

/// `Read`'s answer: each stream's bytes from the asked offset on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The command's result once it ended and the reader has all its output.
    pub finished: Option<RunResult>,
}

/// A file operation. Paths are relative to `/workspace`, `/`-separated, with no
/// empty, `.` or `..` component; the agent follows no symlink on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRequest {
    Read {
        path: String,
    },
    /// Creates missing parent directories; replaces an existing regular file.
    Write {
        path: String,
        data: Vec<u8>,
    },
    /// `path` empty: `/workspace` itself.
    List {
        path: String,
    },
    /// A regular file, symlink or empty directory.
    Delete {
        path: String,
    },
}

/// What a file operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileReply {
    Data(Vec<u8>),
    /// At most [`MAX_DIR_ENTRIES`](crate::MAX_DIR_ENTRIES) entries, sorted by name; `truncated` if there were more.
    Entries {
        entries: Vec<DirEntry>,
        truncated: bool,
    },
    Done,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Other,
}

impl Frame {
    /// The request id the frame carries.
    pub fn id(&self) -> u32 {
        match self {
            Frame::Hello { .. } | Frame::HelloOk { .. } | Frame::Ping => 0,
            Frame::Run { id, .. }
            | Frame::Cancel { id }
            | Frame::Output { id, .. }
            | Frame::Exit { id, .. }
            | Frame::Error { id, .. }
            | Frame::File { id, .. }
            | Frame::FileDone { id, .. }
            | Frame::Dial { id, .. }
            | Frame::DialReply { id, .. }
            | Frame::Data { id, .. }
            | Frame::Credit { id, .. }
            | Frame::Shut { id }
            | Frame::Close { id }
            | Frame::Read { id, .. }
            | Frame::ReadDone { id, .. }
            | Frame::Stdin { id, .. }
            | Frame::Signal { id, .. }
            | Frame::Resize { id, .. }
            | Frame::Ack { id } => *id,
        }
    }
}

/// What to run and under which limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunRequest {
    /// argv, executed directly (no shell); `argv[0]` is looked up in the agent's PATH.
    pub argv: Vec<String>,
    /// Working directory; must exist in the sandbox.
    pub cwd: String,
    /// Environment additions on top of the agent's minimal environment.
    pub env: Vec<(String, String)>,
    /// Bytes fed to the command's stdin, which is then closed. Empty: stdin is /dev/null.
    pub stdin: Vec<u8>,
    /// Deadline, from spawn; 0 is refused.
    pub timeout_ms: u64,
    /// Bytes kept per stream; output past it is read and dropped.
    pub output_cap: u64,
    /// Keep the output for `Read` and take `Stdin`/`Signal`: a durable execution.
    pub keep: Option<Keep>,
}

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// How a command's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal (SIGKILL on deadline, cancel or OOM).
    Signaled(i32),
}

/// The outcome of a `Run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub termination: Termination,
    /// The deadline passed and the agent killed the command.
    pub timed_out: bool,
    /// A `Cancel` arrived and the agent killed the command.
    pub cancelled: bool,
    /// The kernel's OOM killer killed a process of the command's sandbox
    /// while it ran, and the command died of SIGKILL.
    pub oom_killed: bool,
    /// Bytes the command wrote, including those dropped past the cap.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// From spawn to exit of the command's leader process.
    pub duration_us: u64,
}

impl RunResult {
    /// The result a shell would print: the exit code, or 128 + signal.
    pub fn shell_exit_code(&self) -> i32 {
        match self.termination {
            Termination::Exited(code) => code,
            Termination::Signaled(signal) => 128 + signal,
        }
    }
}

/// Why a request (or the connection) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame could not be decoded.
    MalformedFrame,
    /// The frame kind is unknown to the receiver.
    UnsupportedFrame,
    /// The request was decoded but is invalid (empty argv, zero timeout, ...).
    InvalidRequest,
    /// The command could not be started (not found, not executable, bad cwd).
    SpawnFailed,
    /// Another request with the same id is still running.
    DuplicateRequest,
    /// Too many requests are running in this sandbox.
    Busy,
    /// The file or directory does not exist.
    FileNotFound,
    /// The path exists but the operation does not apply (a symlink on the
    /// way, not a regular file, a non-empty directory, ...).
    FileRefused,
    /// The file is larger than a frame carries, or the sandbox is out of space.
    FileTooLarge,
    /// No kept execution has this key (never started, or forgotten).
    ExecutionNotFound,
    /// The kept execution has ended (or its stdin was closed).
    NotRunning,
    /// The offset asked for has left the execution's buffer.
    CursorExpired,
    /// A code this build does not know (from a newer peer).
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame => 1,
            ErrorCode::UnsupportedFrame => 2,
            ErrorCode::InvalidRequest => 3,
            ErrorCode::SpawnFailed => 4,
            ErrorCode::DuplicateRequest => 5,
            ErrorCode::Busy => 6,
            ErrorCode::FileNotFound => 7,
            ErrorCode::FileRefused => 8,
            ErrorCode::FileTooLarge => 9,
            ErrorCode::ExecutionNotFound => 10,
            ErrorCode::NotRunning => 11,
            ErrorCode::CursorExpired => 12,
            ErrorCode::Other(code) => code,
        }
    }

    pub fn from_u16(code: u16) -> Self {
        match code {
            1 => ErrorCode::MalformedFrame,
            2 => ErrorCode::UnsupportedFrame,
            3 => ErrorCode::InvalidRequest,
            4 => ErrorCode::SpawnFailed,
            5 => ErrorCode::DuplicateRequest,
            6 => ErrorCode::Busy,
            7 => ErrorCode::FileNotFound,
            8 => ErrorCode::FileRefused,
            9 => ErrorCode::FileTooLarge,
            10 => ErrorCode::ExecutionNotFound,
            11 => ErrorCode::NotRunning,
            12 => ErrorCode::CursorExpired,
            other => ErrorCode::Other(other),
        }
    }
}
