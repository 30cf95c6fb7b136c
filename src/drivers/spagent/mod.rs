//! SPAgent (arXiv 2511.20048, PAPERS.md): load-aware speculative tool calls for search agents,
//! as a deterministic discrete-event simulation. Nothing here runs a model or a tool: the engine
//! and the tools are simulated, and every number this module reports is a simulation result.
//!
//! # Model
//!
//! * A population of `agents` agents. Each runs `episodes_per_agent` episodes back to back, and
//!   an episode is `steps` steps. A step is a reasoning call to the inference engine (a request
//!   of `reason_tokens` decode iterations, drawn per step) followed by a tool call (search,
//!   browse, ...) whose result starts the next step. An episode ends when its last step's tool
//!   result is back.
//! * **Engine**: continuous batching. Requests wait in a FIFO queue and join the running batch at
//!   the next iteration boundary, at most `max_batch` at a time; a running request decodes one
//!   token per iteration and leaves when it has decoded all of its tokens. One iteration with `b`
//!   running requests takes `curve.iter_latency(b)` seconds ([`LatencyCurve`], a replaceable
//!   table with linear interpolation).
//! * **Tools**: each step's tool type is drawn by weight from `tools`; its latency is log-normal,
//!   `median · exp(sigma · z)` with `z` standard normal ([`ToolSpec`]).
//! * **Prediction**: at each step a speculative prediction of the step's tool call is correct
//!   with probability `accuracy` (q). The prediction is a short engine request of
//!   `predict_tokens` tokens (0: free, e.g. taken from the previous step), which must be shorter
//!   than any reasoning call. A wrong prediction calls some other tool invocation; its latency is
//!   an independent draw from the same tool type.
//! * **Speculation** (a step the policy and the throttle let speculate): the prediction request
//!   is submitted together with the full reasoning request (prediction first). When the
//!   prediction is done, the predicted tool call is issued at once. When the reasoning is done
//!   the prediction is verified: if correct, the step ends when the speculative tool result is
//!   ready (often already); if wrong, the speculative call, and the prediction's engine tokens,
//!   are wasted and the real call is issued then.
//! * **Skipped verification** (SPAgent's early evidence-gathering phase): in the first
//!   `skip_verify_steps` steps of an episode, when the policy judges it safe, the step runs the
//!   predicted tool call **without the full reasoning pass** (no reasoning request is submitted)
//!   and the next step starts from the speculative tool result. Nothing checks the prediction, so
//!   the quality risk is reported as a counter: `unverified_wrong_steps`, the skipped steps whose
//!   prediction was in fact wrong (the simulator knows). This models risk only by counting it;
//!   the episode carries on as if the step were fine.
//! * **Two-level scheduler**: the per-agent [`Policy`] decides whether a step speculates, from
//!   the agent's running estimate of its prediction accuracy (a Beta-style mean of a prior and
//!   the verified outcomes) and the step phase; the global [`Throttle`] then admits the
//!   speculation only while the engine's in-flight requests (queued plus running) are below its
//!   threshold. A rejected or declined step runs as in the baseline.
//! * **Baseline**: the same agents with the same draws (reasoning lengths, tool types,
//!   latencies) and no speculation. [`sim`] runs both and reports the speedup (baseline /
//!   speculative) of the mean episode latency and of the makespan, the wasted work and the
//!   throttle's decisions; [`grid`] sweeps agent counts × accuracies.
//!
//! Every random draw comes from a per-agent splitmix64 stream seeded by `(seed, agent)` and is
//! made up front, in a fixed order, whatever the run does with it, so the baseline and the
//! speculative run see the same world, and an agent's world does not depend on how many other
//! agents there are. The event queue orders events by (time, kind, sequence number); no wall
//! clock is read and nothing sleeps.

mod curve;
mod engine;

use serde::Serialize;

pub use curve::LatencyCurve;

use crate::error::{Error, Result};

const OP: &str = "spagent.sim";

/// The most steps (agents × episodes × steps) one simulation draws up front.
pub const MAX_TOTAL_STEPS: usize = 10_000_000;

// ---- configuration ----------------------------------------------------------------------------

/// One tool type: log-normal latency `median_s · exp(sigma · z)` and a weight (its share of the
/// steps, relative to the other tools' weights).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolSpec {
    /// The tool's name (for reports).
    pub name: String,
    /// Median latency in seconds (> 0).
    pub median_s: f64,
    /// Log-space standard deviation (≥ 0; 0 makes the latency exactly `median_s`).
    pub sigma: f64,
    /// Relative frequency (≥ 0; the weights must not all be 0).
    pub weight: f64,
}

impl ToolSpec {
    /// The default tools, illustrative: `search` (median 0.8 s, sigma 0.5, weight 0.6) and
    /// `browse` (fetch and extract a page: median 2.5 s, sigma 0.7, weight 0.4).
    pub fn defaults() -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "search".into(),
                median_s: 0.8,
                sigma: 0.5,
                weight: 0.6,
            },
            ToolSpec {
                name: "browse".into(),
                median_s: 2.5,
                sigma: 0.7,
                weight: 0.4,
            },
        ]
    }
}

/// The per-agent policy (the scheduler's lower level).
///
/// An agent's accuracy estimate is `(prior_accuracy · prior_weight + hits) / (prior_weight + n)`
/// over its `n` verified speculations so far (all episodes), `hits` of them correct. A step
/// speculates (subject to the throttle) when the estimate is ≥ `min_accuracy`; it also skips
/// verification when its index within the episode is < `skip_verify_steps` and the estimate is
/// ≥ `skip_min_accuracy`. Skipped steps verify nothing, so they do not move the estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    /// Speculate at all (false: the baseline).
    pub speculate: bool,
    /// Speculate while the accuracy estimate is at least this (in [0, 1]).
    pub min_accuracy: f64,
    /// The first this many steps of an episode (the evidence-gathering phase) may skip
    /// verification.
    pub skip_verify_steps: usize,
    /// Skip verification only while the estimate is at least this (in [0, 1]).
    pub skip_min_accuracy: f64,
    /// The estimate's prior mean (in [0, 1]).
    pub prior_accuracy: f64,
    /// The prior's weight in pseudo-observations (finite, ≥ 0).
    pub prior_weight: f64,
}

impl Default for Policy {
    /// Speculate while the estimate is ≥ 0.25; skip verification in the first 2 steps while it
    /// is ≥ 0.8; prior 0.5 with weight 2 (a uniform Beta(1, 1)).
    fn default() -> Self {
        Policy {
            speculate: true,
            min_accuracy: 0.25,
            skip_verify_steps: 2,
            skip_min_accuracy: 0.8,
            prior_accuracy: 0.5,
            prior_weight: 2.0,
        }
    }
}

/// The global throttle (the scheduler's upper level): a speculation is admitted only while the
/// engine's in-flight requests (queued plus running), counted before the speculation submits
/// anything, are `< max_inflight`. 0 closes it; `usize::MAX` opens it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Throttle {
    /// Admit while in-flight requests < this.
    pub max_inflight: usize,
}

impl Default for Throttle {
    /// 32: the end of the default curve's flat (memory-bound) regime, where extra requests stop
    /// being nearly free.
    fn default() -> Self {
        Throttle { max_inflight: 32 }
    }
}

/// One simulation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimConfig {
    /// Concurrent agents (≥ 1).
    pub agents: usize,
    /// Episodes each agent runs back to back (≥ 1).
    pub episodes_per_agent: usize,
    /// Steps per episode (≥ 1).
    pub steps: usize,
    /// Reasoning tokens per step, drawn uniformly in `[min, max]` (min ≥ 1).
    pub reason_tokens_min: u32,
    /// See `reason_tokens_min`.
    pub reason_tokens_max: u32,
    /// Engine tokens of one prediction (0: free); must be < `reason_tokens_min`.
    pub predict_tokens: u32,
    /// Seconds per decode iteration by batch size.
    pub curve: LatencyCurve,
    /// The engine's batch limit (≥ 1).
    pub max_batch: usize,
    /// Tool types.
    pub tools: Vec<ToolSpec>,
    /// Probability q that a prediction is correct (in [0, 1]).
    pub accuracy: f64,
    /// The per-agent policy of the speculative run (the baseline ignores it).
    pub policy: Policy,
    /// The global throttle.
    pub throttle: Throttle,
    /// Seed of every random draw.
    pub seed: u64,
    /// Keep the speculative run's event log in the report (`Report::log`).
    pub log: bool,
}

impl Default for SimConfig {
    /// 8 agents × 4 episodes × 8 steps, 128–384 reasoning tokens, 16-token predictions, the
    /// illustrative curve, batch limit 256, the default tools, q = 0.6, the default policy and
    /// throttle, seed 1, no log.
    fn default() -> Self {
        SimConfig {
            agents: 8,
            episodes_per_agent: 4,
            steps: 8,
            reason_tokens_min: 128,
            reason_tokens_max: 384,
            predict_tokens: 16,
            curve: LatencyCurve::illustrative(),
            max_batch: 256,
            tools: ToolSpec::defaults(),
            accuracy: 0.6,
            policy: Policy::default(),
            throttle: Throttle::default(),
            seed: 1,
            log: false,
        }
    }
}

fn unit_interval(name: &str, v: f64) -> Result<()> {
    if v.is_nan() || !(0.0..=1.0).contains(&v) {
        return Err(Error::invalid(
            OP,
            format!("{name} = {v}: must be in [0, 1]"),
        ));
    }
    Ok(())
}

impl SimConfig {
    /// Checks every field; the errors name `spagent.sim` and the field.
    pub fn validate(&self) -> Result<()> {
        if self.agents == 0 {
            return Err(Error::invalid(OP, "agents = 0: need at least one agent"));
        }
        if self.episodes_per_agent == 0 {
            return Err(Error::invalid(
                OP,
                "episodes_per_agent = 0: need at least one episode",
            ));
        }
        if self.steps == 0 {
            return Err(Error::invalid(
                OP,
                "steps = 0: an episode needs at least one step",
            ));
        }
        let total = self
            .agents
            .checked_mul(self.episodes_per_agent)
            .and_then(|x| x.checked_mul(self.steps));
        match total {
            Some(t) if t <= MAX_TOTAL_STEPS => {}
            _ => {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "agents × episodes × steps = {} × {} × {} exceeds {MAX_TOTAL_STEPS}",
                        self.agents, self.episodes_per_agent, self.steps
                    ),
                ))
            }
        }
        if self.reason_tokens_min == 0 || self.reason_tokens_min > self.reason_tokens_max {
            return Err(Error::invalid(
                OP,
                format!(
                    "reasoning tokens [{}, {}]: need 1 ≤ min ≤ max",
                    self.reason_tokens_min, self.reason_tokens_max
                ),
            ));
        }
        if self.predict_tokens >= self.reason_tokens_min {
            return Err(Error::invalid(
                OP,
                format!(
                    "predict_tokens = {} must be < reason_tokens_min = {} (a prediction is a short reasoning)",
                    self.predict_tokens, self.reason_tokens_min
                ),
            ));
        }
        self.curve.check()?;
        if self.max_batch == 0 {
            return Err(Error::invalid(
                OP,
                "max_batch = 0: the engine needs a batch of at least 1",
            ));
        }
        if self.tools.is_empty() {
            return Err(Error::invalid(OP, "no tools"));
        }
        let mut wsum = 0.0;
        for t in &self.tools {
            if !t.median_s.is_finite() || t.median_s <= 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "tool {:?}: median latency {} s must be finite and > 0",
                        t.name, t.median_s
                    ),
                ));
            }
            if !t.sigma.is_finite() || t.sigma < 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "tool {:?}: sigma {} must be finite and ≥ 0",
                        t.name, t.sigma
                    ),
                ));
            }
            if !t.weight.is_finite() || t.weight < 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "tool {:?}: weight {} must be finite and ≥ 0",
                        t.name, t.weight
                    ),
                ));
            }
            wsum += t.weight;
        }
        if wsum <= 0.0 || !wsum.is_finite() {
            return Err(Error::invalid(
                OP,
                format!("tool weights sum to {wsum}; need a finite sum > 0"),
            ));
        }
        unit_interval("accuracy", self.accuracy)?;
        unit_interval("policy.min_accuracy", self.policy.min_accuracy)?;
        unit_interval("policy.skip_min_accuracy", self.policy.skip_min_accuracy)?;
        unit_interval("policy.prior_accuracy", self.policy.prior_accuracy)?;
        if !self.policy.prior_weight.is_finite() || self.policy.prior_weight < 0.0 {
            return Err(Error::invalid(
                OP,
                format!(
                    "policy.prior_weight = {} must be finite and ≥ 0",
                    self.policy.prior_weight
                ),
            ));
        }
        Ok(())
    }
}

// ---- report -----------------------------------------------------------------------------------

/// What one run (baseline or speculative) did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunStats {
    /// Mean episode latency (s): from an episode's first step start to its last tool result.
    pub mean_episode_s: f64,
    /// Time at which the last agent finished (s).
    pub makespan_s: f64,
    /// Episodes run.
    pub episodes: usize,
    /// Steps run.
    pub steps: usize,
    /// Tokens the engine decoded (reasoning and predictions).
    pub engine_tokens: u64,
    /// Engine iterations.
    pub engine_iterations: u64,
    /// Mean running batch per iteration.
    pub mean_batch: f64,
    /// Largest running batch.
    pub max_batch: usize,
    /// Most requests in flight (queued plus running) at once.
    pub max_inflight: usize,
    /// Tool calls issued (speculative ones included).
    pub tool_calls: u64,
    /// Steps that speculated (admitted by the throttle).
    pub speculated_steps: u64,
    /// Speculated steps that skipped verification (no full reasoning).
    pub skipped_verification_steps: u64,
    /// Verified speculations that were correct.
    pub verified_correct: u64,
    /// Verified speculations that were wrong: their tool calls were wasted.
    pub wasted_tool_calls: u64,
    /// Tool seconds of the wasted calls.
    pub wasted_tool_s: f64,
    /// Engine tokens of the wrong (verified) predictions.
    pub wasted_engine_tokens: u64,
    /// Skipped-verification steps whose prediction was wrong: the quality risk (never checked
    /// during the run; the simulator knows).
    pub unverified_wrong_steps: u64,
    /// Speculations the throttle admitted.
    pub throttle_admits: u64,
    /// Speculations the throttle rejected (the policy wanted them; the engine was too loaded).
    pub throttle_rejections: u64,
    /// Steps whose policy declined to speculate (accuracy estimate too low).
    pub policy_declines: u64,
}

/// What the event log records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LogKind {
    /// The throttle admitted a speculation.
    Admit,
    /// The throttle rejected a speculation.
    Reject,
    /// A prediction request entered the engine's queue.
    SubmitPredict,
    /// A reasoning request entered the engine's queue.
    SubmitReason,
    /// An engine iteration started (`batch` running requests).
    IterStart,
}

/// One entry of the speculative run's event log.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LogEntry {
    /// Simulated time (s).
    pub t: f64,
    /// The agent (for `IterStart`: `usize::MAX`, no agent).
    pub agent: usize,
    /// What happened.
    pub kind: LogKind,
    /// Engine requests in flight (queued plus running) just before the entry's action.
    pub inflight: usize,
    /// Requests in the running batch (after the action, for `IterStart`).
    pub batch: usize,
}

/// One simulation: the baseline, the speculative run, and their ratios.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Agents.
    pub agents: usize,
    /// Prediction accuracy q.
    pub accuracy: f64,
    /// Steps per episode.
    pub steps: usize,
    /// Episodes per agent.
    pub episodes_per_agent: usize,
    /// The throttle's threshold (in-flight requests).
    pub throttle_max_inflight: usize,
    /// The seed.
    pub seed: u64,
    /// No speculation.
    pub baseline: RunStats,
    /// Speculation under the policy and the throttle.
    pub speculative: RunStats,
    /// Baseline mean episode latency / speculative.
    pub speedup_mean_episode: f64,
    /// Baseline makespan / speculative.
    pub speedup_makespan: f64,
    /// Wasted speculative tool calls / speculative tool calls issued (0 when none).
    pub wasted_tool_fraction: f64,
    /// Wasted engine tokens / the speculative run's engine tokens.
    pub wasted_token_fraction: f64,
    /// The speculative run's event log (only with `SimConfig::log`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogEntry>,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// Runs the baseline (no speculation) and the speculative run of `cfg` on the same draws.
///
/// Errors (`spagent.sim`): zero agents, episodes or steps; an accuracy or policy threshold that is
/// NaN or outside [0, 1]; a NaN, negative or zero tool latency; a negative sigma or weight; an
/// empty or non-monotone latency curve; `predict_tokens ≥ reason_tokens_min`; a zero batch limit.
pub fn sim(cfg: &SimConfig) -> Result<Report> {
    cfg.validate()?;
    let d = engine::draws(cfg);
    let (baseline, _) = engine::Sim::new(cfg, &d, false).run();
    let (speculative, log) = engine::Sim::new(cfg, &d, cfg.policy.speculate).run();
    Ok(Report {
        agents: cfg.agents,
        accuracy: cfg.accuracy,
        steps: cfg.steps,
        episodes_per_agent: cfg.episodes_per_agent,
        throttle_max_inflight: cfg.throttle.max_inflight,
        seed: cfg.seed,
        speedup_mean_episode: ratio(baseline.mean_episode_s, speculative.mean_episode_s),
        speedup_makespan: ratio(baseline.makespan_s, speculative.makespan_s),
        wasted_tool_fraction: ratio(
            speculative.wasted_tool_calls as f64,
            speculative.speculated_steps as f64,
        ),
        wasted_token_fraction: ratio(
            speculative.wasted_engine_tokens as f64,
            speculative.engine_tokens as f64,
        ),
        baseline,
        speculative,
        log,
    })
}

/// [`sim`] for every agent count × accuracy (agent counts outer), each from `base` with those two
/// fields replaced. Errors: an empty list, or any cell's error.
pub fn grid(base: &SimConfig, agents: &[usize], accuracies: &[f64]) -> Result<Vec<Report>> {
    if agents.is_empty() || accuracies.is_empty() {
        return Err(Error::invalid(
            OP,
            format!(
                "grid: {} agent counts × {} accuracies; need at least one of each",
                agents.len(),
                accuracies.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(agents.len() * accuracies.len());
    for &n in agents {
        for &q in accuracies {
            let cfg = SimConfig {
                agents: n,
                accuracy: q,
                ..base.clone()
            };
            out.push(sim(&cfg)?);
        }
    }
    Ok(out)
}

/// The reports as a Markdown table (one row per report).
pub fn markdown(reports: &[Report]) -> String {
    let mut s = String::from(
        "| agents | q | baseline mean episode (s) | speculative (s) | speedup (mean) | speedup (makespan) | speculated steps | skipped verification | wasted tool calls | wasted engine tokens | throttle rejections | unverified wrong |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let sp = &r.speculative;
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {}/{} | {} | {} ({:.1}%) | {:.2}% | {} | {} |\n",
            r.agents,
            r.accuracy,
            r.baseline.mean_episode_s,
            sp.mean_episode_s,
            r.speedup_mean_episode,
            r.speedup_makespan,
            sp.speculated_steps,
            sp.steps,
            sp.skipped_verification_steps,
            sp.wasted_tool_calls,
            100.0 * r.wasted_tool_fraction,
            100.0 * r.wasted_token_fraction,
            sp.throttle_rejections,
            sp.unverified_wrong_steps,
        ));
    }
    s
}
#[cfg(test)]
mod tests {
    use super::*;

    /// One agent, one tool of fixed latency `tool_s`, `r` reasoning tokens, `p` prediction
    /// tokens, q = 1, speculation always wanted, no skipping.
    fn fixed(curve: LatencyCurve, r: u32, p: u32, tool_s: f64, steps: usize) -> SimConfig {
        SimConfig {
            agents: 1,
            episodes_per_agent: 1,
            steps,
            reason_tokens_min: r,
            reason_tokens_max: r,
            predict_tokens: p,
            curve,
            max_batch: 256,
            tools: vec![ToolSpec {
                name: "t".into(),
                median_s: tool_s,
                sigma: 0.0,
                weight: 1.0,
            }],
            accuracy: 1.0,
            policy: Policy {
                speculate: true,
                min_accuracy: 0.0,
                skip_verify_steps: 0,
                skip_min_accuracy: 1.0,
                prior_accuracy: 0.5,
                prior_weight: 2.0,
            },
            throttle: Throttle { max_inflight: 8 },
            seed: 7,
            log: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// Derivation: constant 10 ms per iteration, R = 200, P = 20, tool 1.5 s, q = 1.
    /// Baseline step: 200 · 0.01 + 1.5 = 3.5 s. Speculative step: prediction done at
    /// 20 · 0.01 = 0.2 s, so its tool result is ready at 1.7 s; the reasoning is done at 2.0 s
    /// and verifies it: the step ends at max(2.0, 1.7) = 2.0 s. Speedup 3.5 / 2.0 = 1.75.
    #[test]
    fn one_agent_constant_latency_speedup_hand_computed() {
        let cfg = fixed(LatencyCurve::constant(0.01).unwrap(), 200, 20, 1.5, 4);
        let r = sim(&cfg).unwrap();
        assert!(
            close(r.baseline.mean_episode_s, 14.0),
            "{}",
            r.baseline.mean_episode_s
        );
        assert!(
            close(r.speculative.mean_episode_s, 8.0),
            "{}",
            r.speculative.mean_episode_s
        );
        assert!(close(r.speedup_mean_episode, 1.75));
        assert!(close(r.speedup_makespan, 1.75));
        assert_eq!(r.speculative.speculated_steps, 4);
        assert_eq!(r.speculative.verified_correct, 4);
        assert_eq!(r.speculative.wasted_tool_calls, 0);
        assert_eq!(r.speculative.engine_tokens, 4 * 220);
        assert_eq!(r.baseline.engine_tokens, 4 * 200);
        // 200 iterations per step either way: the prediction rides in the reasoning's batches.
        assert_eq!(r.speculative.engine_iterations, 800);
        assert_eq!(r.speculative.max_batch, 2);
    }

    /// The same with a batch-dependent curve: 10 ms at b = 1, 12 ms at b = 2. The first 20
    /// iterations run both requests (0.24 s), the other 180 the reasoning alone (1.8 s):
    /// reasoning done at 2.04 s, speculative tool ready at 0.24 + 1.5 = 1.74 s; step 2.04 s.
    /// Speedup 3.5 / 2.04.
    #[test]
    fn one_agent_batch_curve_hand_computed() {
        let curve = LatencyCurve::new(vec![(1, 0.010), (2, 0.012)]).unwrap();
        let r = sim(&fixed(curve, 200, 20, 1.5, 3)).unwrap();
        assert!(close(r.baseline.mean_episode_s, 3.0 * 3.5));
        assert!(close(r.speculative.mean_episode_s, 3.0 * 2.04));
        assert!(close(r.speedup_mean_episode, 3.5 / 2.04));
        // A tool slower than the reasoning: the step waits for the tool result, 0.24 + 3 s.
        let curve = LatencyCurve::new(vec![(1, 0.010), (2, 0.012)]).unwrap();
        let r = sim(&fixed(curve, 200, 20, 3.0, 1)).unwrap();
        assert!(close(r.speculative.mean_episode_s, 3.24));
        assert!(close(r.speedup_mean_episode, 5.0 / 3.24));
    }

    /// Skipping verification in step 0 (of 4): that step is the prediction and the tool only,
    /// 0.2 + 1.5 = 1.7 s; the other three 2.0 s each. Speculative 7.7 s vs 14 s.
    #[test]
    fn skipped_verification_hand_computed() {
        let mut cfg = fixed(LatencyCurve::constant(0.01).unwrap(), 200, 20, 1.5, 4);
        cfg.policy.skip_verify_steps = 1;
        cfg.policy.skip_min_accuracy = 0.0;
        let r = sim(&cfg).unwrap();
        assert!(close(r.speculative.mean_episode_s, 7.7));
        assert!(close(r.speedup_mean_episode, 14.0 / 7.7));
        assert_eq!(r.speculative.skipped_verification_steps, 1);
        assert_eq!(r.speculative.unverified_wrong_steps, 0);
        assert_eq!(r.speculative.engine_tokens, 20 + 3 * 220);
        // Free predictions (P = 0): the skipped step is the tool alone, 1.5 s; the others
        // max(2.0, 1.5) = 2.0 s.
        cfg.predict_tokens = 0;
        let r = sim(&cfg).unwrap();
        assert!(close(r.speculative.mean_episode_s, 7.5));
        assert_eq!(r.speculative.engine_tokens, 3 * 200);
        // At q = 0 the skipped step is as fast, but it is an unverified wrong step.
        cfg.accuracy = 0.0;
        let r = sim(&cfg).unwrap();
        assert_eq!(r.speculative.unverified_wrong_steps, 1);
        assert_eq!(r.speculative.wasted_tool_calls, 3);
    }

    /// The skip rule follows the accuracy estimate: with prior 0.5 (weight 2) and
    /// skip_min_accuracy 0.75, episode 1 cannot skip; after its 4 verified hits the estimate is
    /// (1 + 4) / 6 ≈ 0.83, so episode 2 skips its first step.
    #[test]
    fn policy_learns_to_skip() {
        let mut cfg = fixed(LatencyCurve::constant(0.01).unwrap(), 200, 20, 1.5, 4);
        cfg.episodes_per_agent = 2;
        cfg.policy.skip_verify_steps = 1;
        cfg.policy.skip_min_accuracy = 0.75;
        let r = sim(&cfg).unwrap();
        assert_eq!(r.speculative.skipped_verification_steps, 1);
        assert!(close(r.speculative.makespan_s, 8.0 + 7.7));
        assert!(close(r.speculative.mean_episode_s, (8.0 + 7.7) / 2.0));
    }

    /// A policy that stops speculating: prior 0.5 (weight 2), q = 0, min_accuracy 0.3. After one
    /// wrong verified step the estimate is 1/3, after two 1/4 < 0.3: two speculations, then
    /// declines.
    #[test]
    fn policy_stops_after_misses() {
        let mut cfg = fixed(LatencyCurve::constant(0.01).unwrap(), 200, 20, 1.5, 6);
        cfg.accuracy = 0.0;
        cfg.policy.min_accuracy = 0.3;
        let r = sim(&cfg).unwrap();
        assert_eq!(r.speculative.speculated_steps, 2);
        assert_eq!(r.speculative.wasted_tool_calls, 2);
        assert_eq!(r.speculative.policy_declines, 4);
        assert_eq!(r.speculative.wasted_engine_tokens, 40);
        // A wrong step: reasoning 2.0 s then the real call 1.5 s, the baseline's 3.5 s.
        assert!(close(r.speculative.mean_episode_s, 6.0 * 3.5));
    }

    fn loaded(agents: usize, q: f64) -> SimConfig {
        SimConfig {
            agents,
            accuracy: q,
            episodes_per_agent: 2,
            ..SimConfig::default()
        }
    }

    #[test]
    fn deterministic_by_seed() {
        let cfg = loaded(16, 0.6);
        let a = sim(&cfg).unwrap();
        let b = sim(&cfg).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let c = sim(&SimConfig { seed: 2, ..cfg }).unwrap();
        assert_ne!(a.baseline.mean_episode_s, c.baseline.mean_episode_s);
    }

    /// q = 0 and a closed throttle: nothing speculates, and the speculative run is the baseline
    /// bit for bit (same draws, same events).
    #[test]
    fn closed_throttle_is_baseline() {
        for n in [1, 8, 40] {
            let mut cfg = loaded(n, 0.0);
            cfg.throttle.max_inflight = 0;
            let r = sim(&cfg).unwrap();
            let s = &r.speculative;
            assert_eq!(s.speculated_steps, 0);
            assert_eq!(s.throttle_admits, 0);
            assert_eq!(s.throttle_rejections as usize, n * 2 * 8);
            let mut s = s.clone();
            s.throttle_rejections = 0;
            assert_eq!(s, r.baseline);
            assert_eq!(r.speedup_mean_episode, 1.0);
            assert_eq!(r.speedup_makespan, 1.0);
        }
    }

    #[test]
    fn idle_engine_q1_speeds_up() {
        let r = sim(&loaded(1, 1.0)).unwrap();
        assert!(r.speedup_mean_episode > 1.2, "{}", r.speedup_mean_episode);
        assert_eq!(r.speculative.wasted_tool_calls, 0);
        assert_eq!(r.wasted_token_fraction, 0.0);
    }

    /// Every step speculates (policy always willing, throttle open, no skipping), so the wrong
    /// predictions are exactly the draws above q: with the same seed those sets grow as q falls.
    #[test]
    fn wasted_work_zero_at_q1_and_grows_as_q_falls() {
        let mut prev: Option<(u64, f64)> = None;
        for q in [1.0, 0.9, 0.6, 0.3, 0.0] {
            let mut cfg = loaded(8, q);
            cfg.policy.min_accuracy = 0.0;
            cfg.policy.skip_verify_steps = 0;
            cfg.throttle.max_inflight = usize::MAX;
            let r = sim(&cfg).unwrap();
            let s = &r.speculative;
            assert_eq!(s.speculated_steps as usize, 8 * 2 * 8);
            assert_eq!(s.wasted_engine_tokens, 16 * s.wasted_tool_calls);
            assert_eq!(s.verified_correct + s.wasted_tool_calls, s.speculated_steps);
            match prev {
                None => {
                    assert_eq!(s.wasted_tool_calls, 0);
                    assert_eq!(r.wasted_token_fraction, 0.0);
                }
                Some((w, f)) => {
                    assert!(
                        s.wasted_tool_calls > w,
                        "q {q}: {} vs {w}",
                        s.wasted_tool_calls
                    );
                    assert!(r.wasted_token_fraction > f);
                }
            }
            if q == 0.0 {
                assert_eq!(s.wasted_tool_calls, s.speculated_steps);
            }
            prev = Some((s.wasted_tool_calls, r.wasted_token_fraction));
        }
    }

    /// The event log: every admission happened with in-flight requests below the threshold,
    /// every rejection at or above it, every speculative engine request right after its
    /// admission, and no batch above the engine's limit.
    #[test]
    fn throttle_never_admits_above_threshold() {
        let mut cfg = loaded(48, 0.9);
        cfg.throttle.max_inflight = 12;
        cfg.max_batch = 40;
        cfg.log = true;
        let r = sim(&cfg).unwrap();
        let log = &r.log;
        let admits: Vec<_> = log.iter().filter(|e| e.kind == LogKind::Admit).collect();
        let rejects: Vec<_> = log.iter().filter(|e| e.kind == LogKind::Reject).collect();
        assert!(!admits.is_empty() && !rejects.is_empty());
        assert_eq!(admits.len() as u64, r.speculative.throttle_admits);
        assert_eq!(rejects.len() as u64, r.speculative.throttle_rejections);
        assert!(admits.iter().all(|e| e.inflight < 12));
        assert!(rejects.iter().all(|e| e.inflight >= 12));
        let mut predicts = 0;
        for (i, e) in log.iter().enumerate() {
            match e.kind {
                LogKind::SubmitPredict => {
                    predicts += 1;
                    let prev = &log[i - 1];
                    assert_eq!(prev.kind, LogKind::Admit);
                    assert_eq!((prev.agent, prev.t), (e.agent, e.t));
                    assert!(e.inflight < 12);
                }
                LogKind::IterStart => assert!(e.batch >= 1 && e.batch <= 40),
                _ => {}
            }
        }
        assert_eq!(predicts, admits.len());
        assert!(r.speculative.max_batch <= 40);
        assert!(r.baseline.max_batch <= 40);
        // Times never go backwards.
        assert!(log.windows(2).all(|w| w[0].t <= w[1].t));
    }

    #[test]
    fn grid_and_markdown() {
        let base = SimConfig {
            episodes_per_agent: 1,
            ..SimConfig::default()
        };
        let g = grid(&base, &[1, 4], &[0.3, 0.9]).unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(
            g.iter().map(|r| (r.agents, r.accuracy)).collect::<Vec<_>>(),
            vec![(1, 0.3), (1, 0.9), (4, 0.3), (4, 0.9)]
        );
        // Same seed, same agent 0 world: the baselines of one agent count agree across q.
        assert_eq!(g[0].baseline, g[1].baseline);
        let md = markdown(&g);
        assert_eq!(md.lines().count(), 2 + 4);
        assert!(md.lines().nth(2).unwrap().starts_with("| 1 | 0.30 |"));
        assert!(grid(&base, &[], &[0.5]).is_err());
        assert!(grid(&base, &[1], &[]).is_err());
        assert!(grid(&base, &[1], &[1.5]).is_err());
    }

    #[test]
    fn bad_inputs() {
        let good = SimConfig::default();
        let bad = |f: &dyn Fn(&mut SimConfig), needle: &str| {
            let mut c = good.clone();
            f(&mut c);
            let e = sim(&c).expect_err(needle);
            let s = e.to_string();
            assert!(s.starts_with("spagent.sim: "), "{s}");
            assert!(s.contains(needle), "{s} lacks {needle}");
        };
        bad(&|c| c.agents = 0, "agents = 0");
        bad(&|c| c.steps = 0, "steps = 0");
        bad(&|c| c.episodes_per_agent = 0, "episodes_per_agent = 0");
        bad(&|c| c.accuracy = f64::NAN, "accuracy = NaN");
        bad(&|c| c.accuracy = -0.1, "accuracy = -0.1");
        bad(&|c| c.accuracy = 1.5, "accuracy = 1.5");
        bad(&|c| c.policy.min_accuracy = 2.0, "policy.min_accuracy");
        bad(&|c| c.policy.prior_weight = -1.0, "prior_weight");
        bad(&|c| c.tools[0].median_s = -1.0, "median latency -1");
        bad(&|c| c.tools[1].median_s = f64::NAN, "median latency NaN");
        bad(&|c| c.tools[0].sigma = -0.5, "sigma -0.5");
        bad(&|c| c.tools[0].weight = f64::NAN, "weight NaN");
        bad(&|c| c.tools.clear(), "no tools");
        bad(
            &|c| {
                for t in &mut c.tools {
                    t.weight = 0.0;
                }
            },
            "weights sum",
        );
        bad(&|c| c.curve = LatencyCurve { points: vec![] }, "no points");
        bad(
            &|c| {
                c.curve = LatencyCurve {
                    points: vec![(1, 0.02), (8, 0.01)],
                }
            },
            "not monotone",
        );
        bad(
            &|c| {
                c.curve = LatencyCurve {
                    points: vec![(4, 0.02), (2, 0.03)],
                }
            },
            "increase strictly",
        );
        bad(
            &|c| {
                c.curve = LatencyCurve {
                    points: vec![(1, f64::NAN)],
                }
            },
            "latency NaN",
        );
        bad(
            &|c| {
                c.curve = LatencyCurve {
                    points: vec![(0, 0.01)],
                }
            },
            "batch 0",
        );
        bad(&|c| c.max_batch = 0, "max_batch = 0");
        bad(&|c| c.reason_tokens_min = 0, "need 1 ≤ min ≤ max");
        bad(&|c| c.reason_tokens_min = 500, "need 1 ≤ min ≤ max");
        bad(&|c| c.predict_tokens = 128, "predict_tokens = 128");
        bad(&|c| c.agents = usize::MAX, "exceeds");
        assert!(LatencyCurve::new(vec![(1, -0.01)]).is_err());
        assert!(LatencyCurve::constant(f64::INFINITY).is_err());
    }
}
