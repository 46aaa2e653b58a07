//! `brig-agent serve`: PID 1 of a sandbox, answering frames on stdin/stdout.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brig_protocol::{DecodeError, ErrorCode, Frame, FrameDecoder, Stream, MAX_FRAME_LEN, PROTOCOL_VERSION};

use crate::egress::{Egress, FromApi};
use crate::files;
use crate::io_loop::{IoLoop, OutputSink};
use crate::supervisor::Supervisor;

/// Writes whole frames to stdout, one at a time, so concurrent commands never
/// interleave below a frame boundary.
pub struct FrameWriter {
    out: Mutex<io::Stdout>,
}

impl FrameWriter {
    pub fn new() -> Self {
        FrameWriter {
            out: Mutex::new(io::stdout()),
        }
    }

    pub fn send(&self, frame: &Frame) {
        let bytes = encoded(frame);
        let out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = out.lock();
        // A failed write means nobody is attached; the client re-sends what it
        // still waits for after re-attaching, so there is nothing to do here.
        let _ = out.write_all(&bytes).and_then(|()| out.flush());
    }
}

/// `frame`'s bytes; an answer too large for a frame (which bounds on what
/// the agent builds should rule out) becomes an error for its request, never
/// a panic of PID 1.
pub fn encoded(frame: &Frame) -> Vec<u8> {
    frame.try_encode().unwrap_or_else(|too_large| {
        Frame::Error {
            id: frame.id(),
            code: ErrorCode::FileTooLarge,
            message: format!("the answer ({} bytes) does not fit a frame", too_large.0),
        }
        .encode()
    })
}

impl OutputSink for FrameWriter {
    fn output(&self, id: u32, stream: Stream, data: &[u8]) {
        self.send(&Frame::Output {
            id,
            stream,
            data: data.to_vec(),
        });
    }
}

/// Serves until the process is killed. Never returns on its own: stdin EOF
/// (no client attached) only pauses reading.
pub fn serve() -> io::Result<()> {
    let supervisor = Supervisor::start()?;
    let io_loop = IoLoop::start(supervisor.clone())?;
    let writer = Arc::new(FrameWriter::new());
    // Without its port (taken, or no loopback) the sandbox just has no egress.
    let egress = Egress::start(Arc::clone(&writer))
        .map_err(|err| eprintln!("brig-agent: egress proxy not started: {err}"))
        .ok();
    let mut decoder = FrameDecoder::new();
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => {
                // The stdin fifo has no writer right now; a later attach reopens it.
                // Whatever partial frame we held belonged to the gone writer.
                decoder.reset();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame() {
            handle(frame, &supervisor, &io_loop, &writer, egress.as_deref());
        }
    }
}

fn handle(
    frame: Result<Frame, DecodeError>,
    supervisor: &Supervisor,
    io_loop: &IoLoop,
    writer: &Arc<FrameWriter>,
    egress: Option<&Egress>,
) {
    let error = |id, code, message: String| writer.send(&Frame::Error { id, code, message });
    // Without a proxy no tunnel was ever opened: nothing to route.
    let tunnel = |message: FromApi| {
        if let Some(egress) = egress {
            egress.deliver(message);
        }
    };
    match frame {
        Ok(Frame::Hello { version }) => {
            if let Some(egress) = egress {
                egress.deliver(FromApi::Reset);
            }
            writer.send(&Frame::HelloOk {
                version: version.min(PROTOCOL_VERSION),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                max_frame_len: MAX_FRAME_LEN as u32,
            })
        }
        Ok(Frame::DialReply { id, refusal }) => tunnel(FromApi::Reply { id, refusal }),
        Ok(Frame::Data { id, data }) => tunnel(FromApi::Data { id, data }),
        Ok(Frame::Credit { id, bytes }) => tunnel(FromApi::Credit { id, bytes }),
        Ok(Frame::Shut { id }) => tunnel(FromApi::Shut { id }),
        Ok(Frame::Close { id }) => tunnel(FromApi::Close { id }),
        // An older brig-api answering a `Dial` it does not know.
        Ok(Frame::Error {
            id,
            code: ErrorCode::UnsupportedFrame,
            ..
        }) => tunnel(FromApi::Unsupported { id }),
        // Never answer an error with an error.
        Ok(Frame::Error { .. }) => {}
        Ok(Frame::Run { id, request }) => match supervisor.spawn(id, request) {
            Ok(running) => {
                let done_writer = Arc::clone(writer);
                let on_done = Box::new(move |result| done_writer.send(&Frame::Exit { id, result }));
                io_loop.submit(running, Arc::clone(writer) as Arc<dyn OutputSink>, on_done);
            }
            Err(err) => error(id, err.code, err.message),
        },
        Ok(Frame::Cancel { id }) => supervisor.cancel(id),
        // Quick (tmpfs, bounded sizes, O_NONBLOCK): answered inline.
        Ok(Frame::File { id, request }) => match files::handle(files::ROOT, request) {
            Ok(reply) => writer.send(&Frame::FileDone { id, reply }),
            Err((code, message)) => error(id, code, message),
        },
        Ok(other) => error(
            other.id(),
            ErrorCode::UnsupportedFrame,
            "frame not accepted by the agent".into(),
        ),
        Err(DecodeError::UnknownKind { kind, id }) => error(
            id,
            ErrorCode::UnsupportedFrame,
            format!("unknown frame kind {kind:#04x}"),
        ),
        Err(err @ DecodeError::Malformed { id, .. }) => error(id, ErrorCode::MalformedFrame, err.to_string()),
        Err(err @ DecodeError::BadLength { .. }) => error(0, ErrorCode::MalformedFrame, err.to_string()),
    }
}
