//! brig-agent `serve` over real pipes, as a child of the test (not PID 1, so the
//! idle sweep is off and only the commands' own processes are ever signalled).
//! Covers the protocol edges a sandbox test cannot reach: malformed, oversized
//! and unknown frames, invalid and duplicate requests, cancellation.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use brig_protocol::{
    ErrorCode, Frame, FrameDecoder, Keep, ReadRequest, RunRequest, RunResult, Stream, Termination, TtySize,
    MAX_FRAME_LEN, PROTOCOL_VERSION,
};

struct Agent {
    child: Child,
    stdin: ChildStdin,
    frames: mpsc::Receiver<Frame>,
}

impl Agent {
    fn start() -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_brig-agent"))
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start brig-agent");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || {
            let mut decoder = FrameDecoder::new();
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame() {
                    if tx.send(frame.expect("agent sent a malformed frame")).is_err() {
                        return;
                    }
                }
            }
        });
        Agent { child, stdin, frames }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    fn send(&mut self, frame: Frame) {
        self.send_raw(&frame.encode());
    }

    fn next(&self) -> Frame {
        self.frames
            .recv_timeout(Duration::from_secs(10))
            .expect("no frame from the agent within 10 s")
    }

    fn run(&mut self, id: u32, argv: &[&str], timeout_ms: u64) {
        self.send(Frame::Run {
            id,
            request: RunRequest {
                argv: argv.iter().map(|a| a.to_string()).collect(),
                cwd: "/".into(),
                timeout_ms,
                output_cap: 1024,
                keep: None,
                ..RunRequest::default()
            },
        });
    }

    /// Collects output frames of `id` until its Exit.
    fn result_of(&self, id: u32) -> (Vec<u8>, RunResult) {
        let mut stdout = Vec::new();
        loop {
            match self.next() {
                Frame::Output {
                    id: got,
                    stream: Stream::Stdout,
                    data,
                } if got == id => stdout.extend(data),
                Frame::Exit { id: got, result } if got == id => return (stdout, result),
                Frame::Output { .. } | Frame::Exit { .. } => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    fn assert_alive(&mut self) {
        self.send(Frame::Hello { version: 1 });
        assert!(matches!(self.next(), Frame::HelloOk { version: 1, .. }));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hello_is_answered_with_the_protocol_version() {
    let mut agent = Agent::start();
    agent.send(Frame::Hello { version: 7 });
    match agent.next() {
        Frame::HelloOk {
            version, max_frame_len, ..
        } => {
            assert_eq!(
                version, PROTOCOL_VERSION,
                "agent must answer with the version it speaks"
            );
            assert_eq!(max_frame_len as usize, MAX_FRAME_LEN);
        }
        other => panic!("{other:?}"),
    }
    // A client of version 1 (an earlier brig) is answered in its version,
    // and its plain runs, which carry no keep byte, still run.
    agent.send(Frame::Hello { version: 1 });
    assert!(matches!(agent.next(), Frame::HelloOk { version: 1, .. }));
    let mut v1_run = Frame::Run {
        id: 3,
        request: RunRequest {
            argv: vec!["true".into()],
            cwd: "/".into(),
            timeout_ms: 5_000,
            output_cap: 16,
            ..RunRequest::default()
        },
    }
    .encode();
    // Header, argv (count, "true"), cwd "/", env count, stdin, timeout, cap.
    let version_1_len = 9 + (4 + 4 + 4) + (4 + 1) + 4 + 4 + 8 + 8;
    assert_eq!(
        v1_run.len(),
        version_1_len,
        "a plain Run is encoded as version 1 had it"
    );
    agent.send_raw(&std::mem::take(&mut v1_run));
    assert!(matches!(agent.next(), Frame::Exit { id: 3, .. }));
}

#[test]
fn a_command_streams_output_then_exits() {
    let mut agent = Agent::start();
    agent.run(1, &["sh", "-c", "echo hello; exit 3"], 5000);
    let (stdout, result) = agent.result_of(1);
    assert_eq!(stdout, b"hello\n");
    assert_eq!(result.termination, Termination::Exited(3));
    assert!(!result.timed_out && !result.cancelled && !result.stdout_truncated);
}

#[test]
fn garbage_oversized_and_unknown_frames_are_answered_with_errors_and_do_not_wedge_the_agent() {
    let mut agent = Agent::start();
    // A length past the maximum: reported, its bytes skipped.
    let oversized = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    agent.send_raw(&oversized);
    agent.send_raw(&vec![0x5a; MAX_FRAME_LEN + 1]);
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 0,
            code: ErrorCode::MalformedFrame,
            ..
        }
    ));
    agent.assert_alive();
    // An unknown kind: refused by id, so newer clients degrade gracefully.
    agent.send_raw(&[0, 0, 0, 5, 0x42, 0, 0, 0, 9]);
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 9,
            code: ErrorCode::UnsupportedFrame,
            ..
        }
    ));
    // A known kind with a broken payload.
    agent.send_raw(&[0, 0, 0, 7, 0x02, 0, 0, 0, 4, 0xff, 0xff]);
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 4,
            code: ErrorCode::MalformedFrame,
            ..
        }
    ));
    // A frame only the agent may send.
    agent.send(Frame::Exit {
        id: 5,
        result: RunResult {
            termination: Termination::Exited(0),
            timed_out: false,
            cancelled: false,
            oom_killed: false,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            duration_us: 0,
        },
    });
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 5,
            code: ErrorCode::UnsupportedFrame,
            ..
        }
    ));
    agent.assert_alive();
}

#[test]
fn invalid_requests_are_refused_by_id() {
    let mut agent = Agent::start();
    agent.run(1, &[], 1000);
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 1,
            code: ErrorCode::InvalidRequest,
            ..
        }
    ));
    agent.run(2, &["true"], 0);
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 2,
            code: ErrorCode::InvalidRequest,
            ..
        }
    ));
    agent.run(3, &["/definitely/not/here"], 1000);
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 3,
            code: ErrorCode::SpawnFailed,
            ..
        }
    ));
    agent.assert_alive();
}

#[test]
fn a_missing_working_directory_is_named_not_blamed_on_the_program() {
    let mut agent = Agent::start();
    agent.send(Frame::Run {
        id: 1,
        request: RunRequest {
            argv: vec!["ls".into()],
            cwd: "/no/such/working/dir".into(),
            timeout_ms: 1000,
            output_cap: 1024,
            keep: None,
            ..RunRequest::default()
        },
    });
    match agent.next() {
        Frame::Error {
            id: 1,
            code: ErrorCode::SpawnFailed,
            message,
        } => assert_eq!(message, "working directory /no/such/working/dir does not exist"),
        other => panic!("{other:?}"),
    }
    agent.assert_alive();
}

#[test]
fn a_duplicate_id_is_refused_and_cancel_kills_the_running_one() {
    let mut agent = Agent::start();
    agent.run(1, &["sleep", "30"], 60_000);
    agent.run(1, &["true"], 1000);
    assert!(matches!(
        agent.next(),
        Frame::Error {
            id: 1,
            code: ErrorCode::DuplicateRequest,
            ..
        }
    ));
    agent.send(Frame::Cancel { id: 1 });
    let (_, result) = agent.result_of(1);
    assert!(result.cancelled);
    assert!(!result.timed_out);
    assert_eq!(result.termination, Termination::Signaled(9));
    // Cancelling an unknown or finished request is a no-op.
    agent.send(Frame::Cancel { id: 1 });
    agent.send(Frame::Cancel { id: 77 });
    agent.assert_alive();
}

#[test]
fn a_deadline_kills_the_whole_process_group() {
    let mut agent = Agent::start();
    agent.run(4, &["sh", "-c", "sleep 30 & sleep 30; echo never"], 300);
    let (stdout, result) = agent.result_of(4);
    assert!(result.timed_out);
    assert!(stdout.is_empty());
    assert!(result.duration_us < 5_000_000);
}

/// What a command starts with (the agent spawns with posix_spawn, not std's
/// fork: issue 17), seen by programs that read their own `/proc/self` (a
/// shell would show its own doings): its own process group, no signal
/// blocked and none ignored but glibc's internal two, no descriptor of the
/// agent's, exactly the agent's environment, the working directory asked
/// for; a missing program is named.
#[test]
fn a_command_starts_in_its_own_group_with_default_signals_no_agent_descriptor_and_a_clean_environment() {
    let mut agent = Agent::start();
    let mut id = 0;
    let mut run = |argv: &[&str]| {
        id += 1;
        agent.send(Frame::Run {
            id,
            request: RunRequest {
                argv: argv.iter().map(|a| a.to_string()).collect(),
                cwd: "/tmp".into(),
                timeout_ms: 5000,
                output_cap: 4096,
                keep: None,
                ..RunRequest::default()
            },
        });
        let (stdout, result) = agent.result_of(id);
        assert_eq!(result.termination, Termination::Exited(0), "{argv:?}");
        String::from_utf8(stdout).unwrap()
    };

    let stat = run(&["cat", "/proc/self/stat"]);
    let fields: Vec<&str> = stat.split(' ').collect();
    assert_eq!(fields[4], fields[0], "process group = pid: {stat}");
    assert_eq!(
        run(&["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]),
        // Only glibc's internal signals 32 and 33, which posix_spawn leaves ignored.
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000180000000\n"
    );
    let environ = run(&["cat", "/proc/self/environ"]);
    let mut environ: Vec<&str> = environ.split('\0').filter(|v| !v.is_empty()).collect();
    environ.sort();
    assert_eq!(environ.len(), 3, "{environ:?}");
    assert!(environ[0].starts_with("BRIG_CMD="), "{environ:?}");
    assert_eq!(
        environ[1..],
        [
            "HOME=/workspace",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
    assert_eq!(run(&["readlink", "/proc/self/cwd"]), "/tmp\n");
    // A script without `#!` runs with /bin/sh, as execvp runs it.
    let script = std::env::temp_dir().join(format!("no-shebang-{}", std::process::id()));
    std::fs::write(&script, "echo from a script \"$1\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ran = run(&[script.to_str().unwrap(), "arg"]);
    std::fs::remove_file(&script).unwrap();
    assert_eq!(ran, "from a script arg\n");
    // 0-2, 3 (the directory ls reads), and whatever the test runner left
    // open across exec for the agent itself (a jobserver's pipe); none of
    // the agent's own.
    let mut seen: Vec<u32> = run(&["ls", "/proc/self/fd"])
        .lines()
        .map(|fd| fd.parse().unwrap())
        .collect();
    seen.sort();
    let mut expected: Vec<u32> = vec![0, 1, 2, 3];
    expected.extend(inherited_descriptors().into_iter().filter(|fd| *fd > 3));
    expected.sort();
    expected.dedup();
    assert_eq!(seen, expected);

    agent.send(Frame::Run {
        id: 99,
        request: RunRequest {
            argv: vec!["no-such-program".into()],
            cwd: "/".into(),
            timeout_ms: 1000,
            output_cap: 1024,
            keep: None,
            ..RunRequest::default()
        },
    });
    match agent.next() {
        Frame::Error {
            id: 99,
            code: ErrorCode::SpawnFailed,
            message,
        } => assert!(
            message.starts_with("no-such-program: No such file or directory"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    agent.assert_alive();
}

/// This process's descriptors above 2 that an exec keeps (no `FD_CLOEXEC`),
/// which the agent, as its child, inherits.
fn inherited_descriptors() -> Vec<u32> {
    const O_CLOEXEC: u32 = 0o2000000;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|fd| *fd > 2)
        .filter(|fd| {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
            info.lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
                .is_some_and(|flags| flags & O_CLOEXEC == 0)
        })
        .collect()
}

#[test]
fn a_one_shot_run_takes_environment_additions_and_refuses_bad_ones() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_brig-agent"))
            .arg("run")
            .args(["--cwd", "/"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--env",
        "FOO=a=b",
        "--env",
        "EMPTY=",
        "--",
        "sh",
        "-c",
        "echo \"$FOO/$EMPTY/${HOME}\"",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a=b///workspace\n", "{out:?}");
    for bad in [&["--env", "NOEQUALS", "--", "true"][..], &["--env", "=x", "--", "true"]] {
        let out = run(bad);
        assert!(!out.status.success(), "{bad:?} ran: {out:?}");
    }
}

/// The next frame of request `id` other than its output, keeping the frames
/// of other requests in `stash` for later.
fn answer_of(agent: &Agent, stash: &mut Vec<Frame>, id: u32) -> Frame {
    if let Some(at) = stash
        .iter()
        .position(|f| f.id() == id && !matches!(f, Frame::Output { .. }))
    {
        return stash.remove(at);
    }
    loop {
        match agent.next() {
            Frame::Output { .. } => {}
            frame if frame.id() == id => return frame,
            other => stash.push(other),
        }
    }
}

fn kept_run(agent: &mut Agent, id: u32, key: &str, argv: &[&str]) {
    agent.send(Frame::Run {
        id,
        request: RunRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            cwd: "/".into(),
            timeout_ms: 30_000,
            output_cap: 4,
            keep: Some(Keep {
                key: key.into(),
                buffer_bytes: 1 << 20,
                stdin_pipe: true,
                tty: None,
            }),
            ..RunRequest::default()
        },
    });
}

fn read_frame(id: u32, key: &str, stdout_offset: u64, wait_ms: u32) -> Frame {
    Frame::Read {
        id,
        request: ReadRequest {
            key: key.into(),
            stdout_offset,
            stderr_offset: 0,
            max_bytes: 1 << 20,
            wait_ms,
        },
    }
}

#[test]
fn a_kept_execution_takes_stdin_and_signals_and_is_read_by_offset_past_its_cap() {
    let mut agent = Agent::start();
    let mut stash = Vec::new();
    kept_run(&mut agent, 1, "cat", &["cat"]);
    agent.send(Frame::Stdin {
        id: 2,
        key: "cat".into(),
        data: b"hello world".to_vec(),
        close: false,
    });
    assert_eq!(answer_of(&agent, &mut stash, 2), Frame::Ack { id: 2 });
    // Everything, whatever the cap of the starter's own copy; `cat` may
    // not have echoed it all yet, so read until it has.
    let mut seen = Vec::new();
    for id in 3.. {
        agent.send(read_frame(id, "cat", seen.len() as u64, 5_000));
        let Frame::ReadDone { reply, .. } = answer_of(&agent, &mut stash, id) else {
            panic!("read refused")
        };
        assert!(reply.finished.is_none());
        seen.extend(reply.stdout);
        if seen.len() >= 11 {
            break;
        }
    }
    assert_eq!(seen, b"hello world");
    // A reader waiting at the end is answered by the next output.
    agent.send(read_frame(20, "cat", 11, 10_000));
    agent.send(Frame::Stdin {
        id: 21,
        key: "cat".into(),
        data: b"!".to_vec(),
        close: true,
    });
    let Frame::ReadDone { reply, .. } = answer_of(&agent, &mut stash, 20) else {
        panic!("waiting read refused")
    };
    assert_eq!(reply.stdout, b"!");
    assert_eq!(answer_of(&agent, &mut stash, 21), Frame::Ack { id: 21 });
    let Frame::Exit { result, .. } = answer_of(&agent, &mut stash, 1) else {
        panic!("no exit")
    };
    assert_eq!((result.termination, result.stdout_bytes), (Termination::Exited(0), 12));
    agent.send(read_frame(22, "cat", 12, 0));
    let Frame::ReadDone { reply, .. } = answer_of(&agent, &mut stash, 22) else {
        panic!("read after the end refused")
    };
    assert_eq!(reply.finished, Some(result));
    for (id, frame) in [
        (
            23,
            Frame::Stdin {
                id: 23,
                key: "cat".into(),
                data: b"late".to_vec(),
                close: false,
            },
        ),
        (
            24,
            Frame::Signal {
                id: 24,
                key: "cat".into(),
                signal: 15,
            },
        ),
    ] {
        agent.send(frame);
        assert!(matches!(
            answer_of(&agent, &mut stash, id),
            Frame::Error {
                code: ErrorCode::NotRunning,
                ..
            }
        ));
    }
    agent.send(read_frame(25, "nobody", 0, 0));
    assert!(matches!(
        answer_of(&agent, &mut stash, 25),
        Frame::Error {
            code: ErrorCode::ExecutionNotFound,
            ..
        }
    ));
    // A signal reaches the group; the result says which.
    kept_run(&mut agent, 30, "sleep", &["sleep", "30"]);
    agent.send(Frame::Signal {
        id: 31,
        key: "sleep".into(),
        signal: 2,
    });
    assert_eq!(answer_of(&agent, &mut stash, 31), Frame::Ack { id: 31 });
    let Frame::Exit { result, .. } = answer_of(&agent, &mut stash, 30) else {
        panic!("no exit")
    };
    assert_eq!(result.termination, Termination::Signaled(2));
    assert!(!result.cancelled && !result.timed_out);
}

#[test]
fn commands_die_when_their_client_goes_away() {
    let mut agent = Agent::start();
    let mut stash = Vec::new();
    kept_run(&mut agent, 1, "sleep", &["sleep", "30"]);
    agent.send(read_frame(2, "sleep", 0, 0));
    assert!(matches!(answer_of(&agent, &mut stash, 2), Frame::ReadDone { .. }));
    // The agent's stdin ends: nobody is attached any more.
    let Agent { stdin, .. } = &mut agent;
    drop(std::mem::replace(stdin, {
        // A stand-in that is never written: the real one is closed.
        let (_, write) = std::io::pipe().unwrap();
        ChildStdin::from(std::os::fd::OwnedFd::from(write))
    }));
    let Frame::Exit { result, .. } = answer_of(&agent, &mut stash, 1) else {
        panic!("no exit")
    };
    assert!(result.cancelled, "{result:?}");
}

/// Output of kept execution `key` from `offset` until `wanted` shows up.
fn read_until(agent: &mut Agent, stash: &mut Vec<Frame>, key: &str, offset: &mut u64, wanted: &str) -> String {
    let mut seen = String::new();
    for id in 1000.. {
        agent.send(read_frame(id, key, *offset, 5_000));
        let Frame::ReadDone { reply, .. } = answer_of(agent, stash, id) else {
            panic!("read refused")
        };
        *offset += reply.stdout.len() as u64;
        seen.push_str(&String::from_utf8_lossy(&reply.stdout));
        if seen.contains(wanted) {
            return seen;
        }
        assert!(reply.finished.is_none() && id < 1100, "{wanted:?} never came: {seen:?}");
    }
    unreachable!()
}

#[test]
fn a_terminal_has_its_size_echoes_its_input_and_is_resized() {
    let mut agent = Agent::start();
    let mut stash = Vec::new();
    agent.send(Frame::Run {
        id: 1,
        request: RunRequest {
            argv: [
                "sh",
                "-c",
                "tty; stty size; read line; echo got $line; read again; stty size",
            ]
            .map(String::from)
            .to_vec(),
            cwd: "/".into(),
            timeout_ms: 30_000,
            output_cap: 1 << 20,
            keep: Some(Keep {
                key: "tty".into(),
                buffer_bytes: 1 << 20,
                stdin_pipe: true,
                tty: Some(TtySize { rows: 24, cols: 80 }),
            }),
            ..RunRequest::default()
        },
    });
    let mut offset = 0;
    let seen = read_until(&mut agent, &mut stash, "tty", &mut offset, "24 80");
    assert!(seen.starts_with("/dev/pts/"), "{seen:?}");
    agent.send(Frame::Stdin {
        id: 2,
        key: "tty".into(),
        data: b"hello\n".to_vec(),
        close: false,
    });
    assert_eq!(answer_of(&agent, &mut stash, 2), Frame::Ack { id: 2 });
    // The terminal echoes what it is sent, then the command answers.
    let seen = read_until(&mut agent, &mut stash, "tty", &mut offset, "got hello");
    assert!(seen.contains("hello\r\n"), "{seen:?}");
    agent.send(Frame::Resize {
        id: 3,
        key: "tty".into(),
        size: TtySize { rows: 50, cols: 132 },
    });
    assert_eq!(answer_of(&agent, &mut stash, 3), Frame::Ack { id: 3 });
    agent.send(Frame::Stdin {
        id: 4,
        key: "tty".into(),
        data: b"\n".to_vec(),
        close: false,
    });
    assert_eq!(answer_of(&agent, &mut stash, 4), Frame::Ack { id: 4 });
    read_until(&mut agent, &mut stash, "tty", &mut offset, "50 132");
    let Frame::Exit { result, .. } = answer_of(&agent, &mut stash, 1) else {
        panic!("no exit")
    };
    assert_eq!(result.termination, Termination::Exited(0));
}
