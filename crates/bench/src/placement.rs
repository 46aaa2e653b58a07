//! Placement policies compared: least loaded against best of two random, as
//! the nodes run them (`brig_core::node::placement`: the same `fits`, `load`
//! and `choose`), on the views the nodes have: announcements a heartbeat old
//! at most, the registry read twice a heartbeat by each entry node, each
//! entry counting only what it placed itself since. Nodes cannot be
//! multiplied on this machine, so this is a simulation (seeded, the same
//! every run) of a fleet taking requests at every node: Poisson arrivals
//! with bursts, exponential lifetimes, a fifth of the sessions asking four
//! times the memory.
//!
//! What it counts, per policy:
//! - overflows: sessions sent to a node that was in fact full (its views
//!   were stale): a refusal or a retry in a real fleet;
//! - refusals: sessions no view had room for;
//! - imbalance: the spread of the nodes' loads (largest minus smallest
//!   share), sampled each second, mean and p99.

use brig_core::node::placement::{self, Placed, Policy, Want};
use brig_core::node::Announcement;
use serde::Serialize;

/// Seconds between a node's heartbeats, and between an entry's registry reads.
const HEARTBEAT: f64 = 2.0;
const REFRESH: f64 = HEARTBEAT / 2.0;
const STEP: f64 = 0.01;
const SIMULATED: f64 = 1800.0;

const GIB: u64 = 1 << 30;

struct Scenario {
    name: &'static str,
    /// (sessions, memory, CPUs) of each node.
    nodes: Vec<(u64, u64, u64)>,
    /// Mean session lifetime (s).
    life: f64,
    /// Offered load as a share of the fleet's session slots.
    load: f64,
    /// `burst` sessions at once every `burst_every` seconds, on top.
    burst: usize,
    burst_every: f64,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "3 equal nodes",
            nodes: vec![(100, 48 * GIB, 16); 3],
            life: 120.0,
            load: 0.8,
            burst: 30,
            burst_every: 60.0,
        },
        Scenario {
            name: "10 nodes, half twice the size",
            nodes: [vec![(100, 48 * GIB, 16); 5], vec![(200, 96 * GIB, 32); 5]].concat(),
            life: 120.0,
            load: 0.8,
            burst: 100,
            burst_every: 60.0,
        },
    ]
}

#[derive(Debug, Serialize)]
pub struct PolicyOutcome {
    pub scenario: &'static str,
    pub policy: &'static str,
    pub sessions: u64,
    pub overflowed_pct: f64,
    pub refused_pct: f64,
    pub imbalance_mean: f64,
    pub imbalance_p99: f64,
}

/// xorshift64*: small, seeded, enough for a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// In (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }
}

fn node(id: usize, (sessions, memory, cpus): (u64, u64, u64)) -> Announcement {
    Announcement {
        node_id: format!("n{id:02}"),
        max_sessions: sessions,
        runtimes: vec!["runc".into()],
        memory_bytes: memory,
        nano_cpus: cpus * 1_000_000_000,
        images: vec!["sandbox".into()],
        ..Announcement::default()
    }
}

fn want(memory: u64, cpus: u64) -> Want {
    Want {
        runtime: "runc".into(),
        image: "sandbox".into(),
        memory_bytes: memory,
        nano_cpus: cpus * 1_000_000_000,
    }
}

fn simulate(scenario: &Scenario, policy: Policy, seed: u64) -> PolicyOutcome {
    // Arrivals, the policy's draws and lifetimes each from their own
    // stream: both policies see the same arrivals.
    let (mut rng, mut picks, mut lives) = (
        Rng(seed),
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15),
        Rng(seed ^ 0xd1b5_4a32_d192_ed03),
    );
    let n = scenario.nodes.len();
    let mut truth: Vec<Announcement> = scenario.nodes.iter().enumerate().map(|(i, c)| node(i, *c)).collect();
    let mut published = truth.clone();
    let mut views: Vec<(Vec<Announcement>, Vec<Placed>)> =
        (0..n).map(|_| (truth.clone(), vec![Placed::default(); n])).collect();
    // Heartbeats and reads are not in step across nodes.
    let mut next_beat: Vec<f64> = (0..n).map(|_| rng.unit() * HEARTBEAT).collect();
    let mut next_read: Vec<f64> = (0..n).map(|_| rng.unit() * REFRESH).collect();
    let mut departures: Vec<(f64, usize, Want)> = Vec::new();
    let slots: u64 = scenario.nodes.iter().map(|c| c.0).sum();
    let rate = scenario.load * slots as f64 / scenario.life;
    let (mut sessions, mut overflowed, mut refused) = (0u64, 0u64, 0u64);
    let mut spreads = Vec::new();
    let (steps, burst_every, second) = (
        (SIMULATED / STEP) as u64,
        (scenario.burst_every / STEP) as u64,
        (1.0 / STEP) as u64,
    );
    for step in 0..steps {
        let t = step as f64 * STEP;
        departures.retain(|(at, i, w)| {
            let gone = *at <= t;
            if gone {
                let node = &mut truth[*i];
                node.sessions -= 1;
                node.memory_committed -= w.memory_bytes;
                node.nano_cpus_committed -= w.nano_cpus;
            }
            !gone
        });
        for i in 0..n {
            if t >= next_beat[i] {
                published[i] = truth[i].clone();
                next_beat[i] += HEARTBEAT;
            }
            if t >= next_read[i] {
                views[i] = (published.clone(), vec![Placed::default(); n]);
                next_read[i] += REFRESH;
            }
        }
        let mut arrivals = usize::from(rng.unit() < rate * STEP);
        if step > 0 && step % burst_every == 0 {
            arrivals += scenario.burst;
        }
        for _ in 0..arrivals {
            sessions += 1;
            let wanted = if rng.below(5) == 0 {
                want(GIB, 2)
            } else {
                want(GIB / 4, 1)
            };
            let (view, placed) = &mut views[rng.below(n)];
            let candidates: Vec<(&Announcement, Placed)> = view
                .iter()
                .zip(placed.iter())
                .filter(|(node, extra)| placement::fits(node, extra, &wanted))
                .map(|(node, extra)| (node, *extra))
                .collect();
            let Some(chosen) = placement::choose(&candidates, policy, |k| picks.below(k)) else {
                refused += 1;
                continue;
            };
            let i = view.iter().position(|node| node.node_id == chosen.node_id).unwrap_or(0);
            placed[i].add(&wanted);
            if !placement::fits(&truth[i], &Placed::default(), &wanted) {
                overflowed += 1;
                continue;
            }
            let node = &mut truth[i];
            node.sessions += 1;
            node.memory_committed += wanted.memory_bytes;
            node.nano_cpus_committed += wanted.nano_cpus;
            departures.push((t + lives.exponential(scenario.life), i, wanted));
        }
        if step > 0 && step % second == 0 {
            let loads: Vec<f64> = truth
                .iter()
                .map(|node| placement::load(node, &Placed::default()))
                .collect();
            let (low, high) = loads
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
            spreads.push(high - low);
        }
    }
    spreads.sort_by(f64::total_cmp);
    let pct = |count: u64| 100.0 * count as f64 / sessions.max(1) as f64;
    PolicyOutcome {
        scenario: scenario.name,
        policy: match policy {
            Policy::LeastLoaded => "least loaded",
            Policy::BestOfTwo => "best of two",
        },
        sessions,
        overflowed_pct: pct(overflowed),
        refused_pct: pct(refused),
        imbalance_mean: spreads.iter().sum::<f64>() / spreads.len().max(1) as f64,
        imbalance_p99: spreads.get(spreads.len() * 99 / 100).copied().unwrap_or(0.0),
    }
}

/// Runs of each scenario and policy (seeds), summed.
const RUNS: u64 = 5;

/// Both policies on every scenario, the same arrivals for both.
pub fn compare() -> Vec<PolicyOutcome> {
    let mut outcomes = Vec::new();
    println!(
        "\n{:<32} {:<13} {:>9} {:>10} {:>9} {:>10} {:>10}",
        "placement (simulated)", "policy", "sessions", "overflow%", "refused%", "spread", "spread p99"
    );
    for scenario in scenarios() {
        for policy in [Policy::LeastLoaded, Policy::BestOfTwo] {
            let runs: Vec<PolicyOutcome> = (0..RUNS)
                .map(|seed| simulate(&scenario, policy, 0x5eed_b416 + seed))
                .collect();
            let sessions: u64 = runs.iter().map(|run| run.sessions).sum();
            let weighted = |of: fn(&PolicyOutcome) -> f64| {
                runs.iter().map(|run| of(run) * run.sessions as f64).sum::<f64>() / sessions.max(1) as f64
            };
            let mean = |of: fn(&PolicyOutcome) -> f64| runs.iter().map(of).sum::<f64>() / RUNS as f64;
            let outcome = PolicyOutcome {
                sessions,
                overflowed_pct: weighted(|run| run.overflowed_pct),
                refused_pct: weighted(|run| run.refused_pct),
                imbalance_mean: mean(|run| run.imbalance_mean),
                imbalance_p99: mean(|run| run.imbalance_p99),
                ..runs.into_iter().next().expect("runs")
            };
            println!(
                "{:<32} {:<13} {:>9} {:>10.2} {:>9.2} {:>10.3} {:>10.3}",
                outcome.scenario,
                outcome.policy,
                outcome.sessions,
                outcome.overflowed_pct,
                outcome.refused_pct,
                outcome.imbalance_mean,
                outcome.imbalance_p99
            );
            outcomes.push(outcome);
        }
    }
    outcomes
}
