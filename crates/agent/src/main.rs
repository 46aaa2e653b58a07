//! brig-agent: PID 1 of every brig sandbox.
//!
//! - `serve`: answer brig-protocol frames on stdin/stdout ([`serve`]).
//! - `run [options] -- argv`: one command, for use through `docker exec` ([`run`]).
//! - `file`: one file request frame on stdin, its answer on stdout (through `docker exec`).
//! - `put|get|tar-out|tar-in PATH`: a file or a directory streamed as frames ([`transfer`]).
//! - `kill-tag TAG`: kill the command of the `run --tag TAG` (cancel, through `docker exec`).
//! - `relay`: stdin/stdout joined to PID 1's relay socket (through `docker exec`, as the relay uid).
//!
//! Modules: [`egress`] (the loopback proxy whose connections brig-api dials), [`supervisor`] (spawn, reap, deadlines, cancel), [`io_loop`] (pipes, caps), [`leftovers`] (finding
//! what a command left behind), [`sys`] (the only unsafe code: raw syscalls).

mod connection;
mod egress;
mod files;
mod io_loop;
mod kept;
mod leftovers;
mod run;
mod serve;
mod spawn;
mod supervisor;
mod sys;
mod transfer;

use std::process::ExitCode;

const USAGE: &str = "usage: brig-agent serve | brig-agent run [options] -- ARGV... | brig-agent file | \
                     brig-agent put|get|tar-out|tar-in PATH | brig-agent kill-tag TAG | brig-agent relay | brig-agent --version | brig-agent --help";

fn main() -> ExitCode {
    // First thing: nothing in the sandbox may ptrace us or read /proc/1/fd/*.
    if let Err(err) = sys::set_non_dumpable() {
        eprintln!("brig-agent: prctl(PR_SET_DUMPABLE): {err}");
        return ExitCode::from(70);
    }
    // Then: no io_uring for us or any command (every mode, the engine's
    // exec fallback included, since its commands do not descend from PID 1).
    if let Err(err) = sys::deny_io_uring() {
        eprintln!("brig-agent: seccomp filter: {err}");
        return ExitCode::from(70);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => match serve::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("brig-agent: {err}");
                ExitCode::from(70)
            }
        },
        Some("run") => match run::run(&args[1..]) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(err) => {
                eprintln!("brig-agent: {err}\n{}", run::USAGE);
                ExitCode::from(125)
            }
        },
        Some("put" | "get" | "tar-out" | "tar-in") => match transfer::one_shot(&args) {
            Ok(code) => ExitCode::from(code as u8),
            Err(err) => {
                eprintln!("brig-agent: {err}");
                ExitCode::from(125)
            }
        },
        Some("file") => match files::one_shot() {
            Ok(code) => ExitCode::from(code as u8),
            Err(err) => {
                eprintln!("brig-agent: {err}");
                ExitCode::from(125)
            }
        },
        Some("relay") => match serve::relay() {
            Ok(code) => ExitCode::from(code),
            Err(err) => {
                eprintln!("brig-agent: relay: {err}");
                ExitCode::from(125)
            }
        },
        Some("kill-tag") => match run::kill_tag(&args[1..]) {
            Ok(code) => ExitCode::from(code as u8),
            Err(err) => {
                eprintln!("brig-agent: {err}\n{}", run::USAGE);
                ExitCode::from(125)
            }
        },
        Some("--version" | "-V") => {
            println!("brig-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => {
            println!("brig-agent: PID 1 of every brig sandbox (brig-api starts it; not for use by hand)\n\n{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(64)
        }
    }
}
