//! The ReXMoE layer (`moe::layer`), expert parallelism over simulated ranks
//! (`parallel::moe::layer`) and the driver (`drivers::rexmoe`) on the CPU path and host SIMT
//! wave32 / wave64 (in order and two shuffled schedules, race detector on; CUDA/HIP when present).

use half::{bf16, f16};
use tessera::drivers::rexmoe::{self, Config, Model};
use tessera::ops::moe::{self, LayerWeights, Psr, RouteParams};
use tessera::testing::{bits, Rng};
use tessera::verify::rexmoe::{LayerCase, Sizes, CASES};
use tessera::{Device, Error, Schedule};

/// CPU, SIMT w32 and w64 in order and with one shuffled schedule each, and the GPU.
fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [Schedule::InOrder, Schedule::Shuffled(0x5e1)] {
            d.push(tessera::testing::simt(wave, s, 2));
        }
    }
    d.extend(tessera::testing::gpu());
    d
}

fn assert_pass(o: tessera::verify::Outcome, what: &str, dev: &Device) {
    assert!(
        o.pass(),
        "{what} on {}: error {}: {}",
        dev.backend(),
        o.error,
        o.result.unwrap_err()
    );
}

/// Every verify case on every executor, bf16 and f16, against the f64 reference.
#[test]
fn layer_matches_reference() {
    for dev in devices() {
        for (j, &s) in CASES.iter().enumerate() {
            let c = LayerCase::generate::<bf16>(s, 0xb0 + j as u64);
            assert_pass(c.outcome::<bf16>(&dev), &c.label, &dev);
            let c = LayerCase::generate::<f16>(s, 0xf0 + j as u64);
            assert_pass(c.outcome::<f16>(&dev), &c.label, &dev);
        }
    }
}

/// More shapes: a prime width, one token, k = E, a large group, PSR before, during and after
/// the ramp.
#[test]
fn layer_more_shapes() {
    let shapes: &[Sizes] = &[
        (1, 16, 16, 4, 1, 0, 4, true, None),
        (11, 37, 29, 5, 3, 2, 15, false, None),
        (23, 32, 16, 16, 4, 3, 8, true, Some(0)),
        (23, 32, 16, 16, 4, 0, 8, true, Some(99)),
        (23, 32, 16, 16, 4, 1, 8, false, Some(1000)),
        (64, 16, 8, 2, 1, 0, 1, false, None),
    ];
    for dev in devices() {
        for (j, &s) in shapes.iter().enumerate() {
            let c = LayerCase::generate::<bf16>(s, 0x5a + j as u64);
            assert_pass(c.outcome::<bf16>(&dev), &c.label, &dev);
        }
    }
}

/// The same bits on every run and every schedule of one wave width.
#[test]
fn layer_is_deterministic() {
    let c = LayerCase::generate::<bf16>(CASES[1], 7);
    for wave in [32, 64] {
        let base = c
            .run::<bf16>(&tessera::testing::simt(wave, Schedule::InOrder, 2))
            .unwrap();
        for s in [
            Schedule::Shuffled(3),
            Schedule::Skewed(4),
            Schedule::InOrder,
        ] {
            let again = c.run::<bf16>(&tessera::testing::simt(wave, s, 2)).unwrap();
            assert_eq!(bits(&again.0), bits(&base.0), "wave{wave} {s:?}");
            assert_eq!(again.1, base.1);
        }
    }
}

/// Expert parallelism over 1 to 5 simulated ranks equals the single-rank layer, bit for bit.
#[test]
fn expert_parallel_equals_single_rank() {
    for dev in devices() {
        for (j, ranks) in [(0usize, 2usize), (1, 3), (2, 4), (3, 5), (1, 1), (4, 2)] {
            let c = LayerCase::generate::<bf16>(CASES[j], 0xe0 + j as u64);
            assert_pass(
                c.ep_outcome::<bf16>(&dev, ranks),
                &format!("{} on {ranks} ranks", c.label),
                &dev,
            );
        }
    }
}

fn weights(dev: &Device, e: usize, d: usize, f: usize) -> [tessera::DeviceBuffer<bf16>; 4] {
    let mut g = Rng(1);
    let mut v = |n: usize| -> Vec<bf16> {
        (0..n)
            .map(|_| bf16::from_f64(g.unit() - 0.5))
            .collect::<Vec<_>>()
    };
    [
        dev.upload(&v(e * d), "w_router").unwrap(),
        dev.upload(&v(e * f * d), "w_gate").unwrap(),
        dev.upload(&v(e * f * d), "w_up").unwrap(),
        dev.upload(&v(e * d * f), "w_down").unwrap(),
    ]
}

fn params(r: usize, j: usize, k: usize) -> RouteParams {
    RouteParams {
        r,
        layer_in_group: j,
        layer: j,
        top_k: k,
        renormalize: true,
        psr: None,
    }
}

fn expect_invalid<T: std::fmt::Debug>(r: tessera::Result<T>, op: &str, needle: &str) {
    match r {
        Err(Error::InvalidArgument { op: o, msg }) => {
            assert!(
                msg.contains(needle),
                "{o}: `{msg}` does not mention `{needle}`"
            );
            assert!(o.starts_with(op), "error names {o}, want {op}");
        }
        other => panic!("expected an InvalidArgument naming {op}, got {other:?}"),
    }
}

/// Bad inputs: named errors, before anything runs.
#[test]
fn layer_bad_inputs() {
    let dev = Device::simt();
    let (d, f, n, r) = (16, 8, 4, 2);
    let [wr, wg, wu, wd] = weights(&dev, r * n, d, f);
    let x = dev.upload(&vec![bf16::ONE; 3 * d], "x").unwrap();
    let w = LayerWeights {
        w_router: &wr,
        w_gate: &wg,
        w_up: &wu,
        w_down: &wd,
    };
    expect_invalid(
        moe::layer(&x, d, &w, &params(r, 2, 2)),
        "moe::layer",
        "layer_in_group",
    );
    expect_invalid(
        moe::layer(&x, d, &w, &params(r, 0, r * n + 1)),
        "moe::layer",
        "top_k",
    );
    expect_invalid(
        moe::layer(&x, d, &w, &params(r, 0, 0)),
        "moe::layer",
        "top_k",
    );
    expect_invalid(
        moe::layer(&x, d, &w, &params(3, 0, 2)),
        "moe::layer",
        "r = 3",
    );
    expect_invalid(
        moe::layer(&x, 5, &w, &params(r, 0, 2)),
        "moe::layer",
        "d = 5",
    );
    let short = dev.upload(&[bf16::ONE; 7], "w_up").unwrap();
    let w2 = LayerWeights { w_up: &short, ..w };
    expect_invalid(
        moe::layer(&x, d, &w2, &params(r, 0, 2)),
        "moe::layer",
        "w_up",
    );
    let other = Device::simt();
    let x2 = other.upload(&vec![bf16::ONE; 3 * d], "x").unwrap();
    expect_invalid(
        moe::layer(&x2, d, &w, &params(r, 0, 2)),
        "moe::layer",
        "w_router",
    );
}

fn small(r: usize, layers: usize) -> Config {
    Config {
        layers,
        r,
        experts: 4,
        top_k: 2,
        d: 16,
        f: 24,
        renormalize: true,
    }
}

/// The driver: a short last group follows the documented rule, safetensors round-trips, the
/// forward pass is the layer op applied layer by layer with the residual, PSR changes routing.
#[test]
fn driver_stack_and_weights() {
    for dev in [Device::cpu(), Device::simt()] {
        // L = 5, r = 2: groups {0,1}, {2,3}, {4}; layer 4's router scores N experts.
        let cfg = small(2, 5);
        assert_eq!(cfg.group_of(4), (4, 1));
        assert_eq!(cfg.group_of(3), (2, 2));
        let m = Model::<bf16>::random(&dev, cfg, 9).unwrap();
        assert_eq!(m.route_params(4, None).r, 1);
        let bytes = m.to_safetensors().unwrap();
        let m2 = Model::<bf16>::from_safetensors(&dev, &bytes).unwrap();
        assert_eq!(m2.config(), &cfg);
        let mut g = Rng(3);
        let xs: Vec<bf16> = (0..7 * cfg.d)
            .map(|_| bf16::from_f64(g.unit() - 0.5))
            .collect();
        let x = dev.upload(&xs, "x").unwrap();
        let a = m.forward(&x, None).unwrap();
        let b = m2.forward(&x, None).unwrap();
        assert_eq!(
            bits(&a.y.download().unwrap()),
            bits(&b.y.download().unwrap())
        );
        assert_eq!(a.loads, b.loads);
        // Layer by layer with the op.
        let mut h = dev.upload(&xs, "h").unwrap();
        for l in 0..cfg.layers {
            let out = moe::layer_full(
                &h,
                cfg.d,
                &m.layer_weights(l),
                &m.route_params(l, None),
                Some(&h),
            )
            .unwrap();
            h = out.y;
        }
        assert_eq!(bits(&h.download().unwrap()), bits(&a.y.download().unwrap()));
        // Loads: k entries per token per layer; per_layer sums per_expert by layer.
        for (l, load) in a.loads.iter().enumerate() {
            let (_, size) = cfg.group_of(l);
            assert_eq!(load.per_expert.len(), size * cfg.experts);
            assert_eq!(load.per_expert.iter().sum::<i32>(), 7 * cfg.top_k as i32);
            for j in 0..size {
                let s: i32 = load.per_expert[j * cfg.experts..(j + 1) * cfg.experts]
                    .iter()
                    .sum();
                assert_eq!(load.per_layer[j], s);
            }
        }
        // PSR at step 0 (pool = own N experts): only the layer's own experts are chosen.
        let psr = Psr {
            step: 0,
            t_s: 10,
            t_e: 20,
            seed: 5,
        };
        let fw = m.forward(&x, Some(psr)).unwrap();
        for (l, load) in fw.loads.iter().enumerate() {
            let (first, _) = cfg.group_of(l);
            let j = l - first;
            for (v, &cnt) in load.per_expert.iter().enumerate() {
                if v / cfg.experts != j {
                    assert_eq!(
                        cnt, 0,
                        "layer {l}: expert {v} is not its own but got tokens"
                    );
                }
            }
        }
    }
}

/// Bad files are errors naming the driver.
#[test]
fn driver_bad_weights() {
    let dev = Device::cpu();
    let m = Model::<bf16>::random(&dev, small(2, 2), 1).unwrap();
    let bytes = m.to_safetensors().unwrap();
    assert!(matches!(
        Model::<f16>::from_safetensors(&dev, &bytes),
        Err(Error::Format { .. })
    ));
    assert!(Model::<bf16>::from_safetensors(&dev, b"not safetensors").is_err());
    assert!(matches!(
        Model::<bf16>::random(
            &dev,
            Config {
                top_k: 5,
                ..small(2, 2)
            },
            1
        ),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The cost report: decode reads about the same expert bytes per token for r = 1 and r = 4,
/// prefill reads more with r = 4 (more distinct experts per layer call), as the paper says.
#[test]
fn report_prefill_and_decode() {
    let dev = Device::cpu();
    let base = Config {
        layers: 4,
        r: 1,
        experts: 8,
        top_k: 2,
        d: 16,
        f: 16,
        renormalize: true,
    };
    let rep = rexmoe::report::<bf16>(&dev, base, &[1, 4], 256, 1, 8, 2).unwrap();
    assert!(!rep.gpu);
    let get = |r: usize, phase: &str| {
        rep.rows
            .iter()
            .find(|x| x.r == r && x.phase == phase)
            .unwrap()
            .clone()
    };
    let (p1, p4) = (get(1, "prefill"), get(4, "prefill"));
    let (d1, d4) = (get(1, "decode"), get(4, "decode"));
    assert!(p1.experts_touched_per_layer <= 8.0);
    assert!(p4.experts_touched_per_layer > p1.experts_touched_per_layer);
    // One token per decode call touches exactly k experts per layer, whatever r.
    assert_eq!(d1.experts_touched_per_layer, 2.0);
    assert_eq!(d4.experts_touched_per_layer, 2.0);
    assert_eq!(d1.expert_bytes_per_token, d4.expert_bytes_per_token);
    assert!(rexmoe::markdown(&rep).contains("not GPU performance"));
}
