#!/usr/bin/env python3
"""Per-kernel GPU time from an `ncu --csv --metrics gpu__time_duration.sum` log: the kernels of the last
`--steps` decode steps (a step starts at a launch of --step-start, by default the embedding kernel), grouped by name, as ms per step.
Usage: python3 bench/ncu-summary.py LOG.csv --steps K [--json OUT]"""
import argparse, csv, json, re, sys
from collections import OrderedDict

ap = argparse.ArgumentParser()
ap.add_argument('log'); ap.add_argument('--steps', type=int, required=True); ap.add_argument('--json')
ap.add_argument('--label', default='')
ap.add_argument('--step-start', default=r'k_embedding', help='regex of the kernel that starts a step')
a = ap.parse_args()
rows = []
with open(a.log, newline='') as f:
    lines = [l for l in f if l.startswith('"')]
# one row per (launch, metric): pivot by launch ID; with launch__grid_size / dram__bytes_read.sum collected too, kernels
# are grouped by (name, grid) — a product's shape — and their DRAM read rate is shown
by_id = OrderedDict()
for r in csv.DictReader(lines):
    m = by_id.setdefault(r['ID'], {'name': r['Kernel Name']})
    m[r.get('Metric Name')] = float(r['Metric Value'].replace(',', ''))
for m in by_id.values():
    if 'gpu__time_duration.sum' not in m:
        continue
    name = m['name'] + (f' [grid {int(m["launch__grid_size"])}]' if 'launch__grid_size' in m else '')
    rows.append((name, m['gpu__time_duration.sum'], m.get('dram__bytes_read.sum')))
if not rows:
    sys.exit(f'{a.log}: no gpu__time_duration.sum rows')
# a decode step starts with the token-embedding kernel: take the last `steps` complete steps (from one embedding
# launch to the kernel before the next), so that what follows the last step is left out
starts = [i for i, (n, _, _) in enumerate(rows) if re.search(a.step_start, n)]
if len(starts) < a.steps + 1:
    sys.exit(f'{a.log}: {len(starts)} launches of /{a.step_start}/ found, {a.steps + 1} needed for {a.steps} complete steps')
first, last = starts[-a.steps - 1], starts[-1]
counts = [starts[j + 1] - starts[j] for j in range(len(starts) - a.steps - 1, len(starts) - 1)]
period = sum(counts) / a.steps; trail = len(rows) - last  # kernels per step (steps may differ: a split-K combine or not)
rows = rows[first:last]
tail = rows
agg = OrderedDict()
for n, ns, rd in tail:
    grid = re.search(r' \[grid \d+\]$', n)
    short = re.sub(r'\(.*', '', n[:grid.start()] if grid else n)
    short = re.sub(r'^void ', '', short) + (grid.group(0) if grid else '')
    e = agg.setdefault(short, [0, 0.0, 0.0]); e[0] += 1; e[1] += ns; e[2] += rd or 0.0
tot = sum(v[1] for v in agg.values()) / a.steps / 1e6
print(f'{a.label} kernels per step {period:g} ({"/".join(map(str, counts))}), sum of kernel times {tot:.3f} ms per step ({trail} kernels from the last step start on left out)')
out = []
for k, (c, ns, rd) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    ms = ns / a.steps / 1e6
    tbs = rd / ns / 1e3 if rd else None  # bytes per ns = GB/s; / 1e3 → TB/s
    out.append({'kernel': k, 'perStep': c / a.steps, 'msPerStep': ms, **({'dramReadTBs': tbs} if tbs else {})})
    rate = f' {tbs:4.2f} TB/s' if tbs else ''
    print(f'  {ms:8.3f} ms {100 * ms / tot:5.1f}%  {c // a.steps:4d}x{rate}  {k[:110]}')
if a.json:
    json.dump({'label': a.label, 'kernelsPerStep': period, 'kernelMsPerStep': tot, 'kernels': out}, open(a.json, 'w'), indent=1)
