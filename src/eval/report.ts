/**
 * report.html for `m1 eval`: one self-contained page (inline CSS and SVG, no scripts, no network):
 * the run's settings, a table of every benchmark's numbers, and per benchmark two plots —
 * accuracy vs k (pass@k and maj@k, log₂ axis) and accuracy vs generation seconds (the fixed-time-
 * budget curve: k samples cost k × measured seconds per sample).
 */
import type { BenchSummary, EvalSummary } from './run.js';

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}`;

/** x with `digits` decimals and thousands separators; '–' for a missing or non-finite value */
export function fmt(x: number | null | undefined, digits = 1): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** log₂ x axis (for k) */
  xLog2?: boolean;
  /** y values as fractions in [0, 1] shown in percent (default), or plain numbers (`yUnit` after the value) */
  yPercent?: boolean;
  yUnit?: string;
  /** where the legend goes (default bottom right: rising curves leave room there) */
  legend?: 'bottom-right' | 'top-left';
  width?: number;
  height?: number;
}

/** 1, 2 or 5 × 10^e: the tick step nearest to span/target */
function niceStep(span: number, target: number): number {
  if (!(span > 0)) return 1;
  const raw = span / target;
  const e = 10 ** Math.floor(Math.log10(raw));
  const m = raw / e;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * e;
}

function ticks(lo: number, hi: number, target: number): number[] {
  const step = niceStep(hi - lo, target);
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function tickLabel(v: number): string {
  if (Math.abs(v) >= 1000) return v.toLocaleString('en-US', { maximumFractionDigits: 0 });
  return String(Number(v.toPrecision(4)));
}

/**
 * An SVG line chart with axes, ticks, grid, axis labels and a legend. By default y values are accuracies in
 * [0, 1] shown in percent, the y range zoomed to the data in steps of 10 points; with `yPercent: false` they
 * are plain numbers on a range from 0 (or the least value, when negative) to a little above the largest.
 */
export function lineChart(c: ChartSpec): string {
  const W = c.width ?? 480, H = c.height ?? 300;
  const m = { left: 56, right: 16, top: 34, bottom: 48 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const all = c.series.flatMap((s) => s.points);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeHtml(c.title)}">`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" class="title">${escapeHtml(c.title)}</text>`);
  if (all.length === 0) {
    parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="note">no data</text></svg>`);
    return parts.join('');
  }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const tx = (x: number): number => (c.xLog2 ? Math.log2(x) : x);
  let x0 = Math.min(...xs.map(tx)), x1 = Math.max(...xs.map(tx));
  if (!c.xLog2) x0 = Math.min(0, x0);
  if (x1 - x0 < 1e-12) (x0 -= 0.5), (x1 += 0.5);
  const percent = c.yPercent ?? true;
  let y0 = percent ? Math.max(0, Math.floor(Math.min(...ys) * 10 - 0.5) / 10) : Math.min(0, ...ys);
  let y1 = percent ? Math.min(1, Math.ceil(Math.max(...ys) * 10 + 0.5) / 10) : Math.max(...ys) * 1.08;
  if (!(y1 - y0 > 0)) (y0 -= 0.5), (y1 += 0.5);
  const yText = (v: number): string => (percent ? `${pct(v)}%` : `${tickLabel(v)}${c.yUnit ?? ''}`);
  // points stay clear of the frame by `pad` pixels
  const pad = 10;
  const X = (x: number): number => m.left + pad + ((tx(x) - x0) / (x1 - x0)) * (pw - 2 * pad);
  const Y = (y: number): number => m.top + (1 - (y - y0) / (y1 - y0)) * ph;

  // grid and y ticks
  for (const v of ticks(y0, y1, 5)) {
    const y = Y(v).toFixed(1);
    parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" class="grid"/>`);
    parts.push(`<text x="${m.left - 6}" y="${y}" dy="0.32em" text-anchor="end" class="tick">${percent ? `${pct(v).replace(/\.0$/, '')}%` : tickLabel(v)}</text>`);
  }
  // x ticks: powers of two on a log axis, nice numbers otherwise
  const xt = c.xLog2
    ? Array.from({ length: Math.floor(x1) - Math.ceil(x0) + 1 }, (_, i) => 2 ** (Math.ceil(x0) + i))
    : ticks(x0, x1, 6);
  for (const v of xt) {
    const x = X(v).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${m.top + ph}" y2="${m.top + ph + 4}" class="axis"/>`);
    parts.push(`<text x="${x}" y="${m.top + ph + 16}" text-anchor="middle" class="tick">${tickLabel(v)}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" class="frame"/>`);
  parts.push(`<text x="${m.left + pw / 2}" y="${H - 8}" text-anchor="middle" class="label">${escapeHtml(c.xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" class="label">${escapeHtml(c.yLabel)}</text>`);

  for (const s of c.series) {
    if (s.points.length === 0) continue;
    const d = s.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    for (const p of s.points) {
      parts.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3" fill="${s.color}"><title>${escapeHtml(`${s.name}: x=${tickLabel(p[0])}, ${yText(p[1])}`)}</title></circle>`);
    }
  }
  // legend bottom right inside the frame, where rising accuracy curves leave room; a white box keeps
  // it legible where a line does pass
  const lw = 12 + 7 * Math.max(...c.series.map((s) => s.name.length)) + 30;
  const topLeft = c.legend === 'top-left';
  const lx = topLeft ? m.left + 8 : m.left + pw - lw - 8, ly = topLeft ? m.top + 12 : m.top + ph - 8 - 16 * c.series.length;
  parts.push(`<rect x="${lx}" y="${ly - 4}" width="${lw}" height="${16 * c.series.length + 6}" class="legendbox"/>`);
  c.series.forEach((s, i) => {
    const y = ly + 6 + i * 16;
    parts.push(`<line x1="${lx + 6}" x2="${lx + 24}" y1="${y}" y2="${y}" stroke="${s.color}" stroke-width="2"/>`);
    parts.push(`<text x="${lx + 30}" y="${y}" dy="0.32em" class="legend">${escapeHtml(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

/** the classes lineChart's SVG uses */
export const CHART_CSS = `svg .title{font-size:13px;font-weight:600} svg .label{font-size:12px;fill:#333} svg .tick{font-size:11px;fill:#555} svg .legend{font-size:11px}
svg .grid{stroke:#eee} svg .legendbox{fill:#fff;fill-opacity:.85;stroke:#ddd} svg .axis{stroke:#888} svg .frame{fill:none;stroke:#888} svg .note{fill:#888}`;

const PASS_COLOR = '#1f77b4', MAJ_COLOR = '#d62728';

function benchPlots(name: string, b: BenchSummary): string {
  const kChart = lineChart({
    title: `${name}: accuracy vs samples k`, xLabel: 'samples per problem k (log scale)', yLabel: 'accuracy (%)', xLog2: true,
    series: [
      { name: 'pass@k', color: PASS_COLOR, points: b.curve.map((p) => [p.k, p.pass]) },
      { name: 'maj@k', color: MAJ_COLOR, points: b.curve.map((p) => [p.k, p.maj]) },
    ],
  });
  const tChart = b.time_budget === null
    ? `<div class="nodata">No per-sample timings: the fixed-time-budget curve needs the seconds of every sample.</div>`
    : lineChart({
      title: `${name}: accuracy vs generation time`, xLabel: `time budget per problem (s; k × ${fmt(b.seconds_per_sample, 2)} s/sample)`,
      yLabel: 'accuracy (%)',
      series: [
        { name: 'pass@k within budget', color: PASS_COLOR, points: b.time_budget.map((p) => [p.seconds, p.pass]) },
        { name: 'maj@k within budget', color: MAJ_COLOR, points: b.time_budget.map((p) => [p.seconds, p.maj]) },
      ],
    });
  const finish = Object.entries(b.finish_reasons).map(([k, v]) => `${escapeHtml(k)} ${v}`).join(', ');
  const missing = b.problems < b.problems_total
    ? `<p class="warn">${b.problems_total - b.problems} of ${b.problems_total} problems have no samples and are not scored (e.g. ${b.missing_problems.slice(0, 5).map((x) => `<code>${escapeHtml(x)}</code>`).join(', ')}).</p>`
    : '';
  return `<section><h2>${escapeHtml(name)}</h2>${missing}<p class="meta">${b.problems} problems × n = ${b.n}; ${b.samples} samples, ${b.correct} correct, ${b.no_answer} without an answer; finish reasons: ${finish || '–'}</p><div class="plots">${kChart}${tChart}</div></section>`;
}

export function renderReport(s: EvalSummary): string {
  const names = Object.keys(s.benchmarks);
  const ks = [...new Set(names.flatMap((n) => Object.keys(s.benchmarks[n]!['pass@k']).map(Number)))].sort((a, b) => a - b);
  // pass@1 has its own column; maj@1 stays (a vote of one differs from pass@1 only by resampling noise)
  const passKs = ks.filter((k) => k !== 1);
  const head = ['benchmark', 'problems', 'samples', 'pass@1', ...passKs.map((k) => `pass@${k}`), ...ks.map((k) => `maj@${k}`), 'mean tokens', 'tokens/s', 'seconds'];
  const rows = names.map((n) => {
    const b = s.benchmarks[n]!;
    const cell = (x: number | undefined): string => (x === undefined ? '–' : pct(x));
    return [
      `<th scope="row">${escapeHtml(n)}</th>`, `${b.problems}${b.problems < b.problems_total ? ` / ${b.problems_total}` : ''}`, String(b.samples),
      b.problems > 0 ? pct(b['pass@1']) : '–', ...passKs.map((k) => cell(b['pass@k'][String(k)])), ...ks.map((k) => cell(b['maj@k'][String(k)])),
      fmt(b.mean_tokens), fmt(b.tokens_per_s), fmt(b.seconds),
    ].map((c, i) => (i === 0 ? c : `<td>${c}</td>`)).join('');
  });
  const config = Object.entries(s.config)
    .map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${escapeHtml(Array.isArray(v) ? v.join(', ') : String(v))}</td></tr>`)
    .join('');
  const title = s.mode === 'model' ? `m1 eval — ${baseName(s.source)}` : `m1 eval — responses ${baseName(s.source)}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums}
th,td{padding:.3em .7em;border-bottom:1px solid #e4e4e4;text-align:right} thead th{border-bottom:2px solid #999;background:#f6f6f6}
th[scope=row]{text-align:left} table.config td{text-align:left} .meta{color:#555} .warn{color:#a40}
.plots{display:flex;flex-wrap:wrap;gap:1em} .nodata{width:480px;height:300px;display:flex;align-items:center;justify-content:center;color:#888;border:1px dashed #ccc;text-align:center;padding:1em;box-sizing:border-box}
${CHART_CSS}
</style></head><body>
<h1>${escapeHtml(title)}</h1>
<p class="sub">${escapeHtml(s.source)} · ${escapeHtml(s.created)}</p>
<table class="results"><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>
${rows.map((r) => `<tr>${r}</tr>`).join('\n')}
</tbody></table>
<p class="meta">Accuracies in %. pass@k: unbiased estimator over the n samples; maj@k: majority vote over k of the n samples (answers grouped by equivalence, ties to the answer seen first in a random draw order), averaged over 100 draws. tokens/s: generated tokens over generation wall-clock.</p>
${names.map((n) => benchPlots(n, s.benchmarks[n]!)).join('\n')}
<h2>Settings</h2><table class="config"><tbody>${config}</tbody></table>
</body></html>
`;
}

function baseName(p: string): string {
  const parts = p.split(/[\\/]/).filter((x) => x !== '');
  return parts[parts.length - 1] ?? p;
}
