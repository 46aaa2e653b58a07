//! One conversation with the agent: the attach stream, or one relay
//! connection. Each has its own writer and its own request ids; the
//! commands it started die when it ends (nobody is left to hear of them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use brig_protocol::{DecodeError, ErrorCode, Frame, Stream, MAX_FRAME_LEN, PROTOCOL_VERSION};

use crate::egress::{Egress, FromApi};
use crate::files;
use crate::io_loop::{IoLoop, OutputSink};
use crate::kept::Kept;
use crate::serve::FrameWriter;
use crate::supervisor::Supervisor;

/// What every conversation shares.
pub struct Agent {
    pub supervisor: Supervisor,
    pub io_loop: Arc<IoLoop>,
    pub kept: Arc<Kept>,
    /// The supervisor's request ids.
    next_id: AtomicU32,
}

impl Agent {
    pub fn new(supervisor: Supervisor, io_loop: Arc<IoLoop>, kept: Arc<Kept>) -> Self {
        Agent {
            supervisor,
            io_loop,
            kept,
            next_id: AtomicU32::new(1),
        }
    }
}

/// One client.
pub struct Connection {
    pub writer: Arc<FrameWriter>,
    /// The egress proxy's tunnels travel on the attach stream only.
    pub egress: Option<Arc<Egress>>,
    /// Its running commands: its request id → the supervisor's.
    runs: Arc<Mutex<HashMap<u32, u32>>>,
    /// Its client greeted with version 2 or later: it pings.
    pings: AtomicBool,
}

impl Connection {
    pub fn new(writer: Arc<FrameWriter>, egress: Option<Arc<Egress>>) -> Self {
        Connection {
            writer,
            egress,
            runs: Arc::default(),
            pings: AtomicBool::new(false),
        }
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<u32, u32>> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether it runs commands and its client promised to ping.
    pub fn has_runs_and_pings(&self) -> bool {
        self.pings.load(Ordering::SeqCst) && !self.runs().is_empty()
    }

    /// The client went away: kill what it started.
    pub fn ended(&self, agent: &Agent) {
        for own in self.runs().values() {
            agent.supervisor.cancel(*own);
        }
    }
}

/// A command's output, as `Output` frames of its client's request id.
struct ClientSink {
    writer: Arc<FrameWriter>,
    id: u32,
}

impl OutputSink for ClientSink {
    fn output(&self, _own: u32, stream: Stream, data: &[u8]) {
        self.writer.send(&Frame::Output {
            id: self.id,
            stream,
            data: data.to_vec(),
        });
    }
}

/// Answers one frame of `connection`.
pub fn handle(frame: Result<Frame, DecodeError>, agent: &Agent, connection: &Connection) {
    let Agent {
        supervisor,
        io_loop,
        kept,
        ..
    } = agent;
    let (writer, egress) = (&connection.writer, connection.egress.as_deref());
    let error = |id, code, message: String| writer.send(&Frame::Error { id, code, message });
    // Without a proxy no tunnel was ever opened: nothing to route.
    let tunnel = |message: FromApi| {
        if let Some(egress) = egress {
            egress.deliver(message);
        }
    };
    match frame {
        Ok(Frame::Hello { version }) => {
            // An older client (version 1) never pings: not held to silence.
            connection.pings.store(version >= 2, Ordering::SeqCst);
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
        // Heard: that is all a ping is for.
        Ok(Frame::Ping) => {}
        Ok(Frame::Run { id, request }) => {
            if connection.runs().contains_key(&id) {
                return error(id, ErrorCode::DuplicateRequest, "request id already running".into());
            }
            // The supervisor's ids are the agent's own: connections pick theirs freely.
            let own = agent.next_id.fetch_add(1, Ordering::Relaxed);
            let keep = request.keep.clone();
            let exec = match keep.as_ref().map(|keep| kept.register(own, keep)).transpose() {
                Ok(exec) => exec,
                Err((code, message)) => return error(id, code, message),
            };
            match supervisor.spawn(own, request) {
                Ok(mut running) => {
                    if let Some(exec) = &exec {
                        exec.set_pty(running.pty.take());
                    }
                    connection.runs().insert(id, own);
                    let (done_writer, runs) = (Arc::clone(writer), Arc::clone(&connection.runs));
                    let on_done = Box::new(move |result| {
                        runs.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        done_writer.send(&Frame::Exit { id, result });
                    });
                    let job = keep.map(|keep| keep.key).zip(exec);
                    let sink = Arc::new(ClientSink {
                        writer: Arc::clone(writer),
                        id,
                    });
                    io_loop.submit(running, job, sink, on_done);
                }
                Err(err) => {
                    if let Some(keep) = keep {
                        kept.unregister(&keep.key);
                    }
                    error(id, err.code, err.message)
                }
            }
        }
        Ok(Frame::Read { id, request }) => match kept.get(&request.key) {
            Ok(exec) => {
                let reply_writer = Arc::clone(writer);
                let waiting = exec.read(
                    request,
                    Box::new(move |answer| {
                        reply_writer.send(&match answer {
                            Ok(reply) => Frame::ReadDone { id, reply },
                            Err((code, message)) => Frame::Error { id, code, message },
                        })
                    }),
                );
                // A reader left waiting: the loop times it out.
                if waiting.is_some() {
                    io_loop.wake();
                }
            }
            Err((code, message)) => error(id, code, message),
        },
        Ok(Frame::Stdin { id, key, data, close }) => match kept.get(&key) {
            Ok(exec) => {
                let ack_writer = Arc::clone(writer);
                let ack = Box::new(move |answer: Result<(), crate::kept::Failure>| {
                    ack_writer.send(&match answer {
                        Ok(()) => Frame::Ack { id },
                        Err((code, message)) => Frame::Error { id, code, message },
                    })
                });
                match exec.queue_stdin(data, close, ack) {
                    Ok(()) => io_loop.wake(),
                    Err(((code, message), ack)) => ack(Err((code, message))),
                }
            }
            Err((code, message)) => error(id, code, message),
        },
        Ok(Frame::Signal { id, key, signal }) => match kept.get(&key) {
            Ok(exec) if !(1..=31).contains(&signal) => {
                drop(exec);
                error(id, ErrorCode::InvalidRequest, format!("no signal {signal}"))
            }
            Ok(exec) if !exec.is_finished() && supervisor.signal(exec.id, signal) => writer.send(&Frame::Ack { id }),
            Ok(_) => error(id, ErrorCode::NotRunning, "the execution has ended".into()),
            Err((code, message)) => error(id, code, message),
        },
        Ok(Frame::Resize { id, key, size }) => match kept.get(&key).and_then(|exec| {
            if exec.is_finished() {
                return Err((ErrorCode::NotRunning, "the execution has ended".into()));
            }
            exec.resize(size)
        }) {
            Ok(()) => writer.send(&Frame::Ack { id }),
            Err((code, message)) => error(id, code, message),
        },
        Ok(Frame::Cancel { id }) => {
            if let Some(&own) = connection.runs().get(&id) {
                supervisor.cancel(own);
            }
        }
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
