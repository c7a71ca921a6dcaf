// report.html of `m1 demo`: one self-contained page (inline SVG, no scripts): accuracy per stage with
// ±2 SE bars, the GRPO-vs-SFT verdict, generation speed against length, and the training curves.
import type { DemoSummary } from './demo.js';
import { svgChart } from './report.js';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const pct = (x: number): string => (100 * x).toFixed(1);

/** bars of accuracy (percent) with ±2 SE whiskers */
function accuracyBars(s: DemoSummary): string {
  const W = 640, H = 280, L = 56, R = 16, T = 28, B = 44;
  const n = s.stages.length;
  const slot = (W - L - R) / Math.max(1, n);
  const y = (v: number): number => H - B - Math.max(0, Math.min(1, v)) * (H - T - B);
  let g = `<text x="${L}" y="18" font-size="14" font-weight="bold">held-out accuracy (pass@1 over ${s.eval.n} samples), ±2 SE</text>`;
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    g += `<line x1="${L}" x2="${W - R}" y1="${y(f)}" y2="${y(f)}" stroke="#eee"/><text x="${L - 6}" y="${y(f) + 4}" text-anchor="end" font-size="11">${f * 100}%</text>`;
  }
  s.stages.forEach((r, i) => {
    const x = L + i * slot + slot * 0.2, w = slot * 0.6, cx = x + w / 2;
    const color = r.stage === 'grpo' ? '#d62728' : r.stage === 'teacher' ? '#7f7f7f' : '#1f77b4';
    g += `<rect x="${x.toFixed(1)}" y="${y(r.accuracy).toFixed(1)}" width="${w.toFixed(1)}" height="${(y(0) - y(r.accuracy)).toFixed(1)}" fill="${color}" opacity="0.8"/>`;
    const lo = y(r.accuracy - 2 * r.se), hi = y(r.accuracy + 2 * r.se);
    g += `<line x1="${cx}" x2="${cx}" y1="${lo.toFixed(1)}" y2="${hi.toFixed(1)}" stroke="#000"/>`;
    g += `<line x1="${cx - 6}" x2="${cx + 6}" y1="${lo.toFixed(1)}" y2="${lo.toFixed(1)}" stroke="#000"/><line x1="${cx - 6}" x2="${cx + 6}" y1="${hi.toFixed(1)}" y2="${hi.toFixed(1)}" stroke="#000"/>`;
    g += `<text x="${cx}" y="${(y(r.accuracy) - 6).toFixed(1)}" text-anchor="middle" font-size="11">${pct(r.accuracy)}</text>`;
    g += `<text x="${cx}" y="${H - B + 16}" text-anchor="middle" font-size="12">${esc(r.stage)}</text>`;
  });
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">${g}</svg>`;
}

/** tokens/s of teacher and hybrid against generation length */
function speedChart(s: DemoSummary): string {
  const W = 720, H = 260, L = 64, R = 170, T = 28, B = 40; // R leaves room for the legend
  const pts = s.speed;
  if (pts.length === 0) return '';
  const xs = pts.map((p) => p.length), ys = pts.flatMap((p) => [p.teacher_tokens_per_s, p.hybrid_tokens_per_s]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) === x0 ? x0 + 1 : Math.max(...xs);
  const y1 = Math.max(...ys) * 1.1;
  const sx = (x: number): number => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v: number): number => H - B - (v / y1) * (H - T - B);
  let g = `<text x="${L}" y="18" font-size="14" font-weight="bold">generation speed, batch ${pts[0]!.batch} (tokens/s, higher is better)</text>`;
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    g += `<line x1="${L}" x2="${W - R}" y1="${sy(f * y1)}" y2="${sy(f * y1)}" stroke="#eee"/><text x="${L - 6}" y="${sy(f * y1) + 4}" text-anchor="end" font-size="11">${Math.round(f * y1)}</text>`;
  }
  for (const x of xs) g += `<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${x}</text>`;
  g += `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle" font-size="11">generated tokens per sequence</text>`;
  const series: Array<[string, string, number[]]> = [
    ['transformer teacher', '#7f7f7f', pts.map((p) => p.teacher_tokens_per_s)],
    ['hybrid (GRPO)', '#d62728', pts.map((p) => p.hybrid_tokens_per_s)],
  ];
  series.forEach(([name, color, v], i) => {
    g += `<path d="${v.map((y, j) => `${j === 0 ? 'M' : 'L'}${sx(xs[j]!).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`;
    for (let j = 0; j < v.length; j++) g += `<circle cx="${sx(xs[j]!).toFixed(1)}" cy="${sy(v[j]!).toFixed(1)}" r="3" fill="${color}"/>`;
    g += `<rect x="${W - R + 10}" y="${T + 18 * i}" width="12" height="3" fill="${color}"/><text x="${W - R + 26}" y="${T + 18 * i + 5}" font-size="11">${esc(name)}</text>`;
  });
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">${g}</svg>`;
}

export function renderDemoReport(s: DemoSummary): string {
  const g = s.grpo_vs_sft;
  const rows = s.stages.map((r) => `<tr><td>${esc(r.stage)}</td><td>${pct(r.accuracy)}</td><td>${pct(r.se)}</td><td>${pct(r.se_binomial)}</td><td>${pct(r.maj_at_k)}</td>` +
    `<td>${r.mean_response_tokens.toFixed(1)}</td><td>${r.train_seconds.toFixed(1)}</td><td>${r.seconds.toFixed(1)}</td><td><code>${esc(r.model)}</code></td></tr>`).join('');
  const speedRows = s.speed.map((p) => `<tr><td>${p.length}</td><td>${p.batch}</td><td>${p.teacher_tokens_per_s.toFixed(0)}</td><td>${p.hybrid_tokens_per_s.toFixed(0)}</td><td>×${p.speedup.toFixed(2)}</td></tr>`).join('');
  const verdict = `GRPO (final weights) vs SFT on the same ${s.eval.problems} held-out problems: ${g.gain >= 0 ? '+' : ''}${pct(g.gain)} points, paired SE ${pct(g.se)} points ` +
    `(z = ${g.z.toFixed(2)}) — the gain <b>${g.exceeds_2se ? 'exceeds' : 'does not exceed'}</b> two standard errors.` +
    (s.grpo_best ? ` M1's best-mean-reward checkpoint (best/, the weights that made the rollouts of step ${s.grpo_best.step}): ` +
      `${pct(s.grpo_best.accuracy)} % ± ${pct(s.grpo_best.se)}, ${s.grpo_best.gain_over_sft >= 0 ? '+' : ''}${pct(s.grpo_best.gain_over_sft)} ± ${pct(s.grpo_best.gain_se)} points over SFT.` : '');
  const charts = [
    accuracyBars(s), speedChart(s),
    svgChart('distillation loss (reverse KL)', s.curves.distill), svgChart('SFT loss (cross-entropy)', s.curves.sft),
    svgChart('GRPO mean reward of the rollouts', s.curves.grpo_reward),
  ];
  return `<!doctype html><html><head><meta charset="utf-8"><title>m1 demo</title>` +
    `<style>body{font-family:sans-serif;margin:24px;max-width:900px}table{border-collapse:collapse;margin:8px 0 16px}td,th{padding:2px 10px;text-align:right}td:first-child,th:first-child{text-align:left}</style></head><body>` +
    `<h1>m1 demo: the M1 recipe at toy scale</h1>` +
    `<p>teacher → hybrid conversion → distillation → SFT → GRPO, evaluated on the held-out test split of synthetic-${s.difficulty} ` +
    `(${s.eval.problems} problems × ${s.eval.n} samples, temperature ${s.eval.temperature}, at most ${s.eval.max_tokens} tokens). ` +
    `Accuracy is pass@1; SE is over problems (the spread of per-problem accuracy / √problems); the binomial SE over problems × samples is shown too. Seed ${s.seed}; ${s.total_seconds.toFixed(0)} s in total.</p>` +
    `<table><tr><th>stage</th><th>accuracy %</th><th>SE</th><th>binomial SE</th><th>maj@${s.eval.n} %</th><th>response tokens</th><th>train s</th><th>eval s</th><th>model</th></tr>${rows}</table>` +
    `<p>${verdict}</p>` +
    `<table><tr><th>length</th><th>batch</th><th>teacher tok/s</th><th>hybrid tok/s</th><th>speedup</th></tr>${speedRows}</table>` +
    charts.map((c) => `<div>${c}</div>`).join('') + `</body></html>\n`;
}
