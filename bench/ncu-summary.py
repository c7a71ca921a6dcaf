#!/usr/bin/env python3
"""Per-kernel GPU time from an `ncu --csv --metrics gpu__time_duration.sum` log: the kernels of the last
`--steps` decode steps (found as the last repeats of the step's kernel sequence), grouped by name, as ms per step.
Usage: python3 bench/ncu-summary.py LOG.csv --steps K [--json OUT]"""
import argparse, csv, json, re, sys
from collections import OrderedDict

ap = argparse.ArgumentParser()
ap.add_argument('log'); ap.add_argument('--steps', type=int, required=True); ap.add_argument('--json')
ap.add_argument('--label', default='')
a = ap.parse_args()
rows = []
with open(a.log, newline='') as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get('Metric Name') != 'gpu__time_duration.sum':
        continue
    rows.append((r['Kernel Name'], float(r['Metric Value'].replace(',', ''))))
if not rows:
    sys.exit(f'{a.log}: no gpu__time_duration.sum rows')
# a step ends with the last kernel of the sequence; assume the final `steps` steps have equal kernel counts:
# find the period p (kernels per step) as the smallest p whose last steps·p names repeat with period p
names = [n for n, _ in rows]
period = None
for p in range(10, len(names) // a.steps + 1):
    tail = names[-a.steps * p:]
    if all(tail[i] == tail[i % p] for i in range(len(tail))):
        period = p; break
if period is None:
    sys.exit(f'{a.log}: the last {a.steps} steps do not repeat one kernel sequence')
tail = rows[-a.steps * period:]
agg = OrderedDict()
for n, ns in tail:
    short = re.sub(r'\(.*', '', n)
    short = re.sub(r'^void ', '', short)
    e = agg.setdefault(short, [0, 0.0]); e[0] += 1; e[1] += ns
tot = sum(v[1] for v in agg.values()) / a.steps / 1e6
print(f'{a.label} kernels per step {period}, sum of kernel times {tot:.3f} ms per step')
out = []
for k, (c, ns) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    ms = ns / a.steps / 1e6
    out.append({'kernel': k, 'perStep': c / a.steps, 'msPerStep': ms})
    print(f'  {ms:8.3f} ms {100 * ms / tot:5.1f}%  {c // a.steps:4d}x  {k[:110]}')
if a.json:
    json.dump({'label': a.label, 'kernelsPerStep': period, 'kernelMsPerStep': tot, 'kernels': out}, open(a.json, 'w'), indent=1)
