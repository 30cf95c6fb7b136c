//! One runner per op of the table: read the call's tensors and parameters by their Rust names,
//! call the Rust op, put its outputs. [`Call::run`](super::Call::run) has already checked
//! names, dtypes (per the table's dtype sets), devices and shapes; the ops check the rest.

use half::{bf16, f16};

use super::{Arg, Call, DynBuffer, Elem};
use crate::device::DeviceBuffer;
use crate::dtype::DTypeKind;
use crate::error::{Error, Result};
use crate::ops::attention::{self, Attention, AttentionBuilder, HalfFloat, Path, Positions};
use crate::ops::gemm::{self, Activation, Epilogue};
use crate::ops::{bitmask, c2c, codec, featcache, gmscore, gs, moe, tah};

/// `Elem::get` of a moved-out tensor, by value.
fn into_typed<T: Elem>(call: &Call, name: &str, arg: Arg) -> Result<(DeviceBuffer<T>, Vec<u64>)> {
    let Arg { buf, shape } = arg;
    let dt = buf.dtype();
    T::take(buf)
        .map(|b| (b, shape))
        .map_err(|_| call.err(format!("input `{name}` is {dt}, expected {}", T::KIND)))
}

pub(crate) fn bitmask_sparsify(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("base")?, "bitmask.sparsify", |T| {
        let s = bitmask::sparsify(c.inp::<T>("base")?, c.inp::<T>("new")?, c.p_f32("tau")?)?;
        c.put("mask", s.mask)?;
        c.put("values", s.values)
    })
}

pub(crate) fn bitmask_densify(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("base")?, "bitmask.densify", |T| {
        let out = bitmask::densify_parts(
            c.inp::<T>("base")?,
            c.inp::<u32>("mask")?,
            c.inp::<T>("values")?,
        )?;
        c.put("out", out)
    })
}

pub(crate) fn codec_gather(c: &mut Call) -> Result<()> {
    fn go<T: Elem>(c: &mut Call) -> Result<()> {
        let out = codec::gather(
            c.inp::<T>("src")?,
            c.inp::<u32>("mask")?,
            c.p_usize("count")?,
        )?;
        c.put("out", out)
    }
    match c.dtype_of("src")? {
        DTypeKind::F32 => go::<f32>(c),
        DTypeKind::I32 => go::<i32>(c),
        DTypeKind::U32 => go::<u32>(c),
        DTypeKind::F16 => go::<f16>(c),
        DTypeKind::BF16 => go::<bf16>(c),
        DTypeKind::U16 => go::<u16>(c),
        other => Err(c.err(format!("src dtype {other} is not 2 or 4 bytes"))),
    }
}

pub(crate) fn codec_delta_encode(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("base_vals")?, "codec.delta_encode", |T| {
        let p = codec::delta_encode(c.inp::<T>("base_vals")?, c.inp::<T>("new_vals")?)?;
        c.put("words", p.words)?;
        c.put("widths", p.widths)
    })
}

/// Run `f` on a [`codec::Packed`] made of the moved-out inputs `<prefix>.words` and
/// `<prefix>.widths`, then put them back.
fn with_packed<R>(
    c: &mut Call,
    prefix: &str,
    count: usize,
    f: impl FnOnce(&Call, &codec::Packed) -> Result<R>,
) -> Result<R> {
    let (wn, hn) = (format!("{prefix}.words"), format!("{prefix}.widths"));
    let words = c.take_inp(&wn)?;
    let widths = match c.take_inp(&hn) {
        Ok(w) => w,
        Err(e) => {
            c.put_back(&wn, words)?;
            return Err(e);
        }
    };
    let (words, ws) = into_typed::<u32>(c, &wn, words)?;
    let (widths, hs) = into_typed::<u8>(c, &hn, widths)?;
    let packed = codec::Packed {
        words,
        widths,
        count,
    };
    let r = f(c, &packed);
    let codec::Packed { words, widths, .. } = packed;
    c.put_back(
        &wn,
        Arg {
            buf: DynBuffer::U32(words),
            shape: ws,
        },
    )?;
    c.put_back(
        &hn,
        Arg {
            buf: DynBuffer::U8(widths),
            shape: hs,
        },
    )?;
    r
}

pub(crate) fn codec_delta_decode(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("base_vals")?, "codec.delta_decode", |T| {
        let n = c.inp::<T>("base_vals")?.len();
        let out = with_packed(c, "packed", n, |c, p| {
            codec::delta_decode(c.inp::<T>("base_vals")?, p)
        })?;
        c.put("out", out)
    })
}

pub(crate) fn codec_delta_f32(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("base_vals")?, "codec.delta_f32", |T| {
        let out = codec::delta_f32(c.inp::<T>("base_vals")?, c.inp::<T>("new_vals")?)?;
        c.put("out", out)
    })
}

pub(crate) fn codec_to_f32(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("values")?, "codec.to_f32", |T| {
        let out = codec::to_f32(c.inp::<T>("values")?)?;
        c.put("out", out)
    })
}

pub(crate) fn codec_kmeans(c: &mut Call) -> Result<()> {
    let k = codec::kmeans(
        c.inp::<f32>("values")?,
        c.p_u32("bits")?,
        c.p_u32("max_iters")?,
        c.p_f32("tol")?,
    )?;
    c.put_host("centroids", &k.centroids)?;
    c.put("indices", k.indices)
}

pub(crate) fn codec_pack_indices(c: &mut Call) -> Result<()> {
    let p = codec::pack_indices(c.inp::<u8>("indices")?, c.p_u32("bits")?)?;
    c.put("words", p.words)?;
    c.put("widths", p.widths)
}

pub(crate) fn codec_dequantize(c: &mut Call) -> Result<()> {
    // Without a base the output dtype is not given by any input: f32.
    let dt = match c.opt_dtype_of("base_vals")? {
        Some(d) => d,
        None => DTypeKind::F32,
    };
    let count = c.p_usize("indices.count")?;
    with_float!(dt, "codec.dequantize", |T| {
        let centroids = c.p_list("centroids")?.to_vec();
        let out = with_packed(c, "indices", count, |c, p| {
            codec::dequantize(p, &centroids, c.opt_inp::<T>("base_vals")?)
        })?;
        c.put("out", out)
    })
}

/// `go::<f16>` or `go::<bf16>`, by the dtype of the attention input `q`.
macro_rules! by_q_dtype {
    ($c:expr, $go:ident) => {
        match $c.dtype_of("q")? {
            DTypeKind::F16 => $go::<f16>($c),
            DTypeKind::BF16 => $go::<bf16>($c),
            other => Err($c.err(format!("q is {other}; attention takes f16 or bf16"))),
        }
    };
}

fn attention_problem<'a, T: HalfFloat + Elem>(c: &'a Call) -> Result<Attention<'a, T>> {
    const OP: &str = "attention";
    let (q, k) = (c.inp::<T>("q")?, c.inp::<T>("k")?);
    // `v` is required by the attention ops' tables; featcache.received does not read it (K
    // stands in when it is absent).
    let v = c.opt_inp::<T>("v")?.unwrap_or(k);
    let mode = c.p_enum("mode")?;
    let (qd, kd) = (c.opt_inp::<i32>("q_depth")?, c.opt_inp::<i32>("kv_depth")?);
    let b: AttentionBuilder<'a, T> = match (mode, qd, kd) {
        ("duo_causal", Some(qd), Some(kd)) => Attention::duo_causal(q, k, v, qd, kd),
        ("duo_causal", _, _) => {
            return Err(Error::invalid(
                OP,
                "mode duo_causal needs q_depth and kv_depth",
            ))
        }
        (_, None, None) => match mode {
            "full" => Attention::full(q, k, v),
            _ => Attention::causal(q, k, v),
        },
        (m, _, _) => {
            return Err(Error::invalid(
                OP,
                format!("q_depth and kv_depth are only used by mode duo_causal, not {m}"),
            ))
        }
    };
    let pos = |name: &str| -> Result<Positions<'a>> {
        Ok(match c.opt_inp::<i32>(name)? {
            Some(p) => Positions::Explicit(p),
            None => Positions::Implicit { offset: 0 },
        })
    };
    let mut b = b
        .heads(c.p_usize("heads")?, c.p_usize("kv_heads")?)
        .head_dim(c.p_usize("head_dim")?)
        .seqlens(
            c.inp::<i32>("cu_seqlens_q")?,
            c.inp::<i32>("cu_seqlens_kv")?,
            c.p_usize("max_seqlen_q")?,
            c.p_usize("max_seqlen_kv")?,
        )
        .positions(pos("q_pos")?, pos("kv_pos")?)
        .scale(c.p_f32("scale")?)
        .path(match path_param(c)? {
            "tensor_core" => Path::TensorCore,
            "scalar" => Path::Scalar,
            _ => Path::Auto,
        });
    if let Some(valid) = c.opt_inp::<u8>("kv_valid")? {
        b = b.kv_valid(valid);
    }
    b.build()
}

/// The `path` parameter, `auto` for ops that take the attention problem without it
/// (`featcache.received`: one kernel path).
fn path_param(c: &Call) -> Result<&'static str> {
    if c.op.params.iter().any(|p| p.name == "path") {
        c.p_enum("path")
    } else {
        Ok("auto")
    }
}

/// Report the kernels' findings about `cu_seqlens` where that costs no wait (SIMT and the CPU
/// path run synchronously). On a GPU the check would wait for the stream; it runs only with
/// `TESSERA_EAGER_CHECKS=1` (docs/interop.md) or [`Call::check_contents`].
fn check_now(c: &Call, check: &crate::ops::DeviceCheck) -> Result<()> {
    if c.check_contents
        || matches!(
            c.device.backend(),
            crate::device::Backend::Cpu | crate::device::Backend::Simt(_)
        )
    {
        check.check()?;
    }
    Ok(())
}

pub(crate) fn attention_forward(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        let (o, lse) = (c.take_provided("o")?, c.take_provided("lse")?);
        match (o, lse) {
            (Some(mut o), Some(mut lse)) => {
                let r = {
                    let a = attention_problem::<T>(c)?;
                    match (o.get_mut::<f32>(), lse.get_mut::<f32>()) {
                        (Some(ob), Some(lb)) => attention::forward_into(&a, ob, lb),
                        _ => Err(c.err("o and lse must be f32")),
                    }
                };
                let check = r?;
                check_now(c, &check)?;
                c.put_written("o", o)?;
                c.put_written("lse", lse)
            }
            (o, lse) => {
                let out = attention::forward(&attention_problem::<T>(c)?)?;
                check_now(c, &out.check)?;
                c.restore_provided("o", o)?;
                c.restore_provided("lse", lse)?;
                c.put("o", out.o)?;
                c.put("lse", out.lse)
            }
        }
    }
    by_q_dtype!(c, go)
}

pub(crate) fn attention_decode(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        let out = attention::decode(&attention_problem::<T>(c)?, c.p_usize("splits")?)?;
        check_now(c, &out.check)?;
        c.put("o", out.o)?;
        c.put("lse", out.lse)
    }
    by_q_dtype!(c, go)
}

pub(crate) fn attention_decode_partials(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        let p = attention::decode_partials(&attention_problem::<T>(c)?, c.p_usize("splits")?)?;
        check_now(c, &p.check)?;
        c.put("o", p.o)?;
        c.put("lse", p.lse)
    }
    by_q_dtype!(c, go)
}

pub(crate) fn attention_merge(c: &mut Call) -> Result<()> {
    let out = attention::merge(
        c.inp::<f32>("o")?,
        c.inp::<f32>("lse")?,
        c.p_usize("splits")?,
        c.p_usize("total_q")?,
        c.p_usize("heads")?,
        c.p_usize("head_dim")?,
    )?;
    c.put("o", out.o)?;
    c.put("lse", out.lse)
}

pub(crate) fn tah_select_hard(c: &mut Call) -> Result<()> {
    let s = tah::select_hard(c.inp::<f32>("scores")?, c.p_f64("threshold")?)?;
    c.put("indices", s.indices)
}

pub(crate) fn tah_gather_rows(c: &mut Call) -> Result<()> {
    fn go<T: Elem>(c: &mut Call) -> Result<()> {
        let out = tah::gather_rows(c.inp::<T>("src")?, c.inp::<u32>("idx")?, c.p_usize("d")?)?;
        c.put("out", out)
    }
    match c.dtype_of("src")? {
        DTypeKind::F32 => go::<f32>(c),
        DTypeKind::I32 => go::<i32>(c),
        DTypeKind::U32 => go::<u32>(c),
        other => Err(c.err(format!("src dtype {other} is not a 4-byte type"))),
    }
}

/// Run `f` with in-place input `name` moved out as `&mut DeviceBuffer<T>`, then put it back.
fn in_place<T: Elem>(
    c: &mut Call,
    name: &str,
    f: impl FnOnce(&Call, &mut DeviceBuffer<T>) -> Result<()>,
) -> Result<()> {
    let mut arg = c.take_inp(name)?;
    let r = match arg.buf.get_mut::<T>() {
        Some(b) => f(c, b),
        None => Err(c.err(format!(
            "input `{name}` is {}, expected {}",
            arg.buf.dtype(),
            T::KIND
        ))),
    };
    c.put_back(name, arg)?;
    r
}

pub(crate) fn tah_scatter_rows(c: &mut Call) -> Result<()> {
    fn go<T: Elem>(c: &mut Call) -> Result<()> {
        in_place::<T>(c, "dst", |c, dst| {
            tah::scatter_rows(
                c.inp::<T>("src")?,
                c.inp::<u32>("idx")?,
                c.p_usize("d")?,
                dst,
            )
        })
    }
    match c.dtype_of("dst")? {
        DTypeKind::F32 => go::<f32>(c),
        DTypeKind::I32 => go::<i32>(c),
        DTypeKind::U32 => go::<u32>(c),
        other => Err(c.err(format!("dst dtype {other} is not a 4-byte type"))),
    }
}

pub(crate) fn tah_copy_range(c: &mut Call) -> Result<()> {
    fn go<T: Elem>(c: &mut Call) -> Result<()> {
        in_place::<T>(c, "dst", |c, dst| {
            tah::copy_range(
                c.inp::<T>("src")?,
                c.p_usize("src_off")?,
                dst,
                c.p_usize("dst_off")?,
                c.p_usize("n")?,
            )
        })
    }
    with_elem!(c.dtype_of("dst")?, "tah.copy_range", |T| go::<T>(c))
}

pub(crate) fn tah_next_depth_input(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("emb")?, "tah.next_depth_input", |T| {
        let n = tah::next_depth_input(
            c.inp::<f32>("cum")?,
            c.p_usize("vocab")?,
            c.p_usize("k")?,
            c.inp::<T>("emb")?,
            c.p_usize("d")?,
        )?;
        c.put("out", n.out)?;
        c.put("ids", n.ids)?;
        c.put("weights", n.weights)
    })
}

pub(crate) fn tah_accumulate_logits(c: &mut Call) -> Result<()> {
    in_place::<f32>(c, "cum", |c, cum| {
        tah::accumulate_logits(cum, c.inp::<f32>("logits")?)
    })
}

pub(crate) fn moe_align(c: &mut Call) -> Result<()> {
    let a = moe::align(
        c.inp::<i32>("topk_ids")?,
        c.p_usize("k")?,
        c.p_usize("num_experts")?,
        c.p_usize("block_size")?,
    )?;
    c.put("sorted_token_ids", a.sorted_token_ids)?;
    c.put("expert_ids", a.expert_ids)?;
    c.put("num_tokens_post_padded", a.num_tokens_post_padded)
}

/// The routing parameters of `moe.route` and `moe.layer` (`NO_STEP`: inference, and `layer`
/// defaulting to `layer_in_group`).
fn route_params(c: &Call) -> Result<moe::RouteParams> {
    let no = crate::ops::table::NO_STEP
        .parse::<usize>()
        .map_err(|e| c.err(format!("internal: {e}")))?;
    let layer_in_group = c.p_usize("layer_in_group")?;
    let step = c.p_usize("step")?;
    let layer = c.p_usize("layer")?;
    Ok(moe::RouteParams {
        r: c.p_usize("r")?,
        layer_in_group,
        layer: if layer == no { layer_in_group } else { layer },
        top_k: c.p_usize("top_k")?,
        renormalize: c.p_enum("renormalize")? == "true",
        psr: (step != no)
            .then(|| -> Result<moe::Psr> {
                Ok(moe::Psr {
                    step: step as u64,
                    t_s: c.p_usize("t_s")? as u64,
                    t_e: c.p_usize("t_e")? as u64,
                    seed: c.p_usize("seed")? as u64,
                })
            })
            .transpose()?,
    })
}

pub(crate) fn moe_route(c: &mut Call) -> Result<()> {
    let tokens = c.take_inp("logits")?;
    let t = tokens.shape.first().copied().unwrap_or(0) as usize;
    c.put_back("logits", tokens)?;
    let p = route_params(c)?;
    let o = moe::route(c.inp::<f32>("logits")?, t, &p)?;
    c.put("topk_ids", o.topk_ids)?;
    c.put("topk_weights", o.topk_weights)
}

pub(crate) fn moe_layer(c: &mut Call) -> Result<()> {
    fn go<T: moe::ExpertFloat + Elem>(c: &mut Call) -> Result<()> {
        let x = c.take_inp("x")?;
        let d = x.shape.get(1).copied().unwrap_or(0) as usize;
        c.put_back("x", x)?;
        let p = route_params(c)?;
        let w = moe::LayerWeights {
            w_router: c.inp::<T>("w_router")?,
            w_gate: c.inp::<T>("w_gate")?,
            w_up: c.inp::<T>("w_up")?,
            w_down: c.inp::<T>("w_down")?,
        };
        let y = moe::layer(c.inp::<T>("x")?, d, &w, &p)?;
        c.put("y", y)
    }
    match c.dtype_of("x")? {
        DTypeKind::F16 => go::<f16>(c),
        DTypeKind::BF16 => go::<bf16>(c),
        other => Err(c.err(format!("x is {other}; moe.layer takes f16 or bf16"))),
    }
}

pub(crate) fn moe_permute(c: &mut Call) -> Result<()> {
    fn go<T: Elem>(c: &mut Call) -> Result<()> {
        // The three alignment buffers are moved into an `Aligned` and back.
        const S: &str = "aligned.sorted_token_ids";
        const E: &str = "aligned.expert_ids";
        const N: &str = "aligned.num_tokens_post_padded";
        let (s, s0) = {
            let a = c.take_inp(S)?;
            into_typed::<i32>(c, S, a)?
        };
        let (e, s1) = {
            let a = c.take_inp(E)?;
            into_typed::<i32>(c, E, a)?
        };
        let (t, s2) = {
            let a = c.take_inp(N)?;
            into_typed::<i32>(c, N, a)?
        };
        let aligned = moe::Aligned {
            sorted_token_ids: s,
            expert_ids: e,
            num_tokens_post_padded: t,
        };
        let r = moe::permute(
            c.inp::<T>("x")?,
            c.p_usize("d")?,
            &aligned,
            c.p_usize("top_k")?,
            c.p_usize("num_experts")?,
            c.p_usize("block_size")?,
        );
        let moe::Aligned {
            sorted_token_ids,
            expert_ids,
            num_tokens_post_padded,
        } = aligned;
        for (n, b, shape) in [
            (S, sorted_token_ids, s0),
            (E, expert_ids, s1),
            (N, num_tokens_post_padded, s2),
        ] {
            c.put_back(
                n,
                Arg {
                    buf: i32::wrap(b),
                    shape,
                },
            )?;
        }
        let p = r?;
        c.put("rows", p.rows)?;
        c.put("offsets", p.offsets)?;
        c.put("positions", p.positions)
    }
    match c.dtype_of("x")? {
        DTypeKind::F32 => go::<f32>(c),
        DTypeKind::F16 => go::<f16>(c),
        DTypeKind::BF16 => go::<bf16>(c),
        DTypeKind::I32 => go::<i32>(c),
        DTypeKind::U32 => go::<u32>(c),
        DTypeKind::U16 => go::<u16>(c),
        DTypeKind::U8 => go::<u8>(c),
        other => Err(c.err(format!("x dtype {other} is not supported"))),
    }
}

pub(crate) fn moe_combine(c: &mut Call) -> Result<()> {
    with_float!(c.dtype_of("expert_out")?, "moe.combine", |T| {
        let y = moe::combine::<T, T>(
            c.inp::<T>("expert_out")?,
            c.inp::<i32>("positions")?,
            c.inp::<f32>("topk_weights")?,
            c.p_usize("d")?,
            c.p_usize("top_k")?,
        )?;
        c.put("y", y)
    })
}

pub(crate) fn moe_load(c: &mut Call) -> Result<()> {
    let l = moe::load(
        c.inp::<i32>("topk_ids")?,
        c.p_usize("num_experts")?,
        c.p_usize("r")?,
    )?;
    c.put("per_expert", l.per_expert)?;
    c.put("per_layer", l.per_layer)
}

/// The f32 epilogue of a `gemm.*` call (`epi.*` inputs and the activation when the op has it).
fn gemm_epilogue(c: &Call, swiglu: bool) -> Result<Epilogue<'_, f32>> {
    let mut e = Epilogue::new();
    e.bias = c.opt_inp::<f32>("epi.bias")?;
    e.row_scale = c.opt_inp::<f32>("epi.row_scale")?;
    e.residual = c.opt_inp::<f32>("epi.residual")?;
    e.swiglu = swiglu;
    if !swiglu {
        let name = c.p_enum("epi.activation")?;
        e.activation =
            Activation::parse(name).ok_or_else(|| c.err(format!("unknown activation {name}")))?;
    }
    Ok(e)
}

macro_rules! by_a_dtype {
    ($c:expr, $go:ident) => {
        match $c.dtype_of("a")? {
            DTypeKind::F16 => $go::<f16>($c),
            DTypeKind::BF16 => $go::<bf16>($c),
            other => Err($c.err(format!("a is {other}; gemm takes f16 or bf16"))),
        }
    };
}

fn gemm_dense_with(c: &mut Call, swiglu: bool) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call, swiglu: bool) -> Result<()> {
        let d = gemm::dense::<T, f32>(
            c.inp::<T>("a")?,
            c.inp::<T>("b")?,
            c.p_usize("m")?,
            c.p_usize("n")?,
            c.p_usize("k")?,
            &gemm_epilogue(c, swiglu)?,
        )?;
        c.put("d", d)
    }
    match c.dtype_of("a")? {
        DTypeKind::F16 => go::<f16>(c, swiglu),
        DTypeKind::BF16 => go::<bf16>(c, swiglu),
        other => Err(c.err(format!("a is {other}; gemm takes f16 or bf16"))),
    }
}

pub(crate) fn gemm_dense(c: &mut Call) -> Result<()> {
    gemm_dense_with(c, false)
}

pub(crate) fn gemm_dense_swiglu(c: &mut Call) -> Result<()> {
    gemm_dense_with(c, true)
}

pub(crate) fn gemm_grouped(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        let (d, check) = gemm::grouped_deferred::<T, f32>(
            c.inp::<T>("a")?,
            c.inp::<T>("b")?,
            c.inp::<i32>("offsets")?,
            c.p_usize("m")?,
            c.p_usize("n")?,
            c.p_usize("k")?,
            &gemm_epilogue(c, false)?,
        )?;
        check_now(c, &check)?;
        c.put("d", d)
    }
    by_a_dtype!(c, go)
}

pub(crate) fn gemm_grouped_swiglu(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        let (d, check) = gemm::grouped_swiglu_deferred::<T, f32>(
            c.inp::<T>("a")?,
            c.inp::<T>("gate")?,
            c.inp::<T>("up")?,
            c.inp::<i32>("offsets")?,
            c.p_usize("m")?,
            c.p_usize("f")?,
            c.p_usize("k")?,
        )?;
        check_now(c, &check)?;
        c.put("d", d)
    }
    by_a_dtype!(c, go)
}

/// A given tensor's shape.
fn shape_of(c: &mut Call, name: &str) -> Result<Vec<usize>> {
    let a = c.take_inp(name)?;
    let s = a.shape.iter().map(|&d| d as usize).collect();
    c.put_back(name, a)?;
    Ok(s)
}

/// A device copy of an input (the projectors own their weights).
fn owned<T: Elem>(c: &Call, name: &str) -> Result<DeviceBuffer<T>> {
    let b = c.inp::<T>(name)?;
    let mut o = b.device().alloc::<T>(b.len(), name)?;
    o.copy_from(b)?;
    Ok(o)
}

/// The gate and GELU parameters (`C2C_PARAMS`).
fn c2c_options(c: &Call) -> Result<c2c::Options> {
    let gate = match c.p_enum("gate")? {
        "soft" => c2c::Gate::Soft {
            tau: c.p_f32("tau")?,
        },
        _ => c2c::Gate::Hard,
    };
    let gelu = match c.p_enum("gelu")? {
        "gelu_tanh" => Activation::GeluTanh,
        _ => Activation::GeluErf,
    };
    Ok(c2c::Options { gate, gelu })
}

/// The host values of a small f32 input (the gate logits decide on the host what to launch).
fn host_f32(c: &Call, name: &str) -> Result<Vec<f32>> {
    c.inp::<f32>(name)?.download()
}

pub(crate) fn c2c_project(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        let (src, tgt, w1) = (shape_of(c, "src")?, shape_of(c, "tgt")?, shape_of(c, "w1")?);
        let dims = c2c::ProjectorDims {
            hs: src[1],
            ds: src[2],
            ht: tgt[1],
            dt: tgt[2],
            hidden: w1[2],
            ffn: w1[1],
            blocks: w1[0],
        };
        let gate = host_f32(c, "gate_logit")?[0];
        let opts = c2c_options(c)?;
        if gate.is_finite() && opts.gate.value(gate) == 0.0 {
            // A closed gate: the output is tgt, and nothing is launched (not even the fold).
            return c.put("out", owned::<T>(c, "tgt")?);
        }
        let p = c2c::Projector::<T>::from_buffers(
            dims,
            owned(c, "w_in")?,
            owned(c, "b_in")?,
            owned(c, "w1")?,
            owned(c, "w2")?,
            owned(c, "norm")?,
            owned(c, "w_out")?,
            owned(c, "w_s")?,
            gate,
        )?;
        let out =
            c2c::project::<T, T, T>(&p, c.inp::<T>("src")?, c.inp::<T>("tgt")?, src[0], &opts)?;
        c.put("out", out)
    }
    match c.dtype_of("src")? {
        DTypeKind::F16 => go::<f16>(c),
        DTypeKind::BF16 => go::<bf16>(c),
        other => Err(c.err(format!("src is {other}; c2c.project takes f16 or bf16"))),
    }
}

pub(crate) fn c2c_fuse(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        use crate::drivers::c2c::align::LayerMap;
        let (src, tgt, w1) = (
            shape_of(c, "src_k")?,
            shape_of(c, "tgt_k")?,
            shape_of(c, "w1")?,
        );
        let sizes = c2c::StackedSizes {
            dims: c2c::ProjectorDims {
                hs: src[2],
                ds: src[3],
                ht: tgt[2],
                dt: tgt[3],
                hidden: w1[4],
                ffn: w1[3],
                blocks: w1[2],
            },
            source_layers: src[0],
            src_tokens: src[1],
            tokens: tgt[1],
        };
        let ints = |b: &DeviceBuffer<i32>| -> Result<Vec<usize>> {
            Ok(b.download()?
                .iter()
                .map(|&s| usize::try_from(s).unwrap_or(usize::MAX))
                .collect())
        };
        let layer_map = match c.opt_inp::<i32>("layer_map")? {
            None => LayerMap::LastAligned,
            Some(m) => LayerMap::Table(ints(m)?),
        }
        .resolve(sizes.source_layers, tgt[0])?;
        let alignment = match c.opt_inp::<i32>("alignment")? {
            None => (0..sizes.tokens).collect(),
            Some(a) => ints(a)?,
        };
        let gates = host_f32(c, "gate_logit")?;
        let opts = c2c_options(c)?;
        let mut out_k = owned::<T>(c, "tgt_k")?;
        let mut out_v = owned::<T>(c, "tgt_v")?;
        c2c::fuse_layers(
            c.inp::<T>("src_k")?,
            c.inp::<T>("src_v")?,
            &mut out_k,
            &mut out_v,
            &c2c::Stacked {
                w_in: c.inp::<T>("w_in")?,
                b_in: c.inp::<f32>("b_in")?,
                w1: c.inp::<T>("w1")?,
                w2: c.inp::<T>("w2")?,
                norm: c.inp::<f32>("norm")?,
                w_out: c.inp::<T>("w_out")?,
                w_s: c.inp::<T>("w_s")?,
                gate_logit: &gates,
            },
            &alignment,
            &layer_map,
            sizes,
            &opts,
        )?;
        c.put("out_k", out_k)?;
        c.put("out_v", out_v)
    }
    match c.dtype_of("src_k")? {
        DTypeKind::F16 => go::<f16>(c),
        DTypeKind::BF16 => go::<bf16>(c),
        other => Err(c.err(format!("src_k is {other}; c2c.fuse takes f16 or bf16"))),
    }
}

pub(crate) fn featcache_received(c: &mut Call) -> Result<()> {
    fn go<T: HalfFloat + Elem>(c: &mut Call) -> Result<()> {
        let per_head = match c.p_u32("per_head")? {
            0 => false,
            1 => true,
            x => {
                return Err(Error::invalid(
                    featcache::RECEIVED_OP,
                    format!("per_head = {x}: 0 or 1"),
                ))
            }
        };
        let r = featcache::received(&attention_problem::<T>(c)?, c.inp::<f32>("lse")?, per_head)?;
        c.put("received", r)
    }
    by_q_dtype!(c, go)
}

pub(crate) fn gmscore_forward(c: &mut Call) -> Result<()> {
    let s = gmscore::forward(
        c.inp::<f32>("codebook")?,
        c.inp::<f32>("p")?,
        c.inp::<f32>("x_t")?,
        c.inp::<f32>("alpha")?,
        c.inp::<f32>("sigma")?,
        c.p_usize("d")?,
    )?;
    c.put("score", s.score)?;
    c.put("lse", s.lse)
}

pub(crate) fn gmscore_backward(c: &mut Call) -> Result<()> {
    let g = gmscore::backward(
        c.inp::<f32>("codebook")?,
        c.inp::<f32>("p")?,
        c.inp::<f32>("x_t")?,
        c.inp::<f32>("alpha")?,
        c.inp::<f32>("sigma")?,
        c.p_usize("d")?,
        c.inp::<f32>("s_gen")?,
        c.inp::<f32>("score")?,
        c.inp::<f32>("lse")?,
    )?;
    c.put("grad_s_gen", g.grad_s_gen)?;
    c.put("grad_x_t", g.grad_x_t)
}

pub(crate) fn featcache_select(c: &mut Call) -> Result<()> {
    let s = featcache::select(
        c.inp::<f32>("his")?,
        c.inp::<f32>("fut")?,
        c.inp::<u32>("cf")?,
        c.p_f64("cr")?,
        c.p_f64("low_mass")?,
    )?;
    c.put("class", s.class)?;
    c.put("c1", s.c1)
}

pub(crate) fn featcache_gather(c: &mut Call) -> Result<()> {
    let rows = featcache::gather(c.inp::<f32>("x")?, c.p_usize("width")?, c.inp::<u32>("c1")?)?;
    c.put("rows", rows)
}

/// The inputs that make a [`featcache::Ring`], in [`featcache::Ring::from_parts`] order.
const RING_PARTS: [&str; 4] = ["ring.feat", "ring.stamp", "ring.head", "ring.len"];

/// Run `f` on a [`featcache::Ring`] made of the moved-out inputs `ring.feat`, `ring.stamp`,
/// `ring.head` and `ring.len` (n: the length of `ring.head`; width: the last dimension of
/// `ring.feat`), then put them back.
fn with_ring(
    c: &mut Call,
    f: impl FnOnce(&mut Call, &mut featcache::Ring) -> Result<()>,
) -> Result<()> {
    let mut args = Vec::with_capacity(4);
    for name in RING_PARTS {
        match c.take_inp(name) {
            Ok(a) => args.push(a),
            Err(e) => {
                for (name, a) in RING_PARTS.iter().zip(args) {
                    c.put_back(name, a)?;
                }
                return Err(e);
            }
        }
    }
    let width = args[0].shape.get(2).copied().unwrap_or(0) as usize;
    if width == 0 {
        for (name, a) in RING_PARTS.iter().zip(args) {
            c.put_back(name, a)?;
        }
        return Err(Error::invalid(featcache::ring::RING_OP, "width is 0"));
    }
    let Ok([feat, stamp, head, len]) = <[Arg; 4]>::try_from(args) else {
        return Err(c.err("internal: the ring's four inputs"));
    };
    let shapes = [
        feat.shape.clone(),
        stamp.shape.clone(),
        head.shape.clone(),
        len.shape.clone(),
    ];
    let (feat, _) = into_typed::<f32>(c, RING_PARTS[0], feat)?;
    let (stamp, _) = into_typed::<f32>(c, RING_PARTS[1], stamp)?;
    let (head, _) = into_typed::<u8>(c, RING_PARTS[2], head)?;
    let (len, _) = into_typed::<u8>(c, RING_PARTS[3], len)?;
    let n = head.len();
    let mut ring = featcache::Ring::from_parts(feat, stamp, head, len, n, width)?;
    let r = f(c, &mut ring);
    let (feat, stamp, head, len) = ring.into_parts();
    let bufs = [
        DynBuffer::F32(feat),
        DynBuffer::F32(stamp),
        DynBuffer::U8(head),
        DynBuffer::U8(len),
    ];
    for ((name, buf), shape) in RING_PARTS.iter().zip(bufs).zip(shapes) {
        c.put_back(name, Arg { buf, shape })?;
    }
    r
}

pub(crate) fn featcache_scatter(c: &mut Call) -> Result<()> {
    with_ring(c, |c, ring| {
        in_place::<f32>(c, "x", |c, x| {
            featcache::scatter(
                c.inp::<f32>("rows")?,
                c.inp::<u32>("c1")?,
                c.p_f32("t_now")?,
                x,
                ring,
            )
        })
    })
}

pub(crate) fn featcache_reuse(c: &mut Call) -> Result<()> {
    with_ring(c, |c, ring| {
        in_place::<f32>(c, "x", |c, x| {
            featcache::reuse(c.inp::<u8>("class")?, ring, c.p_f32("t_now")?, x)
        })
    })
}

pub(crate) fn featcache_age(c: &mut Call) -> Result<()> {
    in_place::<u32>(c, "cf", |c, cf| featcache::age(c.inp::<u8>("class")?, cf))
}

/// The camera of a `gs.*` call: the inputs `viewmat` `[4,4]` and `K` `[3,3]` (read back to the
/// host: 25 values) and the parameters `width`, `height`, `near`, `far`.
fn gs_camera(c: &Call) -> Result<gs::project::Camera> {
    let viewmat: [f32; 16] = c
        .inp::<f32>("viewmat")?
        .download()?
        .try_into()
        .map_err(|_| c.err("viewmat must be [4, 4]"))?;
    let k: [f32; 9] = c
        .inp::<f32>("K")?
        .download()?
        .try_into()
        .map_err(|_| c.err("K must be [3, 3]"))?;
    Ok(gs::project::Camera {
        viewmat,
        k,
        width: c.p_u32("width")?,
        height: c.p_u32("height")?,
        near: c.p_f32("near")?,
        far: c.p_f32("far")?,
    })
}

pub(crate) fn gs_project(c: &mut Call) -> Result<()> {
    let cam = gs_camera(c)?;
    let p = gs::project::project(
        c.inp::<f32>("means")?,
        c.inp::<f32>("quats")?,
        c.inp::<f32>("scales")?,
        &cam,
    )?;
    c.put("means2d", p.means2d)?;
    c.put("depths", p.depths)?;
    c.put("conics", p.conics)?;
    c.put("radii", p.radii)
}

pub(crate) fn gs_bin(c: &mut Call) -> Result<()> {
    let b = gs::bin::bin(
        c.inp::<f32>("means2d")?,
        c.inp::<f32>("depths")?,
        c.inp::<i32>("radii")?,
        c.p_u32("width")?,
        c.p_u32("height")?,
    )?;
    c.put("ids", b.ids)?;
    c.put("tile_ranges", b.tile_ranges)
}

/// The highest SH degree `k` coefficients per Gaussian hold (at most 3).
fn gs_auto_degree(k: usize) -> u32 {
    (0..=3u32)
        .rev()
        .find(|d| (d + 1).pow(2) as usize <= k)
        .unwrap_or(0)
}

/// The `gs.render*` inputs and parameters that make the Rust call's arguments: the colours
/// (`colors`, or `coeffs` with `sh_degree`; -1: the highest degree `coeffs` holds), the camera,
/// the background (`[0, 0, 0]` when not given) and the layout.
fn gs_scene(
    c: &Call,
) -> Result<(
    gs::pipeline::Colors<'_>,
    gs::project::Camera,
    [f32; 3],
    gs::render::Layout,
)> {
    use gs::pipeline::Colors;
    let degree = c.p_i32("sh_degree")?;
    let colors = match (c.opt_inp::<f32>("colors")?, c.opt_inp::<f32>("coeffs")?) {
        (Some(rgb), None) if degree == -1 => Colors::Rgb(rgb),
        (Some(_), None) => {
            return Err(c.err(format!(
                "sh_degree = {degree} is for SH coefficients (`coeffs`); with RGB `colors` leave \
                 it at -1"
            )))
        }
        (None, Some(coeffs)) => {
            let sh_degree = match degree {
                -1 => {
                    let k = c.dims.get("num_coeffs").copied().unwrap_or(0) as usize;
                    if k == 0 {
                        return Err(c.err("coeffs has no coefficients (num_coeffs = 0)"));
                    }
                    gs_auto_degree(k)
                }
                d @ 0..=3 => d as u32,
                d => return Err(c.err(format!("sh_degree = {d}: 0..=3, or -1 (auto)"))),
            };
            Colors::Sh { coeffs, sh_degree }
        }
        (Some(_), Some(_)) => {
            return Err(c.err("give `colors` ([N, 3] RGB) or `coeffs` ([N, K, 3] SH), not both"))
        }
        (None, None) => {
            return Err(
                c.err("missing colours: give `colors` ([N, 3] RGB) or `coeffs` ([N, K, 3] SH)")
            )
        }
    };
    let background = match c.opt_inp::<f32>("background")? {
        None => [0.0; 3],
        Some(b) => b
            .download()?
            .try_into()
            .map_err(|_| c.err("background must be [3]"))?,
    };
    let layout = match c.p_enum("layout")? {
        "balanced" => gs::render::Layout::Balanced,
        _ => gs::render::Layout::Baseline,
    };
    Ok((colors, gs_camera(c)?, background, layout))
}

pub(crate) fn gs_render(c: &mut Call) -> Result<()> {
    let (colors, cam, background, layout) = gs_scene(c)?;
    let r = gs::pipeline::rasterize(
        c.inp::<f32>("means")?,
        c.inp::<f32>("quats")?,
        c.inp::<f32>("scales")?,
        c.inp::<f32>("opacities")?,
        colors,
        &cam,
        background,
        layout,
    )?;
    c.put("image", r.image)?;
    c.put("alpha", r.alpha)
}

pub(crate) fn gs_render_backward(c: &mut Call) -> Result<()> {
    let (colors, cam, background, layout) = gs_scene(c)?;
    let g = gs::pipeline::rasterize_backward(
        c.inp::<f32>("means")?,
        c.inp::<f32>("quats")?,
        c.inp::<f32>("scales")?,
        c.inp::<f32>("opacities")?,
        colors,
        &cam,
        background,
        layout,
        c.inp::<f32>("v_image")?,
        c.opt_inp::<f32>("v_alpha")?,
    )?;
    let v_coeffs = match g.v_coeffs {
        Some(v) => v,
        None => c.device().alloc::<f32>(0, "gs.v_coeffs")?,
    };
    c.put("v_means", g.v_means)?;
    c.put("v_quats", g.v_quats)?;
    c.put("v_scales", g.v_scales)?;
    c.put("v_opacities", g.v_opacities)?;
    c.put("v_colors", g.v_colors)?;
    c.put("v_coeffs", v_coeffs)
}
