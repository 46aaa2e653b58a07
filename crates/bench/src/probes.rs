//! What the bench reads off other processes: the commands Redis receives
//! (MONITOR) and the CPU time a process used (`/proc/<pid>/stat`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

/// Commands Redis received while a [`Monitor`] watched.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RedisCommands {
    /// Sent by clients (a script call counts once).
    pub sent: u64,
    /// Run inside scripts.
    pub in_scripts: u64,
}

/// A MONITOR connection counting the commands Redis receives until stopped.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    reader: JoinHandle<anyhow::Result<RedisCommands>>,
}

impl Monitor {
    pub fn start(port: u16) -> anyhow::Result<Monitor> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.write_all(b"MONITOR\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok)?;
        anyhow::ensure!(ok.starts_with("+OK"), "MONITOR answered {ok:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut counts = RedisCommands::default();
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    // `+<time> [<db> lua] "GET" ...` for a script's commands,
                    // `+<time> [<db> <client address>] ...` for clients'.
                    Ok(_) if line.contains(" lua] ") => counts.in_scripts += 1,
                    Ok(_) => counts.sent += 1,
                    Err(err)
                        if matches!(
                            err.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if stopped.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            Ok(counts)
        });
        Ok(Monitor { stop, reader })
    }

    /// Stops watching (after a moment for the last lines to arrive).
    pub fn finish(self) -> anyhow::Result<RedisCommands> {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        self.reader
            .join()
            .map_err(|_| anyhow::anyhow!("the MONITOR reader panicked"))?
    }
}

/// User plus system CPU time of process `pid` so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    let ticks = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()? as f64))
}

fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The pid of the oldest process named `name` (`pgrep -o -x`), if any.
pub fn pid_of(name: &str) -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-o", "-x", name])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// CPU time of a set of processes, taken before and after a series.
pub struct CpuMeter {
    processes: Vec<(&'static str, u32, Duration)>,
}

impl CpuMeter {
    pub fn start(processes: &[(&'static str, u32)]) -> anyhow::Result<CpuMeter> {
        let processes = processes
            .iter()
            .map(|&(name, pid)| Ok((name, pid, cpu_time(pid)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(CpuMeter { processes })
    }

    /// Each process's CPU time since [`start`](Self::start), in microseconds
    /// per one of `requests`.
    pub fn per_request_us(&self, requests: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
        self.processes
            .iter()
            .map(|&(name, pid, before)| {
                let used = cpu_time(pid)?.saturating_sub(before);
                Ok((name, used.as_secs_f64() * 1e6 / requests.max(1) as f64))
            })
            .collect()
    }
}
