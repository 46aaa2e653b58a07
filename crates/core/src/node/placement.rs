//! Where a new session goes: among the nodes with room for it (its runtime,
//! its image, a free session slot, memory for its limit), the one with the
//! most headroom, a node's load being the larger of its shares of sessions
//! and memory in use; the share of CPUs breaks ties.
//!
//! Memory bounds: placement sends a node no session whose memory limit would
//! take the node's sum of limits past its host's memory (a sandbox reaching
//! its limit would meet the host's OOM killer, not its own cgroup's), as far
//! as its view shows: views are up to a heartbeat old, so a burst from
//! several entry nodes can send a node more than it has room for
//! (brig-bench's placement section measures how often); the node's own
//! [`Room`] refuses those. CPUs only rank, and only among
//! equals: a CPU limit is a ceiling the kernel shares out, oversubscribed by
//! design (a one-CPU sandbox by default, hundreds on a host), so its share
//! would drown the others; a busy host slows its sandboxes, it does not
//! break them.

use crate::config::SandboxConfig;
use crate::sandbox::SandboxOptions;

use super::Announcement;

/// What a new session needs of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub runtime: String,
    pub image: String,
    pub memory_bytes: u64,
    pub nano_cpus: u64,
}

impl Want {
    /// A session with `options` under `config`'s defaults.
    pub fn of(config: &SandboxConfig, options: &SandboxOptions) -> Want {
        let (memory_bytes, nano_cpus) = config.limits(options);
        Want {
            runtime: options.runtime.clone().unwrap_or_else(|| config.runtime.clone()),
            image: options.image.clone().unwrap_or_else(|| config.image.clone()),
            memory_bytes: memory_bytes.max(0) as u64,
            nano_cpus: nano_cpus.max(0) as u64,
        }
    }
}

/// What is counted against a node beyond its announcement: the sessions one
/// node placed on it since it last read the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placed {
    pub sessions: u64,
    pub memory_bytes: u64,
    pub nano_cpus: u64,
}

impl Placed {
    pub fn add(&mut self, want: &Want) {
        self.sessions += 1;
        self.memory_bytes += want.memory_bytes;
        self.nano_cpus += want.nano_cpus;
    }
}

/// A node's own check of its session slots and memory, for the sandboxes
/// made here (new sessions, resumes, recoveries), exact between heartbeats:
/// what the last beat counted on its engine, plus what it admitted that the
/// count could not have seen (still being made, or made after the engine
/// was listed). Placement decides on views up to a beat old; this refuses
/// what a burst through several nodes would overshoot.
pub struct Room {
    max_sessions: u64,
    sandbox: SandboxConfig,
    state: std::sync::Mutex<RoomState>,
}

struct RoomState {
    /// This node as its last fresh beat counted it.
    me: Announcement,
    /// Admissions since, by number: what each needs, and when its sandbox
    /// was made (or failed to be).
    admitted: std::collections::HashMap<u64, (Want, Option<std::time::Instant>)>,
    next: u64,
}

/// A sandbox being made under [`Room::admit`]: made (or failed) once dropped.
pub struct Admission {
    room: std::sync::Arc<Room>,
    number: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.room.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, done)) = state.admitted.get_mut(&self.number) {
            *done = Some(std::time::Instant::now());
        }
    }
}

impl Room {
    /// Sessions this node takes (`NODE_MAX_SESSIONS`, else `MAX_SESSIONS`).
    pub fn max_sessions(&self) -> u64 {
        self.max_sessions
    }

    pub fn new(max_sessions: u64, sandbox: SandboxConfig) -> Self {
        let blank = Announcement {
            max_sessions,
            ..Announcement::default()
        };
        Room {
            max_sessions,
            sandbox,
            state: std::sync::Mutex::new(RoomState {
                me: blank,
                admitted: Default::default(),
                next: 0,
            }),
        }
    }

    /// What a heartbeat counted on the engine, whose sandboxes were listed
    /// from `listed_at`: admissions whose sandbox was made before that are
    /// in the count; the others still count on their own.
    pub fn counted(&self, me: &Announcement, listed_at: std::time::Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.me = Announcement {
            max_sessions: self.max_sessions,
            ..me.clone()
        };
        state
            .admitted
            .retain(|_, (_, done)| done.is_none_or(|done| done > listed_at));
    }

    /// Takes a sandbox with `options` if a slot and memory for its limit are
    /// left; it counts until a beat has counted it on the engine.
    pub fn admit(self: &std::sync::Arc<Self>, options: &SandboxOptions) -> Option<Admission> {
        let want = Want::of(&self.sandbox, options);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut since = Placed::default();
        for (admitted, _) in state.admitted.values() {
            since.add(admitted);
        }
        if !has_room(&state.me, &since, &want) {
            return None;
        }
        let number = state.next;
        state.next += 1;
        state.admitted.insert(number, (want, None));
        Some(Admission {
            room: std::sync::Arc::clone(self),
            number,
        })
    }
}

/// How a node is chosen among those with room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The least loaded of all.
    LeastLoaded,
    /// The less loaded of two picked at random.
    BestOfTwo,
}

/// What the nodes use. Measured (brig-bench, placement; BENCHMARKS.md) on
/// the views nodes have, from every node at once: as good as least loaded
/// with three nodes, and with ten, under a third of its placements on nodes
/// already full and a smaller spread of loads (least loaded sends every
/// entry's burst to the same node until the next read).
pub const POLICY: Policy = Policy::BestOfTwo;

/// Whether `node`, with `placed` more, has room for `want`. A node that did
/// not announce its host (a version before capacity, during a rolling
/// upgrade: no memory, no images) is bounded by its runtimes and sessions
/// alone.
pub fn fits(node: &Announcement, placed: &Placed, want: &Want) -> bool {
    offers(node, want) && has_room(node, placed, want)
}

/// Whether `node` offers `want`'s runtime and holds its image (a node that
/// did not announce its host is taken at its runtimes).
pub fn offers(node: &Announcement, want: &Want) -> bool {
    let announced_host = node.memory_bytes > 0;
    let holds_image = !announced_host || node.images.contains(&want.image);
    node.runtimes.contains(&want.runtime) && holds_image
}

/// Whether `node`, with `placed` more, has a session slot and memory for `want`.
fn has_room(node: &Announcement, placed: &Placed, want: &Want) -> bool {
    let memory_left =
        node.memory_bytes == 0 || node.memory_committed + placed.memory_bytes + want.memory_bytes <= node.memory_bytes;
    node.sessions + placed.sessions < node.max_sessions.max(1) && memory_left
}

fn share(used: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        used as f64 / of as f64
    }
}

/// The larger of `node`'s shares of sessions and memory in use, with
/// `placed` more (memory it did not announce counts as 0).
pub fn load(node: &Announcement, placed: &Placed) -> f64 {
    share(node.sessions + placed.sessions, node.max_sessions.max(1))
        .max(share(node.memory_committed + placed.memory_bytes, node.memory_bytes))
}

/// `node`'s share of CPUs committed, with `placed` more.
fn cpu_load(node: &Announcement, placed: &Placed) -> f64 {
    share(node.nano_cpus_committed + placed.nano_cpus, node.nano_cpus)
}

/// Which of two nodes (each with what was placed on it) is less loaded:
/// load, then the share of CPUs, fewer sessions, then the id.
fn better(a: &(&Announcement, Placed), b: &(&Announcement, Placed)) -> std::cmp::Ordering {
    load(a.0, &a.1)
        .total_cmp(&load(b.0, &b.1))
        .then(cpu_load(a.0, &a.1).total_cmp(&cpu_load(b.0, &b.1)))
        .then((a.0.sessions + a.1.sessions).cmp(&(b.0.sessions + b.1.sessions)))
        .then(a.0.node_id.cmp(&b.0.node_id))
}

/// The node `policy` picks among `candidates` (each with what was placed on
/// it since the registry was read), all of which fit. Ties: the lower share
/// of CPUs, fewer sessions, then the id. `pick(n)` is a random index below
/// `n` (best of two).
pub fn choose<'a>(
    candidates: &[(&'a Announcement, Placed)],
    policy: Policy,
    mut pick: impl FnMut(usize) -> usize,
) -> Option<&'a Announcement> {
    let chosen = match (policy, candidates.len()) {
        (_, 0) => return None,
        (Policy::BestOfTwo, n) if n > 2 => {
            let first = pick(n);
            let second = (first + 1 + pick(n - 1)) % n;
            std::cmp::min_by(&candidates[first], &candidates[second], |a, b| better(a, b))
        }
        _ => candidates.iter().min_by(|a, b| better(a, b))?,
    };
    Some(chosen.0)
}

/// Shares `wants` out among `nodes`, in order, each to the least loaded node
/// with room for it, counting what was shared out before it (ties broken as
/// [`choose`] breaks them): each node that reads the same registry gets the
/// same answer, so the live nodes split a lost node's sessions by headroom
/// without talking to each other. Each entry is an index into `nodes`;
/// `None`: no node has room.
pub fn share_out(nodes: &[&Announcement], wants: &[Want]) -> Vec<Option<usize>> {
    let mut placed = vec![Placed::default(); nodes.len()];
    wants
        .iter()
        .map(|want| {
            let chosen = (0..nodes.len())
                .filter(|&i| fits(nodes[i], &placed[i], want))
                .min_by(|&a, &b| better(&(nodes[a], placed[a]), &(nodes[b], placed[b])))?;
            placed[chosen].add(want);
            Some(chosen)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, sessions: u64, memory_committed: u64) -> Announcement {
        Announcement {
            node_id: id.into(),
            sessions,
            max_sessions: 10,
            runtimes: vec!["runc".into()],
            memory_bytes: 1000,
            memory_committed,
            nano_cpus: 4_000,
            images: vec!["img".into()],
            ..Announcement::default()
        }
    }

    fn want(memory_bytes: u64) -> Want {
        Want {
            runtime: "runc".into(),
            image: "img".into(),
            memory_bytes,
            nano_cpus: 1_000,
        }
    }

    #[test]
    fn a_node_fits_a_session_with_its_runtime_its_image_a_slot_and_memory_for_its_limit() {
        let none = Placed::default();
        assert!(fits(&node("a", 0, 0), &none, &want(1000)));
        assert!(!fits(&node("a", 0, 1), &none, &want(1000)), "memory past the host's");
        let placed = Placed {
            sessions: 1,
            memory_bytes: 600,
            nano_cpus: 0,
        };
        assert!(!fits(&node("a", 0, 0), &placed, &want(500)), "what was placed counts");
        assert!(!fits(&node("a", 10, 0), &none, &want(1)), "no session slot left");
        let other_image = Want {
            image: "other".into(),
            ..want(1)
        };
        assert!(!fits(&node("a", 0, 0), &none, &other_image));
        let other_runtime = Want {
            runtime: "runsc".into(),
            ..want(1)
        };
        assert!(!fits(&node("a", 0, 0), &none, &other_runtime));
        // The host unannounced (an older node): runtimes and sessions alone bound it.
        let unknown = Announcement {
            memory_bytes: 0,
            images: Vec::new(),
            ..node("a", 0, 5000)
        };
        assert!(fits(&unknown, &none, &want(1000)));
        assert!(!fits(&unknown, &none, &other_runtime));
        let full = Announcement {
            sessions: 10,
            ..unknown.clone()
        };
        assert!(!fits(&full, &none, &want(1)));
    }

    #[test]
    fn a_node_admits_sandboxes_while_its_slots_and_memory_last_counting_from_each_beat() {
        let sandbox = SandboxConfig {
            memory_bytes: 400,
            ..SandboxConfig::default()
        };
        let room = std::sync::Arc::new(Room::new(3, sandbox));
        let small = SandboxOptions {
            memory_bytes: Some(100),
            ..SandboxOptions::default()
        };
        // Before a beat: slots alone.
        let made = [room.admit(&small), room.admit(&SandboxOptions::default())];
        let making = room.admit(&small);
        assert!(made.iter().all(Option::is_some) && making.is_some());
        assert!(room.admit(&small).is_none(), "three slots");
        drop(made);
        // A beat lists the engine after two were made (it counts them: 1
        // session was there before, 700 of 1000 bytes in all); the third is
        // still being made, so it counts on its own: 200 bytes left.
        let listed_at = std::time::Instant::now();
        room.counted(
            &Announcement {
                sessions: 3,
                memory_committed: 700,
                ..node("me", 0, 0)
            },
            listed_at,
        );
        assert!(room.admit(&small).is_none(), "the slots are gone, the third's too");
        drop(making);
        room.counted(
            &Announcement {
                sessions: 1,
                memory_committed: 700,
                ..node("me", 0, 0)
            },
            std::time::Instant::now(),
        );
        // 1 of 3 slots, 700 of 1000 bytes: 400 bytes do not fit, 100 do, twice.
        assert!(room.admit(&SandboxOptions::default()).is_none(), "400 bytes in 300");
        let (a, b) = (room.admit(&small), room.admit(&small));
        assert!(a.is_some() && b.is_some());
        assert!(room.admit(&small).is_none(), "the slots are gone");
    }

    #[test]
    fn the_load_is_the_larger_share_of_sessions_and_memory_and_the_least_loaded_wins() {
        // 2 of 10 sessions, but 900 of 1000 bytes: memory is the load.
        assert_eq!(load(&node("a", 2, 900), &Placed::default()), 0.9);
        // CPUs oversubscribed thrice: not the load, only a tie-breaker.
        let cpu_bound = Announcement {
            nano_cpus_committed: 12_000,
            ..node("c", 5, 0)
        };
        assert_eq!(load(&cpu_bound, &Placed::default()), 0.5);
        let (a, b, c) = (node("a", 2, 900), node("b", 5, 100), cpu_bound);
        let all = [
            (&a, Placed::default()),
            (&b, Placed::default()),
            (&c, Placed::default()),
        ];
        let least = choose(&all, Policy::LeastLoaded, |_| unreachable!()).unwrap();
        assert_eq!(least.node_id, "b", "b and c at half: b has the CPUs left");
        // Best of two: the better of the two drawn (a and c here), never a third.
        let mut draws = [0, 1].into_iter();
        let two = choose(&all, Policy::BestOfTwo, |_| draws.next().unwrap()).unwrap();
        assert_eq!(two.node_id, "c");
        assert!(choose(&[], Policy::LeastLoaded, |_| 0).is_none());
    }

    #[test]
    fn a_lost_nodes_sessions_are_shared_out_by_headroom_the_same_way_everywhere() {
        let (a, b) = (node("a", 2, 0), node("b", 6, 0));
        let other_image = Want {
            image: "other".into(),
            ..want(1)
        };
        let wants = vec![want(1), want(1), want(1), want(1), want(1), want(1), other_image];
        let shares = share_out(&[&a, &b], &wants);
        // a takes the first four (2 -> 6); at equal loads b, whose CPUs the
        // four did not take, then a again; the image no node holds goes nowhere.
        assert_eq!(shares, vec![Some(0), Some(0), Some(0), Some(0), Some(1), Some(0), None]);
        assert_eq!(share_out(&[&a, &b], &wants), shares, "the same answer again");
        // Past a node's room: the other, then nowhere.
        let full = node("c", 9, 0);
        assert_eq!(share_out(&[&full], &[want(1), want(1)]), vec![Some(0), None]);
    }
}
