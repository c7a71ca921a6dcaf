#!/usr/bin/env python3
"""Where a decode step's time goes between kernels: reads the CSV of `nsys stats --report cuda_gpu_trace` for a run of
decode steps replayed as CUDA graphs (`nsys profile --cuda-graph-trace=node`), splits the kernel sequence into steps
(each ends with the kernel named by --last, the sampler's last kernel by default), and for the last --steps steps
prints: kernels a step, the step's span (first start to last end), the time kernels ran, the idle time between
consecutive kernels (total, mean, by the kind of the kernel that follows), and each kernel kind's in-graph time.

    python3 bench/nsys-gaps.py TRACE.csv|TRACE.sqlite [--last k_argmax_combine] [--steps 3] [--json OUT.json]
"""
import argparse
import csv
import json
import re
import sys
from collections import defaultdict


def kind(name: str) -> str:
    """a short kernel kind: cuBLASLt's kernels by tile (nvjet_…), ours by function name without template arguments"""
    if name.startswith("nvjet") or "gemm" in name.lower() or "cublas" in name.lower():
        return "product " + name.split(" ")[0][:48]
    m = re.search(r"(k_[A-Za-z0-9_]+)", name)
    return m.group(1) if m else name[:48]


def read_csv(path: str) -> list:
    """(start ns, duration ns, name) of each kernel in `nsys stats --report cuda_gpu_trace --format csv` output"""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            name = r.get("Name") or r.get("name") or ""
            start, dur = r.get("Start (ns)"), r.get("Duration (ns)")
            if start is None or dur is None or not name:
                continue
            if "[CUDA mem" in name or "memcpy" in name.lower() or "memset" in name.lower():
                continue
            rows.append((int(float(start)), int(float(dur)), name))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--last", default="k_argmax_combine", help="the name of each step's last kernel")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    if a.trace.endswith(".sqlite"):  # `nsys export --type sqlite`: the kernel activity table
        import sqlite3

        db = sqlite3.connect(a.trace)
        for start, dur, name in db.execute(
            "SELECT k.start, k.end - k.start, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON k.demangledName = s.id"
        ):
            rows.append((int(start), int(dur), name))
    else:
        rows = read_csv(a.trace)
    rows.sort()
    ends = [i for i, r in enumerate(rows) if a.last in r[2]]
    if len(ends) < a.steps + 1:
        names = defaultdict(int)
        for r in rows:
            names[kind(r[2])] += 1
        print("\n".join(f"{c:6d} {n}" for n, c in sorted(names.items(), key=lambda x: -x[1])[:30]), file=sys.stderr)
        sys.exit(f"nsys-gaps: {len(ends)} kernels named {a.last} in {a.trace}: need {a.steps + 1}")
    steps = []
    for s in range(len(ends) - a.steps, len(ends)):
        ks = rows[ends[s - 1] + 1 : ends[s] + 1]
        span = ks[-1][0] + ks[-1][1] - ks[0][0]
        busy = sum(k[1] for k in ks)
        gaps_by = defaultdict(list)
        time_by = defaultdict(lambda: [0, 0])
        for i, k in enumerate(ks):
            t = time_by[kind(k[2])]
            t[0] += 1
            t[1] += k[1]
            if i:
                gaps_by["before a product" if kind(k[2]).startswith("product") else "before our kernels"].append(k[0] - (ks[i - 1][0] + ks[i - 1][1]))
        steps.append({"kernels": len(ks), "span_us": span / 1e3, "busy_us": busy / 1e3,
                      "gaps": {g: {"count": len(v), "total_us": sum(v) / 1e3, "mean_us": sum(v) / len(v) / 1e3} for g, v in gaps_by.items()},
                      "by_kind": {n: {"calls": c, "us": t / 1e3} for n, (c, t) in sorted(time_by.items(), key=lambda x: -x[1][1])}})
    for i, s in enumerate(steps):
        idle = s["span_us"] - s["busy_us"]
        print(f"step {i}: {s['kernels']} kernels, span {s['span_us']:.1f} µs, kernels running {s['busy_us']:.1f} µs, idle between kernels {idle:.1f} µs")
        for g, v in s["gaps"].items():
            print(f"    gaps {g}: {v['count']} × {v['mean_us']:.2f} µs = {v['total_us']:.1f} µs")
    print("\nin-graph time by kernel kind (last step):")
    for n, v in steps[-1]["by_kind"].items():
        print(f"  {v['calls']:4d} × {v['us'] / v['calls']:7.2f} µs = {v['us']:8.1f} µs  {n}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"trace": a.trace, "steps": steps}, f, indent=1)


if __name__ == "__main__":
    main()
