//! Byte encoding of frames: one frame's payload, encoded and strictly decoded.
//! The incremental reassembly of frames from a byte stream is [`crate::decoder`].

use crate::frame::{
    DirEntry, EntryKind, ErrorCode, FileReply, FileRequest, Frame, Keep, ReadReply, ReadRequest, RunRequest, RunResult,
    Stream, Termination, TtySize,
};
use crate::{
    MAX_DIAL_HOST, MAX_DIR_ENTRIES, MAX_FILE_BYTES, MAX_FRAME_LEN, MAX_KEY_LEN, MAX_LIST_LEN, MAX_READ_BYTES,
    MAX_READ_WAIT_MS, MAX_STDIN_BYTES, MAX_TUNNEL_CHUNK,
};

const KIND_HELLO: u8 = 0x01;
const KIND_RUN: u8 = 0x02;
const KIND_CANCEL: u8 = 0x03;
const KIND_FILE: u8 = 0x04;
const KIND_FILE_DONE: u8 = 0x84;

const FILE_READ: u8 = 1;
const FILE_WRITE: u8 = 2;
const FILE_LIST: u8 = 3;
const FILE_DELETE: u8 = 4;

const REPLY_DATA: u8 = 1;
const REPLY_ENTRIES: u8 = 2;
const REPLY_DONE: u8 = 3;
const KIND_HELLO_OK: u8 = 0x81;
const KIND_OUTPUT: u8 = 0x82;
const KIND_EXIT: u8 = 0x83;
const KIND_ERROR: u8 = 0xEE;
const KIND_DIAL: u8 = 0x85;
const KIND_DIAL_REPLY: u8 = 0x05;
const KIND_DATA: u8 = 0x10;
const KIND_CREDIT: u8 = 0x11;
const KIND_SHUT: u8 = 0x12;
const KIND_CLOSE: u8 = 0x13;
const KIND_READ: u8 = 0x06;
const KIND_STDIN: u8 = 0x07;
const KIND_SIGNAL: u8 = 0x08;
const KIND_READ_DONE: u8 = 0x86;
const KIND_ACK: u8 = 0x87;
const KIND_PING: u8 = 0x09;
const KIND_RESIZE: u8 = 0x0a;

const TERM_EXITED: u8 = 0;
const TERM_SIGNALED: u8 = 1;

const FLAG_TIMED_OUT: u8 = 1;
const FLAG_CANCELLED: u8 = 1 << 1;
const FLAG_STDOUT_TRUNCATED: u8 = 1 << 2;
const FLAG_STDERR_TRUNCATED: u8 = 1 << 3;
const FLAG_OOM_KILLED: u8 = 1 << 4;

/// Why bytes did not decode into a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix exceeds [`MAX_FRAME_LEN`] (or is shorter than a header).
    /// The decoder skips the announced bytes and resumes after them.
    BadLength { len: usize },
    /// A kind this build does not know; the frame was skipped whole.
    UnknownKind { kind: u8, id: u32 },
    /// The payload of a known kind is malformed; the frame was skipped whole.
    Malformed { kind: u8, id: u32, reason: &'static str },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadLength { len } => write!(f, "frame length {len} out of bounds"),
            DecodeError::UnknownKind { kind, id } => {
                write!(f, "unknown frame kind {kind:#04x} (request {id})")
            }
            DecodeError::Malformed { kind, id, reason } => {
                write!(f, "malformed frame of kind {kind:#04x} (request {id}): {reason}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A frame whose encoding (this many bytes) exceeds [`MAX_FRAME_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge(pub usize);

impl Frame {
    /// Appends the frame's wire bytes to `out`.
    ///
    /// Panics only on a caller bug: a frame whose encoding exceeds [`MAX_FRAME_LEN`]
    /// (callers bound stdin and output chunks before building frames). The
    /// agent, which must never panic, uses [`Frame::try_encode`].
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Err(FrameTooLarge(len)) = self.try_encode_into(out) {
            panic!("frame of {len} bytes exceeds MAX_FRAME_LEN");
        }
    }

    /// The frame's wire bytes, or its encoded length if that exceeds
    /// [`MAX_FRAME_LEN`].
    pub fn try_encode(&self) -> Result<Vec<u8>, FrameTooLarge> {
        let mut out = Vec::new();
        self.try_encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the frame's wire bytes to `out`; leaves `out` as it was if
    /// they would exceed [`MAX_FRAME_LEN`].
    pub fn try_encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameTooLarge> {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let (kind, id) = (self.kind(), self.id());
        out.push(kind);
        out.extend_from_slice(&id.to_be_bytes());
        let mut w = Writer(out);
        match self {
            Frame::Hello { version } => w.u16(*version),
            Frame::HelloOk {
                version,
                agent_version,
                max_frame_len,
            } => {
                w.u16(*version);
                w.str(agent_version);
                w.u32(*max_frame_len);
            }
            Frame::Run { request, .. } => {
                w.u32(request.argv.len() as u32);
                for arg in &request.argv {
                    w.str(arg);
                }
                w.str(&request.cwd);
                w.u32(request.env.len() as u32);
                for (key, value) in &request.env {
                    w.str(key);
                    w.str(value);
                }
                w.bytes(&request.stdin);
                w.u64(request.timeout_ms);
                w.u64(request.output_cap);
                // Absent, not a zero flag: version 1 agents decode it.
                match &request.keep {
                    None => {}
                    Some(keep) => {
                        w.u8(1);
                        w.str(&keep.key);
                        w.u64(keep.buffer_bytes);
                        w.u8(u8::from(keep.stdin_pipe));
                        match keep.tty {
                            None => w.u8(0),
                            Some(size) => {
                                w.u8(1);
                                w.u16(size.rows);
                                w.u16(size.cols);
                            }
                        }
                    }
                }
            }
            Frame::Cancel { .. } => {}
            Frame::Output { stream, data, .. } => {
                w.u8(stream.to_byte());
                w.bytes(data);
            }
            Frame::Exit { result, .. } => encode_result(&mut w, result),
            Frame::Error { code, message, .. } => {
                w.u16(code.to_u16());
                w.str(message);
            }
            Frame::File { request, .. } => match request {
                FileRequest::Read { path } => {
                    w.u8(FILE_READ);
                    w.str(path);
                }
                FileRequest::Write { path, data } => {
                    w.u8(FILE_WRITE);
                    w.str(path);
                    w.bytes(data);
                }
                FileRequest::List { path } => {
                    w.u8(FILE_LIST);
                    w.str(path);
                }
                FileRequest::Delete { path } => {
                    w.u8(FILE_DELETE);
                    w.str(path);
                }
            },
            Frame::FileDone { reply, .. } => match reply {
                FileReply::Data(data) => {
                    w.u8(REPLY_DATA);
                    w.bytes(data);
                }
                FileReply::Entries { entries, truncated } => {
                    w.u8(REPLY_ENTRIES);
                    w.u8(u8::from(*truncated));
                    w.u32(entries.len() as u32);
                    for entry in entries {
                        w.str(&entry.name);
                        w.u8(match entry.kind {
                            EntryKind::File => 1,
                            EntryKind::Directory => 2,
                            EntryKind::Symlink => 3,
                            EntryKind::Other => 4,
                        });
                        w.u64(entry.size);
                    }
                }
                FileReply::Done => w.u8(REPLY_DONE),
            },
            Frame::Dial { host, port, .. } => {
                w.str(host);
                w.u16(*port);
            }
            Frame::DialReply { refusal, .. } => match refusal {
                None => w.u8(0),
                Some(reason) => {
                    w.u8(1);
                    w.str(reason);
                }
            },
            Frame::Data { data, .. } => w.bytes(data),
            Frame::Credit { bytes, .. } => w.u32(*bytes),
            Frame::Shut { .. } | Frame::Close { .. } | Frame::Ack { .. } | Frame::Ping => {}
            Frame::Read { request, .. } => {
                w.str(&request.key);
                w.u64(request.stdout_offset);
                w.u64(request.stderr_offset);
                w.u32(request.max_bytes);
                w.u32(request.wait_ms);
            }
            Frame::ReadDone { reply, .. } => {
                w.bytes(&reply.stdout);
                w.bytes(&reply.stderr);
                match &reply.finished {
                    None => w.u8(0),
                    Some(result) => {
                        w.u8(1);
                        encode_result(&mut w, result);
                    }
                }
            }
            Frame::Stdin { key, data, close, .. } => {
                w.str(key);
                w.bytes(data);
                w.u8(u8::from(*close));
            }
            Frame::Signal { key, signal, .. } => {
                w.str(key);
                w.i32(*signal);
            }
            Frame::Resize { key, size, .. } => {
                w.str(key);
                w.u16(size.rows);
                w.u16(size.cols);
            }
        }
        let len = out.len() - start - 4;
        if len > MAX_FRAME_LEN {
            out.truncate(start);
            return Err(FrameTooLarge(len));
        }
        out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// The frame's wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => KIND_HELLO,
            Frame::HelloOk { .. } => KIND_HELLO_OK,
            Frame::Run { .. } => KIND_RUN,
            Frame::Cancel { .. } => KIND_CANCEL,
            Frame::Output { .. } => KIND_OUTPUT,
            Frame::Exit { .. } => KIND_EXIT,
            Frame::Error { .. } => KIND_ERROR,
            Frame::File { .. } => KIND_FILE,
            Frame::FileDone { .. } => KIND_FILE_DONE,
            Frame::Dial { .. } => KIND_DIAL,
            Frame::DialReply { .. } => KIND_DIAL_REPLY,
            Frame::Data { .. } => KIND_DATA,
            Frame::Credit { .. } => KIND_CREDIT,
            Frame::Shut { .. } => KIND_SHUT,
            Frame::Close { .. } => KIND_CLOSE,
            Frame::Read { .. } => KIND_READ,
            Frame::ReadDone { .. } => KIND_READ_DONE,
            Frame::Stdin { .. } => KIND_STDIN,
            Frame::Signal { .. } => KIND_SIGNAL,
            Frame::Ack { .. } => KIND_ACK,
            Frame::Ping => KIND_PING,
            Frame::Resize { .. } => KIND_RESIZE,
        }
    }
}

fn encode_result(w: &mut Writer<'_>, result: &RunResult) {
    match result.termination {
        Termination::Exited(code) => {
            w.u8(TERM_EXITED);
            w.i32(code);
        }
        Termination::Signaled(signal) => {
            w.u8(TERM_SIGNALED);
            w.i32(signal);
        }
    }
    let mut flags = 0;
    for (set, bit) in [
        (result.timed_out, FLAG_TIMED_OUT),
        (result.cancelled, FLAG_CANCELLED),
        (result.stdout_truncated, FLAG_STDOUT_TRUNCATED),
        (result.stderr_truncated, FLAG_STDERR_TRUNCATED),
        (result.oom_killed, FLAG_OOM_KILLED),
    ] {
        if set {
            flags |= bit;
        }
    }
    w.u8(flags);
    w.u64(result.stdout_bytes);
    w.u64(result.stderr_bytes);
    w.u64(result.duration_us);
}

fn decode_result(r: &mut Reader<'_>) -> Result<RunResult, &'static str> {
    let termination = match r.u8()? {
        TERM_EXITED => Termination::Exited(r.i32()?),
        TERM_SIGNALED => Termination::Signaled(r.i32()?),
        _ => return Err("unknown termination"),
    };
    let flags = r.u8()?;
    if flags & !0x1f != 0 {
        return Err("unknown result flags");
    }
    Ok(RunResult {
        termination,
        timed_out: flags & FLAG_TIMED_OUT != 0,
        cancelled: flags & FLAG_CANCELLED != 0,
        oom_killed: flags & FLAG_OOM_KILLED != 0,
        stdout_truncated: flags & FLAG_STDOUT_TRUNCATED != 0,
        stderr_truncated: flags & FLAG_STDERR_TRUNCATED != 0,
        stdout_bytes: r.u64()?,
        stderr_bytes: r.u64()?,
        duration_us: r.u64()?,
    })
}

pub(crate) fn decode_payload(kind: u8, id: u32, payload: &[u8]) -> Result<Frame, DecodeError> {
    match decode_fields(kind, id, payload) {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(DecodeError::UnknownKind { kind, id }),
        Err(reason) => Err(DecodeError::Malformed { kind, id, reason }),
    }
}

/// The frame of a known `kind`, `None` for an unknown kind, or why the payload
/// is malformed.
fn decode_fields(kind: u8, id: u32, payload: &[u8]) -> Result<Option<Frame>, &'static str> {
    let mut r = Reader(payload);
    let frame = match kind {
        KIND_HELLO => Frame::Hello { version: r.u16()? },
        KIND_HELLO_OK => Frame::HelloOk {
            version: r.u16()?,
            agent_version: r.str()?,
            max_frame_len: r.u32()?,
        },
        KIND_RUN => {
            let argv = r.list(|r| r.str())?;
            let cwd = r.str()?;
            let env = r.list(|r| Ok((r.str()?, r.str()?)))?;
            let stdin = r.bytes()?;
            if stdin.len() > MAX_STDIN_BYTES {
                return Err("stdin larger than MAX_STDIN_BYTES");
            }
            let request = RunRequest {
                argv,
                cwd,
                env,
                stdin,
                timeout_ms: r.u64()?,
                output_cap: r.u64()?,
                keep: match r.0.first().map(|_| r.u8()).transpose()? {
                    None | Some(0) => None,
                    Some(1) => Some(Keep {
                        key: r.key()?,
                        buffer_bytes: r.u64()?,
                        stdin_pipe: r.flag()?,
                        tty: match r.u8()? {
                            0 => None,
                            1 => Some(r.tty_size()?),
                            _ => return Err("bad tty flag"),
                        },
                    }),
                    Some(_) => return Err("bad keep flag"),
                },
            };
            Frame::Run { id, request }
        }
        KIND_CANCEL => Frame::Cancel { id },
        KIND_OUTPUT => {
            let stream = Stream::from_byte(r.u8()?).ok_or("unknown stream")?;
            Frame::Output {
                id,
                stream,
                data: r.bytes()?,
            }
        }
        KIND_EXIT => Frame::Exit {
            id,
            result: decode_result(&mut r)?,
        },
        KIND_ERROR => Frame::Error {
            id,
            code: ErrorCode::from_u16(r.u16()?),
            message: r.str()?,
        },
        KIND_FILE => {
            let op = r.u8()?;
            let path = r.str()?;
            let request = match op {
                FILE_READ => FileRequest::Read { path },
                FILE_WRITE => {
                    let data = r.bytes()?;
                    if data.len() > MAX_FILE_BYTES {
                        return Err("file larger than MAX_FILE_BYTES");
                    }
                    FileRequest::Write { path, data }
                }
                FILE_LIST => FileRequest::List { path },
                FILE_DELETE => FileRequest::Delete { path },
                _ => return Err("unknown file operation"),
            };
            Frame::File { id, request }
        }
        KIND_FILE_DONE => {
            let reply = match r.u8()? {
                REPLY_DATA => FileReply::Data(r.bytes()?),
                REPLY_ENTRIES => {
                    let truncated = match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err("bad truncated flag"),
                    };
                    let entries = r.list(|r| {
                        Ok(DirEntry {
                            name: r.str()?,
                            kind: match r.u8()? {
                                1 => EntryKind::File,
                                2 => EntryKind::Directory,
                                3 => EntryKind::Symlink,
                                4 => EntryKind::Other,
                                _ => return Err("unknown entry kind"),
                            },
                            size: r.u64()?,
                        })
                    })?;
                    if entries.len() > MAX_DIR_ENTRIES {
                        return Err("too many directory entries");
                    }
                    FileReply::Entries { entries, truncated }
                }
                REPLY_DONE => FileReply::Done,
                _ => return Err("unknown file reply"),
            };
            Frame::FileDone { id, reply }
        }
        KIND_DIAL => {
            let host = r.str()?;
            if host.is_empty() || host.len() > MAX_DIAL_HOST {
                return Err("dial host empty or longer than MAX_DIAL_HOST");
            }
            Frame::Dial {
                id,
                host,
                port: r.u16()?,
            }
        }
        KIND_DIAL_REPLY => {
            let refusal = match r.u8()? {
                0 => None,
                1 => Some(r.str()?),
                _ => return Err("bad dial reply flag"),
            };
            Frame::DialReply { id, refusal }
        }
        KIND_DATA => {
            let data = r.bytes()?;
            if data.is_empty() || data.len() > MAX_TUNNEL_CHUNK {
                return Err("tunnel data empty or larger than MAX_TUNNEL_CHUNK");
            }
            Frame::Data { id, data }
        }
        KIND_CREDIT => Frame::Credit { id, bytes: r.u32()? },
        KIND_SHUT => Frame::Shut { id },
        KIND_CLOSE => Frame::Close { id },
        KIND_ACK => Frame::Ack { id },
        KIND_PING => Frame::Ping,
        KIND_RESIZE => Frame::Resize {
            id,
            key: r.key()?,
            size: r.tty_size()?,
        },
        KIND_READ => {
            let request = ReadRequest {
                key: r.key()?,
                stdout_offset: r.u64()?,
                stderr_offset: r.u64()?,
                max_bytes: r.u32()?,
                wait_ms: r.u32()?,
            };
            if request.max_bytes as usize > MAX_READ_BYTES || request.wait_ms > MAX_READ_WAIT_MS {
                return Err("read larger than MAX_READ_BYTES or longer than MAX_READ_WAIT_MS");
            }
            Frame::Read { id, request }
        }
        KIND_READ_DONE => {
            let (stdout, stderr) = (r.bytes()?, r.bytes()?);
            if stdout.len() + stderr.len() > MAX_READ_BYTES {
                return Err("read answer larger than MAX_READ_BYTES");
            }
            let finished = match r.u8()? {
                0 => None,
                1 => Some(decode_result(&mut r)?),
                _ => return Err("bad finished flag"),
            };
            Frame::ReadDone {
                id,
                reply: ReadReply {
                    stdout,
                    stderr,
                    finished,
                },
            }
        }
        KIND_STDIN => {
            let key = r.key()?;
            let data = r.bytes()?;
            if data.len() > MAX_STDIN_BYTES {
                return Err("stdin larger than MAX_STDIN_BYTES");
            }
            Frame::Stdin {
                id,
                key,
                data,
                close: r.flag()?,
            }
        }
        KIND_SIGNAL => Frame::Signal {
            id,
            key: r.key()?,
            signal: r.i32()?,
        },
        _ => return Ok(None),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Some(frame))
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("payload too short")?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, &'static str> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err("length past end of payload");
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head.to_vec())
    }
    fn str(&mut self) -> Result<String, &'static str> {
        String::from_utf8(self.bytes()?).map_err(|_| "string is not UTF-8")
    }
    fn tty_size(&mut self) -> Result<TtySize, &'static str> {
        let size = TtySize {
            rows: self.u16()?,
            cols: self.u16()?,
        };
        if !(1..=1000).contains(&size.rows) || !(1..=1000).contains(&size.cols) {
            return Err("terminal size out of 1..=1000");
        }
        Ok(size)
    }
    fn flag(&mut self) -> Result<bool, &'static str> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("bad flag"),
        }
    }
    fn key(&mut self) -> Result<String, &'static str> {
        let key = self.str()?;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err("key empty or longer than MAX_KEY_LEN");
        }
        Ok(key)
    }
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T, &'static str>) -> Result<Vec<T>, &'static str> {
        let count = self.u32()?;
        if count as usize > MAX_LIST_LEN {
            return Err("list too long");
        }
        (0..count).map(|_| item(self)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameDecoder, HEADER_LEN};

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Hello { version: 1 },
            Frame::HelloOk {
                version: 1,
                agent_version: "0.1.0".into(),
                max_frame_len: MAX_FRAME_LEN as u32,
            },
            Frame::Run {
                id: 7,
                request: RunRequest {
                    argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                    cwd: "/workspace".into(),
                    env: vec![("A".into(), "b".into())],
                    stdin: b"in\0put".to_vec(),
                    timeout_ms: 1500,
                    output_cap: 1024,
                    keep: None,
                },
            },
            Frame::Cancel { id: 9 },
            Frame::Output {
                id: 7,
                stream: Stream::Stderr,
                data: vec![0, 159, 146, 150, 255],
            },
            Frame::Exit {
                id: 7,
                result: RunResult {
                    termination: Termination::Signaled(9),
                    timed_out: true,
                    cancelled: false,
                    oom_killed: false,
                    stdout_bytes: 10,
                    stderr_bytes: u64::MAX,
                    stdout_truncated: false,
                    stderr_truncated: true,
                    duration_us: 42,
                },
            },
            Frame::Error {
                id: 3,
                code: ErrorCode::Other(999),
                message: "nope".into(),
            },
            Frame::File {
                id: 4,
                request: FileRequest::Write {
                    path: "dir/f".into(),
                    data: vec![0, 1, 255],
                },
            },
            Frame::File {
                id: 5,
                request: FileRequest::Read { path: "f".into() },
            },
            Frame::File {
                id: 6,
                request: FileRequest::List { path: String::new() },
            },
            Frame::File {
                id: 7,
                request: FileRequest::Delete { path: "f".into() },
            },
            Frame::FileDone {
                id: 5,
                reply: FileReply::Data(b"content".to_vec()),
            },
            Frame::FileDone {
                id: 6,
                reply: FileReply::Entries {
                    entries: vec![
                        DirEntry {
                            name: "a".into(),
                            kind: EntryKind::File,
                            size: 3,
                        },
                        DirEntry {
                            name: "b".into(),
                            kind: EntryKind::Symlink,
                            size: 0,
                        },
                    ],
                    truncated: true,
                },
            },
            Frame::FileDone {
                id: 7,
                reply: FileReply::Done,
            },
            Frame::Error {
                id: 8,
                code: ErrorCode::FileNotFound,
                message: "gone".into(),
            },
            Frame::Dial {
                id: 1,
                host: "pypi.org".into(),
                port: 443,
            },
            Frame::DialReply { id: 1, refusal: None },
            Frame::DialReply {
                id: 2,
                refusal: Some("not in the allow-list".into()),
            },
            Frame::Data {
                id: 1,
                data: vec![0, 1, 2],
            },
            Frame::Credit { id: 1, bytes: 4096 },
            Frame::Shut { id: 1 },
            Frame::Close { id: 1 },
            Frame::Run {
                id: 8,
                request: RunRequest {
                    argv: vec!["cat".into()],
                    cwd: "/workspace".into(),
                    timeout_ms: 1000,
                    output_cap: 10,
                    keep: Some(Keep {
                        key: "e1".into(),
                        buffer_bytes: 1 << 20,
                        stdin_pipe: true,
                        tty: Some(TtySize { rows: 24, cols: 80 }),
                    }),
                    ..RunRequest::default()
                },
            },
            Frame::Read {
                id: 9,
                request: ReadRequest {
                    key: "e1".into(),
                    stdout_offset: 5,
                    stderr_offset: 1 << 40,
                    max_bytes: 4096,
                    wait_ms: 100,
                },
            },
            Frame::ReadDone {
                id: 9,
                reply: ReadReply {
                    stdout: b"out".to_vec(),
                    stderr: Vec::new(),
                    finished: None,
                },
            },
            Frame::ReadDone {
                id: 9,
                reply: ReadReply {
                    stdout: Vec::new(),
                    stderr: b"err".to_vec(),
                    finished: Some(RunResult {
                        termination: Termination::Signaled(9),
                        timed_out: false,
                        cancelled: false,
                        oom_killed: true,
                        stdout_bytes: 3,
                        stderr_bytes: 3,
                        stdout_truncated: false,
                        stderr_truncated: false,
                        duration_us: 7,
                    }),
                },
            },
            Frame::Stdin {
                id: 10,
                key: "e1".into(),
                data: b"line\n".to_vec(),
                close: true,
            },
            Frame::Signal {
                id: 11,
                key: "e1".into(),
                signal: 2,
            },
            Frame::Ack { id: 11 },
            Frame::Ping,
            Frame::Resize {
                id: 12,
                key: "e1".into(),
                size: TtySize { rows: 50, cols: 132 },
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_when_fed_one_byte_at_a_time() {
        let frames = sample_frames();
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut decoder = FrameDecoder::new();
        let mut decoded = Vec::new();
        for byte in bytes {
            decoder.push(&[byte]);
            while let Some(frame) = decoder.next_frame() {
                decoded.push(frame.unwrap());
            }
        }
        assert_eq!(decoded, frames);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn oversized_length_is_skipped_and_decoding_resumes() {
        let mut bytes = ((MAX_FRAME_LEN + 10) as u32).to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0xAB, MAX_FRAME_LEN + 10));
        bytes.extend(Frame::Cancel { id: 5 }.encode());
        let mut decoder = FrameDecoder::new();
        let mut results = Vec::new();
        for chunk in bytes.chunks(4096) {
            decoder.push(chunk);
            while let Some(result) = decoder.next_frame() {
                results.push(result);
            }
            assert!(decoder.buffered() <= 8192, "decoder buffered an oversized frame");
        }
        assert_eq!(
            results,
            vec![
                Err(DecodeError::BadLength {
                    len: MAX_FRAME_LEN + 10
                }),
                Ok(Frame::Cancel { id: 5 })
            ]
        );
    }

    #[test]
    fn unknown_kind_and_trailing_bytes_are_errors_that_do_not_desynchronise() {
        let mut bytes = vec![0, 0, 0, 7, 0x55, 0, 0, 0, 1, 0xde, 0xad];
        let mut cancel_with_junk = Frame::Cancel { id: 2 }.encode();
        cancel_with_junk[3] += 1;
        cancel_with_junk.push(0);
        bytes.extend(cancel_with_junk);
        bytes.extend(Frame::Hello { version: 1 }.encode());
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        assert_eq!(
            decoder.next_frame(),
            Some(Err(DecodeError::UnknownKind { kind: 0x55, id: 1 }))
        );
        assert_eq!(
            decoder.next_frame(),
            Some(Err(DecodeError::Malformed {
                kind: KIND_CANCEL,
                id: 2,
                reason: "trailing bytes"
            }))
        );
        assert_eq!(decoder.next_frame(), Some(Ok(Frame::Hello { version: 1 })));
        assert_eq!(decoder.next_frame(), None);
    }

    #[test]
    fn tunnel_frames_past_their_bounds_are_malformed() {
        let mut bytes = Frame::Data {
            id: 3,
            data: vec![7; MAX_TUNNEL_CHUNK + 1],
        }
        .encode();
        bytes.extend(
            Frame::Data {
                id: 4,
                data: Vec::new(),
            }
            .encode(),
        );
        bytes.extend(
            Frame::Dial {
                id: 5,
                host: "a".repeat(MAX_DIAL_HOST + 1),
                port: 80,
            }
            .encode(),
        );
        bytes.extend(
            Frame::Dial {
                id: 6,
                host: String::new(),
                port: 80,
            }
            .encode(),
        );
        let mut reply = Frame::DialReply { id: 7, refusal: None }.encode();
        reply[HEADER_LEN] = 2;
        bytes.extend(reply);
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        for (kind, id) in [
            (KIND_DATA, 3),
            (KIND_DATA, 4),
            (KIND_DIAL, 5),
            (KIND_DIAL, 6),
            (KIND_DIAL_REPLY, 7),
        ] {
            assert!(
                matches!(decoder.next_frame(), Some(Err(DecodeError::Malformed { kind: k, id: i, .. })) if k == kind && i == id),
                "frame {id} should be malformed"
            );
        }
        assert_eq!(decoder.next_frame(), None);
    }

    #[test]
    fn truncated_payloads_and_bad_utf8_are_rejected() {
        let full = sample_frames()[2].encode();
        for cut in HEADER_LEN..full.len() {
            let mut bytes = full[..cut].to_vec();
            bytes[..4].copy_from_slice(&((cut - 4) as u32).to_be_bytes());
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes);
            assert!(
                matches!(decoder.next_frame(), Some(Err(DecodeError::Malformed { .. }))),
                "cut at {cut}"
            );
        }
        let mut bad = Frame::Error {
            id: 1,
            code: ErrorCode::Busy,
            message: "ab".into(),
        }
        .encode();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        let mut decoder = FrameDecoder::new();
        decoder.push(&bad);
        assert!(matches!(
            decoder.next_frame(),
            Some(Err(DecodeError::Malformed {
                reason: "string is not UTF-8",
                ..
            }))
        ));
    }

    #[test]
    fn hostile_list_count_is_refused_without_allocating() {
        let mut payload = vec![0x02];
        payload.extend(1u32.to_be_bytes());
        payload.extend(u32::MAX.to_be_bytes());
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend(payload);
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        assert!(matches!(
            decoder.next_frame(),
            Some(Err(DecodeError::Malformed {
                reason: "list too long",
                ..
            }))
        ));
    }
}

/// Property tests: the decoder is the agent's and the API's first contact with
/// untrusted bytes. Bounded by proptest's default case count, so they run in CI.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::{FrameDecoder, HEADER_LEN};

    fn run_request() -> impl Strategy<Value = RunRequest> {
        (
            prop::collection::vec(".{0,20}", 0..8),
            ".{0,30}",
            prop::collection::vec((".{0,10}", ".{0,10}"), 0..4),
            prop::collection::vec(any::<u8>(), 0..256),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(argv, cwd, env, stdin, timeout_ms, output_cap)| RunRequest {
                argv,
                cwd,
                env,
                stdin,
                timeout_ms,
                output_cap,
                keep: None,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_chunks_never_panic_or_pile_up(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            chunk in 1usize..300,
        ) {
            let mut decoder = FrameDecoder::new();
            for piece in bytes.chunks(chunk) {
                decoder.push(piece);
                while let Some(_frame) = decoder.next_frame() {}
                prop_assert!(decoder.buffered() <= MAX_FRAME_LEN + chunk);
            }
        }

        #[test]
        fn valid_frames_survive_any_chunking_and_garbage_does_not_fake_them(
            request in run_request(),
            id in any::<u32>(),
            chunk in 1usize..64,
            flipped in any::<prop::sample::Index>(),
        ) {
            let frame = Frame::Run { id, request };
            let bytes = frame.encode();
            let mut decoder = FrameDecoder::new();
            let mut decoded = Vec::new();
            for piece in bytes.chunks(chunk) {
                decoder.push(piece);
                while let Some(result) = decoder.next_frame() {
                    decoded.push(result);
                }
            }
            prop_assert_eq!(decoded, vec![Ok(frame.clone())]);

            // One flipped payload byte: an error, or a different but valid frame,
            // never a panic.
            let mut corrupted = bytes.clone();
            let at = HEADER_LEN + flipped.index(corrupted.len() - HEADER_LEN);
            corrupted[at] ^= 0xff;
            let mut decoder = FrameDecoder::new();
            decoder.push(&corrupted);
            let _ = decoder.next_frame();
        }
    }
}
