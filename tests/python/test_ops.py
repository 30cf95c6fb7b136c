"""Tests of the Python package `tessera` on host tensors (numpy), on the native CPU path and the
host SIMT executor: every op of the table is reachable, numbers against numpy, DLPack in and out,
zero-copy, out=, errors. scripts/python-test.sh builds the package and runs these."""

import gc
import inspect
import sys
import threading
import time

import numpy as np
import pytest

import tessera

T = tessera.ops
EXECUTORS = ["cpu", "simt"]


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------
# The package mirrors the op table


def test_every_op_of_the_table_is_a_function():
    table = tessera.op_table()
    assert len(table) >= 20
    for spec in table:
        family, op = spec["name"].split(".", 1)
        fn = getattr(getattr(T, family), op)
        assert callable(fn)
        assert fn.spec["name"] == spec["name"]
        sig = inspect.signature(fn)
        names = [tessera.python_name(t["name"]) for t in spec["inputs"]] + [
            tessera.python_name(p["name"]) for p in spec["params"]
        ]
        assert list(sig.parameters) == names + ["out", "executor", "stream"]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
        for t in spec["inputs"]:
            p = sig.parameters[tessera.python_name(t["name"])]
            assert (p.default is None) if t["optional"] else (p.default is inspect.Parameter.empty)
        doc = fn.__doc__
        assert spec["summary"].lower()[:20] in doc.lower()
        assert spec["rust"] in doc
        for t in spec["inputs"] + spec["outputs"]:
            assert tessera.python_name(t["name"]) in doc and t["shape"] in doc
        for p in spec["params"]:
            assert tessera.python_name(p["name"]) in doc and p["doc"] in doc
        assert fn.Result._fields == tuple(tessera.python_name(t["name"]) for t in spec["outputs"])
    # import paths
    import tessera.ops.attention as attention

    assert attention.forward is T.attention.forward
    from tessera.ops import codec

    assert codec.delta_decode is T.codec.delta_decode


def test_python_names():
    assert tessera.python_name("packed.words") == "packed_words"
    assert tessera.python_name("indices.count") == "indices_count"
    assert tessera.python_name("new") == "new"
    assert tessera.python_name("lambda") == "lambda_"
    sig = inspect.signature(T.codec.delta_decode)
    assert list(sig.parameters)[:3] == ["base_vals", "packed_words", "packed_widths"]
    sig = inspect.signature(T.attention.forward)
    assert sig.parameters["path"].default == "auto"
    assert sig.parameters["mode"].default is inspect.Parameter.empty
    assert sig.parameters["executor"].default == "cpu"
    assert inspect.signature(T.bitmask.sparsify).parameters["tau"].default == 0


# ------------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize("executor", EXECUTORS + ["simt64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sparsify_densify_round_trip(executor, dtype):
    r = rng(1)
    base = r.standard_normal(1000).astype(dtype)
    new = base.copy()
    new[::7] += 1
    new[5] = base[5]
    s = T.bitmask.sparsify(base=base, new=new, executor=executor)
    changed = base != new
    # mask: bit i of word i // 32 is set where new differs from base
    bits = np.unpackbits(np.asarray(s.mask).view(np.uint8), bitorder="little")[:1000]
    assert np.array_equal(bits.astype(bool), changed)
    assert s.values.shape == (int(changed.sum()),)
    assert s.values.dtype == {np.float32: "f32", np.float16: "f16"}[dtype]
    assert np.array_equal(np.from_dlpack(s.values), new[changed])
    d = T.bitmask.densify(base=base, mask=s.mask, values=s.values, executor=executor)
    assert np.array_equal(np.from_dlpack(d.out), new)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_sparsify_out_with_spare_capacity(executor):
    r = rng(2)
    base = r.standard_normal(500).astype(np.float32)
    new = base.copy()
    new[::10] -= 2
    n = int((new != base).sum())
    mask = np.zeros(16, np.uint32)
    values = np.full(500, -7.0, np.float32)  # capacity 500 > popcount
    s = T.bitmask.sparsify(base=base, new=new, out={"mask": mask, "values": values},
                           executor=executor)
    assert s.mask is mask  # the caller's object, written in place
    # A data-dependent output comes back as the written part: a view of the caller's tensor.
    assert s.values.shape == (n,)
    assert np.shares_memory(s.values, values)
    assert np.array_equal(s.values, new[new != base])
    assert np.all(values[n:] == -7.0)  # untouched past the written part
    # A named tuple works as out= too (a previous result); a full-size output comes back itself.
    exact = np.zeros(n, np.float32)
    s2 = T.bitmask.sparsify(base=base, new=new, out=s._replace(values=exact), executor=executor)
    assert s2.values is exact and np.array_equal(exact, new[new != base])


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_delta_round_trip(executor, dtype):
    r = rng(3)
    base = r.standard_normal(3000).astype(dtype)
    new = (base + (r.standard_normal(3000) * 0.01).astype(dtype)).astype(dtype)
    e = T.codec.delta_encode(base_vals=base, new_vals=new, executor=executor)
    assert e.widths.shape == (-(-3000 // 256),) and e.widths.dtype == "u8"
    assert e.words.dtype == "u32"
    d = T.codec.delta_decode(base_vals=base, packed_words=e.words, packed_widths=e.widths,
                             executor=executor)
    assert np.asarray(d.out).view(np.uint8).tobytes() == new.view(np.uint8).tobytes()
    f = T.codec.delta_f32(base_vals=base, new_vals=new, executor=executor)
    np.testing.assert_allclose(np.asarray(f.out), new.astype(np.float32) - base.astype(np.float32),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("executor", EXECUTORS + ["simt64"])
def test_to_f32(executor):
    h = rng(4).standard_normal(777).astype(np.float16)
    out = T.codec.to_f32(values=h, executor=executor).out
    assert out.dtype == "f32" and out.shape == (777,)
    assert np.array_equal(np.asarray(out), h.astype(np.float32))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_kmeans_pack_dequantize(executor):
    r = rng(5)
    values = r.standard_normal(2000).astype(np.float32)
    km = T.codec.kmeans(values=values, bits=3, max_iters=50, tol=0.0, executor=executor)
    c, idx = np.asarray(km.centroids), np.asarray(km.indices)
    assert c.shape == (8,) and idx.shape == (2000,) and idx.max() < 8
    assert np.all(np.diff(c) >= 0)
    # every value is assigned to a nearest centroid
    dist = np.abs(values[:, None] - c[None, :])
    assert np.all(dist[np.arange(2000), idx] <= dist.min(axis=1) + 1e-6)
    pk = T.codec.pack_indices(indices=km.indices, bits=3, executor=executor)
    dq = T.codec.dequantize(indices_words=pk.words, indices_widths=pk.widths, indices_count=2000,
                            centroids=c, executor=executor)
    assert np.array_equal(np.asarray(dq.out), c[idx])
    # with a base: round(base + c[idx]) in the base's dtype
    base = r.standard_normal(2000).astype(np.float16)
    dq = T.codec.dequantize(indices_words=pk.words, indices_widths=pk.widths, base_vals=base,
                            indices_count=2000, centroids=list(map(float, c)), executor=executor)
    assert dq.out.dtype == "f16"
    want = (base.astype(np.float32) + c[idx]).astype(np.float16)
    assert np.array_equal(np.asarray(dq.out), want)


def attention_problem(seed, lens_q, lens_kv, heads=4, kv_heads=2, head_dim=64, depths=3):
    r = rng(seed)
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_kv = np.concatenate([[0], np.cumsum(lens_kv)]).astype(np.int32)
    tq, tkv = int(cu_q[-1]), int(cu_kv[-1])
    return dict(
        q=r.standard_normal((tq, heads, head_dim)).astype(np.float16),
        k=r.standard_normal((tkv, kv_heads, head_dim)).astype(np.float16),
        v=r.standard_normal((tkv, kv_heads, head_dim)).astype(np.float16),
        cu_seqlens_q=cu_q,
        cu_seqlens_kv=cu_kv,
        q_depth=r.integers(0, depths, tq).astype(np.int32),
        kv_depth=r.integers(0, depths, tkv).astype(np.int32),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        max_seqlen_q=max(lens_q),
        max_seqlen_kv=max(lens_kv),
        scale=1.0 / np.sqrt(head_dim),
    )


def lse_error(lse, want):
    """Largest |lse - want|, where rows that see no key must be -inf on both sides."""
    empty = np.isneginf(want)
    assert np.array_equal(np.isneginf(lse), empty)
    return np.abs(lse[~empty] - want[~empty]).max()


def attention_reference(p, mode):
    """Naive dense-mask attention in f64: positions are token indices within a sequence (the
    default, implicit positions); duo_causal also needs kv_depth <= q_depth."""
    q, k, v = (p[n].astype(np.float64) for n in ("q", "k", "v"))
    cu_q, cu_kv = p["cu_seqlens_q"], p["cu_seqlens_kv"]
    heads, group = p["heads"], p["heads"] // p["kv_heads"]
    o = np.zeros(q.shape)
    lse = np.full((heads, q.shape[0]), -np.inf)
    for b in range(len(cu_q) - 1):
        keys = np.arange(cu_kv[b], cu_kv[b + 1])
        for i in range(cu_q[b], cu_q[b + 1]):
            vis = np.ones(len(keys), bool)
            if mode != "full":
                vis &= keys - cu_kv[b] <= i - cu_q[b]
            if mode == "duo_causal":
                vis &= p["kv_depth"][keys] <= p["q_depth"][i]
            js = keys[vis]
            if len(js) == 0:
                continue
            for h in range(heads):
                s = k[js, h // group] @ q[i, h] * p["scale"]
                m = s.max()
                w = np.exp(s - m)
                lse[h, i] = m + np.log(w.sum())
                o[i, h] = (w / w.sum()) @ v[js, h // group]
    return o, lse


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("mode", ["causal", "duo_causal"])
def test_attention_forward(executor, mode):
    p = attention_problem(6, [37, 70, 1], [37, 70, 1])
    if mode != "duo_causal":
        del p["q_depth"], p["kv_depth"]
    r = T.attention.forward(**p, mode=mode, executor=executor)
    assert r.o.shape == p["q"].shape and r.o.dtype == "f32"
    assert r.lse.shape == (p["heads"], p["q"].shape[0]) and r.lse.dtype == "f32"
    o, lse = np.asarray(r.o), np.asarray(r.lse)
    ro, rl = attention_reference(p, mode)
    # ARCHITECTURE §5, half inputs: relative L2 <= 1e-2 for O, absolute 1e-3 for LSE
    assert np.linalg.norm(o - ro) / np.linalg.norm(ro) <= 1e-2
    assert lse_error(lse, rl) <= 1e-3


def test_attention_out():
    """out= for fixed-shape outputs: written in place and returned."""
    p = attention_problem(7, [5, 9], [20, 33])
    p.pop("q_depth"), p.pop("kv_depth")
    o = np.empty(p["q"].shape, np.float32)
    lse = np.empty((p["heads"], p["q"].shape[0]), np.float32)
    r = T.attention.forward(**p, mode="full", out={"o": o, "lse": lse}, executor="simt")
    assert r.o is o and r.lse is lse
    ro, rl = attention_reference(p, "full")
    assert np.linalg.norm(o - ro) / np.linalg.norm(ro) <= 1e-2
    assert lse_error(lse, rl) <= 1e-3


def test_attention_decode():
    p = attention_problem(8, [1, 1, 1], [20, 33, 64])
    p.pop("q_depth"), p.pop("kv_depth")
    ro, rl = attention_reference(p, "full")
    r = T.attention.decode(**p, mode="full", splits=3)
    assert np.linalg.norm(np.asarray(r.o) - ro) / np.linalg.norm(ro) <= 1e-2
    assert lse_error(np.asarray(r.lse), rl) <= 1e-3
    parts = T.attention.decode_partials(**p, mode="full", splits=3)
    assert parts.o.shape == (3,) + p["q"].shape and parts.lse.shape == (3, 4, 3)


def test_attention_merge_of_tessera_tensors():
    """tessera.Tensor outputs fed back as inputs: merge of decode partials."""
    p = attention_problem(8, [1, 1, 1], [20, 33, 64])
    p.pop("q_depth"), p.pop("kv_depth")
    ro, rl = attention_reference(p, "full")
    parts = T.attention.decode_partials(**p, mode="full", splits=3)
    merged = T.attention.merge(o=parts.o, lse=parts.lse, splits=3, total_q=3,
                               heads=p["heads"], head_dim=p["head_dim"])
    assert np.linalg.norm(np.asarray(merged.o) - ro) / np.linalg.norm(ro) <= 1e-2
    assert lse_error(np.asarray(merged.lse), rl) <= 1e-3


@pytest.mark.parametrize("executor", EXECUTORS)
def test_select_hard(executor):
    scores = (rng(8).standard_normal(1000) * 3).astype(np.float32)
    r = T.tah.select_hard(scores=scores, threshold=0.9, executor=executor)
    want = np.nonzero(1.0 / (1.0 + np.exp(-scores.astype(np.float64))) > 0.9)[0]
    assert r.indices.dtype == "u32"
    assert np.array_equal(np.asarray(r.indices), want)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_gather_and_scatter_rows(executor):
    r = rng(9)
    src = r.standard_normal((50, 8)).astype(np.float32)
    idx = r.permutation(50)[:20].astype(np.uint32)
    g = T.tah.gather_rows(src=src, idx=idx, d=8, executor=executor)
    assert g.out.shape == (20, 8)
    assert np.array_equal(np.asarray(g.out), src[idx])
    dst = np.zeros((50, 8), np.float32)
    rows = np.asarray(g.out).copy()
    s = T.tah.scatter_rows(src=rows, idx=idx, dst=dst, d=8, executor=executor)
    assert s.dst is dst  # written in place: the caller's object comes back
    want = np.zeros((50, 8), np.float32)
    want[idx] = src[idx]
    assert np.array_equal(dst, want)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_copy_range_in_place(executor):
    src = np.arange(100, dtype=np.uint16)
    dst = np.zeros(64, np.uint16)
    r = T.tah.copy_range(src=src, dst=dst, src_off=10, dst_off=4, n=30, executor=executor)
    assert r.dst is dst
    want = np.zeros(64, np.uint16)
    want[4:34] = src[10:40]
    assert np.array_equal(dst, want)


@pytest.mark.parametrize("executor", EXECUTORS + ["simt64"])
def test_accumulate_logits_is_zero_copy(executor):
    r = rng(10)
    cum = r.standard_normal(300).astype(np.float32)
    logits = r.standard_normal(300).astype(np.float32)
    want = cum + logits
    alias = cum[:]  # another view of the caller's memory
    out = T.tah.accumulate_logits(cum=cum, logits=logits, executor=executor)
    assert out.cum is cum
    # the caller's own memory was written: visible through every view of it
    np.testing.assert_allclose(alias, want, rtol=0, atol=0)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_next_depth_input(executor):
    r = rng(11)
    m, vocab, k, d = 3, 50, 4, 16
    cum = r.standard_normal((m, vocab)).astype(np.float32)
    emb = r.standard_normal((vocab, d)).astype(np.float32)
    out = T.tah.next_depth_input(cum=cum, emb=emb, vocab=vocab, k=k, d=d, executor=executor)
    ids = np.asarray(out.ids)
    assert ids.shape == (m, k)
    want_ids = np.argsort(-cum, axis=1, kind="stable")[:, :k]
    assert np.array_equal(np.sort(ids, axis=1), np.sort(want_ids, axis=1))
    top = np.take_along_axis(cum, ids.astype(np.int64), axis=1)
    w = np.exp(top - top.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out.weights), w, rtol=1e-5, atol=1e-6)
    want = np.einsum("mk,mkd->md", w, emb[ids])
    np.testing.assert_allclose(np.asarray(out.out), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("executor", EXECUTORS + ["simt64"])
def test_gemm_dense_epilogue(executor):
    r = rng(21)
    m, n, k = 37, 29, 40
    a = r.standard_normal((m, k)).astype(np.float16)
    b = r.standard_normal((n, k)).astype(np.float16)
    bias = r.standard_normal(n).astype(np.float32)
    d = T.gemm.dense(
        a=a, b=b, epi_bias=bias, m=m, n=n, k=k, epi_activation="silu", executor=executor
    ).d
    x = a.astype(np.float64) @ b.astype(np.float64).T + bias
    want = x / (1.0 + np.exp(-x))
    got = np.asarray(d).astype(np.float64)
    assert d.shape == (m, n)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2


@pytest.mark.parametrize("executor", EXECUTORS + ["simt64"])
def test_c2c_project(executor):
    """c2c.project against numpy: concat, input projection, one RMSNorm/GELU(erf) FFN block,
    sigmoid-weighted projection added to the receiver rows; a closed gate returns tgt."""
    from math import erf

    r = rng(23)
    tokens, hs, ds, ht, dt, hd, f, blocks = 9, 2, 8, 3, 8, 24, 16, 1
    src = r.uniform(-1, 1, (tokens, hs, ds)).astype(np.float16)
    tgt = r.uniform(-1, 1, (tokens, ht, dt)).astype(np.float16)
    kin = hs * ds + ht * dt
    w_in = (r.uniform(-1, 1, (hd, kin)) / np.sqrt(kin)).astype(np.float16)
    b_in = r.uniform(-0.5, 0.5, hd).astype(np.float32)
    w1 = (r.uniform(-1, 1, (blocks, f, hd)) / np.sqrt(hd)).astype(np.float16)
    w2 = (r.uniform(-1, 1, (blocks, hd, f)) / np.sqrt(f)).astype(np.float16)
    norm = r.uniform(0.5, 1.5, (blocks, hd)).astype(np.float32)
    w_out = (r.uniform(-3, 3, (ht * dt, hd)) / np.sqrt(hd)).astype(np.float16)
    w_s = (r.uniform(-6, 6, (ht, hd)) / np.sqrt(hd)).astype(np.float16)
    args = dict(src=src, tgt=tgt, w_in=w_in, b_in=b_in, w1=w1, w2=w2, norm=norm, w_out=w_out, w_s=w_s)
    out = np.asarray(T.c2c.project(**args, gate_logit=np.array([0.3], np.float32), executor=executor).out)
    x = np.concatenate([src.reshape(tokens, -1), tgt.reshape(tokens, -1)], axis=1).astype(np.float64)
    h = x @ w_in.astype(np.float64).T + b_in
    gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + erf(v / np.sqrt(2.0))))
    for b in range(blocks):
        n = h / np.sqrt((h * h).mean(axis=1, keepdims=True) + 1e-6) * norm[b]
        h = h + gelu(n @ w1[b].astype(np.float64).T) @ w2[b].astype(np.float64).T
    proj = (h @ w_out.astype(np.float64).T).reshape(tokens, ht, dt)
    s = 1.0 / (1.0 + np.exp(-(h @ w_s.astype(np.float64).T)))
    want = tgt.astype(np.float64) + s[:, :, None] * proj
    assert out.shape == (tokens, ht, dt)
    got = out.astype(np.float64)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2
    closed = T.c2c.project(**args, gate_logit=np.array([-0.3], np.float32), executor=executor).out
    assert np.array_equal(np.asarray(closed).view(np.uint16), tgt.view(np.uint16))


@pytest.mark.parametrize("executor", EXECUTORS + ["simt64"])
def test_moe_layer(executor):
    """moe.layer with r = 1 against numpy: routing by the f32 logits, SwiGLU experts, weighted
    sum in slot order."""
    r = rng(22)
    t, d, f, n, k = 11, 16, 24, 6, 2
    x = r.standard_normal((t, d)).astype(np.float16)
    wr = (r.standard_normal((n, d)) * 0.5).astype(np.float16)
    wg = (r.standard_normal((n, f, d)) * 0.25).astype(np.float16)
    wu = (r.standard_normal((n, f, d)) * 0.25).astype(np.float16)
    wd = (r.standard_normal((n, d, f)) * 0.2).astype(np.float16)
    y = T.moe.layer(
        x=x, w_router=wr, w_gate=wg, w_up=wu, w_down=wd, r=1, layer_in_group=0, top_k=k,
        renormalize="true", executor=executor,
    ).y
    x64 = x.astype(np.float64)
    logits = x64 @ wr.astype(np.float64).T
    want = np.zeros((t, d))
    for i in range(t):
        ids = sorted(range(n), key=lambda v: (-logits[i, v], v))[:k]
        p = np.exp(logits[i] - logits[i].max())
        w = p[ids] / p[ids].sum()
        for wk, v in zip(w, ids):
            g = wg[v].astype(np.float64) @ x64[i]
            u = wu[v].astype(np.float64) @ x64[i]
            h = g / (1.0 + np.exp(-g)) * u
            want[i] += wk * (wd[v].astype(np.float64) @ h)
    got = np.asarray(y).astype(np.float64)
    assert y.dtype == "f16" and y.shape == (t, d)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2


@pytest.mark.parametrize("executor", EXECUTORS)
def test_codec_gather(executor):
    r = rng(12)
    src = r.integers(0, 1 << 30, 200).astype(np.int32)
    keep = r.random(200) < 0.3
    mask = np.packbits(np.concatenate([keep, np.zeros(24, bool)]), bitorder="little").view(np.uint32)
    g = T.codec.gather(src=src, mask=mask, count=int(keep.sum()), executor=executor)
    assert np.array_equal(np.asarray(g.out), src[keep])


# ------------------------------------------------------------------------------------------------
# DLPack


def test_outputs_export_dlpack():
    base = np.zeros(128, np.float32)
    new = np.arange(128, dtype=np.float32)
    out = T.bitmask.densify(base=base, mask=np.full(4, 0xFFFFFFFF, np.uint32), values=new).out
    assert isinstance(out, tessera.Tensor)
    assert out.__dlpack_device__() == (1, 0)
    assert out.shape == (128,) and out.ndim == 1 and out.size == 128 and out.dtype == "f32"
    assert out.device == "cpu" and len(out) == 128 and "f32" in repr(out)
    a = np.from_dlpack(out)  # versioned capsule (numpy >= 2.1 asks for max_version 1.x)
    b = np.from_dlpack(out)
    assert np.array_equal(a, new) and np.shares_memory(a, b)  # zero-copy: one buffer
    assert np.array_equal(np.asarray(out), new) and np.array_equal(out.numpy(), new)
    # the capsules themselves
    for kw, name in [({}, "dltensor"), ({"max_version": (1, 0)}, "dltensor_versioned"),
                     ({"max_version": (0, 8)}, "dltensor")]:
        cap = out.__dlpack__(**kw)
        assert f"'{name}'" in repr(cap) or name in repr(cap)
    c = np.from_dlpack(out, copy=True)
    assert not np.shares_memory(a, c) and np.array_equal(c, new)
    np.from_dlpack(out, device="cpu")
    # an unconsumed capsule is freed by its destructor; the data outlives the Tensor
    for _ in range(100):
        out.__dlpack__(max_version=(1, 0))
        out.__dlpack__()
    del out
    gc.collect()
    assert np.array_equal(a, new)
    a[0] = 42  # writable
    assert b[0] == 42


def test_round_trip_through_dlpack_inputs():
    """tessera.Tensor outputs are inputs of the next call (the same protocol)."""
    base = rng(13).standard_normal(256).astype(np.float32)
    new = base + 1
    s = T.bitmask.sparsify(base=base, new=new)
    d = T.bitmask.densify(base=base, mask=s.mask, values=s.values)
    assert np.array_equal(np.from_dlpack(d.out), new)
    # and on SIMT (staged copies of tessera's own host tensors)
    d = T.bitmask.densify(base=base, mask=s.mask, values=s.values, executor="simt")
    assert np.array_equal(np.from_dlpack(d.out), new)


class Producer:
    """A DLPack producer that records how it was asked (stream handshake, max_version) and
    hands out numpy's capsules."""

    def __init__(self, array, legacy=False):
        self.array = array
        self.legacy = legacy
        self.calls = []

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def __dlpack__(self, **kw):
        self.calls.append(kw)
        if self.legacy and "max_version" in kw:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        return self.array.__dlpack__(**kw)


@pytest.mark.parametrize("legacy", [False, True])
def test_dlpack_handshake_and_capsule_ownership(legacy):
    a = np.arange(64, dtype=np.float32)
    b = a + 1
    pa, pb = Producer(a, legacy), Producer(b, legacy)
    gc.collect()
    refs = sys.getrefcount(a), sys.getrefcount(b)
    for _ in range(50):
        T.bitmask.sparsify(base=pa, new=pb, stream=7)  # stream= is ignored for host tensors
    # host tensors: stream None; versioned capsule asked for first, legacy fallback
    assert pa.calls[0] == {"stream": None, "max_version": (1, 0)}
    if legacy:  # the producer refused max_version: asked again the pre-1.0 way
        assert pa.calls[1] == {"stream": None}
    del pa.calls[:], pb.calls[:]
    gc.collect()
    # every capsule consumed was released exactly once: the arrays' reference counts are back
    assert (sys.getrefcount(a), sys.getrefcount(b)) == refs
    # a capsule consumed by tessera is renamed: a second consumer cannot take it
    cap = a.__dlpack__(max_version=(1, 0))

    class Once:
        def __dlpack_device__(self):
            return (1, 0)

        def __dlpack__(self, **kw):
            return cap

    T.codec.to_f32(values=Once())
    assert "used_dltensor" in repr(cap)
    with pytest.raises(ValueError, match="unconsumed"):
        T.codec.to_f32(values=Once())
    del cap
    gc.collect()
    assert (sys.getrefcount(a), sys.getrefcount(b)) == refs


def test_read_only_inputs_are_fine_but_not_written():
    a = np.arange(64, dtype=np.float32)
    a.flags.writeable = False
    assert np.array_equal(np.asarray(T.codec.to_f32(values=a).out), a)
    with pytest.raises(ValueError, match="read-only"):
        T.tah.accumulate_logits(cum=a, logits=np.ones(64, np.float32))


def test_zero_size_tensors():
    e = np.zeros(0, np.float32)
    r = T.codec.to_f32(values=e)
    assert r.out.shape == (0,) and np.from_dlpack(r.out).shape == (0,)


# ------------------------------------------------------------------------------------------------
# Errors


def test_errors():
    a = np.arange(64, dtype=np.float32)
    b = a + 1
    sp = T.bitmask.sparsify
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'.*base, new, tau"):
        sp(base=a, new=b, bogus=1)
    with pytest.raises(TypeError, match="keyword arguments only"):
        sp(a, b)
    with pytest.raises(ValueError, match="bitmask.sparsify: missing input `new`"):
        sp(base=a)
    with pytest.raises(ValueError, match="missing input `new`"):
        sp(base=a, new=None)
    with pytest.raises(ValueError, match="input `new` is i32; it must be f32 or f16 or bf16"):
        sp(base=a, new=b.astype(np.int32))
    with pytest.raises(ValueError, match="unsupported DLPack dtype"):
        sp(base=a, new=b.astype(np.float64))
    with pytest.raises(ValueError, match="`new` is f16 but `base` is f32"):
        sp(base=a, new=b.astype(np.float16))
    with pytest.raises(ValueError, match="dimension 0 \\(n\\) is 32, but n = 64"):
        sp(base=a, new=b[:32])
    with pytest.raises(ValueError, match="not contiguous"):
        sp(base=a, new=np.arange(128, dtype=np.float32)[::2])
    with pytest.raises(ValueError, match="not contiguous"):
        T.tah.gather_rows(src=np.zeros((8, 16), np.float32)[:, :8], idx=np.zeros(1, np.uint32), d=8)
    with pytest.raises(TypeError, match="expected a tensor with __dlpack__"):
        sp(base=a, new=[1.0] * 64)
    with pytest.raises(ValueError, match="parameter tau"):
        sp(base=a, new=b, tau="x")
    with pytest.raises(ValueError, match="`gpu` is not one of cpu, simt"):
        sp(base=a, new=b, executor="gpu")
    with pytest.raises(ValueError, match="parameter max_iters: -1 is outside"):
        T.codec.kmeans(values=a, bits=3, max_iters=-1, tol=0.1)
    with pytest.raises(ValueError, match="missing parameter `bits`"):
        T.codec.kmeans(values=a, max_iters=3, tol=0.1)
    with pytest.raises(ValueError, match="mode.*`sideways` is not one of full, causal, duo_causal"):
        p = attention_problem(14, [3], [3])
        T.attention.forward(**p, mode="sideways")
    with pytest.raises(ValueError, match="index 70 at 0 is out of range for 50 rows"):
        T.tah.gather_rows(src=np.zeros((50, 2), np.float32), idx=np.array([70], np.uint32), d=2)
    with pytest.raises(ValueError, match="output `values` needs 64 elements"):
        sp(base=a, new=b, out={"values": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="output `mask` has shape \\[3\\], the op writes \\[2\\]"):
        sp(base=a, new=b, out={"mask": np.zeros(3, np.uint32)})
    with pytest.raises(TypeError, match="out= has no output named 'nope'"):
        sp(base=a, new=b, out={"nope": a})
    with pytest.raises(TypeError, match="out= takes a mapping"):
        sp(base=a, new=b, out=[a])
    with pytest.raises(ValueError, match="`dst` is updated in place"):
        T.tah.copy_range(src=a, dst=b.copy(), src_off=0, dst_off=0, n=1, out={"dst": b})
    with pytest.raises(ValueError, match="shares memory"):
        T.tah.accumulate_logits(cum=a, logits=a)
    with pytest.raises(ValueError, match="shares memory"):
        T.tah.copy_range(src=a, dst=a[8:], src_off=0, dst_off=0, n=4)
    with pytest.raises(ValueError, match="unknown op `nope.op`"):
        tessera._tessera.call("nope.op", [], [], [], None, None)
    with pytest.raises(ValueError, match="no tensors given"):
        T.codec.to_f32()
    # the failures left nothing behind: the same call works
    assert np.array_equal(np.asarray(T.codec.to_f32(values=a).out), a)


def test_error_for_misaligned_data():
    buf = np.zeros(64 * 4 + 4, np.uint8)
    odd = np.ndarray((64,), np.float32, buffer=buf.data, offset=2)
    with pytest.raises(ValueError, match="not aligned"):
        T.codec.to_f32(values=odd)


def test_tessera_error_type():
    assert issubclass(tessera.TesseraError, RuntimeError)


# ------------------------------------------------------------------------------------------------
# The GIL


def test_gil_is_released_during_the_op():
    p = attention_problem(15, [300], [300], heads=4, kv_heads=4, head_dim=128)
    p.pop("q_depth"), p.pop("kv_depth")
    t0 = time.perf_counter()
    T.attention.forward(**p, mode="full", executor="simt")
    one = time.perf_counter() - t0
    ticks = []
    done = threading.Event()

    def work():
        for _ in range(2):
            T.attention.forward(**p, mode="full", executor="simt")
        done.set()

    th = threading.Thread(target=work)
    th.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    th.join()
    gaps = np.diff(ticks)
    # with the GIL held the main thread would stall for a whole call (~`one` seconds)
    assert len(ticks) > 10 and gaps.max() < max(one / 2, 0.05), (one, gaps.max())
