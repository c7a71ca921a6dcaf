import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { bf16BitsToF32, f32ToBf16Bits } from '../src/backend/dtype.js';
import { initModel, validateConfigs } from '../src/model/checkpoint.js';
import { Param, type ParamList } from '../src/model/module.js';
import { findPreset } from '../src/model/presets.js';
import { AdamW } from '../src/train/optim.js';
import { lrAt } from '../src/train/schedule.js';

const be = new CpuBackend();
const H = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

function param(values: number[], decay: boolean, dtype: 'f32' | 'bf16' = 'f32'): Param {
  return new Param(be.fromArray(values, [values.length], dtype), decay);
}
function setGrad(p: Param, g: number[]): void {
  be.write(p.ensureGrad(be), g);
}

describe('AdamW', () => {
  it('two steps match a hand computation (PyTorch semantics, decoupled decay)', () => {
    const w0 = [1, -2, 0.5], g1 = [0.1, -0.2, 0.3], g2 = [-0.3, 0.1, 0.3];
    const p = param(w0, true);
    const opt = new AdamW(be, [['w', p]], H);
    const lr = 0.1;
    // reference in f64
    const m = [0, 0, 0], v = [0, 0, 0], w = [...w0];
    for (const [t, g] of [[1, g1], [2, g2]] as const) {
      for (let i = 0; i < 3; i++) {
        m[i] = 0.9 * m[i]! + 0.1 * g[i]!;
        v[i] = 0.95 * v[i]! + 0.05 * g[i]! ** 2;
        const mhat = m[i]! / (1 - 0.9 ** t), vhat = v[i]! / (1 - 0.95 ** t);
        w[i] = w[i]! * (1 - lr * 0.1) - (lr * mhat) / (Math.sqrt(vhat) + 1e-8);
      }
      setGrad(p, [...g]);
      opt.step(lr);
      const got = be.read(p.value);
      for (let i = 0; i < 3; i++) expect(got[i]).toBeCloseTo(w[i]!, 6);
    }
    // step 1 moves each weight by ≈ lr·sign(g) (plus decay): 1 → 0.99 − 0.1
    expect(w[0]).not.toBeCloseTo(w0[0]!, 1);
    expect(opt.stepCount).toBe(2);
  });

  it('weight decay only where decay is true (norms, A_log, D, biases excluded)', () => {
    const a = param([1, 2], true), b = param([1, 2], false);
    const opt = new AdamW(be, [['a', a], ['b', b]], H);
    setGrad(a, [0, 0]);
    setGrad(b, [0, 0]);
    opt.step(0.5);
    expect([...be.read(a.value)]).toEqual([1 * (1 - 0.05), 2 * (1 - 0.05)].map(Math.fround));
    expect([...be.read(b.value)]).toEqual([1, 2]);

    const p = findPreset('m1', 'tiny');
    const model = initModel(be, validateConfigs(p.config, p.mambaConfig), 0);
    const groups = new AdamW(be, model.params(), H).groups();
    const noDecay = groups.filter((g) => !g.decay).map((g) => g.key);
    expect(noDecay.length).toBeGreaterThan(0);
    for (const g of groups) {
      const excluded = /norm|layernorm|\.A_log$|\.D$|bias$/.test(g.key);
      expect(g.decay, g.key).toBe(!excluded);
    }
    expect(noDecay).toContain('model.layers.0.mamba.A_log');
    expect(noDecay).toContain('model.layers.0.mamba.D');
    expect(noDecay).toContain('model.layers.0.mamba.dt_proj.bias');
    expect(noDecay).toContain('model.norm.weight');
    // the tied LM head is the embedding: one parameter, listed once
    expect(groups.filter((g) => g.key === 'model.embed_tokens.weight').length).toBe(1);
  });

  it('clips the global gradient norm and reports the norm before clipping', () => {
    const a = param([0, 0], true), b = param([0], true);
    const opt = new AdamW(be, [['a', a], ['b', b]], H);
    setGrad(a, [3, 0]);
    setGrad(b, [4]);
    expect(opt.clipGradNorm(1)).toBeCloseTo(5, 6);
    expect(opt.gradNorm()).toBeCloseTo(1, 5);
    expect(be.read(a.grad!)[0]).toBeCloseTo(0.6, 5);
    expect(be.read(b.grad!)[0]).toBeCloseTo(0.8, 5);
    // below the limit: untouched
    expect(opt.clipGradNorm(10)).toBeCloseTo(1, 5);
    expect(be.read(b.grad!)[0]).toBeCloseTo(0.8, 5);
    // a NaN norm is reported, nothing is scaled
    setGrad(b, [NaN]);
    expect(opt.clipGradNorm(1)).toBeNaN();
    expect(be.read(a.grad!)[0]).toBeCloseTo(0.6, 5);
  });

  it('bf16 parameters train through an f32 master copy', () => {
    const start = 1.0; // bf16 spacing at 1 is 2^-7 ≈ 0.0078: each step of 1e-3 is below it
    const p = param([start], false, 'bf16');
    const opt = new AdamW(be, [['w', p]], H);
    for (let i = 0; i < 20; i++) {
      setGrad(p, [1]);
      opt.step(1e-3);
    }
    const master = opt.state().tensors.get('master.w')![0]!;
    expect(master).toBeCloseTo(start - 20e-3, 4); // the master moved by 20 steps
    expect(be.read(p.value)[0]).toBe(bf16BitsToF32(f32ToBf16Bits(master))); // the weight is its rounding
    expect(be.read(p.value)[0]).toBeLessThan(start);
  });

  it('weightsFinite: the weights step() stored are counted as written, the rest read; the count restarts at each call', () => {
    const a = param([1, 2], true), b = param([3, 4], true, 'bf16'), idle = param([5], false);
    const opt = new AdamW(be, [['a', a], ['b', b], ['idle', idle]], H);
    setGrad(a, [0.1, 0.1]);
    setGrad(b, [0.1, 0.1]);
    opt.step(0.01);
    expect(opt.weightsFinite([['a', a], ['b', b], ['idle', idle]])).toBe(true);
    setGrad(a, [NaN, 0.1]);  // the update makes a[0] NaN
    opt.step(0.01);
    expect(opt.weightsFinite([['a', a], ['b', b], ['idle', idle]])).toBe(false);
    // the count restarted: with no step since, every weight is read — a[0] is still NaN; written finite, the check passes
    expect(opt.weightsFinite([['a', a], ['b', b]])).toBe(false);
    be.write(a.value, [1, 2]);
    expect(opt.weightsFinite([['a', a], ['b', b]])).toBe(true);
    // a parameter step() does not update is read: a non-finite one fails the check
    const opt2 = new AdamW(be, [['idle', idle]], H);
    be.write(idle.value, [Infinity]);
    expect(opt2.weightsFinite([['idle', idle]])).toBe(false);
    be.write(idle.value, [5]);
    expect(opt2.weightsFinite([['idle', idle]])).toBe(true);
  });

  it('state()/load() resume bit-exactly', () => {
    const mk = (): { list: ParamList; opt: AdamW } => {
      const list: ParamList = [['a', param([0.3, -0.7, 1.1], true)], ['b', param([2, 3], false, 'bf16')]];
      return { list, opt: new AdamW(be, list, H) };
    };
    const grads = [[[0.1, 0.2, -0.3], [0.5, -0.5]], [[-0.2, 0.4, 0.1], [0.1, 0.3]], [[0.3, 0.3, 0.3], [-1, 1]], [[0.05, -0.1, 0.2], [0.2, 0.2]]];
    const stepWith = (list: ParamList, opt: AdamW, g: number[][]): void => {
      list.forEach(([, p], i) => setGrad(p, g[i]!));
      opt.step(0.01);
    };
    const A = mk();
    for (const g of grads) stepWith(A.list, A.opt, g);
    const B = mk();
    stepWith(B.list, B.opt, grads[0]!);
    stepWith(B.list, B.opt, grads[1]!);
    const saved = B.opt.state();
    const weights = B.list.map(([, p]) => be.read(p.value));
    const C = mk();
    C.list.forEach(([, p], i) => be.write(p.value, weights[i]!));
    C.opt.load(saved);
    stepWith(C.list, C.opt, grads[2]!);
    stepWith(C.list, C.opt, grads[3]!);
    A.list.forEach(([, p], i) => expect([...be.read(C.list[i]![1].value)]).toEqual([...be.read(p.value)]));
    expect(C.opt.state().tensors).toEqual(A.opt.state().tensors);
    saved.tensors.delete('v.a');
    expect(() => mk().opt.load(saved)).toThrow(/no tensor "v.a"/);
  });
});

describe('schedules', () => {
  const base = { lr: 1e-3, minLr: 1e-4, warmup: 4, totalSteps: 20 };
  it('linear warmup from lr/warmup, then cosine to minLr on the last step', () => {
    const s = { kind: 'cosine' as const, ...base };
    expect(lrAt(0, s)).toBeCloseTo(2.5e-4, 12);
    expect(lrAt(3, s)).toBeCloseTo(1e-3, 12);
    expect(lrAt(4, s)).toBeCloseTo(1e-3, 12);
    // halfway through the decay: the mean of lr and minLr
    expect(lrAt(4 + 7.5, s)).toBeCloseTo(5.5e-4, 9);
    expect(lrAt(19, s)).toBeCloseTo(1e-4, 12);
    for (let t = 5; t < 20; t++) expect(lrAt(t, s)).toBeLessThan(lrAt(t - 1, s));
  });
  it('constant after warmup', () => {
    const s = { kind: 'constant' as const, ...base };
    expect(lrAt(1, s)).toBeCloseTo(5e-4, 12);
    expect(lrAt(10, s)).toBe(1e-3);
    expect(lrAt(19, s)).toBe(1e-3);
  });
});
