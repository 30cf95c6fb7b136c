//! `tessera verify`: run every op on every executor present against the reference, and report a
//! row per (op, dtype, executor, size) with the error (or "exact") and pass/fail.
//!
//! This module is the harness: the [`Row`] of the table, the [`Outcome`] of one comparison, the
//! runner ([`run`]) and the naming of a failed op ([`failed`]). Each family's checks live in its
//! own module, as a `Case`-like problem (generate -> reference -> run -> compare) that the family's
//! integration test in `tests/` runs as well, so the test and the verify rows cannot disagree:
//! [`bitmask`], [`codec`], [`attention`] (forward, decode, merge), [`tah`], [`moe`], [`gemm`],
//! [`c2c`], [`featcache`], [`gs`], [`gmscore`], [`sequence_parallel`]. The generators, [`crate::testing::rel_l2`], the tolerances and the
//! executor lists are in [`crate::testing`].

use serde::Serialize;

use crate::device::Device;
use crate::error::Result;

pub mod attention;
pub mod bitmask;
pub mod c2c;
pub mod codec;
pub mod featcache;
pub mod gemm;
pub mod gmscore;
pub mod gs;
pub mod moe;
pub mod rexmoe;
pub mod sequence_parallel;
pub mod tah;

pub use crate::testing::executors;

/// One line of the verify table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: String,
    pub dtype: String,
    pub executor: String,
    pub sizes: String,
    /// "exact" for bit-exact ops, or the relative L2 error.
    pub error: String,
    pub pass: bool,
    /// Why it failed (the mismatch, or the error the op returned).
    pub detail: String,
}

/// The result of one comparison against the reference: the error column ("exact", a measured
/// error, or "-" when the op did not run) and pass, or the reason it failed.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub error: String,
    pub result: std::result::Result<(), String>,
}

impl Outcome {
    /// A bit-exact comparison.
    pub fn exact(result: std::result::Result<(), String>) -> Outcome {
        Outcome {
            error: "exact".into(),
            result,
        }
    }

    /// The op (or an upload) failed: no error to report.
    pub fn not_run(detail: String) -> Outcome {
        Outcome {
            error: "-".into(),
            result: Err(detail),
        }
    }

    pub fn pass(&self) -> bool {
        self.result.is_ok()
    }

    /// The row of the verify table.
    pub fn row(self, op: &str, dtype: &str, dev: &Device, sizes: String) -> Row {
        Row {
            op: op.into(),
            dtype: dtype.into(),
            executor: dev.backend().to_string(),
            sizes,
            error: self.error,
            pass: self.result.is_ok(),
            detail: self.result.err().unwrap_or_default(),
        }
    }
}

/// Panic (in a test) with every failing row, one line each.
pub fn assert_rows_pass(rows: &[Row]) {
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| {
            format!(
                "{} {} on {} [{}]: error {}: {}",
                r.op, r.dtype, r.executor, r.sizes, r.error, r.detail
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} failing rows:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// A family of verify rows, and the kernel modules (`cuda/<family>/<name>.cu`, as
/// `"<family>/<name>"`) its rows run. `tests/modules.rs` checks that every kernel module is
/// covered by a family here, or is a selftest module (covered by `tests/simt_runtime.rs`,
/// `tests/mma.rs` and `tests/fault_suite.rs`, which launch them directly: they are no op).
pub struct Family {
    pub name: &'static str,
    pub modules: &'static [&'static str],
    /// The rows of this family on one device.
    pub rows: fn(&Device) -> Vec<Row>,
}

/// Every verify family, in the order `verify` runs them on each device.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "bitmask",
        modules: &["ckpt/bitmask"],
        rows: bitmask::rows,
    },
    Family {
        name: "codec",
        // codec.gather runs the bitmask kernels; the codec kernels are in ckpt/codec.
        modules: &["ckpt/codec", "ckpt/bitmask"],
        rows: codec::rows,
    },
    Family {
        name: "attention.forward",
        modules: &["attention/duo_causal"],
        rows: attention::forward_rows,
    },
    Family {
        name: "tah",
        modules: &["tah/driver"],
        rows: tah::rows,
    },
    Family {
        name: "attention.decode",
        modules: &["attention/decode"],
        rows: attention::decode_rows,
    },
    Family {
        name: "attention.merge",
        modules: &["attention/decode"],
        rows: attention::merge_rows,
    },
    Family {
        name: "moe",
        modules: &["moe/align", "moe/route", "moe/permute"],
        rows: moe::rows,
    },
    Family {
        name: "moe.layer",
        modules: &["moe/align", "moe/route", "moe/permute", "gemm/gemm"],
        rows: rexmoe::rows,
    },
    Family {
        name: "gemm",
        modules: &["gemm/gemm"],
        rows: gemm::rows,
    },
    Family {
        name: "c2c",
        modules: &["c2c/project", "c2c/unfused", "gemm/gemm"],
        rows: c2c::rows,
    },
    Family {
        name: "featcache",
        modules: &[
            "featcache/select",
            "featcache/received",
            "featcache/ring",
            "attention/duo_causal",
        ],
        rows: featcache::rows,
    },
    Family {
        name: "gs",
        modules: &["gs/project", "gs/bin", "gs/render"],
        rows: gs::rows,
    },
    Family {
        name: "gmscore",
        modules: &["gmscore/score"],
        rows: gmscore::rows,
    },
    Family {
        name: "sequence_parallel",
        modules: &["attention/duo_causal", "attention/decode"],
        rows: sequence_parallel::rows,
    },
];

/// Run every family on the given devices.
pub fn run(devices: &[(Device, &'static str)]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (dev, _) in devices {
        for f in FAMILIES {
            rows.extend((f.rows)(dev));
        }
    }
    rows
}

// ---- naming the op that failed ----------------------------------------------------------------

/// The op a kernel belongs to, for kernels that an op reaches through another op (a chain: e.g.
/// `parallel::attention::forward_simulated` runs `attention::forward` and `attention::merge`).
fn op_of_kernel(kernel: &str) -> Option<&'static str> {
    const OPS: &[(&str, &str)] = &[
        ("attn_tile_meta", "attention::forward"),
        ("attn_fwd_", "attention::forward"),
        ("attn_decode_split_", "attention::decode_partials"),
        ("attn_merge", "attention::merge"),
        ("bitmask_mask_", "bitmask::sparsify"),
        ("bitmask_densify_", "bitmask::densify"),
        ("codec_widths_delta_", "codec::delta_encode"),
        ("codec_pack_delta_", "codec::delta_encode"),
        ("codec_unpack_delta_", "codec::delta_decode"),
        ("codec_delta_f32_", "codec::delta_f32"),
        ("codec_to_f32_", "codec::to_f32"),
        ("codec_minmax", "codec::kmeans"),
        ("codec_kmeans_", "codec::kmeans"),
        ("codec_widths_idx", "codec::pack_indices"),
        ("codec_pack_idx", "codec::pack_indices"),
        ("codec_dequantize_", "codec::dequantize"),
        ("tah_select_", "tah::select_hard"),
        ("tah_gather_rows", "tah::gather_rows"),
        ("tah_scatter_rows", "tah::scatter_rows"),
        ("tah_next_input_", "tah::next_depth_input"),
        ("tah_accumulate", "tah::accumulate_logits"),
        ("moe_align_", "moe::align"),
        ("moe_route", "moe::route"),
        ("moe_load", "moe::load"),
        ("moe_permute_", "moe::permute"),
        ("moe_combine_", "moe::combine"),
        ("gemm_", "gemm"),
        ("c2c_stage_", "c2c.project"),
        ("gs_project_backward", "gs.project_backward"),
        ("gs_project", "gs.project"),
        ("gs_sh_colors_backward", "gs.sh_colors_backward"),
        ("gs_sh_colors", "gs.sh_colors"),
        ("gs_bin_", "gs.bin"),
        ("gs_scan_", "gs.bin"),
        ("gs_sort_", "gs.sort_pairs"),
        ("gs_render_check_bwd", "gs.render_backward"),
        ("gs_render_bwd", "gs.render_backward"),
        ("gs_render_", "gs.render"),
        ("featcache_ring_gather", "featcache.gather"),
        ("featcache_ring_scatter", "featcache.scatter"),
        ("featcache_ring_reuse", "featcache.reuse"),
        ("featcache_ring_class_check", "featcache.age"),
        ("featcache_ring_age", "featcache.age"),
        ("featcache_received", "featcache.received"),
        ("featcache_", "featcache.select"),
        ("gmscore_backward", "gmscore.backward"),
        ("gmscore_", "gmscore.forward"),
        ("c2c_fold_", "c2c.project"),
        ("c2c_gather_", "c2c.project"),
        ("c2c_pointwise_", "c2c.project"),
        ("c2c_rmsnorm_", "c2c.project"),
        ("c2c_scatter", "c2c.project"),
    ];
    OPS.iter()
        .find(|(prefix, _)| kernel.starts_with(prefix))
        .map(|&(_, op)| op)
}

/// The message of a row whose `op` returned `e`: "`op` failed: ..." and, when the failing kernel
/// belongs to an op that `op` ran inside it, "`op` failed in `inner`: ..." (the kernel's own
/// name follows in the error: "simt: kernel attn_merge: ...").
pub fn failed(op: &str, e: &crate::error::Error) -> String {
    use crate::error::Error;
    let inner = match e {
        Error::Kernel { kernel, .. } => op_of_kernel(kernel).filter(|&i| i != op),
        Error::InvalidArgument { op: inner, .. } if *inner != op => Some(*inner),
        _ => None,
    };
    let msg = e.to_string();
    let msg = msg
        .strip_prefix(op)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(&msg);
    match inner {
        Some(i) => format!("{op} failed in {i}: {msg}"),
        None => format!("{op} failed: {msg}"),
    }
}

/// Run one op of a chain (with the downloads of its outputs) and wait for the device, so that a
/// fault is charged to the op that launched it (HIP launches return before the kernel ends); an
/// error names the op (see [`failed`]).
pub fn stage<T>(
    dev: &Device,
    op: &str,
    f: impl FnOnce() -> Result<T>,
) -> std::result::Result<T, String> {
    f().and_then(|v| dev.synchronize().map(|()| v))
        .map_err(|e| failed(op, &e))
}

/// Upload for a check (an error names the upload, not an op).
pub fn up<T: crate::dtype::DType>(
    dev: &Device,
    x: &[T],
    label: &str,
) -> std::result::Result<crate::device::DeviceBuffer<T>, String> {
    dev.upload(x, label)
        .map_err(|e| format!("upload of {label} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_op_and_the_inner_op() {
        use crate::error::Error;
        let e = Error::kernel("simt", "attn_merge", "red zone overwritten");
        assert_eq!(
            failed("parallel::attention::forward_simulated", &e),
            "parallel::attention::forward_simulated failed in attention::merge: simt: kernel \
             attn_merge: red zone overwritten"
        );
        assert_eq!(
            failed("attention::merge", &e),
            "attention::merge failed: simt: kernel attn_merge: red zone overwritten"
        );
        let e = Error::invalid("codec::kmeans", "bits must be 2, 3, 4 or 8, got 5");
        assert_eq!(
            failed("codec::kmeans", &e),
            "codec::kmeans failed: bits must be 2, 3, 4 or 8, got 5"
        );
        let e = Error::kernel("simt", "tah_scan_counts", "divergence");
        assert_eq!(
            failed("tah::select_hard", &e),
            "tah::select_hard failed: simt: kernel tah_scan_counts: divergence"
        );
    }
}
