import { describe, expect, it } from 'vitest';
import { CpuBackend, dataOf } from '../src/backend/cpu/index.js';
import type { SsdScanArgs } from '../src/backend/backend.js';
import type { Tensor } from '../src/backend/tensor.js';
import type { Mamba2Dims } from '../src/model/config.js';
import { Mamba2Mixer, mamba2ParamSpecs } from '../src/model/mamba2.js';
import type { DecodeInfo, SeqInfo } from '../src/model/module.js';
import { plainSeqInfo } from '../src/model/module.js';
import { Rng } from '../src/util/rng.js';
import { dot, gradCheck, maxAbsDiff, randomArray, randomWeights } from './util/gradcheck.js';

const be = new CpuBackend();

const softplus = (v: number): number => (v > 20 ? v : Math.log1p(Math.exp(v)));
const silu = (v: number): number => v / (1 + Math.exp(-v));

interface ScanInputs {
  B: number; T: number; H: number; P: number; G: number; N: number;
  x: Float32Array; dt: Float32Array; A: Float32Array; Bm: Float32Array; Cm: Float32Array;
  D: Float32Array; dtBias: Float32Array;
}

function scanInputs(B: number, T: number, H: number, P: number, G: number, N: number, seed: number): ScanInputs {
  const rng = new Rng(seed);
  return {
    B, T, H, P, G, N,
    x: randomArray(B * T * H * P, seed + 1),
    dt: randomArray(B * T * H, seed + 2),
    A: Float32Array.from({ length: H }, () => -rng.range(0.3, 2)),
    Bm: randomArray(B * T * G * N, seed + 3, 0.7),
    Cm: randomArray(B * T * G * N, seed + 4, 0.7),
    D: randomArray(H, seed + 5),
    dtBias: randomArray(H, seed + 6, 0.5),
  };
}

function scanArgs(s: ScanInputs, opts: { chunkSize: number; withDBias?: boolean; segments?: Int32Array }): SsdScanArgs {
  const { B, T, H, P, G, N } = s;
  const withDBias = opts.withDBias ?? true;
  return {
    x: be.wrap(s.x, [B, T, H, P]), dt: be.wrap(s.dt, [B, T, H]), A: be.wrap(s.A, [H]),
    Bm: be.wrap(s.Bm, [B, T, G, N]), Cm: be.wrap(s.Cm, [B, T, G, N]),
    D: withDBias ? be.wrap(s.D, [H]) : null, dtBias: withDBias ? be.wrap(s.dtBias, [H]) : null,
    chunkSize: opts.chunkSize, segments: opts.segments,
  };
}

/** the recurrence H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t B_tᵀ, y_t = H_t C_t + D x_t, token by token in f64 */
function naiveScan(s: ScanInputs, withDBias: boolean, segments?: Int32Array): { y: Float64Array; final: Float64Array } {
  const { B, T, H, P, G, N } = s;
  const y = new Float64Array(B * T * H * P);
  const final = new Float64Array(B * H * P * N);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / G));
      const st = new Float64Array(P * N);
      for (let t = 0; t < T; t++) {
        if (segments && t > 0 && segments[b * T + t] !== segments[b * T + t - 1]) st.fill(0);
        const i = b * T + t;
        const delta = softplus(s.dt[i * H + h]! + (withDBias ? s.dtBias[h]! : 0));
        const decay = Math.exp(delta * s.A[h]!);
        for (let p = 0; p < P; p++) {
          let acc = 0;
          for (let n = 0; n < N; n++) {
            st[p * N + n] = decay * st[p * N + n]! + delta * s.x[(i * H + h) * P + p]! * s.Bm[(i * G + g) * N + n]!;
            acc += st[p * N + n]! * s.Cm[(i * G + g) * N + n]!;
          }
          y[(i * H + h) * P + p] = acc + (withDBias ? s.D[h]! : 0) * s.x[(i * H + h) * P + p]!;
        }
      }
      final.set(st, (b * H + h) * P * N);
    }
  }
  return { y, final };
}

describe('ssdScan (chunked SSD form)', () => {
  const B = 2, T = 11, H = 4, P = 3, G = 2, N = 5;
  const inputs = scanInputs(B, T, H, P, G, N, 10);
  // row 0 changes segment inside a chunk (t=3) and on a chunk-4 boundary (t=8); row 1 once at t=7
  const segments = Int32Array.from([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7]);

  for (const withSegments of [false, true]) {
    for (const chunkSize of [1, 3, 4, 16]) {
      it(`matches the naive recurrence, chunk ${chunkSize}${withSegments ? ', with segments' : ''}`, () => {
        const seg = withSegments ? segments : undefined;
        const ref = naiveScan(inputs, true, seg);
        const ssmState = be.zeros([3, H, P, N]);
        const slots = Int32Array.from([2, 0]);
        const y = be.ssdScan({ ...scanArgs(inputs, { chunkSize, segments: seg }), stateOut: { ssmState, slots } });
        expect(maxAbsDiff(be.read(y), ref.y)).toBeLessThan(2e-5);
        const st = be.read(ssmState);
        const HPN = H * P * N;
        expect(maxAbsDiff(st.subarray(2 * HPN, 3 * HPN), ref.final.subarray(0, HPN))).toBeLessThan(2e-5);
        expect(maxAbsDiff(st.subarray(0, HPN), ref.final.subarray(HPN, 2 * HPN))).toBeLessThan(2e-5);
        expect(maxAbsDiff(st.subarray(HPN, 2 * HPN), new Float32Array(HPN))).toBe(0); // slot 1 untouched
      });
    }
  }

  it('matches the naive recurrence without D and dtBias', () => {
    const ref = naiveScan(inputs, false);
    const y = be.ssdScan(scanArgs(inputs, { chunkSize: 4, withDBias: false }));
    expect(maxAbsDiff(be.read(y), ref.y)).toBeLessThan(2e-5);
  });

  it('one-token steps reproduce the scan and its final state', () => {
    const ref = naiveScan(inputs, true);
    const ssmState = be.zeros([3, H, P, N]);
    const slots = Int32Array.from([2, 0]);
    for (let t = 0; t < T; t++) {
      const rows = (a: Float32Array, w: number): Float32Array => {
        const out = new Float32Array(B * w);
        for (let b = 0; b < B; b++) out.set(a.subarray((b * T + t) * w, (b * T + t + 1) * w), b * w);
        return out;
      };
      const y = be.ssdScanStep({
        x: be.wrap(rows(inputs.x, H * P), [B, H, P]), dt: be.wrap(rows(inputs.dt, H), [B, H]), A: be.wrap(inputs.A, [H]),
        Bm: be.wrap(rows(inputs.Bm, G * N), [B, G, N]), Cm: be.wrap(rows(inputs.Cm, G * N), [B, G, N]),
        D: be.wrap(inputs.D, [H]), dtBias: be.wrap(inputs.dtBias, [H]), ssmState, slots,
      });
      const want = new Float64Array(B * H * P);
      for (let b = 0; b < B; b++) want.set(ref.y.subarray((b * T + t) * H * P, (b * T + t + 1) * H * P), b * H * P);
      expect(maxAbsDiff(be.read(y), want)).toBeLessThan(2e-5);
    }
    const HPN = H * P * N;
    const st = be.read(ssmState);
    expect(maxAbsDiff(st.subarray(2 * HPN), ref.final.subarray(0, HPN))).toBeLessThan(2e-5);
  });

  it('rejects mismatched shapes and bad slots', () => {
    const args = scanArgs(inputs, { chunkSize: 4 });
    expect(() => be.ssdScan({ ...args, dt: be.zeros([B, T, H + 1]) })).toThrow(/dt/);
    expect(() => be.ssdScan({ ...args, Cm: be.zeros([B, T, G, N + 1]) })).toThrow(/Cm/);
    expect(() => be.ssdScan({ ...args, chunkSize: 0 })).toThrow(/chunkSize/);
    expect(() => be.ssdScan({ ...args, stateOut: { ssmState: be.zeros([2, H, P, N]), slots: Int32Array.from([0, 2]) } })).toThrow(/slots/);
  });

  it('gradients of every input match finite differences (with segments)', () => {
    const Tg = 9;
    const s = scanInputs(B, Tg, H, P, G, N, 20);
    const seg = Int32Array.from([0, 0, 0, 0, 0, 1, 1, 1, 1, 3, 3, 3, 4, 4, 4, 4, 4, 4]);
    const args = scanArgs(s, { chunkSize: 4, segments: seg });
    const w = randomWeights(B * Tg * H * P, 7);
    const g = be.ssdScanBackward(be.wrap(w.slice(), [B, Tg, H, P]), args);
    gradCheck({
      name: 'ssdScan',
      inputs: [s.x, s.dt, s.A, s.Bm, s.Cm, s.D, s.dtBias],
      analytic: [g.dx, g.ddt, g.dA, g.dBm, g.dCm, g.dD!, g.dDtBias!].map((t) => be.read(t)),
      loss: () => dot(be.read(be.ssdScan(args)), w),
      eps: 1e-2, samples: 40, rtol: 1e-2, atol: 5e-4,
    });
  });
});

describe('gatedRmsNorm', () => {
  const rows = 3, D = 8, group = 4, eps = 1e-5;
  const y = randomArray(rows * D, 31), z = randomArray(rows * D, 32), w = randomArray(D, 33);
  const yt = be.wrap(y, [rows, D]), zt = be.wrap(z, [rows, D]), wt = be.wrap(w, [D]);

  it('normalises y ⊙ silu(z) over each group', () => {
    const out = be.read(be.gatedRmsNorm(yt, zt, wt, group, eps));
    const want = new Float64Array(rows * D);
    for (let o = 0; o < rows * D; o += group) {
      const g = Array.from({ length: group }, (_, j) => y[o + j]! * silu(z[o + j]!));
      const r = 1 / Math.sqrt(g.reduce((a, v) => a + v * v, 0) / group + eps);
      for (let j = 0; j < group; j++) want[o + j] = g[j]! * r * w[(o + j) % D]!;
    }
    expect(maxAbsDiff(out, want)).toBeLessThan(1e-5);
  });

  it('gradients match finite differences', () => {
    const dout = randomWeights(rows * D, 34);
    const g = be.gatedRmsNormBackward(be.wrap(dout.slice(), [rows, D]), yt, zt, wt, group, eps);
    gradCheck({
      name: 'gatedRmsNorm',
      inputs: [y, z, w],
      analytic: [be.read(g.dy), be.read(g.dz), be.read(g.dw)],
      loss: () => dot(be.read(be.gatedRmsNorm(yt, zt, wt, group, eps)), dout),
      eps: 1e-3,
    });
  });

  it('rejects a group size that does not divide the last dim', () => {
    expect(() => be.gatedRmsNorm(yt, zt, wt, 3, eps)).toThrow(/groupSize/);
  });
});

describe('Mamba2Mixer', () => {
  const dims: Mamba2Dims = {
    dModel: 16, dInner: 16, dXb: 8, dState: 4, headDim: 4, nHeads: 4, nGroups: 4, dConv: 4, chunkSize: 4, convBias: true, normEps: 1e-5,
  };

  /** weights from the reference init, with D, norm and dt_bias randomised so their grads are not special */
  function makeMixer(seed: number): { mixer: Mamba2Mixer; values: Map<string, Float32Array> } {
    const rng = new Rng(seed);
    const values = new Map<string, Float32Array>();
    for (const spec of mamba2ParamSpecs(dims)) values.set(spec.key, spec.init(rng));
    values.set('D', randomArray(dims.nHeads, seed + 1));
    values.set('norm.weight', Float32Array.from(randomArray(dims.dInner, seed + 2, 0.3), (v) => 1 + v));
    values.set('dt_bias', randomArray(dims.nHeads, seed + 3, 0.5));
    const shapes = new Map(mamba2ParamSpecs(dims).map((s) => [s.key, s.shape]));
    const mixer = new Mamba2Mixer(be, dims, (key, shape) => {
      const v = values.get(key);
      if (!v) throw new Error(`missing ${key}`);
      expect(shape).toEqual(shapes.get(key));
      return be.wrap(v, shape);
    });
    return { mixer, values };
  }

  it('has the checkpoint keys and shapes of the reference', () => {
    const specs = mamba2ParamSpecs(dims);
    expect(specs.map((s) => [s.key, s.shape])).toEqual([
      ['in_proj.weight', [16 + 8 + 8 + 16 + 4, 16]],
      ['conv1d.weight', [32, 1, 4]],
      ['conv1d.bias', [32]],
      ['dt_bias', [4]],
      ['A_log', [4]],
      ['D', [4]],
      ['norm.weight', [16]],
      ['out_proj.weight', [16, 16]],
    ]);
    const rng = new Rng(1);
    const byKey = new Map(specs.map((s) => [s.key, s.init(rng)]));
    // softplus(dt_bias) lands in [1e-3, 1e-1]; −exp(A_log) in [−16, −1]
    for (const v of byKey.get('dt_bias')!) {
      expect(softplus(v)).toBeGreaterThanOrEqual(1e-3 * (1 - 1e-5));
      expect(softplus(v)).toBeLessThanOrEqual(0.1 * (1 + 1e-5));
    }
    for (const v of byKey.get('A_log')!) {
      expect(Math.exp(v)).toBeGreaterThanOrEqual(1 - 1e-6);
      expect(Math.exp(v)).toBeLessThanOrEqual(16 * (1 + 1e-6));
    }
    expect([...byKey.get('D')!]).toEqual([1, 1, 1, 1]);
    expect(specs.filter((s) => s.keepF32).map((s) => s.key)).toEqual(['A_log', 'D']);
    expect(specs.filter((s) => s.decay).map((s) => s.key)).toEqual(['in_proj.weight', 'conv1d.weight', 'out_proj.weight']);
    const { mixer } = makeMixer(1);
    expect(mixer.params().map(([k]) => k)).toEqual(specs.map((s) => s.key));
  });

  it('rejects inconsistent dims', () => {
    expect(() => mamba2ParamSpecs({ ...dims, nHeads: 3 })).toThrow(/nHeads/);
    expect(() => mamba2ParamSpecs({ ...dims, dXb: 6 })).toThrow(/dXb/);
  });

  it('gradients of the input and every parameter match finite differences (with segments)', () => {
    const B = 2, T = 9;
    const { mixer } = makeMixer(5);
    const u = randomArray(B * T * dims.dModel, 41);
    const seq: SeqInfo = { ...plainSeqInfo(B, T), segments: Int32Array.from([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2]) };
    const ut = be.wrap(u, [B, T, dims.dModel]);
    const w = randomWeights(B * T * dims.dModel, 42);
    const { saved } = mixer.forward(ut, seq, { needBackward: true });
    const du = be.read(mixer.backward(be.wrap(w.slice(), [B, T, dims.dModel]), saved));
    const params = mixer.params();
    gradCheck({
      name: 'Mamba2Mixer',
      inputs: [u, ...params.map(([, p]) => dataOf(p.value))],
      analytic: [du, ...params.map(([k, p]) => {
        expect(p.grad, `grad of ${k}`).not.toBeNull();
        return be.read(p.grad!);
      })],
      loss: () => dot(be.read(mixer.forward(ut, seq, { needBackward: false }).y), w),
      eps: 3e-3, samples: 40, rtol: 2e-2, atol: 1e-3,
    });
  });

  function decodeInfo(slots: Int32Array): DecodeInfo {
    const n = slots.length;
    return {
      n, slots, positions: new Int32Array(n), slotMapping: new Int32Array(n), blockTables: new Int32Array(n), maxBlocks: 1, seqLens: new Int32Array(n),
    };
  }

  /** token t of every row of u [B, T, D] as [B, D] */
  function tokenRows(u: Float32Array, B: number, T: number, D: number, t: number): Tensor {
    const out = new Float32Array(B * D);
    for (let b = 0; b < B; b++) out.set(u.subarray((b * T + t) * D, (b * T + t + 1) * D), b * D);
    return be.wrap(out, [B, D]);
  }

  it('recurrent steps equal the parallel forward (2 sequences in slots [2, 0] of a pool of 3)', () => {
    const B = 2, T = 7, D = dims.dModel;
    const { mixer } = makeMixer(6);
    const u = randomArray(B * T * D, 51);
    const full = be.read(mixer.forward(be.wrap(u, [B, T, D]), plainSeqInfo(B, T), { needBackward: false }).y);
    const state = mixer.allocateState({ slots: 3, kvBlocks: 0, blockSize: 16 });
    const slots = Int32Array.from([2, 0]);
    for (let t = 0; t < T; t++) {
      const y = be.read(mixer.step(tokenRows(u, B, T, D, t), state, decodeInfo(slots)));
      const want = be.read(tokenRows(full, B, T, D, t));
      expect(maxAbsDiff(y, want), `token ${t}`).toBeLessThan(1e-4);
    }
    if (state.kind !== 'mamba2') throw new Error('expected mamba2 state');
    const ss = be.read(state.ssmState), per = ss.length / 3;
    expect(maxAbsDiff(ss.subarray(per, 2 * per), new Float32Array(per))).toBe(0); // slot 1 untouched
  });

  it('prefill with stateWrite, then steps, equals the full forward', () => {
    const B = 2, T = 10, T0 = 6, D = dims.dModel;
    const { mixer } = makeMixer(7);
    const u = randomArray(B * T * D, 61);
    const full = be.read(mixer.forward(be.wrap(u, [B, T, D]), plainSeqInfo(B, T), { needBackward: false }).y);
    const prefix = new Float32Array(B * T0 * D);
    for (let b = 0; b < B; b++) prefix.set(u.subarray(b * T * D, (b * T + T0) * D), b * T0 * D);
    const state = mixer.allocateState({ slots: 3, kvBlocks: 0, blockSize: 16 });
    const slots = Int32Array.from([2, 0]);
    const pre = be.read(mixer.forward(be.wrap(prefix, [B, T0, D]), plainSeqInfo(B, T0), {
      needBackward: false, state, stateWrite: { slots, slotMapping: new Int32Array(B * T0) },
    }).y);
    for (let b = 0; b < B; b++) {
      expect(maxAbsDiff(pre.subarray(b * T0 * D, (b + 1) * T0 * D), full.subarray(b * T * D, (b * T + T0) * D))).toBeLessThan(1e-5);
    }
    for (let t = T0; t < T; t++) {
      const y = be.read(mixer.step(tokenRows(u, B, T, D, t), state, decodeInfo(slots)));
      expect(maxAbsDiff(y, be.read(tokenRows(full, B, T, D, t))), `token ${t}`).toBeLessThan(1e-4);
    }
  });

  it('rejects a wrong input shape and a missing state', () => {
    const { mixer } = makeMixer(8);
    expect(() => mixer.forward(be.zeros([2, 3, 15]), plainSeqInfo(2, 3), { needBackward: false })).toThrow(/input/);
    expect(() => mixer.forward(be.zeros([1, 3, 16]), plainSeqInfo(1, 3), {
      needBackward: false, stateWrite: { slots: Int32Array.from([0]), slotMapping: new Int32Array(3) },
    })).toThrow(/state/);
  });
});
