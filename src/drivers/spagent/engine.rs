//! The discrete-event simulation: per-agent random draws, the continuously batched engine, the
//! agents' step state machine and the two-level scheduler.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use super::{LogEntry, LogKind, RunStats, SimConfig};

// ---- random draws -----------------------------------------------------------------------------

struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, stream: u64) -> Self {
        let mut s = SplitMix64(seed ^ 0x5350_4147_454e_5421);
        let a = s.next_u64();
        SplitMix64(a ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller; two uniforms per draw).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// One step's world, shared by the baseline and the speculative run.
#[derive(Clone, Copy)]
pub(super) struct Draw {
    reason_tokens: u32,
    correct: bool,
    /// Latency of the step's true tool call.
    lat_true: f64,
    /// Latency of the call a wrong prediction issues.
    lat_wrong: f64,
}

pub(super) fn draws(cfg: &SimConfig) -> Vec<Vec<Draw>> {
    let wsum: f64 = cfg.tools.iter().map(|t| t.weight).sum();
    let span = u64::from(cfg.reason_tokens_max - cfg.reason_tokens_min) + 1;
    let per_agent = cfg.episodes_per_agent * cfg.steps;
    (0..cfg.agents)
        .map(|a| {
            let mut rng = SplitMix64::new(cfg.seed, a as u64);
            (0..per_agent)
                .map(|_| {
                    let u_correct = rng.unit();
                    let reason_tokens = cfg.reason_tokens_min + (rng.next_u64() % span) as u32;
                    let mut pick = rng.unit() * wsum;
                    let mut tool = &cfg.tools[cfg.tools.len() - 1];
                    for t in &cfg.tools {
                        if pick < t.weight {
                            tool = t;
                            break;
                        }
                        pick -= t.weight;
                    }
                    let z_true = rng.normal();
                    let z_wrong = rng.normal();
                    Draw {
                        reason_tokens,
                        correct: u_correct < cfg.accuracy,
                        lat_true: tool.median_s * (tool.sigma * z_true).exp(),
                        lat_wrong: tool.median_s * (tool.sigma * z_wrong).exp(),
                    }
                })
                .collect()
        })
        .collect()
}

// ---- the discrete-event simulation ------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Ev {
    /// An agent's step is over (its tool result is in).
    StepEnd(usize),
    /// The running batch finished an iteration.
    IterEnd,
    /// The engine may start an iteration (after every other event at the same time).
    Kick,
}

impl Ev {
    fn class(self) -> u8 {
        match self {
            Ev::StepEnd(_) => 0,
            Ev::IterEnd => 1,
            Ev::Kick => 2,
        }
    }
}

struct Queued {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        self.t
            .total_cmp(&o.t)
            .then(self.ev.class().cmp(&o.ev.class()))
            .then(self.seq.cmp(&o.seq))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReqKind {
    Reason,
    Predict,
}

struct Req {
    agent: usize,
    kind: ReqKind,
    remaining: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Verify,
    Skip,
}

struct Agent {
    /// Index of the current step in the agent's draws (episode · steps + step).
    pos: usize,
    episode_start: f64,
    mode: Mode,
    reason_done: Option<f64>,
    spec_ready: Option<f64>,
    hits: u64,
    verified: u64,
}

pub(super) struct Sim<'a> {
    cfg: &'a SimConfig,
    draws: &'a [Vec<Draw>],
    speculate: bool,
    now: f64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    waiting: VecDeque<Req>,
    running: Vec<Req>,
    busy: bool,
    kick_pending: bool,
    agents: Vec<Agent>,
    episode_sum: f64,
    batch_sum: u64,
    stats: RunStats,
    log_on: bool,
    log: Vec<LogEntry>,
}

impl<'a> Sim<'a> {
    pub(super) fn new(cfg: &'a SimConfig, draws: &'a [Vec<Draw>], speculate: bool) -> Self {
        Sim {
            cfg,
            draws,
            speculate,
            now: 0.0,
            seq: 0,
            queue: BinaryHeap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            busy: false,
            kick_pending: false,
            agents: (0..cfg.agents)
                .map(|_| Agent {
                    pos: 0,
                    episode_start: 0.0,
                    mode: Mode::Plain,
                    reason_done: None,
                    spec_ready: None,
                    hits: 0,
                    verified: 0,
                })
                .collect(),
            episode_sum: 0.0,
            batch_sum: 0,
            stats: RunStats::default(),
            log_on: speculate && cfg.log,
            log: Vec::new(),
        }
    }

    fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            t,
            seq: self.seq,
            ev,
        }));
    }

    fn inflight(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    fn record(&mut self, agent: usize, kind: LogKind) {
        if self.log_on {
            let e = LogEntry {
                t: self.now,
                agent,
                kind,
                inflight: self.inflight(),
                batch: self.running.len(),
            };
            self.log.push(e);
        }
    }

    fn submit(&mut self, agent: usize, kind: ReqKind, tokens: u32) {
        self.record(
            agent,
            match kind {
                ReqKind::Reason => LogKind::SubmitReason,
                ReqKind::Predict => LogKind::SubmitPredict,
            },
        );
        self.waiting.push_back(Req {
            agent,
            kind,
            remaining: tokens,
        });
        self.stats.max_inflight = self.stats.max_inflight.max(self.inflight());
        if !self.busy && !self.kick_pending {
            self.kick_pending = true;
            self.push(self.now, Ev::Kick);
        }
    }

    fn estimate(&self, a: usize) -> f64 {
        let p = &self.cfg.policy;
        let ag = &self.agents[a];
        let den = p.prior_weight + ag.verified as f64;
        if den <= 0.0 {
            p.prior_accuracy
        } else {
            (p.prior_accuracy * p.prior_weight + ag.hits as f64) / den
        }
    }

    fn start_step(&mut self, a: usize) {
        let d = self.draws[a][self.agents[a].pos];
        let step = self.agents[a].pos % self.cfg.steps;
        let mut mode = Mode::Plain;
        if self.speculate {
            let est = self.estimate(a);
            let p = &self.cfg.policy;
            if est >= p.min_accuracy {
                let skip = step < p.skip_verify_steps && est >= p.skip_min_accuracy;
                if self.inflight() < self.cfg.throttle.max_inflight {
                    self.record(a, LogKind::Admit);
                    self.stats.throttle_admits += 1;
                    mode = if skip { Mode::Skip } else { Mode::Verify };
                } else {
                    self.record(a, LogKind::Reject);
                    self.stats.throttle_rejections += 1;
                }
            } else {
                self.stats.policy_declines += 1;
            }
        }
        let ag = &mut self.agents[a];
        ag.mode = mode;
        ag.reason_done = None;
        ag.spec_ready = None;
        self.stats.steps += 1;
        if mode != Mode::Plain {
            self.stats.speculated_steps += 1;
            if self.cfg.predict_tokens > 0 {
                self.submit(a, ReqKind::Predict, self.cfg.predict_tokens);
            } else {
                self.predict_done(a);
            }
        }
        if mode != Mode::Skip {
            self.submit(a, ReqKind::Reason, d.reason_tokens);
        }
    }

    fn predict_done(&mut self, a: usize) {
        let d = self.draws[a][self.agents[a].pos];
        let lat = if d.correct { d.lat_true } else { d.lat_wrong };
        let ready = self.now + lat;
        self.stats.tool_calls += 1;
        self.agents[a].spec_ready = Some(ready);
        match self.agents[a].mode {
            Mode::Skip => {
                self.stats.skipped_verification_steps += 1;
                if !d.correct {
                    self.stats.unverified_wrong_steps += 1;
                }
                self.push(ready, Ev::StepEnd(a));
            }
            Mode::Verify => {
                if self.agents[a].reason_done.is_some() {
                    self.resolve(a);
                }
            }
            Mode::Plain => {}
        }
    }

    fn reason_done(&mut self, a: usize) {
        let d = self.draws[a][self.agents[a].pos];
        self.agents[a].reason_done = Some(self.now);
        match self.agents[a].mode {
            Mode::Plain => {
                self.stats.tool_calls += 1;
                self.push(self.now + d.lat_true, Ev::StepEnd(a));
            }
            Mode::Verify => {
                if self.agents[a].spec_ready.is_some() {
                    self.resolve(a);
                }
            }
            // A skipped step submits no reasoning request.
            Mode::Skip => {}
        }
    }

    /// Verification: the reasoning and the prediction are both done.
    fn resolve(&mut self, a: usize) {
        let d = self.draws[a][self.agents[a].pos];
        let ag = &mut self.agents[a];
        let (Some(tr), Some(ready)) = (ag.reason_done, ag.spec_ready) else {
            return;
        };
        ag.verified += 1;
        let end = if d.correct {
            ag.hits += 1;
            self.stats.verified_correct += 1;
            tr.max(ready)
        } else {
            self.stats.wasted_tool_calls += 1;
            self.stats.wasted_tool_s += d.lat_wrong;
            self.stats.wasted_engine_tokens += u64::from(self.cfg.predict_tokens);
            self.stats.tool_calls += 1;
            tr + d.lat_true
        };
        self.push(end, Ev::StepEnd(a));
    }

    fn step_end(&mut self, a: usize) {
        let steps = self.cfg.steps;
        let ag = &mut self.agents[a];
        ag.pos += 1;
        if ag.pos % steps == 0 {
            self.episode_sum += self.now - ag.episode_start;
            self.stats.episodes += 1;
            ag.episode_start = self.now;
            if ag.pos == self.draws[a].len() {
                self.stats.makespan_s = self.stats.makespan_s.max(self.now);
                return;
            }
        }
        self.start_step(a);
    }

    fn kick(&mut self) {
        self.kick_pending = false;
        if self.busy {
            return;
        }
        while self.running.len() < self.cfg.max_batch {
            match self.waiting.pop_front() {
                Some(r) => self.running.push(r),
                None => break,
            }
        }
        let b = self.running.len();
        if b == 0 {
            return;
        }
        self.busy = true;
        self.record(usize::MAX, LogKind::IterStart);
        self.stats.engine_iterations += 1;
        self.batch_sum += b as u64;
        self.stats.max_batch = self.stats.max_batch.max(b);
        let lat = self.cfg.curve.iter_latency(b);
        self.push(self.now + lat, Ev::IterEnd);
    }

    fn iter_end(&mut self) {
        self.busy = false;
        self.stats.engine_tokens += self.running.len() as u64;
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            self.running[i].remaining -= 1;
            if self.running[i].remaining == 0 {
                let r = self.running.remove(i);
                done.push((r.agent, r.kind));
            } else {
                i += 1;
            }
        }
        for (a, kind) in done {
            match kind {
                ReqKind::Predict => self.predict_done(a),
                ReqKind::Reason => self.reason_done(a),
            }
        }
        if !self.kick_pending {
            self.kick_pending = true;
            self.push(self.now, Ev::Kick);
        }
    }

    pub(super) fn run(mut self) -> (RunStats, Vec<LogEntry>) {
        for a in 0..self.cfg.agents {
            self.start_step(a);
        }
        while let Some(Reverse(q)) = self.queue.pop() {
            self.now = q.t;
            match q.ev {
                Ev::StepEnd(a) => self.step_end(a),
                Ev::IterEnd => self.iter_end(),
                Ev::Kick => self.kick(),
            }
        }
        let mut s = self.stats;
        s.mean_episode_s = self.episode_sum / s.episodes.max(1) as f64;
        s.mean_batch = self.batch_sum as f64 / s.engine_iterations.max(1) as f64;
        (s, self.log)
    }
}
