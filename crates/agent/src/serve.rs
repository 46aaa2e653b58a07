//! `brig-agent serve`: PID 1 of a sandbox, answering frames on stdin/stdout
//! (the engine's attach stream) and on relayed connections: `brig-agent
//! relay`, started through an engine exec as [`RELAY_UID`] by a brig-api
//! replica that does not own the attach stream, connects to PID 1's abstract
//! socket. The socket takes that uid only, which no process of the sandbox
//! can take (commands run as 1000, without capabilities, no-new-privileges).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brig_protocol::{ErrorCode, Frame, FrameDecoder, Stream, CLIENT_SILENCE_MS, RELAY_SOCKET, RELAY_UID};

use crate::connection::{handle, Agent, Connection};
use crate::egress::Egress;
use crate::io_loop::{IoLoop, OutputSink};
use crate::kept::Kept;
use crate::supervisor::Supervisor;
use crate::sys;

/// Relayed connections served at once (each costs a thread, which counts
/// against the sandbox's pids limit).
const MAX_RELAYS: usize = 8;

/// How long a write to a relay may block before the relay is dropped: one
/// stalled relay must not hold up the I/O loop, which serves every command.
const RELAY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes whole frames, one at a time, so concurrent commands never
/// interleave below a frame boundary.
pub struct FrameWriter {
    out: Mutex<Box<dyn Write + Send>>,
}

impl FrameWriter {
    /// To stdout.
    pub fn new() -> Self {
        Self::to(Box::new(io::stdout()))
    }

    pub fn to(out: Box<dyn Write + Send>) -> Self {
        FrameWriter { out: Mutex::new(out) }
    }

    pub fn send(&self, frame: &Frame) {
        let bytes = encoded(frame);
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A failed write means nobody is attached (the attach stream: its
        // client re-attaches) or the relay is gone (it is shut down).
        let _ = out.write_all(&bytes).and_then(|()| out.flush());
    }
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

/// A relay's socket as a frame sink: a failed (or timed out) write shuts the
/// connection down, so that its reader ends and its commands are killed.
struct RelayOut(UnixStream);

impl Write for RelayOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).inspect_err(|_| {
            let _ = self.0.shutdown(Shutdown::Both);
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
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

/// Serves until the process is killed. Never returns on its own: stdin EOF
/// (no client attached) only pauses reading, after killing every command
/// still running: their client is gone, and none outlives it.
pub fn serve() -> io::Result<()> {
    let supervisor = Supervisor::start()?;
    let kept = Arc::new(Kept::default());
    let io_loop = IoLoop::start(supervisor.clone(), Arc::clone(&kept))?;
    let agent = Arc::new(Agent::new(supervisor, io_loop, kept));
    let writer = Arc::new(FrameWriter::new());
    // Without its port (taken, or no loopback) the sandbox just has no egress.
    let egress = Egress::start(Arc::clone(&writer))
        .map_err(|err| eprintln!("brig-agent: egress proxy not started: {err}"))
        .ok();
    let attached_stream = Arc::new(Connection::new(writer, egress));
    // The engine keeps the stream open for a client that died: its pings
    // stopping is how the agent learns it is gone.
    let heard = Arc::new(Mutex::new(Instant::now()));
    watch_silence(Arc::clone(&agent), Arc::clone(&attached_stream), Arc::clone(&heard))?;
    // Without it, only the attach stream's owner can reach kept executions.
    if let Err(err) = serve_relays(Arc::clone(&agent)) {
        eprintln!("brig-agent: relay socket not served: {err}");
    }
    let mut decoder = FrameDecoder::new();
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut attached = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => {
                // The stdin fifo has no writer right now; a later attach reopens it.
                // Whatever partial frame we held belonged to the gone writer.
                decoder.reset();
                if std::mem::take(&mut attached) {
                    attached_stream.ended(&agent);
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Ok(n) => {
                attached = true;
                *heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                n
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame() {
            handle(frame, &agent, &attached_stream);
        }
    }
}

/// Kills what the attach stream's client started once it has been silent
/// for [`CLIENT_SILENCE_MS`] (it pings every [`PING_INTERVAL_MS`](brig_protocol::PING_INTERVAL_MS)).
fn watch_silence(agent: Arc<Agent>, connection: Arc<Connection>, heard: Arc<Mutex<Instant>>) -> io::Result<()> {
    let silence = Duration::from_millis(CLIENT_SILENCE_MS);
    std::thread::Builder::new().name("silence".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let quiet = heard.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        if quiet > silence && connection.has_runs_and_pings() {
            connection.ended(&agent);
        }
    })?;
    Ok(())
}

/// Accepts relayed connections from [`RELAY_UID`] only, each served on a
/// thread of its own until it ends.
fn serve_relays(agent: Arc<Agent>) -> io::Result<()> {
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(RELAY_SOCKET)?)?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("relays".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            // Anyone in the sandbox can connect; only the relay's uid is heard.
            if sys::peer_uid(&stream).ok() != Some(RELAY_UID) {
                continue;
            }
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_RELAYS {
                active.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let active_after_refusal = Arc::clone(&active);
            let (agent, active) = (Arc::clone(&agent), Arc::clone(&active));
            let served = std::thread::Builder::new().name("relay".into()).spawn(move || {
                if let Err(err) = serve_relay(&agent, stream) {
                    eprintln!("brig-agent: relay: {err}");
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
            if served.is_err() {
                // The thread never ran: its slot is free again.
                active_after_refusal.fetch_sub(1, Ordering::SeqCst);
                eprintln!("brig-agent: no thread for a relay");
            }
        }
    })?;
    Ok(())
}

fn serve_relay(agent: &Agent, stream: UnixStream) -> io::Result<()> {
    stream.set_write_timeout(Some(RELAY_WRITE_TIMEOUT))?;
    // Its client pings every 2 s: a relay silent for longer is dead.
    stream.set_read_timeout(Some(Duration::from_millis(CLIENT_SILENCE_MS)))?;
    let writer = Arc::new(FrameWriter::to(Box::new(RelayOut(stream.try_clone()?))));
    let connection = Connection::new(writer, None);
    let mut decoder = FrameDecoder::new();
    let mut reader = &stream;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => break Err(err),
        };
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame() {
            handle(frame, agent, &connection);
        }
    };
    connection.ended(agent);
    let _ = stream.shutdown(Shutdown::Both);
    ended
}

/// `brig-agent relay`: joins its stdin and stdout to PID 1's relay socket
/// until either side ends. Started by brig-api through an engine exec as
/// [`RELAY_UID`].
pub fn relay() -> io::Result<u8> {
    let stream = UnixStream::connect_addr(&SocketAddr::from_abstract_name(RELAY_SOCKET)?)?;
    let mut to_agent = stream.try_clone()?;
    std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_agent);
        // brig-api went away: so does the conversation, and what it started.
        std::process::exit(0);
    })?;
    let (mut from_agent, mut stdout) = (&stream, io::stdout().lock());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from_agent.read(&mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => stdout.write_all(&buf[..n]).and_then(|()| stdout.flush())?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
