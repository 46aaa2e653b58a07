//! One thread that pumps the pipes of every running command with poll(2):
//! forwards output under the cap, drops the rest, feeds stdin, and finishes a
//! command once its leader has ended, its leftovers are killed and its pipes are
//! drained (or the drain grace has passed: a descendant we could not attribute
//! may hold them open). A kept execution's output also goes, whole, into its
//! rings ([`kept`](crate::kept)), whose waiting readers the loop times out, and
//! its stdin comes from the queue its `Stdin` frames fill.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brig_protocol::{RunResult, Stream, MAX_OUTPUT_CHUNK};

use crate::kept::{Exec, Kept};
use crate::supervisor::{Running, Supervisor};
use crate::sys::{self, PollFd};

/// How long pipes are still read after a command's leftovers were killed.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// Receives command output as it is produced.
pub trait OutputSink: Send + Sync {
    fn output(&self, id: u32, stream: Stream, data: &[u8]);
}

/// Called once with a command's result.
pub type OnDone = Box<dyn FnOnce(RunResult) + Send>;

/// A kept execution's key and state.
pub type KeptJob = (String, Arc<Exec>);

struct Job {
    running: Running,
    kept: Option<KeptJob>,
    sink: Arc<dyn OutputSink>,
    on_done: OnDone,
    out: u64,
    err: u64,
    stdin_written: usize,
    drain_until: Option<Instant>,
}

/// Handle to the I/O thread.
pub struct IoLoop {
    incoming: Mutex<Vec<Job>>,
    wake: OwnedFd,
    kept: Arc<Kept>,
}

impl IoLoop {
    pub fn start(supervisor: Supervisor, kept: Arc<Kept>) -> io::Result<Arc<IoLoop>> {
        let io_loop = Arc::new(IoLoop {
            incoming: Mutex::new(Vec::new()),
            wake: sys::eventfd()?,
            kept,
        });
        let handle = Arc::clone(&io_loop);
        std::thread::Builder::new()
            .name("io".into())
            .spawn(move || handle.run_forever(&supervisor))?;
        Ok(io_loop)
    }

    /// Has the loop look again at what it waits for: queued stdin, a reader's deadline.
    pub fn wake(&self) {
        sys::eventfd_signal(&self.wake);
    }

    /// Hands a started command to the loop.
    pub fn submit(&self, running: Running, kept: Option<KeptJob>, sink: Arc<dyn OutputSink>, on_done: OnDone) {
        for fd in [
            running.stdout.as_ref().map(|p| p.as_raw_fd()),
            running.stderr.as_ref().map(|p| p.as_raw_fd()),
            running.stdin.as_ref().map(|p| p.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            // Should it fail, a read still only happens after poll said readable.
            let _ = sys::set_nonblocking(fd);
        }
        let job = Job {
            running,
            kept,
            sink,
            on_done,
            out: 0,
            err: 0,
            stdin_written: 0,
            drain_until: None,
        };
        self.incoming.lock().unwrap_or_else(|p| p.into_inner()).push(job);
        sys::eventfd_signal(&self.wake);
    }

    fn run_forever(&self, supervisor: &Supervisor) {
        let mut jobs: Vec<Job> = Vec::new();
        let mut fds: Vec<PollFd> = Vec::new();
        let mut buf = vec![0u8; MAX_OUTPUT_CHUNK];
        loop {
            let now = Instant::now();
            let timeout_ms = jobs
                .iter()
                .filter_map(|job| job.drain_until)
                .chain(self.kept.expire(now))
                .min()
                .map_or(-1, |until| until.saturating_duration_since(now).as_millis() as i32 + 1);
            fds.clear();
            fds.push(PollFd::readable(self.wake.as_raw_fd()));
            for job in &jobs {
                fds.extend(job.poll_fds());
            }
            if sys::poll(&mut fds, timeout_ms).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if fds[0].ready() {
                sys::eventfd_clear(&self.wake);
                jobs.append(&mut self.incoming.lock().unwrap_or_else(|p| p.into_inner()));
            }
            for (job, ready) in jobs.iter_mut().zip(fds[1..].chunks(4)) {
                job.step(ready, &mut buf, supervisor);
            }
            let now = Instant::now();
            let mut index = 0;
            while index < jobs.len() {
                if jobs[index].is_done(now) {
                    let job = jobs.swap_remove(index);
                    let result = supervisor.finish(&job.running, job.out, job.err);
                    if let Some((key, exec)) = &job.kept {
                        self.kept.finished(key, exec, result.clone());
                    }
                    (job.on_done)(result);
                } else {
                    index += 1;
                }
            }
        }
    }
}

impl Job {
    /// stdout, stderr, stdin, wake: always four entries, unused ones ignored by poll.
    fn poll_fds(&self) -> [PollFd; 4] {
        let r = &self.running;
        [
            r.stdout
                .as_ref()
                .map_or(PollFd::unused(), |p| PollFd::readable(p.as_raw_fd())),
            r.stderr
                .as_ref()
                .map_or(PollFd::unused(), |p| PollFd::readable(p.as_raw_fd())),
            match (&r.stdin, self.stdin_pipe()) {
                // A kept execution's pipe waits for what its client sends.
                (Some(_), Some(exec)) if !exec.stdin_pending() => PollFd::unused(),
                (Some(p), _) => PollFd::writable(p.as_raw_fd()),
                (None, _) => PollFd::unused(),
            },
            if self.drain_until.is_none() {
                PollFd::readable(r.wake_fd())
            } else {
                PollFd::unused()
            },
        ]
    }

    /// The kept execution whose stdin its client feeds.
    fn stdin_pipe(&self) -> Option<&Exec> {
        self.kept
            .as_ref()
            .map(|(_, exec)| &**exec)
            .filter(|exec| exec.stdin_pipe)
    }

    fn step(&mut self, ready: &[PollFd], buf: &mut [u8], supervisor: &Supervisor) {
        let out = Out {
            id: self.running.id,
            cap: self.running.output_cap,
            sink: &*self.sink,
            kept: self.kept.as_ref().map(|(_, exec)| &**exec),
        };
        if ready[0].ready() {
            out.pump(&mut self.running.stdout, Stream::Stdout, &mut self.out, buf);
        }
        if ready[1].ready() {
            out.pump(&mut self.running.stderr, Stream::Stderr, &mut self.err, buf);
        }
        if ready[2].ready() {
            match (
                &mut self.running.stdin,
                self.kept.as_ref().map(|(_, exec)| exec).filter(|e| e.stdin_pipe),
            ) {
                (Some(pipe), Some(exec)) => {
                    if !exec.feed_stdin(pipe) {
                        self.running.stdin = None;
                    }
                }
                (pipe, _) => feed_stdin(pipe, &self.running.stdin_bytes, &mut self.stdin_written),
            }
        }
        if ready[3].ready() && supervisor.leader_ended(&self.running) {
            self.running.stdin = None;
            if let Some((_, exec)) = &self.kept {
                exec.stdin_gone();
            }
            self.drain_until = Some(Instant::now() + DRAIN_GRACE);
        }
    }

    fn is_done(&self, now: Instant) -> bool {
        let pipes_closed = self.running.stdout.is_none() && self.running.stderr.is_none();
        self.drain_until.is_some_and(|until| pipes_closed || now >= until)
    }
}

/// Where one command's output goes.
struct Out<'a> {
    id: u32,
    cap: u64,
    sink: &'a dyn OutputSink,
    kept: Option<&'a Exec>,
}

impl Out<'_> {
    /// Reads what is available from one pipe; forwards the part under the cap
    /// and drops the rest (a kept execution keeps it all, in its ring). Closes
    /// the pipe on EOF or error.
    fn pump<R: Read>(&self, pipe: &mut Option<R>, stream: Stream, total: &mut u64, buf: &mut [u8]) {
        let Some(reader) = pipe.as_mut() else { return };
        // Bounded, so one flooding command cannot starve the others.
        for _ in 0..16 {
            match reader.read(buf) {
                Ok(0) => {
                    *pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(*total).min(n as u64) as usize;
                    if room > 0 {
                        self.sink.output(self.id, stream, &buf[..room]);
                    }
                    if let Some(exec) = self.kept {
                        exec.append(stream, &buf[..n]);
                    }
                    *total += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    *pipe = None;
                    return;
                }
            }
        }
    }
}

fn feed_stdin(pipe: &mut Option<File>, bytes: &[u8], written: &mut usize) {
    let Some(writer) = pipe.as_mut() else { return };
    while *written < bytes.len() {
        match writer.write(&bytes[*written..]) {
            Ok(n) => *written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // EPIPE: the command closed its stdin; the rest is dropped.
            Err(_) => break,
        }
    }
    *pipe = None;
}
