"""tessera's Python package against PyTorch on a CUDA GPU: `attention.forward` on CUDA tensors,
on torch's current stream, compared with `torch.nn.functional.scaled_dot_product_attention`
under the equivalent dense mask, and timed against it; plus the cost of a Python call.

Skipped unless torch is importable and a CUDA device is present (the GPU machine). Run with `-s`
to see the timing tables:

    pytest tests/python/test_torch.py -q -s
"""

import statistics
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import tessera  # noqa: E402

T = tessera.ops
F = torch.nn.functional
DEV = torch.device("cuda", torch.cuda.current_device())


def problem(batch, seqlen, heads, kv_heads, head_dim, depths=4, seed=0, dtype=torch.float16):
    """`batch` self-attention sequences of `seqlen` tokens, packed. Token t of a sequence has
    position t (tessera's implicit positions) and a depth in 0..depths (kv tokens = q tokens, so
    every query sees at least itself under either mask)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    total = batch * seqlen

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=DEV, dtype=torch.float32).to(dtype)

    depth = torch.randint(0, depths, (total,), generator=g, device=DEV, dtype=torch.int32)
    cu = torch.arange(0, total + 1, seqlen, device=DEV, dtype=torch.int32)
    return dict(
        q=rand(total, heads, head_dim),
        k=rand(total, kv_heads, head_dim),
        v=rand(total, kv_heads, head_dim),
        cu_seqlens_q=cu,
        cu_seqlens_kv=cu.clone(),
        q_depth=depth,
        kv_depth=depth.clone(),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        max_seqlen_q=seqlen,
        max_seqlen_kv=seqlen,
        scale=head_dim**-0.5,
    )


def dense_mask(p, mode, batch, seqlen):
    """[batch, 1, S, S] bool, True = attend: a query at (position i, depth d) sees the keys at
    positions j <= i (causal), and with duo_causal also only depths <= d."""
    pos = torch.arange(seqlen, device=DEV)
    m = (pos[None, :] <= pos[:, None]).expand(batch, seqlen, seqlen)
    if mode == "duo_causal":
        qd = p["q_depth"].view(batch, seqlen)
        kd = p["kv_depth"].view(batch, seqlen)
        m = m & (kd[:, None, :] <= qd[:, :, None])
    return m[:, None]


def to_bhsd(x, batch, seqlen):
    return x.view(batch, seqlen, x.shape[1], x.shape[2]).transpose(1, 2)


def torch_inputs(p, batch, seqlen):
    group = p["heads"] // p["kv_heads"]
    q = to_bhsd(p["q"], batch, seqlen)
    k = to_bhsd(p["k"], batch, seqlen).repeat_interleave(group, dim=1)
    v = to_bhsd(p["v"], batch, seqlen).repeat_interleave(group, dim=1)
    return q, k, v


def torch_reference(p, mode, batch, seqlen):
    """SDPA's O as [total, H, D] f32, and the LSE [H, total] from the same masked scores."""
    q, k, v = torch_inputs(p, batch, seqlen)
    mask = dense_mask(p, mode, batch, seqlen)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=p["scale"])
    s = (q.float() @ k.float().transpose(-1, -2)) * p["scale"]
    lse = torch.logsumexp(s.masked_fill(~mask, float("-inf")), dim=-1)  # [B, H, S]
    o = o.transpose(1, 2).reshape(batch * seqlen, p["heads"], p["head_dim"]).float()
    lse = lse.permute(1, 0, 2).reshape(p["heads"], batch * seqlen)
    return o, lse


def tessera_forward(p, mode, stream, out=None):
    kw = dict(p)
    if mode != "duo_causal":
        kw.pop("q_depth"), kw.pop("kv_depth")
    return T.attention.forward(**kw, mode=mode, stream=stream, out=out)


@pytest.mark.parametrize("mode", ["causal", "duo_causal"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_attention_matches_sdpa(mode, head_dim):
    batch, seqlen = 3, 200
    p = problem(batch, seqlen, heads=8, kv_heads=2, head_dim=head_dim, seed=head_dim)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        stream = torch.cuda.current_stream()
        r = tessera_forward(p, mode, stream.cuda_stream)
        o = torch.from_dlpack(r.o)  # consumed on this stream: no synchronisation needed
        lse = torch.from_dlpack(r.lse)
        assert o.device == DEV and o.dtype == torch.float32 and o.shape == p["q"].shape
        ro, rl = torch_reference(p, mode, batch, seqlen)
        rel = ((o - ro).norm() / ro.norm()).item()
        lse_err = (lse - rl).abs().max().item()
    torch.cuda.synchronize()
    assert rel <= 1e-2, rel
    assert lse_err <= 1e-3, lse_err
    # numpy sees the same numbers (a device-to-host copy through DLPack)
    assert abs(float(r.o.numpy()[0, 0, 0]) - o[0, 0, 0].item()) <= 1e-6


def test_out_and_in_place_on_cuda():
    p = problem(2, 64, heads=4, kv_heads=4, head_dim=64)
    o = torch.empty(p["q"].shape, device=DEV, dtype=torch.float32)
    lse = torch.empty((4, 128), device=DEV, dtype=torch.float32)
    stream = torch.cuda.current_stream().cuda_stream
    r = tessera_forward(p, "causal", stream, out={"o": o, "lse": lse})
    assert r.o is o and r.lse is lse
    ro, _ = torch_reference(p, "causal", 2, 64)
    assert ((o - ro).norm() / ro.norm()).item() <= 1e-2
    cum = torch.randn(1000, device=DEV)
    logits = torch.randn(1000, device=DEV)
    want = cum + logits
    got = T.tah.accumulate_logits(cum=cum, logits=logits, stream=stream)
    assert got.cum is cum and torch.equal(cum, want)  # zero-copy: the caller's tensor
    with pytest.raises(ValueError, match="different devices"):
        T.tah.accumulate_logits(cum=cum, logits=logits.cpu().numpy())


def median_ms(fn, n=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    stream = torch.cuda.current_stream()
    for _ in range(n):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record(stream)
        fn()
        b.record(stream)
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def test_attention_timing_vs_sdpa():
    rows = []
    stream = torch.cuda.current_stream().cuda_stream
    for batch, seqlen, heads, kv_heads, head_dim in [
        (4, 1024, 16, 8, 128),
        (8, 2048, 32, 8, 128),
        (16, 512, 16, 16, 64),
    ]:
        p = problem(batch, seqlen, heads, kv_heads, head_dim)
        q, k, v = torch_inputs(p, batch, seqlen)
        for mode in ["causal", "duo_causal"]:
            mask = dense_mask(p, mode, batch, seqlen)
            o = torch.empty(p["q"].shape, device=DEV, dtype=torch.float32)
            lse = torch.empty((heads, batch * seqlen), device=DEV, dtype=torch.float32)
            out = {"o": o, "lse": lse}
            t_tessera = median_ms(lambda: tessera_forward(p, mode, stream, out=out))
            t_mask = median_ms(
                lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=p["scale"])
            )
            t_causal = (
                median_ms(
                    lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                           scale=p["scale"])
                )
                if mode == "causal"
                else float("nan")
            )
            rows.append((mode, batch, seqlen, heads, kv_heads, head_dim, t_tessera, t_mask,
                         t_causal))
    print()
    print(f"attention.forward vs SDPA on {torch.cuda.get_device_name()} (median ms, CUDA events)")
    print(f"{'mode':<11} {'B':>3} {'S':>5} {'H':>3} {'Hkv':>3} {'D':>4} "
          f"{'tessera':>9} {'sdpa+mask':>10} {'sdpa causal':>12}")
    for mode, b, s, h, hk, d, t1, t2, t3 in rows:
        print(f"{mode:<11} {b:>3} {s:>5} {h:>3} {hk:>3} {d:>4} {t1:>9.3f} {t2:>10.3f} {t3:>12.3f}")
    assert all(r[6] > 0 for r in rows)


def test_python_call_overhead():
    """Wall time of one call of a tiny op from Python (validation, DLPack import of every tensor,
    launch on the caller's stream), against torch's own tiny op."""
    stream = torch.cuda.current_stream().cuda_stream
    cum = torch.zeros(16, device=DEV)
    logits = torch.ones(16, device=DEV)
    n = 1000

    def per_call_us(fn):
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n * 1e6

    t_tessera = per_call_us(
        lambda: T.tah.accumulate_logits(cum=cum, logits=logits, stream=stream)
    )
    t_torch = per_call_us(lambda: cum.add_(logits))
    hc, hl = np.zeros(16, np.float32), np.ones(16, np.float32)
    host = per_call_us(lambda: T.tah.accumulate_logits(cum=hc, logits=hl))
    print()
    print(f"per call, {n} calls: tessera tah.accumulate_logits on CUDA {t_tessera:.1f} us, "
          f"torch add_ {t_torch:.1f} us; tessera on numpy (executor cpu) {host:.1f} us")
    assert cum[0].item() > 0
