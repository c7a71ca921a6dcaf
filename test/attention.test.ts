import { describe, expect, it } from 'vitest';
import { CpuBackend, dataOf } from '../src/backend/cpu/index.js';
import type { Tensor } from '../src/backend/tensor.js';
import { AttentionMixer, attentionParamSpecs, type AttentionDims } from '../src/model/attention.js';
import { ropeInvFreq } from '../src/model/config.js';
import type { DecodeInfo, LayerState, SeqInfo, WeightSource } from '../src/model/module.js';
import { plainSeqInfo } from '../src/model/module.js';
import { Rng } from '../src/util/rng.js';
import { dot, gradCheck, maxAbsDiff, randomArray, randomWeights } from './util/gradcheck.js';

const be = new CpuBackend();

// ---------- naive references (f64, straight from the definitions) ----------

/** rotate the pair (x[i], x[i+Dh/2]) as the complex number x[i] + i·x[i+Dh/2] by e^{±iθ} */
function naiveRope(x: Float32Array, n: number, H: number, Dh: number, positions: Int32Array, invFreq: Float32Array): Float64Array {
  const half = Dh / 2;
  const out = new Float64Array(x.length);
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < half; i++) {
        const theta = Math.fround(positions[t]! * invFreq[i]!);
        const re = x[(t * H + h) * Dh + i]!, im = x[(t * H + h) * Dh + i + half]!;
        out[(t * H + h) * Dh + i] = re * Math.cos(theta) - im * Math.sin(theta);
        out[(t * H + h) * Dh + i + half] = re * Math.sin(theta) + im * Math.cos(theta);
      }
    }
  }
  return out;
}

/** full masked score matrix per (b, h), softmax, P·V; also returns lse [B, Hq, T] */
function naiveAttention(
  q: Float32Array, k: Float32Array, v: Float32Array,
  B: number, T: number, Hq: number, Hkv: number, Dh: number, scale: number, segments?: Int32Array,
): { out: Float64Array; lse: Float64Array } {
  const out = new Float64Array(B * T * Hq * Dh);
  const lse = new Float64Array(B * Hq * T);
  const rep = Hq / Hkv;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / rep);
      for (let t = 0; t < T; t++) {
        const s = new Float64Array(T).fill(-Infinity);
        for (let j = 0; j < T; j++) {
          const allowed = j <= t && (!segments || segments[b * T + j] === segments[b * T + t]);
          if (!allowed) continue;
          let d = 0;
          for (let i = 0; i < Dh; i++) d += q[((b * T + t) * Hq + h) * Dh + i]! * k[((b * T + j) * Hkv + g) * Dh + i]!;
          s[j] = scale * d;
        }
        const m = Math.max(...s);
        let z = 0;
        for (let j = 0; j < T; j++) z += Math.exp(s[j]! - m);
        lse[(b * Hq + h) * T + t] = m + Math.log(z);
        for (let j = 0; j < T; j++) {
          const p = Math.exp(s[j]! - m) / z;
          for (let i = 0; i < Dh; i++) out[((b * T + t) * Hq + h) * Dh + i] += p * v[((b * T + j) * Hkv + g) * Dh + i]!;
        }
      }
    }
  }
  return { out, lse };
}

// ---------- helpers ----------

function randomWeightSource(seed: number, scale: number): WeightSource {
  const rng = new Rng(seed);
  return (_key, shape) => be.wrap(randomArray(shape.reduce((a, b) => a * b, 1), rng.nextU32(), scale), shape);
}

function mixerDims(layout: 'llama' | 'm1', headDim = 4): AttentionDims {
  return { hidden: 8, numHeads: 4, numKvHeads: 2, headDim, invFreq: ropeInvFreq(headDim, 10000, null), layout };
}

/** rows [t0, t1) of [1, T, D] data as a new [1, t1−t0, D] tensor */
function sliceRows(u: Float32Array, D: number, t0: number, t1: number): Tensor {
  return be.wrap(u.slice(t0 * D, t1 * D), [1, t1 - t0, D]);
}

// ---------- tests ----------

describe('ropeInvFreq', () => {
  it('plain theta: θ^(−2i/Dh)', () => {
    const inv = ropeInvFreq(8, 10000, null);
    expect(Array.from(inv)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
    const m1 = ropeInvFreq(128, 500000, null);
    expect(m1.length).toBe(64);
    expect(m1[10]!).toBe(Math.fround(Math.pow(500000, -20 / 128)));
  });

  it('llama3 scaling matches HF _compute_llama3_parameters (Llama-3.2 config)', () => {
    const scaling = { type: 'llama3' as const, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const inv = ropeInvFreq(128, 500000, scaling);
    // independent transcription of the HF code
    const lowWavelen = 8192 / 1, highWavelen = 8192 / 4;
    let nHigh = 0, nLow = 0, nMid = 0;
    for (let i = 0; i < 64; i++) {
      const f = 1 / Math.pow(500000, (2 * i) / 128);
      const wavelen = (2 * Math.PI) / f;
      let expected: number;
      if (wavelen < highWavelen) { expected = f; nHigh++; }
      else if (wavelen > lowWavelen) { expected = f / 32; nLow++; }
      else {
        const smooth = (8192 / wavelen - 1) / (4 - 1);
        expected = (1 - smooth) * f / 32 + smooth * f;
        nMid++;
      }
      expect(Math.abs(inv[i]! - expected) / expected, `inv_freq[${i}]`).toBeLessThan(1e-6);
    }
    expect(nHigh).toBeGreaterThan(0);
    expect(nLow).toBeGreaterThan(0);
    expect(nMid).toBeGreaterThan(0);
    expect(inv[0]).toBe(1); // highest frequency untouched
    expect(inv[63]! / (1 / Math.pow(500000, 126 / 128))).toBeCloseTo(1 / 32, 7); // lowest divided by the factor
    // i = 31: wavelen ≈ 3.9k lies in the band, smoothed strictly between f/32 and f
    const f31 = 1 / Math.pow(500000, 62 / 128), w31 = 2 * Math.PI / f31;
    expect(w31).toBeGreaterThan(highWavelen);
    expect(w31).toBeLessThan(lowWavelen);
    expect(inv[31]!).toBeLessThan(f31 * 0.99);
    expect(inv[31]!).toBeGreaterThan(f31 / 32 * 1.01);
  });
});

describe('rope', () => {
  const n = 5, H = 3, Dh = 8;
  const invFreq = ropeInvFreq(Dh, 10000, null);
  const positions = Int32Array.from([0, 1, 7, 100, 3000]);
  const xData = randomArray(n * H * Dh, 1);

  it('matches a per-element complex-rotation reference', () => {
    const y = be.read(be.rope(be.fromArray(xData, [n, H, Dh]), positions, invFreq));
    expect(maxAbsDiff(y, naiveRope(xData, n, H, Dh, positions, invFreq))).toBeLessThan(1e-6);
    // position 0 is the identity; a known value at Dh = 2: (1, 0) at angle 1 → (cos 1, sin 1)
    expect(maxAbsDiff(y.subarray(0, H * Dh), xData.subarray(0, H * Dh))).toBe(0);
    const r = be.read(be.rope(be.fromArray([1, 0], [1, 1, 2]), Int32Array.from([1]), Float32Array.from([1])));
    expect(r[0]!).toBeCloseTo(Math.cos(1), 6);
    expect(r[1]!).toBeCloseTo(Math.sin(1), 6);
  });

  it('inverse undoes it and the rotation keeps norms', () => {
    const x = be.fromArray(xData, [n, H, Dh]);
    const y = be.rope(x, positions, invFreq);
    const back = be.read(be.rope(y, positions, invFreq, true));
    expect(maxAbsDiff(back, xData)).toBeLessThan(1e-5);
    const yd = dataOf(y);
    for (let r = 0; r < n * H; r++) {
      const row = (a: Float32Array) => Math.hypot(...a.subarray(r * Dh, r * Dh + Dh));
      expect(Math.abs(row(yd) - row(xData))).toBeLessThan(1e-5);
    }
  });

  it('accepts [B, T, H, Dh] and checks positions', () => {
    const a = be.read(be.rope(be.fromArray(xData.subarray(0, 4 * H * Dh), [2, 2, H, Dh]), positions.subarray(0, 4), invFreq));
    const b = be.read(be.rope(be.fromArray(xData.subarray(0, 4 * H * Dh), [4, H, Dh]), positions.subarray(0, 4), invFreq));
    expect(maxAbsDiff(a, b)).toBe(0);
    expect(() => be.rope(be.fromArray(xData, [n, H, Dh]), positions.subarray(0, 4), invFreq)).toThrow(/positions has 4 entries/);
  });
});

describe('attention op', () => {
  const B = 2, T = 6, Hq = 4, Hkv = 2, Dh = 8, scale = 1 / Math.sqrt(Dh);
  const qData = randomArray(B * T * Hq * Dh, 11), kData = randomArray(B * T * Hkv * Dh, 12), vData = randomArray(B * T * Hkv * Dh, 13);
  const segments = Int32Array.from([0, 0, 0, 1, 1, 1, /* row 1 */ 5, 5, 5, 5, 7, 7]);

  for (const seg of [undefined, segments]) {
    it(`forward equals the naive softmax reference (GQA 4/2, B=2${seg ? ', segments' : ''})`, () => {
      const { out, lse } = be.attention(be.wrap(qData, [B, T, Hq, Dh]), be.wrap(kData, [B, T, Hkv, Dh]), be.wrap(vData, [B, T, Hkv, Dh]), { scale, segments: seg });
      const ref = naiveAttention(qData, kData, vData, B, T, Hq, Hkv, Dh, scale, seg);
      expect(out.shape).toEqual([B, T, Hq, Dh]);
      expect(lse.shape).toEqual([B, Hq, T]);
      expect(maxAbsDiff(be.read(out), ref.out)).toBeLessThan(1e-5);
      expect(maxAbsDiff(be.read(lse), ref.lse)).toBeLessThan(1e-5);
    });
  }

  it('a packed row equals its sequences run separately', () => {
    const t0 = 4, t1 = 3, Tp = t0 + t1, row = Hq * Dh, krow = Hkv * Dh;
    const q = randomArray(Tp * row, 21), k = randomArray(Tp * krow, 22), v = randomArray(Tp * krow, 23);
    const seg = Int32Array.from([3, 3, 3, 3, 9, 9, 9]);
    const packed = be.read(be.attention(be.wrap(q, [1, Tp, Hq, Dh]), be.wrap(k, [1, Tp, Hkv, Dh]), be.wrap(v, [1, Tp, Hkv, Dh]), { scale, segments: seg }).out);
    const run = (a: number, b: number) => be.read(be.attention(
      be.wrap(q.slice(a * row, b * row), [1, b - a, Hq, Dh]), be.wrap(k.slice(a * krow, b * krow), [1, b - a, Hkv, Dh]),
      be.wrap(v.slice(a * krow, b * krow), [1, b - a, Hkv, Dh]), { scale }).out);
    const first = run(0, t0), second = run(t0, Tp);
    expect(maxAbsDiff(packed.subarray(0, t0 * row), first)).toBeLessThan(1e-6);
    expect(maxAbsDiff(packed.subarray(t0 * row), second)).toBeLessThan(1e-6);
  });

  for (const seg of [undefined, segments]) {
    it(`backward: dq, dk, dv match finite differences${seg ? ' (segments)' : ''}`, () => {
      const q = qData.slice(), k = kData.slice(), v = vData.slice();
      const qt = be.wrap(q, [B, T, Hq, Dh]), kt = be.wrap(k, [B, T, Hkv, Dh]), vt = be.wrap(v, [B, T, Hkv, Dh]);
      const w = randomWeights(q.length, 5);
      const loss = () => dot(w, be.read(be.attention(qt, kt, vt, { scale, segments: seg }).out));
      const { out, lse } = be.attention(qt, kt, vt, { scale, segments: seg });
      const g = be.attentionBackward(be.wrap(w, [B, T, Hq, Dh]), qt, kt, vt, out, lse, { scale, segments: seg });
      // tighter than the default: the op is smooth and small, so a 1% error in dS must show up
      gradCheck({ name: 'attention', inputs: [q, k, v], analytic: [be.read(g.dq), be.read(g.dk), be.read(g.dv)], loss, samples: 40, rtol: 2e-3, atol: 2e-4 });
    });
  }

  it('rejects mismatched shapes', () => {
    expect(() => be.attention(be.wrap(qData, [B, T, Hq, Dh]), be.wrap(kData, [B, T, Hkv, Dh]), be.zeros([B, T, Hkv, 4]), { scale }))
      .toThrow(/v \[2, 6, 2, 4\] must have the shape of k/);
    expect(() => be.attention(be.zeros([1, 2, 3, 4]), be.zeros([1, 2, 2, 4]), be.zeros([1, 2, 2, 4]), { scale }))
      .toThrow(/3 q heads are not a multiple of 2 kv heads/);
  });
});

describe('kv cache ops', () => {
  const Hkv = 2, Dh = 4;

  it('kvCacheWrite places rows at their slots and skips negative slots', () => {
    const kc = be.zeros([3, 2, Hkv, Dh]), vc = be.zeros([3, 2, Hkv, Dh]);
    const k = randomArray(3 * Hkv * Dh, 1), v = randomArray(3 * Hkv * Dh, 2);
    be.kvCacheWrite(kc, vc, be.wrap(k, [3, Hkv, Dh]), be.wrap(v, [3, Hkv, Dh]), Int32Array.from([5, -1, 2]));
    const row = Hkv * Dh, kd = be.read(kc), vd = be.read(vc);
    expect(Array.from(kd.subarray(5 * row, 6 * row))).toEqual(Array.from(k.subarray(0, row)));
    expect(Array.from(vd.subarray(2 * row, 3 * row))).toEqual(Array.from(v.subarray(2 * row, 3 * row)));
    // the skipped token wrote nothing: only slots 2 and 5 are non-zero
    for (let s = 0; s < 6; s++) {
      const nonzero = kd.subarray(s * row, s * row + row).some((x) => x !== 0);
      expect(nonzero, `slot ${s}`).toBe(s === 2 || s === 5);
    }
  });

  it('kvCacheWrite rejects a slot outside the cache', () => {
    const kc = be.zeros([3, 2, Hkv, Dh]), vc = be.zeros([3, 2, Hkv, Dh]);
    const k = be.zeros([2, Hkv, Dh]);
    expect(() => be.kvCacheWrite(kc, vc, k, k, Int32Array.from([0, 6])))
      .toThrow(/kvCacheWrite: slotMapping\[1\] = 6 is outside the cache \(3 blocks × 2 = 6 slots\)/);
    expect(() => be.kvCacheWrite(kc, vc, k, k, Int32Array.from([0]))).toThrow(/slotMapping has 1 entries, k has 2 tokens/);
    expect(() => be.kvCacheWrite(kc, vc, be.zeros([2, 1, Dh]), be.zeros([2, 1, Dh]), Int32Array.from([0, 1]))).toThrow(/does not match cache heads/);
  });

  it('pagedAttentionDecode rejects a block id outside the cache', () => {
    const kc = be.zeros([3, 2, Hkv, Dh]);
    expect(() => be.pagedAttentionDecode(be.zeros([1, 4, Dh]), kc, kc, Int32Array.from([0, 3]), 2, Int32Array.from([4]), 1))
      .toThrow(/blockTables\[1\] = 3 \(sequence 0, block 1\) is outside \[0, 3\)/);
  });
});

describe('AttentionMixer', () => {
  it('param specs: keys, shapes, init std 0.02', () => {
    const llama = attentionParamSpecs(mixerDims('llama'));
    expect(llama.map((s) => [s.key, s.shape])).toEqual([
      ['q_proj.weight', [16, 8]], ['k_proj.weight', [8, 8]], ['v_proj.weight', [8, 8]], ['o_proj.weight', [8, 16]],
    ]);
    const m1 = attentionParamSpecs({ ...mixerDims('m1'), hidden: 64, headDim: 32, invFreq: ropeInvFreq(32, 10000, null) });
    expect(m1.map((s) => [s.key, s.shape])).toEqual([['in_proj.weight', [256, 64]], ['out_proj.weight', [64, 128]]]);
    const w = m1[0]!.init(new Rng(1));
    expect(w.length).toBe(256 * 64);
    const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
    expect(std).toBeGreaterThan(0.019);
    expect(std).toBeLessThan(0.021);
    expect(m1.every((s) => s.decay)).toBe(true);
  });

  it('m1 in_proj rows [q | k | v] give the same layer as separate llama projections', () => {
    const dims = mixerDims('llama');
    const llama = new AttentionMixer(be, dims, randomWeightSource(3, 0.4));
    const p = new Map(llama.params().map(([k, v]) => [k, be.read(v.value)]));
    const inProj = Float32Array.from([...p.get('q_proj.weight')!, ...p.get('k_proj.weight')!, ...p.get('v_proj.weight')!]);
    const m1 = new AttentionMixer(be, { ...dims, layout: 'm1' }, (key, shape) =>
      be.wrap(key === 'in_proj.weight' ? inProj.slice() : p.get('o_proj.weight')!.slice(), shape));
    const seq = plainSeqInfo(2, 5);
    const u = be.wrap(randomArray(2 * 5 * 8, 4), [2, 5, 8]);
    const a = be.read(llama.forward(u, seq, { needBackward: false }).y);
    const b = be.read(m1.forward(u, seq, { needBackward: false }).y);
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-6);
    expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(1e-2);
  });

  it('a packed row equals its sequences run separately (positions restarting)', () => {
    const mixer = new AttentionMixer(be, mixerDims('m1'), randomWeightSource(7, 0.5));
    const D = 8, t0 = 4, t1 = 3;
    const u = randomArray((t0 + t1) * D, 8);
    const packedSeq: SeqInfo = { B: 1, T: t0 + t1, positions: Int32Array.from([0, 1, 2, 3, 0, 1, 2]), segments: Int32Array.from([0, 0, 0, 0, 1, 1, 1]) };
    const packed = be.read(mixer.forward(be.wrap(u, [1, t0 + t1, D]), packedSeq, { needBackward: false }).y);
    const first = be.read(mixer.forward(sliceRows(u, D, 0, t0), plainSeqInfo(1, t0), { needBackward: false }).y);
    const second = be.read(mixer.forward(sliceRows(u, D, t0, t0 + t1), plainSeqInfo(1, t1), { needBackward: false }).y);
    expect(maxAbsDiff(packed.subarray(0, t0 * D), first)).toBeLessThan(1e-6);
    expect(maxAbsDiff(packed.subarray(t0 * D), second)).toBeLessThan(1e-6);
  });

  for (const layout of ['llama', 'm1'] as const) {
    for (const packed of [false, true]) {
      it(`gradient check of du and every param (${layout}${packed ? ', segments' : ''})`, () => {
        const mixer = new AttentionMixer(be, mixerDims(layout), randomWeightSource(layout === 'm1' ? 31 : 32, 0.5));
        const B = 2, T = 5, D = 8;
        const seq: SeqInfo = packed
          ? { B, T, positions: Int32Array.from([0, 1, 2, 0, 1, 4, 5, 6, 7, 8]), segments: Int32Array.from([0, 0, 0, 1, 1, 2, 2, 2, 2, 2]) }
          : { B, T, positions: Int32Array.from([0, 1, 2, 3, 4, 10, 11, 12, 13, 14]) };
        const uData = randomArray(B * T * D, 33);
        const u = be.wrap(uData, [B, T, D]);
        const w = randomWeights(B * T * D, 34);
        const loss = () => dot(w, be.read(mixer.forward(u, seq, { needBackward: false }).y));
        const { saved } = mixer.forward(u, seq, { needBackward: true });
        const du = be.read(mixer.backward(be.wrap(w, [B, T, D]), saved));
        const params = mixer.params();
        gradCheck({
          name: `AttentionMixer ${layout}`,
          inputs: [uData, ...params.map(([, p]) => dataOf(p.value))],
          analytic: [du, ...params.map(([, p]) => be.read(p.grad!))],
          loss, samples: 30,
        });
      });
    }
  }

  it('backward without saved activations throws', () => {
    const mixer = new AttentionMixer(be, mixerDims('llama'), randomWeightSource(1, 0.3));
    const { saved } = mixer.forward(be.zeros([1, 2, 8]), plainSeqInfo(1, 2), { needBackward: false });
    expect(() => mixer.backward(be.zeros([1, 2, 8]), saved)).toThrow(/needBackward/);
  });

  // Two sequences of different lengths decoded together over a paged cache whose blocks are handed
  // out in reverse order, so a wrong block-table lookup or slot computation shows up as a mismatch.
  const blockSize = 4, kvBlocks = 8, maxBlocks = 3;
  const lens = [9, 6];
  const tables = [[7, 5, 3], [6, 4, 0]];
  const slotOf = (i: number, t: number) => tables[i]![Math.floor(t / blockSize)]! * blockSize + (t % blockSize);

  function parallelOutputs(mixer: AttentionMixer, us: Float32Array[], D: number): Float32Array[] {
    return us.map((u, i) => be.read(mixer.forward(be.wrap(u, [1, lens[i]!, D]), plainSeqInfo(1, lens[i]!), { needBackward: false }).y));
  }

  /** decode tokens [from, max len) of both sequences; a finished sequence rides along as padding */
  function decode(mixer: AttentionMixer, state: LayerState, us: Float32Array[], D: number, from: number, expected: Float32Array[]): number {
    let worst = 0;
    for (let t = from; t < Math.max(...lens); t++) {
      const active = lens.map((L) => t < L);
      const info: DecodeInfo = {
        n: 2,
        slots: Int32Array.from([0, 1]),
        positions: Int32Array.from(active.map((a) => (a ? t : 0))),
        slotMapping: Int32Array.from(active.map((a, i) => (a ? slotOf(i, t) : -1))),
        blockTables: Int32Array.from(tables.flat()),
        maxBlocks,
        seqLens: Int32Array.from(active.map((a) => (a ? t + 1 : 0))),
      };
      const x = new Float32Array(2 * D);
      active.forEach((a, i) => { if (a) x.set(us[i]!.subarray(t * D, t * D + D), i * D); });
      const y = be.read(mixer.step(be.wrap(x, [2, D]), state, info));
      active.forEach((a, i) => {
        if (a) worst = Math.max(worst, maxAbsDiff(y.subarray(i * D, i * D + D), expected[i]!.subarray(t * D, t * D + D)));
        else expect(Array.from(y.subarray(i * D, i * D + D)).every((v) => v === 0), 'padding row output').toBe(true);
      });
    }
    return worst;
  }

  for (const layout of ['llama', 'm1'] as const) {
    it(`step over a paged cache == parallel forward (${layout})`, () => {
      const D = 8;
      const mixer = new AttentionMixer(be, mixerDims(layout), randomWeightSource(41, 0.5));
      const us = lens.map((L, i) => randomArray(L * D, 50 + i));
      const expected = parallelOutputs(mixer, us, D);
      const state = mixer.allocateState({ slots: 2, kvBlocks, blockSize });
      expect(state.kind).toBe('attention');
      if (state.kind === 'attention') expect(state.kCache.shape).toEqual([kvBlocks, blockSize, 2, 4]);
      expect(decode(mixer, state, us, D, 0, expected)).toBeLessThan(1e-4);
    });

    it(`prefill with stateWrite, then step == parallel forward (${layout})`, () => {
      const D = 8, T0 = 5;
      const mixer = new AttentionMixer(be, mixerDims(layout), randomWeightSource(42, 0.5));
      const us = lens.map((L, i) => randomArray(L * D, 60 + i));
      const expected = parallelOutputs(mixer, us, D);
      const state = mixer.allocateState({ slots: 2, kvBlocks, blockSize });
      const prefill = new Float32Array(2 * T0 * D);
      us.forEach((u, i) => prefill.set(u.subarray(0, T0 * D), i * T0 * D));
      const slotMapping = Int32Array.from({ length: 2 * T0 }, (_, j) => slotOf(Math.floor(j / T0), j % T0));
      const y0 = be.read(mixer.forward(be.wrap(prefill, [2, T0, D]), plainSeqInfo(2, T0), {
        needBackward: false, state, stateWrite: { slots: Int32Array.from([0, 1]), slotMapping },
      }).y);
      for (let i = 0; i < 2; i++) {
        expect(maxAbsDiff(y0.subarray(i * T0 * D, (i + 1) * T0 * D), expected[i]!.subarray(0, T0 * D))).toBeLessThan(1e-5);
      }
      expect(decode(mixer, state, us, D, T0, expected)).toBeLessThan(1e-4);
    });
  }

  it('stateWrite without an attention state throws', () => {
    const mixer = new AttentionMixer(be, mixerDims('llama'), randomWeightSource(1, 0.3));
    const stateWrite = { slots: Int32Array.from([0]), slotMapping: Int32Array.from([0, 1]) };
    expect(() => mixer.forward(be.zeros([1, 2, 8]), plainSeqInfo(1, 2), { needBackward: false, stateWrite })).toThrow(/no attention state/);
    const wrong: LayerState = { kind: 'mamba1', convState: be.zeros([1]), ssmState: be.zeros([1]) };
    expect(() => mixer.forward(be.zeros([1, 2, 8]), plainSeqInfo(1, 2), { needBackward: false, state: wrong, stateWrite })).toThrow(/expected an attention state, got 'mamba1'/);
  });
});
