import { expect } from 'vitest';
import { Rng } from '../../src/util/rng.js';

/**
 * Central finite differences against analytic gradients.
 *
 * `inputs` are the arrays the loss reads (they are perturbed in place and restored); `loss()` must
 * recompute the scalar from them; `analytic[i]` is dLoss/dInputs[i]. A sample of coordinates of each
 * input is checked (all of them when it is small). f32 compute limits the accuracy, so the test uses
 * |a − n| ≤ atol + rtol·max(|a|, |n|).
 */
export function gradCheck(opts: {
  name: string;
  inputs: Float32Array[];
  analytic: Float32Array[];
  loss: () => number;
  eps?: number;
  samples?: number;
  rtol?: number;
  atol?: number;
  seed?: number;
}): void {
  const eps = opts.eps ?? 1e-2;
  const rtol = opts.rtol ?? 2e-2;
  const atol = opts.atol ?? 1e-3;
  const rng = new Rng(opts.seed ?? 1234);
  const failures: string[] = [];
  let checked = 0;
  opts.inputs.forEach((x, i) => {
    const g = opts.analytic[i]!;
    expect(g.length, `${opts.name}: analytic grad ${i} length`).toBe(x.length);
    const n = Math.min(x.length, opts.samples ?? 24);
    const idx = x.length <= n ? [...Array(x.length).keys()] : Array.from({ length: n }, () => rng.int(x.length));
    for (const j of idx) {
      const v = x[j]!;
      x[j] = v + eps;
      const lp = opts.loss();
      x[j] = v - eps;
      const lm = opts.loss();
      x[j] = v;
      const num = (lp - lm) / (2 * eps);
      const ana = g[j]!;
      checked++;
      if (!(Math.abs(ana - num) <= atol + rtol * Math.max(Math.abs(ana), Math.abs(num)))) {
        failures.push(`input ${i}[${j}]: analytic ${ana.toExponential(4)} vs numeric ${num.toExponential(4)}`);
      }
    }
  });
  expect(checked).toBeGreaterThan(0);
  expect(failures, `${opts.name}: ${failures.length} of ${checked} gradient entries differ`).toEqual([]);
}

/** a fixed random weighting w so that loss = Σ w·y turns any output into a scalar */
export function randomWeights(n: number, seed = 99): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = rng.normal();
  return w;
}

export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
