#!/usr/bin/python3
"""Re-load tests/fixtures/golden_tiny.safetensors with the hand-written reader and prove it is self-consistent:

1. Rebuild the model from the stored config and param.* weights, re-run forward, backward and the 3 AdamW steps
   with the stored max_norm; every stored number must come back (same torch, so to a few float32 ulps).
2. Run a *different but correct* float32 implementation (absorbed MLA, dense evaluation of every expert with a
   gather) and check that it lands inside the fixture's suggested tolerances: the tolerances must admit a
   correct engine whose summation order differs from torch's.
3. Sanity: a broken variant (no aux loss in the gradient) must fall outside them, so the tolerances can fail.

Run: /usr/bin/python3 scripts/check_fixture.py [path]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import DskModel, run_reference  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


def load_model(tensors, cfg):
    model = DskModel(cfg)
    names = [n for n, _ in model.named_parameters()]
    stored = sorted(n[len("param."):] for n in tensors if n.startswith("param."))
    assert sorted(names) == stored, f"parameter names differ: {set(names) ^ set(stored)}"
    with torch.no_grad():
        for n, p in model.named_parameters():
            w = torch.from_numpy(tensors[f"param.{n}"])
            assert w.shape == p.shape, f"{n}: stored {tuple(w.shape)} vs model {tuple(p.shape)}"
            p.copy_(w)
    return model


def results_as_tensors(out, model):
    got = {"logits": out["logits"], "loss": torch.tensor([out["loss"]]), "aux_loss": torch.tensor([out["aux_loss"]]),
           "losses": torch.tensor(out["losses"]), "grad_norms": torch.tensor(out["grad_norms"])}
    for n, _ in model.named_parameters():
        got[f"grad.{n}"] = out["grads"][n]
        got[f"step3.{n}"] = out["step3"][n]
    return got


def worst_ratio(got, tensors, tolerances):
    """max over stored outputs of  max|got - fixture| / tolerance  (<= 1 passes), and the tensor it comes from."""
    worst, where = 0.0, None
    for name, tol in tolerances.items():
        diff = (got[name].double() - torch.from_numpy(tensors[name]).double()).abs().max().item()
        ratio = diff / tol
        if ratio > worst:
            worst, where = ratio, name
    return worst, where


def moe_forward_dense(self, x):
    """Variant of MoE.forward: run every expert on every token, then gather the chosen ones (other summation order)."""
    B, T, d = x.shape
    xs = x.reshape(B * T, d)
    logits = self.router(xs)
    top_logits, idx = torch.topk(logits, self.k, dim=-1)
    gates = torch.softmax(top_logits, dim=-1)
    every = torch.stack([self.experts(xs, e) for e in range(self.E)], dim=1)            # (N, E, d)
    chosen = torch.gather(every, 1, idx.unsqueeze(-1).expand(-1, -1, d))                 # (N, k, d)
    routed = (gates.unsqueeze(-1) * chosen).sum(dim=1)
    shared = torch.stack([self.shared(xs, s) for s in range(self.S)]).mean(dim=0)
    P = F.softmax(logits, dim=-1).mean(dim=0)
    f = F.one_hot(idx, self.E).to(x.dtype).sum(dim=(0, 1)) / (B * T * self.k)
    aux = self.aux_coef * self.E * (f * P).sum()
    return (routed + shared).view(B, T, d), aux, {"idx": idx, "gap": 1.0}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures", "golden_tiny.safetensors")
    tensors, meta = read_safetensors(path)
    cfg = json.loads(meta["config"])
    with open(os.path.join(os.path.dirname(path), "golden_tiny.json")) as f:
        assert json.load(f) == cfg, "golden_tiny.json differs from the fixture's config"
    max_norm = float(meta["max_norm"])
    tolerances = json.loads(meta["tolerances"])
    tokens = torch.from_numpy(tensors["tokens"]).long()
    assert tokens.shape == (2, cfg["context_length"] + 1) and 0 <= tokens.min() and tokens.max() < cfg["vocab_size"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    assert all(n > max_norm for n in tensors["grad_norms"]), "clipping must be active in every step"
    torch.set_num_threads(1)

    # 1. The same computation again.
    model = load_model(tensors, cfg)
    got = results_as_tensors(run_reference(model, inputs, targets, max_norm), model)
    assert set(got) == set(tolerances), "tolerances must cover exactly the stored outputs"
    exact = max((got[n].double() - torch.from_numpy(tensors[n]).double()).abs().max().item() for n in got)
    assert exact <= 1e-6, f"re-running the reference moved an output by {exact}"
    print(f"re-run of the reference: max |diff| {exact:.3g} over {len(got)} outputs")

    # 2. A different but correct float32 implementation must pass the suggested tolerances.
    model = load_model(tensors, cfg)
    for block in model.blocks:
        block.attn.forward = block.attn.forward_absorbed
        block.moe.forward = moe_forward_dense.__get__(block.moe)
    got = results_as_tensors(run_reference(model, inputs, targets, max_norm), model)
    ratio, where = worst_ratio(got, tensors, tolerances)
    print(f"absorbed MLA + dense MoE variant: worst diff / tolerance {ratio:.3g} ({where})")
    assert ratio <= 1.0, "a correct float32 variant fails the suggested tolerances"

    # 3. A wrong model must fail them: the aux loss is reported but left out of the backward.
    def aux_without_gradient(moe_forward):
        def forward(x):
            out, aux, routing = moe_forward(x)
            return out, aux.detach(), routing
        return forward

    model = load_model(tensors, cfg)
    for block in model.blocks:
        block.moe.forward = aux_without_gradient(block.moe.forward)
    got = results_as_tensors(run_reference(model, inputs, targets, max_norm), model)
    grads_only = {n: t for n, t in tolerances.items() if n.startswith("grad.")}
    ratio, where = worst_ratio(got, tensors, grads_only)
    print(f"broken variant (aux loss without gradient): worst grad diff / tolerance {ratio:.3g} ({where})")
    assert ratio > 1.0, "the tolerances do not catch an aux loss missing from the backward"
    print(f"{path}: self-consistent ({len(tensors)} tensors, {os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
