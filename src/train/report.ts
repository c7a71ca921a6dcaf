// report.html for a training run: inline-SVG curves of loss (and head diagnostics), lr and gradient
// norm against the step. No scripts, no external files: it opens anywhere.

export interface MetricsLine {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
  [key: string]: number;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(2) : v.toPrecision(4).replace(/\.?0+$/, '');
}

/** one line chart of y against step; non-finite points are skipped */
export function svgChart(title: string, points: Array<[number, number]>, opts: { width?: number; height?: number } = {}): string {
  const W = opts.width ?? 640, H = opts.height ?? 240, L = 64, R = 16, Tp = 28, Bm = 36;
  const pts = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pts.length === 0) return `<svg width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg"><text x="${L}" y="20">${esc(title)}: no data</text></svg>`;
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => H - Bm - ((y - y0) / (y1 - y0)) * (H - Tp - Bm);
  const path = pts.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const y = y0 + f * (y1 - y0);
    return `<line x1="${L}" x2="${W - R}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#eee"/><text x="${L - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end" font-size="11">${fmt(y)}</text>`;
  }).join('');
  const xt = [0, 0.5, 1].map((f) => {
    const x = x0 + f * (x1 - x0);
    return `<text x="${sx(x).toFixed(1)}" y="${H - Bm + 16}" text-anchor="middle" font-size="11">${Math.round(x)}</text>`;
  }).join('');
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">` +
    `<text x="${L}" y="18" font-size="14" font-weight="bold">${esc(title)}</text>${ticks}${xt}` +
    `<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle" font-size="11">step</text>` +
    `<path d="${path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/></svg>`;
}

export function renderTrainingReport(title: string, lines: readonly MetricsLine[], info: Record<string, string | number>): string {
  const series = (k: string): Array<[number, number]> => lines.filter((l) => typeof l[k] === 'number').map((l) => [l.step, l[k]!]);
  const extra = new Set<string>();
  for (const l of lines) for (const k of Object.keys(l)) if (!['step', 'loss', 'lr', 'grad_norm', 'tokens_per_s', 'tokens', 'elapsed_s', 'epoch'].includes(k)) extra.add(k);
  const charts = [
    svgChart('loss', series('loss')),
    ...[...extra].map((k) => svgChart(k, series(k))),
    svgChart('learning rate', series('lr')),
    svgChart('gradient norm (before clipping)', series('grad_norm')),
    svgChart('tokens/s', series('tokens_per_s')),
  ];
  const rows = Object.entries(info).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(String(v))}</td></tr>`).join('');
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title>` +
    `<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}td{padding:2px 12px 2px 0}</style></head>` +
    `<body><h1>${esc(title)}</h1><table>${rows}</table>${charts.map((c) => `<div>${c}</div>`).join('')}</body></html>\n`;
}
