//! The workflow graph and its profile: stages, channels, time per micro-batch as a function of
//! GPUs, memory per GPU, and the `profile.json` format (docs/rlinf.md).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The context of every [`Error::Format`] about a profile.
pub const CONTEXT: &str = "rlinf.profile";

/// The most micro-batches per iteration (the cost model is O(stages × micro-batches)).
pub const MAX_MICRO_BATCHES: usize = 1 << 16;

/// The most stages a profile may have (the planner works on bit masks of stages).
pub const MAX_STAGES: usize = 16;

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Format {
        context: CONTEXT.to_string(),
        msg: msg.to_string(),
    }
}

/// How long one micro-batch of a stage takes on `g` GPUs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeModel {
    /// Measured points `(gpus, seconds)`, sorted by GPUs, distinct, GPUs ≥ 1, seconds > 0.
    /// Between two points the time is interpolated linearly in `g`; above the last point the
    /// stage uses only the last point's GPUs (the time stays); below the first point the stage
    /// cannot run. The time on `g` GPUs is then the least interpolated time over `g' ≤ g`
    /// (a stage given more GPUs may leave some idle), so it never increases with `g`.
    Table(Vec<(usize, f64)>),
    /// `t(g) = serial_s + parallel_s / g`, both ≥ 0, not both 0.
    Amdahl { serial_s: f64, parallel_s: f64 },
}

impl TimeModel {
    /// The fewest GPUs the stage runs on.
    pub fn min_gpus(&self) -> usize {
        match self {
            TimeModel::Table(p) => p[0].0,
            TimeModel::Amdahl { .. } => 1,
        }
    }

    /// Seconds per micro-batch on `g` GPUs, `None` below [`TimeModel::min_gpus`].
    pub fn seconds(&self, g: usize) -> Option<f64> {
        match self {
            TimeModel::Amdahl {
                serial_s,
                parallel_s,
            } => (g >= 1).then(|| serial_s + parallel_s / g as f64),
            TimeModel::Table(p) => {
                if g < p[0].0 {
                    return None;
                }
                // The least of a piecewise-linear function over the integers g0..=min(g, last) is
                // at a breakpoint or at the end: O(points), whatever g is.
                let last = p[p.len() - 1].0;
                p.iter()
                    .take_while(|&&(x, _)| x <= g)
                    .map(|&(_, t)| t)
                    .chain(std::iter::once(lerp(p, g.min(last))))
                    .min_by(f64::total_cmp)
            }
        }
    }
}

/// Piecewise-linear interpolation of the table at `x` (within its range).
fn lerp(p: &[(usize, f64)], x: usize) -> f64 {
    let i = p.partition_point(|&(g, _)| g <= x);
    if i == 0 {
        return p[0].1;
    }
    let (g0, t0) = p[i - 1];
    if g0 == x || i == p.len() {
        return t0;
    }
    let (g1, t1) = p[i];
    t0 + (t1 - t0) * (x - g0) as f64 / (g1 - g0) as f64
}

/// One stage of the workflow (a rollout, inference or training worker, or a user-defined one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub name: String,
    pub time: TimeModel,
    /// GB per GPU whatever the GPU count (activations, buffers, a replicated model).
    pub memory_gb: f64,
    /// GB sharded evenly over the stage's GPUs (`sharded_memory_gb / g` per GPU).
    pub sharded_memory_gb: f64,
    /// Seconds to onload this stage (and offload the one before it) when it takes its turn on
    /// GPUs it time-shares with other stages; paid once per stage per iteration.
    pub switch_s: f64,
}

impl Stage {
    /// GB per GPU on `g` GPUs: `memory_gb + sharded_memory_gb / g`.
    pub fn memory_per_gpu_gb(&self, g: usize) -> f64 {
        self.memory_gb + self.sharded_memory_gb / g.max(1) as f64
    }
}

/// A validated workflow: stages, channels (a DAG), the GPU memory and the micro-batch count.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    gpu_memory_gb: f64,
    micro_batches: usize,
    gpus: Option<usize>,
    stages: Vec<Stage>,
    channels: Vec<(usize, usize)>,
    #[serde(skip)]
    topo: Vec<usize>,
    #[serde(skip)]
    preds: Vec<Vec<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    gpu_memory_gb: f64,
    micro_batches: usize,
    #[serde(default)]
    gpus: Option<usize>,
    stages: Vec<RawStage>,
    #[serde(default)]
    channels: Vec<RawChannel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    #[serde(default)]
    time: Option<Vec<(usize, f64)>>,
    #[serde(default)]
    amdahl: Option<RawAmdahl>,
    #[serde(default)]
    memory_gb: f64,
    #[serde(default)]
    sharded_memory_gb: f64,
    #[serde(default)]
    switch_s: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmdahl {
    serial_s: f64,
    parallel_s: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    from: String,
    to: String,
}

fn check_number(stage: &str, what: &str, v: f64) -> Result<()> {
    if !v.is_finite() || v < 0.0 {
        return Err(bad(format!(
            "stage {stage:?}: {what} must be a finite number >= 0, got {v}"
        )));
    }
    Ok(())
}

impl Profile {
    /// Parses and validates a `profile.json` (format in docs/rlinf.md). Every problem is an
    /// [`Error::Format`] with context `"rlinf.profile"`.
    pub fn from_json(bytes: &[u8]) -> Result<Profile> {
        let raw: RawProfile = serde_json::from_slice(bytes).map_err(bad)?;
        let mut stages = Vec::with_capacity(raw.stages.len());
        for s in raw.stages {
            let time = match (s.time, s.amdahl) {
                (Some(t), None) => TimeModel::Table(t),
                (None, Some(a)) => TimeModel::Amdahl {
                    serial_s: a.serial_s,
                    parallel_s: a.parallel_s,
                },
                (Some(_), Some(_)) => {
                    return Err(bad(format!(
                        "stage {:?}: give either \"time\" or \"amdahl\", not both",
                        s.name
                    )))
                }
                (None, None) => {
                    return Err(bad(format!(
                    "stage {:?}: missing field \"time\" (a table of [gpus, seconds]) or \"amdahl\"",
                    s.name
                )))
                }
            };
            stages.push(Stage {
                name: s.name,
                time,
                memory_gb: s.memory_gb,
                sharded_memory_gb: s.sharded_memory_gb,
                switch_s: s.switch_s,
            });
        }
        let channels: Vec<(String, String)> =
            raw.channels.into_iter().map(|c| (c.from, c.to)).collect();
        Profile::new(
            stages,
            &channels,
            raw.gpu_memory_gb,
            raw.micro_batches,
            raw.gpus,
        )
    }

    /// Validates a workflow built in code: names unique and non-empty, at least one stage, time
    /// models and memory well formed, channels between known distinct stages, no duplicate
    /// channel, no cycle, the graph (weakly) connected, `micro_batches >= 1`, GPU memory > 0,
    /// `gpus` (the default GPU count) ≥ 1 when given.
    pub fn new(
        stages: Vec<Stage>,
        channels: &[(String, String)],
        gpu_memory_gb: f64,
        micro_batches: usize,
        gpus: Option<usize>,
    ) -> Result<Profile> {
        if stages.is_empty() {
            return Err(bad("the workflow has no stages"));
        }
        if stages.len() > MAX_STAGES {
            return Err(bad(format!(
                "{} stages; at most {MAX_STAGES} are supported",
                stages.len()
            )));
        }
        if !gpu_memory_gb.is_finite() || gpu_memory_gb <= 0.0 {
            return Err(bad(format!(
                "gpu_memory_gb must be a finite number > 0, got {gpu_memory_gb}"
            )));
        }
        if micro_batches == 0 || micro_batches > MAX_MICRO_BATCHES {
            return Err(bad(format!(
                "micro_batches must be in 1..={MAX_MICRO_BATCHES}, got {micro_batches}"
            )));
        }
        if gpus == Some(0) {
            return Err(bad("gpus must be >= 1"));
        }
        for (i, s) in stages.iter().enumerate() {
            if s.name.is_empty() {
                return Err(bad(format!("stage {i} has an empty name")));
            }
            if stages[..i].iter().any(|o| o.name == s.name) {
                return Err(bad(format!("duplicate stage name {:?}", s.name)));
            }
            check_number(&s.name, "memory_gb", s.memory_gb)?;
            check_number(&s.name, "sharded_memory_gb", s.sharded_memory_gb)?;
            check_number(&s.name, "switch_s", s.switch_s)?;
            match &s.time {
                TimeModel::Table(p) => {
                    if p.is_empty() {
                        return Err(bad(format!("stage {:?}: empty time table", s.name)));
                    }
                    for (j, &(g, t)) in p.iter().enumerate() {
                        if g == 0 {
                            return Err(bad(format!(
                                "stage {:?}: time table point {j} has 0 GPUs",
                                s.name
                            )));
                        }
                        if !t.is_finite() || t <= 0.0 {
                            return Err(bad(format!(
                                "stage {:?}: time table point {j} ({g} GPUs): seconds must be a finite number > 0, got {t}",
                                s.name
                            )));
                        }
                        if j > 0 && p[j - 1].0 >= g {
                            return Err(bad(format!(
                                "stage {:?}: time table GPU counts must increase, got {} then {g}",
                                s.name,
                                p[j - 1].0
                            )));
                        }
                    }
                }
                TimeModel::Amdahl {
                    serial_s,
                    parallel_s,
                } => {
                    check_number(&s.name, "amdahl.serial_s", *serial_s)?;
                    check_number(&s.name, "amdahl.parallel_s", *parallel_s)?;
                    if serial_s + parallel_s <= 0.0 {
                        return Err(bad(format!(
                            "stage {:?}: amdahl serial_s + parallel_s must be > 0",
                            s.name
                        )));
                    }
                }
            }
        }
        let n = stages.len();
        let find = |name: &str| {
            stages
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| bad(format!("channel names an unknown stage {name:?}")))
        };
        let mut edges = Vec::with_capacity(channels.len());
        for (a, b) in channels {
            let (u, v) = (find(a)?, find(b)?);
            if u == v {
                return Err(bad(format!("channel from {a:?} to itself")));
            }
            if edges.contains(&(u, v)) {
                return Err(bad(format!("duplicate channel {a:?} -> {b:?}")));
            }
            edges.push((u, v));
        }
        // Kahn's algorithm, smallest index first: a deterministic topological order.
        let mut indeg = vec![0usize; n];
        let mut preds = vec![vec![]; n];
        for &(u, v) in &edges {
            indeg[v] += 1;
            preds[v].push(u);
        }
        let mut topo = Vec::with_capacity(n);
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&v| indeg[v] == 0).collect();
        while let Some(u) = ready.pop_first() {
            topo.push(u);
            for &(a, b) in &edges {
                if a == u {
                    indeg[b] -= 1;
                    if indeg[b] == 0 {
                        ready.insert(b);
                    }
                }
            }
        }
        if topo.len() < n {
            let stuck: Vec<&str> = (0..n)
                .filter(|v| !topo.contains(v))
                .map(|v| stages[v].name.as_str())
                .collect();
            return Err(bad(format!(
                "the channels form a cycle (stages on or after it: {})",
                stuck.join(", ")
            )));
        }
        // Weak connectivity: one workflow, not several.
        let mut comp: Vec<usize> = (0..n).collect();
        fn root(c: &mut [usize], mut x: usize) -> usize {
            while c[x] != x {
                c[x] = c[c[x]];
                x = c[x];
            }
            x
        }
        for &(u, v) in &edges {
            let (a, b) = (root(&mut comp, u), root(&mut comp, v));
            comp[a] = b;
        }
        let r0 = root(&mut comp, 0);
        if let Some(v) = (1..n).find(|&v| root(&mut comp, v) != r0) {
            return Err(bad(format!(
                "stage {:?} is not connected to stage {:?} by channels: the workflow must be one graph",
                stages[v].name, stages[0].name
            )));
        }
        Ok(Profile {
            gpu_memory_gb,
            micro_batches,
            gpus,
            stages,
            channels: edges,
            topo,
            preds,
        })
    }

    /// GB of memory per GPU.
    pub fn gpu_memory_gb(&self) -> f64 {
        self.gpu_memory_gb
    }

    /// Micro-batches per iteration.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The GPU count the profile names, if any (the CLI's `--gpus` overrides it).
    pub fn gpus(&self) -> Option<usize> {
        self.gpus
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Channels as `(from, to)` stage indices.
    pub fn channels(&self) -> &[(usize, usize)] {
        &self.channels
    }

    /// A topological order of the stages (Kahn's, smallest index first).
    pub fn topo_order(&self) -> &[usize] {
        &self.topo
    }

    /// The stages with a channel into `s`.
    pub fn preds(&self, s: usize) -> &[usize] {
        &self.preds[s]
    }

    /// The same workflow with another micro-batch count (≥ 1).
    pub fn with_micro_batches(&self, micro_batches: usize) -> Result<Profile> {
        if micro_batches == 0 || micro_batches > MAX_MICRO_BATCHES {
            return Err(bad(format!(
                "micro_batches must be in 1..={MAX_MICRO_BATCHES}, got {micro_batches}"
            )));
        }
        Ok(Profile {
            micro_batches,
            ..self.clone()
        })
    }

    /// Stage index by name.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}
