//! Every op of the op table run by name through `interop::Call` (what the C ABI, the Python
//! package and `tessera run` use), on the CPU path and on host SIMT, against the Rust op called
//! directly on the CPU path; caller-provided outputs; and bad inputs, each an error naming the
//! op and the problem.
//!
//! The cases come from `cases(op)`, a match on the op's name that panics for a name it does not
//! know: an op added to the table without a case here fails `every_op_has_a_case`.

use half::{bf16, f16};
use tessera::device::Schedule;
use tessera::interop::{self, Call, DynBuffer, Outputs, ParamValue, Scalar};
use tessera::ops::attention::{self as attn, MaskMode, Path};
use tessera::ops::gemm::{self, Activation, Epilogue};
use tessera::ops::table::OPS;
use tessera::ops::{bitmask, codec, moe, tah};
use tessera::testing::{self, lse_mismatch, pair, rel_l2, tol, PairKind, Rng};
use tessera::verify::attention::{Problem, Spec};
use tessera::{DType, DTypeKind, Device, DeviceBuffer, Float};

// ---- host tensors ------------------------------------------------------------------------------

/// A tensor on the host: dtype, little-endian bytes, shape.
#[derive(Clone, Debug)]
struct HostT {
    dtype: DTypeKind,
    bytes: Vec<u8>,
    shape: Vec<u64>,
}

impl HostT {
    fn new<T: DType>(v: &[T], shape: &[usize]) -> HostT {
        assert_eq!(v.len(), shape.iter().product::<usize>(), "{shape:?}");
        HostT {
            dtype: T::KIND,
            bytes: bytemuck::cast_slice(v).to_vec(),
            shape: shape.iter().map(|&d| d as u64).collect(),
        }
    }

    fn vec<T: DType>(v: &[T]) -> HostT {
        HostT::new(v, &[v.len()])
    }

    /// A device buffer downloaded, with the shape it has.
    fn of<T: DType>(b: &DeviceBuffer<T>, shape: &[usize]) -> HostT {
        HostT::new(&b.download().unwrap(), shape)
    }

    fn upload(&self, dev: &Device, name: &str) -> DynBuffer {
        DynBuffer::from_bytes(dev, self.dtype, &self.bytes, name).unwrap()
    }

    /// The values as f32 (exact: f16 and bf16 widen without rounding).
    fn f32s(&self) -> Vec<f32> {
        match self.dtype {
            DTypeKind::F32 => pod_vec(&self.bytes),
            DTypeKind::BF16 => pod_vec::<bf16>(&self.bytes)
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            DTypeKind::F16 => pod_vec::<f16>(&self.bytes)
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            other => panic!("a relative comparison of {other} values"),
        }
    }
}

/// Elements of `T` from little-endian bytes.
fn pod_vec<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); b.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(b);
    v
}

fn cpu() -> Device {
    Device::cpu()
}

fn up<T: DType>(v: &[T]) -> DeviceBuffer<T> {
    cpu().upload(v, "direct").unwrap()
}

// ---- cases -------------------------------------------------------------------------------------

/// How an output on SIMT is compared with the direct CPU result (on the CPU path every output
/// must be bit-identical: the runner calls the same function).
#[derive(Clone, Copy, Debug)]
enum Cmp {
    /// Bit-exact: masks, indices, counts, integer outputs, and the ops that claim it.
    Exact,
    /// f32 output within this relative L2 error (ARCHITECTURE §5, `testing::tol`).
    Rel(f64),
    /// An attention LSE: within `tol::LSE_ABS`, exactly -inf where the CPU's is.
    Lse,
}

type Inputs = Vec<(&'static str, HostT)>;
type Params = Vec<(&'static str, Scalar)>;

struct Case {
    label: String,
    op: &'static str,
    inputs: Inputs,
    params: Params,
    /// The Rust op called directly on the CPU path: every output of the table, in its order.
    expect: Vec<(&'static str, HostT, Cmp)>,
}

fn int(v: usize) -> Scalar {
    Scalar::Int(v as i64)
}

fn word(w: &str) -> Scalar {
    Scalar::Str(w.to_string())
}

/// Random mask words for `n` elements (no bits past the last) and their popcount.
fn random_mask(n: usize, r: &mut Rng) -> (Vec<u32>, usize) {
    let mut m: Vec<u32> = (0..n.div_ceil(32)).map(|_| r.next_u64() as u32).collect();
    if n % 32 != 0 {
        *m.last_mut().unwrap() &= (1u32 << (n % 32)) - 1;
    }
    let c = m.iter().map(|w| w.count_ones() as usize).sum();
    (m, c)
}

fn sparsify_case<T: Float>(seed: u64, tau: Option<f32>) -> Case {
    let n = 1000;
    let (b, x) = pair::<T>(PairKind::Dense, n, 0, seed);
    let s = bitmask::sparsify(&up(&b), &up(&x), tau.unwrap_or(0.0)).unwrap();
    let k = s.values.len();
    Case {
        label: format!("bitmask.sparsify {} tau {tau:?}", T::KIND),
        op: "bitmask.sparsify",
        inputs: vec![("base", HostT::vec(&b)), ("new", HostT::vec(&x))],
        params: tau
            .map(|t| vec![("tau", Scalar::Float(t as f64))])
            .unwrap_or_default(),
        expect: vec![
            ("mask", HostT::of(&s.mask, &[n.div_ceil(32)]), Cmp::Exact),
            ("values", HostT::of(&s.values, &[k]), Cmp::Exact),
        ],
    }
}

fn densify_case<T: Float>(seed: u64) -> Case {
    let n = 777;
    let (b, x) = pair::<T>(PairKind::Special, n, 200, seed);
    let (mask, values) = tessera::reference::bitmask::sparsify(&b, &x, 0.0);
    let out = bitmask::densify_parts(&up(&b), &up(&mask), &up(&values)).unwrap();
    Case {
        label: format!("bitmask.densify {}", T::KIND),
        op: "bitmask.densify",
        inputs: vec![
            ("base", HostT::vec(&b)),
            ("mask", HostT::vec(&mask)),
            ("values", HostT::vec(&values)),
        ],
        params: vec![],
        expect: vec![("out", HostT::of(&out, &[n]), Cmp::Exact)],
    }
}

fn gather_case<T: DType>(src: Vec<T>, seed: u64) -> Case {
    let n = src.len();
    let (mask, count) = random_mask(n, &mut Rng(seed));
    let out = codec::gather(&up(&src), &up(&mask), count).unwrap();
    Case {
        label: format!("codec.gather {}", T::KIND),
        op: "codec.gather",
        inputs: vec![("src", HostT::vec(&src)), ("mask", HostT::vec(&mask))],
        params: vec![("count", int(count))],
        expect: vec![("out", HostT::of(&out, &[count]), Cmp::Exact)],
    }
}

fn delta_encode_case<T: Float>(seed: u64) -> Case {
    let n = 3001;
    let (b, x) = pair::<T>(PairKind::Ulp, n, 700, seed);
    let p = codec::delta_encode(&up(&b), &up(&x)).unwrap();
    Case {
        label: format!("codec.delta_encode {}", T::KIND),
        op: "codec.delta_encode",
        inputs: vec![("base_vals", HostT::vec(&b)), ("new_vals", HostT::vec(&x))],
        params: vec![],
        expect: vec![
            ("words", HostT::of(&p.words, &[p.words.len()]), Cmp::Exact),
            (
                "widths",
                HostT::of(&p.widths, &[n.div_ceil(256)]),
                Cmp::Exact,
            ),
        ],
    }
}

fn delta_decode_case<T: Float>(seed: u64) -> Case {
    let n = 2500;
    let (b, x) = pair::<T>(PairKind::Special, n, 900, seed);
    let p = codec::delta_encode(&up(&b), &up(&x)).unwrap();
    let out = codec::delta_decode(&up(&b), &p).unwrap();
    assert_eq!(testing::bits(&out.download().unwrap()), testing::bits(&x));
    Case {
        label: format!("codec.delta_decode {}", T::KIND),
        op: "codec.delta_decode",
        inputs: vec![
            ("base_vals", HostT::vec(&b)),
            ("packed.words", HostT::of(&p.words, &[p.words.len()])),
            ("packed.widths", HostT::of(&p.widths, &[p.widths.len()])),
        ],
        params: vec![],
        expect: vec![("out", HostT::of(&out, &[n]), Cmp::Exact)],
    }
}

fn delta_f32_case<T: Float>(seed: u64) -> Case {
    let n = 1500;
    let (b, x) = pair::<T>(PairKind::Dense, n, 0, seed);
    let out = codec::delta_f32(&up(&b), &up(&x)).unwrap();
    Case {
        label: format!("codec.delta_f32 {}", T::KIND),
        op: "codec.delta_f32",
        inputs: vec![("base_vals", HostT::vec(&b)), ("new_vals", HostT::vec(&x))],
        params: vec![],
        expect: vec![("out", HostT::of(&out, &[n]), Cmp::Exact)],
    }
}

fn to_f32_case<T: Float>(seed: u64) -> Case {
    let (v, _) = pair::<T>(PairKind::Special, 999, 10, seed);
    let out = codec::to_f32(&up(&v)).unwrap();
    Case {
        label: format!("codec.to_f32 {}", T::KIND),
        op: "codec.to_f32",
        inputs: vec![("values", HostT::vec(&v))],
        params: vec![],
        expect: vec![("out", HostT::of(&out, &[v.len()]), Cmp::Exact)],
    }
}

fn dequantize_case<T: Float>(with_base: bool, seed: u64) -> Case {
    let (n, bits) = (1300, 3);
    let mut r = Rng(seed);
    let idx: Vec<u8> = (0..n).map(|_| (r.next_u64() % 8) as u8).collect();
    let centroids: Vec<f32> = (0..8).map(|i| -0.5 + 0.137 * i as f32).collect();
    let p = codec::pack_indices(&up(&idx), bits).unwrap();
    let base: Vec<T> = testing::to_dtype(&r.values_in::<T>(n, 1.0));
    let out = codec::dequantize(&p, &centroids, with_base.then(|| up(&base)).as_ref()).unwrap();
    let mut inputs = vec![
        ("indices.words", HostT::of(&p.words, &[p.words.len()])),
        ("indices.widths", HostT::of(&p.widths, &[p.widths.len()])),
    ];
    if with_base {
        inputs.push(("base_vals", HostT::vec(&base)));
    }
    Case {
        label: format!("codec.dequantize {} base {with_base}", T::KIND),
        op: "codec.dequantize",
        inputs,
        params: vec![
            ("indices.count", int(n)),
            (
                "centroids",
                Scalar::List(centroids.iter().map(|&c| c as f64).collect()),
            ),
        ],
        expect: vec![("out", HostT::of(&out, &[n]), Cmp::Exact)],
    }
}

/// The attention tensors and parameters of `p` for a call: explicit positions unless they are
/// the implicit `0..len`, depths in duo-causal mode, key validity when the problem has one.
fn attention_args<T: attn::HalfFloat>(p: &Problem, path: &str) -> (Inputs, Params) {
    let (tq, tk) = (p.total_q(), p.total_kv());
    let (h, hk, d) = (p.heads, p.kv_heads, p.head_dim);
    let mut inputs = vec![
        ("q", HostT::new(&testing::to_dtype::<T>(&p.q), &[tq, h, d])),
        ("k", HostT::new(&testing::to_dtype::<T>(&p.k), &[tk, hk, d])),
        ("v", HostT::new(&testing::to_dtype::<T>(&p.v), &[tk, hk, d])),
        ("cu_seqlens_q", HostT::vec(&p.cu_q)),
        ("cu_seqlens_kv", HostT::vec(&p.cu_kv)),
    ];
    if p.implicit != Some((0, 0)) {
        inputs.push(("q_pos", HostT::vec(&p.q_pos)));
        inputs.push(("kv_pos", HostT::vec(&p.kv_pos)));
    }
    if p.mode == MaskMode::DuoCausal {
        inputs.push(("q_depth", HostT::vec(&p.q_depth)));
        inputs.push(("kv_depth", HostT::vec(&p.kv_depth)));
    }
    if let Some(v) = &p.kv_valid {
        inputs.push(("kv_valid", HostT::vec(v)));
    }
    let mode = match p.mode {
        MaskMode::Full => "full",
        MaskMode::Causal => "causal",
        MaskMode::DuoCausal => "duo_causal",
    };
    let params = vec![
        ("heads", int(h)),
        ("kv_heads", int(hk)),
        ("head_dim", int(d)),
        ("max_seqlen_q", int(attn::max_seqlen(&p.cu_q))),
        ("max_seqlen_kv", int(attn::max_seqlen(&p.cu_kv))),
        ("scale", Scalar::Float(p.scale as f64)),
        ("mode", word(mode)),
        ("path", word(path)),
    ];
    (inputs, params)
}

fn path_of(word: &str) -> Path {
    match word {
        "scalar" => Path::Scalar,
        "tensor_core" => Path::TensorCore,
        _ => Path::Auto,
    }
}

/// Small attention problems: full with implicit positions, causal with offsets (explicit) and
/// invalid keys, duo-causal with depths; an empty and a one-token sequence.
fn attention_problem<T: Float>(mode: MaskMode, seed: u64) -> Problem {
    let spec = match mode {
        MaskMode::Full => Spec {
            name: "full",
            mode,
            seqs: &[37, 0, 1, 50],
            heads: 2,
            kv_heads: 2,
            d: 64,
            offsets: None,
            invalid: &[(3, 5, 40)],
            random_invalid: false,
        },
        MaskMode::Causal => Spec {
            name: "causal",
            mode,
            seqs: &[45, 70],
            heads: 4,
            kv_heads: 2,
            d: 64,
            offsets: Some((3, -2)),
            invalid: &[],
            random_invalid: true,
        },
        MaskMode::DuoCausal => Spec {
            name: "duo",
            mode,
            seqs: &[40, 33],
            heads: 4,
            kv_heads: 1,
            d: 128,
            offsets: None,
            invalid: &[(0, 0, 10)],
            random_invalid: true,
        },
    };
    spec.problem::<T>(seed)
}

fn attention_case<T: attn::HalfFloat>(
    op: &'static str,
    mode: MaskMode,
    path: &str,
    seed: u64,
) -> Case {
    let p = attention_problem::<T>(mode, seed);
    let (mut inputs, mut params) = attention_args::<T>(&p, path);
    let (tq, h, d) = (p.total_q(), p.heads, p.head_dim);
    let u = p.upload::<T>(&cpu()).unwrap();
    let a = u.attention(path_of(path));
    let splits = 3;
    let expect = match op {
        "attention.forward" => {
            let out = attn::forward(&a).unwrap().checked().unwrap();
            vec![
                ("o", HostT::of(&out.o, &[tq, h, d]), Cmp::Rel(tol::HALF)),
                ("lse", HostT::of(&out.lse, &[h, tq]), Cmp::Lse),
            ]
        }
        "attention.decode" => {
            params.push(("splits", int(splits)));
            let out = attn::decode(&a, splits).unwrap().checked().unwrap();
            vec![
                ("o", HostT::of(&out.o, &[tq, h, d]), Cmp::Rel(tol::HALF)),
                ("lse", HostT::of(&out.lse, &[h, tq]), Cmp::Lse),
            ]
        }
        "attention.decode_partials" => {
            params.push(("splits", int(splits)));
            let out = attn::decode_partials(&a, splits).unwrap();
            out.check.check().unwrap();
            vec![
                (
                    "o",
                    HostT::of(&out.o, &[splits, tq, h, d]),
                    Cmp::Rel(tol::HALF),
                ),
                ("lse", HostT::of(&out.lse, &[splits, h, tq]), Cmp::Lse),
            ]
        }
        other => panic!("{other}"),
    };
    inputs.sort_by_key(|(n, _)| *n);
    Case {
        label: format!("{op} {} {mode:?} {path}", T::KIND),
        op,
        inputs,
        params,
        expect,
    }
}

fn merge_case(seed: u64) -> Case {
    let (s, tq, h, d) = (3, 21, 2, 64);
    let mut r = Rng(seed);
    let o = r.values_in::<f32>(s * tq * h * d, 1.0);
    let mut lse = r.values_in::<f32>(s * h * tq, 3.0);
    // Some partials saw no key (-inf), and one row none at all.
    for (i, l) in lse.iter_mut().enumerate() {
        if i % 7 == 0 || i % (h * tq) == 5 {
            *l = f32::NEG_INFINITY;
        }
    }
    let out = attn::merge(&up(&o), &up(&lse), s, tq, h, d).unwrap();
    Case {
        label: "attention.merge".into(),
        op: "attention.merge",
        inputs: vec![
            ("o", HostT::new(&o, &[s, tq, h, d])),
            ("lse", HostT::new(&lse, &[s, h, tq])),
        ],
        params: vec![
            ("splits", int(s)),
            ("total_q", int(tq)),
            ("heads", int(h)),
            ("head_dim", int(d)),
        ],
        expect: vec![
            ("o", HostT::of(&out.o, &[tq, h, d]), Cmp::Rel(tol::F32)),
            ("lse", HostT::of(&out.lse, &[h, tq]), Cmp::Lse),
        ],
    }
}

fn select_hard_case(seed: u64) -> Case {
    let mut r = Rng(seed);
    let mut scores = r.values_in::<f32>(2000, 5.0);
    scores[17] = f32::NAN;
    scores[18] = f32::INFINITY;
    let s = tah::select_hard(&up(&scores), 0.9).unwrap();
    Case {
        label: "tah.select_hard".into(),
        op: "tah.select_hard",
        inputs: vec![("scores", HostT::vec(&scores))],
        params: vec![("threshold", Scalar::Float(0.9))],
        expect: vec![("indices", HostT::of(&s.indices, &[s.count]), Cmp::Exact)],
    }
}

fn gather_rows_case<T: DType>(src: Vec<T>, d: usize, seed: u64) -> Case {
    let rows = src.len() / d;
    let mut r = Rng(seed);
    let idx: Vec<u32> = (0..23)
        .map(|_| (r.next_u64() % rows as u64) as u32)
        .collect();
    let out = tah::gather_rows(&up(&src), &up(&idx), d).unwrap();
    Case {
        label: format!("tah.gather_rows {}", T::KIND),
        op: "tah.gather_rows",
        inputs: vec![
            ("src", HostT::new(&src, &[rows, d])),
            ("idx", HostT::vec(&idx)),
        ],
        params: vec![("d", int(d))],
        expect: vec![("out", HostT::of(&out, &[idx.len(), d]), Cmp::Exact)],
    }
}

fn scatter_rows_case<T: DType>(dst: Vec<T>, src_of: impl Fn(usize) -> T, d: usize) -> Case {
    let rows = dst.len() / d;
    let mut idx: Vec<u32> = (0..rows as u32).collect();
    Rng(5).shuffle(&mut idx);
    idx.truncate(rows / 3);
    let src: Vec<T> = (0..idx.len() * d).map(src_of).collect();
    let mut out = up(&dst);
    tah::scatter_rows(&up(&src), &up(&idx), d, &mut out).unwrap();
    Case {
        label: format!("tah.scatter_rows {}", T::KIND),
        op: "tah.scatter_rows",
        inputs: vec![
            ("src", HostT::new(&src, &[idx.len(), d])),
            ("idx", HostT::vec(&idx)),
            ("dst", HostT::new(&dst, &[rows, d])),
        ],
        params: vec![("d", int(d))],
        expect: vec![("dst", HostT::of(&out, &[rows, d]), Cmp::Exact)],
    }
}

fn copy_range_case<T: DType>(src: Vec<T>, dst: Vec<T>) -> Case {
    let (src_off, dst_off, n) = (17, 33, 150);
    let mut out = up(&dst);
    tah::copy_range(&up(&src), src_off, &mut out, dst_off, n).unwrap();
    Case {
        label: format!("tah.copy_range {}", T::KIND),
        op: "tah.copy_range",
        inputs: vec![("src", HostT::vec(&src)), ("dst", HostT::vec(&dst))],
        params: vec![
            ("src_off", int(src_off)),
            ("dst_off", int(dst_off)),
            ("n", int(n)),
        ],
        expect: vec![("dst", HostT::of(&out, &[dst.len()]), Cmp::Exact)],
    }
}

fn next_depth_case<E: Float>(seed: u64) -> Case {
    let (m, vocab, k, d) = (5, 300, 8, 24);
    let mut r = Rng(seed);
    let cum = r.values_in::<f32>(m * vocab, 3.0);
    let emb: Vec<E> = testing::to_dtype(&r.values_in::<E>(vocab * d, 1.0));
    let n = tah::next_depth_input(&up(&cum), vocab, k, &up(&emb), d).unwrap();
    Case {
        label: format!("tah.next_depth_input {}", E::KIND),
        op: "tah.next_depth_input",
        inputs: vec![
            ("cum", HostT::new(&cum, &[m, vocab])),
            ("emb", HostT::new(&emb, &[vocab, d])),
        ],
        params: vec![("vocab", int(vocab)), ("k", int(k)), ("d", int(d))],
        expect: vec![
            ("out", HostT::of(&n.out, &[m, d]), Cmp::Rel(tol::F32)),
            ("ids", HostT::of(&n.ids, &[m, k]), Cmp::Exact),
            (
                "weights",
                HostT::of(&n.weights, &[m, k]),
                Cmp::Rel(tol::F32),
            ),
        ],
    }
}

fn accumulate_case(seed: u64) -> Case {
    let mut r = Rng(seed);
    let (cum, logits) = (r.values_in::<f32>(1234, 4.0), r.values_in::<f32>(1234, 4.0));
    let mut out = up(&cum);
    tah::accumulate_logits(&mut out, &up(&logits)).unwrap();
    Case {
        label: "tah.accumulate_logits".into(),
        op: "tah.accumulate_logits",
        inputs: vec![("cum", HostT::vec(&cum)), ("logits", HostT::vec(&logits))],
        params: vec![],
        expect: vec![("cum", HostT::of(&out, &[cum.len()]), Cmp::Exact)],
    }
}

/// The PSR parameters of a moe.route / moe.layer call (none at inference).
fn psr_params(psr: Option<(u64, u64, u64, u64)>) -> Vec<(&'static str, Scalar)> {
    psr.map(|(step, t_s, t_e, seed)| {
        vec![
            ("step", int(step as usize)),
            ("t_s", int(t_s as usize)),
            ("t_e", int(t_e as usize)),
            ("seed", int(seed as usize)),
        ]
    })
    .unwrap_or_default()
}

/// moe.route at inference or a PSR step (reference results on the CPU path).
fn route_case(
    t: usize,
    n: usize,
    r: usize,
    k: usize,
    psr: Option<(u64, u64, u64, u64)>,
    seed: u64,
) -> Case {
    let mut g = Rng(seed);
    let logits = g.values_in::<f32>(t * r * n, 6.0);
    let p = moe::RouteParams {
        r,
        layer_in_group: r - 1,
        layer: 7,
        top_k: k,
        renormalize: psr.is_some(),
        psr: psr.map(|(step, t_s, t_e, seed)| moe::Psr {
            step,
            t_s,
            t_e,
            seed,
        }),
    };
    let o = moe::route(&up(&logits), t, &p).unwrap();
    let mut params = vec![
        ("r", int(r)),
        ("layer_in_group", int(r - 1)),
        ("top_k", int(k)),
        (
            "renormalize",
            word(if p.renormalize { "true" } else { "false" }),
        ),
        ("layer", int(7)),
    ];
    params.extend(psr_params(psr));
    Case {
        label: format!("moe.route T={t} N={n} r={r} k={k} psr={psr:?}"),
        op: "moe.route",
        inputs: vec![("logits", HostT::new(&logits, &[t, r * n]))],
        params,
        expect: vec![
            ("topk_ids", HostT::of(&o.topk_ids, &[t, k]), Cmp::Exact),
            (
                "topk_weights",
                HostT::of(&o.topk_weights, &[t, k]),
                Cmp::Rel(tol::F32),
            ),
        ],
    }
}

/// moe.layer with r = 2 (the second layer of its group), at inference and at a PSR step.
fn layer_case<T: moe::ExpertFloat>(psr: Option<(u64, u64, u64, u64)>, seed: u64) -> Case {
    let (t, d, f, n, r, k) = (9, 16, 24, 4, 2, 3);
    let e = r * n;
    let mut g = Rng(seed);
    let x: Vec<T> = testing::to_dtype(&g.values_in::<T>(t * d, 1.0));
    let wr: Vec<T> = testing::to_dtype(&g.values_in::<T>(e * d, 0.5));
    let wg: Vec<T> = testing::to_dtype(&g.values_in::<T>(e * f * d, 0.25));
    let wu: Vec<T> = testing::to_dtype(&g.values_in::<T>(e * f * d, 0.25));
    let wd: Vec<T> = testing::to_dtype(&g.values_in::<T>(e * d * f, 0.2));
    let p = moe::RouteParams {
        r,
        layer_in_group: 1,
        layer: 1,
        top_k: k,
        renormalize: true,
        psr: psr.map(|(step, t_s, t_e, seed)| moe::Psr {
            step,
            t_s,
            t_e,
            seed,
        }),
    };
    let (bx, br, bg, bu, bd) = (up(&x), up(&wr), up(&wg), up(&wu), up(&wd));
    let w = moe::LayerWeights {
        w_router: &br,
        w_gate: &bg,
        w_up: &bu,
        w_down: &bd,
    };
    let y = moe::layer(&bx, d, &w, &p).unwrap();
    let mut params = vec![
        ("r", int(r)),
        ("layer_in_group", int(1)),
        ("top_k", int(k)),
        ("renormalize", word("true")),
    ];
    params.extend(psr_params(psr));
    Case {
        label: format!("moe.layer {} psr={psr:?}", T::KIND),
        op: "moe.layer",
        inputs: vec![
            ("x", HostT::new(&x, &[t, d])),
            ("w_router", HostT::new(&wr, &[e, d])),
            ("w_gate", HostT::new(&wg, &[e, f, d])),
            ("w_up", HostT::new(&wu, &[e, f, d])),
            ("w_down", HostT::new(&wd, &[e, d, f])),
        ],
        params,
        expect: vec![("y", HostT::of(&y, &[t, d]), Cmp::Rel(tol::HALF))],
    }
}

/// moe.permute of the alignment of random ids.
fn permute_case<T: DType>(
    x: Vec<T>,
    d: usize,
    k: usize,
    e: usize,
    block: usize,
    seed: u64,
) -> Case {
    let t = x.len() / d;
    let mut r = Rng(seed);
    let ids: Vec<i32> = (0..t * k)
        .map(|_| (r.next_u64() % e as u64) as i32)
        .collect();
    let a = moe::align(&up(&ids), k, e, block).unwrap();
    let p = moe::permute(&up(&x), d, &a, k, e, block).unwrap();
    let len = a.sorted_token_ids.len();
    Case {
        label: format!(
            "moe.permute T={t} d={d} k={k} E={e} block={block} {}",
            T::KIND
        ),
        op: "moe.permute",
        inputs: vec![
            ("x", HostT::new(&x, &[t, d])),
            (
                "aligned.sorted_token_ids",
                HostT::of(&a.sorted_token_ids, &[len]),
            ),
            (
                "aligned.expert_ids",
                HostT::of(&a.expert_ids, &[a.expert_ids.len()]),
            ),
            (
                "aligned.num_tokens_post_padded",
                HostT::of(&a.num_tokens_post_padded, &[1]),
            ),
        ],
        params: vec![
            ("d", int(d)),
            ("top_k", int(k)),
            ("num_experts", int(e)),
            ("block_size", int(block)),
        ],
        expect: vec![
            ("rows", HostT::of(&p.rows, &[len, d]), Cmp::Exact),
            ("offsets", HostT::of(&p.offsets, &[e + 1]), Cmp::Exact),
            ("positions", HostT::of(&p.positions, &[t * k]), Cmp::Exact),
        ],
    }
}

/// moe.combine of random expert rows at a random permutation of positions. f32: random values
/// (relative error); f16/bf16: small integers and weights 1/4, 1/2, 1, whose sums are exact in
/// every type, so the half output is compared exactly.
fn combine_case<T: Float>(t: usize, d: usize, k: usize, seed: u64) -> Case {
    let mut r = Rng(seed);
    let rows = t * k + 5;
    let f32_out = T::KIND == DTypeKind::F32;
    let vals: Vec<f32> = if f32_out {
        r.values_in::<T>(rows * d, 2.0)
    } else {
        (0..rows * d)
            .map(|_| (r.next_u64() % 9) as f32 - 4.0)
            .collect()
    };
    let eo: Vec<T> = testing::to_dtype(&vals);
    let mut pos: Vec<i32> = (0..rows as i32).collect();
    r.shuffle(&mut pos);
    pos.truncate(t * k);
    let w: Vec<f32> = (0..t * k)
        .map(|_| {
            if f32_out {
                r.unit() as f32
            } else {
                [0.25, 0.5, 1.0][(r.next_u64() % 3) as usize]
            }
        })
        .collect();
    let y = moe::combine::<T, T>(&up(&eo), &up(&pos), &up(&w), d, k).unwrap();
    let tol = if f32_out {
        Cmp::Rel(tol::F32)
    } else {
        Cmp::Exact
    };
    Case {
        label: format!("moe.combine T={t} d={d} k={k} {}", T::KIND),
        op: "moe.combine",
        inputs: vec![
            ("expert_out", HostT::new(&eo, &[rows, d])),
            ("positions", HostT::new(&pos, &[t, k])),
            ("topk_weights", HostT::new(&w, &[t, k])),
        ],
        params: vec![("d", int(d)), ("top_k", int(k))],
        expect: vec![("y", HostT::of(&y, &[t, d]), tol)],
    }
}

/// moe.load of random ids.
fn load_case(t: usize, k: usize, n: usize, r: usize, seed: u64) -> Case {
    let mut g = Rng(seed);
    let ids: Vec<i32> = (0..t * k)
        .map(|_| (g.next_u64() % (n * r) as u64) as i32)
        .collect();
    let l = moe::load(&up(&ids), n, r).unwrap();
    Case {
        label: format!("moe.load T={t} k={k} N={n} r={r}"),
        op: "moe.load",
        inputs: vec![("topk_ids", HostT::new(&ids, &[t, k]))],
        params: vec![("num_experts", int(n)), ("r", int(r))],
        expect: vec![
            ("per_expert", HostT::of(&l.per_expert, &[n * r]), Cmp::Exact),
            ("per_layer", HostT::of(&l.per_layer, &[r]), Cmp::Exact),
        ],
    }
}

/// A `gemm.*` case: `op` is `gemm.dense`, `gemm.dense_swiglu`, `gemm.grouped` or
/// `gemm.grouped_swiglu`; the expected output is the Rust op on the CPU path.
fn gemm_case<T: tessera::ops::gemm::HalfFloat>(
    op: &'static str,
    (m, n, k): (usize, usize, usize),
    full: bool,
    seed: u64,
) -> Case {
    let mut r = Rng(seed);
    let swiglu = op.ends_with("swiglu");
    let grouped = op.starts_with("gemm.grouped");
    let offsets: Vec<i32> = vec![0, (m / 3) as i32, (m / 3) as i32, m as i32];
    let g = if grouped { 3 } else { 1 };
    let b_rows = if swiglu && !grouped { 2 * n } else { n };
    let a = testing::to_dtype::<T>(&r.values_in::<T>(m * k, 1.0));
    let b = testing::to_dtype::<T>(&r.values_in::<T>(g * b_rows * k, 1.0));
    let upm = testing::to_dtype::<T>(&r.values_in::<T>(g * n * k, 1.0));
    let bias_len = if swiglu { 2 * n } else { n };
    let bias = r.values_in::<f32>(bias_len, 1.0);
    let scale = r.values_in::<f32>(m, 2.0);
    let residual = r.values_in::<f32>(m * n, 1.0);
    let (ba, bb, bo, bu) = (up(&a), up(&b), up(&offsets), up(&upm));
    let (bbias, bscale, bres) = (up(&bias), up(&scale), up(&residual));
    let mut epi = Epilogue::<f32>::new();
    let act = if full { "gelu_erf" } else { "none" };
    if full && op != "gemm.grouped_swiglu" {
        epi = epi.bias(&bbias).row_scale(&bscale).residual(&bres);
        if !swiglu {
            epi = epi.activation(Activation::parse(act).unwrap());
        }
    }
    if swiglu {
        epi = epi.swiglu();
    }
    let d = match op {
        "gemm.dense" | "gemm.dense_swiglu" => gemm::dense::<T, f32>(&ba, &bb, m, n, k, &epi),
        "gemm.grouped" => gemm::grouped::<T, f32>(&ba, &bb, &bo, m, n, k, &epi),
        _ => gemm::grouped_swiglu::<T, f32>(&ba, &bb, &bu, &bo, m, n, k),
    }
    .unwrap();
    let mut inputs: Inputs = vec![("a", HostT::new(&a, &[m, k]))];
    match op {
        "gemm.grouped_swiglu" => {
            inputs.push(("gate", HostT::new(&b, &[g, n, k])));
            inputs.push(("up", HostT::new(&upm, &[g, n, k])));
        }
        "gemm.grouped" => inputs.push(("b", HostT::new(&b, &[g, n, k]))),
        _ => inputs.push(("b", HostT::new(&b, &[b_rows, k]))),
    }
    if grouped {
        inputs.push(("offsets", HostT::vec(&offsets)));
    }
    if full && op != "gemm.grouped_swiglu" {
        inputs.push(("epi.bias", HostT::vec(&bias)));
        inputs.push(("epi.row_scale", HostT::vec(&scale)));
        inputs.push(("epi.residual", HostT::new(&residual, &[m, n])));
    }
    let mut params = vec![
        ("m", int(m)),
        (
            if op == "gemm.grouped_swiglu" {
                "f"
            } else {
                "n"
            },
            int(n),
        ),
        ("k", int(k)),
    ];
    if !swiglu && full {
        params.push(("epi.activation", word(act)));
    }
    Case {
        label: format!("{op} {m}x{n}x{k} {} full={full}", T::KIND),
        op,
        inputs,
        params,
        expect: vec![("d", HostT::of(&d, &[m, n]), Cmp::Rel(tol::HALF))],
    }
}

/// `c2c.project`: one projector on token-major rows (hard gate with erf GELU, or soft with tanh).
fn c2c_project_case<T: attn::HalfFloat>(soft: bool, seed: u64) -> Case {
    use tessera::ops::c2c::{self, Gate, Options, Projector};
    use tessera::verify::c2c::{dims, random_projector};
    let d = dims(2, 8, 3, 8, 24, 16, 2);
    let tokens = 11;
    let mut r = Rng(seed);
    let w = random_projector::<T>(d, &mut r);
    let src: Vec<T> = testing::to_dtype(&r.values_in::<T>(tokens * d.hs * d.ds, 1.0));
    let tgt: Vec<T> = testing::to_dtype(&r.values_in::<T>(tokens * d.k_out(), 1.0));
    let gate = 0.5f32;
    let opts = if soft {
        Options {
            gate: Gate::Soft { tau: 2.0 },
            gelu: Activation::GeluTanh,
        }
    } else {
        Options::default()
    };
    let p = Projector::<T>::upload(&cpu(), &w, gate).unwrap();
    let out = c2c::project(&p, &up(&src), &up(&tgt), tokens, &opts).unwrap();
    let h = |v: &[f32]| -> Vec<T> { testing::to_dtype(v) };
    let (hd, f, b) = (d.hidden, d.ffn, d.blocks);
    let mut params = vec![];
    if soft {
        params.push(("gate", word("soft")));
        params.push(("tau", Scalar::Float(2.0)));
        params.push(("gelu", word("gelu_tanh")));
    }
    Case {
        label: format!("c2c.project {} soft={soft}", T::KIND),
        op: "c2c.project",
        inputs: vec![
            ("src", HostT::new(&src, &[tokens, d.hs, d.ds])),
            ("tgt", HostT::new(&tgt, &[tokens, d.ht, d.dt])),
            ("w_in", HostT::new(&h(&w.w_in), &[hd, d.k_in()])),
            ("b_in", HostT::vec(&w.b_in)),
            ("w1", HostT::new(&h(&w.w1), &[b, f, hd])),
            ("w2", HostT::new(&h(&w.w2), &[b, hd, f])),
            ("norm", HostT::new(&w.norm, &[b, hd])),
            ("w_out", HostT::new(&h(&w.w_out), &[d.k_out(), hd])),
            ("w_s", HostT::new(&h(&w.w_s), &[d.ht, hd])),
            ("gate_logit", HostT::vec(&[gate])),
        ],
        params,
        expect: vec![(
            "out",
            HostT::of(&out, &[tokens, d.ht, d.dt]),
            Cmp::Rel(tol::HALF),
        )],
    }
}

/// `c2c.fuse`: S = 2 sharer layers into T = 3 receiver layers (one gate closed), with an
/// alignment and, optionally, a layer-map table.
fn c2c_fuse_case<T: attn::HalfFloat>(table: bool, seed: u64) -> Case {
    use tessera::drivers::c2c::{align::LayerMap, Config, Fuser};
    use tessera::ops::c2c::Options;
    use tessera::ops::c2c::Stacked;
    use tessera::verify::c2c::{dims, random_projector};
    let d = dims(1, 8, 2, 8, 16, 8, 1);
    let (sl, tl, src_tokens, tokens) = (2usize, 3usize, 7usize, 9usize);
    let mut r = Rng(seed);
    let ws: Vec<_> = (0..2 * tl)
        .map(|_| random_projector::<T>(d, &mut r))
        .collect();
    let cat = |f: &dyn Fn(&tessera::ops::c2c::ProjectorHost) -> &Vec<f32>| -> Vec<f32> {
        ws.iter().flat_map(|w| f(w).iter().copied()).collect()
    };
    let (w_in, b_in, w1, w2) = (
        cat(&|w| &w.w_in),
        cat(&|w| &w.b_in),
        cat(&|w| &w.w1),
        cat(&|w| &w.w2),
    );
    let (norm, w_out, w_s) = (cat(&|w| &w.norm), cat(&|w| &w.w_out), cat(&|w| &w.w_s));
    let gates = vec![0.5f32, -1.0, 2.0];
    let sk: Vec<T> = testing::to_dtype(&r.values_in::<T>(sl * src_tokens * 8, 1.0));
    let sv: Vec<T> = testing::to_dtype(&r.values_in::<T>(sl * src_tokens * 8, 1.0));
    let tk: Vec<T> = testing::to_dtype(&r.values_in::<T>(tl * tokens * 16, 1.0));
    let tv: Vec<T> = testing::to_dtype(&r.values_in::<T>(tl * tokens * 16, 1.0));
    let alignment: Vec<i32> = (0..tokens)
        .map(|p| (p * src_tokens / tokens) as i32)
        .collect();
    let map_table = vec![1i32, 0, 1];
    let h = |v: &[f32]| -> Vec<T> { testing::to_dtype(v) };
    let (hw_in, hw1, hw2, hw_out, hw_s) = (h(&w_in), h(&w1), h(&w2), h(&w_out), h(&w_s));
    let cfg = Config {
        source_layers: sl,
        target_layers: tl,
        dims: d,
        map: if table {
            LayerMap::Table(map_table.iter().map(|&x| x as usize).collect())
        } else {
            LayerMap::LastAligned
        },
    };
    let (bw_in, bb_in, bw1, bw2) = (up(&hw_in), up(&b_in), up(&hw1), up(&hw2));
    let (bnorm, bw_out, bw_s) = (up(&norm), up(&hw_out), up(&hw_s));
    let fuser = Fuser::<T>::from_stacked(
        &cpu(),
        cfg,
        &Stacked {
            w_in: &bw_in,
            b_in: &bb_in,
            w1: &bw1,
            w2: &bw2,
            norm: &bnorm,
            w_out: &bw_out,
            w_s: &bw_s,
            gate_logit: &gates,
        },
        tessera::ops::c2c::Gate::Hard,
    )
    .unwrap();
    let (mut ok, mut ov) = (up(&tk), up(&tv));
    let al: Vec<usize> = alignment.iter().map(|&a| a as usize).collect();
    fuser
        .fuse_stacked(
            &up(&sk),
            &up(&sv),
            src_tokens,
            &mut ok,
            &mut ov,
            tokens,
            &al,
            &Options::default(),
        )
        .unwrap();
    let (hd, f, b) = (d.hidden, d.ffn, d.blocks);
    let mut inputs = vec![
        ("src_k", HostT::new(&sk, &[sl, src_tokens, 1, 8])),
        ("src_v", HostT::new(&sv, &[sl, src_tokens, 1, 8])),
        ("tgt_k", HostT::new(&tk, &[tl, tokens, 2, 8])),
        ("tgt_v", HostT::new(&tv, &[tl, tokens, 2, 8])),
        ("w_in", HostT::new(&hw_in, &[tl, 2, hd, d.k_in()])),
        ("b_in", HostT::new(&b_in, &[tl, 2, hd])),
        ("w1", HostT::new(&hw1, &[tl, 2, b, f, hd])),
        ("w2", HostT::new(&hw2, &[tl, 2, b, hd, f])),
        ("norm", HostT::new(&norm, &[tl, 2, b, hd])),
        ("w_out", HostT::new(&hw_out, &[tl, 2, d.k_out(), hd])),
        ("w_s", HostT::new(&hw_s, &[tl, 2, d.ht, hd])),
        ("gate_logit", HostT::vec(&gates)),
        ("alignment", HostT::vec(&alignment)),
    ];
    if table {
        inputs.push(("layer_map", HostT::vec(&map_table)));
    }
    Case {
        label: format!("c2c.fuse {} table={table}", T::KIND),
        op: "c2c.fuse",
        inputs,
        params: vec![],
        expect: vec![
            (
                "out_k",
                HostT::of(&ok, &[tl, tokens, 2, 8]),
                Cmp::Rel(tol::HALF),
            ),
            (
                "out_v",
                HostT::of(&ov, &[tl, tokens, 2, 8]),
                Cmp::Rel(tol::HALF),
            ),
        ],
    }
}

/// `featcache.received`: an attention problem and the reference LSE (f32), against the Rust op
/// on the CPU path.
fn featcache_received_case<T: attn::HalfFloat>(mode: MaskMode, per_head: bool, seed: u64) -> Case {
    use tessera::ops::featcache;
    let p = attention_problem::<T>(mode, seed);
    let (mut inputs, mut params) = attention_args::<T>(&p, "auto");
    params.retain(|(n, _)| *n != "path");
    if !per_head {
        inputs.retain(|(n, _)| *n != "v"); // optional: not read
    }
    params.push(("per_head", int(per_head as usize)));
    let (tq, tk, h) = (p.total_q(), p.total_kv(), p.heads);
    let lse: Vec<f32> = p.reference().1.iter().map(|&x| x as f32).collect();
    inputs.push(("lse", HostT::new(&lse, &[h, tq])));
    inputs.sort_by_key(|(n, _)| *n);
    let u = p.upload::<T>(&cpu()).unwrap();
    let r = featcache::received(&u.attention(Path::Auto), &up(&lse), per_head).unwrap();
    let n = if per_head { h * tk } else { tk };
    Case {
        label: format!(
            "featcache.received {} {mode:?} per_head={per_head}",
            T::KIND
        ),
        op: "featcache.received",
        inputs,
        params,
        expect: vec![("received", HostT::of(&r, &[n]), Cmp::Rel(tol::F32))],
    }
}

/// `gmscore.forward` / `gmscore.backward`: a sparse mixture, against the Rust ops on the CPU path.
fn gmscore_case(op: &'static str, n: usize, v: usize, d: usize, seed: u64) -> Case {
    use tessera::ops::gmscore;
    use tessera::verify::gmscore::{Case as Mix, PKind};
    let c = Mix::generate(n, v, d, PKind::Sparse, false, seed);
    let (cb, p, x, a, s) = (
        up(&c.codebook),
        up(&c.p),
        up(&c.x_t),
        up(&c.alpha),
        up(&c.sigma),
    );
    let f = gmscore::forward(&cb, &p, &x, &a, &s, d).unwrap();
    let mut inputs = vec![
        ("codebook", HostT::new(&c.codebook, &[v, d])),
        ("p", HostT::new(&c.p, &[n, v])),
        ("x_t", HostT::new(&c.x_t, &[n, d])),
        ("alpha", HostT::vec(&c.alpha)),
        ("sigma", HostT::vec(&c.sigma)),
    ];
    let expect = if op == "gmscore.forward" {
        vec![
            ("score", HostT::of(&f.score, &[n, d]), Cmp::Rel(tol::F32)),
            ("lse", HostT::of(&f.lse, &[n]), Cmp::Rel(tol::F32)),
        ]
    } else {
        let g = gmscore::backward(&cb, &p, &x, &a, &s, d, &up(&c.s_gen), &f.score, &f.lse).unwrap();
        inputs.push(("s_gen", HostT::new(&c.s_gen, &[n, d])));
        inputs.push(("score", HostT::of(&f.score, &[n, d])));
        inputs.push(("lse", HostT::of(&f.lse, &[n])));
        vec![
            (
                "grad_s_gen",
                HostT::of(&g.grad_s_gen, &[n, d]),
                Cmp::Rel(tol::F32),
            ),
            (
                "grad_x_t",
                HostT::of(&g.grad_x_t, &[n, d]),
                Cmp::Rel(tol::F32),
            ),
        ]
    };
    Case {
        label: format!("{op} P={n} V={v} d={d}"),
        op,
        inputs,
        params: vec![("d", Scalar::Int(d as i64))],
        expect,
    }
}

/// `featcache.select`: ties and a mid ratio, against the Rust op on the CPU path.
fn featcache_select_case(n: usize, cr: f64, seed: u64) -> Case {
    use tessera::ops::featcache;
    let c = tessera::verify::featcache::Case::generate(n, 4, cr, 0.2, seed);
    let s = featcache::select(&up(&c.his), &up(&c.fut), &up(&c.cf), cr, 0.2).unwrap();
    let n1 = s.c1.len();
    Case {
        label: format!("featcache.select n={n} cr={cr}"),
        op: "featcache.select",
        inputs: vec![
            ("his", HostT::vec(&c.his)),
            ("fut", HostT::vec(&c.fut)),
            ("cf", HostT::vec(&c.cf)),
        ],
        params: vec![("cr", Scalar::Float(cr)), ("low_mass", Scalar::Float(0.2))],
        expect: vec![
            ("class", HostT::of(&s.class, &[n]), Cmp::Exact),
            ("c1", HostT::of(&s.c1, &[n1]), Cmp::Exact),
        ],
    }
}

/// A `gs.*` scene: the verify family's (N Gaussians in front of a 64×48 camera, some culled),
/// its SH coefficients (`k` per Gaussian, or none) and the inputs of `gs.render`.
struct GsScene {
    s: tessera::verify::gs::Scene,
    coeffs: Vec<f32>,
    k: usize,
}

impl GsScene {
    fn new(n: usize, k: usize, seed: u64) -> GsScene {
        let s = tessera::verify::gs::Scene::generate(n, seed);
        let coeffs = Rng(seed ^ 0x5e5e).values_in::<f32>(n * k * 3, 0.5);
        GsScene { s, coeffs, k }
    }

    fn n(&self) -> usize {
        self.s.opacities.len()
    }

    /// The Rust op's colours argument (on the CPU path) and the table's colour input.
    fn colors<'a>(
        &self,
        rgb: &'a DeviceBuffer<f32>,
        sh: &'a DeviceBuffer<f32>,
        sh_degree: Option<u32>,
    ) -> (
        tessera::ops::gs::pipeline::Colors<'a>,
        (&'static str, HostT),
    ) {
        use tessera::ops::gs::pipeline::Colors;
        let n = self.n();
        match sh_degree {
            None => (
                Colors::Rgb(rgb),
                ("colors", HostT::new(&self.s.colors, &[n, 3])),
            ),
            Some(d) => (
                Colors::Sh {
                    coeffs: sh,
                    sh_degree: d,
                },
                ("coeffs", HostT::new(&self.coeffs, &[n, self.k, 3])),
            ),
        }
    }

    /// Inputs: the Gaussians (no colours) and the camera.
    fn inputs(&self) -> Inputs {
        let n = self.n();
        vec![
            ("means", HostT::new(&self.s.means, &[n, 3])),
            ("quats", HostT::new(&self.s.quats, &[n, 4])),
            ("scales", HostT::new(&self.s.scales, &[n, 3])),
            ("viewmat", HostT::new(&self.s.cam.viewmat, &[4, 4])),
            ("K", HostT::new(&self.s.cam.k, &[3, 3])),
        ]
    }

    /// Parameters: the camera's (near left at its default, far given).
    fn params(&self) -> Params {
        vec![
            ("width", int(self.s.cam.width as usize)),
            ("height", int(self.s.cam.height as usize)),
            ("far", Scalar::Float(self.s.cam.far as f64)),
        ]
    }
}

/// `gs.project` on a verify scene, against the Rust op on the CPU path (radii bit-exact).
fn gs_project_case(n: usize, seed: u64) -> Case {
    use tessera::ops::gs::project;
    let g = GsScene::new(n, 0, seed);
    let s = &g.s;
    let p = project::project(&up(&s.means), &up(&s.quats), &up(&s.scales), &s.cam).unwrap();
    Case {
        label: format!("gs.project N={n}"),
        op: "gs.project",
        inputs: g.inputs(),
        params: g.params(),
        expect: vec![
            (
                "means2d",
                HostT::of(&p.means2d, &[n, 2]),
                Cmp::Rel(tol::F32),
            ),
            ("depths", HostT::of(&p.depths, &[n]), Cmp::Rel(tol::F32)),
            ("conics", HostT::of(&p.conics, &[n, 3]), Cmp::Rel(tol::F32)),
            ("radii", HostT::of(&p.radii, &[n]), Cmp::Exact),
        ],
    }
}

/// `gs.bin` of a verify scene's projection (on the CPU path), bit-exact.
fn gs_bin_case(n: usize, seed: u64) -> Case {
    use tessera::ops::gs::{bin, project};
    let g = GsScene::new(n, 0, seed);
    let s = &g.s;
    let p = project::project(&up(&s.means), &up(&s.quats), &up(&s.scales), &s.cam).unwrap();
    let (w, h) = (s.cam.width, s.cam.height);
    let b = bin::bin(&p.means2d, &p.depths, &p.radii, w, h).unwrap();
    let (m, tiles) = (b.ids.len(), (b.tiles_x * b.tiles_y) as usize);
    Case {
        label: format!("gs.bin N={n}"),
        op: "gs.bin",
        inputs: vec![
            ("means2d", HostT::of(&p.means2d, &[n, 2])),
            ("depths", HostT::of(&p.depths, &[n])),
            ("radii", HostT::of(&p.radii, &[n])),
        ],
        params: vec![("width", int(w as usize)), ("height", int(h as usize))],
        expect: vec![
            ("ids", HostT::of(&b.ids, &[m]), Cmp::Exact),
            (
                "tile_ranges",
                HostT::of(&b.tile_ranges, &[tiles, 2]),
                Cmp::Exact,
            ),
        ],
    }
}

/// `gs.render` / `gs.render_backward` on a verify scene with RGB colours (`sh_degree` None)
/// or SH coefficients, in `layout`, with or without the background (and, backward, `v_alpha`),
/// against the Rust op on the CPU path.
fn gs_render_case(
    op: &'static str,
    n: usize,
    sh_degree: Option<u32>,
    layout: &str,
    extras: bool,
    seed: u64,
) -> Case {
    use tessera::ops::gs::{pipeline, render::Layout};
    let g = GsScene::new(n, 16, seed);
    let s = &g.s;
    let (w, h) = (s.cam.width as usize, s.cam.height as usize);
    let (rgb, sh) = (up(&s.colors), up(&g.coeffs));
    let (colors, color_input) = g.colors(&rgb, &sh, sh_degree);
    let lay = if layout == "balanced" {
        Layout::Balanced
    } else {
        Layout::Baseline
    };
    let bg = if extras { s.background } else { [0.0; 3] };
    let mut inputs = g.inputs();
    inputs.push(("opacities", HostT::vec(&s.opacities)));
    inputs.push(color_input);
    if extras {
        inputs.push(("background", HostT::vec(&s.background)));
    }
    let mut params = g.params();
    params.push(("layout", word(layout)));
    if let Some(d) = sh_degree {
        params.push(("sh_degree", int(d as usize)));
    }
    let (m, q, sc, o) = (up(&s.means), up(&s.quats), up(&s.scales), up(&s.opacities));
    let label = format!("{op} N={n} sh={sh_degree:?} {layout} extras={extras}");
    if op == "gs.render" {
        let r = pipeline::rasterize(&m, &q, &sc, &o, colors, &s.cam, bg, lay).unwrap();
        return Case {
            label,
            op,
            inputs,
            params,
            expect: vec![
                ("image", HostT::of(&r.image, &[h, w, 3]), Cmp::Rel(tol::F32)),
                ("alpha", HostT::of(&r.alpha, &[h, w]), Cmp::Rel(tol::F32)),
            ],
        };
    }
    let mut r = Rng(seed ^ 0xb0c4);
    let v_image = r.values_in::<f32>(h * w * 3, 1.0);
    let v_alpha = r.values_in::<f32>(h * w, 1.0);
    inputs.push(("v_image", HostT::new(&v_image, &[h, w, 3])));
    if extras {
        inputs.push(("v_alpha", HostT::new(&v_alpha, &[h, w])));
    }
    let va = up(&v_alpha);
    let gr = pipeline::rasterize_backward(
        &m,
        &q,
        &sc,
        &o,
        colors,
        &s.cam,
        bg,
        lay,
        &up(&v_image),
        extras.then_some(&va),
    )
    .unwrap();
    let v_coeffs = match &gr.v_coeffs {
        Some(v) => HostT::of(v, &[n, g.k, 3]),
        None => HostT::new::<f32>(&[], &[0]),
    };
    Case {
        label,
        op,
        inputs,
        params,
        expect: vec![
            (
                "v_means",
                HostT::of(&gr.v_means, &[n, 3]),
                Cmp::Rel(tol::F32),
            ),
            (
                "v_quats",
                HostT::of(&gr.v_quats, &[n, 4]),
                Cmp::Rel(tol::F32),
            ),
            (
                "v_scales",
                HostT::of(&gr.v_scales, &[n, 3]),
                Cmp::Rel(tol::F32),
            ),
            (
                "v_opacities",
                HostT::of(&gr.v_opacities, &[n]),
                Cmp::Rel(tol::F32),
            ),
            (
                "v_colors",
                HostT::of(&gr.v_colors, &[n, 3]),
                Cmp::Rel(tol::F32),
            ),
            ("v_coeffs", v_coeffs, Cmp::Rel(tol::F32)),
        ],
    }
}

/// The feature-ring state after two steps of a [`RingCase`] (so rings hold 0..=2 features),
/// and the third step, for the `featcache` ring ops' cases.
fn ring_state(
    n: usize,
    w: usize,
    seed: u64,
) -> (
    tessera::verify::featcache::Step,
    Vec<f32>,
    tessera::reference::featcache::Ring,
    Vec<u32>,
) {
    use tessera::ops::featcache;
    let c = tessera::verify::featcache::RingCase::generate(n, w, 3, 0.4, seed);
    let mut x = up(&c.x);
    let mut ring = featcache::Ring::new(&cpu(), n, w).unwrap();
    for st in &c.steps[..2] {
        featcache::scatter(&up(&st.rows), &up(&st.c1), st.t_now, &mut x, &mut ring).unwrap();
        featcache::reuse(&up(&st.class), &ring, st.t_now, &mut x).unwrap();
    }
    (
        c.steps[2].clone(),
        x.download().unwrap(),
        ring.to_host().unwrap(),
        c.cf.clone(),
    )
}

fn ring_inputs(r: &tessera::reference::featcache::Ring) -> Vec<(&'static str, HostT)> {
    vec![
        ("ring.feat", HostT::new(&r.feat, &[3, r.n, r.w])),
        ("ring.stamp", HostT::new(&r.stamp, &[3, r.n])),
        ("ring.head", HostT::vec(&r.head)),
        ("ring.len", HostT::vec(&r.len)),
    ]
}

/// `featcache.gather`, `.scatter`, `.reuse`, `.age` on a ring two steps in, against the Rust ops
/// on the CPU path.
fn featcache_ring_case(op: &'static str, n: usize, w: usize, seed: u64) -> Case {
    use tessera::ops::featcache;
    let (st, x, r, cf) = ring_state(n, w, seed);
    let m = st.c1.len();
    let label = format!("{op} n={n} w={w}");
    let t_now = ("t_now", Scalar::Float(st.t_now as f64));
    match op {
        "featcache.gather" => {
            let rows = featcache::gather(&up(&x), w, &up(&st.c1)).unwrap();
            Case {
                label,
                op,
                inputs: vec![("x", HostT::new(&x, &[n, w])), ("c1", HostT::vec(&st.c1))],
                params: vec![("width", int(w))],
                expect: vec![("rows", HostT::of(&rows, &[m, w]), Cmp::Exact)],
            }
        }
        "featcache.scatter" => {
            let mut ring = featcache::Ring::from_host(&cpu(), &r).unwrap();
            let mut out = up(&x);
            featcache::scatter(&up(&st.rows), &up(&st.c1), st.t_now, &mut out, &mut ring).unwrap();
            let mut inputs = vec![
                ("rows", HostT::new(&st.rows, &[m, w])),
                ("c1", HostT::vec(&st.c1)),
                ("x", HostT::new(&x, &[n, w])),
            ];
            inputs.extend(ring_inputs(&r));
            Case {
                label,
                op,
                inputs,
                params: vec![t_now],
                expect: vec![
                    ("x", HostT::of(&out, &[n, w]), Cmp::Exact),
                    ("ring.feat", HostT::of(&ring.feat, &[3, n, w]), Cmp::Exact),
                    ("ring.stamp", HostT::of(&ring.stamp, &[3, n]), Cmp::Exact),
                    ("ring.head", HostT::of(&ring.head, &[n]), Cmp::Exact),
                    ("ring.len", HostT::of(&ring.len, &[n]), Cmp::Exact),
                ],
            }
        }
        "featcache.reuse" => {
            // The classes of step 2, on the ring as it was before step 2's scatter: step 2's
            // recomputed tokens are class 1, the others reuse what exists (or are class 1).
            let class: Vec<u8> = st
                .class
                .iter()
                .zip(&r.len)
                .map(|(&c, &l)| if l == 0 { 1 } else { c })
                .collect();
            let ring = featcache::Ring::from_host(&cpu(), &r).unwrap();
            let mut out = up(&x);
            featcache::reuse(&up(&class), &ring, st.t_now, &mut out).unwrap();
            let mut inputs = vec![("class", HostT::vec(&class))];
            inputs.extend(ring_inputs(&r));
            inputs.push(("x", HostT::new(&x, &[n, w])));
            Case {
                label,
                op,
                inputs,
                params: vec![t_now],
                expect: vec![("x", HostT::of(&out, &[n, w]), Cmp::Exact)],
            }
        }
        "featcache.age" => {
            let mut out = up(&cf);
            featcache::age(&up(&st.class), &mut out).unwrap();
            Case {
                label,
                op,
                inputs: vec![("class", HostT::vec(&st.class)), ("cf", HostT::vec(&cf))],
                params: vec![],
                expect: vec![("cf", HostT::of(&out, &[n]), Cmp::Exact)],
            }
        }
        other => panic!("no ring case for {other}"),
    }
}

/// The cases of op `name`. A name without cases panics: every op of the table must have some.
fn align_case(t: usize, k: usize, e: usize, block: usize, seed: u64) -> Case {
    let mut r = Rng(seed);
    let ids: Vec<i32> = (0..t * k)
        .map(|_| (r.next_u64() % e as u64) as i32)
        .collect();
    let a = moe::align(&up(&ids), k, e, block).unwrap();
    let len = a.sorted_token_ids.len();
    Case {
        label: format!("moe.align T={t} k={k} E={e} block={block}"),
        op: "moe.align",
        inputs: vec![("topk_ids", HostT::new(&ids, &[t, k]))],
        params: vec![
            ("k", int(k)),
            ("num_experts", int(e)),
            ("block_size", int(block)),
        ],
        expect: vec![
            (
                "sorted_token_ids",
                HostT::of(&a.sorted_token_ids, &[len]),
                Cmp::Exact,
            ),
            (
                "expert_ids",
                HostT::of(&a.expert_ids, &[len.div_ceil(block)]),
                Cmp::Exact,
            ),
            (
                "num_tokens_post_padded",
                HostT::of(&a.num_tokens_post_padded, &[1]),
                Cmp::Exact,
            ),
        ],
    }
}

fn cases(name: &'static str) -> Vec<Case> {
    let mut r = Rng(0xc0ffee);
    match name {
        "bitmask.sparsify" => vec![
            sparsify_case::<f32>(1, None),
            sparsify_case::<f16>(2, None),
            sparsify_case::<bf16>(3, Some(0.001)),
        ],
        "bitmask.densify" => vec![densify_case::<f32>(4), densify_case::<bf16>(5)],
        "codec.gather" => vec![
            gather_case((0..1000u32).map(|i| i * 7).collect(), 6),
            gather_case(testing::to_dtype::<f16>(&r.values_in::<f16>(777, 1.0)), 7),
            gather_case((0..64u16).collect(), 8),
        ],
        "codec.delta_encode" => vec![delta_encode_case::<f32>(9), delta_encode_case::<f16>(10)],
        "codec.delta_decode" => {
            vec![delta_decode_case::<bf16>(11), delta_decode_case::<f32>(12)]
        }
        "codec.delta_f32" => vec![delta_f32_case::<f16>(13), delta_f32_case::<f32>(14)],
        "codec.to_f32" => vec![to_f32_case::<bf16>(15), to_f32_case::<f16>(16)],
        "codec.kmeans" => {
            let v = r.values_in::<f32>(3000, 1.0);
            let k = codec::kmeans(&up(&v), 3, 20, 1e-4).unwrap();
            vec![Case {
                label: "codec.kmeans".into(),
                op: "codec.kmeans",
                inputs: vec![("values", HostT::vec(&v))],
                params: vec![
                    ("bits", int(3)),
                    ("max_iters", int(20)),
                    ("tol", Scalar::Float(1e-4)),
                ],
                expect: vec![
                    ("centroids", HostT::vec(&k.centroids), Cmp::Exact),
                    ("indices", HostT::of(&k.indices, &[v.len()]), Cmp::Exact),
                ],
            }]
        }
        "codec.pack_indices" => {
            let idx: Vec<u8> = (0..1000).map(|_| (r.next_u64() % 32) as u8).collect();
            let p = codec::pack_indices(&up(&idx), 5).unwrap();
            vec![Case {
                label: "codec.pack_indices".into(),
                op: "codec.pack_indices",
                inputs: vec![("indices", HostT::vec(&idx))],
                params: vec![("bits", int(5))],
                expect: vec![
                    ("words", HostT::of(&p.words, &[p.words.len()]), Cmp::Exact),
                    ("widths", HostT::of(&p.widths, &[4]), Cmp::Exact),
                ],
            }]
        }
        "codec.dequantize" => vec![
            dequantize_case::<f32>(false, 17),
            dequantize_case::<bf16>(true, 18),
            dequantize_case::<f16>(true, 19),
        ],
        "attention.forward" => vec![
            attention_case::<bf16>(name, MaskMode::Causal, "auto", 20),
            attention_case::<f16>(name, MaskMode::DuoCausal, "auto", 21),
            attention_case::<bf16>(name, MaskMode::Full, "scalar", 22),
        ],
        "attention.decode" => vec![attention_case::<f16>(name, MaskMode::Causal, "auto", 23)],
        "attention.decode_partials" => vec![attention_case::<bf16>(
            name,
            MaskMode::DuoCausal,
            "auto",
            24,
        )],
        "attention.merge" => vec![merge_case(25)],
        "tah.select_hard" => vec![select_hard_case(26)],
        "tah.gather_rows" => vec![
            gather_rows_case(r.values_in::<f32>(50 * 7, 1.0), 7, 27),
            gather_rows_case((0..120i32).map(|i| i - 60).collect(), 3, 28),
        ],
        "tah.scatter_rows" => vec![
            scatter_rows_case(vec![0u32; 30 * 5], |i| i as u32 + 1, 5),
            scatter_rows_case(r.values_in::<f32>(24 * 16, 1.0), |i| i as f32 * 0.5, 16),
        ],
        "tah.copy_range" => vec![
            copy_range_case((0..300).map(|i| i as u8).collect(), vec![7u8; 200]),
            copy_range_case(
                testing::to_dtype::<f16>(&r.values_in::<f16>(300, 1.0)),
                vec![f16::ZERO; 200],
            ),
            copy_range_case(r.values_in::<f32>(300, 1.0), vec![-1f32; 190]),
        ],
        "tah.next_depth_input" => vec![next_depth_case::<f32>(29), next_depth_case::<bf16>(30)],
        "tah.accumulate_logits" => vec![accumulate_case(31)],
        "moe.align" => vec![align_case(300, 8, 64, 16, 32), align_case(17, 3, 5, 1, 33)],
        "moe.route" => vec![
            route_case(50, 16, 4, 8, Some((300, 100, 1100, 9)), 34),
            route_case(19, 8, 1, 3, None, 35),
        ],
        "moe.permute" => vec![
            permute_case(r.values_in::<f32>(40 * 12, 1.0), 12, 4, 16, 8, 36),
            permute_case(
                testing::to_dtype::<bf16>(&r.values_in::<bf16>(23 * 5, 1.0)),
                5,
                2,
                3,
                4,
                37,
            ),
            permute_case((0..17 * 3).map(|i| i as u8).collect(), 3, 1, 4, 2, 38),
        ],
        "moe.combine" => vec![
            combine_case::<f32>(30, 16, 4, 39),
            combine_case::<bf16>(11, 8, 2, 40),
        ],
        "moe.load" => vec![load_case(100, 8, 16, 4, 41), load_case(7, 1, 3, 1, 42)],
        "gemm.dense" | "gemm.dense_swiglu" | "gemm.grouped" | "gemm.grouped_swiglu" => vec![
            gemm_case::<bf16>(name, (37, 45, 24), true, 34),
            gemm_case::<f16>(name, (20, 13, 9), false, 35),
        ],
        "c2c.project" => vec![
            c2c_project_case::<bf16>(false, 45),
            c2c_project_case::<f16>(true, 46),
        ],
        "featcache.received" => vec![
            featcache_received_case::<bf16>(MaskMode::Causal, false, 51),
            featcache_received_case::<f16>(MaskMode::DuoCausal, true, 52),
        ],
        op @ ("gmscore.forward" | "gmscore.backward") => vec![
            gmscore_case(op, 40, 70, 24, 53),
            gmscore_case(op, 3, 5, 64, 54),
        ],
        "featcache.select" => vec![
            featcache_select_case(300, 0.7, 49),
            featcache_select_case(5, 0.0, 50),
        ],
        op @ ("featcache.gather" | "featcache.scatter" | "featcache.reuse" | "featcache.age") => {
            vec![
                featcache_ring_case(op, 200, 19, 51),
                featcache_ring_case(op, 3, 1, 52),
            ]
        }
        "gs.project" => vec![gs_project_case(150, 0x95), gs_project_case(7, 0x96)],
        "gs.bin" => vec![gs_bin_case(150, 0x95), gs_bin_case(7, 0x96)],
        op @ ("gs.render" | "gs.render_backward") => vec![
            gs_render_case(op, 150, None, "baseline", true, 0x95),
            gs_render_case(op, 150, None, "balanced", false, 0x95),
            gs_render_case(op, 60, Some(3), "balanced", true, 0x97),
            gs_render_case(op, 60, Some(1), "baseline", false, 0x98),
        ],
        "c2c.fuse" => vec![
            c2c_fuse_case::<bf16>(false, 47),
            c2c_fuse_case::<f16>(true, 48),
        ],
        "moe.layer" => vec![
            layer_case::<bf16>(None, 43),
            layer_case::<f16>(Some((5, 0, 10, 3)), 44),
        ],
        other => panic!(
            "op `{other}` of the table has no interop case: add one to cases() in tests/interop.rs"
        ),
    }
}

// ---- running and comparing ---------------------------------------------------------------------

fn call_of(dev: &Device, c: &Case) -> Call {
    let mut call = Call::new(c.op, dev).unwrap();
    for (n, t) in &c.inputs {
        call.input(n, t.upload(dev, n), t.shape.clone())
            .unwrap_or_else(|e| panic!("{}: input {n}: {e}", c.label));
    }
    for (n, v) in &c.params {
        call.param_scalar(n, v)
            .unwrap_or_else(|e| panic!("{}: parameter {n}: {e}", c.label));
    }
    call
}

fn run(dev: &Device, c: &Case) -> Outputs {
    call_of(dev, c)
        .run()
        .unwrap_or_else(|e| panic!("{} on {}: {e}", c.label, dev.backend()))
}

fn download(o: &interop::Output) -> HostT {
    HostT {
        dtype: o.buf.dtype(),
        bytes: o.buf.to_bytes().unwrap(),
        shape: o.shape.clone(),
    }
}

/// The outputs that are inputs updated in place. `attention.merge`'s `o` and `lse` are inputs
/// and outputs of the same names but not in place: the partials in, a new O and LSE out.
const IN_PLACE: &[(&str, &str)] = &[
    ("tah.scatter_rows", "dst"),
    ("tah.copy_range", "dst"),
    ("tah.accumulate_logits", "cum"),
    ("featcache.scatter", "x"),
    ("featcache.scatter", "ring.feat"),
    ("featcache.scatter", "ring.stamp"),
    ("featcache.scatter", "ring.head"),
    ("featcache.scatter", "ring.len"),
    ("featcache.reuse", "x"),
    ("featcache.age", "cf"),
];

/// Compare `outs` with the case's direct CPU results: every output present, in the table's
/// order, with the same dtype and shape; bytes identical when `exact`, else per `Cmp`.
fn compare(c: &Case, dev: &Device, outs: &Outputs, exact: bool) {
    let at = format!("{} on {}", c.label, dev.backend());
    let names: Vec<&str> = outs.tensors.iter().map(|o| o.name).collect();
    let table: Vec<&str> = outs.op.outputs.iter().map(|o| o.name).collect();
    assert_eq!(names, table, "{at}: outputs");
    let want: Vec<&str> = c.expect.iter().map(|e| e.0).collect();
    assert_eq!(want, table, "{at}: the case must check every output");
    for (name, e, cmp) in &c.expect {
        let o = outs.get(name).unwrap();
        assert!(!o.provided, "{at}: {name}");
        assert_eq!(
            o.in_place,
            IN_PLACE.contains(&(c.op, *name)),
            "{at}: {name} in place"
        );
        let got = download(o);
        assert_eq!(got.dtype, e.dtype, "{at}: {name} dtype");
        assert_eq!(got.shape, e.shape, "{at}: {name} shape");
        match (exact, cmp) {
            (true, _) | (false, Cmp::Exact) => {
                if let Some(i) = testing::first_diff(&got.bytes, &e.bytes) {
                    panic!(
                        "{at}: {name} differs from the direct CPU call at byte {i} of {}",
                        e.bytes.len()
                    );
                }
            }
            (false, Cmp::Rel(t)) => {
                let r: Vec<f64> = e.f32s().iter().map(|&x| x as f64).collect();
                let err = rel_l2(&got.f32s(), &r);
                assert!(err <= *t, "{at}: {name} relative L2 {err:.2e} > {t:.0e}");
            }
            (false, Cmp::Lse) => {
                let r: Vec<f64> = e.f32s().iter().map(|&x| x as f64).collect();
                let g = got.f32s();
                if let Some(i) = lse_mismatch(&g, &r) {
                    panic!("{at}: {name}[{i}] = {} vs the CPU path's {}", g[i], r[i]);
                }
            }
        }
    }
}

/// Every op of the table, every case, on `dev`.
fn every_op_on(dev: &Device) {
    let exact = dev.backend() == tessera::Backend::Cpu;
    for op in OPS {
        for c in &cases(op.name) {
            assert_eq!(c.op, op.name);
            let outs = run(dev, c);
            compare(c, dev, &outs, exact);
        }
    }
}

#[test]
fn every_op_has_a_case() {
    for op in OPS {
        let cs = cases(op.name);
        assert!(!cs.is_empty(), "{}", op.name);
        for c in &cs {
            assert_eq!(c.op, op.name, "{}", c.label);
            // Every input named in a case is an input of the op.
            interop::check_input_names(op, c.inputs.iter().map(|(n, _)| *n)).unwrap();
        }
    }
}

#[test]
fn every_op_on_the_cpu_path_is_the_rust_op() {
    every_op_on(&cpu());
}

#[test]
fn every_op_on_simt_wave32() {
    every_op_on(&testing::simt(32, Schedule::InOrder, 2));
}

#[test]
fn every_op_on_simt_wave32_shuffled_and_skewed() {
    every_op_on(&testing::simt(32, Schedule::Shuffled(0x1e7e_0001), 2));
    every_op_on(&testing::simt(32, Schedule::Skewed(0x1e7e_0003), 2));
}

#[test]
fn every_op_on_simt_wave64() {
    every_op_on(&testing::simt(64, Schedule::InOrder, 2));
    every_op_on(&testing::simt(64, Schedule::Shuffled(0x1e7e_0002), 2));
}

// ---- caller-provided outputs -------------------------------------------------------------------

#[test]
fn provided_outputs_are_written() {
    for dev in [cpu(), testing::simt(32, Schedule::InOrder, 2)] {
        // Data-dependent size: `values` given with capacity n > popcount; Output::shape says
        // how much was written, the rest of the tensor is untouched.
        let c = sparsify_case::<f16>(40, None);
        let n = 1000;
        let popcount = c.expect[1].1.shape[0] as usize;
        assert!(popcount < n);
        let mut call = call_of(&dev, &c);
        let sentinel = f16::from_f32(12.5);
        call.output(
            "values",
            HostT::vec(&vec![sentinel; n]).upload(&dev, "values"),
            vec![n as u64],
        )
        .unwrap();
        call.output(
            "mask",
            HostT::vec(&[0u32; 32]).upload(&dev, "mask"),
            vec![32],
        )
        .unwrap();
        let outs = call.run().unwrap();
        let v = outs.get("values").unwrap();
        assert!(v.provided && !v.in_place);
        assert_eq!(v.shape, vec![popcount as u64], "written length");
        assert_eq!(v.buf.len(), n);
        let got = download(v);
        let want = &c.expect[1].1;
        assert_eq!(&got.bytes[..want.bytes.len()], &want.bytes[..]);
        let rest: Vec<f16> = pod_vec(&got.bytes[want.bytes.len()..]);
        assert!(rest.iter().all(|x| x.to_bits() == sentinel.to_bits()));
        let m = outs.get("mask").unwrap();
        assert!(m.provided);
        assert_eq!(m.shape, vec![32]);
        assert_eq!(download(m).bytes, c.expect[0].1.bytes);

        // A fixed-size output through the copy path, another through forward_into.
        let c = to_f32_case::<bf16>(41);
        let mut call = call_of(&dev, &c);
        call.output(
            "out",
            HostT::vec(&vec![0f32; 999]).upload(&dev, "out"),
            vec![999],
        )
        .unwrap();
        let outs = call.run().unwrap();
        let o = outs.get("out").unwrap();
        assert!(o.provided);
        assert_eq!(o.shape, vec![999]);
        assert_eq!(download(o).bytes, c.expect[0].1.bytes);

        let c = attention_case::<bf16>("attention.forward", MaskMode::Causal, "auto", 42);
        let plain = run(&dev, &c);
        let mut call = call_of(&dev, &c);
        for (name, e, _) in &c.expect {
            let zeros = vec![0f32; e.bytes.len() / 4];
            let buf = HostT::new(&zeros, &[zeros.len()]).upload(&dev, name);
            call.output(name, buf, e.shape.clone()).unwrap();
        }
        let outs = call.run().unwrap();
        for (name, e, _) in &c.expect {
            let (o, p) = (outs.get(name).unwrap(), plain.get(name).unwrap());
            assert!(o.provided, "{name}");
            assert_eq!(o.shape, e.shape, "{name}");
            assert_eq!(
                download(o).bytes,
                download(p).bytes,
                "{name}: forward_into and forward differ on {}",
                dev.backend()
            );
        }
        // attention.merge: `o` and `lse` are inputs and outputs of the same names but not in
        // place, so they may be provided (they were once refused as "updated in place", and
        // the input returned as the output).
        let c = merge_case(47);
        let plain = run(&dev, &c);
        let mut call = call_of(&dev, &c);
        for (name, e, _) in &c.expect {
            let zeros = vec![0f32; e.bytes.len() / 4];
            let buf = HostT::new(&zeros, &[zeros.len()]).upload(&dev, name);
            call.output(name, buf, e.shape.clone()).unwrap();
        }
        let outs = call.run().unwrap();
        for (name, e, _) in &c.expect {
            let o = outs.get(name).unwrap();
            assert!(o.provided && !o.in_place, "{name}");
            assert_eq!(o.shape, e.shape, "{name}");
            assert_eq!(download(o).bytes, download(plain.get(name).unwrap()).bytes);
        }
        let c = attention_case::<bf16>("attention.forward", MaskMode::Causal, "auto", 42);
        let plain = run(&dev, &c);
        // Only one of them given: the other is allocated.
        let mut call = call_of(&dev, &c);
        let lse = &c.expect[1].1;
        call.output(
            "lse",
            HostT::new(&vec![0f32; lse.bytes.len() / 4], &[lse.bytes.len() / 4])
                .upload(&dev, "lse"),
            lse.shape.clone(),
        )
        .unwrap();
        let outs = call.run().unwrap();
        assert!(outs.get("lse").unwrap().provided && !outs.get("o").unwrap().provided);
        assert_eq!(
            download(outs.get("lse").unwrap()).bytes,
            download(plain.get("lse").unwrap()).bytes
        );
    }
}

/// The message of the error of `r`, which must be an `InvalidArgument` naming `op`.
fn invalid<T>(r: tessera::Result<T>, op: &str) -> String {
    match r {
        Ok(_) => panic!("{op}: expected an error"),
        Err(e @ tessera::Error::InvalidArgument { .. }) => {
            let m = e.to_string();
            assert!(m.starts_with(&format!("{op}: ")), "{m}");
            m
        }
        Err(e) => panic!("{op}: expected InvalidArgument, got {e}"),
    }
}

fn has(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "`{p}` not in: {m}");
    }
}

#[test]
fn bad_provided_outputs_are_errors() {
    let dev = cpu();
    let c = attention_case::<bf16>("attention.forward", MaskMode::Causal, "auto", 43);
    let (tq, h, d) = (
        c.expect[0].1.shape[0],
        c.expect[0].1.shape[1],
        c.expect[0].1.shape[2],
    );
    let o_buf = || HostT::vec(&vec![0f32; (tq * h * d) as usize]).upload(&dev, "o");
    // Same number of elements, wrong shape.
    let mut call = call_of(&dev, &c);
    call.output("o", o_buf(), vec![h, tq, d]).unwrap();
    let m = invalid(call.run(), "attention.forward");
    has(&m, &["output `o` has shape", "[total_q, heads, head_dim]"]);
    // Wrong dtype.
    let mut call = call_of(&dev, &c);
    let half = HostT::vec(&vec![bf16::ZERO; (tq * h * d) as usize]).upload(&dev, "o");
    call.output("o", half, vec![tq, h, d]).unwrap();
    has(
        &invalid(call.run(), "attention.forward"),
        &["output `o` is bf16", "f32"],
    );
    // A shape that does not match the buffer's length.
    let mut call = call_of(&dev, &c);
    call.output("o", o_buf(), vec![tq, h, d + 1]).unwrap();
    has(
        &invalid(call.run(), "attention.forward"),
        &["output `o`", "does not match its"],
    );
    // Not an output; an input updated in place; given twice.
    let mut call = call_of(&dev, &c);
    has(
        &invalid(call.output("out", o_buf(), vec![1]), "attention.forward"),
        &["no output named `out`", "o f32 [total_q, heads, head_dim]"],
    );
    call.output("o", o_buf(), vec![tq, h, d]).unwrap();
    has(
        &invalid(
            call.output("o", o_buf(), vec![tq, h, d]),
            "attention.forward",
        ),
        &["output `o` given twice"],
    );
    let c2 = accumulate_case(44);
    let mut call = call_of(&dev, &c2);
    let cum = c2.inputs[0].1.upload(&dev, "cum");
    has(
        &invalid(call.output("cum", cum, vec![1234]), "tah.accumulate_logits"),
        &["`cum` is updated in place"],
    );

    // Data-dependent output: too small for what the op writes, or not 1-D.
    let c = sparsify_case::<f32>(45, None);
    let popcount = c.expect[1].1.shape[0] as usize;
    let mut call = call_of(&dev, &c);
    let small = HostT::vec(&vec![0f32; popcount - 1]).upload(&dev, "values");
    call.output("values", small, vec![popcount as u64 - 1])
        .unwrap();
    has(
        &invalid(call.run(), "bitmask.sparsify"),
        &[
            "output `values` needs",
            &format!("the given tensor holds {}", popcount - 1),
        ],
    );
    let mut call = call_of(&dev, &c);
    let two_d = HostT::vec(&vec![0f32; 1000]).upload(&dev, "values");
    call.output("values", two_d, vec![10, 100]).unwrap();
    has(
        &invalid(call.run(), "bitmask.sparsify"),
        &["output `values` must be 1-D"],
    );
    // A provided output of a dtype the op does not write (dequantize without a base writes
    // f32; the table allows any float for `out`): an error naming the op.
    let c = dequantize_case::<f32>(false, 46);
    let mut call = call_of(&dev, &c);
    let f16_out = HostT::vec(&vec![f16::ZERO; 1300]).upload(&dev, "out");
    call.output("out", f16_out, vec![1300]).unwrap();
    has(
        &invalid(call.run(), "codec.dequantize"),
        &["output `out` is f16, the op writes f32"],
    );
}

// ---- bad inputs --------------------------------------------------------------------------------

#[test]
fn bad_inputs_are_errors_naming_the_op() {
    let dev = cpu();
    let op = "attention.forward";
    // Unknown op: the error lists the ops.
    let m = invalid(Call::new("attention.foward", &dev), "run");
    has(
        &m,
        &[
            "unknown op `attention.foward`",
            "attention.forward",
            "tah.copy_range",
        ],
    );

    let c = attention_case::<bf16>(op, MaskMode::Causal, "auto", 50);
    let input = |n: &str| c.inputs.iter().find(|(x, _)| *x == n).unwrap().1.clone();
    // Unknown parameter.
    let mut call = call_of(&dev, &c);
    has(
        &invalid(call.param_scalar("headz", &Scalar::Int(4)), op),
        &["no parameter named `headz`", "heads", "max_seqlen_kv"],
    );
    let mut call0 = Call::new("tah.accumulate_logits", &dev).unwrap();
    has(
        &invalid(
            call0.param("tau", ParamValue::F32(0.0)),
            "tah.accumulate_logits",
        ),
        &["no parameter named `tau`; the op has none"],
    );
    // Missing parameter.
    let mut c2 = attention_case::<bf16>(op, MaskMode::Causal, "auto", 50);
    c2.params.retain(|(n, _)| *n != "scale");
    has(
        &invalid(call_of(&dev, &c2).run(), op),
        &["missing parameter `scale`"],
    );
    // Missing tensor: the message lists what the op takes.
    let mut c2 = attention_case::<bf16>(op, MaskMode::Causal, "auto", 50);
    c2.inputs.retain(|(n, _)| *n != "v");
    has(
        &invalid(call_of(&dev, &c2).run(), op),
        &[
            "missing input `v`",
            "q f16|bf16 [total_q, heads, head_dim]",
            "kv_valid (optional) u8 [total_kv]",
        ],
    );
    // A name that is not an input, through Call::input and through check_input_names.
    has(
        &invalid(
            call.input(
                "cu_seqlens",
                input("cu_seqlens_q").upload(&dev, "x"),
                vec![3],
            ),
            op,
        ),
        &[
            "no input named `cu_seqlens`",
            "cu_seqlens_q i32 [batch + 1]",
        ],
    );
    let spec = tessera::ops::table::find(op).unwrap();
    has(
        &invalid(
            interop::check_input_names(spec, ["q", "kv_mask", "k", "extra"]),
            op,
        ),
        &[
            "`kv_mask`, `extra` are not inputs of the op",
            "kv_valid (optional) u8 [total_kv]",
        ],
    );
    interop::check_input_names(spec, ["q", "k", "v", "kv_valid"]).unwrap();
    // The same input twice.
    let mut call = call_of(&dev, &c);
    has(
        &invalid(
            call.input("q", input("q").upload(&dev, "q"), input("q").shape),
            op,
        ),
        &["input `q` given twice"],
    );

    // Wrong dtype: a fixed one, and one outside the op's set.
    let with = |name: &'static str, t: HostT| {
        let mut c2 = attention_case::<bf16>(op, MaskMode::Causal, "auto", 50);
        c2.inputs.iter_mut().find(|(n, _)| *n == name).unwrap().1 = t;
        call_of(&dev, &c2).run()
    };
    let cu = input("cu_seqlens_q");
    let cu_u32 = HostT {
        dtype: DTypeKind::U32,
        ..cu.clone()
    };
    has(
        &invalid(with("cu_seqlens_q", cu_u32), op),
        &["input `cu_seqlens_q` is u32; it must be i32"],
    );
    let q = input("q");
    let q_f32 = HostT::new(
        &vec![0f32; q.bytes.len() / 2],
        &q.shape.iter().map(|&d| d as usize).collect::<Vec<_>>(),
    );
    has(
        &invalid(with("q", q_f32), op),
        &["input `q` is f32; it must be f16 or bf16"],
    );
    // Mixed dtypes within a shared set: k f16 with q bf16; base f32 with new f16.
    let k = input("k");
    has(
        &invalid(
            with(
                "k",
                HostT {
                    dtype: DTypeKind::F16,
                    ..k.clone()
                },
            ),
            op,
        ),
        &["input `k` is f16 but `q` is bf16: they must have the same dtype"],
    );
    let mut call = Call::new("bitmask.sparsify", &dev).unwrap();
    call.input("base", HostT::vec(&[1f32; 64]).upload(&dev, "b"), vec![64])
        .unwrap();
    call.input(
        "new",
        HostT::vec(&[f16::ONE; 64]).upload(&dev, "n"),
        vec![64],
    )
    .unwrap();
    has(
        &invalid(call.run(), "bitmask.sparsify"),
        &["input `new` is f16 but `base` is f32"],
    );

    // Wrong shape: number of dimensions, a dimension that disagrees with a parameter or an
    // earlier tensor, an expression (`[batch + 1]` vs the other cu_seqlens), a shape that does
    // not match the buffer.
    let (tq, h, d) = (q.shape[0], q.shape[1], q.shape[2]);
    has(
        &invalid(
            with(
                "q",
                HostT {
                    shape: vec![tq, h * d],
                    ..q.clone()
                },
            ),
            op,
        ),
        &["input `q` has 2 dimensions", "the op expects 3"],
    );
    has(
        &invalid(
            with(
                "q",
                HostT {
                    shape: vec![tq * 2, h / 2, d],
                    ..q.clone()
                },
            ),
            op,
        ),
        &["input `q` dimension 1 (heads) is 2, but heads = 4"],
    );
    let kv_valid = input("kv_valid");
    let short = HostT::vec(&vec![1u8; kv_valid.bytes.len() - 1]);
    has(
        &invalid(with("kv_valid", short), op),
        &["input `kv_valid` dimension 0 (total_kv)"],
    );
    let cu_kv = HostT::vec(&[0i32, 45, 80, 115]);
    has(
        &invalid(with("cu_seqlens_kv", cu_kv), op),
        &["input `cu_seqlens_kv` dimension 0 is 4, batch + 1 = 3"],
    );
    has(
        &invalid(
            with(
                "v",
                HostT {
                    shape: vec![1, 2, 3],
                    ..input("v")
                },
            ),
            op,
        ),
        &["input `v`: shape [1, 2, 3] does not match its"],
    );

    // A buffer on another device.
    let other = Device::cpu_separate();
    let mut call = Call::new("tah.accumulate_logits", &dev).unwrap();
    call.input("cum", HostT::vec(&[0f32; 8]).upload(&dev, "c"), vec![8])
        .unwrap();
    call.input(
        "logits",
        HostT::vec(&[0f32; 8]).upload(&other, "l"),
        vec![8],
    )
    .unwrap();
    has(
        &invalid(call.run(), "tah.accumulate_logits"),
        &["input `logits` is on another cpu device than the call's"],
    );
    let simt = testing::simt(32, Schedule::InOrder, 1);
    let mut call = Call::new("codec.to_f32", &simt).unwrap();
    call.input(
        "values",
        HostT::vec(&[f16::ONE; 8]).upload(&dev, "v"),
        vec![8],
    )
    .unwrap();
    has(
        &invalid(call.run(), "codec.to_f32"),
        &["input `values` is on cpu", "the call runs on simt-w32"],
    );

    // Out-of-range and mistyped parameters.
    let mut call = call_of(&dev, &c);
    has(
        &invalid(call.param_scalar("heads", &Scalar::Int(-1)), op),
        &["parameter heads: -1 is outside 0..="],
    );
    has(
        &invalid(call.param_scalar("heads", &Scalar::parse("2.5")), op),
        &["parameter heads: expected an integer"],
    );
    has(
        &invalid(call.param_scalar("mode", &Scalar::parse("sideways")), op),
        &["parameter mode: `sideways` is not one of full, causal, duo_causal"],
    );
    has(
        &invalid(call.param_scalar("mode", &Scalar::Int(1)), op),
        &["parameter mode: expected one of full, causal, duo_causal"],
    );
    has(
        &invalid(call.param_scalar("scale", &Scalar::parse("big")), op),
        &["parameter scale: expected a number"],
    );
    let mut kcall = Call::new("codec.kmeans", &dev).unwrap();
    has(
        &invalid(
            kcall.param_scalar("bits", &Scalar::Int(1 << 40)),
            "codec.kmeans",
        ),
        &["parameter bits: 1099511627776 is outside 0..=4294967295"],
    );
    // Values the table accepts but the op does not: the op's own error.
    let mut c2 = attention_case::<bf16>(op, MaskMode::Causal, "auto", 50);
    c2.params.retain(|(n, _)| *n != "kv_heads");
    c2.params.push(("kv_heads", int(3)));
    let e = call_of(&dev, &c2).run().unwrap_err().to_string();
    assert!(e.contains("kv_heads"), "{e}");
    // duo_causal needs depths.
    let mut c2 = attention_case::<bf16>(op, MaskMode::Causal, "auto", 50);
    c2.params.retain(|(n, _)| *n != "mode");
    c2.params.push(("mode", word("duo_causal")));
    has(
        &call_of(&dev, &c2).run().unwrap_err().to_string(),
        &["duo_causal needs q_depth and kv_depth"],
    );
    // Invalid cu_seqlens contents: reported by the device-side check on SIMT.
    let mut c2 = attention_case::<bf16>(op, MaskMode::Causal, "auto", 50);
    let cu_bad = HostT::vec(&[0i32, 80, 45]);
    for (n, t) in c2.inputs.iter_mut() {
        if n.starts_with("cu_seqlens") {
            *t = cu_bad.clone();
        }
    }
    let e = call_of(&simt, &c2).run().unwrap_err().to_string();
    assert!(e.contains("cu_seqlens"), "{e}");
}

#[test]
fn scalar_parse() {
    assert_eq!(Scalar::parse("8"), Scalar::Int(8));
    assert_eq!(Scalar::parse(" -3 "), Scalar::Int(-3));
    assert_eq!(Scalar::parse("0.125"), Scalar::Float(0.125));
    assert_eq!(Scalar::parse("1e-3"), Scalar::Float(1e-3));
    assert_eq!(
        Scalar::parse("0.5,1,-2"),
        Scalar::List(vec![0.5, 1.0, -2.0])
    );
    assert_eq!(Scalar::parse("[1, 2]"), Scalar::List(vec![1.0, 2.0]));
    assert_eq!(Scalar::parse("causal"), Scalar::Str("causal".into()));
}

// ---- the C ABI ---------------------------------------------------------------------------------

mod c_abi {
    //! Every case again through the exported `tessera_<family>_<op>` functions (by
    //! `tessera::capi::call`, which the generator writes next to them), on host memory the test
    //! owns, on the CPU path and SIMT wave32/wave64.
    #![allow(unsafe_code)]

    use super::*;
    use std::ffi::{c_void, CString};
    use tessera::capi::codegen::{c_args, ArgKind};
    use tessera::capi::dlpack::{DLDataType, DLDevice, DLTensor, KDL_CPU};
    use tessera::capi::{self, CArg, TesseraStatus};
    use tessera::ops::table::find;

    /// 16-byte aligned host memory and the shape a `DLTensor` points at.
    struct Mem {
        words: Vec<u128>,
        bytes: usize,
        shape: Vec<i64>,
        dtype: DTypeKind,
    }

    impl Mem {
        fn new(dtype: DTypeKind, shape: &[u64], init: Option<&[u8]>) -> Mem {
            let bytes = shape.iter().product::<u64>() as usize * dtype.size();
            let mut words = vec![0u128; bytes.div_ceil(16).max(1)];
            if let Some(b) = init {
                bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes].copy_from_slice(b);
            }
            Mem {
                words,
                bytes,
                shape: shape.iter().map(|&d| d as i64).collect(),
                dtype,
            }
        }

        fn tensor(&mut self) -> DLTensor {
            DLTensor {
                data: self.words.as_mut_ptr() as *mut c_void,
                device: DLDevice {
                    device_type: KDL_CPU,
                    device_id: 0,
                },
                ndim: self.shape.len() as i32,
                dtype: DLDataType::of(self.dtype),
                shape: self.shape.as_mut_ptr(),
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            }
        }

        fn host(&self, len: usize) -> HostT {
            HostT {
                dtype: self.dtype,
                bytes: bytemuck::cast_slice::<u128, u8>(&self.words)[..len * self.dtype.size()]
                    .to_vec(),
                shape: vec![],
            }
        }
    }

    fn last_error() -> String {
        // SAFETY: tessera_last_error returns a NUL-terminated string owned by this thread.
        unsafe { std::ffi::CStr::from_ptr(capi::tessera_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    fn set_executor(name: &str) {
        let n = CString::new(name).unwrap();
        // SAFETY: a NUL-terminated string.
        let s = unsafe { capi::tessera_set_host_executor(n.as_ptr()) };
        assert_eq!(s, TesseraStatus::Ok, "{}", last_error());
    }

    /// Run case `c` through the C function; the outputs (and in-place inputs) by name.
    fn run_c(c: &Case) -> Vec<(&'static str, HostT)> {
        let op = find(c.op).unwrap();
        let mut inputs: Vec<Option<(Mem, DLTensor)>> = op
            .inputs
            .iter()
            .map(|spec| {
                c.inputs
                    .iter()
                    .find(|(n, _)| *n == spec.name)
                    .map(|(_, t)| {
                        let mut m = Mem::new(t.dtype, &t.shape, Some(&t.bytes));
                        let dl = m.tensor();
                        (m, dl)
                    })
            })
            .collect();
        let mut words: Vec<CString> = Vec::new();
        let mut lists: Vec<Vec<f32>> = Vec::new();
        let mut outputs: Vec<(&'static str, Mem, DLTensor, i64, bool)> = Vec::new();
        for (name, e, _) in &c.expect {
            if op
                .inputs
                .iter()
                .any(|t| t.name == *name && t.written_in_place())
            {
                continue;
            }
            let i = op.outputs.iter().position(|o| o.name == *name).unwrap();
            let dd = interop::data_dependent(op, i);
            // A data-dependent output gets more room than it needs: `_len` says what was used.
            let shape = if dd {
                vec![e.shape.iter().product::<u64>() + 7]
            } else {
                e.shape.clone()
            };
            let mut m = Mem::new(e.dtype, &shape, None);
            let dl = m.tensor();
            outputs.push((name, m, dl, -1, dd));
        }
        // The arguments, in the C order.
        let mut args: Vec<CArg> = Vec::new();
        for slot in inputs.iter_mut() {
            args.push(CArg::Tensor(match slot {
                Some((_, dl)) => dl as *const DLTensor,
                None => std::ptr::null(),
            }));
        }
        for spec in op.params {
            let v = match c.params.iter().find(|(n, _)| *n == spec.name) {
                Some((_, s)) => Some(ParamValue::convert(op.name, spec, s).unwrap()),
                None => spec
                    .default
                    .map(|d| ParamValue::convert(op.name, spec, &Scalar::parse(d)).unwrap()),
            };
            args.push(match v {
                Some(ParamValue::F32(x)) => CArg::F32(x),
                Some(ParamValue::F64(x)) => CArg::F64(x),
                Some(ParamValue::U32(x)) => CArg::U32(x),
                Some(ParamValue::I32(x)) => CArg::I32(x),
                Some(ParamValue::Usize(x)) => CArg::U64(x as u64),
                Some(ParamValue::Enum(w)) => {
                    words.push(CString::new(w).unwrap());
                    CArg::Str(words.last().unwrap().as_ptr())
                }
                Some(ParamValue::F32List(xs)) => {
                    lists.push(xs);
                    let l = lists.last().unwrap();
                    CArg::List(l.as_ptr(), l.len() as u64)
                }
                None => panic!("{}: parameter {} has no value", c.label, spec.name),
            });
        }
        for (_, _, dl, len, dd) in outputs.iter_mut() {
            args.push(CArg::Out(dl as *mut DLTensor));
            if *dd {
                args.push(CArg::Len(len as *mut i64));
            }
        }
        let kinds: Vec<ArgKind> = c_args(op).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds.len(), args.len(), "{}: argument count", c.label);
        // SAFETY: every tensor points at live, 16-byte aligned memory of its shape, which this
        // function owns until after the (synchronous, host) call returns.
        let status = unsafe { capi::call(op.name, &args, std::ptr::null_mut()) }
            .unwrap_or_else(|| panic!("{}: no generated function matched", c.label));
        assert_eq!(status, TesseraStatus::Ok, "{}: {}", c.label, last_error());
        assert_eq!(last_error(), "", "{}: success leaves no error", c.label);
        let mut got = Vec::new();
        for (name, e, _) in &c.expect {
            if let Some((m, _)) = op
                .inputs
                .iter()
                .position(|t| t.name == *name && t.written_in_place())
                .and_then(|i| inputs[i].as_ref())
            {
                let mut h = m.host(m.bytes / m.dtype.size());
                h.shape = e.shape.clone();
                got.push((*name, h));
                continue;
            }
            let (_, m, _, len, dd) = outputs.iter().find(|o| o.0 == *name).unwrap();
            let n = if *dd {
                assert!(*len >= 0, "{}: {name}_len not written", c.label);
                *len as usize
            } else {
                m.bytes / m.dtype.size()
            };
            let mut h = m.host(n);
            h.shape = if *dd { vec![n as u64] } else { e.shape.clone() };
            got.push((*name, h));
        }
        got
    }

    fn compare_c(c: &Case, at: &str, got: &[(&'static str, HostT)], exact: bool) {
        assert_eq!(got.len(), c.expect.len(), "{at}");
        for ((name, g), (ename, e, cmp)) in got.iter().zip(&c.expect) {
            assert_eq!(name, ename, "{at}");
            assert_eq!(g.shape, e.shape, "{at}: {name} shape");
            match (exact, cmp) {
                (true, _) | (false, Cmp::Exact) => {
                    if let Some(i) = testing::first_diff(&g.bytes, &e.bytes) {
                        panic!("{at}: {name} differs from the direct CPU call at byte {i}");
                    }
                }
                (false, Cmp::Rel(t)) => {
                    let r: Vec<f64> = e.f32s().iter().map(|&x| x as f64).collect();
                    let err = rel_l2(&g.f32s(), &r);
                    assert!(err <= *t, "{at}: {name} relative L2 {err:.2e} > {t:.0e}");
                }
                (false, Cmp::Lse) => {
                    let r: Vec<f64> = e.f32s().iter().map(|&x| x as f64).collect();
                    let gv = g.f32s();
                    if let Some(i) = lse_mismatch(&gv, &r) {
                        panic!("{at}: {name}[{i}] = {} vs the CPU path's {}", gv[i], r[i]);
                    }
                }
            }
        }
    }

    /// One test for every executor: the host executor is process-wide.
    #[test]
    fn every_op_through_the_c_abi() {
        for executor in ["cpu", "simt", "simt64", "simt-shuffle5"] {
            set_executor(executor);
            for op in OPS {
                for c in &cases(op.name) {
                    let got = run_c(c);
                    compare_c(
                        c,
                        &format!("{} via C on {executor}", c.label),
                        &got,
                        executor == "cpu",
                    );
                }
            }
        }
        set_executor("cpu");
        // Bad input through the C ABI: an error status and a message naming the op.
        let mut args = vec![CArg::Tensor(std::ptr::null()); 2];
        args.push(CArg::F32(0.0));
        args.push(CArg::Out(std::ptr::null_mut()));
        args.push(CArg::Out(std::ptr::null_mut()));
        args.push(CArg::Len(std::ptr::null_mut()));
        // SAFETY: null pointers only, which every function must reject.
        let s = unsafe { capi::call("bitmask.sparsify", &args, std::ptr::null_mut()) };
        assert_eq!(s, Some(TesseraStatus::InvalidArgument));
        let m = last_error();
        assert!(
            m.starts_with("bitmask.sparsify:") && m.contains("null"),
            "{m}"
        );
        // Malformed tensors: each an InvalidArgument naming the op, the tensor and the problem.
        let mut base = Mem::new(DTypeKind::F32, &[64], None);
        let mut neu = Mem::new(DTypeKind::F32, &[64], None);
        let mut mask = Mem::new(DTypeKind::U32, &[2], None);
        let mut vals = Mem::new(DTypeKind::F32, &[64], None);
        let good = |m: &mut Mem| m.tensor();
        let mut try_sparsify = |b: DLTensor, expect: &[&str]| {
            let (x, mut mk, mut v) = (good(&mut neu), good(&mut mask), good(&mut vals));
            let mut len = -1i64;
            let args = [
                CArg::Tensor(&b),
                CArg::Tensor(&x),
                CArg::F32(0.0),
                CArg::Out(&mut mk),
                CArg::Out(&mut v),
                CArg::Len(&mut len),
            ];
            // SAFETY: every pointer is live host memory of the shape it states (or deliberately
            // malformed metadata that the function must reject before touching data).
            let s = unsafe { capi::call("bitmask.sparsify", &args, std::ptr::null_mut()) };
            let m = last_error();
            assert_eq!(s, Some(TesseraStatus::InvalidArgument), "{m}");
            assert!(m.starts_with("bitmask.sparsify:"), "{m}");
            for e in expect {
                assert!(m.contains(e), "{m} should mention {e}");
            }
            assert_eq!(len, -1, "no length on failure");
        };
        // f64 is not a dtype tessera takes.
        let mut t = good(&mut base);
        t.dtype.bits = 64;
        try_sparsify(t, &["`base`", "dtype"]);
        // Strided (every other element).
        let mut strides = [2i64];
        let mut half = [32i64];
        let mut t = good(&mut base);
        t.shape = half.as_mut_ptr();
        t.strides = strides.as_mut_ptr();
        try_sparsify(t, &["`base`", "contiguous"]);
        // Misaligned for f32.
        let mut t = good(&mut base);
        t.byte_offset = 2;
        try_sparsify(t, &["`base`", "aligned"]);
        // A negative dimension.
        let mut neg = [-1i64];
        let mut t = good(&mut base);
        t.shape = neg.as_mut_ptr();
        try_sparsify(t, &["`base`", "negative"]);
        // Wrong length for `new`'s n.
        let mut short = [63i64];
        let mut t = good(&mut base);
        t.shape = short.as_mut_ptr();
        try_sparsify(t, &["`new`"]);
        // A device tensor where there is no GPU (on a GPU machine this memory would be taken for
        // device memory, so only here).
        if Device::cuda(0).is_err() {
            let mut t = good(&mut base);
            t.device.device_type = tessera::capi::dlpack::KDL_CUDA;
            try_sparsify(t, &["Cuda"]);
        }
        // An unknown word for an enum parameter (attention's `mode`): refused before any tensor.
        let mut args = vec![CArg::Tensor(std::ptr::null()); 10];
        args.extend([
            CArg::U64(1),
            CArg::U64(1),
            CArg::U64(64),
            CArg::U64(1),
            CArg::U64(1),
        ]);
        let sideways = CString::new("sideways").unwrap();
        args.extend([
            CArg::F32(0.125),
            CArg::Str(sideways.as_ptr()),
            CArg::Str(std::ptr::null()),
        ]);
        args.extend([
            CArg::Out(std::ptr::null_mut()),
            CArg::Out(std::ptr::null_mut()),
        ]);
        // SAFETY: null tensors and a NUL-terminated word.
        let s = unsafe { capi::call("attention.forward", &args, std::ptr::null_mut()) };
        let m = last_error();
        assert_eq!(s, Some(TesseraStatus::InvalidArgument), "{m}");
        assert!(
            m.contains("mode") && m.contains("sideways") && m.contains("duo_causal"),
            "{m}"
        );
        // SAFETY: a wrong argument list is refused before any call.
        assert!(
            unsafe { capi::call("bitmask.sparsify", &args[..2], std::ptr::null_mut()) }.is_none()
        );
        assert!(unsafe { capi::call("no.such_op", &[], std::ptr::null_mut()) }.is_none());
    }
}
