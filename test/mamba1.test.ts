// The M1 Mamba-1 mixer and its CPU ops: causal conv1d, grouped selective scan, and the layer.
import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { roundToDType } from '../src/backend/dtype.js';
import type { Tensor } from '../src/backend/tensor.js';
import type { Mamba1Dims } from '../src/model/config.js';
import { Mamba1Mixer, mamba1ParamSpecs } from '../src/model/mamba1.js';
import { plainSeqInfo, type DecodeInfo, type LayerState, type SeqInfo } from '../src/model/module.js';
import { Rng } from '../src/util/rng.js';
import { dot, gradCheck, maxAbsDiff, randomArray, randomWeights } from './util/gradcheck.js';

const be = new CpuBackend();

const silu = (v: number): number => v / (1 + Math.exp(-v));
const softplus = (v: number): number => (v > 20 ? v : Math.log(1 + Math.exp(v)));

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

// ---------------------------------------------------------------- naive references

/** causal depthwise conv, written per output position: y_t = act(b + Σ_j w[K−1−j]·x_{t−j}) */
function naiveConv(
  x: Float32Array, w: Float32Array, bias: Float32Array | null, B: number, T: number, C: number, K: number,
  segments?: Int32Array,
): Float64Array {
  const y = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < C; c++) {
        let s = bias ? bias[c]! : 0;
        for (let j = 0; j < K && t - j >= 0; j++) {
          if (segments && segments[b * T + t - j] !== segments[b * T + t]) break;
          s += w[c * K + (K - 1 - j)]! * x[(b * T + t - j) * C + c]!;
        }
        y[(b * T + t) * C + c] = silu(s);
      }
    }
  }
  return y;
}

interface ScanData {
  B: number; T: number; Di: number; N: number; G: number;
  x: Float32Array; delta: Float32Array; A: Float32Array; Bm: Float32Array; Cm: Float32Array;
  D: Float32Array; z: Float32Array; deltaBias: Float32Array;
  segments?: Int32Array;
}

/** the scan with t outermost and the whole [Di, N] state per row; returns y and each row's final state */
function naiveScan(s: ScanData): { y: Float64Array; hFinal: Float64Array } {
  const { B, T, Di, N, G } = s;
  const y = new Float64Array(B * T * Di);
  const hFinal = new Float64Array(B * Di * N);
  for (let b = 0; b < B; b++) {
    const h = new Float64Array(Di * N);
    for (let t = 0; t < T; t++) {
      if (s.segments && t > 0 && s.segments[b * T + t] !== s.segments[b * T + t - 1]) h.fill(0);
      for (let c = 0; c < Di; c++) {
        const g = Math.floor((c * G) / Di);
        const i = (b * T + t) * Di + c;
        const dt = softplus(s.delta[i]! + s.deltaBias[c]!);
        let acc = s.D[c]! * s.x[i]!;
        for (let n = 0; n < N; n++) {
          const bc = ((b * T + t) * G + g) * N + n;
          h[c * N + n] = Math.exp(dt * s.A[c * N + n]!) * h[c * N + n]! + dt * s.Bm[bc]! * s.x[i]!;
          acc += s.Cm[bc]! * h[c * N + n]!;
        }
        y[i] = acc * silu(s.z[i]!);
      }
    }
    hFinal.set(h, b * Di * N);
  }
  return { y, hFinal };
}

function randomScan(B: number, T: number, Di: number, N: number, G: number, seed: number, segments?: Int32Array): ScanData {
  const A = randomArray(Di * N, seed + 3, 0.5).map((v) => -Math.exp(v));
  return {
    B, T, Di, N, G, segments, A,
    x: randomArray(B * T * Di, seed),
    delta: randomArray(B * T * Di, seed + 1, 0.7),
    Bm: randomArray(B * T * G * N, seed + 4),
    Cm: randomArray(B * T * G * N, seed + 5),
    D: randomArray(Di, seed + 6),
    z: randomArray(B * T * Di, seed + 7),
    deltaBias: randomArray(Di, seed + 8, 0.5),
  };
}

function scanTensors(s: ScanData): {
  x: Tensor; delta: Tensor; A: Tensor; Bm: Tensor; Cm: Tensor; D: Tensor; z: Tensor; deltaBias: Tensor; segments?: Int32Array;
} {
  const { B, T, Di, N, G } = s;
  return {
    x: be.wrap(s.x, [B, T, Di]), delta: be.wrap(s.delta, [B, T, Di]), A: be.wrap(s.A, [Di, N]),
    Bm: be.wrap(s.Bm, [B, T, G, N]), Cm: be.wrap(s.Cm, [B, T, G, N]), D: be.wrap(s.D, [Di]),
    z: be.wrap(s.z, [B, T, Di]), deltaBias: be.wrap(s.deltaBias, [Di]), segments: s.segments,
  };
}

// ---------------------------------------------------------------- mixer helpers

const dims: Mamba1Dims = { dModel: 16, dInner: 16, dXb: 8, dState: 4, dConv: 4, dtRank: 3, convBias: true };
const { dModel: Dm, dInner: Di, dXb: Dxb, dState: N, dConv: K, dtRank: R } = dims;
const rep = Di / Dxb; // 2
// row offsets of the in_proj pieces z | x | B | C | dt
const OFF = { z: 0, x: Di, b: Di + Dxb, c: Di + 2 * Dxb, dt: 2 * Di + 2 * Dxb };

type Weights = Map<string, Float32Array>;

/** the reference init, with livelier Δ/A/D than at conversion (Δ ≈ 1e-2 would hide the scan) */
function makeWeights(seed: number, d: Mamba1Dims = dims): Weights {
  const rng = new Rng(seed);
  const w: Weights = new Map();
  for (const s of mamba1ParamSpecs(d)) w.set(s.key, s.init(rng));
  w.set('dt_proj.bias', randomArray(d.dInner, seed + 1, 0.5));
  w.set('A_log', w.get('A_log')!.map((v, i) => v + 0.3 * Math.sin(i)));
  w.set('D', randomArray(d.dInner, seed + 2, 0.5).map((v) => 1 + v));
  return w;
}

function source(w: Weights) {
  return (key: string, shape: readonly number[]): Tensor => {
    const a = w.get(key);
    if (!a) throw new Error(`missing weight ${key}`);
    return be.wrap(a, shape); // shared, so tests can edit weights in place
  };
}

function runMixer(m: Mamba1Mixer, u: Float32Array, B: number, T: number, seq?: SeqInfo): Float32Array {
  return be.read(m.forward(be.wrap(u, [B, T, Dm]), seq ?? plainSeqInfo(B, T), { needBackward: false }).y);
}

function mixerOut(w: Weights, u: Float32Array, B: number, T: number): Float32Array {
  return runMixer(new Mamba1Mixer(be, dims, source(w)), u, B, T);
}

/**
 * The mixer written straight from m1-spec §1.5 with scalar loops and explicit index formulas.
 * `dtBiasTimes` is how often b_dt enters Δ; `convBC` also runs B and C through the conv (with the
 * taps of channel 0 — only meaningful when every channel has the same taps, as in the test using it).
 */
function naiveMixer(w: Weights, u: Float32Array, B: number, T: number, opt: { dtBiasTimes: number; convBC?: boolean }): Float64Array {
  const Win = w.get('in_proj.weight')!, cw = w.get('conv1d.weight')!, cb = w.get('conv1d.bias')!;
  const Wdt = w.get('dt_proj.weight')!, bdt = w.get('dt_proj.bias')!, Alog = w.get('A_log')!, Dv = w.get('D')!;
  const Wout = w.get('out_proj.weight')!;
  const P = 2 * Di + 2 * Dxb + R;
  const out = new Float64Array(B * T * Dm);
  for (let b = 0; b < B; b++) {
    const proj: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const p = new Float64Array(P);
      for (let j = 0; j < P; j++) for (let k = 0; k < Dm; k++) p[j]! += Win[j * Dm + k]! * u[(b * T + t) * Dm + k]!;
      proj.push(p);
    }
    const xRep = (t: number, c: number): number => proj[t]![OFF.x + N * Math.floor(Math.floor(c / N) / rep) + (c % N)]!;
    const bRep = (t: number, g: number, n: number): number => proj[t]![OFF.b + N * Math.floor(g / rep) + n]!;
    const cGrp = (t: number, g: number, n: number): number => proj[t]![OFF.c + N * g + n]!;
    const conv = (f: (t: number) => number, c: number, t: number, bias: number): number => {
      let s = bias;
      for (let k = 0; k < K; k++) if (t - (K - 1) + k >= 0) s += cw[c * K + k]! * f(t - (K - 1) + k);
      return silu(s);
    };
    const h = new Float64Array(Di * N);
    for (let t = 0; t < T; t++) {
      const ys = new Float64Array(Di);
      for (let c = 0; c < Di; c++) {
        const g = Math.floor(c / N);
        const xb = conv((s) => xRep(s, c), c, t, cb[c]!);
        let dl = opt.dtBiasTimes * bdt[c]!;
        for (let j = 0; j < R; j++) dl += Wdt[c * R + j]! * proj[t]![OFF.dt + j]!;
        const dt = softplus(dl);
        let y = Dv[c]! * xb;
        for (let n = 0; n < N; n++) {
          const Bv = opt.convBC ? conv((s) => bRep(s, g, n), 0, t, 0) : bRep(t, g, n);
          const Cv = opt.convBC ? conv((s) => cGrp(s, g, n), 0, t, 0) : cGrp(t, g, n);
          h[c * N + n] = Math.exp(-dt * Math.exp(Alog[c * N + n]!)) * h[c * N + n]! + dt * Bv * xb;
          y += Cv * h[c * N + n]!;
        }
        ys[c] = y * silu(proj[t]![OFF.z + c]!);
      }
      for (let o = 0; o < Dm; o++) {
        let s = 0;
        for (let c = 0; c < Di; c++) s += Wout[o * Di + c]! * ys[c]!;
        out[(b * T + t) * Dm + o] = s;
      }
    }
  }
  return out;
}

function decodeInfo(slots: number[]): DecodeInfo {
  const n = slots.length;
  return {
    n, slots: Int32Array.from(slots), positions: new Int32Array(n), slotMapping: new Int32Array(n),
    blockTables: new Int32Array(n), maxBlocks: 1, seqLens: new Int32Array(n).fill(1),
  };
}

/** rows [t0, t1) of every batch row of a [B, T, W] array */
function timeSlice(a: Float32Array, B: number, T: number, W: number, t0: number, t1: number): Float32Array {
  const out = new Float32Array(B * (t1 - t0) * W);
  for (let b = 0; b < B; b++) out.set(a.subarray((b * T + t0) * W, (b * T + t1) * W), b * (t1 - t0) * W);
  return out;
}

function mamba1State(st: LayerState): { convState: Tensor; ssmState: Tensor } {
  if (st.kind !== 'mamba1') throw new Error('expected a mamba1 state');
  return st;
}

/** channels c of a [.., Di]-last array whose value differs between a and b anywhere */
function changedChannels(a: Float32Array, b: Float32Array, width: number, inner = 1): number[] {
  const set = new Set<number>();
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]! - b[i]!) > 1e-7) set.add(Math.floor(i / inner) % width);
  return [...set].sort((x, y) => x - y);
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

// ================================================================ ops

describe('causalConv1d', () => {
  const B = 2, T = 7, C = 5, Kc = 4;
  const segments = Int32Array.from([0, 0, 0, 1, 1, 1, 1, /* row 1 */ 4, 4, 4, 4, 4, 7, 7]);

  it('matches a naive per-position conv, with segments', () => {
    const x = randomArray(B * T * C, 1), w = randomArray(C * Kc, 2), bias = randomArray(C, 3);
    const y = be.read(be.causalConv1d(be.wrap(x, [B, T, C]), be.wrap(w, [C, Kc]), be.wrap(bias, [C]), { silu: true, segments }));
    expect(maxAbsDiff(y, naiveConv(x, w, bias, B, T, C, Kc, segments))).toBeLessThan(1e-6);
    // without segments the row start is the only boundary: position 3 of row 0 now sees positions 0..2
    const y2 = be.read(be.causalConv1d(be.wrap(x, [B, T, C]), be.wrap(w, [C, Kc]), be.wrap(bias, [C]), { silu: true }));
    expect(maxAbsDiff(y2, naiveConv(x, w, bias, B, T, C, Kc))).toBeLessThan(1e-6);
    expect(Math.abs(y2[3 * C]! - y[3 * C]!)).toBeGreaterThan(1e-4);
  });

  it('gradients of x, w and bias (SiLU, segments) match finite differences', () => {
    const x = randomArray(B * T * C, 11), w = randomArray(C * Kc, 12), bias = randomArray(C, 13);
    const wts = randomWeights(B * T * C, 14);
    const tx = be.wrap(x, [B, T, C]), tw = be.wrap(w, [C, Kc]), tb = be.wrap(bias, [C]);
    const opts = { silu: true, segments };
    const g = be.causalConv1dBackward(be.wrap(wts, [B, T, C]), tx, tw, tb, opts);
    gradCheck({
      name: 'causalConv1d',
      inputs: [x, w, bias],
      analytic: [be.read(g.dx), be.read(g.dw), be.read(g.dbias!)],
      loss: () => dot(be.read(be.causalConv1d(tx, tw, tb, opts)), wts),
      samples: 40,
    });
  });

  it('stateOut holds the last K-1 inputs of the last segment, zero-padded; step continues the conv', () => {
    const x = randomArray(B * T * C, 21), w = randomArray(C * Kc, 22), bias = randomArray(C, 23);
    const S = 3;
    // row 0 ends with a 4-token segment (≥ K-1), row 1 with a 2-token one (< K-1)
    const convState = be.zeros([S, C, Kc - 1]);
    be.causalConv1d(be.wrap(x, [B, T, C]), be.wrap(w, [C, Kc]), be.wrap(bias, [C]), { silu: true, segments, stateOut: { convState, slots: Int32Array.from([2, 0]) } });
    const st = be.read(convState);
    for (let c = 0; c < C; c++) {
      for (let j = 0; j < Kc - 1; j++) {
        expect(st[(2 * C + c) * (Kc - 1) + j]).toBe(x[(0 * T + 4 + j) * C + c]!);
        const t = 4 + j; // row 1, last segment starts at t = 5
        expect(st[(0 * C + c) * (Kc - 1) + j]).toBe(t >= 5 ? x[(1 * T + t) * C + c]! : 0);
        expect(st[(1 * C + c) * (Kc - 1) + j]).toBe(0); // untouched slot
      }
    }
    // T < K-1 without segments: zero-padded at the front
    const cs2 = be.zeros([1, C, Kc - 1]);
    be.causalConv1d(be.wrap(x.slice(0, C), [1, 1, C]), be.wrap(w, [C, Kc]), null, { silu: false, stateOut: { convState: cs2, slots: Int32Array.from([0]) } });
    const st2 = be.read(cs2);
    for (let c = 0; c < C; c++) expect([...st2.subarray(c * 3, c * 3 + 3)]).toEqual([0, 0, x[c]!]);

    // step == parallel: prefill 3 tokens, then step the remaining 4, one sequence in slot 1
    const xs = randomArray(T * C, 24);
    const full = be.read(be.causalConv1d(be.wrap(xs, [1, T, C]), be.wrap(w, [C, Kc]), be.wrap(bias, [C]), { silu: true }));
    const cs3 = be.zeros([S, C, Kc - 1]);
    be.causalConv1d(be.wrap(xs.slice(0, 3 * C), [1, 3, C]), be.wrap(w, [C, Kc]), be.wrap(bias, [C]), { silu: true, stateOut: { convState: cs3, slots: Int32Array.from([1]) } });
    for (let t = 3; t < T; t++) {
      const yt = be.read(be.causalConv1dStep(be.wrap(xs.slice(t * C, (t + 1) * C), [1, C]), cs3, Int32Array.from([1]), be.wrap(w, [C, Kc]), be.wrap(bias, [C]), true));
      expect(maxAbsDiff(yt, full.subarray(t * C, (t + 1) * C))).toBeLessThan(1e-6);
    }
  });
});

describe('selectiveScan', () => {
  it('matches a naive reference loop (groups, D, z, deltaBias, segments) and writes the final state', () => {
    // Di = 8 channels in G = 2 groups of B/C: channels 0..3 → group 0, 4..7 → group 1
    const s = randomScan(2, 6, 8, 3, 2, 100, Int32Array.from([0, 0, 0, 0, 0, 0, /* row 1 */ 0, 0, 1, 1, 1, 1]));
    const ref = naiveScan(s);
    const ssmState = be.zeros([3, 8, 3]);
    const y = be.read(be.selectiveScan({ ...scanTensors(s), stateOut: { ssmState, slots: Int32Array.from([1, 2]) } }));
    expect(maxAbsDiff(y, ref.y)).toBeLessThan(1e-5);
    expect(maxAbs(ref.y)).toBeGreaterThan(0.1);
    const st = be.read(ssmState);
    expect(maxAbsDiff(st.subarray(24, 72), ref.hFinal)).toBeLessThan(1e-5);
    expect(maxAbs(st.subarray(0, 24))).toBe(0);
  });

  it('softplus threshold: Δ = delta + bias above 20', () => {
    const s = randomScan(1, 2, 2, 2, 1, 200);
    s.delta.fill(25);
    const y = be.read(be.selectiveScan(scanTensors(s)));
    expect(maxAbsDiff(y, naiveScan(s).y)).toBeLessThan(1e-4);
  });

  it('all eight gradients match finite differences (with segments)', () => {
    const s = randomScan(2, 5, 6, 3, 2, 300, Int32Array.from([0, 0, 0, 0, 0, /* row 1 */ 2, 2, 3, 3, 3]));
    const t = scanTensors(s);
    const wts = randomWeights(2 * 5 * 6, 301);
    const g = be.selectiveScanBackward(be.wrap(wts, [2, 5, 6]), t);
    gradCheck({
      name: 'selectiveScan',
      inputs: [s.x, s.delta, s.A, s.Bm, s.Cm, s.D, s.z, s.deltaBias],
      analytic: [g.dx, g.ddelta, g.dA, g.dBm, g.dCm, g.dD!, g.dz!, g.dDeltaBias!].map((x) => be.read(x)),
      loss: () => dot(be.read(be.selectiveScan(t)), wts),
      samples: 30,
    });
    // deltaBias enters exactly like delta, so its gradient is the sum of ddelta over B, T
    const dd = be.read(g.ddelta), ddb = be.read(g.dDeltaBias!);
    for (let c = 0; c < 6; c++) {
      let sum = 0;
      for (let i = c; i < dd.length; i += 6) sum += dd[i]!;
      expect(ddb[c]).toBeCloseTo(sum, 5);
    }
  });

  it('step == parallel, state updated in place at its slot only', () => {
    const s = randomScan(1, 5, 8, 3, 2, 400);
    const full = naiveScan(s);
    const ssmState = be.zeros([2, 8, 3]);
    for (let t = 0; t < 5; t++) {
      const sl = (a: Float32Array, w: number): Float32Array => a.slice(t * w, (t + 1) * w);
      const y = be.read(be.selectiveScanStep({
        x: be.wrap(sl(s.x, 8), [1, 8]), delta: be.wrap(sl(s.delta, 8), [1, 8]), z: be.wrap(sl(s.z, 8), [1, 8]),
        A: be.wrap(s.A, [8, 3]), Bm: be.wrap(sl(s.Bm, 6), [1, 2, 3]), Cm: be.wrap(sl(s.Cm, 6), [1, 2, 3]),
        D: be.wrap(s.D, [8]), deltaBias: be.wrap(s.deltaBias, [8]), ssmState, slots: Int32Array.from([1]),
      }));
      expect(maxAbsDiff(y, full.y.subarray(t * 8, (t + 1) * 8))).toBeLessThan(1e-5);
    }
    const st = be.read(ssmState);
    expect(maxAbsDiff(st.subarray(24), full.hFinal)).toBeLessThan(1e-5);
    expect(maxAbs(st.subarray(0, 24))).toBe(0);
  });

  it('a bf16 state (the reference\'s): read as stored, y from the f32 update, the stored state rounded to bf16', () => {
    const s = randomScan(3, 1, 8, 4, 2, 410);
    const start = randomArray(2 * 8 * 4, 411);
    roundToDType(start, 'bf16'); // a bf16 pool holds bf16 values: both pools start from the same ones
    const pools = { f32: be.wrap(start.slice(), [2, 8, 4]), bf16: be.wrap(start.slice(), [2, 8, 4], 'bf16') };
    const slots = Int32Array.from([1, 0, 1]); // slot 1 twice: the later token reads the earlier one's stored state
    const step = (ssmState: Tensor) => be.read(be.selectiveScanStep({
      x: be.wrap(s.x, [3, 8]), delta: be.wrap(s.delta, [3, 8]), z: be.wrap(s.z, [3, 8]), A: be.wrap(s.A, [8, 4]),
      Bm: be.wrap(s.Bm, [3, 2, 4]), Cm: be.wrap(s.Cm, [3, 2, 4]), D: be.wrap(s.D, [8]), deltaBias: be.wrap(s.deltaBias, [8]), ssmState, slots,
    }));
    // tokens 0 and 1 read the same start in both pools: y equal, the stored states equal after rounding
    const y32 = step(pools.f32), y16 = step(pools.bf16);
    expect(maxAbsDiff(y16.subarray(0, 16), y32.subarray(0, 16))).toBe(0);
    const st32 = be.read(pools.f32), st16 = be.read(pools.bf16);
    const rounded = st32.slice(0, 32);
    roundToDType(rounded, 'bf16');
    expect(maxAbsDiff(st16.subarray(0, 32), rounded)).toBe(0); // slot 0: token 1's state
    const again = st16.slice();
    roundToDType(again, 'bf16');
    expect(maxAbsDiff(again, st16)).toBe(0); // every stored value is a bf16
    // token 2 continued from token 0's rounded state: close to the f32 chain, not equal
    const d = maxAbsDiff(y16.subarray(16), y32.subarray(16));
    expect(d).toBeGreaterThan(0);
    expect(d).toBeLessThan(2e-2 * Math.max(1, maxAbs(y32.subarray(16))));
    expect(() => be.selectiveScanStep({
      x: be.wrap(s.x, [3, 8]), delta: be.wrap(s.delta, [3, 8]), z: null, A: be.wrap(s.A, [8, 4]), Bm: be.wrap(s.Bm, [3, 2, 4]),
      Cm: be.wrap(s.Cm, [3, 2, 4]), D: null, deltaBias: null, ssmState: be.zeros([2, 8, 4], 'f16'), slots,
    })).toThrow(/selectiveScanStep: ssmState must be stored as f32 or bf16.*got f16/);
  });

  it('rejects a B/C group count that does not divide Di', () => {
    const s = randomScan(1, 2, 6, 2, 4, 500);
    expect(() => be.selectiveScan(scanTensors(s))).toThrow(/group count G = 4/);
  });
});

// ================================================================ the mixer

describe('Mamba1Mixer', () => {
  it('param specs: keys, shapes, decay, keepF32 and the reference init', () => {
    const specs = mamba1ParamSpecs(dims);
    expect(specs.map((s) => [s.key, s.shape, s.decay, s.keepF32 ?? false])).toEqual([
      ['in_proj.weight', [2 * Di + 2 * Dxb + R, Dm], true, false],
      ['conv1d.weight', [Di, 1, K], true, false],
      ['conv1d.bias', [Di], false, false],
      ['dt_proj.weight', [Di, R], true, false],
      ['dt_proj.bias', [Di], false, false],
      ['A_log', [Di, N], false, true],
      ['D', [Di], false, true],
      ['out_proj.weight', [Dm, Di], true, false],
    ]);
    const rng = new Rng(5);
    const v = new Map(specs.map((s) => [s.key, s.init(rng)]));
    expect(maxAbs(v.get('in_proj.weight')!)).toBeLessThanOrEqual(1 / Math.sqrt(Dm));
    expect(maxAbs(v.get('out_proj.weight')!)).toBeLessThanOrEqual(1 / Math.sqrt(Di));
    expect(maxAbs(v.get('dt_proj.weight')!)).toBeLessThanOrEqual(1 / Math.sqrt(R));
    expect(maxAbs(v.get('conv1d.weight')!)).toBeLessThanOrEqual(1 / Math.sqrt(K));
    for (const b of v.get('dt_proj.bias')!) {
      const dt = softplus(b);
      expect(dt).toBeGreaterThanOrEqual(1e-3 * 0.999);
      expect(dt).toBeLessThanOrEqual(1e-1 * 1.001);
    }
    expect([...v.get('A_log')!.subarray(N, 2 * N)].map(Math.exp)).toEqual([1, 2, 3, 4].map((x) => expect.closeTo(x, 5)));
    expect([...v.get('D')!]).toEqual(new Array(Di).fill(1));
    expect(mamba1ParamSpecs({ ...dims, convBias: false }).map((s) => s.key)).not.toContain('conv1d.bias');
  });

  it('gradients of u and every parameter match finite differences', () => {
    const B = 2, T = 7;
    const w = makeWeights(600);
    const m = new Mamba1Mixer(be, dims, source(w));
    const u = randomArray(B * T * Dm, 601);
    const wts = randomWeights(B * T * Dm, 602);
    const { saved } = m.forward(be.wrap(u, [B, T, Dm]), plainSeqInfo(B, T), { needBackward: true });
    const du = be.read(m.backward(be.wrap(wts, [B, T, Dm]), saved));
    const params = m.params();
    expect(params.map(([k]) => k)).toEqual(mamba1ParamSpecs(dims).map((s) => s.key));
    const grads = params.map(([, p]) => be.read(p.grad!));
    // every gradient is large enough that the check is not passing on the absolute tolerance
    for (const [i, g] of grads.entries()) expect(maxAbs(g), params[i]![0]).toBeGreaterThan(2e-2);
    gradCheck({
      name: 'Mamba1Mixer',
      inputs: [u, ...params.map(([k]) => w.get(k)!)],
      analytic: [du, ...grads],
      loss: () => dot(runMixer(m, u, B, T), wts),
      samples: 16,
      atol: 2e-4,
    });
  });

  it('step == parallel forward: two sequences at slots [3, 1] of a pool of 4', () => {
    const B = 2, T = 7;
    const w = makeWeights(700);
    const m = new Mamba1Mixer(be, dims, source(w));
    const u = randomArray(B * T * Dm, 701);
    const full = runMixer(m, u, B, T);
    const state = m.allocateState({ slots: 4, kvBlocks: 0, blockSize: 1 });
    const info = decodeInfo([3, 1]);
    for (let t = 0; t < T; t++) {
      const y = be.read(m.step(be.wrap(timeSlice(u, B, T, Dm, t, t + 1), [B, Dm]), state, info));
      expect(maxAbsDiff(y, timeSlice(full, B, T, Dm, t, t + 1))).toBeLessThan(1e-5);
    }
    const { convState, ssmState } = mamba1State(state);
    expect(convState.shape).toEqual([4, Di, K - 1]);
    expect(ssmState.shape).toEqual([4, Di, N]);
    for (const slot of [0, 2]) {
      expect(maxAbs(be.read(convState).subarray(slot * Di * (K - 1), (slot + 1) * Di * (K - 1)))).toBe(0);
      expect(maxAbs(be.read(ssmState).subarray(slot * Di * N, (slot + 1) * Di * N))).toBe(0);
    }
  });

  for (const T0 of [5, 2]) {
    it(`prefill of ${T0} tokens with stateWrite, then steps == full forward${T0 < K - 1 ? ' (T0 < K-1)' : ''}`, () => {
      const B = 2, T = 8;
      const w = makeWeights(800);
      const m = new Mamba1Mixer(be, dims, source(w));
      const u = randomArray(B * T * Dm, 801);
      const full = runMixer(m, u, B, T);
      const state = m.allocateState({ slots: 4, kvBlocks: 0, blockSize: 1 });
      const pre = be.read(m.forward(be.wrap(timeSlice(u, B, T, Dm, 0, T0), [B, T0, Dm]), plainSeqInfo(B, T0), {
        needBackward: false, state, stateWrite: { slots: Int32Array.from([3, 1]), slotMapping: new Int32Array(B * T0) },
      }).y);
      expect(maxAbsDiff(pre, timeSlice(full, B, T, Dm, 0, T0))).toBeLessThan(1e-5);
      const info = decodeInfo([3, 1]);
      for (let t = T0; t < T; t++) {
        const y = be.read(m.step(be.wrap(timeSlice(u, B, T, Dm, t, t + 1), [B, Dm]), state, info));
        expect(maxAbsDiff(y, timeSlice(full, B, T, Dm, t, t + 1))).toBeLessThan(1e-5);
      }
    });
  }

  it('bf16 state pools (SSM and conv): prefill writes rounded states, steps stay close to the full forward (ssmDType bf16)', () => {
    const B = 2, T = 12, T0 = 5;
    const w = makeWeights(850);
    const m = new Mamba1Mixer(be, dims, source(w));
    const u = randomArray(B * T * Dm, 851);
    const full = runMixer(m, u, B, T);
    const state = m.allocateState({ slots: 4, kvBlocks: 0, blockSize: 1, ssmDType: 'bf16' });
    const { ssmState, convState } = mamba1State(state);
    expect(ssmState.dtype).toBe('bf16');
    expect(convState.dtype).toBe('bf16');
    m.forward(be.wrap(timeSlice(u, B, T, Dm, 0, T0), [B, T0, Dm]), plainSeqInfo(B, T0), {
      needBackward: false, state, stateWrite: { slots: Int32Array.from([3, 1]), slotMapping: new Int32Array(B * T0) },
    });
    for (const t of [ssmState, convState]) {  // both pools hold bf16 values after the prefill
      const written = be.read(t), rounded = written.slice();
      roundToDType(rounded, 'bf16');
      expect(maxAbsDiff(rounded, written)).toBe(0);
    }
    const written = be.read(ssmState);
    expect(maxAbs(written.subarray(3 * Di * N))).toBeGreaterThan(0);
    const info = decodeInfo([3, 1]);
    let worst = 0;
    for (let t = T0; t < T; t++) {
      const ref = timeSlice(full, B, T, Dm, t, t + 1);
      const y = be.read(m.step(be.wrap(timeSlice(u, B, T, Dm, t, t + 1), [B, Dm]), state, info));
      worst = Math.max(worst, maxAbsDiff(y, ref) / Math.max(1e-3, maxAbs(ref)));
    }
    expect(worst).toBeGreaterThan(0); // rounded states: not the f32 recurrence
    expect(worst).toBeLessThan(2e-2);
  });

  it('a packed row of two segments equals the two sequences run separately (forward, backward, state hand-over)', () => {
    const w = makeWeights(900);
    const m = new Mamba1Mixer(be, dims, source(w));
    const La = 4, Lb = 5, LbPre = 2; // sequence b is prefilled with 2 (< K-1) tokens in the packed row
    const ua = randomArray(La * Dm, 901), ub = randomArray(Lb * Dm, 902);
    const T = La + LbPre;
    const packed = new Float32Array(T * Dm);
    packed.set(ua, 0);
    packed.set(ub.subarray(0, LbPre * Dm), La * Dm);
    const seq: SeqInfo = { ...plainSeqInfo(1, T), segments: Int32Array.from([5, 5, 5, 5, 9, 9]) };
    const state = m.allocateState({ slots: 3, kvBlocks: 0, blockSize: 1 });
    const fwd = m.forward(be.wrap(packed, [1, T, Dm]), seq, {
      needBackward: true, state, stateWrite: { slots: Int32Array.from([2]), slotMapping: new Int32Array(T) },
    });
    const y = be.read(fwd.y);
    const ya = runMixer(m, ua, 1, La), yb = runMixer(m, ub, 1, Lb);
    expect(maxAbsDiff(y.subarray(0, La * Dm), ya)).toBeLessThan(1e-5);
    expect(maxAbsDiff(y.subarray(La * Dm), yb.subarray(0, LbPre * Dm))).toBeLessThan(1e-5);
    // the state left behind is sequence b's alone: stepping on continues b
    for (let t = LbPre; t < Lb; t++) {
      const yt = be.read(m.step(be.wrap(ub.slice(t * Dm, (t + 1) * Dm), [1, Dm]), state, decodeInfo([2])));
      expect(maxAbsDiff(yt, yb.subarray(t * Dm, (t + 1) * Dm))).toBeLessThan(1e-5);
    }
    // backward: du of the packed row = du of each sequence on its own; param grads add up
    const dyAll = randomWeights(T * Dm, 903);
    const du = be.read(m.backward(be.wrap(dyAll, [1, T, Dm]), fwd.saved));
    const gPacked = be.read(m.dtProjBias.grad!);
    m.params().forEach(([, p]) => { p.grad = null; });
    const sepDu = (uu: Float32Array, L: number, dy: Float32Array): Float32Array => {
      const f = m.forward(be.wrap(uu, [1, L, Dm]), plainSeqInfo(1, L), { needBackward: true });
      return be.read(m.backward(be.wrap(dy, [1, L, Dm]), f.saved));
    };
    const dua = sepDu(ua, La, dyAll.slice(0, La * Dm));
    const dub = sepDu(ub.slice(0, LbPre * Dm), LbPre, dyAll.slice(La * Dm));
    expect(maxAbsDiff(du.subarray(0, La * Dm), dua)).toBeLessThan(1e-5);
    expect(maxAbsDiff(du.subarray(La * Dm), dub)).toBeLessThan(1e-5);
    expect(maxAbsDiff(gPacked, be.read(m.dtProjBias.grad!))).toBeLessThan(1e-4);
  });

  it('works without a conv bias (conv_bias false)', () => {
    const d2 = { ...dims, convBias: false };
    const w = makeWeights(950, d2);
    const m = new Mamba1Mixer(be, d2, source(w));
    expect(m.params().map(([k]) => k)).not.toContain('conv1d.bias');
    const u = randomArray(2 * 3 * Dm, 951);
    w.set('conv1d.bias', new Float32Array(Di)); // the naive reference reads one; zeros = none
    expect(maxAbsDiff(runMixer(m, u, 2, 3), naiveMixer(w, u, 2, 3, { dtBiasTimes: 2 }))).toBeLessThan(1e-5);
  });

  it('bad input: wrong u shape, stateWrite without a state', () => {
    const m = new Mamba1Mixer(be, dims, source(makeWeights(960)));
    expect(() => m.forward(be.zeros([1, 3, Dm + 1]), plainSeqInfo(1, 3), { needBackward: false })).toThrow(/u must be \[B=1, T=3, D=16\]/);
    expect(() => m.forward(be.zeros([1, 3, Dm]), plainSeqInfo(1, 3), {
      needBackward: false, stateWrite: { slots: Int32Array.from([0]), slotMapping: new Int32Array(3) },
    })).toThrow(/stateWrite needs a 'mamba1' state/);
    expect(() => new Mamba1Mixer(be, { ...dims, dXb: 6 }, source(makeWeights(961)))).toThrow(/d_xb 6/);
  });
});

// ================================================================ M1 gotchas (m1-spec §1.10)

describe('M1 gotchas', () => {
  const B = 2, T = 5;
  const u = randomArray(B * T * Dm, 1000);

  it('(a) dt_proj.bias is added twice: Δ = softplus(W_dt δ + 2 b_dt)', () => {
    const w = makeWeights(1001);
    w.get('dt_proj.bias')!.fill(0.8);
    const out = mixerOut(w, u, B, T);
    const twice = naiveMixer(w, u, B, T, { dtBiasTimes: 2 });
    const once = naiveMixer(w, u, B, T, { dtBiasTimes: 1 });
    expect(maxAbsDiff(out, twice)).toBeLessThan(1e-5);
    expect(maxAbsDiff(out, once)).toBeGreaterThan(1e-2);
  });

  it('(b) in_proj rows split as z | x | B | C | dt', () => {
    const zeroRows = (w: Weights, from: number, count: number): Weights => {
      const c = new Map([...w].map(([k, v]) => [k, v.slice()]));
      c.get('in_proj.weight')!.fill(0, from * Dm, (from + count) * Dm);
      return c;
    };
    const w = makeWeights(1002);
    expect(maxAbs(mixerOut(w, u, B, T))).toBeGreaterThan(1e-2);
    // z rows zero → y·silu(0) = 0 everywhere
    expect(maxAbs(mixerOut(zeroRows(w, OFF.z, Di), u, B, T))).toBe(0);
    // x rows zero, conv bias zero → x̄ = silu(0) = 0 → no input to the state, no D·x̄
    const wx = new Map(w);
    wx.set('conv1d.bias', new Float32Array(Di));
    expect(maxAbs(mixerOut(wx, u, B, T))).toBeGreaterThan(1e-2);
    expect(maxAbs(mixerOut(zeroRows(wx, OFF.x, Dxb), u, B, T))).toBe(0);
    // with D = 0 the output is C·h only: zero B rows (h = 0) or zero C rows → 0
    const wd = new Map(w);
    wd.set('D', new Float32Array(Di));
    expect(maxAbs(mixerOut(wd, u, B, T))).toBeGreaterThan(1e-2);
    expect(maxAbs(mixerOut(zeroRows(wd, OFF.b, Dxb), u, B, T))).toBe(0);
    expect(maxAbs(mixerOut(zeroRows(wd, OFF.c, Di), u, B, T))).toBe(0);
    // dt rows zero → δ = 0, so dt_proj.weight no longer matters (it does otherwise)
    const withDtW = (src: Weights, seed: number): Float32Array => {
      const c = new Map(src);
      c.set('dt_proj.weight', randomArray(Di * R, seed));
      return mixerOut(c, u, B, T);
    };
    expect(maxAbsDiff(withDtW(w, 1), withDtW(w, 2))).toBeGreaterThan(1e-3);
    const wdt = zeroRows(w, OFF.dt, R);
    expect(maxAbsDiff(withDtW(wdt, 1), withDtW(wdt, 2))).toBe(0);
  });

  it('(c) x and B repeat d_state-wide groups: source group j feeds output groups j·r .. j·r+r-1', () => {
    // observe pre-conv x through the conv state and B through the SSM state left by a prefill
    const prefill = (w: Weights): { conv: Float32Array; ssm: Float32Array } => {
      const m = new Mamba1Mixer(be, dims, source(w));
      const state = m.allocateState({ slots: B, kvBlocks: 0, blockSize: 1 });
      m.forward(be.wrap(u, [B, T, Dm]), plainSeqInfo(B, T), {
        needBackward: false, state, stateWrite: { slots: Int32Array.from([0, 1]), slotMapping: new Int32Array(B * T) },
      });
      const s = mamba1State(state);
      return { conv: be.read(s.convState), ssm: be.read(s.ssmState) };
    };
    const w = makeWeights(1003);
    const base = prefill(w);
    const perturbRows = (from: number): Weights => {
      const c = new Map([...w].map(([k, v]) => [k, v.slice()]));
      const win = c.get('in_proj.weight')!;
      for (let i = from * Dm; i < (from + N) * Dm; i++) win[i]! += 0.5;
      return c;
    };
    const groupOne = range(1 * rep * N, 2 * rep * N); // channels 8..15 (a tiled repeat would give 4..7, 12..15)
    const px = prefill(perturbRows(OFF.x + 1 * N));
    expect(changedChannels(base.conv, px.conv, Di, K - 1)).toEqual(groupOne);
    const pb = prefill(perturbRows(OFF.b + 1 * N));
    expect(maxAbsDiff(base.conv, pb.conv)).toBe(0); // B does not reach the conv
    expect(changedChannels(base.ssm, pb.ssm, Di, N)).toEqual(groupOne);
  });

  it('(d) grouped C: channel c reads C group ⌊c/d_state⌋', () => {
    // out_proj = I, so output channel c is the scan's channel c
    const w = makeWeights(1004);
    const eye = new Float32Array(Dm * Di);
    for (let i = 0; i < Di; i++) eye[i * Di + i] = 1;
    w.set('out_proj.weight', eye);
    const base = mixerOut(w, u, B, T);
    for (const g of [1, 3]) {
      const c = new Map(w);
      const win = w.get('in_proj.weight')!.slice();
      for (let i = (OFF.c + g * N) * Dm; i < (OFF.c + (g + 1) * N) * Dm; i++) win[i]! += 0.5;
      c.set('in_proj.weight', win);
      expect(changedChannels(base, mixerOut(c, u, B, T), Dm)).toEqual(range(g * N, (g + 1) * N));
    }
  });

  it('(e) the conv runs on x only; B and C enter the scan unconvolved', () => {
    // every channel's taps = [0, 0, 1, 0], bias 0: x̄_t = silu(x_{t-1}), a visible one-step shift
    const w = makeWeights(1005);
    const taps = w.get('conv1d.weight')!;
    for (let c = 0; c < Di; c++) taps.set([0, 0, 1, 0], c * K);
    w.get('conv1d.bias')!.fill(0);
    const out = mixerOut(w, u, B, T);
    expect(maxAbsDiff(out, naiveMixer(w, u, B, T, { dtBiasTimes: 2 }))).toBeLessThan(1e-5);
    expect(maxAbsDiff(out, naiveMixer(w, u, B, T, { dtBiasTimes: 2, convBC: true }))).toBeGreaterThan(1e-2);
  });

  it('(f) no norm before out_proj: with D = 0, scaling the C rows by 3 scales the output by 3', () => {
    const w = makeWeights(1006);
    w.set('D', new Float32Array(Di));
    const base = mixerOut(w, u, B, T);
    const win = w.get('in_proj.weight')!;
    for (let i = OFF.c * Dm; i < (OFF.c + Di) * Dm; i++) win[i]! *= 3;
    const scaled = mixerOut(w, u, B, T);
    expect(maxAbs(base)).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(scaled, base.map((v) => 3 * v))).toBeLessThan(1e-5);
  });
});

describe('mamba1DecodeStep (the op between the decode projections)', () => {
  const be = new CpuBackend();
  it('names the tensor whose shape is wrong', () => {
    const dims = { dInner: 8, dXb: 4, dState: 4, dtRank: 2 };
    const args = {
      proj: be.zeros([3, 2 * 8 + 2 * 4 + 2]), deltaLow: be.zeros([3, 8]), dims, convState: be.zeros([2, 8, 3]), convWeight: be.zeros([8, 4]),
      convBias: null, aLog: be.zeros([8, 4]), D: be.zeros([8]), dtBias: be.zeros([8]), ssmState: be.zeros([2, 8, 4]), slots: Int32Array.from([0, 1, 0]),
    };
    expect(be.mamba1DecodeStep(args).shape).toEqual([3, 8]);
    expect(() => be.mamba1DecodeStep({ ...args, proj: be.zeros([3, 25]) })).toThrow(/mamba1DecodeStep: proj must be \[n, 26\]/);
    expect(() => be.mamba1DecodeStep({ ...args, deltaLow: be.zeros([3, 4]) })).toThrow(/mamba1DecodeStep: deltaLow must be \[3, 8\]/);
    expect(() => be.mamba1DecodeStep({ ...args, aLog: be.zeros([4, 8]) })).toThrow(/mamba1DecodeStep: aLog \(A_log\) must be \[8, 4\], got \[4, 8\]/);
  });
});
