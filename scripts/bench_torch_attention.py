#!/usr/bin/env python3
"""Times PyTorch's causal attention forward and forward+backward on the shapes dsk's attention benchmark uses
(explicit per-head K/V: batch 8, heads 4/8/16, head_dim 64, seq 128/256/512 = configs small/default/large), so that
scripts/gpu_check.sh can report dsk's kernels and PyTorch side by side.

usage: bench_torch_attention.py [--device cuda|cpu] [--json FILE] [--quick]
  --device cuda   (the GPU machine) times torch.nn.functional.scaled_dot_product_attention in fp32 (the precision
                  of dsk's kernels; PyTorch picks its memory-efficient kernel) and in bf16 (flash attention, for
                  context), with CUDA events, median of 15 after 3 warm-ups.
  --device cpu    a smoke test (this repository's dev machines: CPU-only torch, possibly older than 2.0, then a
                  plain softmax(QK^T)V stands in for SDPA); --quick shrinks the shapes.
Writes {"torch": version, "device", "results": [{model, batch, seq, heads, head_dim, dtype, impl, forward_ms,
fwd_bwd_ms, backward_ms, forward_tflops, backward_tflops}]} (useful causal flops, the same count as dsk).
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch

MODELS = [("small", 8, 128, 4, 64), ("default", 8, 256, 8, 64), ("large", 8, 512, 16, 64)]


def attention(q, k, v):
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if sdpa is not None:
        return sdpa(q, k, v, is_causal=True), "sdpa"
    # torch < 2.0: the math reference.
    T = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v, "math (no sdpa in this torch)"


def timer(device, warmups, reps):
    def run(fn):
        for _ in range(warmups):
            fn()
        times = []
        for _ in range(reps):
            if device == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(stop))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return run


def bench(model, B, T, H, hd, dtype, device, run):
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (B, H, T, hd)  # PyTorch's (batch, heads, seq, dim)
    q, k, v, dout = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)

    def fwd():
        with torch.no_grad():
            attention(q, k, v)

    def fwd_bwd():
        q.grad = k.grad = v.grad = None
        out, _ = attention(q, k, v)
        out.backward(dout)

    _, impl = attention(q, k, v)
    fwd_ms = run(fwd)
    fwd_bwd_ms = run(fwd_bwd)
    visible = B * H * T * (T + 1) / 2
    fwd_flops = 2 * visible * (hd + hd)
    bwd_flops = 2 * visible * (3 * hd + 2 * hd)
    bwd_ms = max(fwd_bwd_ms - fwd_ms, 1e-9)
    return {"model": model, "form": "explicit", "batch": B, "seq": T, "heads": H, "head_dim": hd,
            "dtype": str(dtype).replace("torch.", ""), "impl": impl, "forward_ms": fwd_ms, "fwd_bwd_ms": fwd_bwd_ms,
            "backward_ms": bwd_ms, "forward_tflops": fwd_flops / (fwd_ms * 1e9),
            "backward_tflops": bwd_flops / (bwd_ms * 1e9)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--json", default="")
    ap.add_argument("--quick", action="store_true", help="batch 1 and few repetitions (smoke test)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_torch_attention: torch sees no CUDA device")
    run = timer(a.device, 1 if a.quick else 3, 3 if a.quick else 15)
    dtypes = [torch.float32] + ([torch.bfloat16] if a.device == "cuda" else [])
    results = []
    for model, B, T, H, hd in MODELS:
        for dtype in dtypes:
            try:
                results.append(bench(model, 1 if a.quick else B, T, H, hd, dtype, a.device, run))
            except Exception as e:  # one failing shape/dtype is recorded, the rest still run
                results.append({"model": model, "dtype": str(dtype), "error": str(e)[:500]})
    out = {"benchmark": "torch_attention", "torch": torch.__version__, "device": a.device,
           "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else "",
           "timing": "CUDA events" if a.device == "cuda" else "wall clock", "quick": a.quick,
           "flops": "useful causal flops (visible score entries only)", "results": results}
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            f.write(text + "\n")
        import os
        os.replace(a.json + ".tmp", a.json)


if __name__ == "__main__":
    main()
