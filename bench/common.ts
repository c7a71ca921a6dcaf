// Shared helpers of the benchmark programs: timing, tables, JSON results.
import { mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import type { Tensor } from '../src/backend/tensor.js';
import { keySeed, validateConfigs } from '../src/model/checkpoint.js';
import { CausalLM, modelParamSpecs, type ModelConfig } from '../src/model/model.js';
import { findPreset } from '../src/model/presets.js';
import { normalArray, Rng } from '../src/util/rng.js';

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

// ---------------------------------------------------------------- model shapes with made-up weights

/** the config of a preset: `m1-3b` / `llama-3.2-3b` (the issue-7 shapes) or any other preset name of that arch */
export function presetConfig(arch: 'm1' | 'llama', name: string): ModelConfig {
  const p = findPreset(arch, name);
  return validateConfigs(p.config, p.mambaConfig);
}

/**
 * A model of the config's shape with zero weights made on the device (bf16, f32 where the model keeps
 * f32): for timing inference, whose cost does not depend on the values.
 */
export function zeroModel(be: Backend, cfg: ModelConfig): CausalLM {
  const specs = new Map(modelParamSpecs(cfg).map((sp) => [sp.key, sp]));
  return new CausalLM(be, cfg, (key, shape) => be.zeros(shape, specs.get(key)?.keepF32 ? 'f32' : 'bf16'));
}

/** parameters at or below this many values get the reference init on the host (norms, A_log, D, conv, dt_proj) */
const HOST_INIT_MAX = 1 << 20;
/** f32 values of the random block a large weight's rows are drawn from (16 MB) */
const BLOCK_VALUES = 1 << 22;

/**
 * A model of the config's shape with random weights, for timing training (zero weights make zero
 * gradients and degenerate softmaxes). Initialising 3 B parameters on the host takes minutes, so:
 *  - small parameters (≤ 2^20 values: norms, A_log, D, conv taps, dt_proj) get their reference
 *    init exactly (ParamSpec.init with keySeed(seed, key), as initModel);
 *  - each large weight [R, C] gets its rows gathered on the device (the embedding op) from one random
 *    block [⌈2^22 / C⌉, C] of N(0, 0.02²) values per column width C, in a per-key hashed row order,
 *    then cast to bf16. The rows of a weight repeat (rank ≤ block rows), which costs nothing in time
 *    and keeps activations, logits and gradients at ordinary scales.
 * Deterministic in `seed`; no kernel beyond the Backend ops.
 */
export function randomModel(be: Backend, cfg: ModelConfig, seed: number, dtype: 'bf16' | 'f32' = 'bf16'): CausalLM {
  const specs = new Map(modelParamSpecs(cfg).map((sp) => [sp.key, sp]));
  const blocks = new Map<number, Tensor>();
  const std = typeof cfg.llama.raw['initializer_range'] === 'number' ? (cfg.llama.raw['initializer_range'] as number) : 0.02;
  const model = new CausalLM(be, cfg, (key, shape) => {
    const spec = specs.get(key);
    if (!spec) throw new Error(`randomModel: no parameter spec for "${key}"`);
    const storage = spec.keepF32 ? 'f32' : dtype;
    const size = shape.reduce((a, b) => a * b, 1);
    if (size <= HOST_INIT_MAX) return be.fromArray(spec.init(new Rng(keySeed(seed, key))), shape, storage);
    const C = shape[shape.length - 1]!, R = size / C;
    let block = blocks.get(C);
    if (!block) {
      const rows = Math.ceil(BLOCK_VALUES / C);
      block = be.fromArray(normalArray(new Rng(keySeed(seed, `block-${C}`)), rows * C, std), [rows, C]);
      blocks.set(C, block);
    }
    const k = block.shape[0]!;
    const ids = new Int32Array(R);
    let h = keySeed(seed, key);
    for (let i = 0; i < R; i++) {
      h = (Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0; // a cheap 32-bit mixer per row
      ids[i] = h % k;
    }
    const rowsF32 = be.embedding(block, ids);
    if (storage === 'f32') return be.reshape(rowsF32, shape);
    const out = be.cast(rowsF32, storage);
    rowsF32.dispose();
    return be.reshape(out, shape);
  });
  for (const b of blocks.values()) b.dispose();
  return model;
}

/**
 * Weights a token's forward multiplies by, split into the per-token stack (every `*proj.weight`:
 * attention q/k/v/o or in/out, Mamba in/dt/out, MLP) and the LM head [V, D]. The embedding lookup,
 * conv taps, A_log, D and norms are not matmuls and are left out.
 */
export function matmulParams(model: CausalLM): { stack: number; head: number } {
  let stack = 0;
  for (const [k, p] of model.params()) if (k.endsWith('proj.weight')) stack += p.value.size;
  return { stack, head: model.lmHead.value.size };
}

/** params by storage bytes: 16-bit ones (which get an f32 master copy in AdamW) and f32 ones */
export function paramCounts(model: CausalLM): { total: number; half: number; f32: number } {
  let half = 0, f32 = 0;
  for (const [, p] of model.params()) {
    if (p.value.dtype === 'f32') f32 += p.value.size;
    else half += p.value.size;
  }
  return { total: half + f32, half, f32 };
}

// ---------------------------------------------------------------- peak memory

interface CudaMemory {
  memoryStats(): { liveBytes: number; cachedBytes: number; peakLiveBytes?: number; peakReservedBytes?: number };
  resetPeakMemory?: () => void;
}

function cudaMemory(be: Backend): CudaMemory | null {
  const m = be as unknown as Partial<CudaMemory>;
  return typeof m.memoryStats === 'function' ? (m as CudaMemory) : null;
}

/**
 * Peak memory of a measured region. On the CUDA backend: the caching allocator's high-water mark of
 * live bytes (tensors + op scratch, in allocator buckets) between reset() and peak(). On the CPU
 * backend there is no device counter: the process RSS (process.memoryUsage().rss) sampled at peak(),
 * which is what is reported, and labelled so.
 */
export class PeakMemory {
  readonly source: string;
  private readonly cuda: CudaMemory | null;
  constructor(private readonly be: Backend) {
    this.cuda = cudaMemory(be);
    const counter = this.cuda && typeof this.cuda.resetPeakMemory === 'function' && this.cuda.memoryStats().peakLiveBytes !== undefined;
    this.source = this.cuda
      ? counter ? 'device: caching allocator peak live bytes since reset (memoryStats().peakLiveBytes)' : 'device: not measured (the CUDA addon has no peak counter; rebuild it)'
      : 'host: process RSS after the run (process.memoryUsage().rss; CPU backend, no device counter)';
  }
  reset(): void {
    this.cuda?.resetPeakMemory?.();
  }
  /** bytes, or null when not measured */
  peak(): number | null {
    if (!this.cuda) return process.memoryUsage().rss;
    return this.cuda.memoryStats().peakLiveBytes ?? null;
  }
  /** bytes live now (device) or RSS (host) */
  now(): number {
    return this.cuda ? this.cuda.memoryStats().liveBytes : process.memoryUsage().rss;
  }
}

/** wait for queued device work (no-op on the CPU backend) */
export function sync(be: Backend): void {
  (be as { synchronize?: () => void }).synchronize?.();
}

/** give the device allocator's cached blocks back between differently sized points (no-op on the CPU backend) */
export function emptyCache(be: Backend): void {
  (be as { emptyCache?: () => void }).emptyCache?.();
}

export const GiB = 2 ** 30;
