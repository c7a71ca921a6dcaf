// Shared helpers of the benchmark programs: timing, tables, JSON results.
import { mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** repository root, from dist/bench/ or bench/ */
export const ROOT = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.includes(`${join('dist', 'bench')}`) ? join(here, '..', '..') : join(here, '..');
})();

/** median seconds of `fn` over `repeats` timed runs after `warmup` untimed ones */
export function timeIt(fn: () => void, opts: { warmup?: number; repeats?: number; minSeconds?: number } = {}): number {
  for (let i = 0; i < (opts.warmup ?? 1); i++) fn();
  const times: number[] = [];
  const until = performance.now() + 1000 * (opts.minSeconds ?? 0);
  for (let i = 0; i < (opts.repeats ?? 3) || performance.now() < until; i++) {
    const t0 = performance.now();
    fn();
    times.push((performance.now() - t0) / 1000);
    if (times.length > 1000) break;
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  const line = (r: (string | number)[]) => r.map((c, i) => String(c).padStart(widths[i]!)).join('  ');
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

function fmt(x: number): string {
  if (Number.isInteger(x)) return String(x);
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

export function machine(): Record<string, unknown> {
  const c = cpus();
  return { cpu: c[0]?.model ?? 'unknown', cores: c.length, node: process.version, platform: process.platform };
}

/** write bench/results/<name>-<date>.json atomically; returns the path */
export function writeResult(name: string, payload: Record<string, unknown>): string {
  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const date = new Date().toISOString().slice(0, 10);
  const path = join(dir, `${name}-${date}.json`);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify({ date: new Date().toISOString(), machine: machine(), ...payload }, null, 2) + '\n');
  renameSync(tmp, path);
  return path;
}
