#!/usr/bin/python3
"""The dsk model in plain PyTorch, and the golden fixture the C++ engine is tested against.

Run with Debian's torch (python3-torch, 1.13):   /usr/bin/python3 scripts/make_reference.py
It writes tests/fixtures/golden_tiny.safetensors and tests/fixtures/golden_tiny.json (the config).
The C++ tests never need Python; this file is the readable reference of what the engine computes.

The model (docs: ARCHITECTURE.md section 1; tensor names: issue 2), all weights stored (out, in) like nn.Linear:

    x = tok_emb[tokens] + pos_emb[0..T-1]                      (B, T, d), then dropout
    for each block:  x = x + MLA(LN1(x));  x = x + MoE(LN2(x))
    logits = final_norm(x) @ tok_emb^T                          tied head, (B, T, V)

  MLA (true multi-head latent attention, no biases):
    q = x W_q^T (d);  c = LN_c(x W_dkv^T) (d_c, the only thing a KV cache keeps)
    k = c W_uk^T, v = c W_uv^T (d = H * hd each); per head causal softmax(q_h k_h^T / sqrt(hd)) v_h; concat; W_o
    Absorbed form (same numbers): q_lat,h = W_uk,h^T q_h; scores q_lat,h . c_j; o_h = W_uv,h (sum_j p_j c_j).

  MoE (noisy top-k router; noise is off in this fixture):
    logits = x W_router^T (E); top-k of logits; gates = softmax over the k selected logits
    routed(x) = sum_j gate_j * expert_{idx_j}(x),  expert(x) = W2 relu(W1 x + b1) + b2  (then dropout)
    shared(x) = (1/S) sum_s shared_s(x)   (every token, averaged);   MoE(x) = routed(x) + shared(x)
    aux loss per layer = coef * E * sum_i f_i P_i
        P_i = mean over tokens of softmax(router logits)_i   (clean logits, differentiable)
        f_i = (token slots routed to i) / (N k)               (counts, not differentiable)
    model aux loss = mean over layers;  total loss = cross-entropy (mean over B*T) + aux loss
"""
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

TINY_CONFIG = {
    "vocab_size": 64, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
    "kv_latent_dim": 12, "num_experts": 4, "num_shared_experts": 2, "top_k": 2, "expert_hidden_dim": 24,
    "aux_loss_coef": 0.01,
}
BATCH = 2          # B; T = context_length
ADAMW = {"lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "steps": 3}
LAYERNORM_EPS = 1e-5   # torch's default, every LayerNorm (norm1, norm2, latent_norm, final_norm)
MIN_TOPK_GAP = 1e-3    # routing must not hinge on float rounding: k-th vs (k+1)-th router logit at least this far apart


# ---- the model ----------------------------------------------------------------------------------------------

class StackedLinear(nn.Module):
    """n independent Linear(d_in, d_out) layers stored as one tensor: weight (n, d_out, d_in), bias (n, d_out)."""

    def __init__(self, n, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(n, d_out))

    def forward(self, x, i):  # x (N, d_in) -> (N, d_out), through member i
        return x @ self.weight[i].t() + self.bias[i]


class ExpertBank(nn.Module):
    """n experts, each Linear(d, F, bias) -> ReLU -> Linear(F, d, bias) -> dropout."""

    def __init__(self, n, d, hidden, drop_rate):
        super().__init__()
        self.w1 = StackedLinear(n, d, hidden)   # w1.weight (n, F, d), w1.bias (n, F)
        self.w2 = StackedLinear(n, hidden, d)   # w2.weight (n, d, F), w2.bias (n, d)
        self.dropout = nn.Dropout(drop_rate)

    def forward(self, x, i):  # x (N, d) -> (N, d) through expert i
        return self.dropout(self.w2(F.relu(self.w1(x, i)), i))


class MLA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, d_c = cfg["emb_dim"], cfg["kv_latent_dim"]
        self.n_heads, self.head_dim = cfg["n_heads"], d // cfg["n_heads"]
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_dkv = nn.Linear(d, d_c, bias=False)        # down-projection to the latent
        self.latent_norm = nn.LayerNorm(d_c, eps=LAYERNORM_EPS)
        self.w_uk = nn.Linear(d_c, d, bias=False)         # latent -> keys of all heads
        self.w_uv = nn.Linear(d_c, d, bias=False)         # latent -> values of all heads
        self.w_o = nn.Linear(d, d, bias=False)

    def latent(self, x):  # (B, T, d) -> (B, T, d_c)
        return self.latent_norm(self.w_dkv(x))

    def _causal_softmax(self, scores):  # (B, H, T, T) raw scores -> probabilities, future masked out
        T = scores.shape[-1]
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=scores.device), diagonal=1)
        scores = scores / math.sqrt(self.head_dim)
        return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)

    def forward(self, x):
        """Explicit form: materialize per-head keys and values from the latent."""
        B, T, d = x.shape
        H, hd = self.n_heads, self.head_dim
        q = self.w_q(x).view(B, T, H, hd).transpose(1, 2)            # (B, H, T, hd)
        c = self.latent(x)                                           # (B, T, d_c)
        k = self.w_uk(c).view(B, T, H, hd).transpose(1, 2)           # (B, H, T, hd)
        v = self.w_uv(c).view(B, T, H, hd).transpose(1, 2)           # (B, H, T, hd)
        p = self._causal_softmax(q @ k.transpose(-1, -2))            # (B, H, T, T)
        o = (p @ v).transpose(1, 2).reshape(B, T, d)                 # heads concatenated
        return self.w_o(o)

    def forward_absorbed(self, x):
        """Absorbed form: W_uk folds into the query, W_uv after the weighted sum; all heads attend over c."""
        B, T, d = x.shape
        H, hd = self.n_heads, self.head_dim
        d_c = self.w_dkv.weight.shape[0]
        q = self.w_q(x).view(B, T, H, hd).transpose(1, 2)            # (B, H, T, hd)
        c = self.latent(x).unsqueeze(1)                              # (B, 1, T, d_c), shared by every head
        w_uk = self.w_uk.weight.view(H, hd, d_c)                     # W_uk,h: (hd, d_c)
        w_uv = self.w_uv.weight.view(H, hd, d_c)
        q_lat = torch.einsum("bhtk,hkc->bhtc", q, w_uk)              # W_uk,h^T q_h: (B, H, T, d_c)
        p = self._causal_softmax(q_lat @ c.transpose(-1, -2))        # (B, H, T, T)
        o_lat = p @ c                                                # (B, H, T, d_c)
        o = torch.einsum("bhtc,hkc->bhtk", o_lat, w_uv)              # W_uv,h o_lat: (B, H, T, hd)
        return self.w_o(o.transpose(1, 2).reshape(B, T, d))


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, hidden = cfg["emb_dim"], cfg["expert_hidden_dim"]
        self.E, self.S, self.k = cfg["num_experts"], cfg["num_shared_experts"], cfg["top_k"]
        self.aux_coef = cfg["aux_loss_coef"]
        self.router = nn.Linear(d, self.E, bias=False)
        self.router_noise = nn.Linear(d, self.E, bias=False)   # scales N(0,1) noise in training; unused here
        self.experts = ExpertBank(self.E, d, hidden, cfg["drop_rate"])
        self.shared = ExpertBank(self.S, d, hidden, cfg["drop_rate"])

    def forward(self, x):
        """x (B, T, d) -> (output (B, T, d), aux loss (scalar), routing info for the fixture's sanity checks)."""
        B, T, d = x.shape
        xs = x.reshape(B * T, d)                                     # N = B*T tokens
        logits = self.router(xs)                                     # (N, E); router noise is off
        top_logits, idx = torch.topk(logits, self.k, dim=-1)         # (N, k) each
        gates = torch.softmax(top_logits, dim=-1)                    # softmax over the k selected only

        routed = torch.zeros_like(xs)
        for e in range(self.E):
            tok, slot = (idx == e).nonzero(as_tuple=True)            # token slots that chose expert e
            if tok.numel() > 0:
                routed = routed.index_add(0, tok, gates[tok, slot].unsqueeze(1) * self.experts(xs[tok], e))
        shared = sum(self.shared(xs, s) for s in range(self.S)) / self.S

        # Switch-style load balance: P from the clean softmax (differentiable), f from the counts (not).
        P = torch.softmax(logits, dim=-1).mean(dim=0)                                   # (E,)
        f = torch.bincount(idx.flatten(), minlength=self.E).to(x.dtype) / (B * T * self.k)
        aux = self.aux_coef * self.E * (f * P).sum()

        ranked = logits.detach().sort(dim=-1, descending=True).values
        gap = (ranked[:, self.k - 1] - ranked[:, self.k]).min().item()   # how far routing is from a tie
        return (routed + shared).view(B, T, d), aux, {"idx": idx.detach().clone(), "gap": gap}


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg["emb_dim"], eps=LAYERNORM_EPS)
        self.attn = MLA(cfg)
        self.norm2 = nn.LayerNorm(cfg["emb_dim"], eps=LAYERNORM_EPS)
        self.moe = MoE(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        moe_out, aux, routing = self.moe(self.norm2(x))
        return x + moe_out, aux, routing


class DskModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.dropout = nn.Dropout(cfg["drop_rate"])
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = nn.LayerNorm(cfg["emb_dim"], eps=LAYERNORM_EPS)

    def forward(self, tokens):
        """tokens (B, T) int64 -> logits (B, T, V), aux loss (mean over layers), per-layer routing info."""
        B, T = tokens.shape
        x = self.dropout(self.tok_emb(tokens) + self.pos_emb(torch.arange(T, device=tokens.device)))
        auxes, routing = [], []
        for block in self.blocks:
            x, aux, info = block(x)
            auxes.append(aux)
            routing.append(info)
        logits = self.final_norm(x) @ self.tok_emb.weight.t()        # tied output head
        return logits, torch.stack(auxes).mean(), routing


def cross_entropy(logits, targets):  # mean over all B*T positions
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---- fixture weights and the reference run --------------------------------------------------------------

def init_fixture_weights(model, seed):
    """Not the training init (N(0, 0.02), zero biases): larger, non-trivial values so every path is exercised.
    Matrices and embeddings N(0, 0.1); biases N(0, 0.05); LayerNorm weights 1 + N(0, 0.1), biases N(0, 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():   # registration order; deterministic
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise if name.endswith(".weight") else 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.05 * noise)
            else:
                p.copy_(0.1 * noise)


def run_reference(model, inputs, targets, max_norm):
    """Forward + backward of CE + aux, then `steps` AdamW steps with clipping on the same batch.
    Mutates model (its parameters end at step `steps`). Returns every number the fixture stores."""
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(params.values(), lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"])
    out = {"losses": [], "grad_norms": [], "routing": []}
    for step in range(ADAMW["steps"]):
        for p in params.values():
            p.grad = None
        logits, aux, routing = model(inputs)
        ce = cross_entropy(logits, targets)
        total = ce + aux
        total.backward()
        # router_noise is not used without noise, so autograd leaves its grad None; the engine has a zero gradient
        # there, and AdamW must still decay it. Make that explicit so torch does not skip those parameters.
        for p in params.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if step == 0:
            out["logits"], out["loss"], out["aux_loss"] = logits.detach().clone(), ce.item(), aux.item()
            out["grads"] = {n: p.grad.detach().clone() for n, p in params.items()}
        out["losses"].append(total.item())
        out["routing"].append(routing)
        # clip: scale = min(1, max_norm / (norm + 1e-6)), norm = global L2 norm over every parameter's gradient
        norm = torch.nn.utils.clip_grad_norm_(params.values(), max_norm)
        out["grad_norms"].append(norm.item())
        opt.step()
    out["step3"] = {n: p.detach().clone() for n, p in params.items()}
    return out


def check_absorbed_equals_explicit(model, inputs):
    with torch.no_grad():
        x = model.dropout(model.tok_emb(inputs) + model.pos_emb(torch.arange(inputs.shape[1], device=inputs.device)))
        worst = 0.0
        for block in model.blocks:
            h = block.norm1(x)
            a, b = block.attn(h), block.attn.forward_absorbed(h)
            worst = max(worst, (a - b).abs().max().item())
            x, _, _ = block(x)
    assert worst <= 1e-5, f"absorbed MLA differs from explicit MLA by {worst}"
    return worst


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


def main():
    torch.set_num_threads(1)   # reproducible summation order
    cfg = TINY_CONFIG
    assert cfg["drop_rate"] == 0.0, "the fixture is made without dropout"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = os.path.join(root, "tests", "fixtures")

    # Seed search: the first seed whose routing (in every forward of the run, float32 and float64 alike)
    # is at least MIN_TOPK_GAP away from a tie, so that float rounding cannot change which experts are chosen.
    for seed in range(1000):
        torch.manual_seed(seed)
        model = DskModel(cfg)
        init_fixture_weights(model, seed)
        gen = torch.Generator().manual_seed(10_000 + seed)
        tokens = torch.randint(0, cfg["vocab_size"], (BATCH, cfg["context_length"] + 1), generator=gen)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        initial = copy.deepcopy(model.state_dict())

        # max_norm: a round number below every pre-clip norm of the run, so clipping is active in all 3 steps.
        probe = run_reference(copy.deepcopy(model), inputs, targets, max_norm=1e9)
        max_norm = float(f"{0.5 * min(probe['grad_norms']):.2g}")
        ref = run_reference(copy.deepcopy(model), inputs, targets, max_norm)
        if not all(n > max_norm for n in ref["grad_norms"]):
            continue
        ref64 = run_reference(copy.deepcopy(model).double(), inputs, targets, max_norm)
        gaps = [info["gap"] for r in (ref, ref64) for step in r["routing"] for info in step]
        same_routing = all(torch.equal(a["idx"], b["idx"]) for sa, sb in zip(ref["routing"], ref64["routing"])
                           for a, b in zip(sa, sb))
        if min(gaps) >= MIN_TOPK_GAP and same_routing:
            break
    else:
        raise SystemExit("no seed gave well-separated routing")
    print(f"seed {seed}: min top-k gap {min(gaps):.3g}, max_norm {max_norm}, pre-clip norms {ref['grad_norms']}")
    assert all(n > max_norm for n in ref["grad_norms"]), "clipping must be active in every step"

    model.load_state_dict(initial)
    absorbed_err = check_absorbed_equals_explicit(model, inputs)
    absorbed_err64 = check_absorbed_equals_explicit(copy.deepcopy(model).double(), inputs)
    print(f"absorbed vs explicit MLA: max |diff| {absorbed_err:.3g} (float32), {absorbed_err64:.3g} (float64)")

    # Float32 vs float64: how much of each number is rounding. The C++ engine (also float32, other summation
    # orders) should land about as far from float64 as torch does, so it may sit ~2x that far from this fixture.
    # Suggested tolerance: 10x the measured distance, with a floor relative to the tensor's largest value:
    # 2e-6 for the forward and the gradients, 1e-4 after AdamW (Adam divides by sqrt(v), which magnifies the
    # rounding of small gradient components; real optimizer bugs - no weight decay, eps 1e-6, no clipping - still
    # miss these step3 tolerances by more than 100x: scripts/check_fixture.py checks one such bug).
    params = dict(model.named_parameters())
    compared = {"logits": (ref["logits"], ref64["logits"]),
                "loss": (torch.tensor([ref["loss"]]), torch.tensor([ref64["loss"]], dtype=torch.float64)),
                "aux_loss": (torch.tensor([ref["aux_loss"]]), torch.tensor([ref64["aux_loss"]], dtype=torch.float64)),
                "losses": (torch.tensor(ref["losses"]), torch.tensor(ref64["losses"], dtype=torch.float64)),
                "grad_norms": (torch.tensor(ref["grad_norms"]), torch.tensor(ref64["grad_norms"], dtype=torch.float64))}
    for n in params:
        compared[f"grad.{n}"] = (ref["grads"][n], ref64["grads"][n])
        compared[f"step3.{n}"] = (ref["step3"][n], ref64["step3"][n])
    diffs, tolerances = {}, {}
    for name, (a, b) in compared.items():
        diffs[name] = max_abs(a, b)
        scale = b.abs().max().item()
        floor = 1e-4 if name.startswith("step3.") else 2e-6
        tolerances[name] = float(f"{max(10 * diffs[name], floor * scale, 1e-9):.2g}")
    for group in ("logits", "loss", "aux_loss", "losses", "grad_norms", "grad.", "step3."):
        names = [n for n in diffs if n == group or (group.endswith(".") and n.startswith(group))]
        worst = max(names, key=lambda n: diffs[n])
        print(f"float32 vs float64 {group:<10} max |diff| {diffs[worst]:.3g} ({worst})")

    tensors = {"tokens": tokens.to(torch.int32).numpy(),
               "logits": ref["logits"].numpy(),
               "loss": np.array([ref["loss"]], dtype=np.float32),
               "aux_loss": np.array([ref["aux_loss"]], dtype=np.float32),
               "losses": np.array(ref["losses"], dtype=np.float32),
               "grad_norms": np.array(ref["grad_norms"], dtype=np.float32)}
    for n, p in params.items():
        tensors[f"param.{n}"] = p.detach().numpy()
        tensors[f"grad.{n}"] = ref["grads"][n].numpy()
        tensors[f"step3.{n}"] = ref["step3"][n].numpy()
    metadata = {
        "format": "dsk golden fixture v1",
        "generator": "scripts/make_reference.py",
        "torch_version": torch.__version__,
        "seed": str(seed),
        "config": json.dumps(cfg),
        "batch": json.dumps({"B": BATCH, "T": cfg["context_length"], "tokens": "(B, T+1): inputs [:, :-1], targets [:, 1:]"}),
        "optimizer": json.dumps({**ADAMW, "max_norm": max_norm, "weight_decay_on": "every parameter",
                                 "clip": "scale = min(1, max_norm / (global_l2_norm + 1e-6)) before each step"}),
        "max_norm": repr(max_norm),
        "layernorm_eps": repr(LAYERNORM_EPS),
        "loss": "loss = cross-entropy (mean over B*T); aux_loss = mean over layers; grads and losses use loss + aux_loss",
        "min_topk_gap": f"{min(gaps):.6g}",
        "f32_vs_f64_max_abs_diff": json.dumps({n: float(f"{d:.3g}") for n, d in diffs.items()}),
        "tolerances": json.dumps(tolerances),
        "tolerance_rule": "max_i |engine_i - fixture_i| <= tolerances[name]",
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "golden_tiny.safetensors")
    write_safetensors(path, tensors, metadata)
    with open(os.path.join(out_dir, "golden_tiny.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors); "
          f"loss {ref['loss']:.6f}, aux {ref['aux_loss']:.6f}, losses {ref['losses']}")


if __name__ == "__main__":
    main()
