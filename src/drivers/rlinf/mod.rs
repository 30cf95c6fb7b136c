//! RLinf M2Flow (arXiv 2509.15965): a placement planner for RL workflows (rollout → inference →
//! training, linked by channels) and an elastic pipeline that streams micro-batches through
//! them (docs/rlinf.md).
//!
//! * [`profile`]: the workflow graph (stages, channels: a DAG) and each stage's profile (seconds
//!   per micro-batch as a function of GPUs, memory per GPU, the switch cost of time-sharing),
//!   read from `profile.json`.
//! * [`mod@plan`]: the cost model ([`plan::schedule`]: a max-plus recurrence over stages and
//!   micro-batches) and the planner ([`plan::plan`]): collocated, disaggregated and hybrid
//!   placements from the s-t cuts of the graph, each with its best GPU split; the fastest that
//!   fits in memory wins. [`plan::brute_force`] checks it.
//! * [`pipeline`]: the executor: one thread per stage, bounded channels between them, a device
//!   lock (turns) per GPU group, stage work of the profiled duration (sleeps, or tessera GEMMs
//!   calibrated to it), and the measured makespan and overlap against the prediction.

pub mod pipeline;
pub mod plan;
pub mod profile;

pub use plan::{plan, schedule, Candidate, Group, Kind, Placement, Plan, Schedule};
pub use profile::{Profile, Stage, TimeModel};
