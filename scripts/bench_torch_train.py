#!/usr/bin/env python3
"""PyTorch eager baseline for `dsk bench train`: the same model (scripts/make_reference.py's DskModel) trained with
torch.optim.AdamW on random tokens, timed the same way (median ms per step, split into forward, backward and
optimizer). Not part of the product: run it beside dsk to compare on the same machine.

    /usr/bin/python3 scripts/bench_torch_train.py --config small --batch 8 --steps 5 --json out.json

Differences from dsk, stated in the output: attention-probability dropout and router noise are absent (they make
PyTorch slightly faster, not slower); experts run as the original project did, a loop over experts with masks.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import DskModel, cross_entropy  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 tensor cores in fp32 matmuls")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    # PyTorch's default is TF32 off for matmuls (as dsk's); --tf32 turns it on, as `dsk bench train --tf32` does.
    torch.backends.cuda.matmul.allow_tf32 = a.tf32

    path = a.config if a.config.endswith(".json") else os.path.join(ROOT, "configs", a.config + ".json")
    with open(path) as f:
        cfg = json.load(f)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = DskModel(cfg).to(dev)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    T = a.seq_len or cfg["context_length"]
    tokens = torch.randint(0, cfg["vocab_size"], (a.batch, T + 1), device=dev)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    fwd, bwd, optim, total = [], [], [], []
    for step in range(a.warmup + a.steps):
        opt.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        logits, aux, _ = model(inputs)
        loss = cross_entropy(logits, targets) + aux
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        t3 = time.perf_counter()
        if step >= a.warmup:
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            optim.append((t3 - t2) * 1e3)
            total.append((t3 - t0) * 1e3)
    ms = statistics.median(total)
    result = {
        "machine": {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu_model(),
                    "cpu_cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "device": str(dev)},
        "result": {"benchmark": "train", "implementation": "pytorch-eager", "config_name": a.config, "config": cfg,
                   "batch": a.batch, "seq_len": T, "steps_timed": a.steps, "tf32": a.tf32, "ms_per_step": ms,
                   "ms_forward": statistics.median(fwd), "ms_backward": statistics.median(bwd),
                   "ms_optimizer": statistics.median(optim), "tokens_per_s": a.batch * T / (ms / 1e3),
                   "notes": "no attention-probability dropout, no router noise; experts as a loop with masks"},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
