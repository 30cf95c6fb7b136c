//! Generated from the op table by `capi::codegen::rust_source`; do not edit by hand
//! (`TESSERA_BLESS=1 cargo test --release --lib capi` regenerates it).

#![allow(clippy::too_many_arguments, non_snake_case)]

use std::ffi::c_void;

use super::dlpack::DLTensor;
use super::{entry, CArg, Ctx, TesseraStatus};
use crate::interop::ParamValue;

/// `bitmask.sparsify`: change bitmask of new vs base and the packed changed values (Rust: `tessera::ops::bitmask::sparsify`).
///
/// Inputs: `base` (f32|f16|bf16, `[n]`), `new_` (f32|f16|bf16, `[n]`).
///
/// Parameters: `tau` (float, usually 0): changes with |new - base| <= tau are dropped; 0 compares bit patterns.
///
/// Outputs, allocated by the caller: `mask` (u32, `[ceil(n / 32)]`), `values` (f32|f16|bf16, `[popcount(mask)]`: its size depends on the data; pass a 1-D tensor with room for n elements; `values_len`, when not NULL, receives the number of elements written).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_bitmask_sparsify(
    base: *const DLTensor,
    new_: *const DLTensor,
    tau: f32,
    mask: *mut DLTensor,
    values: *mut DLTensor,
    values_len: *mut i64,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("bitmask.sparsify", || {
        let mut c = Ctx::new("bitmask.sparsify");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("base", base) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("new", new_) }?;
        c.param("tau", ParamValue::F32(tau));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("mask", mask, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("values", values, values_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `bitmask.densify`: the dense tensor from base, change mask and packed values (Rust: `tessera::ops::bitmask::densify_parts`).
///
/// Inputs: `base` (f32|f16|bf16, `[n]`), `mask` (u32, `[ceil(n / 32)]`), `values` (f32|f16|bf16, `[popcount(mask)]`).
///
/// Outputs, allocated by the caller: `out` (f32|f16|bf16, `[n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_bitmask_densify(
    base: *const DLTensor,
    mask: *const DLTensor,
    values: *const DLTensor,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("bitmask.densify", || {
        let mut c = Ctx::new("bitmask.densify");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("base", base) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("mask", mask) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("values", values) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.gather`: the elements of src whose mask bit is set, in order (Rust: `tessera::ops::codec::gather`).
///
/// Inputs: `src` (f32|f16|bf16|u32|i32|u16, `[n]`), `mask` (u32, `[ceil(n / 32)]`).
///
/// Parameters: `count` (uint64_t): number of set mask bits.
///
/// Outputs, allocated by the caller: `out` (f32|f16|bf16|u32|i32|u16, `[count]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_gather(
    src: *const DLTensor,
    mask: *const DLTensor,
    count: u64,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.gather", || {
        let mut c = Ctx::new("codec.gather");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("src", src) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("mask", mask) }?;
        c.param("count", ParamValue::Usize(crate::capi::usize_param("codec.gather", "count", count)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.delta_encode`: lossless zigzag-delta code of new_vals against base_vals, bit-packed per block (Rust: `tessera::ops::codec::delta_encode`).
///
/// Inputs: `base_vals` (f32|f16|bf16, `[n]`), `new_vals` (f32|f16|bf16, `[n]`).
///
/// Outputs, allocated by the caller: `words` (u32, `[packed_words(widths, n)]`: its size depends on the data; pass a 1-D tensor with room for 256 * ceil(n / 256) elements; `words_len`, when not NULL, receives the number of elements written), `widths` (u8, `[ceil(n / 256)]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_delta_encode(
    base_vals: *const DLTensor,
    new_vals: *const DLTensor,
    words: *mut DLTensor,
    words_len: *mut i64,
    widths: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.delta_encode", || {
        let mut c = Ctx::new("codec.delta_encode");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("base_vals", base_vals) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("new_vals", new_vals) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("words", words, words_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("widths", widths, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.delta_decode`: inverse of codec.delta_encode, bit-exact (Rust: `tessera::ops::codec::delta_decode`).
///
/// Inputs: `base_vals` (f32|f16|bf16, `[n]`), `packed_words` (u32, `[packed_words(widths, n)]`), `packed_widths` (u8, `[ceil(n / 256)]`).
///
/// Outputs, allocated by the caller: `out` (f32|f16|bf16, `[n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_delta_decode(
    base_vals: *const DLTensor,
    packed_words: *const DLTensor,
    packed_widths: *const DLTensor,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.delta_decode", || {
        let mut c = Ctx::new("codec.delta_decode");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("base_vals", base_vals) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("packed.words", packed_words) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("packed.widths", packed_widths) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.delta_f32`: new_vals - base_vals in f32 (Rust: `tessera::ops::codec::delta_f32`).
///
/// Inputs: `base_vals` (f32|f16|bf16, `[n]`), `new_vals` (f32|f16|bf16, `[n]`).
///
/// Outputs, allocated by the caller: `out` (f32, `[n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_delta_f32(
    base_vals: *const DLTensor,
    new_vals: *const DLTensor,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.delta_f32", || {
        let mut c = Ctx::new("codec.delta_f32");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("base_vals", base_vals) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("new_vals", new_vals) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.to_f32`: widen to f32 (Rust: `tessera::ops::codec::to_f32`).
///
/// Inputs: `values` (f32|f16|bf16, `[n]`).
///
/// Outputs, allocated by the caller: `out` (f32, `[n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_to_f32(
    values: *const DLTensor,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.to_f32", || {
        let mut c = Ctx::new("codec.to_f32");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("values", values) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.kmeans`: exact, deterministic 1-D k-means with 2^bits centroids (Rust: `tessera::ops::codec::kmeans`).
///
/// Inputs: `values` (f32, `[n]`).
///
/// Parameters: `bits` (uint32_t): 2, 3, 4 or 8; `max_iters` (uint32_t): update limit; `tol` (float): stop when no centroid moves more than tol x range.
///
/// Outputs, allocated by the caller: `centroids` (f32, `[2^bits] (host)`), `indices` (u8, `[n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_kmeans(
    values: *const DLTensor,
    bits: u32,
    max_iters: u32,
    tol: f32,
    centroids: *mut DLTensor,
    indices: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.kmeans", || {
        let mut c = Ctx::new("codec.kmeans");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("values", values) }?;
        c.param("bits", ParamValue::U32(bits));
        c.param("max_iters", ParamValue::U32(max_iters));
        c.param("tol", ParamValue::F32(tol));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("centroids", centroids, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("indices", indices, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.pack_indices`: pack indices at a fixed bit width (Rust: `tessera::ops::codec::pack_indices`).
///
/// Inputs: `indices` (u8, `[n]`).
///
/// Parameters: `bits` (uint32_t): 1..=8.
///
/// Outputs, allocated by the caller: `words` (u32, `[packed_words(widths, n)]`: its size depends on the data; pass a 1-D tensor with room for 8 * bits * ceil(n / 256) elements; `words_len`, when not NULL, receives the number of elements written), `widths` (u8, `[ceil(n / 256)]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_pack_indices(
    indices: *const DLTensor,
    bits: u32,
    words: *mut DLTensor,
    words_len: *mut i64,
    widths: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.pack_indices", || {
        let mut c = Ctx::new("codec.pack_indices");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("indices", indices) }?;
        c.param("bits", ParamValue::U32(bits));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("words", words, words_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("widths", widths, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `codec.dequantize`: round_T(base_vals + centroids[index]) for packed indices (Rust: `tessera::ops::codec::dequantize`).
///
/// Inputs: `indices_words` (u32, `[packed_words(widths, n)]`), `indices_widths` (u8, `[ceil(n / 256)]`), `base_vals` (f32|f16|bf16, `[n]`, optional: may be NULL).
///
/// Parameters: `indices_count` (uint64_t): number of packed indices n; `centroids` (const float*, `centroids_len` of them): 1..=256 centroids.
///
/// Outputs, allocated by the caller: `out` (f32|f16|bf16, `[n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_codec_dequantize(
    indices_words: *const DLTensor,
    indices_widths: *const DLTensor,
    base_vals: *const DLTensor,
    indices_count: u64,
    centroids: *const f32,
    centroids_len: u64,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("codec.dequantize", || {
        let mut c = Ctx::new("codec.dequantize");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("indices.words", indices_words) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("indices.widths", indices_widths) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("base_vals", base_vals) }?;
        c.param("indices.count", ParamValue::Usize(crate::capi::usize_param("codec.dequantize", "indices.count", indices_count)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_list("centroids", centroids, centroids_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `attention.forward`: varlen GQA attention (full, causal, duo-causal), fused, tile-skipping (Rust: `tessera::ops::attention::forward`).
///
/// Inputs: `q` (f16|bf16, `[total_q, heads, head_dim]`), `k` (f16|bf16, `[total_kv, kv_heads, head_dim]`), `v` (f16|bf16, `[total_kv, kv_heads, head_dim]`), `cu_seqlens_q` (i32, `[batch + 1]`), `cu_seqlens_kv` (i32, `[batch + 1]`), `q_pos` (i32, `[total_q]`, optional: may be NULL), `kv_pos` (i32, `[total_kv]`, optional: may be NULL), `q_depth` (i32, `[total_q]`, optional: may be NULL), `kv_depth` (i32, `[total_kv]`, optional: may be NULL), `kv_valid` (u8, `[total_kv]`, optional: may be NULL).
///
/// Parameters: `heads` (uint64_t): query heads H; `kv_heads` (uint64_t): key/value heads (H is a multiple); `head_dim` (uint64_t): D: 64 or 128; `max_seqlen_q` (uint64_t): bound on every query sequence's length (sizes the grid); `max_seqlen_kv` (uint64_t): bound on every key sequence's length; `scale` (float): softmax scale, usually 1/sqrt(D); `mode` (const char*, one of "full", "causal", "duo_causal"): mask: full, causal (by position) or duo_causal (position and depth); `path` (const char*, one of "auto", "tensor_core", "scalar", NULL = "auto"): kernel path.
///
/// Outputs, allocated by the caller: `o` (f32, `[total_q, heads, head_dim]`), `lse` (f32, `[heads, total_q]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_attention_forward(
    q: *const DLTensor,
    k: *const DLTensor,
    v: *const DLTensor,
    cu_seqlens_q: *const DLTensor,
    cu_seqlens_kv: *const DLTensor,
    q_pos: *const DLTensor,
    kv_pos: *const DLTensor,
    q_depth: *const DLTensor,
    kv_depth: *const DLTensor,
    kv_valid: *const DLTensor,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    max_seqlen_q: u64,
    max_seqlen_kv: u64,
    scale: f32,
    mode: *const std::ffi::c_char,
    path: *const std::ffi::c_char,
    o: *mut DLTensor,
    lse: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("attention.forward", || {
        let mut c = Ctx::new("attention.forward");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q", q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("k", k) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("v", v) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_q", cu_seqlens_q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_kv", cu_seqlens_kv) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_pos", q_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_pos", kv_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_depth", q_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_depth", kv_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_valid", kv_valid) }?;
        c.param("heads", ParamValue::Usize(crate::capi::usize_param("attention.forward", "heads", heads)?));
        c.param("kv_heads", ParamValue::Usize(crate::capi::usize_param("attention.forward", "kv_heads", kv_heads)?));
        c.param("head_dim", ParamValue::Usize(crate::capi::usize_param("attention.forward", "head_dim", head_dim)?));
        c.param("max_seqlen_q", ParamValue::Usize(crate::capi::usize_param("attention.forward", "max_seqlen_q", max_seqlen_q)?));
        c.param("max_seqlen_kv", ParamValue::Usize(crate::capi::usize_param("attention.forward", "max_seqlen_kv", max_seqlen_kv)?));
        c.param("scale", ParamValue::F32(scale));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("mode", mode) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("path", path) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("o", o, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("lse", lse, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `attention.decode`: flash-decoding: split-KV partials, then the LSE merge (Rust: `tessera::ops::attention::decode`).
///
/// Inputs: `q` (f16|bf16, `[total_q, heads, head_dim]`), `k` (f16|bf16, `[total_kv, kv_heads, head_dim]`), `v` (f16|bf16, `[total_kv, kv_heads, head_dim]`), `cu_seqlens_q` (i32, `[batch + 1]`), `cu_seqlens_kv` (i32, `[batch + 1]`), `q_pos` (i32, `[total_q]`, optional: may be NULL), `kv_pos` (i32, `[total_kv]`, optional: may be NULL), `q_depth` (i32, `[total_q]`, optional: may be NULL), `kv_depth` (i32, `[total_kv]`, optional: may be NULL), `kv_valid` (u8, `[total_kv]`, optional: may be NULL).
///
/// Parameters: `heads` (uint64_t): query heads H; `kv_heads` (uint64_t): key/value heads (H is a multiple); `head_dim` (uint64_t): D: 64 or 128; `max_seqlen_q` (uint64_t): bound on every query sequence's length (sizes the grid); `max_seqlen_kv` (uint64_t): bound on every key sequence's length; `scale` (float): softmax scale, usually 1/sqrt(D); `mode` (const char*, one of "full", "causal", "duo_causal"): mask: full, causal (by position) or duo_causal (position and depth); `path` (const char*, one of "auto", "tensor_core", "scalar", NULL = "auto"): kernel path; `splits` (uint64_t): key splits per sequence.
///
/// Outputs, allocated by the caller: `o` (f32, `[total_q, heads, head_dim]`), `lse` (f32, `[heads, total_q]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_attention_decode(
    q: *const DLTensor,
    k: *const DLTensor,
    v: *const DLTensor,
    cu_seqlens_q: *const DLTensor,
    cu_seqlens_kv: *const DLTensor,
    q_pos: *const DLTensor,
    kv_pos: *const DLTensor,
    q_depth: *const DLTensor,
    kv_depth: *const DLTensor,
    kv_valid: *const DLTensor,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    max_seqlen_q: u64,
    max_seqlen_kv: u64,
    scale: f32,
    mode: *const std::ffi::c_char,
    path: *const std::ffi::c_char,
    splits: u64,
    o: *mut DLTensor,
    lse: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("attention.decode", || {
        let mut c = Ctx::new("attention.decode");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q", q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("k", k) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("v", v) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_q", cu_seqlens_q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_kv", cu_seqlens_kv) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_pos", q_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_pos", kv_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_depth", q_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_depth", kv_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_valid", kv_valid) }?;
        c.param("heads", ParamValue::Usize(crate::capi::usize_param("attention.decode", "heads", heads)?));
        c.param("kv_heads", ParamValue::Usize(crate::capi::usize_param("attention.decode", "kv_heads", kv_heads)?));
        c.param("head_dim", ParamValue::Usize(crate::capi::usize_param("attention.decode", "head_dim", head_dim)?));
        c.param("max_seqlen_q", ParamValue::Usize(crate::capi::usize_param("attention.decode", "max_seqlen_q", max_seqlen_q)?));
        c.param("max_seqlen_kv", ParamValue::Usize(crate::capi::usize_param("attention.decode", "max_seqlen_kv", max_seqlen_kv)?));
        c.param("scale", ParamValue::F32(scale));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("mode", mode) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("path", path) }?;
        c.param("splits", ParamValue::Usize(crate::capi::usize_param("attention.decode", "splits", splits)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("o", o, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("lse", lse, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `attention.decode_partials`: flash-decoding partial (O, LSE) per key split (Rust: `tessera::ops::attention::decode_partials`).
///
/// Inputs: `q` (f16|bf16, `[total_q, heads, head_dim]`), `k` (f16|bf16, `[total_kv, kv_heads, head_dim]`), `v` (f16|bf16, `[total_kv, kv_heads, head_dim]`), `cu_seqlens_q` (i32, `[batch + 1]`), `cu_seqlens_kv` (i32, `[batch + 1]`), `q_pos` (i32, `[total_q]`, optional: may be NULL), `kv_pos` (i32, `[total_kv]`, optional: may be NULL), `q_depth` (i32, `[total_q]`, optional: may be NULL), `kv_depth` (i32, `[total_kv]`, optional: may be NULL), `kv_valid` (u8, `[total_kv]`, optional: may be NULL).
///
/// Parameters: `heads` (uint64_t): query heads H; `kv_heads` (uint64_t): key/value heads (H is a multiple); `head_dim` (uint64_t): D: 64 or 128; `max_seqlen_q` (uint64_t): bound on every query sequence's length (sizes the grid); `max_seqlen_kv` (uint64_t): bound on every key sequence's length; `scale` (float): softmax scale, usually 1/sqrt(D); `mode` (const char*, one of "full", "causal", "duo_causal"): mask: full, causal (by position) or duo_causal (position and depth); `path` (const char*, one of "auto", "tensor_core", "scalar", NULL = "auto"): kernel path; `splits` (uint64_t): key splits per sequence.
///
/// Outputs, allocated by the caller: `o` (f32, `[splits, total_q, heads, head_dim]`), `lse` (f32, `[splits, heads, total_q]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_attention_decode_partials(
    q: *const DLTensor,
    k: *const DLTensor,
    v: *const DLTensor,
    cu_seqlens_q: *const DLTensor,
    cu_seqlens_kv: *const DLTensor,
    q_pos: *const DLTensor,
    kv_pos: *const DLTensor,
    q_depth: *const DLTensor,
    kv_depth: *const DLTensor,
    kv_valid: *const DLTensor,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    max_seqlen_q: u64,
    max_seqlen_kv: u64,
    scale: f32,
    mode: *const std::ffi::c_char,
    path: *const std::ffi::c_char,
    splits: u64,
    o: *mut DLTensor,
    lse: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("attention.decode_partials", || {
        let mut c = Ctx::new("attention.decode_partials");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q", q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("k", k) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("v", v) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_q", cu_seqlens_q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_kv", cu_seqlens_kv) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_pos", q_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_pos", kv_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_depth", q_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_depth", kv_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_valid", kv_valid) }?;
        c.param("heads", ParamValue::Usize(crate::capi::usize_param("attention.decode_partials", "heads", heads)?));
        c.param("kv_heads", ParamValue::Usize(crate::capi::usize_param("attention.decode_partials", "kv_heads", kv_heads)?));
        c.param("head_dim", ParamValue::Usize(crate::capi::usize_param("attention.decode_partials", "head_dim", head_dim)?));
        c.param("max_seqlen_q", ParamValue::Usize(crate::capi::usize_param("attention.decode_partials", "max_seqlen_q", max_seqlen_q)?));
        c.param("max_seqlen_kv", ParamValue::Usize(crate::capi::usize_param("attention.decode_partials", "max_seqlen_kv", max_seqlen_kv)?));
        c.param("scale", ParamValue::F32(scale));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("mode", mode) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("path", path) }?;
        c.param("splits", ParamValue::Usize(crate::capi::usize_param("attention.decode_partials", "splits", splits)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("o", o, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("lse", lse, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `attention.merge`: merge partial (O, LSE) over disjoint key sets (Rust: `tessera::ops::attention::merge`).
///
/// Inputs: `o` (f32, `[splits, total_q, heads, head_dim]`), `lse` (f32, `[splits, heads, total_q]`).
///
/// Parameters: `splits` (uint64_t): number of partials; `total_q` (uint64_t): query tokens; `heads` (uint64_t): heads; `head_dim` (uint64_t): head dimension.
///
/// Outputs, allocated by the caller: `o_out` (f32, `[total_q, heads, head_dim]`), `lse_out` (f32, `[heads, total_q]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_attention_merge(
    o: *const DLTensor,
    lse: *const DLTensor,
    splits: u64,
    total_q: u64,
    heads: u64,
    head_dim: u64,
    o_out: *mut DLTensor,
    lse_out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("attention.merge", || {
        let mut c = Ctx::new("attention.merge");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("o", o) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("lse", lse) }?;
        c.param("splits", ParamValue::Usize(crate::capi::usize_param("attention.merge", "splits", splits)?));
        c.param("total_q", ParamValue::Usize(crate::capi::usize_param("attention.merge", "total_q", total_q)?));
        c.param("heads", ParamValue::Usize(crate::capi::usize_param("attention.merge", "heads", heads)?));
        c.param("head_dim", ParamValue::Usize(crate::capi::usize_param("attention.merge", "head_dim", head_dim)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("o", o_out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("lse", lse_out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `tah.select_hard`: indices of the tokens with sigmoid(score) > threshold, ascending (Rust: `tessera::ops::tah::select_hard`).
///
/// Inputs: `scores` (f32, `[n]`).
///
/// Parameters: `threshold` (double): in (0, 1); the paper uses 0.9.
///
/// Outputs, allocated by the caller: `indices` (u32, `[count]`: its size depends on the data; pass a 1-D tensor with room for n elements; `indices_len`, when not NULL, receives the number of elements written).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_tah_select_hard(
    scores: *const DLTensor,
    threshold: f64,
    indices: *mut DLTensor,
    indices_len: *mut i64,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("tah.select_hard", || {
        let mut c = Ctx::new("tah.select_hard");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("scores", scores) }?;
        c.param("threshold", ParamValue::F64(threshold));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("indices", indices, indices_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `tah.gather_rows`: out[r, :] = src[idx[r], :] for 4-byte elements (Rust: `tessera::ops::tah::gather_rows`).
///
/// Inputs: `src` (f32|i32|u32, `[rows, d]`), `idx` (u32, `[m]`).
///
/// Parameters: `d` (uint64_t): row width.
///
/// Outputs, allocated by the caller: `out` (f32|i32|u32, `[m, d]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_tah_gather_rows(
    src: *const DLTensor,
    idx: *const DLTensor,
    d: u64,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("tah.gather_rows", || {
        let mut c = Ctx::new("tah.gather_rows");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("src", src) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("idx", idx) }?;
        c.param("d", ParamValue::Usize(crate::capi::usize_param("tah.gather_rows", "d", d)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `tah.scatter_rows`: dst[idx[r], :] = src[r, :] in place, distinct indices (Rust: `tessera::ops::tah::scatter_rows`).
///
/// Inputs: `src` (f32|i32|u32, `[m, d]`), `idx` (u32, `[m]`), `dst` (f32|i32|u32, `[rows, d] (written in place)`).
///
/// Parameters: `d` (uint64_t): row width.
///
/// Updated in place: `dst`.
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_tah_scatter_rows(
    src: *const DLTensor,
    idx: *const DLTensor,
    dst: *const DLTensor,
    d: u64,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("tah.scatter_rows", || {
        let mut c = Ctx::new("tah.scatter_rows");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("src", src) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("idx", idx) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("dst", dst) }?;
        c.param("d", ParamValue::Usize(crate::capi::usize_param("tah.scatter_rows", "d", d)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `tah.copy_range`: dst[dst_off..][..n] = src[src_off..][..n] in place (Rust: `tessera::ops::tah::copy_range`).
///
/// Inputs: `src` (f32|f16|bf16|i32|u32|u16|u8, `[>= src_off + n]`), `dst` (f32|f16|bf16|i32|u32|u16|u8, `[>= dst_off + n] (written in place)`).
///
/// Parameters: `src_off` (uint64_t): first source element; `dst_off` (uint64_t): first destination element; `n` (uint64_t): elements.
///
/// Updated in place: `dst`.
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_tah_copy_range(
    src: *const DLTensor,
    dst: *const DLTensor,
    src_off: u64,
    dst_off: u64,
    n: u64,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("tah.copy_range", || {
        let mut c = Ctx::new("tah.copy_range");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("src", src) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("dst", dst) }?;
        c.param("src_off", ParamValue::Usize(crate::capi::usize_param("tah.copy_range", "src_off", src_off)?));
        c.param("dst_off", ParamValue::Usize(crate::capi::usize_param("tah.copy_range", "dst_off", dst_off)?));
        c.param("n", ParamValue::Usize(crate::capi::usize_param("tah.copy_range", "n", n)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `tah.next_depth_input`: top-k of the cumulative logits, softmax, weighted sum of embedding rows (Rust: `tessera::ops::tah::next_depth_input`).
///
/// Inputs: `cum` (f32, `[m, vocab]`), `emb` (f32|f16|bf16, `[vocab, d]`).
///
/// Parameters: `vocab` (uint64_t): vocabulary size; `k` (uint64_t): 1..=min(256, vocab); `d` (uint64_t): embedding width.
///
/// Outputs, allocated by the caller: `out` (f32, `[m, d]`), `ids` (u32, `[m, k]`), `weights` (f32, `[m, k]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_tah_next_depth_input(
    cum: *const DLTensor,
    emb: *const DLTensor,
    vocab: u64,
    k: u64,
    d: u64,
    out: *mut DLTensor,
    ids: *mut DLTensor,
    weights: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("tah.next_depth_input", || {
        let mut c = Ctx::new("tah.next_depth_input");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cum", cum) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("emb", emb) }?;
        c.param("vocab", ParamValue::Usize(crate::capi::usize_param("tah.next_depth_input", "vocab", vocab)?));
        c.param("k", ParamValue::Usize(crate::capi::usize_param("tah.next_depth_input", "k", k)?));
        c.param("d", ParamValue::Usize(crate::capi::usize_param("tah.next_depth_input", "d", d)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("ids", ids, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("weights", weights, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `tah.accumulate_logits`: cum += logits in place (Rust: `tessera::ops::tah::accumulate_logits`).
///
/// Inputs: `cum` (f32, `[n] (written in place)`), `logits` (f32, `[n]`).
///
/// Updated in place: `cum`.
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_tah_accumulate_logits(
    cum: *const DLTensor,
    logits: *const DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("tah.accumulate_logits", || {
        let mut c = Ctx::new("tah.accumulate_logits");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cum", cum) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("logits", logits) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `moe.align`: top-k expert ids -> flat indices grouped by expert (flat order within one), each run padded to a multiple of block_size; the expert of each block (Rust: `tessera::ops::moe::align`).
///
/// Inputs: `topk_ids` (i32, `[T, k]`).
///
/// Parameters: `k` (uint64_t): experts per token (>= 1); `num_experts` (uint64_t): E, 1..=1024; `block_size` (uint64_t): rows per block of the expert GEMM (>= 1).
///
/// Outputs, allocated by the caller: `sorted_token_ids` (i32, `[T * k + num_experts * (block_size - 1)]`), `expert_ids` (i32, `[ceil((T * k + num_experts * (block_size - 1)) / block_size)]`), `num_tokens_post_padded` (i32, `[1]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_moe_align(
    topk_ids: *const DLTensor,
    k: u64,
    num_experts: u64,
    block_size: u64,
    sorted_token_ids: *mut DLTensor,
    expert_ids: *mut DLTensor,
    num_tokens_post_padded: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("moe.align", || {
        let mut c = Ctx::new("moe.align");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("topk_ids", topk_ids) }?;
        c.param("k", ParamValue::Usize(crate::capi::usize_param("moe.align", "k", k)?));
        c.param("num_experts", ParamValue::Usize(crate::capi::usize_param("moe.align", "num_experts", num_experts)?));
        c.param("block_size", ParamValue::Usize(crate::capi::usize_param("moe.align", "block_size", block_size)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("sorted_token_ids", sorted_token_ids, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("expert_ids", expert_ids, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("num_tokens_post_padded", num_tokens_post_padded, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `moe.route`: router top-k with PSR masking: at a training step, r*N - N_t of the experts outside the layer's own N are masked by a seeded generator; top_k of the softmax over the unmasked logits (ties to the lower id), optionally renormalised (Rust: `tessera::ops::moe::route`).
///
/// Inputs: `logits` (f32, `[T, r * N]`).
///
/// Parameters: `r` (uint64_t): layers per group (1: a conventional MoE); `layer_in_group` (uint64_t): this layer's index j in its group (own experts j*N .. j*N + N); `top_k` (uint64_t): experts per token (<= the pool); `renormalize` (const char*, one of "true", "false"): divide the top_k weights by their sum; `step` (uint64_t, usually 9223372036854775807): training step t; the default 9223372036854775807 means inference (no mask); `t_s` (uint64_t, usually 0): PSR: the step the pool starts to grow; `t_e` (uint64_t, usually 0): PSR: the step the pool is all r*N; `seed` (uint64_t, usually 0): PSR: the generator's seed; `layer` (uint64_t, usually 9223372036854775807): global layer index keying the generator; the default 9223372036854775807 means layer_in_group.
///
/// Outputs, allocated by the caller: `topk_ids` (i32, `[T, top_k]`), `topk_weights` (f32, `[T, top_k]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_moe_route(
    logits: *const DLTensor,
    r: u64,
    layer_in_group: u64,
    top_k: u64,
    renormalize: *const std::ffi::c_char,
    step: u64,
    t_s: u64,
    t_e: u64,
    seed: u64,
    layer: u64,
    topk_ids: *mut DLTensor,
    topk_weights: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("moe.route", || {
        let mut c = Ctx::new("moe.route");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("logits", logits) }?;
        c.param("r", ParamValue::Usize(crate::capi::usize_param("moe.route", "r", r)?));
        c.param("layer_in_group", ParamValue::Usize(crate::capi::usize_param("moe.route", "layer_in_group", layer_in_group)?));
        c.param("top_k", ParamValue::Usize(crate::capi::usize_param("moe.route", "top_k", top_k)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("renormalize", renormalize) }?;
        c.param("step", ParamValue::Usize(crate::capi::usize_param("moe.route", "step", step)?));
        c.param("t_s", ParamValue::Usize(crate::capi::usize_param("moe.route", "t_s", t_s)?));
        c.param("t_e", ParamValue::Usize(crate::capi::usize_param("moe.route", "t_e", t_e)?));
        c.param("seed", ParamValue::Usize(crate::capi::usize_param("moe.route", "seed", seed)?));
        c.param("layer", ParamValue::Usize(crate::capi::usize_param("moe.route", "layer", layer)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("topk_ids", topk_ids, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("topk_weights", topk_weights, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `moe.layer`: one ReXMoE layer: router GEMM, route (PSR, top-k), align, permute, grouped SwiGLU expert GEMMs, combine in slot order (deterministic) (Rust: `tessera::ops::moe::layer`).
///
/// Inputs: `x` (f16|bf16, `[T, d]`), `w_router` (f16|bf16, `[r * N, d]`), `w_gate` (f16|bf16, `[r * N, F, d]`), `w_up` (f16|bf16, `[r * N, F, d]`), `w_down` (f16|bf16, `[r * N, d, F]`).
///
/// Parameters: `r` (uint64_t): layers per group (1: a conventional MoE); `layer_in_group` (uint64_t): this layer's index j in its group (own experts j*N .. j*N + N); `top_k` (uint64_t): experts per token (<= the pool); `renormalize` (const char*, one of "true", "false"): divide the top_k weights by their sum; `step` (uint64_t, usually 9223372036854775807): training step t; the default 9223372036854775807 means inference (no mask); `t_s` (uint64_t, usually 0): PSR: the step the pool starts to grow; `t_e` (uint64_t, usually 0): PSR: the step the pool is all r*N; `seed` (uint64_t, usually 0): PSR: the generator's seed; `layer` (uint64_t, usually 9223372036854775807): global layer index keying the generator; the default 9223372036854775807 means layer_in_group.
///
/// Outputs, allocated by the caller: `y` (f16|bf16, `[T, d]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_moe_layer(
    x: *const DLTensor,
    w_router: *const DLTensor,
    w_gate: *const DLTensor,
    w_up: *const DLTensor,
    w_down: *const DLTensor,
    r: u64,
    layer_in_group: u64,
    top_k: u64,
    renormalize: *const std::ffi::c_char,
    step: u64,
    t_s: u64,
    t_e: u64,
    seed: u64,
    layer: u64,
    y: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("moe.layer", || {
        let mut c = Ctx::new("moe.layer");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("x", x) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_router", w_router) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_gate", w_gate) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_up", w_up) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_down", w_down) }?;
        c.param("r", ParamValue::Usize(crate::capi::usize_param("moe.layer", "r", r)?));
        c.param("layer_in_group", ParamValue::Usize(crate::capi::usize_param("moe.layer", "layer_in_group", layer_in_group)?));
        c.param("top_k", ParamValue::Usize(crate::capi::usize_param("moe.layer", "top_k", top_k)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("renormalize", renormalize) }?;
        c.param("step", ParamValue::Usize(crate::capi::usize_param("moe.layer", "step", step)?));
        c.param("t_s", ParamValue::Usize(crate::capi::usize_param("moe.layer", "t_s", t_s)?));
        c.param("t_e", ParamValue::Usize(crate::capi::usize_param("moe.layer", "t_e", t_e)?));
        c.param("seed", ParamValue::Usize(crate::capi::usize_param("moe.layer", "seed", seed)?));
        c.param("layer", ParamValue::Usize(crate::capi::usize_param("moe.layer", "layer", layer)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("y", y, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `moe.permute`: token rows gathered into the aligned expert order (a copy; padding rows zero), the padded group offsets and each flat entry's row (Rust: `tessera::ops::moe::permute`).
///
/// Inputs: `x` (f32|f16|bf16|i32|u32|u16|u8, `[T, d]`), `aligned_sorted_token_ids` (i32, `[T * top_k + num_experts * (block_size - 1)]`), `aligned_expert_ids` (i32, `[ceil((T * top_k + num_experts * (block_size - 1)) / block_size)]`), `aligned_num_tokens_post_padded` (i32, `[1]`).
///
/// Parameters: `d` (uint64_t): row width (>= 1); `top_k` (uint64_t): experts per token (>= 1); `num_experts` (uint64_t): E, 1..=1024; `block_size` (uint64_t): the alignment's block size.
///
/// Outputs, allocated by the caller: `rows` (f32|f16|bf16|i32|u32|u16|u8, `[T * top_k + num_experts * (block_size - 1), d]`), `offsets` (i32, `[num_experts + 1]`), `positions` (i32, `[T * top_k]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_moe_permute(
    x: *const DLTensor,
    aligned_sorted_token_ids: *const DLTensor,
    aligned_expert_ids: *const DLTensor,
    aligned_num_tokens_post_padded: *const DLTensor,
    d: u64,
    top_k: u64,
    num_experts: u64,
    block_size: u64,
    rows: *mut DLTensor,
    offsets: *mut DLTensor,
    positions: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("moe.permute", || {
        let mut c = Ctx::new("moe.permute");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("x", x) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("aligned.sorted_token_ids", aligned_sorted_token_ids) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("aligned.expert_ids", aligned_expert_ids) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("aligned.num_tokens_post_padded", aligned_num_tokens_post_padded) }?;
        c.param("d", ParamValue::Usize(crate::capi::usize_param("moe.permute", "d", d)?));
        c.param("top_k", ParamValue::Usize(crate::capi::usize_param("moe.permute", "top_k", top_k)?));
        c.param("num_experts", ParamValue::Usize(crate::capi::usize_param("moe.permute", "num_experts", num_experts)?));
        c.param("block_size", ParamValue::Usize(crate::capi::usize_param("moe.permute", "block_size", block_size)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("rows", rows, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("offsets", offsets, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("positions", positions, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `moe.combine`: y[t] = sum over the slots in order of w[t, slot] * expert_out[positions[t, slot]], in f32, no atomics (deterministic); y has expert_out's dtype (Rust: `tessera::ops::moe::combine`).
///
/// Inputs: `expert_out` (f32|f16|bf16, `[rows, d]`), `positions` (i32, `[T, top_k]`), `topk_weights` (f32, `[T, top_k]`).
///
/// Parameters: `d` (uint64_t): row width (>= 1); `top_k` (uint64_t): experts per token (>= 1).
///
/// Outputs, allocated by the caller: `y` (f32|f16|bf16, `[T, d]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_moe_combine(
    expert_out: *const DLTensor,
    positions: *const DLTensor,
    topk_weights: *const DLTensor,
    d: u64,
    top_k: u64,
    y: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("moe.combine", || {
        let mut c = Ctx::new("moe.combine");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("expert_out", expert_out) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("positions", positions) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("topk_weights", topk_weights) }?;
        c.param("d", ParamValue::Usize(crate::capi::usize_param("moe.combine", "d", d)?));
        c.param("top_k", ParamValue::Usize(crate::capi::usize_param("moe.combine", "top_k", top_k)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("y", y, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `moe.load`: tokens routed to each virtual expert and to the experts of each physical layer of the group (Rust: `tessera::ops::moe::load`).
///
/// Inputs: `topk_ids` (i32, `[T, k]`).
///
/// Parameters: `num_experts` (uint64_t): N, experts per layer; `r` (uint64_t): layers per group.
///
/// Outputs, allocated by the caller: `per_expert` (i32, `[r * num_experts]`), `per_layer` (i32, `[r]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_moe_load(
    topk_ids: *const DLTensor,
    num_experts: u64,
    r: u64,
    per_expert: *mut DLTensor,
    per_layer: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("moe.load", || {
        let mut c = Ctx::new("moe.load");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("topk_ids", topk_ids) }?;
        c.param("num_experts", ParamValue::Usize(crate::capi::usize_param("moe.load", "num_experts", num_experts)?));
        c.param("r", ParamValue::Usize(crate::capi::usize_param("moe.load", "r", r)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("per_expert", per_expert, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("per_layer", per_layer, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `c2c.project`: one C2C projector (one layer, K or V): out = tgt + g · sigmoid(w_s · h) · (w_out · h), h = FFN blocks (h + w2 · gelu(w1 · rmsnorm(h))) of w_in · concat(src, tgt) + b_in; g from gate_logit (hard: 1[gate_logit > 0]); a closed gate copies tgt and launches nothing (Rust: `tessera::ops::c2c::project`).
///
/// Inputs: `src` (f16|bf16, `[tokens, hs, ds]`), `tgt` (f16|bf16, `[tokens, ht, dt]`), `w_in` (f16|bf16, `[hd, hs * ds + ht * dt]`), `b_in` (f32, `[hd]`), `w1` (f16|bf16, `[blocks, f, hd]`), `w2` (f16|bf16, `[blocks, hd, f]`), `norm` (f32, `[blocks, hd]`), `w_out` (f16|bf16, `[ht * dt, hd]`), `w_s` (f16|bf16, `[ht, hd]`), `gate_logit` (f32, `[1]`).
///
/// Parameters: `gate` (const char*, one of "hard", "soft", NULL = "hard"): hard: 1[gate_logit > 0] (inference); soft: sigmoid(gate_logit / tau); `tau` (float, usually 1): soft gate temperature (> 0); `gelu` (const char*, one of "gelu_erf", "gelu_tanh", NULL = "gelu_erf"): GELU form of the FFN blocks.
///
/// Outputs, allocated by the caller: `out` (f16|bf16, `[tokens, ht, dt]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_c2c_project(
    src: *const DLTensor,
    tgt: *const DLTensor,
    w_in: *const DLTensor,
    b_in: *const DLTensor,
    w1: *const DLTensor,
    w2: *const DLTensor,
    norm: *const DLTensor,
    w_out: *const DLTensor,
    w_s: *const DLTensor,
    gate_logit: *const DLTensor,
    gate: *const std::ffi::c_char,
    tau: f32,
    gelu: *const std::ffi::c_char,
    out: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("c2c.project", || {
        let mut c = Ctx::new("c2c.project");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("src", src) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("tgt", tgt) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_in", w_in) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("b_in", b_in) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w1", w1) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w2", w2) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("norm", norm) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_out", w_out) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_s", w_s) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("gate_logit", gate_logit) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("gate", gate) }?;
        c.param("tau", ParamValue::F32(tau));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("gelu", gelu) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out", out, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `c2c.fuse`: C2C fuse of every target layer t: the key and value projectors of layer t on the sharer layer layer_map[t] (default last_aligned: clamp(t + S - T, 0, S - 1)), receiver token p with sharer token alignment[p] (default p); layers with a closed gate launch nothing (Rust: `tessera::ops::c2c::fuse_layers`).
///
/// Inputs: `src_k` (f16|bf16, `[S, src_tokens, hs, ds]`), `src_v` (f16|bf16, `[S, src_tokens, hs, ds]`), `tgt_k` (f16|bf16, `[T, tokens, ht, dt]`), `tgt_v` (f16|bf16, `[T, tokens, ht, dt]`), `w_in` (f16|bf16, `[T, 2, hd, hs * ds + ht * dt]`), `b_in` (f32, `[T, 2, hd]`), `w1` (f16|bf16, `[T, 2, blocks, f, hd]`), `w2` (f16|bf16, `[T, 2, blocks, hd, f]`), `norm` (f32, `[T, 2, blocks, hd]`), `w_out` (f16|bf16, `[T, 2, ht * dt, hd]`), `w_s` (f16|bf16, `[T, 2, ht, hd]`), `gate_logit` (f32, `[T]`), `alignment` (i32, `[tokens]`, optional: may be NULL), `layer_map` (i32, `[T]`, optional: may be NULL).
///
/// Parameters: `gate` (const char*, one of "hard", "soft", NULL = "hard"): hard: 1[gate_logit > 0] (inference); soft: sigmoid(gate_logit / tau); `tau` (float, usually 1): soft gate temperature (> 0); `gelu` (const char*, one of "gelu_erf", "gelu_tanh", NULL = "gelu_erf"): GELU form of the FFN blocks.
///
/// Outputs, allocated by the caller: `out_k` (f16|bf16, `[T, tokens, ht, dt]`), `out_v` (f16|bf16, `[T, tokens, ht, dt]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_c2c_fuse(
    src_k: *const DLTensor,
    src_v: *const DLTensor,
    tgt_k: *const DLTensor,
    tgt_v: *const DLTensor,
    w_in: *const DLTensor,
    b_in: *const DLTensor,
    w1: *const DLTensor,
    w2: *const DLTensor,
    norm: *const DLTensor,
    w_out: *const DLTensor,
    w_s: *const DLTensor,
    gate_logit: *const DLTensor,
    alignment: *const DLTensor,
    layer_map: *const DLTensor,
    gate: *const std::ffi::c_char,
    tau: f32,
    gelu: *const std::ffi::c_char,
    out_k: *mut DLTensor,
    out_v: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("c2c.fuse", || {
        let mut c = Ctx::new("c2c.fuse");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("src_k", src_k) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("src_v", src_v) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("tgt_k", tgt_k) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("tgt_v", tgt_v) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_in", w_in) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("b_in", b_in) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w1", w1) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w2", w2) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("norm", norm) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_out", w_out) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("w_s", w_s) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("gate_logit", gate_logit) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("alignment", alignment) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("layer_map", layer_map) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("gate", gate) }?;
        c.param("tau", ParamValue::F32(tau));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("gelu", gelu) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out_k", out_k, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("out_v", out_v, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `featcache.received`: attention received per key: Σ_q exp(scale · q·k − lse[h, q]) over the queries that see key k under attention.forward's mask (same problem, V not read), from the row LSE attention.forward returns; summed over heads in head order, or per head; f32, deterministic (Rust: `tessera::ops::featcache::received`).
///
/// Inputs: `q` (f16|bf16, `[total_q, heads, head_dim]`), `k` (f16|bf16, `[total_kv, kv_heads, head_dim]`), `v` (f16|bf16, `[total_kv, kv_heads, head_dim] (not read)`, optional: may be NULL), `cu_seqlens_q` (i32, `[batch + 1]`), `cu_seqlens_kv` (i32, `[batch + 1]`), `q_pos` (i32, `[total_q]`, optional: may be NULL), `kv_pos` (i32, `[total_kv]`, optional: may be NULL), `q_depth` (i32, `[total_q]`, optional: may be NULL), `kv_depth` (i32, `[total_kv]`, optional: may be NULL), `kv_valid` (u8, `[total_kv]`, optional: may be NULL), `lse` (f32, `[heads, total_q]`).
///
/// Parameters: `heads` (uint64_t): query heads H; `kv_heads` (uint64_t): key/value heads (H is a multiple); `head_dim` (uint64_t): D: 64 or 128; `max_seqlen_q` (uint64_t): bound on every query sequence's length (sizes the grid); `max_seqlen_kv` (uint64_t): bound on every key sequence's length; `scale` (float): softmax scale, usually 1/sqrt(D); `mode` (const char*, one of "full", "causal", "duo_causal"): mask: full, causal (by position) or duo_causal (position and depth); `per_head` (uint32_t, usually 0): 1: keep the per-head sums [heads, total_kv]; 0: sum over the heads [total_kv].
///
/// Outputs, allocated by the caller: `received` (f32, `[(per_head * (heads - 1) + 1) * total_kv] ([heads, total_kv] head-major when per_head = 1)`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_featcache_received(
    q: *const DLTensor,
    k: *const DLTensor,
    v: *const DLTensor,
    cu_seqlens_q: *const DLTensor,
    cu_seqlens_kv: *const DLTensor,
    q_pos: *const DLTensor,
    kv_pos: *const DLTensor,
    q_depth: *const DLTensor,
    kv_depth: *const DLTensor,
    kv_valid: *const DLTensor,
    lse: *const DLTensor,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    max_seqlen_q: u64,
    max_seqlen_kv: u64,
    scale: f32,
    mode: *const std::ffi::c_char,
    per_head: u32,
    received: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("featcache.received", || {
        let mut c = Ctx::new("featcache.received");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q", q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("k", k) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("v", v) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_q", cu_seqlens_q) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cu_seqlens_kv", cu_seqlens_kv) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_pos", q_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_pos", kv_pos) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("q_depth", q_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_depth", kv_depth) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("kv_valid", kv_valid) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("lse", lse) }?;
        c.param("heads", ParamValue::Usize(crate::capi::usize_param("featcache.received", "heads", heads)?));
        c.param("kv_heads", ParamValue::Usize(crate::capi::usize_param("featcache.received", "kv_heads", kv_heads)?));
        c.param("head_dim", ParamValue::Usize(crate::capi::usize_param("featcache.received", "head_dim", head_dim)?));
        c.param("max_seqlen_q", ParamValue::Usize(crate::capi::usize_param("featcache.received", "max_seqlen_q", max_seqlen_q)?));
        c.param("max_seqlen_kv", ParamValue::Usize(crate::capi::usize_param("featcache.received", "max_seqlen_kv", max_seqlen_kv)?));
        c.param("scale", ParamValue::F32(scale));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("mode", mode) }?;
        c.param("per_head", ParamValue::U32(per_head));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("received", received, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `featcache.select`: SpecDiff's three token classes: score = his · fut · exp(cf) in f64, ordered by (score descending, index ascending); class 1 (recompute) for the first n - floor(cr · n), class 2 (reuse the last feature) for the longest run at the end whose score sum is <= low_mass · total, class 3 for the rest; c1 lists the class-1 tokens in order; bit-exact (Rust: `tessera::ops::featcache::select`).
///
/// Inputs: `his` (f32, `[n]`), `fut` (f32, `[n]`), `cf` (u32, `[n]`).
///
/// Parameters: `cr` (double): cache ratio, in [0, 1]; `low_mass` (double, usually 0.1): class 2's share of the total score, in [0, 1].
///
/// Outputs, allocated by the caller: `class_` (u8, `[n]`), `c1` (u32, `[n - floor(cr * n)]`: its size depends on the data; pass a 1-D tensor with room for the largest possible result; `c1_len`, when not NULL, receives the number of elements written).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_featcache_select(
    his: *const DLTensor,
    fut: *const DLTensor,
    cf: *const DLTensor,
    cr: f64,
    low_mass: f64,
    class_: *mut DLTensor,
    c1: *mut DLTensor,
    c1_len: *mut i64,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("featcache.select", || {
        let mut c = Ctx::new("featcache.select");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("his", his) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("fut", fut) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cf", cf) }?;
        c.param("cr", ParamValue::F64(cr));
        c.param("low_mass", ParamValue::F64(low_mass));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("class", class_, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("c1", c1, c1_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `featcache.gather`: rows[j, :] = x[c1[j], :]: the recomputed tokens' features, packed (repeated indices allowed); bit-exact (Rust: `tessera::ops::featcache::gather`).
///
/// Inputs: `x` (f32, `[n, width]`), `c1` (u32, `[m]`).
///
/// Parameters: `width` (uint64_t): row width (>= 1).
///
/// Outputs, allocated by the caller: `rows` (f32, `[m, width]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_featcache_gather(
    x: *const DLTensor,
    c1: *const DLTensor,
    width: u64,
    rows: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("featcache.gather", || {
        let mut c = Ctx::new("featcache.gather");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("x", x) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("c1", c1) }?;
        c.param("width", ParamValue::Usize(crate::capi::usize_param("featcache.gather", "width", width)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("rows", rows, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `featcache.scatter`: x[c1[j], :] = rows[j, :], and rows[j] pushed into token c1[j]'s feature ring as its newest feature with stamp t_now (head advances, len saturates at 3, the oldest is overwritten); distinct indices; bit-exact (Rust: `tessera::ops::featcache::scatter`).
///
/// Inputs: `rows` (f32, `[m, width]`), `c1` (u32, `[m]`), `x` (f32, `[n, width] (written in place)`), `ring_feat` (f32, `[3, n, width] (written in place)`), `ring_stamp` (f32, `[3, n] (written in place)`), `ring_head` (u8, `[n] (written in place)`), `ring_len` (u8, `[n] (written in place)`).
///
/// Parameters: `t_now` (float): the timestep of the rows (finite).
///
/// Updated in place: `x`, `ring_feat`, `ring_stamp`, `ring_head`, `ring_len`.
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_featcache_scatter(
    rows: *const DLTensor,
    c1: *const DLTensor,
    x: *const DLTensor,
    ring_feat: *const DLTensor,
    ring_stamp: *const DLTensor,
    ring_head: *const DLTensor,
    ring_len: *const DLTensor,
    t_now: f32,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("featcache.scatter", || {
        let mut c = Ctx::new("featcache.scatter");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("rows", rows) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("c1", c1) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("x", x) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.feat", ring_feat) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.stamp", ring_stamp) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.head", ring_head) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.len", ring_len) }?;
        c.param("t_now", ParamValue::F32(t_now));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `featcache.reuse`: per token: class 1 untouched; class 2: x[i] = the newest cached feature; class 3: x[i] = sum of w_k · feature_k over the (up to 3) cached ones, w_k ∝ e^(-k)·(stamp_k - t_now) (all gaps 0: the newest), f64, rounded once; bit-exact (Rust: `tessera::ops::featcache::reuse`).
///
/// Inputs: `class_` (u8, `[n]`), `ring_feat` (f32, `[3, n, width]`), `ring_stamp` (f32, `[3, n]`), `ring_head` (u8, `[n]`), `ring_len` (u8, `[n]`), `x` (f32, `[n, width] (written in place)`).
///
/// Parameters: `t_now` (float): the current timestep (<= every stamp used).
///
/// Updated in place: `x`.
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_featcache_reuse(
    class_: *const DLTensor,
    ring_feat: *const DLTensor,
    ring_stamp: *const DLTensor,
    ring_head: *const DLTensor,
    ring_len: *const DLTensor,
    x: *const DLTensor,
    t_now: f32,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("featcache.reuse", || {
        let mut c = Ctx::new("featcache.reuse");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("class", class_) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.feat", ring_feat) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.stamp", ring_stamp) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.head", ring_head) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("ring.len", ring_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("x", x) }?;
        c.param("t_now", ParamValue::F32(t_now));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `featcache.age`: cf[i] = 0 where class[i] == 1, else cf[i] + 1 saturating at 255 (the select op's exp table bound) (Rust: `tessera::ops::featcache::age`).
///
/// Inputs: `class_` (u8, `[n]`), `cf` (u32, `[n] (written in place)`).
///
/// Updated in place: `cf`.
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_featcache_age(
    class_: *const DLTensor,
    cf: *const DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("featcache.age", || {
        let mut c = Ctx::new("featcache.age");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("class", class_) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("cf", cf) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gs.project`: 3DGS EWA projection (gsplat's conventions, f32): means2d = (fx·x/z + cx, fy·y/z + cy), view depth z, conic = inverse of J W Σ Wᵀ Jᵀ + 0.3·I, radius = ceil(3·√λ_max); a Gaussian culled (behind near, past far, det <= 0, off the image) has radius 0 and zeros; non-finite inputs, zero quaternions and negative scales are errors naming the first bad Gaussian (Rust: `tessera::ops::gs::project::project`).
///
/// Inputs: `means` (f32, `[N, 3]`), `quats` (f32, `[N, 4]`), `scales` (f32, `[N, 3]`), `viewmat` (f32, `[4, 4]`), `K` (f32, `[3, 3]`).
///
/// Parameters: `width` (uint32_t): image width in pixels (>= 1); `height` (uint32_t): image height in pixels (>= 1); `near` (float, usually 0.01): near plane: Gaussians with view depth z < near are culled (> 0); `far` (float, usually 1e10): far plane: Gaussians with z > far are culled (> near; inf allowed).
///
/// Outputs, allocated by the caller: `means2d` (f32, `[N, 2]`), `depths` (f32, `[N]`), `conics` (f32, `[N, 3]`), `radii` (i32, `[N]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gs_project(
    means: *const DLTensor,
    quats: *const DLTensor,
    scales: *const DLTensor,
    viewmat: *const DLTensor,
    K: *const DLTensor,
    width: u32,
    height: u32,
    near: f32,
    far: f32,
    means2d: *mut DLTensor,
    depths: *mut DLTensor,
    conics: *mut DLTensor,
    radii: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gs.project", || {
        let mut c = Ctx::new("gs.project");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("means", means) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("quats", quats) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("scales", scales) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("viewmat", viewmat) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("K", K) }?;
        c.param("width", ParamValue::U32(width));
        c.param("height", ParamValue::U32(height));
        c.param("near", ParamValue::F32(near));
        c.param("far", ParamValue::F32(far));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("means2d", means2d, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("depths", depths, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("conics", conics, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("radii", radii, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gs.bin`: 3DGS tile binning: every Gaussian with radius > 0 touches the 16×16 tiles its [mean2d ± radius] box overlaps; the (tile << 32 | depth bits) keys stably sorted by our device radix sort (the keys themselves are u64, not a table dtype, and not returned), the Gaussian id of each and per-tile [start, end) ranges; bit-exact (Rust: `tessera::ops::gs::bin::bin`).
///
/// Inputs: `means2d` (f32, `[N, 2]`), `depths` (f32, `[N]`), `radii` (i32, `[N]`).
///
/// Parameters: `width` (uint32_t): image width in pixels (>= 1); `height` (uint32_t): image height in pixels (>= 1).
///
/// Outputs, allocated by the caller: `ids` (u32, `[intersections(means2d, radii)]`: its size depends on the data; pass a 1-D tensor with room for N * ceil(width / 16) * ceil(height / 16) elements; `ids_len`, when not NULL, receives the number of elements written), `tile_ranges` (u32, `[ceil(height / 16) * ceil(width / 16), 2]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gs_bin(
    means2d: *const DLTensor,
    depths: *const DLTensor,
    radii: *const DLTensor,
    width: u32,
    height: u32,
    ids: *mut DLTensor,
    ids_len: *mut i64,
    tile_ranges: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gs.bin", || {
        let mut c = Ctx::new("gs.bin");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("means2d", means2d) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("depths", depths) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("radii", radii) }?;
        c.param("width", ParamValue::U32(width));
        c.param("height", ParamValue::U32(height));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("ids", ids, ids_len) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("tile_ranges", tile_ranges, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gs.render`: 3DGS rasterisation as gsplat's rasterization() for one camera: project, SH colours (coeffs), bin, then front-to-back alpha blending per pixel (α = min(0.99, o·exp(power)), skipped below 1/255, stop before T < 1e-4), image = Σ c·α·T + T_final·background, alpha = 1 - T_final; layout balanced stages the attributes per tile (BalanceGS), with outputs identical to baseline (Rust: `tessera::ops::gs::pipeline::rasterize`).
///
/// Inputs: `means` (f32, `[N, 3]`), `quats` (f32, `[N, 4]`), `scales` (f32, `[N, 3]`), `opacities` (f32, `[N]`), `colors` (f32, `[N, 3]`, optional: may be NULL), `coeffs` (f32, `[N, num_coeffs, 3]`, optional: may be NULL), `viewmat` (f32, `[4, 4]`), `K` (f32, `[3, 3]`), `background` (f32, `[3]`, optional: may be NULL).
///
/// Parameters: `width` (uint32_t): image width in pixels (>= 1); `height` (uint32_t): image height in pixels (>= 1); `near` (float, usually 0.01): near plane: Gaussians with view depth z < near are culled (> 0); `far` (float, usually 1e10): far plane: Gaussians with z > far are culled (> near; inf allowed); `sh_degree` (int32_t, usually -1): SH degree evaluated from coeffs (0..=3, num_coeffs >= (sh_degree + 1)^2); -1: the highest that num_coeffs holds; must be -1 with colors (RGB); `layout` (const char*, one of "baseline", "balanced", NULL = "baseline"): baseline: attributes read by id in sorted order; balanced: BalanceGS's per-tile reordered arrays staged in shared memory (identical outputs).
///
/// Outputs, allocated by the caller: `image` (f32, `[height, width, 3]`), `alpha` (f32, `[height, width]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gs_render(
    means: *const DLTensor,
    quats: *const DLTensor,
    scales: *const DLTensor,
    opacities: *const DLTensor,
    colors: *const DLTensor,
    coeffs: *const DLTensor,
    viewmat: *const DLTensor,
    K: *const DLTensor,
    background: *const DLTensor,
    width: u32,
    height: u32,
    near: f32,
    far: f32,
    sh_degree: i32,
    layout: *const std::ffi::c_char,
    image: *mut DLTensor,
    alpha: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gs.render", || {
        let mut c = Ctx::new("gs.render");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("means", means) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("quats", quats) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("scales", scales) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("opacities", opacities) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("colors", colors) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("coeffs", coeffs) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("viewmat", viewmat) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("K", K) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("background", background) }?;
        c.param("width", ParamValue::U32(width));
        c.param("height", ParamValue::U32(height));
        c.param("near", ParamValue::F32(near));
        c.param("far", ParamValue::F32(far));
        c.param("sh_degree", ParamValue::I32(sh_degree));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("layout", layout) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("image", image, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("alpha", alpha, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gs.render_backward`: the gradients of gs.render: runs the forward again, then the render backward (back to front, per-Gaussian atomics: the last bits vary between GPU runs), the projection backward and, for coeffs, the SH backward (its mean gradient added to v_means); v_colors is the gradient of the RGB colours rendered (the SH colours for coeffs); v_coeffs is empty ([0]) for RGB colors (Rust: `tessera::ops::gs::pipeline::rasterize_backward`).
///
/// Inputs: `means` (f32, `[N, 3]`), `quats` (f32, `[N, 4]`), `scales` (f32, `[N, 3]`), `opacities` (f32, `[N]`), `colors` (f32, `[N, 3]`, optional: may be NULL), `coeffs` (f32, `[N, num_coeffs, 3]`, optional: may be NULL), `viewmat` (f32, `[4, 4]`), `K` (f32, `[3, 3]`), `background` (f32, `[3]`, optional: may be NULL), `v_image` (f32, `[height, width, 3]`), `v_alpha` (f32, `[height, width]`, optional: may be NULL).
///
/// Parameters: `width` (uint32_t): image width in pixels (>= 1); `height` (uint32_t): image height in pixels (>= 1); `near` (float, usually 0.01): near plane: Gaussians with view depth z < near are culled (> 0); `far` (float, usually 1e10): far plane: Gaussians with z > far are culled (> near; inf allowed); `sh_degree` (int32_t, usually -1): SH degree evaluated from coeffs (0..=3, num_coeffs >= (sh_degree + 1)^2); -1: the highest that num_coeffs holds; must be -1 with colors (RGB); `layout` (const char*, one of "baseline", "balanced", NULL = "baseline"): baseline: attributes read by id in sorted order; balanced: BalanceGS's per-tile reordered arrays staged in shared memory (identical outputs).
///
/// Outputs, allocated by the caller: `v_means` (f32, `[N, 3]`), `v_quats` (f32, `[N, 4]`), `v_scales` (f32, `[N, 3]`), `v_opacities` (f32, `[N]`), `v_colors` (f32, `[N, 3]`), `v_coeffs` (f32, `[N, num_coeffs, 3]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gs_render_backward(
    means: *const DLTensor,
    quats: *const DLTensor,
    scales: *const DLTensor,
    opacities: *const DLTensor,
    colors: *const DLTensor,
    coeffs: *const DLTensor,
    viewmat: *const DLTensor,
    K: *const DLTensor,
    background: *const DLTensor,
    v_image: *const DLTensor,
    v_alpha: *const DLTensor,
    width: u32,
    height: u32,
    near: f32,
    far: f32,
    sh_degree: i32,
    layout: *const std::ffi::c_char,
    v_means: *mut DLTensor,
    v_quats: *mut DLTensor,
    v_scales: *mut DLTensor,
    v_opacities: *mut DLTensor,
    v_colors: *mut DLTensor,
    v_coeffs: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gs.render_backward", || {
        let mut c = Ctx::new("gs.render_backward");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("means", means) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("quats", quats) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("scales", scales) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("opacities", opacities) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("colors", colors) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("coeffs", coeffs) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("viewmat", viewmat) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("K", K) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("background", background) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("v_image", v_image) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("v_alpha", v_alpha) }?;
        c.param("width", ParamValue::U32(width));
        c.param("height", ParamValue::U32(height));
        c.param("near", ParamValue::F32(near));
        c.param("far", ParamValue::F32(far));
        c.param("sh_degree", ParamValue::I32(sh_degree));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("layout", layout) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("v_means", v_means, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("v_quats", v_quats, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("v_scales", v_scales, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("v_opacities", v_opacities, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("v_colors", v_colors, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("v_coeffs", v_coeffs, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gmscore.forward`: DD2's conditional score, streamed over the codebook (online log-sum-exp, the [P, V] weights never materialised): per position, logit_v = ln p_v - |x_t - alpha e_v|^2 / (2 sigma^2), lse = logsumexp_v logit_v, score = (sum_v w_v alpha e_v - x_t) / sigma^2 with w_v = exp(logit_v - lse); rows of p finite, >= 0, summing to 1 within 1e-3; sigma in [1e-6, 1e6]; f32, deterministic (Rust: `tessera::ops::gmscore::forward`).
///
/// Inputs: `codebook` (f32, `[V, d]`), `p` (f32, `[P, V]`), `x_t` (f32, `[P, d]`), `alpha` (f32, `[P]`), `sigma` (f32, `[P]`).
///
/// Parameters: `d` (uint64_t): codeword width, 8..=64.
///
/// Outputs, allocated by the caller: `score` (f32, `[P, d]`), `lse` (f32, `[P]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gmscore_forward(
    codebook: *const DLTensor,
    p: *const DLTensor,
    x_t: *const DLTensor,
    alpha: *const DLTensor,
    sigma: *const DLTensor,
    d: u64,
    score: *mut DLTensor,
    lse: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gmscore.forward", || {
        let mut c = Ctx::new("gmscore.forward");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("codebook", codebook) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("p", p) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("x_t", x_t) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("alpha", alpha) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("sigma", sigma) }?;
        c.param("d", ParamValue::Usize(crate::capi::usize_param("gmscore.forward", "d", d)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("score", score, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("lse", lse, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gmscore.backward`: gradients of L = sum over positions of |s_gen - score|^2 (score and lse: gmscore.forward's for the same inputs): grad_s_gen = 2u, grad_x_t = 2u / sigma^2 - (2 alpha^2 / sigma^4) Cov_w(e) u with u = s_gen - score, the covariance from a second stream over the codebook with the saved lse; f32, deterministic (Rust: `tessera::ops::gmscore::backward`).
///
/// Inputs: `codebook` (f32, `[V, d]`), `p` (f32, `[P, V]`), `x_t` (f32, `[P, d]`), `alpha` (f32, `[P]`), `sigma` (f32, `[P]`), `s_gen` (f32, `[P, d]`), `score` (f32, `[P, d]`), `lse` (f32, `[P]`).
///
/// Parameters: `d` (uint64_t): codeword width, 8..=64.
///
/// Outputs, allocated by the caller: `grad_s_gen` (f32, `[P, d]`), `grad_x_t` (f32, `[P, d]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gmscore_backward(
    codebook: *const DLTensor,
    p: *const DLTensor,
    x_t: *const DLTensor,
    alpha: *const DLTensor,
    sigma: *const DLTensor,
    s_gen: *const DLTensor,
    score: *const DLTensor,
    lse: *const DLTensor,
    d: u64,
    grad_s_gen: *mut DLTensor,
    grad_x_t: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gmscore.backward", || {
        let mut c = Ctx::new("gmscore.backward");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("codebook", codebook) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("p", p) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("x_t", x_t) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("alpha", alpha) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("sigma", sigma) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("s_gen", s_gen) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("score", score) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("lse", lse) }?;
        c.param("d", ParamValue::Usize(crate::capi::usize_param("gmscore.backward", "d", d)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("grad_s_gen", grad_s_gen, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("grad_x_t", grad_x_t, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gemm.dense`: d = epilogue(a · bᵀ) on tensor cores, f32 accumulation; epilogue: + bias[n], activation, × row_scale[m], + residual[m, n], in that order (Rust: `tessera::ops::gemm::dense`).
///
/// Inputs: `a` (f16|bf16, `[m, k]`), `b` (f16|bf16, `[n, k]`), `epi_bias` (f32, `[n]`, optional: may be NULL), `epi_row_scale` (f32, `[m]`, optional: may be NULL), `epi_residual` (f32, `[m, n]`, optional: may be NULL).
///
/// Parameters: `m` (uint64_t): rows M of a and d; `n` (uint64_t): output columns N; `k` (uint64_t): reduction length K; `epi_activation` (const char*, one of "none", "gelu_tanh", "gelu_erf", "silu", NULL = "none"): activation after the bias.
///
/// Outputs, allocated by the caller: `d` (f32, `[m, n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gemm_dense(
    a: *const DLTensor,
    b: *const DLTensor,
    epi_bias: *const DLTensor,
    epi_row_scale: *const DLTensor,
    epi_residual: *const DLTensor,
    m: u64,
    n: u64,
    k: u64,
    epi_activation: *const std::ffi::c_char,
    d: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gemm.dense", || {
        let mut c = Ctx::new("gemm.dense");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("a", a) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("b", b) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.bias", epi_bias) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.row_scale", epi_row_scale) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.residual", epi_residual) }?;
        c.param("m", ParamValue::Usize(crate::capi::usize_param("gemm.dense", "m", m)?));
        c.param("n", ParamValue::Usize(crate::capi::usize_param("gemm.dense", "n", n)?));
        c.param("k", ParamValue::Usize(crate::capi::usize_param("gemm.dense", "k", k)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("epi.activation", epi_activation) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("d", d, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gemm.dense_swiglu`: d = silu(a · gateᵀ + bias[n]) · (a · upᵀ + bias[n + N]) with b = [gate; up] ([2n, k]), then × row_scale[m], + residual[m, n] (Rust: `tessera::ops::gemm::dense`).
///
/// Inputs: `a` (f16|bf16, `[m, k]`), `b` (f16|bf16, `[2 * n, k]`), `epi_bias` (f32, `[2 * n]`, optional: may be NULL), `epi_row_scale` (f32, `[m]`, optional: may be NULL), `epi_residual` (f32, `[m, n]`, optional: may be NULL).
///
/// Parameters: `m` (uint64_t): rows M of a and d; `n` (uint64_t): output columns N; `k` (uint64_t): reduction length K.
///
/// Outputs, allocated by the caller: `d` (f32, `[m, n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gemm_dense_swiglu(
    a: *const DLTensor,
    b: *const DLTensor,
    epi_bias: *const DLTensor,
    epi_row_scale: *const DLTensor,
    epi_residual: *const DLTensor,
    m: u64,
    n: u64,
    k: u64,
    d: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gemm.dense_swiglu", || {
        let mut c = Ctx::new("gemm.dense_swiglu");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("a", a) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("b", b) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.bias", epi_bias) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.row_scale", epi_row_scale) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.residual", epi_residual) }?;
        c.param("m", ParamValue::Usize(crate::capi::usize_param("gemm.dense_swiglu", "m", m)?));
        c.param("n", ParamValue::Usize(crate::capi::usize_param("gemm.dense_swiglu", "n", n)?));
        c.param("k", ParamValue::Usize(crate::capi::usize_param("gemm.dense_swiglu", "k", k)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("d", d, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gemm.grouped`: grouped GEMM over row segments: rows offsets[g]..offsets[g + 1] of d = epilogue(a · b[g]ᵀ); rows outside every group are 0; offsets checked on the device (Rust: `tessera::ops::gemm::grouped`).
///
/// Inputs: `a` (f16|bf16, `[m, k]`), `b` (f16|bf16, `[groups, n, k]`), `offsets` (i32, `[groups + 1]`), `epi_bias` (f32, `[n]`, optional: may be NULL), `epi_row_scale` (f32, `[m]`, optional: may be NULL), `epi_residual` (f32, `[m, n]`, optional: may be NULL).
///
/// Parameters: `m` (uint64_t): rows M of a and d; `n` (uint64_t): output columns N; `k` (uint64_t): reduction length K; `epi_activation` (const char*, one of "none", "gelu_tanh", "gelu_erf", "silu", NULL = "none"): activation after the bias.
///
/// Outputs, allocated by the caller: `d` (f32, `[m, n]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gemm_grouped(
    a: *const DLTensor,
    b: *const DLTensor,
    offsets: *const DLTensor,
    epi_bias: *const DLTensor,
    epi_row_scale: *const DLTensor,
    epi_residual: *const DLTensor,
    m: u64,
    n: u64,
    k: u64,
    epi_activation: *const std::ffi::c_char,
    d: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gemm.grouped", || {
        let mut c = Ctx::new("gemm.grouped");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("a", a) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("b", b) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("offsets", offsets) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.bias", epi_bias) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.row_scale", epi_row_scale) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("epi.residual", epi_residual) }?;
        c.param("m", ParamValue::Usize(crate::capi::usize_param("gemm.grouped", "m", m)?));
        c.param("n", ParamValue::Usize(crate::capi::usize_param("gemm.grouped", "n", n)?));
        c.param("k", ParamValue::Usize(crate::capi::usize_param("gemm.grouped", "k", k)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.param_enum("epi.activation", epi_activation) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("d", d, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// `gemm.grouped_swiglu`: grouped SwiGLU: rows offsets[g]..offsets[g + 1] of d = silu(a · gate[g]ᵀ) · (a · up[g]ᵀ); rows outside every group are 0 (Rust: `tessera::ops::gemm::grouped_swiglu`).
///
/// Inputs: `a` (f16|bf16, `[m, k]`), `gate` (f16|bf16, `[groups, f, k]`), `up` (f16|bf16, `[groups, f, k]`), `offsets` (i32, `[groups + 1]`).
///
/// Parameters: `m` (uint64_t): rows M of a and d; `f` (uint64_t): output columns F (rows of each gate / up); `k` (uint64_t): reduction length K.
///
/// Outputs, allocated by the caller: `d` (f32, `[m, f]`).
///
/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host executor (`tessera_set_host_executor`) and `stream` is ignored.
///
/// # Safety
/// Each tensor pointer is NULL (only where allowed) or points to a valid `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work queued on `stream` has finished), and no output aliases another tensor.
#[no_mangle]
pub unsafe extern "C" fn tessera_gemm_grouped_swiglu(
    a: *const DLTensor,
    gate: *const DLTensor,
    up: *const DLTensor,
    offsets: *const DLTensor,
    m: u64,
    f: u64,
    k: u64,
    d: *mut DLTensor,
    stream: *mut c_void,
) -> TesseraStatus {
    entry("gemm.grouped_swiglu", || {
        let mut c = Ctx::new("gemm.grouped_swiglu");
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("a", a) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("gate", gate) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("up", up) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.input("offsets", offsets) }?;
        c.param("m", ParamValue::Usize(crate::capi::usize_param("gemm.grouped_swiglu", "m", m)?));
        c.param("f", ParamValue::Usize(crate::capi::usize_param("gemm.grouped_swiglu", "f", f)?));
        c.param("k", ParamValue::Usize(crate::capi::usize_param("gemm.grouped_swiglu", "k", k)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { c.output("d", d, std::ptr::null_mut()) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { c.run(stream) }
    })
}

/// Call the generated function of op `name` with `args` in its C order (see
         /// [`super::codegen::c_args`]): for tests and bindings that work by name. `None` when
         /// there is no such op or the arguments do not match its signature.
         ///
/// # Safety
/// As the generated function's.
         pub unsafe fn call(name: &str, args: &[CArg], stream: *mut c_void) -> Option<TesseraStatus> {
             match name {
        "bitmask.sparsify" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::F32(a2), CArg::Out(a3), CArg::Out(a4), CArg::Len(a5)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_bitmask_sparsify(*a0, *a1, *a2, *a3, *a4, *a5, stream) })
            }
            _ => None,
        },
        "bitmask.densify" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Out(a3)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_bitmask_densify(*a0, *a1, *a2, *a3, stream) })
            }
            _ => None,
        },
        "codec.gather" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::U64(a2), CArg::Out(a3)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_gather(*a0, *a1, *a2, *a3, stream) })
            }
            _ => None,
        },
        "codec.delta_encode" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Out(a2), CArg::Len(a3), CArg::Out(a4)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_delta_encode(*a0, *a1, *a2, *a3, *a4, stream) })
            }
            _ => None,
        },
        "codec.delta_decode" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Out(a3)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_delta_decode(*a0, *a1, *a2, *a3, stream) })
            }
            _ => None,
        },
        "codec.delta_f32" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Out(a2)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_delta_f32(*a0, *a1, *a2, stream) })
            }
            _ => None,
        },
        "codec.to_f32" => match args {
            [CArg::Tensor(a0), CArg::Out(a1)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_to_f32(*a0, *a1, stream) })
            }
            _ => None,
        },
        "codec.kmeans" => match args {
            [CArg::Tensor(a0), CArg::U32(a1), CArg::U32(a2), CArg::F32(a3), CArg::Out(a4), CArg::Out(a5)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_kmeans(*a0, *a1, *a2, *a3, *a4, *a5, stream) })
            }
            _ => None,
        },
        "codec.pack_indices" => match args {
            [CArg::Tensor(a0), CArg::U32(a1), CArg::Out(a2), CArg::Len(a3), CArg::Out(a4)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_pack_indices(*a0, *a1, *a2, *a3, *a4, stream) })
            }
            _ => None,
        },
        "codec.dequantize" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::U64(a3), CArg::List(a4, a4_len), CArg::Out(a5)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_codec_dequantize(*a0, *a1, *a2, *a3, *a4, *a4_len, *a5, stream) })
            }
            _ => None,
        },
        "attention.forward" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::Tensor(a9), CArg::U64(a10), CArg::U64(a11), CArg::U64(a12), CArg::U64(a13), CArg::U64(a14), CArg::F32(a15), CArg::Str(a16), CArg::Str(a17), CArg::Out(a18), CArg::Out(a19)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_attention_forward(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, *a15, *a16, *a17, *a18, *a19, stream) })
            }
            _ => None,
        },
        "attention.decode" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::Tensor(a9), CArg::U64(a10), CArg::U64(a11), CArg::U64(a12), CArg::U64(a13), CArg::U64(a14), CArg::F32(a15), CArg::Str(a16), CArg::Str(a17), CArg::U64(a18), CArg::Out(a19), CArg::Out(a20)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_attention_decode(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, *a15, *a16, *a17, *a18, *a19, *a20, stream) })
            }
            _ => None,
        },
        "attention.decode_partials" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::Tensor(a9), CArg::U64(a10), CArg::U64(a11), CArg::U64(a12), CArg::U64(a13), CArg::U64(a14), CArg::F32(a15), CArg::Str(a16), CArg::Str(a17), CArg::U64(a18), CArg::Out(a19), CArg::Out(a20)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_attention_decode_partials(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, *a15, *a16, *a17, *a18, *a19, *a20, stream) })
            }
            _ => None,
        },
        "attention.merge" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::U64(a2), CArg::U64(a3), CArg::U64(a4), CArg::U64(a5), CArg::Out(a6), CArg::Out(a7)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_attention_merge(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, stream) })
            }
            _ => None,
        },
        "tah.select_hard" => match args {
            [CArg::Tensor(a0), CArg::F64(a1), CArg::Out(a2), CArg::Len(a3)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_tah_select_hard(*a0, *a1, *a2, *a3, stream) })
            }
            _ => None,
        },
        "tah.gather_rows" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::U64(a2), CArg::Out(a3)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_tah_gather_rows(*a0, *a1, *a2, *a3, stream) })
            }
            _ => None,
        },
        "tah.scatter_rows" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::U64(a3)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_tah_scatter_rows(*a0, *a1, *a2, *a3, stream) })
            }
            _ => None,
        },
        "tah.copy_range" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::U64(a2), CArg::U64(a3), CArg::U64(a4)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_tah_copy_range(*a0, *a1, *a2, *a3, *a4, stream) })
            }
            _ => None,
        },
        "tah.next_depth_input" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::U64(a2), CArg::U64(a3), CArg::U64(a4), CArg::Out(a5), CArg::Out(a6), CArg::Out(a7)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_tah_next_depth_input(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, stream) })
            }
            _ => None,
        },
        "tah.accumulate_logits" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_tah_accumulate_logits(*a0, *a1, stream) })
            }
            _ => None,
        },
        "moe.align" => match args {
            [CArg::Tensor(a0), CArg::U64(a1), CArg::U64(a2), CArg::U64(a3), CArg::Out(a4), CArg::Out(a5), CArg::Out(a6)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_moe_align(*a0, *a1, *a2, *a3, *a4, *a5, *a6, stream) })
            }
            _ => None,
        },
        "moe.route" => match args {
            [CArg::Tensor(a0), CArg::U64(a1), CArg::U64(a2), CArg::U64(a3), CArg::Str(a4), CArg::U64(a5), CArg::U64(a6), CArg::U64(a7), CArg::U64(a8), CArg::U64(a9), CArg::Out(a10), CArg::Out(a11)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_moe_route(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, stream) })
            }
            _ => None,
        },
        "moe.layer" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::U64(a5), CArg::U64(a6), CArg::U64(a7), CArg::Str(a8), CArg::U64(a9), CArg::U64(a10), CArg::U64(a11), CArg::U64(a12), CArg::U64(a13), CArg::Out(a14)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_moe_layer(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, stream) })
            }
            _ => None,
        },
        "moe.permute" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::U64(a4), CArg::U64(a5), CArg::U64(a6), CArg::U64(a7), CArg::Out(a8), CArg::Out(a9), CArg::Out(a10)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_moe_permute(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, stream) })
            }
            _ => None,
        },
        "moe.combine" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::U64(a3), CArg::U64(a4), CArg::Out(a5)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_moe_combine(*a0, *a1, *a2, *a3, *a4, *a5, stream) })
            }
            _ => None,
        },
        "moe.load" => match args {
            [CArg::Tensor(a0), CArg::U64(a1), CArg::U64(a2), CArg::Out(a3), CArg::Out(a4)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_moe_load(*a0, *a1, *a2, *a3, *a4, stream) })
            }
            _ => None,
        },
        "c2c.project" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::Tensor(a9), CArg::Str(a10), CArg::F32(a11), CArg::Str(a12), CArg::Out(a13)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_c2c_project(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, stream) })
            }
            _ => None,
        },
        "c2c.fuse" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::Tensor(a9), CArg::Tensor(a10), CArg::Tensor(a11), CArg::Tensor(a12), CArg::Tensor(a13), CArg::Str(a14), CArg::F32(a15), CArg::Str(a16), CArg::Out(a17), CArg::Out(a18)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_c2c_fuse(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, *a15, *a16, *a17, *a18, stream) })
            }
            _ => None,
        },
        "featcache.received" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::Tensor(a9), CArg::Tensor(a10), CArg::U64(a11), CArg::U64(a12), CArg::U64(a13), CArg::U64(a14), CArg::U64(a15), CArg::F32(a16), CArg::Str(a17), CArg::U32(a18), CArg::Out(a19)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_featcache_received(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, *a15, *a16, *a17, *a18, *a19, stream) })
            }
            _ => None,
        },
        "featcache.select" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::F64(a3), CArg::F64(a4), CArg::Out(a5), CArg::Out(a6), CArg::Len(a7)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_featcache_select(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, stream) })
            }
            _ => None,
        },
        "featcache.gather" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::U64(a2), CArg::Out(a3)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_featcache_gather(*a0, *a1, *a2, *a3, stream) })
            }
            _ => None,
        },
        "featcache.scatter" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::F32(a7)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_featcache_scatter(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, stream) })
            }
            _ => None,
        },
        "featcache.reuse" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::F32(a6)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_featcache_reuse(*a0, *a1, *a2, *a3, *a4, *a5, *a6, stream) })
            }
            _ => None,
        },
        "featcache.age" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_featcache_age(*a0, *a1, stream) })
            }
            _ => None,
        },
        "gs.project" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::U32(a5), CArg::U32(a6), CArg::F32(a7), CArg::F32(a8), CArg::Out(a9), CArg::Out(a10), CArg::Out(a11), CArg::Out(a12)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gs_project(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, stream) })
            }
            _ => None,
        },
        "gs.bin" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::U32(a3), CArg::U32(a4), CArg::Out(a5), CArg::Len(a6), CArg::Out(a7)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gs_bin(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, stream) })
            }
            _ => None,
        },
        "gs.render" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::U32(a9), CArg::U32(a10), CArg::F32(a11), CArg::F32(a12), CArg::I32(a13), CArg::Str(a14), CArg::Out(a15), CArg::Out(a16)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gs_render(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, *a15, *a16, stream) })
            }
            _ => None,
        },
        "gs.render_backward" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::Tensor(a8), CArg::Tensor(a9), CArg::Tensor(a10), CArg::U32(a11), CArg::U32(a12), CArg::F32(a13), CArg::F32(a14), CArg::I32(a15), CArg::Str(a16), CArg::Out(a17), CArg::Out(a18), CArg::Out(a19), CArg::Out(a20), CArg::Out(a21), CArg::Out(a22)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gs_render_backward(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, *a11, *a12, *a13, *a14, *a15, *a16, *a17, *a18, *a19, *a20, *a21, *a22, stream) })
            }
            _ => None,
        },
        "gmscore.forward" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::U64(a5), CArg::Out(a6), CArg::Out(a7)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gmscore_forward(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, stream) })
            }
            _ => None,
        },
        "gmscore.backward" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::Tensor(a6), CArg::Tensor(a7), CArg::U64(a8), CArg::Out(a9), CArg::Out(a10)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gmscore_backward(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, stream) })
            }
            _ => None,
        },
        "gemm.dense" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::U64(a5), CArg::U64(a6), CArg::U64(a7), CArg::Str(a8), CArg::Out(a9)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gemm_dense(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, stream) })
            }
            _ => None,
        },
        "gemm.dense_swiglu" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::U64(a5), CArg::U64(a6), CArg::U64(a7), CArg::Out(a8)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gemm_dense_swiglu(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, stream) })
            }
            _ => None,
        },
        "gemm.grouped" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::Tensor(a4), CArg::Tensor(a5), CArg::U64(a6), CArg::U64(a7), CArg::U64(a8), CArg::Str(a9), CArg::Out(a10)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gemm_grouped(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, *a8, *a9, *a10, stream) })
            }
            _ => None,
        },
        "gemm.grouped_swiglu" => match args {
            [CArg::Tensor(a0), CArg::Tensor(a1), CArg::Tensor(a2), CArg::Tensor(a3), CArg::U64(a4), CArg::U64(a5), CArg::U64(a6), CArg::Out(a7)] => {
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe { tessera_gemm_grouped_swiglu(*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7, stream) })
            }
            _ => None,
        },
        _ => None,
    }
}
