//! Sequence-parallel attention (`parallel::attention`) over simulated ranks equals single-device
//! attention on the whole sequence: against the f64 dense-mask reference (O relative L2 <= 1e-2,
//! LSE abs 1e-3, the attention family's tolerance in tests/attention.rs) and against
//! `attention::forward` on the full sequence on the same device (O relative L2 <= 1e-2).
//!
//! Matrix: n in {2, 3, 5, 7, 8, 12} with TASP rings, n = 4 and 6 through their fallback
//! schedules, the single-ring (Ring Attention) baseline, a multi-node schedule; causal (zigzag)
//! and non-causal; bf16 and f16; on the CPU path for all of them and on the host SIMT executor
//! (wave32 in order; wave64 and shuffled schedules for a few) at small sizes. Sequence lengths
//! not divisible by n x subs (uneven pieces, empty pieces, fewer tokens than ranks). Plus the
//! AllGather plan property tests and bad inputs.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::attention::{self, Attention, HalfFloat, MaskMode, Path, Positions};
use tessera::parallel::attention::{self as sp, RankQkv, SpAttention};
use tessera::parallel::plan::{all_gather, recv_k, recv_v, AllGatherPlan, GatherLayout, Segment};
use tessera::parallel::transport::P2p;
use tessera::parallel::{Copy, RankBuffers, Simulated, Transport};
use tessera::reference::attention as reference;
use tessera::topology;
use tessera::verify::Rng;
use tessera::{Device, Schedule, SimtConfig};

const TOL_O: f64 = 1e-2;
const TOL_LSE: f64 = 1e-3;

/// The schedules a case runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sched {
    /// `topology::hamiltonian_decomposition(n)` (fallback for 4 and 6).
    Tasp,
    /// `topology::single_ring(n)`: the Ring Attention baseline.
    Ring,
    /// `topology::multi_node(nodes, per_node)`.
    MultiNode(usize, usize),
    /// `topology::search::double_cover(n)` (n = 4, 6): 2 (n - 1) rings using every link twice.
    DoubleCover,
}

fn plan_of(s: Sched, n: usize) -> AllGatherPlan {
    let schedule = match s {
        Sched::Tasp => topology::hamiltonian_decomposition(n),
        Sched::Ring => topology::single_ring(n),
        Sched::MultiNode(u, m) => topology::multi_node(u, m),
        Sched::DoubleCover => {
            let rings = topology::search::double_cover(n).unwrap();
            return AllGatherPlan::from_rings(n, &rings).unwrap();
        }
    }
    .unwrap();
    assert_eq!(schedule.n, n);
    topology::validate(&schedule).unwrap();
    AllGatherPlan::new(&schedule).unwrap()
}

struct Problem {
    seq_len: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    causal: bool,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Problem {
    fn new<T: HalfFloat>(
        seq_len: usize,
        heads: usize,
        kv_heads: usize,
        d: usize,
        causal: bool,
        seed: u64,
    ) -> Problem {
        let mut r = Rng(seed);
        let mut gen = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| T::from_f64((r.unit() - 0.5) * 4.0).to_f32())
                .collect()
        };
        Problem {
            seq_len,
            heads,
            kv_heads,
            d,
            causal,
            q: gen(seq_len * heads * d),
            k: gen(seq_len * kv_heads * d),
            v: gen(seq_len * kv_heads * d),
        }
    }

    fn mode(&self) -> MaskMode {
        if self.causal {
            MaskMode::Causal
        } else {
            MaskMode::Full
        }
    }

    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let l = self.seq_len;
        let pos: Vec<i32> = (0..l as i32).collect();
        let zeros = vec![0i32; l];
        let valid = vec![1u8; l];
        let cu = [0, l as i32];
        reference::attention(&reference::Problem {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.d,
            cu_q: &cu,
            cu_kv: &cu,
            q_pos: &pos,
            kv_pos: &pos,
            q_depth: &zeros,
            kv_depth: &zeros,
            kv_valid: &valid,
            scale: 1.0 / (self.d as f32).sqrt(),
            mode: self.mode(),
        })
    }

    fn upload<T: HalfFloat>(&self, dev: &Device) -> [tessera::DeviceBuffer<T>; 3] {
        let up = |x: &[f32]| -> Vec<T> { x.iter().map(|&y| T::from_f64(y as f64)).collect() };
        [
            dev.upload(&up(&self.q), "q").unwrap(),
            dev.upload(&up(&self.k), "k").unwrap(),
            dev.upload(&up(&self.v), "v").unwrap(),
        ]
    }

    fn config<'a>(&self, plan: &'a AllGatherPlan) -> SpAttention<'a> {
        SpAttention {
            plan,
            seq_len: self.seq_len,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.d,
            scale: 1.0 / (self.d as f32).sqrt(),
            causal: self.causal,
            path: Path::Auto,
        }
    }

    /// `attention::forward` on the whole sequence.
    fn single_device<T: HalfFloat>(&self, dev: &Device) -> (Vec<f32>, Vec<f32>) {
        let [q, k, v] = self.upload::<T>(dev);
        let cu = dev.upload(&[0, self.seq_len as i32], "cu").unwrap();
        let out = attention::forward(&Attention {
            q: &q,
            k: &k,
            v: &v,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.d,
            cu_seqlens_q: &cu,
            cu_seqlens_kv: &cu,
            max_seqlen_q: self.seq_len,
            max_seqlen_kv: self.seq_len,
            q_pos: Positions::Implicit { offset: 0 },
            kv_pos: Positions::Implicit { offset: 0 },
            q_depth: None,
            kv_depth: None,
            kv_valid: None,
            scale: 1.0 / (self.d as f32).sqrt(),
            mode: self.mode(),
            path: Path::Auto,
        })
        .unwrap();
        (out.o.download().unwrap(), out.lse.download().unwrap())
    }
}

fn rel_l2(a: &[f32], r: &[f64]) -> f64 {
    assert_eq!(a.len(), r.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(r) {
        num += (x as f64 - y).powi(2);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

fn max_lse_err(l: &[f32], r: &[f64], what: &str) -> f64 {
    assert_eq!(l.len(), r.len(), "{what}: LSE length");
    let mut worst = 0f64;
    for (i, (&x, &y)) in l.iter().zip(r).enumerate() {
        if y == f64::NEG_INFINITY {
            assert_eq!(x, f32::NEG_INFINITY, "{what}: LSE[{i}]");
        } else {
            assert!(x.is_finite(), "{what}: LSE[{i}] = {x}");
            worst = worst.max((x as f64 - y).abs());
        }
    }
    worst
}

/// Worst errors seen: (O vs reference, O vs single-device, LSE abs).
#[derive(Default, Debug, Clone, Copy)]
struct Worst(f64, f64, f64);

impl Worst {
    fn fold(&mut self, o: Worst) {
        self.0 = self.0.max(o.0);
        self.1 = self.1.max(o.1);
        self.2 = self.2.max(o.2);
    }
}

/// Runs one case on one device and asserts the tolerances; returns the errors.
fn check<T: HalfFloat>(dev: &Device, p: &Problem, sched: Sched, n: usize) -> Worst {
    let plan = plan_of(sched, n);
    let (ro, rl) = p.reference();
    let [q, k, v] = p.upload::<T>(dev);
    let what = format!(
        "{} {} n={n} {sched:?} L={} causal={}",
        dev.backend(),
        T::KIND.name(),
        p.seq_len,
        p.causal
    );
    let (out, stats) = sp::forward_simulated(&p.config(&plan), &q, &k, &v)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let (o, l) = (out.o.download().unwrap(), out.lse.download().unwrap());
    assert!(o.iter().all(|x| x.is_finite()), "{what}: non-finite O");
    let e_ref = rel_l2(&o, &ro);
    let e_lse = max_lse_err(&l, &rl, &what);
    let (so, _) = p.single_device::<T>(dev);
    let sd: Vec<f64> = so.iter().map(|&x| x as f64).collect();
    let e_sd = rel_l2(&o, &sd);
    assert!(e_ref <= TOL_O, "{what}: O rel L2 vs reference {e_ref}");
    assert!(e_sd <= TOL_O, "{what}: O rel L2 vs single device {e_sd}");
    assert!(e_lse <= TOL_LSE, "{what}: LSE abs {e_lse}");
    assert!(stats.forward_calls >= n.min(p.seq_len), "{what}: {stats:?}");
    Worst(e_ref, e_sd, e_lse)
}

fn simt(wave: u32, schedule: Schedule) -> Device {
    Device::simt_with(SimtConfig {
        wave,
        schedule,
        workers: 2,
        ..Default::default()
    })
    .unwrap()
}

/// One case in the dtype chosen by `bf`.
#[allow(clippy::too_many_arguments)]
fn case(
    dev: &Device,
    bf: bool,
    l: usize,
    hk: (usize, usize, usize),
    causal: bool,
    sched: Sched,
    n: usize,
    seed: u64,
) -> Worst {
    let (h, kv, d) = hk;
    if bf {
        check::<bf16>(
            dev,
            &Problem::new::<bf16>(l, h, kv, d, causal, seed),
            sched,
            n,
        )
    } else {
        check::<f16>(
            dev,
            &Problem::new::<f16>(l, h, kv, d, causal, seed),
            sched,
            n,
        )
    }
}

const N_MATRIX: [usize; 8] = [2, 3, 4, 5, 6, 7, 8, 12];

/// Every n of the matrix (4 and 6 through their fallback schedules), TASP and single ring, causal
/// and not, bf16 (H 2, H_kv 1) and f16 (H 4, H_kv 2), on the CPU path. The length
/// 4 n (n - 1) + 3 is never a multiple of n x subs.
#[test]
fn cpu_path_matrix() {
    let t0 = Instant::now();
    let dev = Device::cpu();
    let mut worst = Worst::default();
    for n in N_MATRIX {
        for sched in [Sched::Tasp, Sched::Ring] {
            for causal in [false, true] {
                let l = 4 * n * (n - 1) + 3;
                let seed = (n * 10 + causal as usize) as u64;
                worst.fold(case(&dev, true, l, (2, 1, 64), causal, sched, n, seed));
                worst.fold(case(&dev, false, l, (4, 2, 64), causal, sched, n, seed + 1));
            }
        }
    }
    eprintln!(
        "cpu matrix: worst (O vs ref, O vs single device, LSE abs) {worst:?} in {:.1?}",
        t0.elapsed()
    );
}

/// Host SIMT wave32 in order: every n with TASP rings, causal and not, both dtypes; the single
/// ring for a few n. Small sizes (2 n (n - 1) + 1 tokens, H 2, H_kv 1, D 64).
#[test]
fn simt_wave32_matrix() {
    let t0 = Instant::now();
    let dev = simt(32, Schedule::InOrder);
    let mut worst = Worst::default();
    for n in N_MATRIX {
        for causal in [false, true] {
            let l = 2 * n * (n - 1) + 1;
            let seed = 100 + n as u64;
            let bf = (n + causal as usize) % 2 == 0;
            worst.fold(case(&dev, bf, l, (2, 1, 64), causal, Sched::Tasp, n, seed));
            if [3, 8].contains(&n) {
                worst.fold(case(
                    &dev,
                    !bf,
                    l,
                    (2, 1, 64),
                    causal,
                    Sched::Ring,
                    n,
                    seed + 7,
                ));
            }
        }
    }
    eprintln!(
        "simt wave32 matrix: worst {worst:?} in {:.1?}",
        t0.elapsed()
    );
}

/// Host SIMT wave64 (the HIP sources) and shuffled block schedules on a few cases; GQA 2 with
/// D = 128 on one.
#[test]
#[allow(clippy::type_complexity)]
fn simt_wave64_and_shuffled() {
    let t0 = Instant::now();
    let mut worst = Worst::default();
    let cases: [(
        u32,
        Schedule,
        usize,
        bool,
        bool,
        Sched,
        (usize, usize, usize),
    ); 5] = [
        (
            64,
            Schedule::InOrder,
            5,
            true,
            false,
            Sched::Tasp,
            (2, 1, 64),
        ),
        (
            64,
            Schedule::Shuffled(0x51),
            8,
            true,
            true,
            Sched::Tasp,
            (2, 1, 64),
        ),
        (
            64,
            Schedule::InOrder,
            7,
            false,
            true,
            Sched::Ring,
            (2, 1, 64),
        ),
        (
            32,
            Schedule::Shuffled(0x52),
            6,
            false,
            false,
            Sched::Tasp,
            (2, 1, 64),
        ),
        (
            32,
            Schedule::Shuffled(0x53),
            4,
            true,
            true,
            Sched::Tasp,
            (4, 2, 128),
        ),
    ];
    for (i, (wave, schedule, n, causal, bf, sched, hk)) in cases.into_iter().enumerate() {
        let dev = simt(wave, schedule);
        let l = 2 * n * (n - 1) + 3;
        worst.fold(case(&dev, bf, l, hk, causal, sched, n, 200 + i as u64));
    }
    eprintln!(
        "simt wave64/shuffled: worst {worst:?} in {:.1?}",
        t0.elapsed()
    );
}

/// Multi-node schedules (nodes x GPUs per node) and the n = 4, 6 double covers on the CPU path;
/// one multi-node case and one double cover on SIMT.
#[test]
fn multi_node() {
    let t0 = Instant::now();
    let mut worst = Worst::default();
    let cpu = Device::cpu();
    for (u, m) in [(2usize, 2usize), (2, 4), (3, 4), (2, 6)] {
        let n = u * m;
        for causal in [false, true] {
            let l = 4 * n * m + 5;
            worst.fold(case(
                &cpu,
                causal,
                l,
                (2, 1, 64),
                causal,
                Sched::MultiNode(u, m),
                n,
                300 + n as u64,
            ));
        }
    }
    for n in [4usize, 6] {
        for causal in [false, true] {
            let l = 4 * n * (n - 1) + 1;
            worst.fold(case(
                &cpu,
                !causal,
                l,
                (2, 1, 64),
                causal,
                Sched::DoubleCover,
                n,
                350 + n as u64,
            ));
        }
    }
    worst.fold(case(
        &simt(32, Schedule::InOrder),
        true,
        61,
        (2, 1, 64),
        true,
        Sched::MultiNode(2, 4),
        8,
        399,
    ));
    worst.fold(case(
        &simt(64, Schedule::InOrder),
        false,
        37,
        (2, 1, 64),
        true,
        Sched::DoubleCover,
        6,
        398,
    ));
    eprintln!(
        "multi-node and double covers: worst {worst:?} in {:.1?}",
        t0.elapsed()
    );
}

/// Lengths that do not divide: 1 token, fewer tokens than ranks (empty blocks and pieces),
/// primes, one more than a multiple; causal and not.
#[test]
fn odd_and_tiny_lengths() {
    let t0 = Instant::now();
    let mut worst = Worst::default();
    let cpu = Device::cpu();
    for (n, l) in [
        (5usize, 1usize),
        (5, 4),
        (5, 9),
        (8, 13),
        (8, 57),
        (3, 2),
        (7, 97),
        (2, 3),
    ] {
        for causal in [false, true] {
            for sched in [Sched::Tasp, Sched::Ring] {
                worst.fold(case(
                    &cpu,
                    causal,
                    l,
                    (2, 1, 64),
                    causal,
                    sched,
                    n,
                    (n * 1000 + l) as u64,
                ));
            }
        }
    }
    let dev = simt(32, Schedule::InOrder);
    for (n, l) in [(5usize, 4usize), (8, 13)] {
        worst.fold(case(&dev, true, l, (2, 1, 64), true, Sched::Tasp, n, 77));
        worst.fold(case(&dev, false, l, (2, 1, 64), false, Sched::Tasp, n, 78));
    }
    eprintln!("odd/tiny lengths: worst {worst:?} in {:.1?}", t0.elapsed());
}

/// An empty sequence gives empty outputs.
#[test]
fn empty_sequence() {
    let dev = Device::cpu();
    let plan = plan_of(Sched::Tasp, 5);
    let p = Problem::new::<bf16>(0, 2, 1, 64, true, 1);
    let [q, k, v] = p.upload::<bf16>(&dev);
    let (out, stats) = sp::forward_simulated(&p.config(&plan), &q, &k, &v).unwrap();
    assert_eq!((out.o.len(), out.lse.len(), stats.forward_calls), (0, 0, 0));
}

/// A transport that checks the `Transport` contract on every step (no copy of a step reads or
/// writes what another copy of the same step writes), runs the copies in reverse order, and
/// measures the busiest directed link of each step (in distinct rings).
struct Checked {
    inner: Simulated,
    steps: usize,
    link_load: usize,
    links_used: usize,
    /// Most non-empty receive buffers one rank held at an exchange.
    max_live: usize,
}

impl<T: tessera::DType> Transport<T> for Checked {
    fn name(&self) -> &'static str {
        "checked"
    }
    fn ranks(&self) -> usize {
        Transport::<T>::ranks(&self.inner)
    }
    fn local_ranks(&self) -> Vec<usize> {
        Transport::<T>::local_ranks(&self.inner)
    }
    fn device(&self, rank: usize) -> tessera::Result<&Device> {
        Transport::<T>::device(&self.inner, rank)
    }
    fn exchange(&mut self, bufs: &mut RankBuffers<T>, copies: &[Copy]) -> tessera::Result<()> {
        let overlap =
            |r1: usize,
             b1: usize,
             o1: usize,
             r2: usize,
             b2: usize,
             o2: usize,
             l1: usize,
             l2: usize| { r1 == r2 && b1 == b2 && o1 < o2 + l2 && o2 < o1 + l1 };
        for (i, a) in copies.iter().enumerate() {
            for (j, b) in copies.iter().enumerate() {
                assert!(
                    !overlap(
                        a.dst_rank, a.dst_buf, a.dst_off, b.src_rank, b.src_buf, b.src_off, a.len,
                        b.len
                    ),
                    "copy {a:?} writes what {b:?} reads in the same step"
                );
                assert!(
                    i == j
                        || !overlap(
                            a.dst_rank, a.dst_buf, a.dst_off, b.dst_rank, b.dst_buf, b.dst_off,
                            a.len, b.len
                        ),
                    "copies {a:?} and {b:?} write the same elements"
                );
            }
        }
        let mut links: HashMap<(usize, usize), HashSet<usize>> = HashMap::new();
        for c in copies {
            links
                .entry((c.src_rank, c.dst_rank))
                .or_default()
                .insert(c.ring);
        }
        self.link_load = self
            .link_load
            .max(links.values().map(|s| s.len()).max().unwrap_or(0));
        self.links_used = self.links_used.max(links.len());
        self.steps += 1;
        // memory: at most two steps' receive buffers (K and V each) are alive per rank
        for list in &bufs.bufs {
            let live = list.iter().skip(2).filter(|b| !b.is_empty()).count();
            self.max_live = self.max_live.max(live);
        }
        let reversed: Vec<Copy> = copies.iter().rev().copied().collect();
        self.inner.exchange(bufs, &reversed)
    }
    fn wait(&mut self) -> tessera::Result<()> {
        Transport::<T>::wait(&mut self.inner)
    }
}

/// The per-rank API over the checking transport: same result as the convenience, the step
/// copies are independent, and TASP keeps every link of K*_n busy with one piece per step while
/// the single ring uses n links.
#[test]
fn per_rank_api_over_a_checking_transport() {
    let dev = Device::cpu();
    for (n, sched, causal) in [
        (7usize, Sched::Tasp, false),
        (8, Sched::Tasp, true),
        (5, Sched::Ring, true),
    ] {
        let plan = plan_of(sched, n);
        let l = 4 * n * (n - 1) + 1;
        let p = Problem::new::<bf16>(l, 2, 1, 64, causal, 5);
        let cfg = p.config(&plan);
        let [q, k, v] = p.upload::<bf16>(&dev);
        let (whole, _) = sp::forward_simulated(&cfg, &q, &k, &v).unwrap();
        let ranges = sp::token_ranges(n, l, causal);
        let (hq, hk) = (2 * 64, 64);
        let rows = |x: &[f32], w: usize, r: usize| -> Vec<bf16> {
            ranges[r]
                .iter()
                .flat_map(|g| x[g.start * w..g.end * w].iter().map(|&y| bf16::from_f32(y)))
                .collect()
        };
        let bufs: Vec<[tessera::DeviceBuffer<bf16>; 3]> = (0..n)
            .map(|r| {
                [
                    dev.upload(&rows(&p.q, hq, r), "q").unwrap(),
                    dev.upload(&rows(&p.k, hk, r), "k").unwrap(),
                    dev.upload(&rows(&p.v, hk, r), "v").unwrap(),
                ]
            })
            .collect();
        let inputs: Vec<Option<RankQkv<bf16>>> = bufs
            .iter()
            .map(|[q, k, v]| Some(RankQkv { q, k, v }))
            .collect();
        let mut t = Checked {
            inner: Simulated::new(&dev, n).unwrap(),
            steps: 0,
            link_load: 0,
            links_used: 0,
            max_live: 0,
        };
        let out = sp::forward(&cfg, &inputs, &mut t).unwrap();
        assert_eq!(t.steps, n - 1);
        assert_eq!(t.max_live, 4, "K and V of two steps");
        assert_eq!(t.link_load, 1, "{sched:?} n {n}");
        let want_links = match sched {
            Sched::Ring => n,
            _ => n * plan.subs(),
        };
        assert_eq!(t.links_used, want_links, "{sched:?} n {n}");
        if !causal {
            assert_eq!(out.stats.forward_calls, n * n);
            assert_eq!(out.stats.merges, n * (n - 1));
        }
        // rank outputs equal the convenience's reassembled rows, bit for bit
        let (wo, wl) = (whole.o.download().unwrap(), whole.lse.download().unwrap());
        for (r, o) in out.outs.iter().enumerate() {
            let o = o.as_ref().unwrap();
            let (ro, rl) = (o.o.download().unwrap(), o.lse.download().unwrap());
            let tq: usize = ranges[r].iter().map(|g| g.len()).sum();
            let mut at = 0;
            for g in &ranges[r] {
                assert_eq!(
                    &ro[at * hq..(at + g.len()) * hq],
                    &wo[g.start * hq..g.end * hq]
                );
                for h in 0..2 {
                    assert_eq!(
                        &rl[h * tq + at..h * tq + at + g.len()],
                        &wl[h * l + g.start..h * l + g.end]
                    );
                }
                at += g.len();
            }
        }
    }
}

/// Bad inputs are errors naming the op, never panics.
#[test]
fn bad_inputs() {
    let dev = Device::cpu();
    let n = 5;
    let plan = plan_of(Sched::Tasp, n);
    let p = Problem::new::<bf16>(40, 2, 1, 64, true, 9);
    let [q, k, v] = p.upload::<bf16>(&dev);
    let cfg = p.config(&plan);
    let op = "parallel::attention::forward";
    let expect = |r: tessera::Result<(attention::AttentionOut, sp::SpStats)>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains(op), "{what}: {e}");
    };
    expect(
        sp::forward_simulated(
            &SpAttention {
                heads: 3,
                kv_heads: 2,
                ..cfg
            },
            &q,
            &k,
            &v,
        ),
        "gqa",
    );
    expect(
        sp::forward_simulated(&SpAttention { kv_heads: 0, ..cfg }, &q, &k, &v),
        "kv_heads 0",
    );
    expect(
        sp::forward_simulated(
            &SpAttention {
                head_dim: 32,
                ..cfg
            },
            &q,
            &k,
            &v,
        ),
        "head_dim",
    );
    expect(
        sp::forward_simulated(
            &SpAttention {
                scale: f32::NAN,
                ..cfg
            },
            &q,
            &k,
            &v,
        ),
        "scale",
    );
    expect(
        sp::forward_simulated(&SpAttention { seq_len: 41, ..cfg }, &q, &k, &v),
        "seq_len",
    );
    expect(sp::forward_simulated(&cfg, &q, &q, &v), "k length");
    let simt_q = Device::simt().upload(&q.download().unwrap(), "q").unwrap();
    expect(sp::forward_simulated(&cfg, &simt_q, &k, &v), "devices");
    expect(sp::forward_simulated(&cfg, &q, &k, &simt_q), "devices");

    // the per-rank API
    let ranges = sp::token_ranges(n, 40, true);
    let len = |r: usize| ranges[r].iter().map(|g| g.len()).sum::<usize>();
    let bufs: Vec<[tessera::DeviceBuffer<bf16>; 3]> = (0..n)
        .map(|r| {
            [
                dev.upload(&vec![bf16::ZERO; len(r) * 128], "q").unwrap(),
                dev.upload(&vec![bf16::ZERO; len(r) * 64], "k").unwrap(),
                dev.upload(&vec![bf16::ZERO; len(r) * 64], "v").unwrap(),
            ]
        })
        .collect();
    let inputs: Vec<Option<RankQkv<bf16>>> = bufs
        .iter()
        .map(|[q, k, v]| Some(RankQkv { q, k, v }))
        .collect();
    let run = |inputs: &[Option<RankQkv<bf16>>], ranks: usize| -> String {
        let mut t = Simulated::new(&dev, ranks).unwrap();
        sp::forward(&cfg, inputs, &mut t)
            .expect_err("bad")
            .to_string()
    };
    assert!(sp::forward(&cfg, &inputs, &mut Simulated::new(&dev, n).unwrap()).is_ok());
    for e in [
        run(&inputs, 4),
        run(&inputs[..4], n),
        run(&[&inputs[..4], &[None]].concat(), n),
        run(
            &[
                &inputs[..4],
                &[Some(RankQkv {
                    q: &bufs[0][1],
                    ..inputs[4].unwrap()
                })],
            ]
            .concat(),
            n,
        ),
        run(
            &[
                &inputs[..4],
                &[Some(RankQkv {
                    k: &bufs[4][0],
                    ..inputs[4].unwrap()
                })],
            ]
            .concat(),
            n,
        ),
    ] {
        assert!(e.contains(op), "{e}");
    }
    // a transport on another device
    let mut t = Simulated::new(&Device::simt(), n).unwrap();
    let e = sp::forward(&cfg, &inputs, &mut t).unwrap_err().to_string();
    assert!(e.contains(op) && e.contains("rank 0"), "{e}");
}

/// Every schedule the topology module builds for n in 2..=16 (TASP, with the fallbacks, and the
/// single ring) and the multi-node ones: the plan replays correctly (`validate`), has n - 1 steps
/// of n x rings transfers, and its link load is the largest number of rings sharing an arc (1
/// for arc-disjoint rings, when every step keeps n x rings links busy).
#[test]
fn plans_of_every_schedule() {
    let mut schedules = vec![];
    for n in 2..=16 {
        schedules.push(topology::hamiltonian_decomposition(n).unwrap());
        schedules.push(topology::single_ring(n).unwrap());
    }
    for (u, m) in [
        (2, 2),
        (2, 4),
        (3, 2),
        (4, 2),
        (2, 6),
        (2, 8),
        (4, 4),
        (3, 4),
    ] {
        schedules.push(topology::multi_node(u, m).unwrap());
    }
    for s in &schedules {
        let plan = AllGatherPlan::new(s).unwrap();
        let st = plan.validate().unwrap();
        let (n, r) = (s.n, s.rings.len());
        assert_eq!((plan.n(), plan.subs(), st.steps), (n, r, n - 1), "{s:?}");
        assert_eq!(st.transfers, n * r * (n - 1));
        let mut arcs: HashMap<(usize, usize), usize> = HashMap::new();
        for ring in &s.rings {
            for i in 0..n {
                *arcs.entry((ring[i], ring[(i + 1) % n])).or_default() += 1;
            }
        }
        let share = arcs.values().copied().max().unwrap();
        assert_eq!(st.link_load, share, "{s:?}");
        assert_eq!(plan.link_load(), share);
        assert_eq!(st.links_used, arcs.len(), "{s:?}");
        if share == 1 {
            assert_eq!(st.links_used, n * r);
        }
        // every rank receives, per step, one piece per ring, and each (origin, sub) once
        for rank in 0..n {
            let mut got = HashSet::new();
            for step in 0..n - 1 {
                let a = plan.arrivals(rank, step);
                assert_eq!(a.len(), r);
                for x in a {
                    assert_eq!(x.ring, x.piece.sub);
                    assert!(x.piece.origin != rank && got.insert(x.piece));
                    assert_eq!(plan.received_at(rank, x.piece), Some((step, x.slot)));
                }
            }
            assert_eq!(got.len(), (n - 1) * r);
        }
    }
}

proptest! {
    // No failure persistence: a failing case must not write into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The copy lists of any schedule move every piece, whatever its size (empty, uneven, split
    /// over two segments of its block), to its slot in the receivers' step buffers.
    #[test]
    fn gather_moves_uneven_pieces(n in 2usize..=12, kind in 0u32..3, te in 1usize..4,
                                  lens in prop::collection::vec(0usize..23, 12), two in any::<bool>(),
                                  seed: u64) {
        let s = match kind {
            0 => topology::hamiltonian_decomposition(n).unwrap(),
            1 => topology::single_ring(n).unwrap(),
            _ => topology::multi_node(2 + n % 2, [2, 4, 6][n % 3]).unwrap(),
        };
        let n = s.n;
        let plan = AllGatherPlan::new(&s).unwrap();
        let subs = plan.subs();
        let mut rng = Rng(seed);
        let local: Vec<usize> = (0..n).map(|r| lens[r % lens.len()] + r % 3).collect();
        // piece c of rank r: random cuts of one or two halves of the block
        let pieces: Vec<Vec<Vec<Segment>>> = (0..n)
            .map(|r| {
                let halves = if two { vec![(0, local[r] / 2), (local[r] / 2, local[r] - local[r] / 2)] } else { vec![(0, local[r])] };
                let mut per = vec![vec![]; subs];
                for (off, len) in halves {
                    let mut cuts: Vec<usize> = (0..subs - 1).map(|_| (rng.next_u64() % (len as u64 + 1)) as usize).collect();
                    cuts.push(0);
                    cuts.push(len);
                    cuts.sort();
                    for c in 0..subs {
                        per[c].push(Segment { offset: off + cuts[c], len: cuts[c + 1] - cuts[c] });
                    }
                }
                per
            })
            .collect();
        let layout = GatherLayout::new(&plan, te, local.clone(), pieces).unwrap();
        let dev = Device::cpu();
        let val = |r: usize, t: usize, e: usize| (r * 1000 + t) as u32 * 8 + e as u32;
        let mut bufs = RankBuffers {
            bufs: (0..n)
                .map(|r| {
                    let data: Vec<u32> = (0..local[r] * te).map(|i| val(r, i / te, i % te)).collect();
                    let k = dev.upload(&data, "k").unwrap();
                    let v: Vec<u32> = data.iter().map(|x| !x).collect();
                    let v = dev.upload(&v, "v").unwrap();
                    layout.rank_buffers(&dev, r, k, v).unwrap()
                })
                .collect(),
        };
        let mut t = Simulated::new(&dev, n).unwrap();
        all_gather(&layout, &mut bufs, &mut t).unwrap();
        for r in 0..n {
            for step in 0..n - 1 {
                let mut want = vec![];
                for a in plan.arrivals(r, step) {
                    prop_assert_eq!(layout.recv_offset(r, step, a.slot) * te, want.len());
                    for seg in layout.segments(a.piece) {
                        for tok in seg.offset..seg.offset + seg.len {
                            want.extend((0..te).map(|e| val(a.piece.origin, tok, e)));
                        }
                    }
                }
                prop_assert_eq!(bufs.bufs[r][recv_k(step)].download().unwrap(), want.clone());
                let wv: Vec<u32> = want.iter().map(|x| !x).collect();
                prop_assert_eq!(bufs.bufs[r][recv_v(step)].download().unwrap(), wv);
            }
        }
    }
}

/// The same op over `P2p`: one rank per device (n distinct CPU or SIMT devices, cross-device
/// copies as host memcpy), each rank's inputs and outputs on its own device; equal to the
/// reference within the tolerance.
#[test]
fn over_p2p_devices() {
    for simt_family in [false, true] {
        for (n, sched, causal) in [
            (5usize, Sched::Tasp, true),
            (4, Sched::Tasp, false),
            (3, Sched::Ring, true),
        ] {
            let devs: Vec<Device> = (0..n)
                .map(|_| {
                    if simt_family {
                        Device::simt()
                    } else {
                        Device::cpu_separate()
                    }
                })
                .collect();
            let plan = plan_of(sched, n);
            let l = 2 * n * (n - 1) + 5;
            let p = Problem::new::<bf16>(l, 2, 1, 64, causal, 11 + n as u64);
            let (ro, rl) = p.reference();
            let ranges = sp::token_ranges(n, l, causal);
            let (hq, hk) = (2 * 64, 64);
            let rows = |x: &[f32], w: usize, r: usize| -> Vec<bf16> {
                ranges[r]
                    .iter()
                    .flat_map(|g| x[g.start * w..g.end * w].iter().map(|&y| bf16::from_f32(y)))
                    .collect()
            };
            let bufs: Vec<[tessera::DeviceBuffer<bf16>; 3]> = (0..n)
                .map(|r| {
                    [
                        devs[r].upload(&rows(&p.q, hq, r), "q").unwrap(),
                        devs[r].upload(&rows(&p.k, hk, r), "k").unwrap(),
                        devs[r].upload(&rows(&p.v, hk, r), "v").unwrap(),
                    ]
                })
                .collect();
            let inputs: Vec<Option<RankQkv<bf16>>> = bufs
                .iter()
                .map(|[q, k, v]| Some(RankQkv { q, k, v }))
                .collect();
            let mut t = P2p::new(&devs).unwrap();
            let out = sp::forward(&p.config(&plan), &inputs, &mut t).unwrap();
            // reassemble on the host in sequence order
            let mut o = vec![0f32; l * hq];
            let mut lse = vec![0f32; 2 * l];
            for (r, x) in out.outs.iter().enumerate() {
                let x = x.as_ref().unwrap();
                assert!(x.o.device().same(&devs[r]));
                let (xo, xl) = (x.o.download().unwrap(), x.lse.download().unwrap());
                let tq: usize = ranges[r].iter().map(|g| g.len()).sum();
                let mut at = 0;
                for g in &ranges[r] {
                    o[g.start * hq..g.end * hq].copy_from_slice(&xo[at * hq..(at + g.len()) * hq]);
                    for h in 0..2 {
                        lse[h * l + g.start..h * l + g.end]
                            .copy_from_slice(&xl[h * tq + at..h * tq + at + g.len()]);
                    }
                    at += g.len();
                }
            }
            let what = format!("p2p simt={simt_family} n={n} {sched:?} causal={causal}");
            let e = rel_l2(&o, &ro);
            assert!(e <= TOL_O, "{what}: O rel L2 {e}");
            let el = max_lse_err(&lse, &rl, &what);
            assert!(el <= TOL_LSE, "{what}: LSE {el}");
        }
    }
}

/// On a CUDA or HIP device when present (skipped otherwise): n = 8 TASP and single ring, causal
/// and full, both dtypes, GQA 4 with D = 128, 1k-2k tokens.
#[test]
fn gpu_when_present() {
    let Ok(dev) = Device::cuda(0).or_else(|_| Device::hip(0)) else {
        eprintln!("sequence_parallel: no GPU, skipping gpu_when_present");
        return;
    };
    let t0 = Instant::now();
    let mut worst = Worst::default();
    for (i, (n, sched, causal, bf, l)) in [
        (8usize, Sched::Tasp, true, true, 2051usize),
        (8, Sched::Ring, true, false, 2051),
        (8, Sched::Tasp, false, false, 1031),
        (12, Sched::Tasp, true, true, 1501),
        (6, Sched::Tasp, true, false, 997),
    ]
    .into_iter()
    .enumerate()
    {
        worst.fold(case(
            &dev,
            bf,
            l,
            (8, 2, 128),
            causal,
            sched,
            n,
            900 + i as u64,
        ));
    }
    eprintln!("gpu: worst {worst:?} in {:.1?}", t0.elapsed());
}
