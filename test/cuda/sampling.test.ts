// Backend.sampleRows on the GPU (native/src/sampling.cu) against the definition (the CPU backend's
// sampleRows = RowSampler.sample per row), with the same logits and uniforms: the ids must be EQUAL, the
// logprobs within 1e-4. The kernels compute in f64 like the host; only the order of the vocabulary-wide
// sums and CUDA's exp (≤ 1 ulp) differ, which could change a token only when u·total or a top-p target
// falls within ~1e-15 of a running sum: with these seeded 53-bit uniforms that does not happen, so any
// mismatch is a bug. Rows the kernels decline are sampled on the host, and `fallbackRows` must say so:
// the realistic rows here must all be done on the device (fallbackRows 0), the flat / tied / non-finite
// rows must be declined and still give the definition's tokens.
import { describe, expect, it } from 'vitest';
import type { SampleRowsArgs } from '../../src/backend/backend.js';
import type { Tensor } from '../../src/backend/tensor.js';
import { DeviceSampler, HostSampler, type SampleRow } from '../../src/infer/sampling.js';
import { Rng } from '../../src/util/rng.js';
import { available, cpu, gpu, skipReason } from './helpers.js';

interface Row { row: number; T: number; topP: number; topK: number; minP: number; u: number }

function args(rows: Row[]): SampleRowsArgs {
  return {
    logitsRow: Int32Array.from(rows, (r) => r.row), temperature: Float64Array.from(rows, (r) => r.T), topP: Float64Array.from(rows, (r) => r.topP),
    topK: Int32Array.from(rows, (r) => r.topK), minP: Float64Array.from(rows, (r) => r.minP), uniform: Float64Array.from(rows, (r) => r.u),
  };
}

/**
 * logits rows of one of the kinds: 'normal' N(0, scale²); 'peaked' the same with six tokens near 20
 * (an LLM-like head: a handful of likely tokens over a long tail)
 */
function logitsRows(V: number, kinds: [kind: 'normal' | 'peaked', scale: number][], seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(kinds.length * V);
  kinds.forEach(([kind, scale], r) => {
    for (let j = 0; j < V; j++) x[r * V + j] = rng.normal() * scale;
    if (kind === 'peaked') for (let t = 0; t < 6; t++) x[r * V + rng.int(V)] = 20 + rng.normal();
  });
  return x;
}

/** every (row, T, top-p, top-k, min-p) of the grid, with seeded uniforms; greedy rows mixed in */
function grid(R: number, seed: number): Row[] {
  const rng = new Rng(seed);
  const rows: Row[] = [];
  for (let row = 0; row < R; row++) {
    for (const T of [0.7, 1.0, 1.3]) {
      for (const topP of [1, 0.95, 0.5]) {
        for (const topK of [-1, 1, 50]) for (const minP of [0, 0.05]) rows.push({ row, T, topP, topK, minP, u: rng.uniform() });
      }
    }
    rows.push({ row, T: 0, topP: 1, topK: -1, minP: 0, u: 0 }, { row, T: 0, topP: 0.5, topK: 5, minP: 0.1, u: 0.7 });
  }
  // shuffled, so greedy, filtered and unfiltered rows sit side by side in one launch
  for (let i = rows.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [rows[i], rows[j]] = [rows[j]!, rows[i]!];
  }
  return rows;
}

function compare(xc: Tensor, xg: Tensor, rows: Row[], what: string): { fallbackRows: number; nonArgmax: number } {
  const want = cpu.sampleRows(xc, args(rows));
  const got = gpu!.sampleRows(xg, args(rows));
  const V = xc.shape[1]!;
  const host = cpu.read(xc);
  let nonArgmax = 0;
  rows.forEach((r, i) => {
    const label = `${what}, output row ${i}: ${JSON.stringify(r)}`;
    expect(got.ids[i], label).toBe(want.ids[i]);
    expect(Math.abs(got.logprobs[i]! - want.logprobs[i]!), `${label}: logprob ${got.logprobs[i]} vs ${want.logprobs[i]}`).toBeLessThanOrEqual(1e-4);
    let best = 0;
    for (let j = 1; j < V; j++) if (host[r.row * V + j]! > host[r.row * V + best]!) best = j;
    if (want.ids[i] !== best) nonArgmax++;
  });
  return { fallbackRows: got.fallbackRows, nonArgmax };
}

describe.skipIf(!available)(`cuda sampleRows vs the definition${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const g = gpu!;

  it('V = 1000: every parameter combination on normal and peaked rows, all on the device, same ids', () => {
    const V = 1000;
    const kinds: [('normal' | 'peaked'), number][] = [['normal', 0.5], ['normal', 2], ['normal', 8], ['peaked', 1], ['peaked', 3]];
    const x = logitsRows(V, kinds, 1);
    const rows = grid(kinds.length, 2);
    const r = compare(cpu.fromArray(x, [kinds.length, V]), g.fromArray(x, [kinds.length, V]), rows, 'V 1000');
    // V ≤ the sorted path's capacity: nothing is declined
    expect(r.fallbackRows).toBe(0);
    expect(r.nonArgmax).toBeGreaterThan(rows.length / 4); // the samples are not just the argmax
    expect(g.sampleCapacity).toBeGreaterThanOrEqual(1024);
  });

  it('V = 128256: every parameter combination on LLM-like rows, all on the device, same ids', () => {
    const V = 128256;
    const kinds: [('normal' | 'peaked'), number][] = [['peaked', 0.5], ['peaked', 2], ['normal', 8], ['normal', 12]];
    const x = logitsRows(V, kinds, 3);
    const rows = grid(kinds.length, 4);
    const r = compare(cpu.fromArray(x, [kinds.length, V]), g.fromArray(x, [kinds.length, V]), rows, 'V 128256');
    expect(r.fallbackRows).toBe(0);
    expect(r.nonArgmax).toBeGreaterThan(rows.length / 4);
  });

  it('top-p whose candidates overflow the shared memory but whose nucleus fits: the radix-selected prefix, on the device', () => {
    // 6000 likely tokens over a long tail: the top-p cut keeps ~60 000 candidates, the 0.9 nucleus is
    // inside the top 6000
    const V = 128256;
    const rng = new Rng(5);
    const x = new Float32Array(V);
    for (let j = 0; j < V; j++) x[j] = rng.normal() - 3;
    for (let t = 0; t < 6000; t++) x[rng.int(V)] = 3 + 0.01 * rng.normal();
    const u = new Rng(6);
    const rows: Row[] = Array.from({ length: 24 }, () => ({ row: 0, T: 1, topP: 0.9, topK: -1, minP: 0, u: u.uniform() }));
    const r = compare(cpu.fromArray(x, [1, V]), g.fromArray(x, [1, V]), rows, 'nucleus past capacity');
    expect(r.fallbackRows).toBe(0);
  });

  it('rows the kernels decline (flat rows with many candidates, ties at the top-k threshold, NaN) still give the definition, counted', () => {
    const V = 128256;
    const x = new Float32Array(3 * V); // row 0 flat
    const rng = new Rng(7);
    for (let j = 0; j < V; j++) x[V + j] = rng.normal() * 2; // row 1 ordinary
    for (let j = 0; j < V; j++) x[2 * V + j] = rng.normal();
    x[2 * V + 17] = NaN; // row 2 with a NaN: Σw is NaN, the host's rounding fallback (the last id) decides
    const rows: Row[] = [
      { row: 0, T: 1, topP: 0.9999, topK: -1, minP: 0, u: 0.3 }, // declined: 128 256 candidates, nucleus of 128 244
      { row: 1, T: 0.8, topP: 0.9, topK: 40, minP: 0, u: 0.6 }, // device
      { row: 0, T: 1, topP: 1, topK: 50, minP: 0, u: 0.3 }, // declined: every logit ties at the 50th
      { row: 0, T: 0.5, topP: 1, topK: -1, minP: 0.5, u: 0.8 }, // declined: min-p keeps all
      { row: 0, T: 1, topP: 1, topK: -1, minP: 0, u: 0.77 }, // device: unfiltered, u·V exactly in id order
      { row: 0, T: 0, topP: 1, topK: -1, minP: 0, u: 0 }, // device: greedy, first maximum = 0
      { row: 2, T: 1, topP: 1, topK: -1, minP: 0, u: 0.5 }, // declined: non-finite Σ
      { row: 2, T: 0, topP: 1, topK: -1, minP: 0, u: 0 }, // device: greedy skips the NaN
    ];
    const xc = cpu.fromArray(x, [3, V]), xg = g.fromArray(x, [3, V]);
    const want = cpu.sampleRows(xc, args(rows)), got = g.sampleRows(xg, args(rows));
    expect(Array.from(got.ids)).toEqual(Array.from(want.ids));
    rows.forEach((_, i) => {
      if (Number.isNaN(want.logprobs[i])) expect(got.logprobs[i]).toBeNaN();
      else expect(Math.abs(got.logprobs[i]! - want.logprobs[i]!), `row ${i}`).toBeLessThanOrEqual(1e-4);
    });
    expect(got.fallbackRows).toBe(4);
    expect(want.ids[4]).toBe(Math.floor(0.77 * V)); // flat, unfiltered: the inverse CDF in id order
    expect(want.ids[6]).toBe(V - 1);
    const before = g.sampleFallbackRows;
    g.sampleRows(xg, args([rows[0]!, rows[1]!]));
    expect(g.sampleFallbackRows - before).toBe(1);
    // a row without a finite maximum: the definition's error
    const inf = new Float32Array(V);
    inf[5] = Infinity;
    expect(() => g.sampleRows(g.fromArray(inf, [1, V]), args([rows[0]!]))).toThrow(/no finite maximum/);
  });

  it('shared logits rows, bf16 logits, bad arguments', () => {
    const V = 3000;
    const x = logitsRows(V, [['peaked', 2], ['normal', 3]], 9);
    const rng = new Rng(10);
    const rows: Row[] = Array.from({ length: 40 }, (_, i) => ({ row: i % 2, T: 0.9, topP: 0.9, topK: i % 3 === 0 ? 20 : -1, minP: 0, u: rng.uniform() }));
    for (const dtype of ['f32', 'bf16'] as const) {
      const r = compare(cpu.fromArray(x, [2, V], dtype), g.fromArray(x, [2, V], dtype), rows, dtype);
      expect(r.fallbackRows).toBe(0);
    }
    const xg = g.fromArray(x, [2, V]);
    const bad = args(rows.slice(0, 2));
    bad.topK = new Int32Array(1);
    expect(() => g.sampleRows(xg, bad)).toThrow(/sampleRows: topK has 1 entries, logitsRow has 2/);
    expect(() => g.sampleRows(xg, args([{ ...rows[0]!, row: 2 }]))).toThrow(/logitsRow\[0\] = 2 is outside \[0, 2\)/);
    expect(() => g.sampleRows(xg, args([{ ...rows[0]!, u: 1 }]))).toThrow(/uniform\[0\] = 1 is outside \[0, 1\)/);
    expect(g.sampleRows(xg, args([])).ids.length).toBe(0);
  });

  it('DeviceSampler on the GPU gives HostSampler\'s tokens on the CPU; batch 512 × 128256 timed', () => {
    const V = 128256, R = 512;
    const x = logitsRows(V, Array.from({ length: R }, (_, r) => [r % 2 ? 'peaked' : 'normal', 2 + (r % 5)] as ['normal' | 'peaked', number]), 11);
    const xg = g.fromArray(x, [R, V]);
    const dev = new DeviceSampler(g, V);
    const rng = new Rng(12);
    const rows: SampleRow[] = Array.from({ length: R }, (_, i) => ({
      params: { temperature: 0.7, topP: i % 2 ? 0.95 : 1, topK: -1, minP: 0 }, uniform: rng.uniform(), logitsRow: i,
    }));
    const out = { tokens: new Int32Array(R), logprobs: new Float32Array(R) };
    dev.sample(xg, rows, out); // warm-up (kernel load, shared-memory attribute)
    const t0 = performance.now();
    const reps = 5;
    for (let k = 0; k < reps; k++) dev.sample(xg, rows, out);
    const ms = (performance.now() - t0) / reps;
    const ta = performance.now();
    for (let k = 0; k < reps; k++) g.argmaxRows(xg);
    const msArgmax = (performance.now() - ta) / reps;
    console.log(`sampleRows [${R}, ${V}] T 0.7 (top-p 1 / 0.95 alternating): ${ms.toFixed(2)} ms per step (argmaxRows ${msArgmax.toFixed(2)} ms), ` +
      `${dev.fallbackRows} rows on the host over ${dev.deviceSteps} steps`);
    // the definition on the CPU for a sample of the rows (all 512 would take a while)
    const pick = Array.from({ length: 24 }, (_, k) => (k * 131) % R);
    const host = new HostSampler(cpu, V);
    const xc = cpu.fromArray(x, [R, V]);
    const want = { tokens: new Int32Array(pick.length), logprobs: new Float32Array(pick.length) };
    host.sample(xc, pick.map((i) => rows[i]!), want);
    pick.forEach((i, k) => {
      expect(out.tokens[i], `row ${i}`).toBe(want.tokens[k]);
      expect(Math.abs(out.logprobs[i]! - want.logprobs[k]!)).toBeLessThanOrEqual(1e-4);
    });
  });
});
