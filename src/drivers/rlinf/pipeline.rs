//! The elastic pipeline executor: streams the micro-batches of one iteration through the
//! workflow's channels under a placement, and measures what it achieved against the cost model.
//!
//! On this (CPU) device every stage is an OS thread and every channel a bounded
//! [`std::sync::mpsc::sync_channel`] of capacity `micro_batches` (a collocated group's later
//! stages take their turn only after the earlier ones have produced every micro-batch, so the
//! channels must hold them all). A group of stages that share GPUs has a device lock: a turn
//! counter under a mutex and condition variable, taken in the profile's topological order; a stage
//! sleeps its switch cost (the offload/onload) when its turn begins. Stage work ([`Work`]) is
//! a sleep of the stage's profiled time on its group's GPUs times `scale` (wall seconds per
//! profile second), or tessera GEMMs on a device calibrated to last that long alone. Nothing runs
//! on a GPU and no tessera stream or event is used: the timing is
//! [`std::time::Instant`] around each micro-batch.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Barrier, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plan::{schedule, schedule_with, Placement};
use super::profile::Profile;
use crate::error::{Error, Result};
use crate::ops::gemm::{self, Epilogue};
use crate::{Device, DeviceBuffer};

/// What a stage does for one micro-batch.
#[derive(Debug, Clone)]
pub enum Work {
    /// Sleep the stage's profiled time × scale.
    Sleep,
    /// Run bf16 GEMMs `D [size, size] = A·Bᵀ` (f32 out) with [`crate::ops::gemm::dense`] on
    /// `device`, as many per micro-batch as last the profiled time × scale when one GEMM runs
    /// alone (calibrated before the run: the median of 7 timed GEMMs after a warm-up). The
    /// prediction uses the calibrated time; stages computing at once share the machine's cores,
    /// which the cost model does not know about.
    Gemm { device: Device, size: usize },
}

impl Work {
    fn describe(&self) -> String {
        match self {
            Work::Sleep => "cpu threads, one per stage; stage work: sleeps".into(),
            Work::Gemm { device, size } => format!(
                "cpu threads, one per stage; stage work: {size}x{size}x{size} bf16 gemm::dense on {}",
                device.describe()
            ),
        }
    }
}

type Operands = (DeviceBuffer<half::bf16>, DeviceBuffer<half::bf16>);

fn gemm_inputs(dev: &Device, size: usize) -> Result<Operands> {
    let v: Vec<half::bf16> = (0..size * size)
        .map(|i| half::bf16::from_f32(((i * 7919) % 17) as f32 / 17.0 - 0.5))
        .collect();
    Ok((dev.upload(&v, "rlinf.a")?, dev.upload(&v, "rlinf.b")?))
}

/// Seconds one `size³` GEMM takes alone on `dev` (median of 7 after a warm-up).
pub fn calibrate_gemm(dev: &Device, size: usize) -> Result<f64> {
    if size == 0 || size > 4096 {
        return Err(Error::invalid(
            "rlinf.run",
            format!("GEMM size {size} must be in 1..=4096"),
        ));
    }
    let (a, b) = gemm_inputs(dev, size)?;
    gemm::dense::<half::bf16, f32>(&a, &b, size, size, size, &Epilogue::new())?;
    let mut t: Vec<f64> = (0..7)
        .map(|_| {
            let s = Instant::now();
            gemm::dense::<half::bf16, f32>(&a, &b, size, size, size, &Epilogue::new())
                .map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[3])
}

/// The longest run [`run`] accepts: predicted makespan times scale, seconds.
pub const MAX_WALL_S: f64 = 120.0;

/// One stage of a run.
#[derive(Debug, Clone, Serialize)]
pub struct StageRun {
    pub name: String,
    pub group: usize,
    pub gpus: usize,
    /// Planned wall milliseconds per micro-batch (profile seconds × scale).
    pub planned_ms: f64,
    /// Measured milliseconds spent in micro-batches (excluding the switch).
    pub busy_ms: f64,
    /// When its first micro-batch started and its last one finished, ms after the start.
    pub first_start_ms: f64,
    pub last_finish_ms: f64,
}

/// What a run achieved against the cost model's prediction for the same placement.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub kind: &'static str,
    pub placement: String,
    pub micro_batches: usize,
    /// Wall seconds per profile second.
    pub scale: f64,
    /// The cost model's makespan × scale, ms.
    pub predicted_ms: f64,
    pub measured_ms: f64,
    /// measured / predicted.
    pub ratio: f64,
    /// Mean number of stages computing at once: Σ busy / makespan, predicted and measured.
    pub predicted_overlap: f64,
    pub measured_overlap: f64,
    pub stages: Vec<StageRun>,
    /// Where and what the stages ran.
    pub device: String,
    /// GEMMs per micro-batch per stage (empty with sleeps).
    pub gemms_per_micro_batch: Vec<usize>,
}

/// The scale that makes a placement's predicted makespan last `target_ms` of wall time.
pub fn scale_for(p: &Profile, pl: &Placement, target_ms: f64) -> Result<f64> {
    if !target_ms.is_finite() || target_ms <= 0.0 {
        return Err(Error::invalid(
            "rlinf.run",
            format!("target {target_ms} ms must be > 0"),
        ));
    }
    let s = schedule(p, pl)?;
    Ok(target_ms / 1e3 / s.makespan_s)
}

type Turn = (Mutex<usize>, Condvar);

struct Shared {
    turns: Vec<Turn>,
    abort: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn abort(&self) {
        self.abort.store(true, std::sync::atomic::Ordering::SeqCst);
        for (m, c) in &self.turns {
            let _guard = m.lock();
            c.notify_all();
        }
    }
    fn aborted(&self) -> bool {
        self.abort.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn lock_err() -> Error {
    Error::invalid(
        "rlinf.run",
        "a stage thread failed while holding a device lock",
    )
}

struct Worker {
    stage: usize,
    group: usize,
    turn: usize,
    shared_group: bool,
    work: Duration,
    gemms: usize,
    switch: Duration,
    inputs: Vec<Receiver<usize>>,
    outputs: Vec<SyncSender<usize>>,
}

fn work(
    w: Worker,
    b: usize,
    shared: &Shared,
    name: &str,
    kind: &Work,
) -> Result<Vec<(Instant, Instant)>> {
    let mut spans = Vec::with_capacity(b);
    let inputs = match kind {
        Work::Gemm { device, size } => Some((gemm_inputs(device, *size)?, *size)),
        Work::Sleep => None,
    };
    if w.shared_group {
        let (m, c) = &shared.turns[w.group];
        let mut t = m.lock().map_err(|_| lock_err())?;
        while *t != w.turn {
            if shared.aborted() {
                return Err(Error::invalid("rlinf.run", format!("{name}: aborted")));
            }
            t = c.wait(t).map_err(|_| lock_err())?;
        }
        drop(t);
        std::thread::sleep(w.switch);
    }
    for i in 0..b {
        for rx in &w.inputs {
            let v = rx.recv().map_err(|_| {
                Error::invalid(
                    "rlinf.run",
                    format!("{name}: an upstream stage stopped before micro-batch {i}"),
                )
            })?;
            if v != i {
                return Err(Error::invalid(
                    "rlinf.run",
                    format!("{name}: received micro-batch {v}, expected {i}"),
                ));
            }
        }
        let a = Instant::now();
        match &inputs {
            None => std::thread::sleep(w.work),
            Some(((x, y), n)) => {
                for _ in 0..w.gemms {
                    gemm::dense::<half::bf16, f32>(x, y, *n, *n, *n, &Epilogue::new())?;
                }
            }
        }
        let e = Instant::now();
        spans.push((a, e));
        for tx in &w.outputs {
            tx.send(i).map_err(|_| {
                Error::invalid(
                    "rlinf.run",
                    format!("{name}: a downstream stage stopped at micro-batch {i}"),
                )
            })?;
        }
    }
    if w.shared_group {
        let (m, c) = &shared.turns[w.group];
        *m.lock().map_err(|_| lock_err())? += 1;
        c.notify_all();
    }
    Ok(spans)
}

/// Runs one iteration of `micro_batches` under `pl`, each stage's work a sleep of its profiled
/// time × `scale`, and reports the measured makespan and overlap against [`schedule`]'s.
pub fn run(p: &Profile, pl: &Placement, scale: f64) -> Result<RunReport> {
    run_with(p, pl, scale, &Work::Sleep)
}

/// [`run`] with the stage work given: sleeps, or GEMMs on a device ([`Work::Gemm`]: the
/// prediction is [`schedule_with`] the calibrated GEMM time × GEMMs per micro-batch).
pub fn run_with(p: &Profile, pl: &Placement, scale: f64, kind: &Work) -> Result<RunReport> {
    if !scale.is_finite() || scale <= 0.0 {
        return Err(Error::invalid(
            "rlinf.run",
            format!("scale {scale} must be > 0"),
        ));
    }
    let profiled = schedule(p, pl)?;
    let (sched, gemms) = match kind {
        Work::Sleep => (profiled, vec![]),
        Work::Gemm { device, size } => {
            let c = calibrate_gemm(device, *size)?;
            let gemms: Vec<usize> = profiled
                .stage_s
                .iter()
                .map(|t| ((t * scale / c).round() as usize).max(1))
                .collect();
            let t: Vec<f64> = gemms.iter().map(|&g| g as f64 * c / scale).collect();
            (schedule_with(p, pl, Some(&t))?, gemms)
        }
    };
    if sched.makespan_s * scale > MAX_WALL_S {
        return Err(Error::invalid(
            "rlinf.run",
            format!(
                "the run would last {:.1} s (more than {MAX_WALL_S} s): lower the scale",
                sched.makespan_s * scale
            ),
        ));
    }
    let n = p.stages().len();
    let b = p.micro_batches();
    let mut group = vec![0; n];
    let mut turn = vec![0; n];
    for (gi, g) in pl.groups.iter().enumerate() {
        for (j, &s) in g.stages.iter().enumerate() {
            group[s] = gi;
            turn[s] = j;
        }
    }
    let mut inputs: Vec<Vec<Receiver<usize>>> = (0..n).map(|_| vec![]).collect();
    let mut outputs: Vec<Vec<SyncSender<usize>>> = (0..n).map(|_| vec![]).collect();
    for &(u, v) in p.channels() {
        let (tx, rx) = sync_channel(b);
        outputs[u].push(tx);
        inputs[v].push(rx);
    }
    let secs = |s: f64| Duration::from_secs_f64(s * scale);
    let mut workers: Vec<Worker> = Vec::with_capacity(n);
    for (s, (ins, outs)) in inputs.into_iter().zip(outputs).enumerate() {
        workers.push(Worker {
            stage: s,
            group: group[s],
            turn: turn[s],
            shared_group: pl.groups[group[s]].stages.len() > 1,
            work: secs(sched.stage_s[s]),
            gemms: gemms.get(s).copied().unwrap_or(0),
            switch: secs(sched.switch_s[s]),
            inputs: ins,
            outputs: outs,
        });
    }
    let shared = Shared {
        turns: pl
            .groups
            .iter()
            .map(|_| (Mutex::new(0), Condvar::new()))
            .collect(),
        abort: false.into(),
    };
    let barrier = Barrier::new(n + 1);
    let start: OnceLock<Instant> = OnceLock::new();
    let results = std::thread::scope(|sc| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| {
                let (shared, barrier) = (&shared, &barrier);
                let name = p.stages()[w.stage].name.as_str();
                sc.spawn(move || {
                    barrier.wait();
                    let r = work(w, b, shared, name, kind);
                    if r.is_err() {
                        shared.abort();
                    }
                    r
                })
            })
            .collect();
        let _ = start.set(Instant::now());
        barrier.wait();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::invalid("rlinf.run", "a stage thread panicked")))
            })
            .collect::<Vec<_>>()
    });
    let t0 = *start
        .get()
        .ok_or_else(|| Error::invalid("rlinf.run", "no start time"))?;
    let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1e3;
    let mut stages = Vec::with_capacity(n);
    let mut measured_ms: f64 = 0.0;
    let mut busy_total = 0.0;
    for (s, r) in results.into_iter().enumerate() {
        let spans = r?;
        let busy: f64 = spans
            .iter()
            .map(|(a, e)| e.duration_since(*a).as_secs_f64() * 1e3)
            .sum();
        busy_total += busy;
        let last = spans.last().map_or(0.0, |x| ms(x.1));
        measured_ms = measured_ms.max(last);
        stages.push(StageRun {
            name: p.stages()[s].name.clone(),
            group: group[s],
            gpus: pl.groups[group[s]].gpus,
            planned_ms: sched.stage_s[s] * scale * 1e3,
            busy_ms: busy,
            first_start_ms: spans.first().map_or(0.0, |x| ms(x.0)),
            last_finish_ms: last,
        });
    }
    let predicted_ms = sched.makespan_s * scale * 1e3;
    Ok(RunReport {
        kind: pl.kind().name(),
        placement: pl.describe(p),
        micro_batches: b,
        scale,
        predicted_ms,
        measured_ms,
        ratio: measured_ms / predicted_ms,
        predicted_overlap: sched.overlap,
        measured_overlap: busy_total / measured_ms,
        stages,
        device: kind.describe(),
        gemms_per_micro_batch: gemms,
    })
}

/// A markdown summary of a run.
pub fn markdown(r: &RunReport) -> String {
    let mut s = format!(
        "RLinf pipeline run ({}): {} {}, {} micro-batches, {:.3e} wall s per profile s\n\n",
        r.device, r.kind, r.placement, r.micro_batches, r.scale
    );
    s += "| stage | group | GPUs | planned ms/micro-batch | busy ms | first start ms | last finish ms |\n";
    s += "|---|---|---|---|---|---|---|\n";
    for st in &r.stages {
        s += &format!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} |\n",
            st.name,
            st.group,
            st.gpus,
            st.planned_ms,
            st.busy_ms,
            st.first_start_ms,
            st.last_finish_ms
        );
    }
    if !r.gemms_per_micro_batch.is_empty() {
        s += &format!("\nGEMMs per micro-batch: {:?}\n", r.gemms_per_micro_batch);
    }
    s += &format!(
        "\nmakespan: predicted {:.1} ms, measured {:.1} ms (x{:.3}); overlap (mean stages busy): predicted {:.2}, measured {:.2}\n",
        r.predicted_ms, r.measured_ms, r.ratio, r.predicted_overlap, r.measured_overlap
    );
    s
}
