import { describe, expect, it } from 'vitest';
import { CpuBackend, dataOf } from '../src/backend/cpu/index.js';
import { Param } from '../src/model/module.js';
import { distillLoss, grpoAdvantages, grpoLoss, sftLoss, tokenLogprobs, type HeadResult } from '../src/train/heads.js';
import { gradCheck, randomArray } from './util/gradcheck.js';

const be = new CpuBackend();
// tiny shapes; chunk sizes that do not divide V or the row count
const ROWS = 7, D = 5, V = 13, DT = 4;
const CHUNKS = { rowChunk: 3, vocabChunk: 5 };
const MASK = Uint8Array.from([1, 1, 0, 1, 1, 0, 1]);
const TARGETS = Int32Array.from([3, 12, 0, 7, 0, 5, 9]);

function logitsOf(h: Float32Array, w: Float32Array, rows: number, d: number, scale = 1): number[][] {
  return Array.from({ length: rows }, (_, r) =>
    Array.from({ length: V }, (_, v) => {
      let s = 0;
      for (let k = 0; k < d; k++) s += h[r * d + k]! * w[v * d + k]!;
      return s * scale;
    }));
}
function logSoftmax(z: number[]): number[] {
  const m = Math.max(...z);
  const lse = m + Math.log(z.reduce((a, x) => a + Math.exp(x - m), 0));
  return z.map((x) => x - lse);
}

function setup(seed: number) {
  const h = randomArray(ROWS * D, seed);
  const w = randomArray(V * D, seed + 1, 0.8);
  const weight = new Param(be.wrap(w, [V, D]), true);
  return { h, w, weight, hidden: be.wrap(h, [1, ROWS, D]) };
}

function checkGrads(name: string, h: Float32Array, w: Float32Array, weight: Param, r: HeadResult, loss: () => number) {
  gradCheck({ name: `${name} dHidden`, inputs: [h], analytic: [dataOf(r.dHidden!)], loss, eps: 1e-2, samples: 40 });
  gradCheck({ name: `${name} dW`, inputs: [w], analytic: [dataOf(weight.grad!)], loss, eps: 1e-2, samples: 40 });
  // unmasked rows get no gradient
  const dh = dataOf(r.dHidden!);
  for (let i = 0; i < ROWS; i++) if (!MASK[i]) for (let k = 0; k < D; k++) expect(dh[i * D + k]).toBe(0);
}

describe('SFT head', () => {
  it('loss equals full-logits cross-entropy; gradients match finite differences', () => {
    const { h, w, weight, hidden } = setup(1);
    const r = sftLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, CHUNKS);
    const z = logitsOf(h, w, ROWS, D);
    let ref = 0, n = 0;
    for (let i = 0; i < ROWS; i++) if (MASK[i]) { ref -= logSoftmax(z[i]!)[TARGETS[i]!]!; n++; }
    expect(r.tokens).toBe(n);
    expect(r.loss).toBeCloseTo(ref / n, 5);
    expect(r.sums['ce']! / n).toBeCloseTo(ref / n, 5);
    const loss = () => sftLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, { ...CHUNKS, needGrad: false }).loss;
    checkGrads('sft', h, w, weight, r, loss);
  });

  it('normalizer divides the token sum; chunking does not change the result', () => {
    const { hidden, weight } = setup(2);
    const a = sftLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, { ...CHUNKS, normalizer: 10, needGrad: false });
    const b = sftLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, { rowChunk: 100, vocabChunk: 100, needGrad: false });
    expect(a.loss * 10).toBeCloseTo(b.loss * b.tokens, 5);
  });

  it('rejects a target outside the vocabulary and mismatched lengths', () => {
    const { hidden, weight } = setup(3);
    const bad = Int32Array.from(TARGETS);
    bad[3] = V;
    expect(() => sftLoss(be, { hidden, weight, targets: bad, mask: MASK })).toThrow(/targets\[3\] = 13 is outside the vocabulary/);
    expect(() => sftLoss(be, { hidden, weight, targets: TARGETS.subarray(1), mask: MASK })).toThrow(/6 targets for 7 hidden rows/);
  });
});

describe('distillation head', () => {
  for (const klWeight of [1, 0.3]) {
    it(`klWeight ${klWeight}: loss equals (1−k)·CE + k·KL(p_s‖p_t) from full logits; gradients match`, () => {
      const { h, w, weight, hidden } = setup(10);
      const th = randomArray(ROWS * DT, 20);
      const tw = randomArray(V * DT, 21);
      const teacherHidden = be.wrap(th, [ROWS, DT]);
      const teacherWeight = be.wrap(tw, [V, DT]);
      const opts = { ...CHUNKS, teacherHidden, teacherWeight, klWeight };
      const r = distillLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, opts);
      const zs = logitsOf(h, w, ROWS, D), zt = logitsOf(th, tw, ROWS, DT);
      let ref = 0, refKl = 0, n = 0;
      for (let i = 0; i < ROWS; i++) {
        if (!MASK[i]) continue;
        const ls = logSoftmax(zs[i]!), lt = logSoftmax(zt[i]!);
        const kl = ls.reduce((a, l, v) => a + Math.exp(l) * (l - lt[v]!), 0);
        expect(kl).toBeGreaterThan(0);
        ref += (1 - klWeight) * -ls[TARGETS[i]!]! + klWeight * kl;
        refKl += kl;
        n++;
      }
      expect(r.loss).toBeCloseTo(ref / n, 5);
      expect(r.sums['kl']! / n).toBeCloseTo(refKl / n, 5);
      const loss = () => distillLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, { ...opts, needGrad: false }).loss;
      checkGrads('distill', h, w, weight, r, loss);
    });
  }

  for (const vocabChunk of [5, 100]) {
    it(`keepLogits (vocabulary chunk ${vocabChunk}) gives the loss, dHidden and dW of recomputing the logits`, () => {
      const th = be.wrap(randomArray(ROWS * DT, 30), [ROWS, DT]);
      const tw = be.wrap(randomArray(V * DT, 31), [V, DT]);
      const run = (keepLogits: boolean) => {
        const { hidden, weight } = setup(12);
        const r = distillLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, {
          rowChunk: 3, vocabChunk, keepLogits, teacherHidden: th, teacherWeight: tw, klWeight: 0.5,
        });
        return { loss: r.loss, dh: Array.from(dataOf(r.dHidden!)), dw: Array.from(dataOf(weight.grad!)) };
      };
      const a = run(false), b = run(true);
      expect(b.loss).toBe(a.loss);
      expect(b.dh).toEqual(a.dh);
      expect(b.dw).toEqual(a.dw);
      expect(Math.max(...a.dw.map(Math.abs))).toBeGreaterThan(1e-3);
    });
  }

  it('KL is zero and its gradient vanishes when student = teacher', () => {
    const { h, w, weight, hidden } = setup(11);
    const r = distillLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, { ...CHUNKS, teacherHidden: be.wrap(h.slice(), [ROWS, D]), teacherWeight: be.wrap(w.slice(), [V, D]) });
    expect(Math.abs(r.loss)).toBeLessThan(1e-6);
    expect(Math.max(...dataOf(r.dHidden!).map(Math.abs))).toBeLessThan(1e-6);
  });
});

describe('GRPO head', () => {
  const temperature = 0.7, clip = 0.2, eta = 0.05;
  const ADV = Float32Array.from([1.2, -0.8, 0.5, 1.0, -1.5, 0.3, -0.4]);
  // old = logp − δ → ratio e^δ: 1.65 and 0.61 are clipped for one sign of Â, 1.05/0.95 inside; far from the edges
  const DELTA = [0.5, -0.5, 0, 0.05, 0.5, 0, -0.05];

  it('loss equals the clipped surrogate − η·entropy from full logits; gradients match', () => {
    const { h, w, weight, hidden } = setup(30);
    const z = logitsOf(h, w, ROWS, D, 1 / temperature);
    const logp = z.map((row, i) => logSoftmax(row)[TARGETS[i]!]!);
    const old = Float32Array.from(logp, (l, i) => l - DELTA[i]!);
    const opts = { ...CHUNKS, advantages: ADV, oldLogprobs: old, clip, entropyCoef: eta, temperature };
    const r = grpoLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, opts);
    let ref = 0, n = 0, clipped = 0;
    for (let i = 0; i < ROWS; i++) {
      if (!MASK[i]) continue;
      const ls = logSoftmax(z[i]!);
      const H = -ls.reduce((a, l) => a + Math.exp(l) * l, 0);
      const ratio = Math.exp(logp[i]! - old[i]!);
      const A = ADV[i]!;
      const pg = Math.max(-A * ratio, -A * Math.min(Math.max(ratio, 1 - clip), 1 + clip));
      if (-A * Math.min(Math.max(ratio, 1 - clip), 1 + clip) > -A * ratio) clipped++;
      ref += pg - eta * H;
      n++;
    }
    expect(clipped).toBe(2); // rows 0 (Â>0, ratio 1.65) and 1 (Â<0, ratio 0.61); row 4 (Â<0, 1.65) is not clipped
    expect(r.sums['clipped']).toBe(clipped);
    expect(r.loss).toBeCloseTo(ref / n, 5);
    const loss = () => grpoLoss(be, { hidden, weight, targets: TARGETS, mask: MASK }, { ...opts, needGrad: false }).loss;
    checkGrads('grpo', h, w, weight, r, loss);
  });

  it('tokenLogprobs gives log p(target) and entropy at the temperature', () => {
    const { h, w, hidden, weight } = setup(31);
    const z = logitsOf(h, w, ROWS, D, 1 / temperature);
    const r = tokenLogprobs(be, { hidden, weight: weight.value, targets: TARGETS, mask: MASK }, { temperature, ...CHUNKS });
    for (let i = 0; i < ROWS; i++) {
      const ls = logSoftmax(z[i]!);
      expect(r.logprobs[i]).toBeCloseTo(MASK[i] ? ls[TARGETS[i]!]! : 0, 5);
      if (MASK[i]) expect(r.entropy[i]).toBeCloseTo(-ls.reduce((a, l) => a + Math.exp(l) * l, 0), 5);
    }
    expect(weight.grad).toBeNull();
  });

  it('grpoAdvantages: (r − mean)/(unbiased std + 1e-6) per group', () => {
    const a = grpoAdvantages([1, 0, 0, 1, 1, 1, 1, 1], 4);
    const std = Math.sqrt((4 * 0.25) / 3); // mean 0.5, unbiased
    expect(a[0]).toBeCloseTo(0.5 / (std + 1e-6), 6);
    expect(a[1]).toBeCloseTo(-0.5 / (std + 1e-6), 6);
    expect([...a.subarray(4)]).toEqual([0, 0, 0, 0]); // all-equal group: no signal
    expect([...grpoAdvantages([3], 1)]).toEqual([3 / (1 + 1e-6)].map(Math.fround));
    expect(() => grpoAdvantages([1, 2, 3], 2)).toThrow(/not a whole number of groups/);
  });
});
