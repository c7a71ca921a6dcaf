import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { readFileSync } from 'node:fs';
import { matmulNT, transpose2d } from '../src/backend/cpu/matmul.js';
import { attentionBackwardTasks, attentionForwardTasks } from '../src/backend/cpu/attention-kernels.js';
import { matmulNTParallel, runTasksParallel } from '../src/backend/cpu/parallel.js';
import { selectiveScanBackwardTasks, selectiveScanForwardTasks } from '../src/backend/cpu/scan-kernels.js';
import { wasmMatmul } from '../src/backend/cpu/wasm/matmul-wasm.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, roundToDType } from '../src/backend/dtype.js';
import { dot, gradCheck, maxAbsDiff, randomArray, randomWeights } from './util/gradcheck.js';

const be = new CpuBackend();

function naiveMatmul(a: Float32Array, b: Float32Array, M: number, N: number, K: number, transA: boolean, transB: boolean): Float64Array {
  const c = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (transA ? a[k * M + m]! : a[m * K + k]!) * (transB ? b[n * K + k]! : b[k * N + n]!);
      c[m * N + n] = s;
    }
  }
  return c;
}

describe('matmul', () => {
  // sizes straddle the 4×4 register tile and the K/N blocks (256, 64)
  it.each([[1, 1, 1], [3, 5, 7], [9, 70, 300], [17, 66, 257]])('M=%i N=%i K=%i, every transpose', (M, N, K) => {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = randomArray(M * K, 1);
        const b = randomArray(N * K, 2);
        const ta = be.fromArray(a, transA ? [K, M] : [M, K]);
        const tb = be.fromArray(b, transB ? [N, K] : [K, N]);
        const c = be.read(be.matmul(ta, tb, { transA, transB }));
        const ref = naiveMatmul(a, b, M, N, K, transA, transB);
        expect(maxAbsDiff(c, ref), `transA=${transA} transB=${transB}`).toBeLessThan(1e-3);
      }
    }
  });

  it('accumulates into an existing tensor and keeps leading dims', () => {
    const x = be.fromArray(randomArray(2 * 3 * 4, 3), [2, 3, 4]);
    const w = be.fromArray(randomArray(5 * 4, 4), [5, 4]);
    const y = be.matmul(x, w, { transB: true });
    expect(y.shape).toEqual([2, 3, 5]);
    const acc = be.fromArray(new Float32Array(30).fill(1), [6, 5]);
    be.matmul(be.reshape(x, [6, 4]), w, { transB: true, accumulateInto: acc });
    const yv = be.read(y), av = be.read(acc);
    expect(maxAbsDiff(av, yv.map((v) => v + 1))).toBeLessThan(1e-6);
  });

  it('writeInto: the product written over an f32 tensor (old values not read), returned; bad combinations name the option', () => {
    const x = be.fromArray(randomArray(2 * 3 * 4, 3), [2, 3, 4]);
    const w = be.fromArray(randomArray(5 * 4, 4), [5, 4]);
    const y = be.read(be.matmul(x, w, { transB: true }));
    const target = be.fromArray(new Float32Array(30).fill(7), [6, 5]);
    const r = be.matmul(be.reshape(x, [6, 4]), w, { transB: true, writeInto: target });
    expect(r).toBe(target);
    expect(Array.from(be.read(target))).toEqual(Array.from(y));
    expect(() => be.matmul(x, w, { transB: true, writeInto: be.zeros([6, 5]), accumulateInto: be.zeros([6, 5]) })).toThrow(/matmul: accumulateInto and writeInto cannot be combined/);
    expect(() => be.matmul(x, w, { transB: true, writeInto: be.zeros([6, 5]), outDType: 'bf16' })).toThrow(/matmul: outDType bf16 cannot be combined with writeInto/);
    expect(() => be.matmul(x, w, { transB: true, writeInto: be.zeros([6, 4]) })).toThrow(/matmul: writeInto has shape \[6, 4\], product is \[6, 5\]/);
    expect(() => be.matmul(x, w, { transB: true, writeInto: be.zeros([6, 5], 'bf16') })).toThrow(/matmul: writeInto must be f32, got bf16/);
  });

  it('sliceLastDim: a column range copied in the input\'s dtype; a bad range names the op', () => {
    const t = be.fromArray(Float32Array.from({ length: 12 }, (_, i) => i), [2, 2, 3], 'bf16');
    const s = be.sliceLastDim(t, 1, 3);
    expect(s.shape).toEqual([2, 2, 2]);
    expect(s.dtype).toBe('bf16');
    expect(Array.from(be.read(s))).toEqual([1, 2, 4, 5, 7, 8, 10, 11]);
    expect(be.sliceLastDim(t, 2, 2).shape).toEqual([2, 2, 0]);
    expect(() => be.sliceLastDim(t, 2, 4)).toThrow(/sliceLastDim: columns \[2, 4\) are not a range inside the last dimension 3/);
    expect(be.splitLastDim(t, [1, 2])[1]!.dtype).toBe('bf16');
  });

  it('concatLastDim keeps a dtype its inputs share (bf16 pools grow as bf16), else gives f32', () => {
    const a = be.fromArray(Float32Array.from([1.5, 2.25, 3, 4]), [2, 2], 'bf16'), b = be.fromArray(Float32Array.from([5, 6]), [2, 1], 'bf16');
    const c = be.concatLastDim([a, b]);
    expect(c.dtype).toBe('bf16');
    expect(Array.from(be.read(c))).toEqual([1.5, 2.25, 5, 3, 4, 6]);
    expect(be.concatLastDim([a, be.fromArray(Float32Array.from([7, 8]), [2, 1])]).dtype).toBe('f32');
  });

  it('outDType bf16: the f32 product rounded to bf16 as stored; refused with accumulateInto or an unknown dtype', () => {
    const x = be.fromArray(randomArray(3 * 8, 7), [3, 8]);
    const w = be.fromArray(randomArray(5 * 8, 8), [5, 8]);
    const f = be.read(be.matmul(x, w, { transB: true }));
    const b = be.matmul(x, w, { transB: true, outDType: 'bf16' });
    expect(b.dtype).toBe('bf16');
    expect(b.shape).toEqual([3, 5]);
    const rounded = f.slice();
    roundToDType(rounded, 'bf16');
    expect(Array.from(be.read(b))).toEqual(Array.from(rounded));
    expect(maxAbsDiff(rounded, f)).toBeGreaterThan(0);
    expect(() => be.matmul(x, w, { transB: true, outDType: 'bf16', accumulateInto: be.zeros([3, 5]) })).toThrow(/matmul: outDType bf16 cannot be combined with accumulateInto/);
    expect(() => be.matmul(x, w, { transB: true, outDType: 'f16' })).toThrow(/matmul: outDType must be f32 or bf16, got f16/);
  });

  it('rowSlice: a view of rows that matmul reads and accumulates into; bad ranges name the op', () => {
    const w = be.fromArray(randomArray(7 * 4, 5), [7, 4]);
    const v = be.rowSlice(w, 2, 5);
    expect(v.shape).toEqual([3, 4]);
    expect(Array.from(be.read(v))).toEqual(Array.from(be.read(w)).slice(8, 20));
    const x = be.fromArray(randomArray(2 * 4, 6), [2, 4]);
    const full = be.read(be.matmul(x, w, { transB: true })); // [2, 7]
    const part = be.read(be.matmul(x, v, { transB: true })); // [2, 3]
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) expect(part[i * 3 + j]).toBe(full[i * 7 + 2 + j]);
    const g = be.zeros([7, 4]);
    be.matmul(be.fromArray(new Float32Array(6).fill(1), [2, 3]), x, { transA: true, accumulateInto: be.rowSlice(g, 4, 7) });
    const gv = be.read(g), xv = be.read(x);
    for (let r = 0; r < 7; r++) for (let c = 0; c < 4; c++) expect(gv[r * 4 + c]).toBeCloseTo(r >= 4 ? xv[c]! + xv[4 + c]! : 0, 6);
    expect(() => be.rowSlice(w, 5, 8)).toThrow(/rowSlice: rows \[5, 8\) are not a range inside the 7 rows/);
    expect(() => be.rowSlice(w, 3, 2)).toThrow(/rowSlice/);
  });

  it('the worker-thread matmul is bit-identical to the single-threaded kernel (WebAssembly and JavaScript paths)', () => {
    const M = 70, N = 260, K = 300; // ≥ 4M multiply-adds: takes the worker path when threads > 1
    const a = randomArray(M * K, 12), bt = randomArray(N * K, 13);
    const mm = wasmMatmul();
    expect(mm, 'WebAssembly SIMD is available on Node.js 20').not.toBeNull();
    const ref = new Float32Array(M * N);
    mm!(a, transpose2d(bt, N, K), ref, M, N, K, false);
    const c = be.read(be.matmul(be.fromArray(a, [M, K]), be.fromArray(bt, [N, K]), { transB: true }));
    expect(Buffer.compare(Buffer.from(c.buffer), Buffer.from(ref.buffer))).toBe(0);
    const acc = be.fromArray(new Float32Array(M * N).fill(0.5), [M, N]);
    be.matmul(be.fromArray(a, [M, K]), be.fromArray(bt, [N, K]), { transB: true, accumulateInto: acc });
    const refAcc = new Float32Array(M * N).fill(0.5);
    mm!(a, transpose2d(bt, N, K), refAcc, M, N, K, true);
    expect(maxAbsDiff(be.read(acc), refAcc)).toBe(0);
    // the JavaScript kernel (no WebAssembly, or products over 1 GiB) on the pool vs on this thread
    const js = new Float32Array(M * N), jsRef = new Float32Array(M * N);
    matmulNTParallel(a, bt, js, M, N, K, false);
    matmulNT(a, bt, jsRef, M, N, K, false);
    expect(Buffer.compare(Buffer.from(js.buffer), Buffer.from(jsRef.buffer))).toBe(0);
  });

  it('attention and selective scan split over worker threads are bit-identical to one thread', () => {
    const same = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
      expect(a.length, what).toBe(b.length);
      for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) expect(`${what}[${i}] = ${a[i]}`).toBe(`${b[i]}`);
    };
    // attention: B 5 rows × T 96, 4 q heads over 2 kv heads, Dh 16, packed segments (≥ 4M multiply-adds: the pool)
    const B = 5, T = 96, Hq = 4, Hkv = 2, Dh = 16;
    const q = randomArray(B * T * Hq * Dh, 21), k = randomArray(B * T * Hkv * Dh, 22), v = randomArray(B * T * Hkv * Dh, 23);
    const seg = Int32Array.from({ length: B * T }, (_, i) => Math.floor((i % T) / 40));
    const fwd = () => ({ out: new Float32Array(q.length), lse: new Float32Array(B * Hq * T) });
    const a = fwd(), b = fwd();
    runTasksParallel('attentionForwardTasks', [q, k, v, a.out, a.lse, seg], [3, 4], [T, Hq, Hkv, Dh, 0.25], B * Hkv, 1 << 30);
    attentionForwardTasks(q, k, v, b.out, b.lse, seg, T, Hq, Hkv, Dh, 0.25, 0, B * Hkv);
    same(a.out, b.out, 'attention out');
    same(a.lse, b.lse, 'attention lse');
    const dout = randomArray(q.length, 24);
    const bwd = () => ({ dq: new Float32Array(q.length), dk: new Float32Array(k.length), dv: new Float32Array(v.length) });
    const c = bwd(), d = bwd();
    runTasksParallel('attentionBackwardTasks', [q, k, v, a.out, dout, a.lse, seg, c.dq, c.dk, c.dv], [7, 8, 9], [T, Hq, Hkv, Dh, 0.25], B * Hkv, 1 << 30);
    attentionBackwardTasks(q, k, v, a.out, dout, a.lse, seg, d.dq, d.dk, d.dv, T, Hq, Hkv, Dh, 0.25, 0, B * Hkv);
    same(c.dq, d.dq, 'attention dq');
    same(c.dk, d.dk, 'attention dk');
    same(c.dv, d.dv, 'attention dv');
    // selective scan: 5 rows × T 40, Di 24 in 3 groups, N 4, with D, z, delta bias and segments
    const Ts = 40, Di = 24, N = 4, G = 3;
    const x = randomArray(B * Ts * Di, 31), delta = randomArray(B * Ts * Di, 32), A = randomArray(Di * N, 33).map((e) => -Math.abs(e));
    const Bm = randomArray(B * Ts * G * N, 34), Cm = randomArray(B * Ts * G * N, 35), D = randomArray(Di, 36), z = randomArray(B * Ts * Di, 37);
    const db = randomArray(Di, 38), dy = randomArray(B * Ts * Di, 39), sseg = Int32Array.from({ length: B * Ts }, (_, i) => (i % Ts < 17 ? 0 : 1));
    const y1 = new Float32Array(x.length), y2 = new Float32Array(x.length), none = new Float32Array(0), noSlots = new Int32Array(0);
    runTasksParallel('selectiveScanForwardTasks', [x, delta, A, Bm, Cm, D, z, db, sseg, y1, none, noSlots], [9], [Ts, Di, N, G], B, 1 << 30);
    selectiveScanForwardTasks(x, delta, A, Bm, Cm, D, z, db, sseg, y2, none, noSlots, Ts, Di, N, G, 0, B);
    same(y1, y2, 'scan y');
    const grads = () => [new Float32Array(x.length), new Float32Array(x.length), new Float32Array(x.length), new Float64Array(Bm.length),
      new Float64Array(Bm.length), new Float64Array(B * Di * N), new Float64Array(B * Di), new Float64Array(B * Di)] as const;
    const g1 = grads(), g2 = grads();
    runTasksParallel('selectiveScanBackwardTasks', [x, delta, A, Bm, Cm, D, z, db, dy, sseg, ...g1], [10, 11, 12, 13, 14, 15, 16, 17], [Ts, Di, N, G], B, 1 << 30);
    selectiveScanBackwardTasks(x, delta, A, Bm, Cm, D, z, db, dy, sseg, ...g2, Ts, Di, N, G, 0, B);
    g1.forEach((arr, i) => same(arr, g2[i]!, `scan gradient ${i}`));
  });

  it('the WebAssembly kernel against an f64 reference: remainders of the 4×8 tiles, accumulate, K = 1', () => {
    const mm = wasmMatmul()!;
    for (const [M, N, K] of [[1, 1, 1], [3, 7, 5], [4, 8, 1], [9, 17, 33], [13, 8, 64], [4, 3, 2]] as const) {
      const a = randomArray(M * K, M + N), b = randomArray(K * N, K + 1), c0 = randomArray(M * N, 7);
      for (const accumulate of [false, true]) {
        const c = Float32Array.from(c0);
        mm(a, b, c, M, N, K, accumulate);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            let s = accumulate ? c0[m * N + n]! : 0;
            for (let k = 0; k < K; k++) s += a[m * K + k]! * b[k * N + n]!;
            expect(Math.abs(c[m * N + n]! - s), `M ${M} N ${N} K ${K} acc ${accumulate} at (${m}, ${n})`).toBeLessThan(1e-5 * (1 + Math.abs(s)));
          }
        }
      }
    }
  });

  it('the committed WebAssembly module is the compiled matmul.wat (npm run build:wasm)', async () => {
    const { compileWat, moduleSource } = await import('../scripts/build-wasm.mjs');
    const bytes = await compileWat(new URL('../src/backend/cpu/wasm/matmul.wat', import.meta.url).pathname);
    const committed = readFileSync(new URL('../src/backend/cpu/wasm/matmul.wasm.ts', import.meta.url), 'utf8');
    expect(committed).toBe(moduleSource('matmul', bytes));
  });

  it('rejects mismatched inner dimensions with both shapes in the message', () => {
    expect(() => be.matmul(be.zeros([2, 3]), be.zeros([4, 5]))).toThrow(/inner dimensions differ: a \[2, 3\] · b \[4, 5\]/);
  });
});

describe('layer ops: forward against hand formulas, backward against finite differences', () => {
  it('rmsNorm', () => {
    const D = 8;
    const x = randomArray(3 * D, 5), w = randomArray(D, 6);
    const { y } = be.rmsNorm(be.fromArray(x, [3, D]), be.fromArray(w, [D]), 1e-5);
    const yv = be.read(y);
    const ms = x.slice(0, D).reduce((s, v) => s + v * v, 0) / D;
    expect(yv[2]).toBeCloseTo((x[2]! / Math.sqrt(ms + 1e-5)) * w[2]!, 5);
    const g = randomWeights(3 * D);
    const loss = () => dot(be.read(be.rmsNorm(be.fromArray(x, [3, D]), be.fromArray(w, [D]), 1e-5).y), g);
    const xt = be.fromArray(x, [3, D]), wt = be.fromArray(w, [D]);
    const r = be.rmsNorm(xt, wt, 1e-5);
    const { dx, dw } = be.rmsNormBackward(be.fromArray(g, [3, D]), xt, wt, r.rstd);
    gradCheck({ name: 'rmsNorm', inputs: [x, w], analytic: [be.read(dx), be.read(dw)], loss });
    // residual: added to dx as it is stored — the same sums as addInPlace after, bit for bit; dw unchanged
    const res = be.fromArray(randomArray(3 * D, 9), [3, D]);
    const withRes = be.rmsNormBackward(be.fromArray(g, [3, D]), xt, wt, r.rstd, res);
    const after = be.rmsNormBackward(be.fromArray(g, [3, D]), xt, wt, r.rstd).dx;
    be.addInPlace(after, res);
    expect(Array.from(be.read(withRes.dx))).toEqual(Array.from(be.read(after)));
    expect(Array.from(be.read(withRes.dw))).toEqual(Array.from(be.read(dw)));
    expect(() => be.rmsNormBackward(be.fromArray(g, [3, D]), xt, wt, r.rstd, be.zeros([2, D]))).toThrow(/rmsNormBackward: residual \[2, \d+\] does not match x/);
  });

  it('swiglu', () => {
    const a = randomArray(20, 7), b = randomArray(20, 8), g = randomWeights(20);
    const h = be.read(be.swiglu(be.fromArray(a, [20]), be.fromArray(b, [20])));
    expect(h[3]).toBeCloseTo((a[3]! / (1 + Math.exp(-a[3]!))) * b[3]!, 6);
    const { dGate, dUp } = be.swigluBackward(be.fromArray(g, [20]), be.fromArray(a, [20]), be.fromArray(b, [20]));
    gradCheck({ name: 'swiglu', inputs: [a, b], analytic: [be.read(dGate), be.read(dUp)], loss: () => dot(be.read(be.swiglu(be.fromArray(a, [20]), be.fromArray(b, [20]))), g) });
  });

  it('embedding backward accumulates repeated ids', () => {
    const table = be.fromArray(randomArray(5 * 3, 9), [5, 3]);
    const ids = Int32Array.of(1, 4, 1);
    expect(be.read(be.embedding(table, ids)).slice(0, 3)).toEqual(be.read(table).slice(3, 6));
    const d = be.zeros([5, 3]);
    be.embeddingBackward(d, ids, be.fromArray([1, 1, 1, 2, 2, 2, 10, 10, 10], [3, 3]));
    expect([...be.read(d)]).toEqual([0, 0, 0, 11, 11, 11, 0, 0, 0, 0, 0, 0, 2, 2, 2]);
    expect(() => be.embedding(table, Int32Array.of(5))).toThrow(/token id 5 at position 0 is outside the vocabulary \[0, 5\)/);
  });

  it('crossEntropy with a mask: loss by hand and gradient by finite differences', () => {
    const V = 6, n = 4;
    const x = randomArray(n * V, 10);
    const targets = Int32Array.of(0, 5, 2, 3);
    const mask = Uint8Array.of(1, 0, 1, 1);
    const r = be.crossEntropy(be.fromArray(x, [n, V]), targets, mask);
    let ref = 0;
    for (const i of [0, 2, 3]) {
      const row = x.slice(i * V, (i + 1) * V);
      const lse = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
      ref += lse - row[targets[i]!]!;
    }
    expect(r.loss).toBeCloseTo(ref / 3, 5);
    gradCheck({ name: 'crossEntropy', inputs: [x], analytic: [be.read(r.dlogits)], loss: () => be.crossEntropy(be.fromArray(x, [n, V]), targets, mask).loss });
    const lp = be.gatherLogprobs(be.fromArray(x, [n, V]), targets);
    const ls = be.read(be.logSoftmax(be.fromArray(x, [n, V])));
    expect(lp[1]).toBeCloseTo(ls[V + 5]!, 6);
  });

  it('repeatGroups reads source group ⌊g/r⌋ and its backward sums the copies', () => {
    const x = be.fromArray([1, 2, 3, 4], [1, 4]); // two groups of width 2
    expect([...be.read(be.repeatGroups(x, 2, 3))]).toEqual([1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]);
    const dy = be.fromArray([1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6], [1, 12]);
    expect([...be.read(be.repeatGroupsBackward(dy, 2, 3))]).toEqual([6, 6, 15, 15]);
  });

  it('negExp, mul, addBias, sumRows', () => {
    const a = be.fromArray([0, Math.log(2), -1, 1], [2, 2]);
    expect([...be.read(be.negExp(a))].map((v) => +v.toFixed(6))).toEqual([-1, -2, +(-Math.exp(-1)).toFixed(6), +(-Math.E).toFixed(6)]);
    expect([...be.read(be.mul(a, be.fromArray([2, 2, 2, 2], [2, 2])))].map((v) => +v.toFixed(6))).toEqual([0, +(2 * Math.log(2)).toFixed(6), -2, 2]);
    expect([...be.read(be.addBias(be.fromArray([1, 2, 3, 4], [2, 2]), be.fromArray([10, 20], [2])))]).toEqual([11, 22, 13, 24]);
    expect([...be.read(be.sumRows(be.fromArray([1, 2, 3, 4, 5, 6], [3, 2])))]).toEqual([9, 12]);
  });

  it('split / concat on the last dim are inverse', () => {
    const x = be.fromArray(randomArray(3 * 7, 11), [3, 7]);
    const parts = be.splitLastDim(x, [2, 4, 1]);
    expect(parts.map((p) => p.shape)).toEqual([[3, 2], [3, 4], [3, 1]]);
    expect(maxAbsDiff(be.read(be.concatLastDim(parts)), be.read(x))).toBe(0);
    expect(() => be.splitLastDim(x, [2, 2])).toThrow(/sizes sum to 4, last dimension is 7/);
  });
});

describe('storage dtypes', () => {
  it('bf16: round-to-nearest-even and exact round trip', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-2)).toBe(0xc000);
    // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even → 1
    expect(bf16BitsToF32(f32ToBf16Bits(1 + 2 ** -8))).toBe(1);
    // 1 + 3·2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even) → 1 + 2^-6
    expect(bf16BitsToF32(f32ToBf16Bits(1 + 3 * 2 ** -8))).toBe(1 + 2 ** -6);
    for (let bits = 0; bits < 0x10000; bits += 7) {
      const v = bf16BitsToF32(bits);
      if (Number.isNaN(v)) continue;
      expect(f32ToBf16Bits(v)).toBe(bits);
    }
    const t = be.fromArray([1.00390625, 3.14159], [2], 'bf16');
    expect([...be.read(t)]).toEqual([1, bf16BitsToF32(f32ToBf16Bits(3.14159))]);
  });

  it('f16: round trip of every finite value, overflow to infinity', () => {
    for (let bits = 0; bits < 0x7c00; bits++) expect(f32ToF16Bits(f16BitsToF32(bits))).toBe(bits);
    expect(f16BitsToF32(f32ToF16Bits(70000))).toBe(Infinity);
    expect(f16BitsToF32(f32ToF16Bits(1e-8))).toBe(0);
  });
});

describe('createBackend', () => {
  it('takes --matmul-precision by name (the cpu backend computes f32 whatever it is) and names the flag on a bad value', async () => {
    const { createBackend } = await import('../src/backend/registry.js');
    for (const p of ['highest', 'high', 'medium']) expect((await createBackend('cpu', { matmulPrecision: p })).name).toBe('cpu');
    await expect(createBackend('cpu', { matmulPrecision: 'low' })).rejects.toThrow(/--matmul-precision must be one of highest, high, medium; got "low"/);
    await expect(createBackend('tpu')).rejects.toThrow(/--backend must be one of cpu, cuda/);
  });
});
