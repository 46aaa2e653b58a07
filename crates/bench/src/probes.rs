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

/// User plus system CPU time of process `pid` so far; with `children`, that
/// of its children it has reaped too.
pub fn cpu_time(pid: u32, children: bool) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime, stime, cutime and cstime are fields 14 to 17 of the line, 12 to
    // 15 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    let mut ticks_used = ticks(11)? + ticks(12)?;
    if children {
        ticks_used += ticks(13)? + ticks(14)?;
    }
    Ok(Duration::from_secs_f64(
        ticks_used as f64 / clock_ticks_per_second()? as f64,
    ))
}

fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The pid of the oldest process named `name` (`pgrep -o -x`), if any.
pub fn pid_of(name: &str) -> Option<u32> {
    pids_of(name).into_iter().next()
}

/// The pids of every process named `name`, oldest first.
pub fn pids_of(name: &str) -> Vec<u32> {
    let Ok(out) = std::process::Command::new("pgrep").args(["-x", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// A process [`CpuMeter`] watches: its CPU time is added to `name`'s
/// (several processes may share a name), with its reaped children's if
/// `children`.
#[derive(Clone, Copy)]
pub struct Probe {
    pub name: &'static str,
    pub pid: u32,
    pub children: bool,
}

impl Probe {
    pub fn of(name: &'static str, pid: u32) -> Probe {
        Probe {
            name,
            pid,
            children: false,
        }
    }
}

/// CPU time the whole machine spent busy so far (every process and the
/// kernel, interrupts included; idle, I/O wait and time stolen by the
/// hypervisor excluded): the first line of `/proc/stat`.
pub fn machine_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(fields.len() >= 7, "short /proc/stat: {line}");
    // user, nice, system, idle, iowait, irq, softirq, ...
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
    Ok(Duration::from_secs_f64(busy as f64 / clock_ticks_per_second()? as f64))
}

/// CPU time of a set of processes, and of the whole machine, taken before
/// and after a series.
pub struct CpuMeter {
    probes: Vec<(Probe, Duration)>,
    machine: Duration,
}

impl CpuMeter {
    pub fn start(probes: &[Probe]) -> anyhow::Result<CpuMeter> {
        let probes = probes
            .iter()
            .map(|&probe| Ok((probe, cpu_time(probe.pid, probe.children)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(CpuMeter {
            probes,
            machine: machine_busy()?,
        })
    }

    /// The CPU time since [`start`](Self::start) of each name's processes (in
    /// the order first named; a process gone since counts nothing), then the
    /// whole machine's, in microseconds per one of `requests`.
    pub fn per_request_us(&self, requests: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
        let per_request = |used: Duration| used.as_secs_f64() * 1e6 / requests.max(1) as f64;
        let mut used: Vec<(&'static str, Duration)> = Vec::new();
        for &(probe, before) in &self.probes {
            let now = cpu_time(probe.pid, probe.children).unwrap_or(before);
            let spent = now.saturating_sub(before);
            match used.iter_mut().find(|(name, _)| *name == probe.name) {
                Some((_, total)) => *total += spent,
                None => used.push((probe.name, spent)),
            }
        }
        let mut used: Vec<_> = used
            .into_iter()
            .map(|(name, spent)| (name, per_request(spent)))
            .collect();
        used.push((
            "whole machine",
            per_request(machine_busy()?.saturating_sub(self.machine)),
        ));
        Ok(used)
    }
}
