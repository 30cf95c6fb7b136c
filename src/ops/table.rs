//! The op table: every public op declared once, with its name (`family.op`), input tensors
//! (name, allowed dtypes, shape rule), scalar parameters (name, type, default) and outputs.
//!
//! Names are the Rust names: inputs and parameters are the op function's argument names or its
//! problem struct's fields (`packed.words` is field `words` of argument `packed`), outputs are
//! its output struct's fields (`o`, `lse`, ...). The table
//! drives `tessera run --list [--json]` and the op reference `docs/ops.md`
//! (`tessera run --list --markdown`; a test keeps the file fresh); the C ABI, the Python package
//! and `tessera run` on tensors are generated from it next.
//!
//! A new op is one entry of [`OPS`]. Its names are checked against the Rust code: by the
//! exhaustive destructuring in `field_checks` for struct-based ops (a renamed or added field
//! fails to compile), and by the `names_match_the_rust_signatures` test for argument-based ops.

use serde::Serialize;

use crate::interop::runners;

/// Element types a tensor may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtypes {
    /// f32, f16 or bf16 (one type per call, shared by the tensors marked so).
    Float,
    /// f16 or bf16.
    Half,
    /// Any 2- or 4-byte element type (bits are copied).
    Bits16Or32,
    /// Any 4-byte element type (bits are moved).
    Bits32,
    /// Any 1-, 2- or 4-byte element type (bits are moved).
    Any,
    F32,
    I32,
    U32,
    U8,
}

impl Dtypes {
    /// Whether every tensor of an op marked with this set shares one dtype per call (the
    /// generic sets), as opposed to naming one fixed type.
    pub fn shared(self) -> bool {
        matches!(
            self,
            Dtypes::Float | Dtypes::Half | Dtypes::Bits16Or32 | Dtypes::Bits32 | Dtypes::Any
        )
    }

    pub fn names(self) -> &'static [&'static str] {
        match self {
            Dtypes::Float => &["f32", "f16", "bf16"],
            Dtypes::Half => &["f16", "bf16"],
            Dtypes::Bits16Or32 => &["f32", "f16", "bf16", "u32", "i32", "u16"],
            Dtypes::Bits32 => &["f32", "i32", "u32"],
            Dtypes::Any => &["f32", "f16", "bf16", "i32", "u32", "u16", "u8"],
            Dtypes::F32 => &["f32"],
            Dtypes::I32 => &["i32"],
            Dtypes::U32 => &["u32"],
            Dtypes::U8 => &["u8"],
        }
    }
}

/// One tensor argument or output.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TensorSpec {
    pub name: &'static str,
    #[serde(serialize_with = "dtype_names")]
    pub dtypes: Dtypes,
    /// Shape rule, in the op's own size names (`[n]`, `[total_q, heads, head_dim]`, ...).
    pub shape: &'static str,
    /// May be absent (`Option` in Rust).
    pub optional: bool,
    /// For an output whose size depends on the data: how many elements it can take at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<&'static str>,
}

impl TensorSpec {
    /// The same tensor with an upper bound on its data-dependent size.
    const fn at_most(self, max: &'static str) -> Self {
        TensorSpec {
            max: Some(max),
            ..self
        }
    }
}

impl TensorSpec {
    /// An input the op updates in place (its shape rule ends in `(written in place)`): the output
    /// of the same name is this tensor. An input and an output may share a name without it
    /// (`attention.merge`'s `o`: partials in, a new O out).
    pub fn written_in_place(&self) -> bool {
        self.shape.ends_with("(written in place)")
    }
}

fn dtype_names<S: serde::Serializer>(d: &Dtypes, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(d.names())
}

/// Scalar parameter types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    F32,
    F64,
    U32,
    I32,
    Usize,
    /// One of the listed words (a Rust enum).
    Enum(&'static [&'static str]),
    /// A host array of f32 (not a device tensor).
    F32List,
}

/// One scalar parameter.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ParamSpec {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// The default, when the parameter may be left out.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// One op.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct OpSpec {
    /// `family.op`.
    pub name: &'static str,
    /// The Rust function.
    pub rust: &'static str,
    pub summary: &'static str,
    pub inputs: &'static [TensorSpec],
    pub params: &'static [ParamSpec],
    pub outputs: &'static [TensorSpec],
    /// Runs the op on a validated [`crate::interop::Call`]: how the C ABI, the Python package
    /// and `tessera run` reach it.
    #[serde(skip)]
    pub run: crate::interop::Runner,
}

const fn t(name: &'static str, dtypes: Dtypes, shape: &'static str) -> TensorSpec {
    TensorSpec {
        name,
        dtypes,
        shape,
        optional: false,
        max: None,
    }
}

const fn opt(name: &'static str, dtypes: Dtypes, shape: &'static str) -> TensorSpec {
    TensorSpec {
        name,
        dtypes,
        shape,
        optional: true,
        max: None,
    }
}

const fn p(
    name: &'static str,
    ty: ParamType,
    default: Option<&'static str>,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        default,
        doc,
    }
}

const MODES: ParamType = ParamType::Enum(&["full", "causal", "duo_causal"]);
const PATHS: ParamType = ParamType::Enum(&["auto", "tensor_core", "scalar"]);

/// The attention problem's tensors and parameters (`ops::attention::Attention`).
const ATTENTION_INPUTS: &[TensorSpec] = &[
    t("q", Dtypes::Half, "[total_q, heads, head_dim]"),
    t("k", Dtypes::Half, "[total_kv, kv_heads, head_dim]"),
    t("v", Dtypes::Half, "[total_kv, kv_heads, head_dim]"),
    t("cu_seqlens_q", Dtypes::I32, "[batch + 1]"),
    t("cu_seqlens_kv", Dtypes::I32, "[batch + 1]"),
    opt("q_pos", Dtypes::I32, "[total_q]"),
    opt("kv_pos", Dtypes::I32, "[total_kv]"),
    opt("q_depth", Dtypes::I32, "[total_q]"),
    opt("kv_depth", Dtypes::I32, "[total_kv]"),
    opt("kv_valid", Dtypes::U8, "[total_kv]"),
];

const ATTENTION_PARAMS: &[ParamSpec] = &[
    p("heads", ParamType::Usize, None, "query heads H"),
    p(
        "kv_heads",
        ParamType::Usize,
        None,
        "key/value heads (H is a multiple)",
    ),
    p("head_dim", ParamType::Usize, None, "D: 64 or 128"),
    p(
        "max_seqlen_q",
        ParamType::Usize,
        None,
        "bound on every query sequence's length (sizes the grid)",
    ),
    p(
        "max_seqlen_kv",
        ParamType::Usize,
        None,
        "bound on every key sequence's length",
    ),
    p(
        "scale",
        ParamType::F32,
        None,
        "softmax scale, usually 1/sqrt(D)",
    ),
    p(
        "mode",
        MODES,
        None,
        "mask: full, causal (by position) or duo_causal (position and depth)",
    ),
    p("path", PATHS, Some("auto"), "kernel path"),
];

const O_LSE: &[TensorSpec] = &[
    t("o", Dtypes::F32, "[total_q, heads, head_dim]"),
    t("lse", Dtypes::F32, "[heads, total_q]"),
];

/// Every public op.
pub static OPS: &[OpSpec] = &[
    OpSpec {
        name: "bitmask.sparsify",
        rust: "ops::bitmask::sparsify",
        summary: "change bitmask of new vs base and the packed changed values",
        inputs: &[
            t("base", Dtypes::Float, "[n]"),
            t("new", Dtypes::Float, "[n]"),
        ],
        params: &[p(
            "tau",
            ParamType::F32,
            Some("0"),
            "changes with |new - base| <= tau are dropped; 0 compares bit patterns",
        )],
        outputs: &[
            t("mask", Dtypes::U32, "[ceil(n / 32)]"),
            t("values", Dtypes::Float, "[popcount(mask)]").at_most("n elements"),
        ],
        run: runners::bitmask_sparsify,
    },
    OpSpec {
        name: "bitmask.densify",
        rust: "ops::bitmask::densify_parts",
        summary: "the dense tensor from base, change mask and packed values",
        inputs: &[
            t("base", Dtypes::Float, "[n]"),
            t("mask", Dtypes::U32, "[ceil(n / 32)]"),
            t("values", Dtypes::Float, "[popcount(mask)]"),
        ],
        params: &[],
        outputs: &[t("out", Dtypes::Float, "[n]")],
        run: runners::bitmask_densify,
    },
    OpSpec {
        name: "codec.gather",
        rust: "ops::codec::gather",
        summary: "the elements of src whose mask bit is set, in order",
        inputs: &[
            t("src", Dtypes::Bits16Or32, "[n]"),
            t("mask", Dtypes::U32, "[ceil(n / 32)]"),
        ],
        params: &[p(
            "count",
            ParamType::Usize,
            None,
            "number of set mask bits",
        )],
        outputs: &[t("out", Dtypes::Bits16Or32, "[count]")],
        run: runners::codec_gather,
    },
    OpSpec {
        name: "codec.delta_encode",
        rust: "ops::codec::delta_encode",
        summary: "lossless zigzag-delta code of new_vals against base_vals, bit-packed per block",
        inputs: &[
            t("base_vals", Dtypes::Float, "[n]"),
            t("new_vals", Dtypes::Float, "[n]"),
        ],
        params: &[],
        outputs: &[
            t("words", Dtypes::U32, "[packed_words(widths, n)]")
                .at_most("256 * ceil(n / 256) elements"),
            t("widths", Dtypes::U8, "[ceil(n / 256)]"),
        ],
        run: runners::codec_delta_encode,
    },
    OpSpec {
        name: "codec.delta_decode",
        rust: "ops::codec::delta_decode",
        summary: "inverse of codec.delta_encode, bit-exact",
        inputs: &[
            t("base_vals", Dtypes::Float, "[n]"),
            t("packed.words", Dtypes::U32, "[packed_words(widths, n)]"),
            t("packed.widths", Dtypes::U8, "[ceil(n / 256)]"),
        ],
        params: &[],
        outputs: &[t("out", Dtypes::Float, "[n]")],
        run: runners::codec_delta_decode,
    },
    OpSpec {
        name: "codec.delta_f32",
        rust: "ops::codec::delta_f32",
        summary: "new_vals - base_vals in f32",
        inputs: &[
            t("base_vals", Dtypes::Float, "[n]"),
            t("new_vals", Dtypes::Float, "[n]"),
        ],
        params: &[],
        outputs: &[t("out", Dtypes::F32, "[n]")],
        run: runners::codec_delta_f32,
    },
    OpSpec {
        name: "codec.to_f32",
        rust: "ops::codec::to_f32",
        summary: "widen to f32",
        inputs: &[t("values", Dtypes::Float, "[n]")],
        params: &[],
        outputs: &[t("out", Dtypes::F32, "[n]")],
        run: runners::codec_to_f32,
    },
    OpSpec {
        name: "codec.kmeans",
        rust: "ops::codec::kmeans",
        summary: "exact, deterministic 1-D k-means with 2^bits centroids",
        inputs: &[t("values", Dtypes::F32, "[n]")],
        params: &[
            p("bits", ParamType::U32, None, "2, 3, 4 or 8"),
            p("max_iters", ParamType::U32, None, "update limit"),
            p(
                "tol",
                ParamType::F32,
                None,
                "stop when no centroid moves more than tol x range",
            ),
        ],
        outputs: &[
            t("centroids", Dtypes::F32, "[2^bits] (host)"),
            t("indices", Dtypes::U8, "[n]"),
        ],
        run: runners::codec_kmeans,
    },
    OpSpec {
        name: "codec.pack_indices",
        rust: "ops::codec::pack_indices",
        summary: "pack indices at a fixed bit width",
        inputs: &[t("indices", Dtypes::U8, "[n]")],
        params: &[p("bits", ParamType::U32, None, "1..=8")],
        outputs: &[
            t("words", Dtypes::U32, "[packed_words(widths, n)]")
                .at_most("8 * bits * ceil(n / 256) elements"),
            t("widths", Dtypes::U8, "[ceil(n / 256)]"),
        ],
        run: runners::codec_pack_indices,
    },
    OpSpec {
        name: "codec.dequantize",
        rust: "ops::codec::dequantize",
        summary: "round_T(base_vals + centroids[index]) for packed indices",
        inputs: &[
            t("indices.words", Dtypes::U32, "[packed_words(widths, n)]"),
            t("indices.widths", Dtypes::U8, "[ceil(n / 256)]"),
            opt("base_vals", Dtypes::Float, "[n]"),
        ],
        params: &[
            p(
                "indices.count",
                ParamType::Usize,
                None,
                "number of packed indices n",
            ),
            p("centroids", ParamType::F32List, None, "1..=256 centroids"),
        ],
        outputs: &[t("out", Dtypes::Float, "[n]")],
        run: runners::codec_dequantize,
    },
    OpSpec {
        name: "attention.forward",
        rust: "ops::attention::forward",
        summary: "varlen GQA attention (full, causal, duo-causal), fused, tile-skipping",
        inputs: ATTENTION_INPUTS,
        params: ATTENTION_PARAMS,
        outputs: O_LSE,
        run: runners::attention_forward,
    },
    OpSpec {
        name: "attention.decode",
        rust: "ops::attention::decode",
        summary: "flash-decoding: split-KV partials, then the LSE merge",
        inputs: ATTENTION_INPUTS,
        params: ATTENTION_PARAMS_SPLITS,
        outputs: O_LSE,
        run: runners::attention_decode,
    },
    OpSpec {
        name: "attention.decode_partials",
        rust: "ops::attention::decode_partials",
        summary: "flash-decoding partial (O, LSE) per key split",
        inputs: ATTENTION_INPUTS,
        params: ATTENTION_PARAMS_SPLITS,
        outputs: &[
            t("o", Dtypes::F32, "[splits, total_q, heads, head_dim]"),
            t("lse", Dtypes::F32, "[splits, heads, total_q]"),
        ],
        run: runners::attention_decode_partials,
    },
    OpSpec {
        name: "attention.merge",
        rust: "ops::attention::merge",
        summary: "merge partial (O, LSE) over disjoint key sets",
        inputs: &[
            t("o", Dtypes::F32, "[splits, total_q, heads, head_dim]"),
            t("lse", Dtypes::F32, "[splits, heads, total_q]"),
        ],
        params: &[
            p("splits", ParamType::Usize, None, "number of partials"),
            p("total_q", ParamType::Usize, None, "query tokens"),
            p("heads", ParamType::Usize, None, "heads"),
            p("head_dim", ParamType::Usize, None, "head dimension"),
        ],
        outputs: O_LSE,
        run: runners::attention_merge,
    },
    OpSpec {
        name: "tah.select_hard",
        rust: "ops::tah::select_hard",
        summary: "indices of the tokens with sigmoid(score) > threshold, ascending",
        inputs: &[t("scores", Dtypes::F32, "[n]")],
        params: &[p(
            "threshold",
            ParamType::F64,
            None,
            "in (0, 1); the paper uses 0.9",
        )],
        outputs: &[t("indices", Dtypes::U32, "[count]").at_most("n elements")],
        run: runners::tah_select_hard,
    },
    OpSpec {
        name: "tah.gather_rows",
        rust: "ops::tah::gather_rows",
        summary: "out[r, :] = src[idx[r], :] for 4-byte elements",
        inputs: &[
            t("src", Dtypes::Bits32, "[rows, d]"),
            t("idx", Dtypes::U32, "[m]"),
        ],
        params: &[p("d", ParamType::Usize, None, "row width")],
        outputs: &[t("out", Dtypes::Bits32, "[m, d]")],
        run: runners::tah_gather_rows,
    },
    OpSpec {
        name: "tah.scatter_rows",
        rust: "ops::tah::scatter_rows",
        summary: "dst[idx[r], :] = src[r, :] in place, distinct indices",
        inputs: &[
            t("src", Dtypes::Bits32, "[m, d]"),
            t("idx", Dtypes::U32, "[m]"),
            t("dst", Dtypes::Bits32, "[rows, d] (written in place)"),
        ],
        params: &[p("d", ParamType::Usize, None, "row width")],
        outputs: &[t("dst", Dtypes::Bits32, "[rows, d]")],
        run: runners::tah_scatter_rows,
    },
    OpSpec {
        name: "tah.copy_range",
        rust: "ops::tah::copy_range",
        summary: "dst[dst_off..][..n] = src[src_off..][..n] in place",
        inputs: &[
            t("src", Dtypes::Any, "[>= src_off + n]"),
            t("dst", Dtypes::Any, "[>= dst_off + n] (written in place)"),
        ],
        params: &[
            p("src_off", ParamType::Usize, None, "first source element"),
            p(
                "dst_off",
                ParamType::Usize,
                None,
                "first destination element",
            ),
            p("n", ParamType::Usize, None, "elements"),
        ],
        outputs: &[t("dst", Dtypes::Any, "[>= dst_off + n]")],
        run: runners::tah_copy_range,
    },
    OpSpec {
        name: "tah.next_depth_input",
        rust: "ops::tah::next_depth_input",
        summary: "top-k of the cumulative logits, softmax, weighted sum of embedding rows",
        inputs: &[
            t("cum", Dtypes::F32, "[m, vocab]"),
            t("emb", Dtypes::Float, "[vocab, d]"),
        ],
        params: &[
            p("vocab", ParamType::Usize, None, "vocabulary size"),
            p("k", ParamType::Usize, None, "1..=min(256, vocab)"),
            p("d", ParamType::Usize, None, "embedding width"),
        ],
        outputs: &[
            t("out", Dtypes::F32, "[m, d]"),
            t("ids", Dtypes::U32, "[m, k]"),
            t("weights", Dtypes::F32, "[m, k]"),
        ],
        run: runners::tah_next_depth_input,
    },
    OpSpec {
        name: "tah.accumulate_logits",
        rust: "ops::tah::accumulate_logits",
        summary: "cum += logits in place",
        inputs: &[
            t("cum", Dtypes::F32, "[n] (written in place)"),
            t("logits", Dtypes::F32, "[n]"),
        ],
        params: &[],
        outputs: &[t("cum", Dtypes::F32, "[n]")],
        run: runners::tah_accumulate_logits,
    },
    OpSpec {
        name: "moe.align",
        rust: "ops::moe::align",
        summary: "top-k expert ids -> flat indices grouped by expert (flat order within one), \
                  each run padded to a multiple of block_size; the expert of each block",
        inputs: &[t("topk_ids", Dtypes::I32, "[T, k]")],
        params: &[
            p("k", ParamType::Usize, None, "experts per token (>= 1)"),
            p("num_experts", ParamType::Usize, None, "E, 1..=1024"),
            p(
                "block_size",
                ParamType::Usize,
                None,
                "rows per block of the expert GEMM (>= 1)",
            ),
        ],
        outputs: &[
            t(
                "sorted_token_ids",
                Dtypes::I32,
                "[T * k + num_experts * (block_size - 1)]",
            ),
            t(
                "expert_ids",
                Dtypes::I32,
                "[ceil((T * k + num_experts * (block_size - 1)) / block_size)]",
            ),
            t("num_tokens_post_padded", Dtypes::I32, "[1]"),
        ],
        run: runners::moe_align,
    },
    OpSpec {
        name: "moe.route",
        rust: "ops::moe::route",
        summary: "router top-k with PSR masking: at a training step, r*N - N_t of the experts \
                  outside the layer's own N are masked by a seeded generator; top_k of the \
                  softmax over the unmasked logits (ties to the lower id), optionally \
                  renormalised",
        inputs: &[t("logits", Dtypes::F32, "[T, r * N]")],
        params: MOE_ROUTE_PARAMS,
        outputs: &[
            t("topk_ids", Dtypes::I32, "[T, top_k]"),
            t("topk_weights", Dtypes::F32, "[T, top_k]"),
        ],
        run: runners::moe_route,
    },
    OpSpec {
        name: "moe.layer",
        rust: "ops::moe::layer",
        summary: "one ReXMoE layer: router GEMM, route (PSR, top-k), align, permute, grouped \
                  SwiGLU expert GEMMs, combine in slot order (deterministic)",
        inputs: &[
            t("x", Dtypes::Half, "[T, d]"),
            t("w_router", Dtypes::Half, "[r * N, d]"),
            t("w_gate", Dtypes::Half, "[r * N, F, d]"),
            t("w_up", Dtypes::Half, "[r * N, F, d]"),
            t("w_down", Dtypes::Half, "[r * N, d, F]"),
        ],
        params: MOE_ROUTE_PARAMS,
        outputs: &[t("y", Dtypes::Half, "[T, d]")],
        run: runners::moe_layer,
    },
    OpSpec {
        name: "moe.permute",
        rust: "ops::moe::permute",
        summary: "token rows gathered into the aligned expert order (a copy; padding rows \
                  zero), the padded group offsets and each flat entry's row",
        inputs: &[
            t("x", Dtypes::Any, "[T, d]"),
            t(
                "aligned.sorted_token_ids",
                Dtypes::I32,
                "[T * top_k + num_experts * (block_size - 1)]",
            ),
            t(
                "aligned.expert_ids",
                Dtypes::I32,
                "[ceil((T * top_k + num_experts * (block_size - 1)) / block_size)]",
            ),
            t("aligned.num_tokens_post_padded", Dtypes::I32, "[1]"),
        ],
        params: &[
            p("d", ParamType::Usize, None, "row width (>= 1)"),
            p("top_k", ParamType::Usize, None, "experts per token (>= 1)"),
            p("num_experts", ParamType::Usize, None, "E, 1..=1024"),
            p(
                "block_size",
                ParamType::Usize,
                None,
                "the alignment's block size",
            ),
        ],
        outputs: &[
            t(
                "rows",
                Dtypes::Any,
                "[T * top_k + num_experts * (block_size - 1), d]",
            ),
            t("offsets", Dtypes::I32, "[num_experts + 1]"),
            t("positions", Dtypes::I32, "[T * top_k]"),
        ],
        run: runners::moe_permute,
    },
    OpSpec {
        name: "moe.combine",
        rust: "ops::moe::combine",
        summary: "y[t] = sum over the slots in order of w[t, slot] * expert_out[positions[t, \
                  slot]], in f32, no atomics (deterministic); y has expert_out's dtype",
        inputs: &[
            t("expert_out", Dtypes::Float, "[rows, d]"),
            t("positions", Dtypes::I32, "[T, top_k]"),
            t("topk_weights", Dtypes::F32, "[T, top_k]"),
        ],
        params: &[
            p("d", ParamType::Usize, None, "row width (>= 1)"),
            p("top_k", ParamType::Usize, None, "experts per token (>= 1)"),
        ],
        outputs: &[t("y", Dtypes::Float, "[T, d]")],
        run: runners::moe_combine,
    },
    OpSpec {
        name: "moe.load",
        rust: "ops::moe::load",
        summary: "tokens routed to each virtual expert and to the experts of each physical \
                  layer of the group",
        inputs: &[t("topk_ids", Dtypes::I32, "[T, k]")],
        params: &[
            p(
                "num_experts",
                ParamType::Usize,
                None,
                "N, experts per layer",
            ),
            p("r", ParamType::Usize, None, "layers per group"),
        ],
        outputs: &[
            t("per_expert", Dtypes::I32, "[r * num_experts]"),
            t("per_layer", Dtypes::I32, "[r]"),
        ],
        run: runners::moe_load,
    },
    OpSpec {
        name: "c2c.project",
        rust: "ops::c2c::project",
        summary: "one C2C projector (one layer, K or V): out = tgt + g · sigmoid(w_s · h) · \
                  (w_out · h), h = FFN blocks (h + w2 · gelu(w1 · rmsnorm(h))) of w_in · \
                  concat(src, tgt) + b_in; g from gate_logit (hard: 1[gate_logit > 0]); a closed \
                  gate copies tgt and launches nothing",
        inputs: &[
            t("src", Dtypes::Half, "[tokens, hs, ds]"),
            t("tgt", Dtypes::Half, "[tokens, ht, dt]"),
            t("w_in", Dtypes::Half, "[hd, hs * ds + ht * dt]"),
            t("b_in", Dtypes::F32, "[hd]"),
            t("w1", Dtypes::Half, "[blocks, f, hd]"),
            t("w2", Dtypes::Half, "[blocks, hd, f]"),
            t("norm", Dtypes::F32, "[blocks, hd]"),
            t("w_out", Dtypes::Half, "[ht * dt, hd]"),
            t("w_s", Dtypes::Half, "[ht, hd]"),
            t("gate_logit", Dtypes::F32, "[1]"),
        ],
        params: C2C_PARAMS,
        outputs: &[t("out", Dtypes::Half, "[tokens, ht, dt]")],
        run: runners::c2c_project,
    },
    OpSpec {
        name: "c2c.fuse",
        rust: "ops::c2c::fuse_layers",
        summary: "C2C fuse of every target layer t: the key and value projectors of layer t on \
                  the sharer layer layer_map[t] (default last_aligned: clamp(t + S - T, 0, S - \
                  1)), receiver token p with sharer token alignment[p] (default p); layers with a \
                  closed gate launch nothing",
        inputs: &[
            t("src_k", Dtypes::Half, "[S, src_tokens, hs, ds]"),
            t("src_v", Dtypes::Half, "[S, src_tokens, hs, ds]"),
            t("tgt_k", Dtypes::Half, "[T, tokens, ht, dt]"),
            t("tgt_v", Dtypes::Half, "[T, tokens, ht, dt]"),
            t("w_in", Dtypes::Half, "[T, 2, hd, hs * ds + ht * dt]"),
            t("b_in", Dtypes::F32, "[T, 2, hd]"),
            t("w1", Dtypes::Half, "[T, 2, blocks, f, hd]"),
            t("w2", Dtypes::Half, "[T, 2, blocks, hd, f]"),
            t("norm", Dtypes::F32, "[T, 2, blocks, hd]"),
            t("w_out", Dtypes::Half, "[T, 2, ht * dt, hd]"),
            t("w_s", Dtypes::Half, "[T, 2, ht, hd]"),
            t("gate_logit", Dtypes::F32, "[T]"),
            opt("alignment", Dtypes::I32, "[tokens]"),
            opt("layer_map", Dtypes::I32, "[T]"),
        ],
        params: C2C_PARAMS,
        outputs: &[
            t("out_k", Dtypes::Half, "[T, tokens, ht, dt]"),
            t("out_v", Dtypes::Half, "[T, tokens, ht, dt]"),
        ],
        run: runners::c2c_fuse,
    },
    OpSpec {
        name: "featcache.received",
        rust: "ops::featcache::received",
        summary: "attention received per key: Σ_q exp(scale · q·k − lse[h, q]) over the queries \
                  that see key k under attention.forward's mask (same problem, V not read), from \
                  the row LSE attention.forward returns; summed over heads in head order, or per \
                  head; f32, deterministic",
        inputs: RECEIVED_INPUTS,
        params: RECEIVED_PARAMS,
        outputs: &[t(
            "received",
            Dtypes::F32,
            "[(per_head * (heads - 1) + 1) * total_kv] ([heads, total_kv] head-major when per_head \
             = 1)",
        )],
        run: runners::featcache_received,
    },
    OpSpec {
        name: "featcache.select",
        rust: "ops::featcache::select",
        summary: "SpecDiff's three token classes: score = his · fut · exp(cf) in f64, ordered by \
                  (score descending, index ascending); class 1 (recompute) for the first n - \
                  floor(cr · n), class 2 (reuse the last feature) for the longest run at the end \
                  whose score sum is <= low_mass · total, class 3 for the rest; c1 lists the \
                  class-1 tokens in order; bit-exact",
        inputs: &[
            t("his", Dtypes::F32, "[n]"),
            t("fut", Dtypes::F32, "[n]"),
            t("cf", Dtypes::U32, "[n]"),
        ],
        params: &[
            p("cr", ParamType::F64, None, "cache ratio, in [0, 1]"),
            p(
                "low_mass",
                ParamType::F64,
                Some("0.1"),
                "class 2's share of the total score, in [0, 1]",
            ),
        ],
        outputs: &[
            t("class", Dtypes::U8, "[n]"),
            t("c1", Dtypes::U32, "[n - floor(cr * n)]"),
        ],
        run: runners::featcache_select,
    },
    OpSpec {
        name: "featcache.gather",
        rust: "ops::featcache::gather",
        summary: "rows[j, :] = x[c1[j], :]: the recomputed tokens' features, packed (repeated \
                  indices allowed); bit-exact",
        inputs: &[
            t("x", Dtypes::F32, "[n, width]"),
            t("c1", Dtypes::U32, "[m]"),
        ],
        params: &[p("width", ParamType::Usize, None, "row width (>= 1)")],
        outputs: &[t("rows", Dtypes::F32, "[m, width]")],
        run: runners::featcache_gather,
    },
    OpSpec {
        name: "featcache.scatter",
        rust: "ops::featcache::scatter",
        summary: "x[c1[j], :] = rows[j, :], and rows[j] pushed into token c1[j]'s feature ring \
                  as its newest feature with stamp t_now (head advances, len saturates at 3, the \
                  oldest is overwritten); distinct indices; bit-exact",
        inputs: &[
            t("rows", Dtypes::F32, "[m, width]"),
            t("c1", Dtypes::U32, "[m]"),
            t("x", Dtypes::F32, "[n, width] (written in place)"),
            t("ring.feat", Dtypes::F32, "[3, n, width] (written in place)"),
            t("ring.stamp", Dtypes::F32, "[3, n] (written in place)"),
            t("ring.head", Dtypes::U8, "[n] (written in place)"),
            t("ring.len", Dtypes::U8, "[n] (written in place)"),
        ],
        params: &[p(
            "t_now",
            ParamType::F32,
            None,
            "the timestep of the rows (finite)",
        )],
        outputs: &[
            t("x", Dtypes::F32, "[n, width]"),
            t("ring.feat", Dtypes::F32, "[3, n, width]"),
            t("ring.stamp", Dtypes::F32, "[3, n]"),
            t("ring.head", Dtypes::U8, "[n]"),
            t("ring.len", Dtypes::U8, "[n]"),
        ],
        run: runners::featcache_scatter,
    },
    OpSpec {
        name: "featcache.reuse",
        rust: "ops::featcache::reuse",
        summary: "per token: class 1 untouched; class 2: x[i] = the newest cached feature; class \
                  3: x[i] = sum of w_k · feature_k over the (up to 3) cached ones, w_k ∝ \
                  e^(-k)·(stamp_k - t_now) (all gaps 0: the newest), f64, rounded once; \
                  bit-exact",
        inputs: &[
            t("class", Dtypes::U8, "[n]"),
            t("ring.feat", Dtypes::F32, "[3, n, width]"),
            t("ring.stamp", Dtypes::F32, "[3, n]"),
            t("ring.head", Dtypes::U8, "[n]"),
            t("ring.len", Dtypes::U8, "[n]"),
            t("x", Dtypes::F32, "[n, width] (written in place)"),
        ],
        params: &[p(
            "t_now",
            ParamType::F32,
            None,
            "the current timestep (<= every stamp used)",
        )],
        outputs: &[t("x", Dtypes::F32, "[n, width]")],
        run: runners::featcache_reuse,
    },
    OpSpec {
        name: "featcache.age",
        rust: "ops::featcache::age",
        summary: "cf[i] = 0 where class[i] == 1, else cf[i] + 1 saturating at 255 (the select \
                  op's exp table bound)",
        inputs: &[
            t("class", Dtypes::U8, "[n]"),
            t("cf", Dtypes::U32, "[n] (written in place)"),
        ],
        params: &[],
        outputs: &[t("cf", Dtypes::U32, "[n]")],
        run: runners::featcache_age,
    },
    OpSpec {
        name: "gs.project",
        rust: "ops::gs::project::project",
        summary: "3DGS EWA projection (gsplat's conventions, f32): means2d = (fx·x/z + cx, fy·y/z \
                  + cy), view depth z, conic = inverse of J W Σ Wᵀ Jᵀ + 0.3·I, radius = ceil(3·√λ_max); \
                  a Gaussian culled (behind near, past far, det <= 0, off the image) has radius 0 \
                  and zeros; non-finite inputs, zero quaternions and negative scales are errors \
                  naming the first bad Gaussian",
        inputs: &[
            t("means", Dtypes::F32, "[N, 3]"),
            t("quats", Dtypes::F32, "[N, 4]"),
            t("scales", Dtypes::F32, "[N, 3]"),
            t("viewmat", Dtypes::F32, "[4, 4]"),
            t("K", Dtypes::F32, "[3, 3]"),
        ],
        params: GS_CAMERA_PARAMS,
        outputs: &[
            t("means2d", Dtypes::F32, "[N, 2]"),
            t("depths", Dtypes::F32, "[N]"),
            t("conics", Dtypes::F32, "[N, 3]"),
            t("radii", Dtypes::I32, "[N]"),
        ],
        run: runners::gs_project,
    },
    OpSpec {
        name: "gs.bin",
        rust: "ops::gs::bin::bin",
        summary: "3DGS tile binning: every Gaussian with radius > 0 touches the 16×16 tiles its \
                  [mean2d ± radius] box overlaps; the (tile << 32 | depth bits) keys stably sorted \
                  by our device radix sort (the keys themselves are u64, not a table dtype, and \
                  not returned), the Gaussian id of each and per-tile [start, end) ranges; \
                  bit-exact",
        inputs: &[
            t("means2d", Dtypes::F32, "[N, 2]"),
            t("depths", Dtypes::F32, "[N]"),
            t("radii", Dtypes::I32, "[N]"),
        ],
        params: &[GS_CAMERA_PARAMS[0], GS_CAMERA_PARAMS[1]],
        outputs: &[
            t("ids", Dtypes::U32, "[intersections(means2d, radii)]")
                .at_most("N * ceil(width / 16) * ceil(height / 16) elements"),
            t(
                "tile_ranges",
                Dtypes::U32,
                "[ceil(height / 16) * ceil(width / 16), 2]",
            ),
        ],
        run: runners::gs_bin,
    },
    OpSpec {
        name: "gs.render",
        rust: "ops::gs::pipeline::rasterize",
        summary: "3DGS rasterisation as gsplat's rasterization() for one camera: project, SH \
                  colours (coeffs), bin, then front-to-back alpha blending per pixel (α = \
                  min(0.99, o·exp(power)), skipped below 1/255, stop before T < 1e-4), image = Σ \
                  c·α·T + T_final·background, alpha = 1 - T_final; layout balanced stages the \
                  attributes per tile (BalanceGS), with outputs identical to baseline",
        inputs: GS_RENDER_INPUTS,
        params: GS_RENDER_PARAMS,
        outputs: &[
            t("image", Dtypes::F32, "[height, width, 3]"),
            t("alpha", Dtypes::F32, "[height, width]"),
        ],
        run: runners::gs_render,
    },
    OpSpec {
        name: "gs.render_backward",
        rust: "ops::gs::pipeline::rasterize_backward",
        summary: "the gradients of gs.render: runs the forward again, then the render backward \
                  (back to front, per-Gaussian atomics: the last bits vary between GPU runs), \
                  the projection backward and, for coeffs, the SH backward (its mean gradient \
                  added to v_means); v_colors is the gradient of the RGB colours rendered (the \
                  SH colours for coeffs); v_coeffs is empty ([0]) for RGB colors",
        inputs: GS_RENDER_BACKWARD_INPUTS,
        params: GS_RENDER_PARAMS,
        outputs: &[
            t("v_means", Dtypes::F32, "[N, 3]"),
            t("v_quats", Dtypes::F32, "[N, 4]"),
            t("v_scales", Dtypes::F32, "[N, 3]"),
            t("v_opacities", Dtypes::F32, "[N]"),
            t("v_colors", Dtypes::F32, "[N, 3]"),
            t("v_coeffs", Dtypes::F32, "[N, num_coeffs, 3]"),
        ],
        run: runners::gs_render_backward,
    },
    OpSpec {
        name: "gmscore.forward",
        rust: "ops::gmscore::forward",
        summary: "DD2's conditional score, streamed over the codebook (online log-sum-exp, the \
                  [P, V] weights never materialised): per position, logit_v = ln p_v - |x_t - \
                  alpha e_v|^2 / (2 sigma^2), lse = logsumexp_v logit_v, score = (sum_v w_v alpha \
                  e_v - x_t) / sigma^2 with w_v = exp(logit_v - lse); rows of p finite, >= 0, \
                  summing to 1 within 1e-3; sigma in [1e-6, 1e6]; f32, deterministic",
        inputs: GMSCORE_INPUTS,
        params: GMSCORE_PARAMS,
        outputs: &[
            t("score", Dtypes::F32, "[P, d]"),
            t("lse", Dtypes::F32, "[P]"),
        ],
        run: runners::gmscore_forward,
    },
    OpSpec {
        name: "gmscore.backward",
        rust: "ops::gmscore::backward",
        summary: "gradients of L = sum over positions of |s_gen - score|^2 (score and lse: \
                  gmscore.forward's for the same inputs): grad_s_gen = 2u, grad_x_t = 2u / \
                  sigma^2 - (2 alpha^2 / sigma^4) Cov_w(e) u with u = s_gen - score, the \
                  covariance from a second stream over the codebook with the saved lse; f32, \
                  deterministic",
        inputs: &[
            t("codebook", Dtypes::F32, "[V, d]"),
            t("p", Dtypes::F32, "[P, V]"),
            t("x_t", Dtypes::F32, "[P, d]"),
            t("alpha", Dtypes::F32, "[P]"),
            t("sigma", Dtypes::F32, "[P]"),
            t("s_gen", Dtypes::F32, "[P, d]"),
            t("score", Dtypes::F32, "[P, d]"),
            t("lse", Dtypes::F32, "[P]"),
        ],
        params: GMSCORE_PARAMS,
        outputs: &[
            t("grad_s_gen", Dtypes::F32, "[P, d]"),
            t("grad_x_t", Dtypes::F32, "[P, d]"),
        ],
        run: runners::gmscore_backward,
    },
    OpSpec {
        name: "gemm.dense",
        rust: "ops::gemm::dense",
        summary: "d = epilogue(a · bᵀ) on tensor cores, f32 accumulation; epilogue: + bias[n], \
                  activation, × row_scale[m], + residual[m, n], in that order",
        inputs: &[
            t("a", Dtypes::Half, "[m, k]"),
            t("b", Dtypes::Half, "[n, k]"),
            opt("epi.bias", Dtypes::F32, "[n]"),
            opt("epi.row_scale", Dtypes::F32, "[m]"),
            opt("epi.residual", Dtypes::F32, "[m, n]"),
        ],
        params: GEMM_PARAMS,
        outputs: &[t("d", Dtypes::F32, "[m, n]")],
        run: runners::gemm_dense,
    },
    OpSpec {
        name: "gemm.dense_swiglu",
        rust: "ops::gemm::dense",
        summary: "d = silu(a · gateᵀ + bias[n]) · (a · upᵀ + bias[n + N]) with b = [gate; up] \
                  ([2n, k]), then × row_scale[m], + residual[m, n]",
        inputs: &[
            t("a", Dtypes::Half, "[m, k]"),
            t("b", Dtypes::Half, "[2 * n, k]"),
            opt("epi.bias", Dtypes::F32, "[2 * n]"),
            opt("epi.row_scale", Dtypes::F32, "[m]"),
            opt("epi.residual", Dtypes::F32, "[m, n]"),
        ],
        params: &[GEMM_PARAMS[0], GEMM_PARAMS[1], GEMM_PARAMS[2]],
        outputs: &[t("d", Dtypes::F32, "[m, n]")],
        run: runners::gemm_dense_swiglu,
    },
    OpSpec {
        name: "gemm.grouped",
        rust: "ops::gemm::grouped",
        summary: "grouped GEMM over row segments: rows offsets[g]..offsets[g + 1] of d = \
                  epilogue(a · b[g]ᵀ); rows outside every group are 0; offsets checked on the \
                  device",
        inputs: &[
            t("a", Dtypes::Half, "[m, k]"),
            t("b", Dtypes::Half, "[groups, n, k]"),
            t("offsets", Dtypes::I32, "[groups + 1]"),
            opt("epi.bias", Dtypes::F32, "[n]"),
            opt("epi.row_scale", Dtypes::F32, "[m]"),
            opt("epi.residual", Dtypes::F32, "[m, n]"),
        ],
        params: GEMM_PARAMS,
        outputs: &[t("d", Dtypes::F32, "[m, n]")],
        run: runners::gemm_grouped,
    },
    OpSpec {
        name: "gemm.grouped_swiglu",
        rust: "ops::gemm::grouped_swiglu",
        summary: "grouped SwiGLU: rows offsets[g]..offsets[g + 1] of d = silu(a · gate[g]ᵀ) · \
                  (a · up[g]ᵀ); rows outside every group are 0",
        inputs: &[
            t("a", Dtypes::Half, "[m, k]"),
            t("gate", Dtypes::Half, "[groups, f, k]"),
            t("up", Dtypes::Half, "[groups, f, k]"),
            t("offsets", Dtypes::I32, "[groups + 1]"),
        ],
        params: &[
            GEMM_PARAMS[0],
            p(
                "f",
                ParamType::Usize,
                None,
                "output columns F (rows of each gate / up)",
            ),
            GEMM_PARAMS[2],
        ],
        outputs: &[t("d", Dtypes::F32, "[m, f]")],
        run: runners::gemm_grouped_swiglu,
    },
];

/// The camera parameters of the `gs.*` ops: the scalar fields of `ops::gs::project::Camera`
/// (its `viewmat` and `k` are the input tensors `viewmat` and `K`, gsplat's spelling).
const GS_CAMERA_PARAMS: &[ParamSpec] = &[
    p(
        "width",
        ParamType::U32,
        None,
        "image width in pixels (>= 1)",
    ),
    p(
        "height",
        ParamType::U32,
        None,
        "image height in pixels (>= 1)",
    ),
    p(
        "near",
        ParamType::F32,
        Some("0.01"),
        "near plane: Gaussians with view depth z < near are culled (> 0)",
    ),
    p(
        "far",
        ParamType::F32,
        Some("1e10"),
        "far plane: Gaussians with z > far are culled (> near; inf allowed)",
    ),
];

/// `gs.render`'s inputs (gsplat's `rasterization()` names; exactly one of `colors`, `coeffs`).
const GS_RENDER_INPUTS: &[TensorSpec] = &[
    t("means", Dtypes::F32, "[N, 3]"),
    t("quats", Dtypes::F32, "[N, 4]"),
    t("scales", Dtypes::F32, "[N, 3]"),
    t("opacities", Dtypes::F32, "[N]"),
    opt("colors", Dtypes::F32, "[N, 3]"),
    opt("coeffs", Dtypes::F32, "[N, num_coeffs, 3]"),
    t("viewmat", Dtypes::F32, "[4, 4]"),
    t("K", Dtypes::F32, "[3, 3]"),
    opt("background", Dtypes::F32, "[3]"),
];

/// `gs.render_backward`'s inputs: `gs.render`'s and the output gradients.
const GS_RENDER_BACKWARD_INPUTS: &[TensorSpec] = &[
    GS_RENDER_INPUTS[0],
    GS_RENDER_INPUTS[1],
    GS_RENDER_INPUTS[2],
    GS_RENDER_INPUTS[3],
    GS_RENDER_INPUTS[4],
    GS_RENDER_INPUTS[5],
    GS_RENDER_INPUTS[6],
    GS_RENDER_INPUTS[7],
    GS_RENDER_INPUTS[8],
    t("v_image", Dtypes::F32, "[height, width, 3]"),
    opt("v_alpha", Dtypes::F32, "[height, width]"),
];

/// `gs.render` and `gs.render_backward`'s parameters.
const GS_RENDER_PARAMS: &[ParamSpec] = &[
    GS_CAMERA_PARAMS[0],
    GS_CAMERA_PARAMS[1],
    GS_CAMERA_PARAMS[2],
    GS_CAMERA_PARAMS[3],
    p(
        "sh_degree",
        ParamType::I32,
        Some("-1"),
        "SH degree evaluated from coeffs (0..=3, num_coeffs >= (sh_degree + 1)^2); -1: the \
         highest that num_coeffs holds; must be -1 with colors (RGB)",
    ),
    p(
        "layout",
        ParamType::Enum(&["baseline", "balanced"]),
        Some("baseline"),
        "baseline: attributes read by id in sorted order; balanced: BalanceGS's per-tile \
         reordered arrays staged in shared memory (identical outputs)",
    ),
];

/// `gemm.dense` and `gemm.grouped`'s parameters.
const GEMM_PARAMS: &[ParamSpec] = &[
    p("m", ParamType::Usize, None, "rows M of a and d"),
    p("n", ParamType::Usize, None, "output columns N"),
    p("k", ParamType::Usize, None, "reduction length K"),
    p(
        "epi.activation",
        ParamType::Enum(&["none", "gelu_tanh", "gelu_erf", "silu"]),
        Some("none"),
        "activation after the bias",
    ),
];

/// The gate and GELU parameters of `c2c.project` and `c2c.fuse`.
const C2C_PARAMS: &[ParamSpec] = &[
    p(
        "gate",
        ParamType::Enum(&["hard", "soft"]),
        Some("hard"),
        "hard: 1[gate_logit > 0] (inference); soft: sigmoid(gate_logit / tau)",
    ),
    p(
        "tau",
        ParamType::F32,
        Some("1"),
        "soft gate temperature (> 0)",
    ),
    p(
        "gelu",
        ParamType::Enum(&["gelu_erf", "gelu_tanh"]),
        Some("gelu_erf"),
        "GELU form of the FFN blocks",
    ),
];

/// A boolean parameter.
const BOOL: ParamType = ParamType::Enum(&["true", "false"]);

/// The "absent" value of `moe.route`'s `step` and `layer` (i64::MAX: the largest a table
/// integer holds).
pub const NO_STEP: &str = "9223372036854775807";

/// The routing parameters of `moe.route` and `moe.layer`.
const MOE_ROUTE_PARAMS: &[ParamSpec] = &[
    p(
        "r",
        ParamType::Usize,
        None,
        "layers per group (1: a conventional MoE)",
    ),
    p(
        "layer_in_group",
        ParamType::Usize,
        None,
        "this layer's index j in its group (own experts j*N .. j*N + N)",
    ),
    p(
        "top_k",
        ParamType::Usize,
        None,
        "experts per token (<= the pool)",
    ),
    p(
        "renormalize",
        BOOL,
        None,
        "divide the top_k weights by their sum",
    ),
    p(
        "step",
        ParamType::Usize,
        Some(NO_STEP),
        "training step t; the default 9223372036854775807 means inference (no mask)",
    ),
    p(
        "t_s",
        ParamType::Usize,
        Some("0"),
        "PSR: the step the pool starts to grow",
    ),
    p(
        "t_e",
        ParamType::Usize,
        Some("0"),
        "PSR: the step the pool is all r*N",
    ),
    p(
        "seed",
        ParamType::Usize,
        Some("0"),
        "PSR: the generator's seed",
    ),
    p(
        "layer",
        ParamType::Usize,
        Some(NO_STEP),
        "global layer index keying the generator; the default 9223372036854775807 \
             means layer_in_group",
    ),
];

const ATTENTION_PARAMS_SPLITS: &[ParamSpec] = &[
    ATTENTION_PARAMS[0],
    ATTENTION_PARAMS[1],
    ATTENTION_PARAMS[2],
    ATTENTION_PARAMS[3],
    ATTENTION_PARAMS[4],
    ATTENTION_PARAMS[5],
    ATTENTION_PARAMS[6],
    ATTENTION_PARAMS[7],
    p("splits", ParamType::Usize, None, "key splits per sequence"),
];

/// `gmscore.forward`'s inputs (the first five of `gmscore.backward`'s).
const GMSCORE_INPUTS: &[TensorSpec] = &[
    t("codebook", Dtypes::F32, "[V, d]"),
    t("p", Dtypes::F32, "[P, V]"),
    t("x_t", Dtypes::F32, "[P, d]"),
    t("alpha", Dtypes::F32, "[P]"),
    t("sigma", Dtypes::F32, "[P]"),
];

/// The gmscore ops' parameter.
const GMSCORE_PARAMS: &[ParamSpec] = &[p("d", ParamType::Usize, None, "codeword width, 8..=64")];

/// `featcache.received`: the attention problem's tensors (V is part of the problem but not
/// read: optional here, K stands in when it is absent) and the row LSE.
const RECEIVED_INPUTS: &[TensorSpec] = &[
    ATTENTION_INPUTS[0],
    ATTENTION_INPUTS[1],
    opt(
        "v",
        Dtypes::Half,
        "[total_kv, kv_heads, head_dim] (not read)",
    ),
    ATTENTION_INPUTS[3],
    ATTENTION_INPUTS[4],
    ATTENTION_INPUTS[5],
    ATTENTION_INPUTS[6],
    ATTENTION_INPUTS[7],
    ATTENTION_INPUTS[8],
    ATTENTION_INPUTS[9],
    t("lse", Dtypes::F32, "[heads, total_q]"),
];

/// `featcache.received`: the attention problem's parameters (one kernel path: no `path`) and
/// `per_head`.
const RECEIVED_PARAMS: &[ParamSpec] = &[
    ATTENTION_PARAMS[0],
    ATTENTION_PARAMS[1],
    ATTENTION_PARAMS[2],
    ATTENTION_PARAMS[3],
    ATTENTION_PARAMS[4],
    ATTENTION_PARAMS[5],
    ATTENTION_PARAMS[6],
    p(
        "per_head",
        ParamType::U32,
        Some("0"),
        "1: keep the per-head sums [heads, total_kv]; 0: sum over the heads [total_kv]",
    ),
];

/// The op named `name`.
pub fn find(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|o| o.name == name)
}

/// The op reference (docs/ops.md).
pub fn markdown() -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "# Op reference\n\nGenerated from the op table (`src/ops/table.rs`) by \
         `tessera run --list --markdown`; do not edit by hand. Names are the Rust names.\n",
    );
    for op in OPS {
        let _ = write!(
            s,
            "\n## `{}`\n\n{}. Rust: `tessera::{}`.\n\n",
            op.name, op.summary, op.rust
        );
        let tensors = |s: &mut String, title: &str, ts: &[TensorSpec]| {
            if ts.is_empty() {
                return;
            }
            let _ = writeln!(s, "| {title} | dtypes | shape |\n|---|---|---|");
            for x in ts {
                let _ = writeln!(
                    s,
                    "| `{}`{} | {} | `{}` |",
                    x.name,
                    if x.optional { " (optional)" } else { "" },
                    x.dtypes.names().join(", "),
                    x.shape
                );
            }
            s.push('\n');
        };
        tensors(&mut s, "input", op.inputs);
        if !op.params.is_empty() {
            let _ = writeln!(
                s,
                "| parameter | type | default | meaning |\n|---|---|---|---|"
            );
            for x in op.params {
                let ty = match x.ty {
                    ParamType::Enum(words) => words.join(" \\| "),
                    other => format!("{other:?}").to_lowercase(),
                };
                let _ = writeln!(
                    s,
                    "| `{}` | {ty} | {} | {} |",
                    x.name,
                    x.default.unwrap_or("required"),
                    x.doc
                );
            }
            s.push('\n');
        }
        tensors(&mut s, "output", op.outputs);
    }
    s
}

/// Compile-time checks that the table's names are the Rust names of struct-based ops: each
/// pattern lists every field, so adding or renaming one fails to compile until the table and
/// this list agree.
#[allow(dead_code)]
fn field_checks() {
    use crate::ops::attention::{Attention, AttentionOut, Positions};
    fn attention<T: crate::ops::attention::HalfFloat>(a: &Attention<T>, out: &AttentionOut) {
        // Inputs: q, k, v, cu_seqlens_q, cu_seqlens_kv, q_pos and kv_pos (tensors when
        // `Positions::Explicit`), q_depth, kv_depth, kv_valid; parameters: the rest.
        let Attention {
            q: _,
            k: _,
            v: _,
            heads: _,
            kv_heads: _,
            head_dim: _,
            cu_seqlens_q: _,
            cu_seqlens_kv: _,
            max_seqlen_q: _,
            max_seqlen_kv: _,
            q_pos,
            kv_pos: _,
            q_depth: _,
            kv_depth: _,
            kv_valid: _,
            scale: _,
            mode: _,
            path: _,
        } = a;
        let (Positions::Implicit { offset: _ } | Positions::Explicit(_)) = q_pos;
        // `check`: the deferred validation of cu_seqlens (a status, not a tensor).
        let AttentionOut {
            o: _,
            lse: _,
            check: _,
        } = out;
    }
    fn bitmask<T: crate::dtype::Float>(s: &crate::ops::bitmask::Sparse<T>) {
        let crate::ops::bitmask::Sparse {
            mask: _,
            values: _,
            len: _,
        } = s;
    }
    fn tah(s: &crate::ops::tah::Selection, n: &crate::ops::tah::NextInput) {
        let crate::ops::tah::Selection {
            indices: _,
            count: _,
        } = s;
        let crate::ops::tah::NextInput {
            out: _,
            ids: _,
            weights: _,
        } = n;
    }
    fn moe(
        a: &crate::ops::moe::Aligned,
        p: &crate::ops::moe::RouteParams,
        r: &crate::ops::moe::Routed,
        m: &crate::ops::moe::Permuted<f32>,
        l: &crate::ops::moe::Load,
        w: &crate::ops::moe::LayerWeights<half::bf16>,
    ) {
        // moe.layer's weight tensors.
        let crate::ops::moe::LayerWeights {
            w_router: _,
            w_gate: _,
            w_up: _,
            w_down: _,
        } = w;
        let crate::ops::moe::Aligned {
            sorted_token_ids: _,
            expert_ids: _,
            num_tokens_post_padded: _,
        } = a;
        // moe.route's parameters: p's fields and (psr) Psr's fields; `tokens` is T of logits.
        let crate::ops::moe::RouteParams {
            r: _,
            layer_in_group: _,
            layer: _,
            top_k: _,
            renormalize: _,
            psr,
        } = p;
        if let Some(crate::ops::moe::Psr {
            step: _,
            t_s: _,
            t_e: _,
            seed: _,
        }) = psr
        {}
        let crate::ops::moe::Routed {
            topk_ids: _,
            topk_weights: _,
        } = r;
        let crate::ops::moe::Permuted {
            rows: _,
            offsets: _,
            positions: _,
        } = m;
        let crate::ops::moe::Load {
            per_expert: _,
            per_layer: _,
        } = l;
    }
    fn c2c<T: crate::ops::c2c::HalfFloat>(
        o: &crate::ops::c2c::Options,
        w: &crate::ops::c2c::Stacked<T>,
    ) {
        // c2c.project / c2c.fuse parameters: gate (Hard | Soft { tau }) and gelu. The
        // Projector's fields (the c2c.project weights) are checked in ops::c2c (private).
        let crate::ops::c2c::Options { gate, gelu: _ } = o;
        let (crate::ops::c2c::Gate::Hard | crate::ops::c2c::Gate::Soft { tau: _ }) = gate;
        let crate::ops::c2c::Stacked {
            w_in: _,
            b_in: _,
            w1: _,
            w2: _,
            norm: _,
            w_out: _,
            w_s: _,
            gate_logit: _,
        } = w;
    }
    fn gs(
        cam: &crate::ops::gs::project::Camera,
        colors: &crate::ops::gs::pipeline::Colors<'_>,
        p: &crate::ops::gs::project::Projected,
        b: &crate::ops::gs::bin::Bins,
        r: &crate::ops::gs::render::Rendered,
        g: &crate::ops::gs::pipeline::RasterGrads,
    ) {
        use crate::ops::gs::pipeline::Colors;
        // A `cam` argument: the inputs viewmat and K (field k, gsplat's spelling) and the
        // parameters width, height, near, far.
        let crate::ops::gs::project::Camera {
            viewmat: _,
            k: _,
            width: _,
            height: _,
            near: _,
            far: _,
        } = cam;
        // A `colors` argument: the input colors (Rgb), or the input coeffs and the parameter
        // sh_degree (Sh).
        let (Colors::Rgb(_)
        | Colors::Sh {
            coeffs: _,
            sh_degree: _,
        }) = colors;
        let crate::ops::gs::project::Projected {
            means2d: _,
            depths: _,
            conics: _,
            radii: _,
        } = p;
        // gs.bin's outputs: ids and tile_ranges (keys are u64, not a table dtype; tiles_x and
        // tiles_y follow from width and height).
        let crate::ops::gs::bin::Bins {
            keys: _,
            ids: _,
            tile_ranges: _,
            tiles_x: _,
            tiles_y: _,
        } = b;
        // gs.render's outputs: image and alpha (n_contrib and final_t are not returned).
        let crate::ops::gs::render::Rendered {
            image: _,
            alpha: _,
            n_contrib: _,
            final_t: _,
        } = r;
        let crate::ops::gs::pipeline::RasterGrads {
            v_means: _,
            v_quats: _,
            v_scales: _,
            v_opacities: _,
            v_colors: _,
            v_coeffs: _,
        } = g;
    }
    fn codec(p: &crate::ops::codec::Packed, k: &crate::ops::codec::KMeans) {
        let crate::ops::codec::Packed {
            words: _,
            widths: _,
            count: _,
        } = p;
        let crate::ops::codec::KMeans {
            centroids: _,
            indices: _,
            iterations: _,
        } = k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The argument names of `pub fn <name>(` in `src`.
    fn fn_args(src: &str, name: &str) -> Vec<String> {
        let start = src
            .find(&format!("pub fn {name}<"))
            .or_else(|| src.find(&format!("pub fn {name}(")))
            .unwrap_or_else(|| panic!("no pub fn {name}"));
        let open = start + src[start..].find('(').unwrap();
        let close = open + src[open..].find(") ->").unwrap();
        src[open + 1..close]
            .split(',')
            .filter_map(|a| a.split(':').next())
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect()
    }

    #[test]
    fn names_match_the_rust_signatures() {
        let sources = [
            ("ops::bitmask::", include_str!("bitmask.rs")),
            ("ops::codec::", include_str!("codec.rs")),
            ("ops::attention::", include_str!("attention.rs")),
            ("ops::tah::", include_str!("tah.rs")),
            (
                "ops::moe::",
                concat!(include_str!("moe.rs"), include_str!("moe/layer.rs")),
            ),
            ("ops::gemm::", include_str!("gemm.rs")),
            ("ops::c2c::", include_str!("c2c.rs")),
            ("ops::gmscore::", include_str!("gmscore.rs")),
            (
                "ops::featcache::",
                concat!(
                    include_str!("featcache.rs"),
                    include_str!("featcache/ring.rs")
                ),
            ),
            ("ops::gs::project::", include_str!("gs/project.rs")),
            ("ops::gs::bin::", include_str!("gs/bin.rs")),
            ("ops::gs::pipeline::", include_str!("gs/pipeline.rs")),
        ];
        for op in OPS {
            let (prefix, src) = sources
                .iter()
                .find(|(p, _)| op.rust.starts_with(p))
                .unwrap_or_else(|| panic!("{}: no source for {}", op.name, op.rust));
            let args = fn_args(src, &op.rust[prefix.len()..]);
            if args == ["logits", "tokens", "p"] {
                // moe.route: `p` is a RouteParams (its fields and Psr's are the parameters,
                // checked by `field_checks`), `tokens` is T of the logits' shape.
                assert_eq!(op.name, "moe.route");
                assert_eq!(op.inputs.len(), 1);
                assert_eq!(op.inputs[0].name, "logits");
                continue;
            }
            if args == ["x", "d", "w", "p"] {
                // moe.layer: `w` is a LayerWeights (its fields are the weight tensors) and `p`
                // a RouteParams (the parameters), both checked by `field_checks`; `d` is the
                // width of x's shape.
                assert_eq!(op.name, "moe.layer");
                let names: Vec<&str> = op.inputs.iter().map(|t| t.name).collect();
                assert_eq!(names, ["x", "w_router", "w_gate", "w_up", "w_down"]);
                assert!(op
                    .params
                    .iter()
                    .map(|p| p.name)
                    .eq(MOE_ROUTE_PARAMS.iter().map(|p| p.name)));
                continue;
            }
            if args == ["p", "src", "tgt", "tokens", "opts"] {
                // c2c.project: `p` is a Projector (the weight tensors and gate_logit, checked by
                // `field_checks`), `opts` the Options (gate, tau, gelu); `tokens` is the first
                // dimension of src.
                assert_eq!(op.name, "c2c.project");
                let names: Vec<&str> = op.inputs.iter().map(|t| t.name).collect();
                assert_eq!(
                    names,
                    [
                        "src",
                        "tgt",
                        "w_in",
                        "b_in",
                        "w1",
                        "w2",
                        "norm",
                        "w_out",
                        "w_s",
                        "gate_logit"
                    ]
                );
                assert!(op.params.iter().map(|p| p.name).eq(["gate", "tau", "gelu"]));
                continue;
            }
            if args
                == [
                    "src_k",
                    "src_v",
                    "tgt_k",
                    "tgt_v",
                    "w",
                    "alignment",
                    "layer_map",
                    "sizes",
                    "opts",
                ]
            {
                // c2c.fuse: `w` is a Stacked (the weight tensors and gate_logit), `sizes` comes
                // from the shapes, `opts` the Options (gate, tau, gelu); checked by
                // `field_checks`.
                assert_eq!(op.name, "c2c.fuse");
                let names: Vec<&str> = op.inputs.iter().map(|t| t.name).collect();
                assert_eq!(
                    names,
                    [
                        "src_k",
                        "src_v",
                        "tgt_k",
                        "tgt_v",
                        "w_in",
                        "b_in",
                        "w1",
                        "w2",
                        "norm",
                        "w_out",
                        "w_s",
                        "gate_logit",
                        "alignment",
                        "layer_map"
                    ]
                );
                assert!(op.params.iter().map(|p| p.name).eq(["gate", "tau", "gelu"]));
                continue;
            }
            if args == ["a", "lse", "per_head"] {
                // featcache.received: `a` is an Attention (checked by `field_checks`), then the
                // LSE input and the per_head parameter.
                assert_eq!(op.name, "featcache.received");
                assert!(op.inputs.iter().any(|t| t.name == "lse"));
                assert!(op.params.iter().any(|p| p.name == "per_head"));
                assert!(op.params.iter().any(|p| p.name == "mode"));
                continue;
            }
            if args == ["a"] || args == ["a", "splits"] {
                // Struct-based: checked by `field_checks`; only the extra arguments here.
                assert!(op.params.iter().any(|p| p.name == "mode"), "{}", op.name);
                if args.len() == 2 {
                    assert!(op.params.iter().any(|p| p.name == "splits"), "{}", op.name);
                }
                continue;
            }
            // `packed.words`: field `words` of the argument `packed` (a Rust struct). The gs
            // ops take gsplat's names: a `cam` argument (a Camera) is the inputs viewmat and K
            // and the parameters width, height, near, far; a `colors` argument (Colors) is the
            // inputs colors or coeffs and the parameter sh_degree (both checked by
            // `field_checks`).
            let gs_alias = |n: &'static str| -> &'static str {
                let has = |a: &str| args.iter().any(|x| x == a);
                match n {
                    "viewmat" | "K" | "width" | "height" | "near" | "far"
                        if op.rust.starts_with("ops::gs::") && has("cam") =>
                    {
                        "cam"
                    }
                    "coeffs" | "sh_degree" if op.rust.starts_with("ops::gs::") && has("colors") => {
                        "colors"
                    }
                    n => n,
                }
            };
            let mut declared: Vec<&str> = op
                .inputs
                .iter()
                .map(|t| gs_alias(t.name.split('.').next().unwrap()))
                .chain(
                    op.params
                        .iter()
                        .map(|p| gs_alias(p.name.split('.').next().unwrap())),
                )
                .collect();
            declared.sort_unstable();
            declared.dedup();
            for a in &args {
                assert!(
                    declared.contains(&a.as_str()),
                    "{}: Rust argument {a} is not in the table {declared:?}",
                    op.name
                );
            }
            for d in &declared {
                assert!(
                    args.iter().any(|a| a == d),
                    "{}: table name {d} is not a Rust argument of {} {args:?}",
                    op.name,
                    op.rust
                );
            }
        }
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for op in OPS {
            assert!(seen.insert(op.name), "{} twice", op.name);
            let (family, name) = op.name.split_once('.').expect("family.op");
            assert!(!family.is_empty() && !name.is_empty());
            assert!(
                op.rust.starts_with(&format!("ops::{family}::")),
                "{}",
                op.name
            );
            assert!(!op.outputs.is_empty(), "{}", op.name);
            // An input written in place is also an output, of the same name and dtypes.
            for i in op.inputs.iter().filter(|t| t.written_in_place()) {
                let o = op.outputs.iter().find(|o| o.name == i.name);
                assert!(
                    o.is_some_and(|o| o.dtypes == i.dtypes && !o.written_in_place()),
                    "{}: {} is written in place but is not an output",
                    op.name,
                    i.name
                );
            }
        }
    }

    #[test]
    fn docs_ops_md_is_fresh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ops.md");
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == markdown(),
            "docs/ops.md is stale: run `cargo run --release -- run --list --markdown > docs/ops.md`"
        );
    }
}
