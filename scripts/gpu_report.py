#!/usr/bin/env python3
"""Writes OUT/report.json and OUT/report.md for scripts/gpu_check.sh from what its stages left in OUT.

usage: gpu_report.py OUT STAGES_TSV TOTAL_SECONDS [EXTRA_DIR]
Reads (each optional; a missing one is reported as such): nvidia_smi.txt, cuda_tests.xml, cpu_tests.xml,
bench_kernels.json from OUT; bench_attention.json (dsk bench attention) and bench_torch_attention.json
(scripts/bench_torch_attention.py) from EXTRA_DIR or OUT, embedded in report.json and shown side by side. The
report opens with the open issues' speed targets as this run measured them ("targets").
Standard library only (the GPU machine has no network).
"""
import datetime
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET


def gpu_description():
    info = {"name": "unknown", "driver": "unknown", "memory": "unknown"}
    try:
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        name, driver, memory = [x.strip() for x in line.split(",")[:3]]
        info.update(name=name, driver=driver, memory=memory)
    except Exception as e:  # no nvidia-smi, no GPU: the report still gets written
        info["error"] = str(e)
    return info


def junit_results(path):
    """Catch2 v2 JUnit: one <testcase> per test case (and per section); <failure>/<error> children mark failures."""
    if not os.path.exists(path):
        return {"present": False, "passed": 0, "failed": 0, "cases": []}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"present": True, "parse_error": str(e), "passed": 0, "failed": 0, "cases": []}
    cases = []
    for tc in root.iter("testcase"):
        bad = [c for c in tc if c.tag in ("failure", "error")]
        skipped = any(c.tag == "skipped" for c in tc)
        status = "failed" if bad else ("skipped" if skipped else "passed")
        message = ""
        if bad:
            b = bad[0]
            message = ((b.get("message") or "") + "\n" + (b.text or "")).strip()[:2000]
        cases.append({"name": tc.get("name"), "status": status, "seconds": float(tc.get("time") or 0),
                      "message": message})
    return {"present": True, "passed": sum(c["status"] == "passed" for c in cases),
            "failed": sum(c["status"] == "failed" for c in cases), "cases": cases}


def load_json(name, dirs):
    """The first dirs/name that exists, parsed; dsk's {"machine", "result"} wrapper unwrapped. None if absent."""
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.exists(path):
            try:
                data = json.load(open(path))
            except ValueError as e:
                return {"parse_error": str(e)}
            if isinstance(data, dict) and isinstance(data.get("result"), dict):
                data = dict(data["result"], machine=data.get("machine"))
            return data
    return None


def train_markdown(dsk, torch, dsk_tf32=None, torch_tf32=None, dsk_3x=None):
    """Whole-model training step, dsk vs PyTorch eager on the same GPU, config and batch; fp32, then TF32 on both,
    then dsk in fp32 with its expert GEMM and attention tiles in 3xTF32 (near-fp32 accuracy on the tensor cores)."""
    md = ["\n## training step: dsk vs PyTorch eager"]
    rows = []
    runs = [("dsk", dsk), ("PyTorch eager", torch)]
    if dsk_tf32 is not None or torch_tf32 is not None:
        runs += [("dsk, TF32", dsk_tf32), ("PyTorch eager, TF32", torch_tf32)]
    if dsk_3x is not None:
        runs += [("dsk, fp32 with 3xTF32 tiles", dsk_3x)]
    for name, r in runs:
        if not r or "tokens_per_s" not in r:
            rows.append(f"| {name} | no result{' (' + r['parse_error'] + ')' if r and 'parse_error' in r else ''} | | | | |")
            continue
        rows.append(f"| {name} | {r['tokens_per_s']:.0f} | {r['ms_per_step']:.1f} | {r['ms_forward']:.1f} | "
                    f"{r['ms_backward']:.1f} | {r['ms_optimizer']:.1f} |")
    md.append("\n| implementation | tokens/s | ms/step | forward | backward | optimizer |\n|---|---|---|---|---|---|")
    md += rows
    for label, a, b in (("fp32", dsk, torch), ("TF32", dsk_tf32, torch_tf32), ("fp32, 3xTF32 tiles", dsk_3x, torch)):
        if a and b and "tokens_per_s" in a and "tokens_per_s" in b:
            md.append(f"\n{label}: dsk / PyTorch {a['tokens_per_s'] / b['tokens_per_s']:.2f}×; dsk "
                      f"{a.get('achieved_gflop_s', 0) / 1e3:.1f} TFLOP/s (model FLOPs)")
    md += ops_markdown(dsk, "fp32") + ops_markdown(dsk_tf32, "TF32")
    return md


def ops_markdown(r, label, top=15):
    """Where dsk's training step spends its GPU time, op by op (bench train's "ops": autograd/profile.h)."""
    if not r or not r.get("ops"):
        return []
    md = [f"\ndsk {label}, GPU time per step by op (labels: op and output shape; the {top} largest):\n",
          "| op | calls | forward ms | backward ms | share |\n|---|---|---|---|---|"]
    for o in r["ops"][:top]:
        md.append(f"| {o['op']} | {o['calls']:.0f} | {o['forward_ms']:.3f} | {o['backward_ms']:.3f} | "
                  f"{100 * o['share']:.1f}% |")
    return md


def attention_records(attn):
    """The kernel records of a `dsk bench attention` result ({"decode": model sweep, "kernels": {...}}), or the
    result itself where it is the kernel records already; {} when absent."""
    attn = attn or {}
    return attn["kernels"] if isinstance(attn.get("kernels"), dict) else attn


def decode_block_pairs(decode):
    """The decode records that ran both ways, per (model, form, math, batch): [(key, {"split": record of the
    key-split decode block (kernel name contains "key-split"), "old": record of the forward kernels' block})]."""
    pairs = {}
    for r in decode:
        key = (r["model"], r["form"], r.get("math", "ffma"), r["batch"])
        which = "split" if "key-split" in r.get("kernel", "") else "old"
        pairs.setdefault(key, {})[which] = r
    return [(k, v) for k, v in pairs.items() if "split" in v and "old" in v]


def decode_blocks_markdown(decode):
    """The decode records side by side per shape and arithmetic: the key-split decode block against the forward
    kernels' own blocks, as fractions of the copy bandwidth."""
    rows = decode_block_pairs(decode)
    if not rows:
        return []
    md = ["\nDecode blocks compared (of copy bandwidth): the key-split block (the default) vs the forward kernels' "
          "blocks it replaced.\n",
          "| decode | form | math | batch | key-split | forward kernel's | speed-up |", "|---|---|---|---|---|---|---|"]
    for (model, form, math, batch), v in rows:
        new, old = v["split"], v["old"]
        md.append(f"| {model} | {form} | {math} | {batch} | {100 * new['fraction_of_copy']:.0f}% | "
                  f"{100 * old['fraction_of_copy']:.0f}% | {old['ms'] / new['ms']:.2f}x |")
    return md


def fused_dq_markdown(training):
    """The backward with dQ fused into the dK/dV kernel (the default) vs dQ in its own kernel, where both ran."""
    rows = [r for r in training if "backward_ms_separate_dq" in r]
    if not rows:
        return []
    md = ["\nBackward with dQ fused into the dK/dV kernel (default) vs in its own kernel (ms):\n",
          "| model | form | math | dropout | fused | separate | speed-up |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['form']} | {r.get('math', 'ffma')} | {r['dropout']} | "
                  f"{r['backward_ms']:.3f} | {r['backward_ms_separate_dq']:.3f} | "
                  f"{r['backward_ms_separate_dq'] / r['backward_ms']:.2f}x |")
    return md


def attention_markdown(attn, torch_attn):
    md = ["\n## attention kernels"]
    attn = attention_records(attn)
    if not attn or "training" not in attn:
        md.append("\nno dsk attention results" + (f" ({attn['parse_error']})" if attn and "parse_error" in attn else ""))
    else:
        md.append(f"\nfp32 inputs; math: ffma (CUDA cores), tf32 / 3xtf32 (tensor cores); useful causal TFLOP/s. "
                  f"Copy bandwidth {attn.get('copy_gbps', 0):.0f} GB/s.\n")
        md.append("| model | form | math | B×T×H | qk/v | dropout | fwd ms | bwd ms | fwd TFLOP/s | bwd TFLOP/s | "
                  "kernels (fwd; bwd) |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in attn["training"]:
            md.append(f"| {r['model']} | {r['form']} | {r.get('math', 'ffma')} | "
                      f"{r['batch']}×{r['seq']}×{r['heads']} (Hk {r['kv_heads']}) | "
                      f"{r['qk_dim']}/{r['v_dim']} | {r['dropout']} | {r['forward_ms']:.3f} | {r['backward_ms']:.3f} | "
                      f"{r['forward_tflops']:.2f} | {r['backward_tflops']:.2f} | "
                      f"{r.get('forward_kernel', '?')}; {r.get('backward_kernels', '?')} |")
        md.append("\n| decode | form | math | batch | kv_len | H (Hk) | dim | ms | GB/s | of copy | kernel |\n"
                  "|---|---|---|---|---|---|---|---|---|---|---|")
        for r in attn.get("decode", []):
            md.append(f"| {r['model']} | {r['form']} | {r.get('math', 'ffma')} | {r['batch']} | {r['kv_len']} | "
                      f"{r['heads']} ({r['kv_heads']}) | "
                      f"{r['dim']} | {r['ms']:.4f} | {r['gbps']:.0f} | {100 * r['fraction_of_copy']:.0f}% | "
                      f"{r.get('kernel', '?')} |")
        md += decode_blocks_markdown(attn.get("decode", []))
        md += fused_dq_markdown(attn["training"])
    md.append("\n### dsk vs PyTorch scaled_dot_product_attention (explicit shapes, forward + backward ms)")
    if not torch_attn or "results" not in torch_attn:
        md.append("\nno PyTorch results" + (f" ({torch_attn['parse_error']})" if torch_attn and "parse_error" in torch_attn else ""))
        return md
    md.append(f"\ntorch {torch_attn.get('torch')} on {torch_attn.get('gpu') or torch_attn.get('device')}\n")
    md.append("PyTorch's fp32 kernel is 3xTF32 on the tensor cores: the like-for-like dsk column is 3xtf32.\n")
    md.append("| model | dsk ffma fwd+bwd | dsk 3xtf32 fwd+bwd | dsk tf32 fwd+bwd | torch fp32 fwd+bwd | "
              "torch fp32 / best dsk near-fp32 | torch bf16 fwd+bwd | torch fp32 impl |")
    md.append("|---|---|---|---|---|---|---|---|")
    ours = {(r["model"], r.get("math", "ffma")): r for r in (attn or {}).get("training", [])
            if r.get("form") == "explicit" and not r.get("dropout")}
    fmt = lambda x: f"{x:.3f}" if isinstance(x, (int, float)) else (x or "")
    for model in ("small", "default", "large"):
        t32 = next((r for r in torch_attn["results"] if r.get("model") == model and r.get("dtype") == "float32"), None)
        t16 = next((r for r in torch_attn["results"] if r.get("model") == model and r.get("dtype") == "bfloat16"), None)
        ms = {m: (ours[(model, m)]["forward_ms"] + ours[(model, m)]["backward_ms"]) if (model, m) in ours else None
              for m in ("ffma", "3xtf32", "tf32")}
        near_fp32 = [x for x in (ms["ffma"], ms["3xtf32"]) if x]
        t_ms = t32.get("fwd_bwd_ms") if t32 else None
        b_ms = t16.get("fwd_bwd_ms") if t16 else None
        ratio = f"{t_ms / min(near_fp32):.2f}" if near_fp32 and t_ms else ""
        md.append(f"| {model} | {fmt(ms['ffma'])} | {fmt(ms['3xtf32'])} | {fmt(ms['tf32'])} | "
                  f"{fmt(t_ms) or (t32 or {}).get('error', '')[:60]} | {ratio} | {fmt(b_ms)} | "
                  f"{(t32 or {}).get('impl', '')} |")
    return md


def load_bench(path):
    """A `dsk bench` JSON file as its result dict (with the machine), None when absent, parse_error when broken."""
    if not os.path.exists(path):
        return None
    try:
        bench = json.load(open(path))
    except ValueError as e:
        return {"parse_error": str(e)}
    # `dsk bench` wraps a result as {"machine": ..., "result": {...}}.
    if isinstance(bench, dict) and isinstance(bench.get("result"), dict):
        bench = dict(bench["result"], machine=bench.get("machine"))
    return bench


def moe_markdown(bench):
    md = ["\n## MoE layer benchmark (fp32, forward + backward)"]
    if not bench or "results" not in bench:
        md.append("\nno results" + (f" ({bench['parse_error']})" if bench and "parse_error" in bench else ""))
        return md
    md.append("\n| shape | N d F E k S | grouped ms | expert loop ms | loop / grouped | grouped GEMM fwd TFLOP/s "
              "(of dense) | bwd TFLOP/s (of dense) | TF32 fwd (of dense TF32) | TF32 bwd (of dense TF32) | "
              "3xTF32 fwd (of dense fp32) | 3xTF32 bwd (of dense fp32) | max rel diff y, dx, dlogits | dx rows differing |"
              "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def rate(g, part):
        return f"{g.get(part + '_tflops', 0):.1f} ({100 * g.get(part + '_fraction_of_dense', 0):.0f}%)"

    for r in bench["results"]:
        g, t, x3 = r.get("grouped_gemm", {}), r.get("grouped_gemm_tf32", {}), r.get("grouped_gemm_3xtf32", {})
        md.append(f"| {r['shape']} | {r['N']} {r['d']} {r['F']} {r['E']} {r['k']} {r['shared']} | "
                  f"{r['grouped_ms']:.3f} | {r['expert_loop_ms']:.3f} | {r['loop_over_grouped']:.2f}x | "
                  f"{rate(g, 'forward')} | {rate(g, 'backward')} | {rate(t, 'forward')} | {rate(t, 'backward')} | "
                  f"{rate(x3, 'forward')} | {rate(x3, 'backward')} | "
                  f"{r.get('max_rel_diff_y', 0):.1e}, {r.get('max_rel_diff_dx', 0):.1e}, "
                  f"{r.get('max_rel_diff_dlogits', 0):.1e} | {r.get('dx_rows_differing', '')} |")
    md.append("\nGrouped expert GEMMs with each tile forced (ms forward / backward; the automatic choice is above):\n"
              "\n| shape | fp32 64x64 | fp32 128x128 | TF32 64x64 | TF32 128x128 | 3xTF32 64x64 | 3xTF32 128x128 |"
              "\n|---|---|---|---|---|---|---|")

    def forced(g, tile):
        f = g.get("forced_tiles", {}).get(tile, {})
        return f"{f.get('forward_ms', 0):.3f} / {f.get('backward_ms', 0):.3f}"

    for r in bench["results"]:
        g, t, x3 = r.get("grouped_gemm", {}), r.get("grouped_gemm_tf32", {}), r.get("grouped_gemm_3xtf32", {})
        md.append(f"| {r['shape']} | {forced(g, '64x64')} | {forced(g, '128x128')} | {forced(t, '64x64')} | "
                  f"{forced(t, '128x128')} | {forced(x3, '64x64')} | {forced(x3, '128x128')} |")
    md.append("\nTensor-core tiles loading their operands by cp.async (the default) or through registers, beside the "
              "FFMA tiles (ms forward / backward, automatic tile):\n"
              "\n| shape | FFMA | TF32 cp.async | TF32 registers | 3xTF32 cp.async | 3xTF32 registers |"
              "\n|---|---|---|---|---|---|")

    def ms(f):
        if not isinstance(f, dict) or "forward_ms" not in f:
            return "not measured"
        return f"{f['forward_ms']:.3f} / {f['backward_ms']:.3f}"

    for r in bench["results"]:
        g, t, x3 = r.get("grouped_gemm", {}), r.get("grouped_gemm_tf32", {}), r.get("grouped_gemm_3xtf32", {})
        md.append(f"| {r['shape']} | {ms(g)} | {ms(t)} | {ms(t.get('register_loads'))} | {ms(x3)} | "
                  f"{ms(x3.get('register_loads'))} |")
    return md


def one_by_one(dirs):
    """gpu_check's fallback after dsk_tests died: [{"name", "rc"}] from cuda_one_by_one.tsv, or None."""
    for d in dirs:
        path = os.path.join(d, "cuda_one_by_one.tsv")
        if os.path.exists(path):
            rows = [line.rstrip("\n").split("\t", 1) for line in open(path)]
            return [{"rc": r[0], "name": r[1]} for r in rows if len(r) == 2]
    return None


def training_runs(dirs):
    """The train_configs / train_pg stages' run folders (train-<config>, pg-run under gpu_check's work folder):
    [{"run", "steps", "tokens_per_s", "val_loss", "val_step"}] from their metrics.jsonl, the last record of each
    kind (a run cut by the deadline shows how far it got)."""
    runs = []
    for d in dirs:
        for name in ("train-small", "train-default", "train-large", "pg-run"):
            path = os.path.join(d, name, "metrics.jsonl")
            if not os.path.exists(path):
                continue
            last_train, last_eval = None, None
            for line in open(path):
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if r.get("type") == "train":
                    last_train = r
                elif r.get("type") == "eval":
                    last_eval = r
            runs.append({"run": name,
                         "steps": last_train["step"] if last_train else 0,
                         "tokens_per_s": last_train.get("tokens_per_s") if last_train else None,
                         "val_loss": last_eval.get("val_loss") if last_eval else None,
                         "val_step": last_eval.get("step") if last_eval else None})
        if runs:
            break
    return runs


def training_runs_markdown(runs):
    if not runs:
        return []
    md = ["\n## dsk train --device cuda (train_configs, train_pg: the last records of each run's metrics.jsonl)",
          "\n| run | steps done | tokens/s | validation loss (at step) |\n|---|---|---|---|"]
    for r in runs:
        tps = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else ""
        val = f"{r['val_loss']:.4f} ({r['val_step']})" if r["val_loss"] is not None else ""
        md.append(f"| {r['run']} | {r['steps']} | {tps} | {val} |")
    return md


def targets(report):
    """The open issues' speed targets, each as measured in this run: [{"issue", "target", "measured", "met"}]
    (met None where this run did not measure it)."""
    rows = []

    def add(issue, target, measured, met):
        rows.append({"issue": issue, "target": target, "measured": measured, "met": met})

    attn = attention_records(report.get("attention"))
    decode = [r for r in attn.get("decode", []) if r.get("batch", 0) > 1]
    for form in ("absorbed", "explicit"):
        best = max((r for r in decode if r.get("form") == form), key=lambda r: r["fraction_of_copy"], default=None)
        if best:
            add(7, f"decode, {form} form, >= 60% of copy bandwidth",
                f"best {100 * best['fraction_of_copy']:.0f}% ({best['model']}, {best.get('math', 'ffma')}, "
                f"{best.get('kernel', '?')})", best["fraction_of_copy"] >= 0.6)
        else:
            add(7, f"decode, {form} form, >= 60% of copy bandwidth", "not measured", None)
    torch_attn = report.get("torch_attention") or {}
    ours = {r["model"]: r for r in attn.get("training", [])
            if r.get("form") == "explicit" and not r.get("dropout") and r.get("math") == "3xtf32"}
    ratios = []
    for model in ("small", "default", "large"):
        t = next((r for r in torch_attn.get("results", []) if r.get("model") == model and r.get("dtype") == "float32"
                  and isinstance(r.get("fwd_bwd_ms"), (int, float))), None)
        if t and model in ours:
            ratios.append((model, (ours[model]["forward_ms"] + ours[model]["backward_ms"]) / t["fwd_bwd_ms"]))
    add(7, "attention fwd+bwd (dsk 3xTF32) <= PyTorch SDPA fp32, explicit shapes",
        ("dsk time / PyTorch time: " + ", ".join(f"{m} {x:.2f}" for m, x in ratios)) if ratios else "not measured",
        all(x <= 1.0 for _, x in ratios) if len(ratios) == 3 else None)
    moe = report.get("bench_moe") or {}
    moe_rows = moe.get("results", [])
    add(8, "MoE layer, grouped path >= 3x the expert loop",
        ", ".join(f"{r['shape']} {r['loop_over_grouped']:.2f}x" for r in moe_rows) or "not measured",
        all(r["loop_over_grouped"] >= 3 for r in moe_rows) if moe_rows else None)
    default = next((r for r in moe_rows if r.get("shape") == "default"), None)
    if default:
        g = default.get("grouped_gemm", {})
        fwd, bwd = g.get("forward_fraction_of_dense", 0), g.get("backward_fraction_of_dense", 0)
        add(8, "grouped expert GEMMs >= 50% of a dense cuBLAS GEMM, default shape (fp32)",
            f"forward {100 * fwd:.0f}%, backward {100 * bwd:.0f}%", fwd >= 0.5 and bwd >= 0.5)
    else:
        add(8, "grouped expert GEMMs >= 50% of a dense cuBLAS GEMM, default shape (fp32)", "not measured", None)
    x3 = (default or {}).get("grouped_gemm_3xtf32")
    if x3:  # fp32 accuracy on the tensor cores (expert_math=3xtf32), against the same fp32 cuBLAS GEMMs
        fwd, bwd = x3.get("forward_fraction_of_dense", 0), x3.get("backward_fraction_of_dense", 0)
        add(8, "the same in 3xTF32 (fp32 accuracy, expert_math=3xtf32) against fp32 cuBLAS",
            f"forward {100 * fwd:.0f}%, backward {100 * bwd:.0f}%", fwd >= 0.5 and bwd >= 0.5)
    a, b = report.get("train") or {}, report.get("torch_train") or {}
    if "tokens_per_s" in a and "tokens_per_s" in b:
        x = a["tokens_per_s"] / b["tokens_per_s"]
        add(8, "training, default config: dsk >= 2x PyTorch eager tokens/s (fp32)", f"{x:.2f}x", x >= 2)
    else:
        add(8, "training, default config: dsk >= 2x PyTorch eager tokens/s (fp32)", "not measured", None)
    return rows


def defaults(report):
    """The run-time choices whose defaults were set before a GPU had timed them: for each, the default's total time
    over the shapes this run measured both ways, the alternative's, and the verdict (keep, or which way to flip):
    [{"setting", "default", "alternative", "default_ms", "alternative_ms", "verdict"}]."""
    rows = []

    def add(setting, default, alternative, pairs):
        """pairs: [(shape, default ms, alternative ms)] of the same work. Differences within 3% count as equal (the
        run-to-run spread of these medians): flip when the alternative is faster in total (naming the shapes where
        the default still wins), revisit when it is faster at some shapes only, else keep."""
        row = {"setting": setting, "default": default, "alternative": alternative, "default_ms": None,
               "alternative_ms": None, "ratios": {}, "verdict": "not measured"}
        if pairs:
            a, b = sum(p[1] for p in pairs), sum(p[2] for p in pairs)
            ratios = {p[0]: p[1] / p[2] for p in pairs}
            slower = [k for k, x in ratios.items() if x > 1.03]
            if a > 1.03 * b:
                faster = [k for k, x in ratios.items() if x < 0.97]
                verdict = (f"flip: {alternative} is {a / b:.2f}x faster in total"
                           + (" (the default is faster at " + ", ".join(faster) + ")" if faster else ""))
            elif slower:
                verdict = "revisit: the alternative is faster at " + ", ".join(slower)
            else:
                verdict = "keep"
            row.update(default_ms=a, alternative_ms=b, ratios=ratios, verdict=verdict)
        rows.append(row)

    attn = attention_records(report.get("attention"))
    training = attn.get("training", [])
    add("BackwardDq (attention backward)", "dQ fused", "dQ separate",
        [(f"{r['model']} {r['form']} {r.get('math', 'ffma')}{' dropout' if r.get('dropout') else ''}",
          r["backward_ms"], r["backward_ms_separate_dq"]) for r in training if "backward_ms_separate_dq" in r])
    add("DecodeBlock (attention decode)", "key-split block", "forward kernels' blocks",
        [(" ".join(str(x) for x in k), v["split"]["ms"], v["old"]["ms"])
         for k, v in decode_block_pairs(attn.get("decode", []))])
    fwd_bwd = {}
    for r in training:
        if r.get("form") == "explicit" and not r.get("dropout"):
            fwd_bwd[(r["model"], r.get("math", "ffma"))] = r["forward_ms"] + r["backward_ms"]
    add("attention_math auto in fp32 (explicit, no dropout)", "ffma", "3xtf32",
        [(m, fwd_bwd[(m, "ffma")], fwd_bwd[(m, "3xtf32")]) for m in ("small", "default", "large")
         if (m, "ffma") in fwd_bwd and (m, "3xtf32") in fwd_bwd])
    moe = (report.get("bench_moe") or {}).get("results", [])

    def total(g):
        return g["forward_ms"] + g["backward_ms"]

    add("expert_math auto in fp32", "ffma", "3xtf32",
        [(r["shape"], total(r["grouped_gemm"]), total(r["grouped_gemm_3xtf32"])) for r in moe
         if "grouped_gemm" in r and "grouped_gemm_3xtf32" in r])
    for math in ("tf32", "3xtf32"):
        add(f"ExpertLoads ({math} expert tiles)", "cp.async", "registers",
            [(r["shape"], total(r[f"grouped_gemm_{math}"]), total(r[f"grouped_gemm_{math}"]["register_loads"]))
             for r in moe
             if isinstance(r.get(f"grouped_gemm_{math}", {}).get("register_loads"), dict)])
    for key, math in (("grouped_gemm", "fp32"), ("grouped_gemm_tf32", "tf32"), ("grouped_gemm_3xtf32", "3xtf32")):
        best = []
        for r in moe:
            tiles = r.get(key, {}).get("forced_tiles", {})
            if tiles:
                best.append((r["shape"], total(r[key]), min(total(t) for t in tiles.values())))
        add(f"ExpertTile auto rule ({math}; against the better forced tile per shape)", "auto", "best forced", best)
    return rows


def defaults_markdown(rows):
    md = ["\n## defaults chosen before a GPU timed them\n",
          "Each default's time summed over the shapes measured both ways, and default / alternative per shape "
          "(below 1: the default is faster).\n",
          "| setting | default | alternative | default ms | alternative ms | per shape | verdict |",
          "|---|---|---|---|---|---|---|"]

    def ms(x):
        return "" if x is None else f"{x:.3f}"

    for r in rows:
        md.append(f"| {r['setting']} | {r['default']} | {r['alternative']} | {ms(r['default_ms'])} | "
                  f"{ms(r['alternative_ms'])} | {', '.join(f'{k} {x:.2f}' for k, x in r['ratios'].items())} | {r['verdict']} |")
    return md


def targets_markdown(rows):
    md = ["\n## speed targets of the open issues\n", "| issue | target | measured | met |", "|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "not measured"}[r["met"]]
        md.append(f"| #{r['issue']} | {r['target']} | {r['measured']} | {met} |")
    return md


def main():
    out, stages_path, total = sys.argv[1], sys.argv[2], float(sys.argv[3])
    extra_dirs = ([sys.argv[4]] if len(sys.argv) > 4 else []) + [out]
    stages = []
    if os.path.exists(stages_path):
        for line in open(stages_path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                stages.append({"stage": parts[0], "rc": parts[1], "seconds": float(parts[2] or 0),
                               "ok": parts[1] == "0"})
    bench = load_bench(os.path.join(out, "bench_kernels.json"))
    bench_moe = load_bench(os.path.join(out, "bench_moe.json"))
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": total,
        "gpu": gpu_description(),
        "stages": stages,
        "tests": {"cuda": junit_results(os.path.join(out, "cuda_tests.xml")),
                  "cpu": junit_results(os.path.join(out, "cpu_tests.xml"))},
        "bench": bench,
        "attention": load_json("bench_attention.json", extra_dirs),
        "torch_attention": load_json("bench_torch_attention.json", extra_dirs),
        "bench_moe": bench_moe,
        "train": load_json("bench_train.json", extra_dirs),
        "torch_train": load_json("bench_torch_train.json", extra_dirs),
        "train_tf32": load_json("bench_train_tf32.json", extra_dirs),
        "torch_train_tf32": load_json("bench_torch_train_tf32.json", extra_dirs),
        "train_3xtf32": load_json("bench_train_3xtf32.json", extra_dirs),
        "cuda_one_by_one": one_by_one(extra_dirs),
        "training_runs": training_runs(extra_dirs),
    }
    report["targets"] = targets(report)
    report["defaults"] = defaults(report)
    json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=1)

    md = []
    g = report["gpu"]
    md.append(f"# dsk gpu_check — {g['name']}, driver {g['driver']}, {g['memory']}")
    md.append(f"\n{report['date']}, {total:.0f} s in all.\n")
    md.append("| stage | result | seconds |\n|---|---|---|")
    for s in stages:
        md.append(f"| {s['stage']} | {'ok' if s['ok'] else 'FAILED (rc ' + s['rc'] + ')'} | {s['seconds']:.0f} |")
    md += targets_markdown(report["targets"])
    md += defaults_markdown(report["defaults"])
    for suite in ("cuda", "cpu"):
        t = report["tests"][suite]
        md.append(f"\n## {suite} tests: {t['passed']} passed, {t['failed']} failed"
                  + ("" if t["present"] else " (no results: stage did not run or crashed)"))
        if suite == "cuda" or t["failed"]:
            md.append("\n| test | result | seconds |\n|---|---|---|")
            for c in t["cases"]:
                if suite == "cuda" or c["status"] != "passed":
                    md.append(f"| {c['name']} | {c['status']} | {c['seconds']:.3f} |")
            for c in t["cases"]:
                if c["status"] == "failed":
                    md.append(f"\n**{c['name']}**\n\n```\n{c['message']}\n```")
    if report["cuda_one_by_one"] is not None:
        md.append("\n## cuda tests one by one (dsk_tests died in the run above: rc 124 = timeout, 128+n = signal n)")
        md.append("\n| test | rc |\n|---|---|")
        for r in report["cuda_one_by_one"]:
            md.append(f"| {r['name']} | {'ok' if r['rc'] == '0' else r['rc']} |")
    md.append("\n## kernel benchmarks")
    if not bench or "kernels" not in bench:
        md.append("\nno benchmark results" + (f" ({bench['parse_error']})" if bench and "parse_error" in bench else ""))
    else:
        p = bench.get("peaks", {})
        md.append(f"\nmeasured peaks: copy {p.get('copy_gbps', 0):.0f} GB/s (read + write), "
                  f"SGEMM fp32 {p.get('sgemm_fp32_tflops', 0):.1f} TFLOP/s, TF32 {p.get('sgemm_tf32_tflops', 0):.1f}, "
                  f"BF16 {p.get('gemm_bf16_tflops', 0):.1f} (cuBLAS, {p.get('gemm_size', '?')}³)\n")
        md.append("| kernel | shape | ms | achieved | of peak |\n|---|---|---|---|---|")
        for k in bench["kernels"]:
            if "gbps" in k:
                rate = f"{k['gbps']:.0f} GB/s"
            else:
                rate = f"{k.get('gflops', 0) / 1e3:.2f} TFLOP/s"
            frac = k.get("fraction_of_peak")
            md.append(f"| {k['name']} | {k.get('shape', '')} | {k['ms']:.4f} | {rate} | "
                      + (f"{100 * frac:.0f}%" if frac is not None else "") + " |")
    md += train_markdown(report["train"], report["torch_train"], report["train_tf32"], report["torch_train_tf32"],
                         report["train_3xtf32"])
    md += attention_markdown(report["attention"], report["torch_attention"])
    md += moe_markdown(bench_moe)
    md += training_runs_markdown(report["training_runs"])
    open(os.path.join(out, "report.md"), "w").write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
