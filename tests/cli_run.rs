//! `tessera run`: ops on tensors from safetensors files, through the binary. A round trip
//! bitmask.sparsify -> densify, attention.forward on the CPU path and SIMT against each other and
//! the f64 reference, an in-place output, the op list, and bad input: `error: ...` on stderr,
//! exit status 2 (1 for files and devices), no output file, no panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tessera::ops::attention::{max_seqlen, MaskMode};
use tessera::testing::{self, lse_mismatch, rel_l2, tol, PairKind, Rng};
use tessera::verify::attention::{Problem, Spec};

/// A tensor of a safetensors file.
#[derive(Clone, Debug)]
struct T {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Named tensors, as written to a file.
type Tensors = Vec<(&'static str, T)>;

fn t<E: bytemuck::Pod>(dtype: Dtype, shape: &[usize], v: &[E]) -> T {
    T {
        dtype,
        shape: shape.to_vec(),
        data: bytemuck::cast_slice(v).to_vec(),
    }
}

fn pod_vec<E: bytemuck::Pod>(b: &[u8]) -> Vec<E> {
    let mut v = vec![E::zeroed(); b.len() / std::mem::size_of::<E>()];
    bytemuck::cast_slice_mut::<E, u8>(&mut v).copy_from_slice(b);
    v
}

fn write(path: &Path, tensors: &[(&str, T)]) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, x)| {
            (
                *n,
                TensorView::new(x.dtype, x.shape.clone(), &x.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn read(path: &Path) -> HashMap<String, T> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                T {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect()
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run and expect success; the `--json` summary.
fn run_ok(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = tessera(&a);
    assert!(o.status.success(), "tessera {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("JSON summary")
}

/// Run and expect failure with `code`; stderr, checked to start with `error: ` and not to come
/// from a panic.
fn run_err(args: &[&str], code: i32) -> String {
    let o = tessera(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "tessera {args:?}: {e}");
    assert!(e.starts_with("error: "), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    e
}

fn has(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "`{p}` not in:\n{m}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sparsify_then_densify_through_files_gives_the_new_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    let n = 5000;
    let (base, new) = testing::pair::<f16>(PairKind::Dense, n, 0, 7);
    let base_t = t(Dtype::F16, &[n], &base);
    write(
        &p("x.safetensors"),
        &[("base", base_t.clone()), ("new", t(Dtype::F16, &[n], &new))],
    );
    let j = run_ok(&[
        "run",
        "bitmask.sparsify",
        "--in",
        s(&p("x.safetensors")),
        "-o",
        s(&p("delta.safetensors")),
        "--backend",
        "simt",
    ]);
    assert_eq!(j["op"], "bitmask.sparsify");
    assert_eq!(j["backend"], "simt-w32");
    assert!(j["host_wall_ms"].as_f64().unwrap() >= 0.0);
    assert!(j["timing"].as_str().unwrap().contains("host wall time"));
    let outs = j["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0]["name"], "mask");
    assert_eq!(outs[0]["dtype"], "u32");
    assert_eq!(outs[0]["shape"], serde_json::json!([n.div_ceil(32)]));
    assert_eq!(outs[1]["name"], "values");
    assert_eq!(outs[1]["dtype"], "f16");

    let d = read(&p("delta.safetensors"));
    assert_eq!(d.len(), 2);
    let (mask, values) = (&d["mask"], &d["values"]);
    assert_eq!((mask.dtype, mask.shape.clone()), (Dtype::U32, vec![157]));
    assert_eq!(values.dtype, Dtype::F16);
    let (rm, rv) = tessera::reference::bitmask::sparsify(&base, &new, 0.0);
    assert_eq!(pod_vec::<u32>(&mask.data), rm);
    assert_eq!(values.shape, vec![rv.len()]);
    assert_eq!(values.data, bytemuck::cast_slice::<f16, u8>(&rv));

    write(
        &p("y.safetensors"),
        &[
            ("base", base_t),
            ("mask", mask.clone()),
            ("values", values.clone()),
        ],
    );
    run_ok(&[
        "run",
        "bitmask.densify",
        "--in",
        s(&p("y.safetensors")),
        "-o",
        s(&p("z.safetensors")),
        "--backend",
        "cpu",
    ]);
    let z = read(&p("z.safetensors"));
    assert_eq!(z["out"].dtype, Dtype::F16);
    assert_eq!(z["out"].shape, vec![n]);
    assert_eq!(z["out"].data, bytemuck::cast_slice::<f16, u8>(&new));
}

/// A causal bf16 problem with explicit positions and invalid key slots, written as inputs.
fn attention_problem() -> Problem {
    Spec {
        name: "cli",
        mode: MaskMode::Causal,
        seqs: &[61, 1, 40],
        heads: 4,
        kv_heads: 2,
        d: 64,
        offsets: Some((2, 0)),
        invalid: &[(0, 3, 9)],
        random_invalid: false,
    }
    .problem::<bf16>(11)
}

fn attention_tensors(p: &Problem) -> Tensors {
    let (tq, tk, h, hk, d) = (p.total_q(), p.total_kv(), p.heads, p.kv_heads, p.head_dim);
    let b = |x: &[f32]| testing::to_dtype::<bf16>(x);
    vec![
        ("q", t(Dtype::BF16, &[tq, h, d], &b(&p.q))),
        ("k", t(Dtype::BF16, &[tk, hk, d], &b(&p.k))),
        ("v", t(Dtype::BF16, &[tk, hk, d], &b(&p.v))),
        ("cu_seqlens_q", t(Dtype::I32, &[p.cu_q.len()], &p.cu_q)),
        ("cu_seqlens_kv", t(Dtype::I32, &[p.cu_kv.len()], &p.cu_kv)),
        ("q_pos", t(Dtype::I32, &[tq], &p.q_pos)),
        ("kv_pos", t(Dtype::I32, &[tk], &p.kv_pos)),
        ("kv_valid", t(Dtype::U8, &[tk], &p.valid())),
    ]
}

fn attention_params(p: &Problem) -> Vec<String> {
    [
        format!("heads={}", p.heads),
        format!("kv_heads={}", p.kv_heads),
        format!("head_dim={}", p.head_dim),
        format!("max_seqlen_q={}", max_seqlen(&p.cu_q)),
        format!("max_seqlen_kv={}", max_seqlen(&p.cu_kv)),
        format!("scale={}", p.scale),
        "mode=causal".to_string(),
    ]
    .into_iter()
    .flat_map(|x| ["--param".to_string(), x])
    .collect()
}

fn attention_args<'a>(input: &'a str, out: &'a str, params: &'a [String]) -> Vec<&'a str> {
    let mut a = vec!["run", "attention.forward", "--in", input, "-o", out];
    a.extend(params.iter().map(String::as_str));
    a
}

#[test]
fn attention_forward_on_cpu_and_simt_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = attention_problem();
    let x = dir.path().join("x.safetensors");
    write(&x, &attention_tensors(&p));
    let params = attention_params(&p);
    let reference = p.reference();
    let (tq, h, d) = (p.total_q(), p.heads, p.head_dim);
    let mut results = Vec::new();
    for backend in ["cpu", "simt", "simt64"] {
        let y = dir.path().join(format!("y-{backend}.safetensors"));
        let mut args = attention_args(s(&x), s(&y), &params);
        args.extend(["--backend", backend]);
        let j = run_ok(&args);
        assert_eq!(j["outputs"][0]["shape"], serde_json::json!([tq, h, d]));
        assert_eq!(j["outputs"][1]["shape"], serde_json::json!([h, tq]));
        let out = read(&y);
        assert_eq!(out.len(), 2, "{backend}");
        assert_eq!(
            (out["o"].dtype, out["o"].shape.clone()),
            (Dtype::F32, vec![tq, h, d])
        );
        assert_eq!(
            (out["lse"].dtype, out["lse"].shape.clone()),
            (Dtype::F32, vec![h, tq])
        );
        let (o, lse) = (
            pod_vec::<f32>(&out["o"].data),
            pod_vec::<f32>(&out["lse"].data),
        );
        // Against the f64 reference (ARCHITECTURE §5 tolerances) ...
        p.compare_forward(&(o.clone(), lse.clone()), &reference)
            .result
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        results.push((backend, o, lse));
    }
    // ... and SIMT against the CPU path.
    let (_, co, cl) = &results[0];
    let co: Vec<f64> = co.iter().map(|&x| x as f64).collect();
    let cl: Vec<f64> = cl.iter().map(|&x| x as f64).collect();
    for (backend, o, lse) in &results[1..] {
        let e = rel_l2(o, &co);
        assert!(e <= tol::HALF, "{backend} vs cpu: O relative L2 {e:.2e}");
        assert_eq!(lse_mismatch(lse, &cl), None, "{backend} vs cpu: LSE");
    }
    // The human summary names the op, the backend and the outputs.
    let y = dir.path().join("y.safetensors");
    let mut args = attention_args(s(&x), s(&y), &params);
    args.extend(["--backend", "cpu"]);
    let o = tessera(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    has(
        &String::from_utf8_lossy(&o.stdout),
        &["attention.forward on cpu", "host wall time", "o ", "lse "],
    );
}

#[test]
fn in_place_outputs_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.st"), dir.path().join("y.st"));
    let mut r = Rng(3);
    let (cum, logits) = (r.values_in::<f32>(100, 1.0), r.values_in::<f32>(100, 1.0));
    write(
        &x,
        &[
            ("cum", t(Dtype::F32, &[100], &cum)),
            ("logits", t(Dtype::F32, &[100], &logits)),
        ],
    );
    let j = run_ok(&["run", "tah.accumulate_logits", "--in", s(&x), "-o", s(&y)]);
    assert_eq!(j["outputs"][0]["name"], "cum");
    assert_eq!(j["outputs"][0]["in_place"], true);
    let out = read(&y);
    assert_eq!(out.len(), 1);
    let want: Vec<f32> = cum.iter().zip(&logits).map(|(a, b)| a + b).collect();
    assert_eq!(pod_vec::<f32>(&out["cum"].data), want);

    // tah.copy_range on u8: the whole destination, updated.
    let (src, dst): (Vec<u8>, Vec<u8>) = ((0..50).collect(), vec![200; 30]);
    write(
        &x,
        &[
            ("src", t(Dtype::U8, &[50], &src)),
            ("dst", t(Dtype::U8, &[30], &dst)),
        ],
    );
    run_ok(&[
        "run",
        "tah.copy_range",
        "--in",
        s(&x),
        "-o",
        s(&y),
        "--param",
        "src_off=10",
        "--param",
        "dst_off=5",
        "--param",
        "n=20",
        "--backend",
        "simt",
    ]);
    let mut want = dst.clone();
    want[5..25].copy_from_slice(&src[10..30]);
    let out = read(&y);
    assert_eq!(out["dst"].shape, vec![30]);
    assert_eq!(out["dst"].data, want);
}

#[test]
fn list_is_the_op_reference() {
    let o = tessera(&["run", "--list", "--markdown"]);
    assert!(o.status.success());
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ops.md")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), doc);
    let o = tessera(&["run", "--list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), tessera::ops::table::OPS.len());
    let o = tessera(&["run", "--list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for op in tessera::ops::table::OPS {
        assert!(text.contains(&format!("{}  (", op.name)), "{}", op.name);
    }
    // Neither an op nor --list: a usage error.
    assert_eq!(tessera(&["run"]).status.code(), Some(2));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = attention_problem();
    let params = attention_params(&p);
    let good = attention_tensors(&p);
    let y = dir.path().join("y.safetensors");
    let ys = s(&y).to_string();
    // Writes the tensors (`edit` applied) and runs attention.forward on them with `extra` args.
    let run_with = |edit: &dyn Fn(&mut Tensors), extra: &[&str], code: i32| {
        let mut ts = good.clone();
        edit(&mut ts);
        let x = dir.path().join("x.safetensors");
        write(&x, &ts);
        let mut args = attention_args(s(&x), &ys, &params);
        args.extend(extra);
        let e = run_err(&args, code);
        assert!(!y.exists(), "an output file was written");
        e
    };
    // What the op takes is listed after the error.
    let listing = [
        "in:     q: f16|bf16[total_q, heads, head_dim]",
        "params: heads: usize",
    ];

    // Missing tensor.
    let e = run_with(&|ts| ts.retain(|(n, _)| *n != "v"), &[], 2);
    has(&e, &["error: attention.forward: missing input `v`"]);
    has(&e, &listing);
    // Extra tensors: errors, not ignored (a misspelt optional input would change the result).
    let e = run_with(
        &|ts| {
            let valid = ts.iter().position(|(n, _)| *n == "kv_valid").unwrap();
            ts[valid].0 = "kv_mask";
            ts.push(("notes", t(Dtype::U8, &[1], &[0u8])));
        },
        &[],
        2,
    );
    has(
        &e,
        &[
            "`kv_mask`, `notes` are not inputs of the op",
            "kv_valid (optional) u8 [total_kv]",
        ],
    );
    has(&e, &listing);
    // Mis-typed: a dtype tessera does not take (int64 from PyTorch), one the op does not take.
    let e = run_with(
        &|ts| {
            let cu = &mut ts.iter_mut().find(|(n, _)| *n == "cu_seqlens_q").unwrap().1;
            let wide: Vec<i64> = pod_vec::<i32>(&cu.data).iter().map(|&x| x as i64).collect();
            *cu = t(Dtype::I64, &cu.shape.clone(), &wide);
        },
        &[],
        2,
    );
    has(
        &e,
        &[
            "tensor `cu_seqlens_q`",
            "is I64, which tessera does not take",
            "as i32 [batch + 1]",
            "torch.int32",
        ],
    );
    let e = run_with(
        &|ts| {
            let q = &mut ts.iter_mut().find(|(n, _)| *n == "q").unwrap().1;
            let f: Vec<f32> = pod_vec::<bf16>(&q.data)
                .iter()
                .map(|x| x.to_f32())
                .collect();
            *q = t(Dtype::F32, &q.shape.clone(), &f);
        },
        &[],
        2,
    );
    has(&e, &["input `q` is f32; it must be f16 or bf16"]);
    // Wrong shape.
    let e = run_with(
        &|ts| {
            let k = &mut ts.iter_mut().find(|(n, _)| *n == "k").unwrap().1;
            let (a, b, c) = (k.shape[0], k.shape[1], k.shape[2]);
            k.shape = vec![a, b * c];
        },
        &[],
        2,
    );
    has(&e, &["input `k` has 2 dimensions"]);
    // Invalid contents of cu_seqlens (found by the kernels' check on SIMT).
    let e = run_with(
        &|ts| {
            for (n, x) in ts.iter_mut() {
                if n.starts_with("cu_seqlens") {
                    let mut cu = pod_vec::<i32>(&x.data);
                    cu.swap(1, 2);
                    *x = t(Dtype::I32, &[cu.len()], &cu);
                }
            }
        },
        &["--backend", "simt"],
        2,
    );
    has(&e, &["cu_seqlens"]);
    // Parameters: unknown, out of range, not NAME=VALUE, twice, missing.
    let none = |_: &mut Tensors| {};
    let e = run_with(&none, &["--param", "heds=4"], 2);
    has(&e, &["no parameter named `heds`", "heads, kv_heads"]);
    let e = run_with(&none, &["--param", "path=fast"], 2);
    has(&e, &["`fast` is not one of auto, tensor_core, scalar"]);
    let e = run_with(&none, &["--param", "path"], 2);
    has(&e, &["--param path: expected NAME=VALUE"]);
    let e = run_with(&none, &["--param", "heads=8"], 2);
    has(&e, &["--param heads given twice"]);
    let x = dir.path().join("x.safetensors");
    let e = run_err(
        &[
            "run",
            "attention.forward",
            "--in",
            s(&x),
            "-o",
            &ys,
            "--param",
            "heads=-4",
        ],
        2,
    );
    has(&e, &["parameter heads: -4 is outside"]);
    let e = run_err(&["run", "attention.forward", "--in", s(&x), "-o", &ys], 2);
    has(&e, &["missing parameter `heads`"]);
    // Unknown op: the ops are listed.
    let e = run_err(&["run", "attention.fwd", "--in", s(&x), "-o", &ys], 2);
    has(
        &e,
        &[
            "unknown op `attention.fwd`",
            "attention.forward",
            "bitmask.sparsify",
        ],
    );
    // No --in / -o.
    let e = run_err(&["run", "attention.forward", "-o", &ys], 2);
    has(&e, &["--in"]);
    // Files: missing, not safetensors (exit status 1).
    let missing = dir.path().join("missing.safetensors");
    let e = run_err(
        &[
            "run",
            "tah.accumulate_logits",
            "--in",
            s(&missing),
            "-o",
            &ys,
        ],
        1,
    );
    has(&e, &["error: reading", "missing.safetensors"]);
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let e = run_err(
        &["run", "tah.accumulate_logits", "--in", s(&junk), "-o", &ys],
        1,
    );
    has(&e, &["safetensors", "junk.safetensors"]);
    assert!(!y.exists());
    // A GPU backend on a machine without one: exit status 1.
    if tessera::Device::cuda(0).is_err() {
        let e = run_err(
            &[
                "run",
                "tah.accumulate_logits",
                "--in",
                s(&junk),
                "-o",
                &ys,
                "--backend",
                "cuda",
            ],
            1,
        );
        has(&e, &["cuda"]);
    }
}

/// `tessera run c2c.project` (issue 13): the projector from a safetensors file on the CPU path
/// and SIMT w32/w64 against the f64 reference; a wrong weight shape is an error naming the
/// tensor.
#[test]
fn c2c_project_through_files() {
    use tessera::reference::c2c::{project, Activation};
    use tessera::verify::c2c::{dims, random_projector};
    let dir = tempfile::tempdir().unwrap();
    let d = dims(2, 8, 3, 8, 24, 16, 2);
    let tokens = 7;
    let mut r = Rng(0xc2c);
    let w = random_projector::<bf16>(d, &mut r);
    let src = r.values_in::<bf16>(tokens * d.hs * d.ds, 1.0);
    let tgt = r.values_in::<bf16>(tokens * d.k_out(), 1.0);
    let h = |v: &[f32]| testing::to_dtype::<bf16>(v);
    let (hd, f, b) = (d.hidden, d.ffn, d.blocks);
    let tensors: Tensors = vec![
        ("src", t(Dtype::BF16, &[tokens, d.hs, d.ds], &h(&src))),
        ("tgt", t(Dtype::BF16, &[tokens, d.ht, d.dt], &h(&tgt))),
        ("w_in", t(Dtype::BF16, &[hd, d.k_in()], &h(&w.w_in))),
        ("b_in", t(Dtype::F32, &[hd], &w.b_in)),
        ("w1", t(Dtype::BF16, &[b, f, hd], &h(&w.w1))),
        ("w2", t(Dtype::BF16, &[b, hd, f], &h(&w.w2))),
        ("norm", t(Dtype::F32, &[b, hd], &w.norm)),
        ("w_out", t(Dtype::BF16, &[d.k_out(), hd], &h(&w.w_out))),
        ("w_s", t(Dtype::BF16, &[d.ht, hd], &h(&w.w_s))),
        ("gate_logit", t(Dtype::F32, &[1], &[0.25f32])),
    ];
    let x = dir.path().join("x.safetensors");
    write(&x, &tensors);
    let s64 = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
    let want = project(&w, 1.0, Activation::GeluErf, &s64(&src), &s64(&tgt), tokens);
    for backend in ["cpu", "simt", "simt64"] {
        let y = dir.path().join(format!("y-{backend}.safetensors"));
        let j = run_ok(&[
            "run",
            "c2c.project",
            "--in",
            s(&x),
            "-o",
            s(&y),
            "--backend",
            backend,
        ]);
        assert_eq!(
            j["outputs"][0]["shape"],
            serde_json::json!([tokens, d.ht, d.dt])
        );
        let out = read(&y);
        let got: Vec<f32> = pod_vec::<bf16>(&out["out"].data)
            .iter()
            .map(|v| v.to_f32())
            .collect();
        let e = rel_l2(&got, &want);
        assert!(e <= tol::HALF, "{backend}: relative L2 {e:.2e}");
    }
    // A wrong weight shape: the table names the tensor and the shape it wants.
    let mut bad = tensors.clone();
    bad[8].1 = t(
        Dtype::BF16,
        &[d.ht + 1, hd],
        &vec![bf16::ZERO; (d.ht + 1) * hd],
    );
    write(&x, &bad);
    let y = dir.path().join("y.safetensors");
    let e = run_err(&["run", "c2c.project", "--in", s(&x), "-o", s(&y)], 2);
    has(&e, &["w_s"]);
    assert!(!y.exists(), "an output file was written");
}

/// `tessera run gs.render --in scene.safetensors --param width=64 --param height=48`: a verify
/// scene (gsplat's input names) rendered on the CPU path, SIMT wave32 and wave64, each within
/// the 1e-4 of the Rust op on the CPU path (the f64 reference rounded); a scene without
/// colours is a clear error.
#[test]
fn gs_render_through_files() {
    use tessera::ops::gs::{pipeline, render::Layout};
    let dir = tempfile::tempdir().unwrap();
    let sc = tessera::verify::gs::Scene::generate(120, 0x95);
    let n = sc.opacities.len();
    let (w, h) = (sc.cam.width as usize, sc.cam.height as usize);
    let f = |shape: &[usize], v: &[f32]| t(Dtype::F32, shape, v);
    let tensors: Tensors = vec![
        ("means", f(&[n, 3], &sc.means)),
        ("quats", f(&[n, 4], &sc.quats)),
        ("scales", f(&[n, 3], &sc.scales)),
        ("opacities", f(&[n], &sc.opacities)),
        ("colors", f(&[n, 3], &sc.colors)),
        ("viewmat", f(&[4, 4], &sc.cam.viewmat)),
        ("K", f(&[3, 3], &sc.cam.k)),
        ("background", f(&[3], &sc.background)),
    ];
    let x = dir.path().join("scene.safetensors");
    write(&x, &tensors);
    let dev = tessera::Device::cpu();
    let up = |v: &[f32]| dev.upload(v, "x").unwrap();
    let want = pipeline::rasterize(
        &up(&sc.means),
        &up(&sc.quats),
        &up(&sc.scales),
        &up(&sc.opacities),
        pipeline::Colors::Rgb(&up(&sc.colors)),
        &sc.cam,
        sc.background,
        Layout::Baseline,
    )
    .unwrap();
    let (want_img, want_a) = (
        want.image.download().unwrap(),
        want.alpha.download().unwrap(),
    );
    let params = [
        "--param",
        "width=64",
        "--param",
        "height=48",
        "--param",
        "far=10",
    ];
    for (backend, layout) in [
        ("cpu", "baseline"),
        ("simt", "balanced"),
        ("simt64", "baseline"),
    ] {
        let y = dir.path().join(format!("out-{backend}.safetensors"));
        let lay = format!("layout={layout}");
        let mut args = vec!["run", "gs.render", "--in", s(&x), "-o", s(&y)];
        args.extend(params);
        args.extend(["--param", &lay, "--backend", backend]);
        let j = run_ok(&args);
        assert_eq!(j["outputs"][0]["shape"], serde_json::json!([h, w, 3]));
        assert_eq!(j["outputs"][1]["shape"], serde_json::json!([h, w]));
        let out = read(&y);
        let img: Vec<f32> = pod_vec(&out["image"].data);
        let a: Vec<f32> = pod_vec(&out["alpha"].data);
        let e = img
            .iter()
            .zip(&want_img)
            .chain(a.iter().zip(&want_a))
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert!(
            (e as f64) <= tessera::verify::gs::IMAGE_ABS,
            "{backend} {layout}: max abs {e:.2e}"
        );
        if backend == "cpu" {
            assert_eq!(img, want_img, "the CPU path is the Rust op");
        }
    }
    // No colours: the error names both choices; no output file.
    let no_colors: Tensors = tensors
        .iter()
        .filter(|(name, _)| *name != "colors")
        .cloned()
        .collect();
    write(&x, &no_colors);
    let y = dir.path().join("y.safetensors");
    let mut args = vec!["run", "gs.render", "--in", s(&x), "-o", s(&y)];
    args.extend(params);
    let e = run_err(&args, 2);
    has(&e, &["gs.render", "colors", "coeffs"]);
    assert!(!y.exists(), "an output file was written");
}
