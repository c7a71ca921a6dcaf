// One row per demo run of a sweep folder (bench/demo-sweep.sh): stage accuracies and GRPO − SFT.
import { readdirSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
const dir = process.argv[2];
const rows = [['run', 'teacher', 'distilled', 'sft', 'grpo', 'gain', 'SE', 'z', 'best/', 'seconds']];
for (const d of readdirSync(dir).sort()) {
  const f = join(dir, d, 'summary.json');
  if (!existsSync(f)) continue;
  const s = JSON.parse(readFileSync(f, 'utf8'));
  const acc = (st) => { const r = s.stages.find((x) => x.stage === st); return r ? (100 * r.accuracy).toFixed(1) : '-'; };
  const g = s.grpo_vs_sft;
  rows.push([d, acc('teacher'), acc('distilled'), acc('sft'), acc('grpo'), (100 * g.gain).toFixed(1), (100 * g.se).toFixed(1), g.z.toFixed(2),
    s.grpo_best ? (100 * s.grpo_best.accuracy).toFixed(1) : '-', s.total_seconds.toFixed(0)]);
}
const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
for (const r of rows) console.log(r.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  '));
