//! A communication model of sequence-parallel attention: AllGather of the KV blocks overlapped
//! with attention compute, for the single ring, the zigzag ring and the TASP (Hamiltonian)
//! schedule. **A model, not a measurement**: pure arithmetic on stated assumptions, no GPU.
//!
//! **Setup.** n GPUs; a sequence of L tokens split evenly, so each rank holds `Lr = L / n` query
//! tokens and one KV block of `2 · B · Lr · H_kv · D · e` bytes (K and V, batch B, element size e).
//! The AllGather takes `n - 1` transfer steps; attention runs over the local block and then over
//! what each step delivered.
//!
//! **Compute per step.** A full step (Q of `Lr` tokens against `Lr` KV tokens) costs
//! `4 · B · Lr² · H · D` flops (QKᵀ and PV, 2 flops per multiply-add) at an achieved rate
//! ([`Compute::FlopRate`]), or is given directly ([`Compute::StepTime`]). Causal attention with the
//! zigzag layout (each rank holds chunk i and chunk 2n-1-i) does exactly half of that at every
//! step, the local step included: the load is balanced, so every rank's step costs `c / 2`.
//!
//! **Communication per step.** A schedule with `k` concurrent rings splits the block into `k`
//! sub-chunks; at every step each rank sends one sub-chunk on each of `k` links and receives `k`
//! (together one block, so compute per step is the same for every schedule):
//! `comm = α + max(block / (k · β_link), block / β_gpu)`: each link carries `block / k` at the
//! per-link rate, and the GPU's total send rate caps the sum. The ring is `k = 1`; TASP on a
//! Hamiltonian decomposition is `k = n - 1`; the fallbacks for n = 4 and n = 6 (no decomposition
//! exists) use the rings they have (for example 2 of 3, 4 of 5 arc-disjoint Hamiltonian cycles),
//! or any `k` a schedule reports (e.g. link utilisation × (n - 1)). The `k` messages of a step are
//! issued together, so α counts once per step.
//!
//! **Overlap.** Transfer s+1 runs while block s is computed on:
//! `total = (n - 1) · max(compute, comm) + compute` (the last block's compute is not hidden).
//! Without overlap it would be `(n - 1) · (compute + comm) + compute`.
//!
//! **Consequences.** Comm-bound with α → 0, TASP's speedup over the ring tends to
//! `min(n - 1, β_gpu / β_link)`; compute-bound it tends to 1. The ratio comm/compute falls as
//! `1 / Lr`, so the speedup shrinks with sequence length, and grows with the compute rate. Not
//! modelled: kernel efficiency at short blocks or for sub-chunks, contention beyond the two
//! bandwidths, launch overheads beyond α, the backward pass.

use serde::Serialize;

use crate::error::{Error, Result};

const OP: &str = "parallel::model";

/// Per-step attention compute.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Compute {
    /// Achieved attention throughput in flop/s; a full step costs `4 · B · Lr² · H · D` flops.
    FlopRate(f64),
    /// Seconds of one full (non-causal) step, given directly.
    StepTime(f64),
}

/// The machine: n GPUs, their links and their compute.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Machine {
    /// GPUs in the group.
    pub n: usize,
    /// Bytes/s one peer-to-peer transfer reaches in one direction (one link of a full mesh).
    pub link_bw: f64,
    /// Bytes/s one GPU sends in total, to all peers together, in one direction.
    pub gpu_bw: f64,
    /// Seconds of fixed cost per step (the step's messages are issued together).
    pub latency: f64,
    pub compute: Compute,
}

/// The attention problem (one layer, forward).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Workload {
    /// Tokens of the whole sequence (split over the n ranks).
    pub seq_len: usize,
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads (GQA: fewer than `heads`).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Bytes per element (2 for bf16/f16).
    pub elem_bytes: usize,
    /// Causal with the zigzag layout (compute per step halved and balanced).
    pub causal: bool,
}

/// Predicted times of one schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Concurrent rings (links per rank per step).
    pub rings: f64,
    /// Transfer steps (n - 1).
    pub steps: usize,
    /// Bytes of one rank's KV block.
    pub block_bytes: f64,
    /// Bytes each link carries per step.
    pub link_bytes: f64,
    /// Seconds of compute per step.
    pub compute_s: f64,
    /// Seconds of communication per step.
    pub comm_s: f64,
    /// Seconds per overlapped step: max(compute, comm).
    pub step_s: f64,
    /// Seconds for the whole AllGather + attention, overlapped.
    pub total_s: f64,
    /// Seconds without overlap, for reference.
    pub total_serial_s: f64,
    /// True when communication is exposed (comm > compute).
    pub comm_bound: bool,
}

fn positive(what: &str, x: f64) -> Result<()> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            OP,
            format!("{what} must be positive, got {x}"),
        ))
    }
}

impl Machine {
    fn check(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::invalid(OP, "needs at least 1 GPU"));
        }
        positive("link bandwidth", self.link_bw)?;
        positive("GPU bandwidth", self.gpu_bw)?;
        if !(self.latency.is_finite() && self.latency >= 0.0) {
            return Err(Error::invalid(
                OP,
                format!("latency must be >= 0, got {}", self.latency),
            ));
        }
        match self.compute {
            Compute::FlopRate(f) => positive("flop rate", f),
            Compute::StepTime(t) => {
                if t.is_finite() && t >= 0.0 {
                    Ok(())
                } else {
                    Err(Error::invalid(
                        OP,
                        format!("step time must be >= 0, got {t}"),
                    ))
                }
            }
        }
    }
}

impl Workload {
    /// Tokens per rank.
    pub fn tokens_per_rank(&self, n: usize) -> f64 {
        self.seq_len as f64 / n as f64
    }

    /// Bytes of one rank's KV block (K and V).
    pub fn block_bytes(&self, n: usize) -> f64 {
        2.0 * self.batch as f64
            * self.tokens_per_rank(n)
            * (self.kv_heads * self.head_dim * self.elem_bytes) as f64
    }

    /// Flops of one full (non-causal) step.
    pub fn step_flops(&self, n: usize) -> f64 {
        let lr = self.tokens_per_rank(n);
        4.0 * self.batch as f64 * lr * lr * (self.heads * self.head_dim) as f64
    }
}

/// Predicted times of a schedule with `rings` concurrent rings (1 = the ring; n - 1 = TASP).
pub fn predict(m: &Machine, w: &Workload, rings: f64) -> Result<Prediction> {
    m.check()?;
    if w.seq_len == 0 || w.batch == 0 || w.heads == 0 || w.kv_heads == 0 || w.head_dim == 0 {
        return Err(Error::invalid(OP, format!("empty workload {w:?}")));
    }
    if w.elem_bytes == 0 {
        return Err(Error::invalid(OP, "element size must be positive"));
    }
    let max_rings = (m.n.max(2) - 1) as f64;
    if !(rings.is_finite() && rings >= 1.0 && rings <= max_rings) {
        return Err(Error::invalid(
            OP,
            format!("{rings} rings on {} GPUs: between 1 and n - 1", m.n),
        ));
    }
    let full = match m.compute {
        Compute::FlopRate(f) => w.step_flops(m.n) / f,
        Compute::StepTime(t) => t,
    };
    let compute_s = if w.causal { full / 2.0 } else { full };
    let block_bytes = w.block_bytes(m.n);
    let link_bytes = block_bytes / rings;
    let steps = m.n - 1;
    let (comm_s, step_s) = if steps == 0 {
        (0.0, compute_s)
    } else {
        let comm = m.latency + (link_bytes / m.link_bw).max(block_bytes / m.gpu_bw);
        (comm, compute_s.max(comm))
    };
    Ok(Prediction {
        rings,
        steps,
        block_bytes,
        link_bytes,
        compute_s,
        comm_s,
        step_s,
        total_s: steps as f64 * step_s + compute_s,
        total_serial_s: steps as f64 * (compute_s + comm_s) + compute_s,
        comm_bound: comm_s > compute_s,
    })
}

/// The rings TASP has on n GPUs: n - 1 (a Hamiltonian decomposition of K*_n exists for every
/// n except 4 and 6, Tillson), and for n = 4 and n = 6 the largest number of arc-disjoint
/// directed Hamiltonian cycles, 2 and 4 (found by exhaustive search; a fallback schedule that
/// also uses the remaining arcs can do better: pass its own count to [`compare`]).
pub fn tasp_rings(n: usize) -> f64 {
    match n {
        0 | 1 => 1.0,
        4 => 2.0,
        6 => 4.0,
        n => (n - 1) as f64,
    }
}

/// The ring and a TASP schedule with `rings` rings, side by side.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub ring: Prediction,
    pub tasp: Prediction,
    /// ring total / TASP total.
    pub speedup: f64,
}

/// Predicts the ring (zigzag ring when `w.causal`) and TASP with `rings` rings.
pub fn compare(m: &Machine, w: &Workload, rings: f64) -> Result<Comparison> {
    let ring = predict(m, w, 1.0)?;
    let tasp = predict(m, w, rings)?;
    Ok(Comparison {
        ring,
        tasp,
        speedup: ring.total_s / tasp.total_s,
    })
}

/// A named machine of the published tables.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub machine: Machine,
}

/// Achieved bf16 attention forward throughput assumed in the tables (flop/s).
pub const ASSUMED_FLOPS: f64 = 400e12;
/// Per-step fixed cost assumed in the tables (seconds).
pub const ASSUMED_LATENCY: f64 = 10e-6;

/// The scenarios of the published table (see docs/performance.md for every assumption):
/// - `mesh`: 8 GPUs fully connected by point-to-point links of 64 GB/s per direction (MI300X-class
///   xGMI: 7 links, 448 GB/s per GPU); a ring uses 1 of the 7 outgoing links;
/// - `switch-1/7`: 8 GPUs behind a switch (H100-class NVLink 4: 450 GB/s per GPU per direction),
///   one peer-to-peer stream assumed to reach 1/7 of it (the paper's fully-connected view);
/// - `switch-1/2`: the same, one stream reaching half of it (ceiling 2x).
pub fn scenarios(n: usize) -> Vec<Scenario> {
    let m = |link_bw: f64, gpu_bw: f64| Machine {
        n,
        link_bw,
        gpu_bw,
        latency: ASSUMED_LATENCY,
        compute: Compute::FlopRate(ASSUMED_FLOPS),
    };
    let peers = (n.max(2) - 1) as f64;
    vec![
        Scenario {
            name: "mesh",
            machine: m(64e9, 64e9 * peers),
        },
        Scenario {
            name: "switch-1/7",
            machine: m(450e9 / 7.0, 450e9),
        },
        Scenario {
            name: "switch-1/2",
            machine: m(225e9, 450e9),
        },
    ]
}

/// One row of the model table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub n: usize,
    pub rings: f64,
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    /// Compute per step, µs.
    pub compute_us: f64,
    /// Ring comm per step, µs.
    pub ring_comm_us: f64,
    /// TASP comm per step, µs.
    pub tasp_comm_us: f64,
    /// Ring total, ms.
    pub ring_total_ms: f64,
    /// TASP total, ms.
    pub tasp_total_ms: f64,
    pub speedup: f64,
}

/// The sequence lengths of the table: 8k to 1M tokens.
pub const SEQ_LENS: [usize; 8] = [
    8 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
];

/// Head configurations of the table: (heads, kv_heads, head_dim).
pub const HEAD_CONFIGS: [(usize, usize, usize); 3] = [(32, 8, 128), (32, 32, 128), (32, 32, 64)];

/// Rows for every scenario × head configuration × sequence length × {non-causal, causal}, bf16,
/// batch 1, on `n` GPUs with TASP's ring count [`tasp_rings`].
pub fn table(n: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for sc in scenarios(n) {
        for (heads, kv_heads, head_dim) in HEAD_CONFIGS {
            for seq_len in SEQ_LENS {
                for causal in [false, true] {
                    rows.push(row(&sc, seq_len, heads, kv_heads, head_dim, causal)?);
                }
            }
        }
    }
    Ok(rows)
}

/// One row.
pub fn row(
    sc: &Scenario,
    seq_len: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
) -> Result<Row> {
    let w = Workload {
        seq_len,
        batch: 1,
        heads,
        kv_heads,
        head_dim,
        elem_bytes: 2,
        causal,
    };
    let rings = tasp_rings(sc.machine.n);
    let c = compare(&sc.machine, &w, rings)?;
    Ok(Row {
        scenario: sc.name,
        n: sc.machine.n,
        rings,
        seq_len,
        heads,
        kv_heads,
        head_dim,
        causal,
        compute_us: c.ring.compute_s * 1e6,
        ring_comm_us: c.ring.comm_s * 1e6,
        tasp_comm_us: c.tasp.comm_s * 1e6,
        ring_total_ms: c.ring.total_s * 1e3,
        tasp_total_ms: c.tasp.total_s * 1e3,
        speedup: c.speedup,
    })
}

/// A token count as the tables print it (8k, 1M).
pub fn tokens(l: usize) -> String {
    if l >= 1 << 20 && l % (1 << 20) == 0 {
        format!("{}M", l >> 20)
    } else if l % 1024 == 0 {
        format!("{}k", l >> 10)
    } else {
        l.to_string()
    }
}

/// The rows as a markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| scenario | n | rings | L | H/Hkv/D | mask | compute/step µs | ring comm/step µs | \
         TASP comm/step µs | ring total ms | TASP total ms | speedup |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {}/{}/{} | {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.2}x |\n",
            r.scenario,
            r.n,
            r.rings,
            tokens(r.seq_len),
            r.heads,
            r.kv_heads,
            r.head_dim,
            if r.causal { "causal (zigzag)" } else { "full" },
            r.compute_us,
            r.ring_comm_us,
            r.tasp_comm_us,
            r.ring_total_ms,
            r.tasp_total_ms,
            r.speedup
        ));
    }
    s
}

/// Speedup of TASP over the ring as a compact grid: one line per (scenario, heads, mask), one
/// column per sequence length.
pub fn speedup_grid(rows: &[Row]) -> String {
    let mut s = String::from("| scenario | H/Hkv/D | mask |");
    for l in SEQ_LENS {
        s.push_str(&format!(" {} |", tokens(l)));
    }
    s.push_str("\n|---|---|---|");
    for _ in SEQ_LENS {
        s.push_str("---|");
    }
    s.push('\n');
    let mut keys: Vec<(&str, usize, usize, usize, bool)> = Vec::new();
    for r in rows {
        let k = (r.scenario, r.heads, r.kv_heads, r.head_dim, r.causal);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for k in keys {
        s.push_str(&format!(
            "| {} | {}/{}/{} | {} |",
            k.0,
            k.1,
            k.2,
            k.3,
            if k.4 { "causal" } else { "full" }
        ));
        for l in SEQ_LENS {
            match rows.iter().find(|r| {
                (r.scenario, r.heads, r.kv_heads, r.head_dim, r.causal) == k && r.seq_len == l
            }) {
                Some(r) => s.push_str(&format!(" {:.2}x |", r.speedup)),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(n: usize, compute: Compute, latency: f64) -> Machine {
        Machine {
            n,
            link_bw: 64e9,
            gpu_bw: 64e9 * (n - 1) as f64,
            latency,
            compute,
        }
    }

    fn work(seq_len: usize, causal: bool) -> Workload {
        Workload {
            seq_len,
            batch: 1,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            elem_bytes: 2,
            causal,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-30)
    }

    #[test]
    fn comm_bound_without_latency_gives_n_minus_1() {
        for n in [2usize, 3, 5, 7, 8, 12, 16] {
            let m = machine(n, Compute::StepTime(0.0), 0.0);
            let c = compare(&m, &work(1 << 16, false), (n - 1) as f64).unwrap();
            assert!(close(c.speedup, (n - 1) as f64), "n {n}: {}", c.speedup);
            // the same with compute tiny but nonzero: the ratio approaches n - 1 from below
            let m = machine(n, Compute::FlopRate(1e30), 0.0);
            let s = compare(&m, &work(1 << 16, false), (n - 1) as f64)
                .unwrap()
                .speedup;
            assert!(
                s <= (n - 1) as f64 + 1e-9 && s > (n - 1) as f64 * 0.999,
                "n {n}: {s}"
            );
        }
    }

    #[test]
    fn compute_bound_gives_one() {
        let m = machine(8, Compute::FlopRate(1e9), 10e-6);
        let c = compare(&m, &work(1 << 20, false), 7.0).unwrap();
        assert!(!c.ring.comm_bound && !c.tasp.comm_bound);
        assert!(close(c.speedup, 1.0), "{}", c.speedup);
    }

    #[test]
    fn one_ring_is_the_ring_and_gpu_cap_bounds_the_gain() {
        let m = machine(8, Compute::FlopRate(400e12), 10e-6);
        let c = compare(&m, &work(1 << 15, false), 1.0).unwrap();
        assert_eq!(c.ring, c.tasp);
        assert!(close(c.speedup, 1.0));
        // a switch where one stream reaches half the GPU's bandwidth: ceiling 2x
        let sw = Machine {
            link_bw: 225e9,
            gpu_bw: 450e9,
            latency: 0.0,
            compute: Compute::StepTime(0.0),
            ..m
        };
        let s = compare(&sw, &work(1 << 15, false), 7.0).unwrap().speedup;
        assert!(close(s, 2.0), "{s}");
    }

    #[test]
    fn totals_follow_the_overlap_formula() {
        let m = machine(8, Compute::FlopRate(400e12), 10e-6);
        for causal in [false, true] {
            let w = work(1 << 14, causal);
            for rings in [1.0, 3.5, 7.0] {
                let p = predict(&m, &w, rings).unwrap();
                assert!(close(p.step_s, p.compute_s.max(p.comm_s)));
                assert!(close(p.total_s, 7.0 * p.step_s + p.compute_s));
                assert!(close(
                    p.total_serial_s,
                    7.0 * (p.compute_s + p.comm_s) + p.compute_s
                ));
                assert!(p.total_s <= p.total_serial_s);
                assert!(close(p.link_bytes * rings, p.block_bytes));
            }
        }
        // block = 2 * (L/n) * Hkv * D * 2 bytes; flops = 4 (L/n)^2 H D
        let w = work(8 << 10, false);
        assert!(close(w.block_bytes(8), 2.0 * 1024.0 * 8.0 * 128.0 * 2.0));
        assert!(close(w.step_flops(8), 4.0 * 1024.0 * 1024.0 * 32.0 * 128.0));
    }

    #[test]
    fn causal_halves_compute_and_never_lowers_the_speedup() {
        let m = machine(8, Compute::FlopRate(400e12), 10e-6);
        for l in SEQ_LENS {
            let full = compare(&m, &work(l, false), 7.0).unwrap();
            let causal = compare(&m, &work(l, true), 7.0).unwrap();
            assert!(close(causal.ring.compute_s * 2.0, full.ring.compute_s));
            assert!(causal.speedup >= full.speedup - 1e-12, "L {l}");
        }
    }

    #[test]
    fn speedup_is_monotone() {
        // without latency: non-increasing in sequence length, never below 1, never above n-1
        let m = machine(8, Compute::FlopRate(400e12), 0.0);
        let mut prev = f64::INFINITY;
        for l in (1..=256).map(|i| i * 4096) {
            let s = compare(&m, &work(l, false), 7.0).unwrap().speedup;
            assert!(s <= prev + 1e-12, "L {l}: {s} after {prev}");
            assert!((1.0 - 1e-12..=7.0 + 1e-12).contains(&s));
            prev = s;
        }
        // non-decreasing in the flop rate, non-increasing in link bandwidth and in latency
        let w = work(32 << 10, false);
        let at = |flops: f64, bw: f64, lat: f64| {
            let m = Machine {
                n: 8,
                link_bw: bw,
                gpu_bw: 7.0 * bw,
                latency: lat,
                compute: Compute::FlopRate(flops),
            };
            compare(&m, &w, 7.0).unwrap().speedup
        };
        let mut prev = 0.0;
        for f in [50e12, 100e12, 200e12, 400e12, 800e12, 1600e12, 1e16] {
            let s = at(f, 64e9, 10e-6);
            assert!(s >= prev - 1e-12, "flops {f}");
            prev = s;
        }
        let mut prev = f64::INFINITY;
        for bw in [8e9, 16e9, 32e9, 64e9, 128e9, 512e9, 4096e9] {
            let s = at(400e12, bw, 10e-6);
            assert!(s <= prev + 1e-12, "bw {bw}");
            prev = s;
        }
        let mut prev = f64::INFINITY;
        for lat in [0.0, 1e-6, 10e-6, 100e-6, 1e-3, 1e-2] {
            let s = at(1e16, 64e9, lat);
            assert!(s <= prev + 1e-12, "latency {lat}");
            prev = s;
        }
        // latency dominating both schedules: the speedup tends to 1
        assert!(at(1e16, 64e9, 1e3) < 1.001);
    }

    #[test]
    fn more_rings_never_hurt() {
        let m = machine(8, Compute::FlopRate(400e12), 10e-6);
        let w = work(16 << 10, true);
        let mut prev = f64::INFINITY;
        for k in 1..=7 {
            let t = predict(&m, &w, k as f64).unwrap().total_s;
            assert!(t <= prev);
            prev = t;
        }
        // fallbacks: n = 4 and 6 use 2 and 4 rings, below n - 1
        assert_eq!(
            (tasp_rings(4), tasp_rings(6), tasp_rings(8)),
            (2.0, 4.0, 7.0)
        );
        let m4 = machine(4, Compute::StepTime(0.0), 0.0);
        let s = compare(&m4, &w, tasp_rings(4)).unwrap().speedup;
        assert!(close(s, 2.0), "{s}");
    }

    #[test]
    fn rejects_bad_inputs() {
        let m = machine(8, Compute::FlopRate(400e12), 10e-6);
        let w = work(1 << 14, false);
        assert!(predict(&m, &w, 0.5).is_err());
        assert!(predict(&m, &w, 8.0).is_err());
        assert!(predict(&m, &w, f64::NAN).is_err());
        assert!(predict(&Machine { n: 0, ..m }, &w, 1.0).is_err());
        assert!(predict(&Machine { link_bw: 0.0, ..m }, &w, 1.0).is_err());
        assert!(predict(&Machine { latency: -1.0, ..m }, &w, 1.0).is_err());
        assert!(predict(&m, &Workload { seq_len: 0, ..w }, 1.0).is_err());
        let e = predict(&m, &w, 9.0).unwrap_err();
        assert!(e.to_string().contains("parallel::model"), "{e}");
        // one GPU: no transfer steps
        let one = predict(&Machine { n: 1, ..m }, &w, 1.0).unwrap();
        assert_eq!((one.steps, one.comm_s), (0, 0.0));
        assert!(close(one.total_s, one.compute_s));
    }

    #[test]
    fn table_covers_every_case() {
        let rows = table(8).unwrap();
        assert_eq!(rows.len(), 3 * HEAD_CONFIGS.len() * SEQ_LENS.len() * 2);
        assert!(rows
            .iter()
            .all(|r| r.speedup >= 1.0 - 1e-12 && r.speedup <= 7.0 + 1e-9));
        let md = markdown(&rows);
        assert_eq!(md.lines().count(), rows.len() + 2);
        let grid = speedup_grid(&rows);
        assert_eq!(grid.lines().count(), 2 + 3 * HEAD_CONFIGS.len() * 2);
        assert!(serde_json::to_string(&rows)
            .unwrap()
            .contains("\"speedup\""));
    }
}
