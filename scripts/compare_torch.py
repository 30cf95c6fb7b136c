#!/usr/bin/env python3
"""Time torch SDPA with TaH's dense additive mask next to tessera's fused duo-causal prefill, in
one run on one GPU. For the lent GPU machine, which has PyTorch (no Rust toolchain): it runs the
staged criterion bench binary (.device-stage/benches/attention, built by scripts/device-check.sh)
for tessera's side.

The problem has the bench's shape (its hard set is drawn by Python's RNG, so the positions differ
but the 6% fraction is the same): one sequence of SEQ positions at depth 0 plus ~6% hard positions
re-run at depth 1 (queries and keys share the layout), H = 32, H_kv = 8, D = 128, bf16. TaH's
public code builds a float mask of shape (B, T, total_kv): 0 where a query at (p, d) may see a key
at (p', d') (p' <= p and d' <= d), -inf elsewhere, and calls SDPA. We build the same mask and
time SDPA with CUDA events; the FLOP count for TFLOP/s counts only unmasked work (4 * D per
visible query-key pair per head), as tessera's bench does.

Usage: python3 scripts/compare_torch.py [--out results.json] [--seqs 4096 16384]
"""
import argparse
import json
import random
import re
import subprocess
import sys


def layout(seq, hard, seed):
    rng = random.Random(seed)
    hard_set = [rng.random() < hard for _ in range(seq)]
    pos = list(range(seq))
    depth = [0] * seq
    for p in range(seq):
        if hard_set[p]:
            pos.append(p)
            depth.append(1)
    return pos, depth


def torch_side(seqs, reps):
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    rows = []
    for seq in seqs:
        pos, depth = layout(seq, 0.06, 7)
        t = len(pos)
        p = torch.tensor(pos, device=dev)
        d = torch.tensor(depth, device=dev)
        visible = (p[None, :] <= p[:, None]) & (d[None, :] <= d[:, None])
        mask = torch.zeros(t, t, device=dev, dtype=torch.bfloat16)
        mask.masked_fill_(~visible, float("-inf"))
        mask = mask[None, None]  # (B, 1, T, total_kv), broadcast over heads
        h, hkv, dim = 32, 8, 128
        q = torch.randn(1, h, t, dim, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, hkv, t, dim, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, hkv, t, dim, device=dev, dtype=torch.bfloat16)
        # SDPA has no GQA broadcast in older torch: repeat K/V to H heads, as TaH's code does.
        k = k.repeat_interleave(h // hkv, dim=1)
        v = v.repeat_interleave(h // hkv, dim=1)
        pairs = int(visible.sum().item())
        flops = 4 * dim * pairs * h
        for _ in range(3):
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        times.sort()
        ms = times[len(times) // 2]
        rows.append({"impl": "torch SDPA + dense mask", "seq": seq, "tokens": t, "ms": ms,
                     "tflops_unmasked": flops / (ms * 1e-3) / 1e12,
                     "torch": torch.__version__, "device": torch.cuda.get_device_name()})
    return rows


def tessera_side(binary, timeout):
    out = subprocess.run([binary, "--bench", "gpu/"], capture_output=True, text=True, timeout=timeout)
    rows = []
    # criterion prints "gpu/duo_prefill_seq4096_..._tc  time: [lo mid hi]" then throughput lines.
    text = out.stdout + out.stderr
    for m in re.finditer(r"(gpu/\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+)", text):
        val, unit = float(m.group(2)), m.group(3)
        ms = val * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit, float("nan"))
        rows.append({"impl": "tessera " + m.group(1), "ms": ms})
    return rows, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="compare_torch.json")
    ap.add_argument("--seqs", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--tessera-bench", default=".device-stage/benches/attention")
    ap.add_argument("--timeout", type=int, default=240)
    a = ap.parse_args()
    result = {"torch": [], "tessera": [], "errors": []}
    try:
        result["torch"] = torch_side(a.seqs, a.reps)
    except Exception as e:  # report, do not hide: the JSON says what failed
        result["errors"].append(f"torch: {e!r}")
    try:
        result["tessera"], log = tessera_side(a.tessera_bench, a.timeout)
        result["tessera_log_tail"] = log[-4000:]
    except Exception as e:
        result["errors"].append(f"tessera: {e!r}")
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    json.dump(result, sys.stdout, indent=2)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
