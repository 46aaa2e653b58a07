//! Finding the processes a command left behind.
//!
//! Every command starts with `BRIG_CMD=<n>` in its environment and its
//! descendants inherit it. After the command's leader has ended, any process
//! still carrying the marker is a leftover, wherever it has moved (a new session
//! with `setsid`, a new process group, reparented to PID 1). A process that
//! scrubbed its environment is not found here; the idle sweep
//! ([`kill_all_but_exec_sessions`]) kills it once no other command runs.

use std::fs;

use crate::sys;

/// What one pass of [`kill_marked`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// A marked process was found (and killed).
    pub killed: bool,
    /// A live process showed an empty environment: one in the middle of an
    /// `execve` does, for an instant, so it may be a leftover not seen yet
    /// (or a process started with no environment at all).
    pub unsure: bool,
}

/// SIGKILLs every live process whose environment holds `marker` (`NAME=value`).
pub fn kill_marked(marker: &str) -> Sweep {
    let mut sweep = Sweep::default();
    let Ok(entries) = fs::read_dir("/proc") else {
        return sweep;
    };
    let me = sys::getpid();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        if pid <= 1 || pid == me {
            continue;
        }
        // Unreadable: gone, or made itself non-dumpable.
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        match classify(&environ, marker.as_bytes(), || is_zombie(pid)) {
            Seen::Marked => {
                sys::kill_process(pid);
                sweep.killed = true;
            }
            Seen::Unsure => sweep.unsure = true,
            Seen::Other => {}
        }
    }
    sweep
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Marked,
    Unsure,
    Other,
}

/// A process by its environment: marked, maybe mid-exec (empty, yet not a
/// zombie), or someone else's.
fn classify(environ: &[u8], marker: &[u8], zombie: impl FnOnce() -> bool) -> Seen {
    if environ.is_empty() {
        if zombie() {
            Seen::Other
        } else {
            Seen::Unsure
        }
    } else if environ_contains(environ, marker) {
        Seen::Marked
    } else {
        Seen::Other
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

/// The idle sweep of PID 1: SIGKILLs every process in the sandbox except
/// itself and whatever descends from a process started from outside through
/// the engine's exec (its parent pid is 0 in our namespace): those are
/// `brig-agent run` supervisors serving another API process, with their
/// commands, which they clean up themselves. Returns whether any was found.
pub fn kill_all_but_exec_sessions() -> bool {
    let parents = process_parents();
    let me = sys::getpid();
    let mut found = false;
    for (&pid, _) in parents.iter().filter(|(&pid, _)| pid > 1 && pid != me) {
        if !descends_from_exec(pid, &parents) {
            sys::kill_process(pid);
            found = true;
        }
    }
    found
}

/// pid → parent pid of every process in /proc.
fn process_parents() -> std::collections::HashMap<i32, i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, parent_of(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?)))
        .collect()
}

/// The ppid field of a /proc/<pid>/stat line (after the parenthesised name,
/// which may itself contain spaces and parentheses).
fn parent_of(stat: &str) -> Option<i32> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn descends_from_exec(mut pid: i32, parents: &std::collections::HashMap<i32, i32>) -> bool {
    // Bounded walk: pid namespaces are small, and a cycle is impossible but cheap to guard.
    for _ in 0..4096 {
        match parents.get(&pid) {
            Some(0) => return true,
            Some(1) | None => return false,
            Some(&parent) => pid = parent,
        }
    }
    false
}

fn environ_contains(environ: &[u8], entry: &[u8]) -> bool {
    environ.split(|&b| b == 0).any(|e| e == entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_read_past_odd_process_names() {
        assert_eq!(parent_of("42 (sh) S 7 42 1 0"), Some(7));
        assert_eq!(parent_of("43 (a b) c) R 0 43 43 0"), Some(0));
        assert_eq!(parent_of("garbage"), None);
        let parents = std::collections::HashMap::from([(10, 0), (11, 10), (12, 11), (20, 1), (21, 20)]);
        assert!(descends_from_exec(12, &parents));
        assert!(!descends_from_exec(21, &parents));
        assert!(!descends_from_exec(99, &parents));
    }

    #[test]
    fn an_empty_environment_is_unsure_unless_the_process_is_done() {
        assert_eq!(classify(b"", b"BRIG_CMD=1", || false), Seen::Unsure);
        assert_eq!(classify(b"", b"BRIG_CMD=1", || true), Seen::Other);
        assert_eq!(classify(b"A=1\0BRIG_CMD=1\0", b"BRIG_CMD=1", || false), Seen::Marked);
        assert_eq!(classify(b"A=1\0", b"BRIG_CMD=1", || false), Seen::Other);
        assert!(is_zombie(i32::MAX), "a pid that does not exist is done");
        assert!(!is_zombie(std::process::id() as i32));
    }

    #[test]
    fn marker_matches_whole_entries_only() {
        let environ = b"PATH=/bin\0BRIG_CMD=12\0HOME=/workspace\0";
        assert!(environ_contains(environ, b"BRIG_CMD=12"));
        assert!(!environ_contains(environ, b"BRIG_CMD=1"));
        assert!(!environ_contains(environ, b"BRIG_CMD=123"));
        assert!(!environ_contains(b"", b"BRIG_CMD=12"));
    }
}
