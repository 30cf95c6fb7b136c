//! Tensor-core fragments (`cuda/common/mma.cuh`) through the self-test kernels in
//! `cuda/selftest/mma.cu`: the emulated mma.sync m16n8k16 (wave32) and MFMA 32x32x8 (wave64) tiles,
//! with fragments loaded by direct indexing and through ldmatrix, against an f64 matrix product of
//! random bf16/f16 inputs, in order and with shuffled schedules. A planted fragment-indexing bug
//! must fail the same comparison. On a machine with a GPU the hardware instructions are compared
//! too.

use half::{bf16, f16};
use tessera::device::KernelArgs;
use tessera::testing::{rel_l2, tol};
use tessera::{Device, LaunchConfig, Schedule, SimtConfig};

mod common;
use common::SelftestLaunch;

const SCHEDULES: [Schedule; 4] = [
    Schedule::InOrder,
    Schedule::Shuffled(1),
    Schedule::Shuffled(0x5eed_cafe),
    Schedule::Skewed(0x5eed_5e3d),
];
const SEEDS: [u64; 3] = [1, 2, 0xdead_beef];
/// f32 accumulation of exact products of halves, against f64.
const TOL: f64 = tol::F32;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    Bf16,
    F16,
}

impl Ty {
    fn code(self) -> u32 {
        match self {
            Ty::Bf16 => 0,
            Ty::F16 => 1,
        }
    }
    fn encode(self, x: f32) -> u16 {
        match self {
            Ty::Bf16 => bf16::from_f32(x).to_bits(),
            Ty::F16 => f16::from_f32(x).to_bits(),
        }
    }
    fn to_f64(self, b: u16) -> f64 {
        match self {
            Ty::Bf16 => bf16::from_bits(b).to_f64(),
            Ty::F16 => f16::from_bits(b).to_f64(),
        }
    }
}

/// One instruction shape: the kernel, its tile (M x N), K per step and warp width.
#[derive(Clone, Copy, Debug)]
struct Shape {
    module: &'static str,
    kernel: &'static str,
    m: usize,
    n: usize,
    k_step: usize,
    wave: u32,
}

const MMA: Shape = Shape {
    module: "selftest/mma",
    kernel: "selftest_mma_m16n8k16",
    m: 16,
    n: 8,
    k_step: 16,
    wave: 32,
};
const MFMA: Shape = Shape {
    module: "selftest/mma",
    kernel: "selftest_mfma_32x32x8",
    m: 32,
    n: 32,
    k_step: 8,
    wave: 64,
};

#[derive(Clone, Copy, Debug)]
struct Case {
    ty: Ty,
    ntiles: usize,
    ksteps: usize,
    b_col_major: bool,
    seed: u64,
}

struct Inputs {
    a: Vec<u16>,
    b: Vec<u16>,
    c: Vec<f32>,
}

fn inputs(s: &Shape, cs: &Case) -> Inputs {
    let k = s.k_step * cs.ksteps;
    let mut r = rng(cs.seed ^ (cs.ty.code() as u64) << 40);
    let mut uni = move || ((r() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32;
    let a = (0..cs.ntiles * s.m * k)
        .map(|_| cs.ty.encode(uni() * 2.0))
        .collect();
    let b = (0..cs.ntiles * k * s.n)
        .map(|_| cs.ty.encode(uni() * 2.0))
        .collect();
    let c = (0..cs.ntiles * s.m * s.n).map(|_| uni()).collect();
    Inputs { a, b, c }
}

/// D = A * B + C per tile in f64 (A row-major M x K; B row-major K x N, or B^T row-major N x K).
fn reference(s: &Shape, cs: &Case, x: &Inputs) -> Vec<f64> {
    let k = s.k_step * cs.ksteps;
    let mut d = vec![0f64; cs.ntiles * s.m * s.n];
    for t in 0..cs.ntiles {
        let a = &x.a[t * s.m * k..];
        let b = &x.b[t * k * s.n..];
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = x.c[(t * s.m + i) * s.n + j] as f64;
                for kk in 0..k {
                    let bv = if cs.b_col_major {
                        b[j * k + kk]
                    } else {
                        b[kk * s.n + j]
                    };
                    acc += cs.ty.to_f64(a[i * k + kk]) * cs.ty.to_f64(bv);
                }
                d[(t * s.m + i) * s.n + j] = acc;
            }
        }
    }
    d
}

fn run(
    d: &Device,
    s: &Shape,
    cs: &Case,
    x: &Inputs,
    mode: u32,
    threads: u32,
) -> tessera::Result<Vec<f32>> {
    let a = d.upload(&x.a, "a")?;
    let b = d.upload(&x.b, "b")?;
    let c = d.upload(&x.c, "c")?;
    let mut out = d.alloc::<f32>(cs.ntiles * s.m * s.n, "d")?;
    let mut args = KernelArgs::new();
    args.buf(&a)
        .buf(&b)
        .buf(&c)
        .buf_mut(&mut out)
        .push(cs.ntiles as u32)
        .push(cs.ksteps as u32)
        .push(cs.ty.code())
        .push(cs.b_col_major as u32)
        .push(mode);
    let warps = threads / s.wave;
    let blocks = (cs.ntiles as u32).div_ceil(warps);
    d.launch(
        s.module,
        s.kernel,
        &LaunchConfig::linear(blocks, threads, 0),
        &args,
    )?;
    out.download()
}

fn simt(wave: u32, schedule: Schedule) -> Device {
    Device::simt_with(SimtConfig {
        wave,
        schedule,
        workers: 2,
        ..Default::default()
    })
    .expect("SIMT device")
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for seed in SEEDS {
        for ty in [Ty::Bf16, Ty::F16] {
            for b_col_major in [false, true] {
                // 5 tiles over blocks of 2 warps: the last block has an idle warp.
                for ksteps in [1, 3] {
                    v.push(Case {
                        ty,
                        ntiles: 5,
                        ksteps,
                        b_col_major,
                        seed,
                    });
                }
            }
        }
    }
    v
}

/// Every mode in `modes` matches the f64 product within TOL; on SIMT the modes agree bit for bit
/// (the emulation and the portable path sum in the same order).
fn check(d: &Device, s: &Shape, modes: &[u32], threads: u32, bit_identical: bool) {
    for cs in cases() {
        let x = inputs(s, &cs);
        let want = reference(s, &cs, &x);
        let mut first: Option<Vec<f32>> = None;
        for &mode in modes {
            let got = run(d, s, &cs, &x, mode, threads)
                .unwrap_or_else(|e| panic!("{d:?} {} mode {mode} {cs:?}: {e}", s.kernel));
            let err = rel_l2(&got, &want);
            assert!(
                err <= TOL,
                "{d:?} {} mode {mode} {cs:?}: relative L2 error {err:e} > {TOL:e}",
                s.kernel
            );
            if bit_identical {
                if let Some(f) = &first {
                    let same = f.iter().zip(&got).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(
                        same,
                        "{d:?} {} mode {mode} {cs:?}: differs from mode {}",
                        s.kernel, modes[0]
                    );
                } else {
                    first = Some(got);
                }
            }
        }
    }
}

#[test]
fn mma_m16n8k16_emulated_matches_f64_wave32() {
    // modes: 0 direct loads + mma.sync, 1 ldmatrix (.x4 for A, .x2 / .x2.trans for B) + mma.sync,
    // 2 direct loads + the shuffle-based portable mma.
    for sched in SCHEDULES {
        check(&simt(32, sched), &MMA, &[0, 1, 2], 64, true);
    }
}

#[test]
fn mfma_32x32x8_emulated_matches_f64_wave64() {
    // modes: 0 MFMA (emulated), 1 the shuffle-based portable path.
    for sched in SCHEDULES {
        check(&simt(64, sched), &MFMA, &[0, 1], 128, true);
    }
}

#[test]
fn planted_fragment_indexing_bug_fails_the_comparison() {
    for (s, wave, mode, threads) in [(&MMA, 32, 3u32, 64u32), (&MFMA, 64, 2, 128)] {
        let d = simt(wave, Schedule::Shuffled(7));
        for cs in cases() {
            let x = inputs(s, &cs);
            let want = reference(s, &cs, &x);
            let got = run(&d, s, &cs, &x, mode, threads).unwrap();
            let err = rel_l2(&got, &want);
            assert!(
                err > 0.1,
                "{} planted bug {cs:?}: error only {err:e}",
                s.kernel
            );
        }
    }
}

#[test]
fn fragment_ops_need_the_whole_warp() {
    let cs = Case {
        ty: Ty::Bf16,
        ntiles: 1,
        ksteps: 1,
        b_col_major: false,
        seed: 9,
    };
    for (s, wave, threads, mode, what) in [
        (&MMA, 32, 16u32, 0u32, "mma.sync.m16n8k16.bf16"),
        (&MMA, 32, 16, 1, "ldmatrix.x4"),
        (&MFMA, 64, 32, 0, "mfma_f32_32x32x8bf16_1k"),
    ] {
        let d = simt(wave, Schedule::InOrder);
        let x = inputs(s, &cs);
        // A launch of fewer threads than a warp: the fragment op must refuse, naming itself.
        let a = d.upload(&x.a, "a").unwrap();
        let b = d.upload(&x.b, "b").unwrap();
        let c = d.upload(&x.c, "c").unwrap();
        let mut out = d.alloc::<f32>(s.m * s.n, "d").unwrap();
        let mut args = KernelArgs::new();
        args.buf(&a)
            .buf(&b)
            .buf(&c)
            .buf_mut(&mut out)
            .push(1u32)
            .push(1u32)
            .push(0u32)
            .push(0u32)
            .push(mode);
        let err = d
            .launch(
                s.module,
                s.kernel,
                &LaunchConfig::linear(1, threads, 0),
                &args,
            )
            .expect_err("a partial warp must not run a fragment op");
        let msg = err.to_string();
        assert!(
            msg.contains(what) && msg.contains("needs all"),
            "{}: {msg}",
            s.kernel
        );
    }
}

/// On a GPU: the hardware instruction (mode 0), ldmatrix (mode 1) and the portable path agree with
/// f64 within TOL (mma.sync on CUDA, MFMA on HIP). Ignored without one; `scripts/device-run.sh`
/// runs it.
#[test]
#[ignore = "needs a CUDA or HIP GPU"]
fn gpu_tensor_cores_match_f64_and_the_portable_path() {
    let mut ran = false;
    if let Ok(d) = Device::cuda(0) {
        check(&d, &MMA, &[0, 1, 2], 64, false);
        ran = true;
    }
    if let Ok(d) = Device::hip(0) {
        check(&d, &MFMA, &[0, 1], 128, false);
        ran = true;
    }
    assert!(
        ran,
        "no CUDA or HIP device: hardware mma.sync / MFMA not compared"
    );
}
