// The HTML page of a bench:decode result (bench/decode.ts writes it beside the JSON; `--report FILE.json` redraws
// one): the M1 paper's Figures 1 and 2 from our measurements — latency of prompt + generated tokens against batch
// and against generated length, for both models, with M1's speed-up — and the roofline fraction of every measured
// step. One self-contained file: inline CSS and SVG, no scripts.
import { CHART_CSS, escapeHtml, fmt, lineChart, type Series } from '../src/eval/report.js';

/** the parts of bench:decode's JSON the page draws (older result files may lack `llamaWaves`) */
export interface DecodeResult {
  date?: string;
  backend: string;
  /**
   * bench:decode's flags. The setup ones are absent from files written before the eleventh session, which all ran zero
   * weights, f32 SSM states, zero KV caches, contiguous KV blocks
   */
  options: {
    prompt: number; gen: number; lengthBatch: number; bandwidth: number; tflops: number;
    zeroWeights?: boolean; randomWeights?: boolean; graphs?: boolean; ssmDtype?: string; kvFill?: string; blockOrder?: string;
  };
  points: Array<{ model: string; batch: number; context: number; fits?: boolean; stepMs?: number; tokensPerS?: number; rooflineFraction?: number; skipped?: string; peakBytes?: number | null }>;
  batchSweep: Array<{ batch: number; gen: number; llamaSeconds: number | null; m1Seconds: number | null; speedup: number | null; llamaWaves?: { batch: number; waves: number; seconds: number }; speedupWaves?: number }>;
  lengthSweep: Array<{ batch: number; gen: number; llamaSeconds: number | null; m1Seconds: number | null; speedup: number | null }>;
}

const M1 = '#d62728', LLAMA = '#1f77b4', WAVES = '#7f7f7f';
const BATCH_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

function pts<T>(rows: T[], x: (r: T) => number, y: (r: T) => number | null | undefined): [number, number][] {
  return rows.flatMap((r) => {
    const v = y(r);
    return v === null || v === undefined || !Number.isFinite(v) ? [] : [[x(r), v] as [number, number]];
  });
}

/** how the steps were measured, in words: weights, decode states, KV cache, graphs */
export function decodeSetup(o: DecodeResult['options']): string {
  const weights = o.randomWeights ? 'random weights' : (o.zeroWeights ?? true) ? 'zero weights' : 'weights from model folders';
  const kv = o.kvFill === 'random' ? 'filled with random values' : 'as allocated (zeros)';
  return `${weights}, ${o.ssmDtype ?? 'f32'} Mamba states, the KV cache ${kv} with ${o.blockOrder ?? 'contiguous'} blocks, ${o.graphs ? 'CUDA graphs' : 'eager steps'}`;
}

export function renderDecodeReport(r: DecodeResult): string {
  const o = r.options;
  const waves = r.batchSweep.filter((b) => b.llamaWaves);
  const latency: Series[] = [
    { name: 'llama-3.2-3b', color: LLAMA, points: pts(r.batchSweep, (b) => b.batch, (b) => b.llamaSeconds) },
    { name: 'm1-3b', color: M1, points: pts(r.batchSweep, (b) => b.batch, (b) => b.m1Seconds) },
  ];
  if (waves.length) latency.push({ name: 'llama-3.2-3b in waves', color: WAVES, points: pts(waves, (b) => b.batch, (b) => b.llamaWaves!.seconds) });
  const speedup: Series[] = [{ name: 'M1 speed-up', color: M1, points: pts(r.batchSweep, (b) => b.batch, (b) => b.speedup) }];
  if (waves.length) speedup.push({ name: 'against Llama in waves', color: WAVES, points: pts(waves, (b) => b.batch, (b) => b.speedupWaves) });
  const lengths: Series[] = [
    { name: 'llama-3.2-3b', color: LLAMA, points: pts(r.lengthSweep, (l) => l.gen, (l) => l.llamaSeconds) },
    { name: 'm1-3b', color: M1, points: pts(r.lengthSweep, (l) => l.gen, (l) => l.m1Seconds) },
  ];
  const roofline = (model: string): Series[] => {
    const batches = [...new Set(r.points.filter((p) => p.model === model && p.fits).map((p) => p.batch))].sort((a, b) => a - b);
    return batches.map((B, i) => ({
      name: `batch ${B}`, color: BATCH_COLORS[i % BATCH_COLORS.length]!,
      points: pts(r.points.filter((p) => p.model === model && p.batch === B && p.fits).sort((a, b) => a.context - b.context), (p) => p.context, (p) => p.rooflineFraction),
    }));
  };
  const charts = [
    lineChart({ title: `Latency of ${o.prompt} + ${o.gen} tokens vs batch`, xLabel: 'batch', yLabel: 'seconds', series: latency, xLog2: true, yPercent: false, yUnit: ' s', legend: 'top-left' }),
    lineChart({ title: 'M1 speed-up over Llama vs batch (paper: ×1.11 … ×3.01)', xLabel: 'batch', yLabel: 'latency ratio', series: speedup, xLog2: true, yPercent: false, yUnit: '×', legend: 'top-left' }),
    lineChart({ title: `Latency vs generated tokens, batch ${o.lengthBatch}`, xLabel: 'generated tokens', yLabel: 'seconds', series: lengths, xLog2: true, yPercent: false, yUnit: ' s', legend: 'top-left' }),
    lineChart({ title: 'm1-3b step: fraction of roofline vs context', xLabel: 'context (tokens)', yLabel: 'of roofline', series: roofline('m1-3b'), xLog2: true }),
    lineChart({ title: 'llama-3.2-3b step: fraction of roofline vs context', xLabel: 'context (tokens)', yLabel: 'of roofline', series: roofline('llama-3.2-3b'), xLog2: true }),
  ];
  const batchRows = r.batchSweep.map((b) => `<tr><th scope="row">${b.batch}</th><td>${b.llamaSeconds === null ? (b.llamaWaves ? `${fmt(b.llamaWaves.seconds)} (${b.llamaWaves.waves} × ${b.llamaWaves.batch})` : 'no fit') : fmt(b.llamaSeconds)}</td><td>${b.m1Seconds === null ? 'no fit' : fmt(b.m1Seconds)}</td><td>${b.speedup !== null ? `×${fmt(b.speedup, 2)}` : b.speedupWaves !== undefined ? `×${fmt(b.speedupWaves, 2)} (waves)` : '–'}</td><td>${b.m1Seconds === null ? '–' : fmt((b.batch * b.gen) / b.m1Seconds, 0)}</td></tr>`);
  const stepRows = r.points.map((p) => `<tr><td>${escapeHtml(p.model)}</td><td>${p.batch}</td><td>${p.context}</td>${p.fits ? `<td>${fmt(p.stepMs, 2)}</td><td>${fmt(p.tokensPerS, 0)}</td><td>${fmt(100 * (p.rooflineFraction ?? NaN), 0)} %</td><td>${p.peakBytes === undefined || p.peakBytes === null ? '–' : fmt(p.peakBytes / 2 ** 30, 1)}</td>` : `<td colspan="4">${p.skipped ? escapeHtml(`skipped (${p.skipped})`) : 'no fit'}</td>`}</tr>`);
  const title = `bench:decode (${r.backend})${r.date ? ` — ${r.date.slice(0, 10)}` : ''}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums} th,td{padding:.3em .7em;border-bottom:1px solid #e4e4e4;text-align:right}
thead th{border-bottom:2px solid #999;background:#f6f6f6} .meta{color:#555} .plots{display:flex;flex-wrap:wrap;gap:1em}
${CHART_CSS}
</style></head><body>
<h1>${escapeHtml(title)}</h1>
<p class="meta">Step times measured at the listed contexts (${escapeHtml(decodeSetup(o))}); latency = prompt ${o.prompt} + generated tokens, the step time integrated over the contexts the generation passes through (prefill excluded). Roofline = max(bytes / ${o.bandwidth} TB/s, FLOPs / ${o.tflops} TFLOP/s) per step. Where Llama's cache does not fit a batch, its requests are served in waves of the largest batch that fits (grey).</p>
<div class="plots">${charts.join('')}</div>
<h2>Latency vs batch</h2>
<table><thead><tr><th>batch</th><th>llama-3.2-3b s</th><th>m1-3b s</th><th>M1 speed-up</th><th>m1 tokens/s</th></tr></thead><tbody>
${batchRows.join('\n')}
</tbody></table>
<h2>Every step measured</h2>
<table><thead><tr><th>model</th><th>batch</th><th>context</th><th>ms / step</th><th>tokens/s</th><th>of roofline</th><th>peak GiB</th></tr></thead><tbody>
${stepRows.join('\n')}
</tbody></table>
</body></html>
`;
}
