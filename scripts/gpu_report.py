#!/usr/bin/env python3
"""Writes OUT/report.json and OUT/report.md for scripts/gpu_check.sh from what its stages left in OUT.

usage: gpu_report.py OUT STAGES_TSV TOTAL_SECONDS
Reads (each optional; a missing one is reported as such): nvidia_smi.txt, cuda_tests.xml, cpu_tests.xml,
bench_kernels.json. Standard library only (the GPU machine has no network).
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
              "(of dense) | bwd TFLOP/s (of dense) | max rel diff y, dx |\n|---|---|---|---|---|---|---|---|")
    for r in bench["results"]:
        g = r.get("grouped_gemm", {})
        md.append(f"| {r['shape']} | {r['N']} {r['d']} {r['F']} {r['E']} {r['k']} {r['shared']} | "
                  f"{r['grouped_ms']:.3f} | {r['expert_loop_ms']:.3f} | {r['loop_over_grouped']:.2f}x | "
                  f"{g.get('forward_tflops', 0):.1f} ({100 * g.get('forward_fraction_of_dense', 0):.0f}%) | "
                  f"{g.get('backward_tflops', 0):.1f} ({100 * g.get('backward_fraction_of_dense', 0):.0f}%) | "
                  f"{r.get('max_rel_diff_y', 0):.1e}, {r.get('max_rel_diff_dx', 0):.1e} |")
    return md


def main():
    out, stages_path, total = sys.argv[1], sys.argv[2], float(sys.argv[3])
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
        "bench_moe": bench_moe,
    }
    json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=1)

    md = []
    g = report["gpu"]
    md.append(f"# dsk gpu_check — {g['name']}, driver {g['driver']}, {g['memory']}")
    md.append(f"\n{report['date']}, {total:.0f} s in all.\n")
    md.append("| stage | result | seconds |\n|---|---|---|")
    for s in stages:
        md.append(f"| {s['stage']} | {'ok' if s['ok'] else 'FAILED (rc ' + s['rc'] + ')'} | {s['seconds']:.0f} |")
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
    md += moe_markdown(bench_moe)
    open(os.path.join(out, "report.md"), "w").write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
