//! `brig-agent run [options] -- argv...`: one command under the same supervisor,
//! for use through `docker exec` when no attach channel is available.

use std::io::{self, Read, Write};
use std::time::Duration;

use brig_protocol::{Frame, RunRequest, Stream, MAX_STDIN_BYTES};

use std::sync::{mpsc, Arc};

use crate::io_loop::{IoLoop, OutputSink};
use crate::serve::FrameWriter;
use crate::supervisor::Supervisor;
use crate::sys;

pub const USAGE: &str =
    "usage: brig-agent run [--timeout-ms N] [--output-cap BYTES] [--cwd DIR] [--env KEY=VALUE]... [--stdin] [--frames] [--tag HEX] -- ARGV...\n       brig-agent kill-tag HEX";

/// A tag names one one-shot run so that `kill-tag` can cancel it: hex, so it
/// can never be mistaken for a pid (the agent's own markers).
fn check_tag(tag: &str) -> Result<(), String> {
    if (16..=64).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
        && !tag.bytes().all(|b| b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err("a tag is 16-64 hex digits, not all decimal".into())
    }
}

/// `brig-agent kill-tag TAG`: SIGKILLs every process of the run tagged `TAG`
/// (its supervisor then reports the command as killed).
pub fn kill_tag(args: &[String]) -> Result<i32, String> {
    let [tag] = args else {
        return Err("kill-tag takes one tag".into());
    };
    check_tag(tag)?;
    let marker = format!("{}={tag}.1", crate::supervisor::MARKER_VAR);
    Ok(if crate::leftovers::kill_marked(&marker).killed {
        0
    } else {
        1
    })
}

/// Writes a command's output to our own stdout/stderr, as it comes.
struct PassThrough;

impl OutputSink for PassThrough {
    fn output(&self, _id: u32, stream: Stream, data: &[u8]) {
        // Nothing useful to do if our own stdout is gone; the command still ends
        // under its deadline.
        let _ = match stream {
            Stream::Stdout => io::stdout().lock().write_all(data),
            Stream::Stderr => io::stderr().lock().write_all(data),
        };
    }
}

struct Options {
    request: RunRequest,
    frames: bool,
    tag: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut request = RunRequest {
        cwd: "/workspace".into(),
        timeout_ms: 30_000,
        output_cap: 1024 * 1024,
        keep: None,
        ..RunRequest::default()
    };
    let mut frames = false;
    let mut tag = None;
    let mut read_stdin = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |name: &str| rest.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--timeout-ms" => request.timeout_ms = value(arg)?.parse().map_err(|e| format!("--timeout-ms: {e}"))?,
            "--output-cap" => request.output_cap = value(arg)?.parse().map_err(|e| format!("--output-cap: {e}"))?,
            "--cwd" => request.cwd = value(arg)?,
            "--env" => {
                let value = value(arg)?;
                let (key, value) = value.split_once('=').ok_or("--env takes KEY=VALUE")?;
                request.env.push((key.to_string(), value.to_string()));
            }
            "--frames" => frames = true,
            "--tag" => {
                let value = value(arg)?;
                check_tag(&value)?;
                tag = Some(value);
            }
            "--stdin" => read_stdin = true,
            "--" => {
                request.argv = rest.cloned().collect();
                break;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if request.argv.is_empty() {
        return Err("no command given".into());
    }
    if read_stdin {
        // Everything up to EOF, bounded like a Run frame's stdin.
        let mut stdin = Vec::new();
        io::stdin()
            .lock()
            .take(MAX_STDIN_BYTES as u64 + 1)
            .read_to_end(&mut stdin)
            .map_err(|e| format!("reading stdin: {e}"))?;
        if stdin.len() > MAX_STDIN_BYTES {
            return Err(format!("stdin is limited to {MAX_STDIN_BYTES} bytes"));
        }
        request.stdin = stdin;
    }
    Ok(Options { request, frames, tag })
}

/// Runs the command and returns the process exit code to use: the command's own,
/// 128+signal when killed, 124 when the deadline passed (as timeout(1) does).
/// With `--frames` the output and the result are written as protocol frames.
pub fn run(args: &[String]) -> Result<i32, String> {
    let options = parse(args)?;
    // Not PID 1 here: become the subreaper so the command's orphans come to us.
    // gVisor (2022) refuses it; there orphans go to PID 1, the serving agent,
    // which reaps them, and leftovers are still found and killed by marker.
    if let Err(err) = sys::set_child_subreaper() {
        eprintln!("brig-agent: prctl(PR_SET_CHILD_SUBREAPER): {err}; orphans go to PID 1");
    }
    let supervisor = match &options.tag {
        Some(tag) => Supervisor::start_tagged(tag),
        None => Supervisor::start(),
    }
    .map_err(|e| format!("cannot start: {e}"))?;
    let io_loop = IoLoop::start(supervisor.clone(), Arc::default()).map_err(|e| format!("cannot start: {e}"))?;
    let writer = Arc::new(FrameWriter::new());
    let sink: Arc<dyn OutputSink> = if options.frames {
        writer.clone()
    } else {
        Arc::new(PassThrough)
    };
    let running = match supervisor.spawn(1, options.request) {
        Ok(running) => running,
        Err(err) => {
            if options.frames {
                writer.send(&Frame::Error {
                    id: 1,
                    code: err.code,
                    message: err.message,
                });
            } else {
                eprintln!("brig-agent: {}", err.message);
            }
            return Ok(127);
        }
    };
    let (done, result) = mpsc::channel();
    io_loop.submit(running, None, sink, Box::new(move |result| drop(done.send(result))));
    let result = result.recv().map_err(|_| "the I/O loop stopped".to_string())?;
    if options.frames {
        writer.send(&Frame::Exit {
            id: 1,
            result: result.clone(),
        });
    }
    // Let any orphan the supervisor killed be reaped before we exit.
    std::thread::sleep(Duration::from_millis(5));
    Ok(if result.timed_out {
        124
    } else {
        result.shell_exit_code()
    })
}
