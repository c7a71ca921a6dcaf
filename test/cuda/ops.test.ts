// Every inference-path op of the CUDA backend against the CPU reference on the same random inputs.
// Tolerances (max error relative to the reference's largest magnitude): 1e-5 for elementwise/layout
// and row ops (f32 either side), 1e-4 for ops with long f32 sums on the GPU against f64 sums on the
// CPU (matmul K ≤ 96, attention, scans), 1e-2 for bf16 matmuls (activations rounded to bf16).
import { describe, expect, it } from 'vitest';
import type { Tensor } from '../../src/backend/tensor.js';
import { available, closeArrays, cpu, expectClose, gpu, ints, misaligned, rand, skipReason, uniform, type Pair } from './helpers.js';

describe.skipIf(!available)(`cuda ops vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const g = gpu!;

  it('memory: fromArray/read/write round trips, bf16 rounding, reshape views, copy, cast, zeros, fill', () => {
    const x = rand([3, 5], 1);
    expect(Array.from(g.read(x.g))).toEqual(Array.from(x.data));
    const xb = rand([4, 7], 2, 1, 'bf16');
    expect(Array.from(g.read(xb.g))).toEqual(Array.from(cpu.read(xb.c)));
    const v = g.reshape(x.g, [5, 3]);
    expect(v.shape).toEqual([5, 3]);
    g.write(v, new Float32Array(15).fill(2)); // a view writes through to the base
    expect(g.read(x.g).every((e) => e === 2)).toBe(true);
    const y = rand([6, 4], 3);
    const yc = g.copy(y.g);
    g.fill(y.g, 0.5);
    expect(Array.from(g.read(yc))).toEqual(Array.from(y.data));
    // fill with +0 is a memset, -0 keeps its sign (the kernel); on a view the rest of the base is kept
    for (const dtype of ['f32', 'bf16'] as const) {
      const z = rand([10], 6, 1, dtype), zv = g.rowSlice(z.g, 1, 9);
      const before = g.read(z.g);
      g.fill(zv, 0);
      const after = g.read(z.g);
      expect([after[0], after[9]], `fill 0 ${dtype}: outside the view`).toEqual([before[0], before[9]]);
      expect(Array.from(after.subarray(1, 9)).every((e) => Object.is(e, 0)), `fill 0 ${dtype}`).toBe(true);
      g.fill(zv, -0);
      expect(Array.from(g.read(zv)).every((e) => Object.is(e, -0)), `fill -0 ${dtype}`).toBe(true);
    }
    expectClose(g, g.cast(yc, 'bf16'), cpu.cast(y.c, 'bf16'), 0, 'cast f32→bf16');
    expectClose(g, g.cast(g.cast(yc, 'bf16'), 'f32'), cpu.cast(y.c, 'bf16'), 0, 'cast bf16→f32');
    expectClose(g, g.cast(yc, 'f16'), cpu.cast(y.c, 'f16'), 0, 'cast f32→f16');
    expect(g.read(g.zeros([9])).every((e) => e === 0)).toBe(true);
    const rows = rand([5, 3], 4);
    g.copyRows(rows.g, Int32Array.from([0, 4]), Int32Array.from([2, 0]));
    cpu.copyRows(rows.c, Int32Array.from([0, 4]), Int32Array.from([2, 0]));
    expectClose(g, rows.g, rows.c, 0, 'copyRows');
    const d = rand([2, 2], 5);
    d.g.dispose();
    expect(() => g.read(d.g)).toThrow(/dispose/);
  });

  it('elementwise: add, addInPlace, scaleInPlace, mul, negExp, addBias, sumRows, sumSquares', () => {
    const a = rand([7, 33], 10), b = rand([7, 33], 11), bias = rand([33], 12);
    expectClose(g, g.add(a.g, b.g), cpu.add(a.c, b.c), 1e-6, 'add');
    expectClose(g, g.mul(a.g, b.g), cpu.mul(a.c, b.c), 1e-6, 'mul');
    expectClose(g, g.negExp(a.g), cpu.negExp(a.c), 1e-6, 'negExp');
    expectClose(g, g.addBias(a.g, bias.g), cpu.addBias(a.c, bias.c), 1e-6, 'addBias');
    expectClose(g, g.sumRows(a.g), cpu.sumRows(a.c), 1e-6, 'sumRows');
    g.addInPlace(a.g, b.g, 0.3); cpu.addInPlace(a.c, b.c, 0.3);
    g.scaleInPlace(a.g, -1.7); cpu.scaleInPlace(a.c, -1.7);
    expectClose(g, a.g, a.c, 1e-6, 'addInPlace + scaleInPlace');
    // 8 × 36 (a multiple of 4: the four-wide add / addInPlace kernels; 7 × 33 above: one element per thread)
    const a4 = rand([8, 36], 14), b4 = rand([8, 36], 15);
    expectClose(g, g.add(a4.g, b4.g), cpu.add(a4.c, b4.c), 1e-6, 'add, four-wide');
    g.addInPlace(a4.g, b4.g, -0.6); cpu.addInPlace(a4.c, b4.c, -0.6);
    expectClose(g, a4.g, a4.c, 1e-6, 'addInPlace, four-wide');
    const big = rand([1000, 37], 13);
    expect(g.sumSquares(big.g)).toBeCloseTo(cpu.sumSquares(big.c), 3);
    // many tensors with one wait: f32 and bf16 (read in place), tiny and larger than one grid's stride, empty, a NaN
    const many = [big, rand([5], 14), rand([300, 1000], 15), rand([64, 129], 16, 2, 'bf16'), rand([0], 17)];
    const nan = rand([9], 18);
    nan.data[4] = NaN;
    const nanG = g.fromArray(nan.data, [9]);
    const got = g.sumSquaresEach([...many.map((m) => m.g), nanG]);
    expect(got.length).toBe(many.length + 1);
    many.forEach((m, i) => expect(got[i]! / Math.max(1, cpu.sumSquares(m.c)), `sumSquaresEach tensor ${i}`).toBeCloseTo(cpu.sumSquares(m.c) / Math.max(1, cpu.sumSquares(m.c)), 9));
    expect(got[many.length]).toBeNaN();
    expect(g.sumSquaresEach([]).length).toBe(0);
    expect(() => g.add(a.g, bias.g)).toThrow(/add: shapes/);
  });

  it('sumSquaresEach over bf16: 16-byte loads of 8 values with a tail, a misaligned view (generic kernel), a grid-stride loop, NaN', () => {
    const ts = [
      rand([64, 128], 90, 1, 'bf16'), // 8192 values: 16-byte loads only
      rand([37, 3], 91, 1, 'bf16'), // 111 = 13 · 8 + 7: a tail of 7
      rand([5], 92, 1, 'bf16'), // the tail only
      misaligned([33, 9], 93, 1, 'bf16'), // 2 bytes past a 16-byte boundary
      rand([4201, 1001], 94, 0.5, 'bf16'), // 4,205,201 values: 2048 blocks, more than one load per thread, a tail of 1
      rand([300, 1000], 95), // f32 among them
    ];
    const got = g.sumSquaresEach(ts.map((t) => t.g));
    ts.forEach((t, i) => expect(got[i]! / cpu.sumSquares(t.c), `sumSquaresEach bf16 tensor ${i}`).toBeCloseTo(1, 9));
    for (const at of [3, 12]) { // NaN in a 16-byte load and in the tail
      const data = rand([13], 96, 1, 'bf16').data.slice();
      data[at] = NaN;
      expect(g.sumSquaresEach([g.fromArray(data, [13], 'bf16')])[0], `bf16 NaN at ${at}`).toBeNaN();
    }
  });

  it('layout: splitLastDim, concatLastDim, repeatGroups (+ backward)', () => {
    const x = rand([2, 3, 10], 20);
    const gs = g.splitLastDim(x.g, [3, 5, 2]), cs = cpu.splitLastDim(x.c, [3, 5, 2]);
    gs.forEach((t, i) => expectClose(g, t, cs[i]!, 0, `split ${i}`));
    expectClose(g, g.concatLastDim(gs), x.c, 0, 'concat');
    // widths and offsets in multiples of 4 floats: the float4 copy
    const x4 = rand([3, 5, 24], 23);
    const gs4 = g.splitLastDim(x4.g, [8, 4, 12]), cs4 = cpu.splitLastDim(x4.c, [8, 4, 12]);
    gs4.forEach((t, i) => expectClose(g, t, cs4[i]!, 0, `split, float4 copy ${i}`));
    expectClose(g, g.concatLastDim(gs4), x4.c, 0, 'concat, float4 copy');
    const r = rand([4, 12], 21);
    expectClose(g, g.repeatGroups(r.g, 4, 3), cpu.repeatGroups(r.c, 4, 3), 0, 'repeatGroups');
    const dy = rand([4, 36], 22);
    expectClose(g, g.repeatGroupsBackward(dy.g, 4, 3), cpu.repeatGroupsBackward(dy.c, 4, 3), 1e-6, 'repeatGroupsBackward');
    expect(() => g.splitLastDim(x.g, [3, 3])).toThrow(/sizes sum/);
  });

  it('layout kernels by row tiles: column copies in 16 / 8 / 4 / 2-byte units, repeatGroups in float4s or floats, misaligned views, many rows', () => {
    // splits: the widest unit dividing the addresses, strides, offsets and widths in bytes; concat (f32) back
    const splits: [number[], number[], 'f32' | 'bf16', string][] = [
      [[3, 5, 24], [8, 4, 12], 'f32', '16-byte'],
      [[4, 12], [2, 4, 6], 'f32', '8-byte'],
      [[5, 48], [16, 8, 24], 'bf16', '16-byte'],
      [[4, 12], [6, 1, 5], 'bf16', '4-byte and 2-byte'],
      [[3, 7], [3, 4], 'bf16', '2-byte'],
      [[20000, 12], [4, 8], 'f32', '16-byte, more rows than one grid of row tiles'],
      [[20000, 7], [3, 4], 'f32', '4-byte, more rows than one grid of row tiles'],
    ];
    let seed = 700;
    for (const [shape, sizes, dtype, what] of splits) {
      const x = rand(shape, seed++, 1, dtype);
      const gs = g.splitLastDim(x.g, sizes), cs = cpu.splitLastDim(x.c, sizes);
      gs.forEach((t, i) => expectClose(g, t, cs[i]!, 0, `split ${dtype} [${shape}] → ${sizes} (${what}) ${i}`));
      expectClose(g, g.concatLastDim(gs), dtype === 'f32' ? x.c : cpu.concatLastDim(cs), 0, `concat ${dtype} [${shape}] (${what})`);
    }
    // a misaligned source (widths in multiples of 4 floats, but the address 4 bytes past a 16-byte boundary): 4-byte units
    const mx = misaligned([6, 16], seed++);
    const mg = g.splitLastDim(mx.g, [8, 8]), mc = cpu.splitLastDim(mx.c, [8, 8]);
    mg.forEach((t, i) => expectClose(g, t, mc[i]!, 0, `split, misaligned source ${i}`));
    expectClose(g, g.concatLastDim([mx.g, mx.g]), cpu.concatLastDim([mx.c, mx.c]), 0, 'concat, misaligned sources');
    // repeatGroups (+ backward): group width a multiple of 4 on aligned tensors → float4s; otherwise floats
    const repeats: [Pair, number, number, string][] = [
      [rand([4, 12], seed++), 4, 3, 'float4s'],
      [rand([3, 32], seed++), 16, 3, 'float4s, N = 16'],
      [rand([5, 6], seed++), 3, 2, 'floats'],
      [rand([2, 10], seed++), 2, 4, 'floats, even width'],
      [misaligned([4, 12], seed++), 4, 3, 'floats (misaligned)'],
      [rand([20000, 16], seed++), 8, 2, 'float4s, more rows than one grid of row tiles'],
      [rand([20000, 6], seed++), 3, 2, 'floats, more rows than one grid of row tiles'],
      [rand([7, 300], seed++), 4, 5, 'float4s, several column tiles'],
    ];
    for (const [x, w, rep, what] of repeats) {
      const shape = x.g.shape;
      expectClose(g, g.repeatGroups(x.g, w, rep), cpu.repeatGroups(x.c, w, rep), 0, `repeatGroups [${shape}] ${w} × ${rep} (${what})`);
      const dy = rand([shape[0]!, shape[1]! * rep], seed++);
      expectClose(g, g.repeatGroupsBackward(dy.g, w, rep), cpu.repeatGroupsBackward(dy.c, w, rep), 1e-6,
        `repeatGroupsBackward [${shape}] ${w} × ${rep} (${what})`);
    }
    const dm = misaligned([3, 24], seed++);
    expectClose(g, g.repeatGroupsBackward(dm.g, 4, 3), cpu.repeatGroupsBackward(dm.c, 4, 3), 1e-6, 'repeatGroupsBackward, misaligned dy');
  });

  it('matmul f32 (all transposes, accumulateInto) and bf16 weights', () => {
    const M = 37, K = 96, N = 53;
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      const a = rand(ta ? [K, M] : [M, K], 30), b = rand(tb ? [N, K] : [K, N], 31);
      expectClose(g, g.matmul(a.g, b.g, { transA: ta, transB: tb }), cpu.matmul(a.c, b.c, { transA: ta, transB: tb }), 1e-5, `matmul ta=${ta} tb=${tb}`);
    }
    const x = rand([2, 5, K], 32), w = rand([N, K], 33), acc = rand([10, N], 34);
    const ga = g.matmul(x.g, w.g, { transB: true, accumulateInto: acc.g });
    const ca = cpu.matmul(x.c, w.c, { transB: true, accumulateInto: acc.c });
    expectClose(g, ga, ca, 1e-5, 'matmul accumulateInto');
    const over = rand([10, N], 39);  // writeInto: beta 0, the old values are not read
    expect(g.matmul(x.g, w.g, { transB: true, writeInto: over.g })).toBe(over.g);
    expectClose(g, over.g, cpu.reshape(cpu.matmul(x.c, w.c, { transB: true }), [10, N]), 1e-5, 'matmul writeInto');
    const lin = g.matmul(x.g, w.g, { transB: true });
    expect(lin.shape).toEqual([2, 5, N]);
    const wb = rand([N, K], 35, 1, 'bf16');
    expectClose(g, g.matmul(x.g, wb.g, { transB: true }), cpu.matmul(x.c, wb.c, { transB: true }), 1e-2, 'matmul bf16 weight');
    // a bf16 output (cuBLASLt rounds its f32 sums in the epilogue): the CPU's rounding of its own sums, one bf16 step apart
    // where the sums differ in their last bits; a decode-shaped one too (timed algorithms, K splits)
    const xb = rand([2, 5, K], 36, 1, 'bf16');
    const ob = g.matmul(xb.g, wb.g, { transB: true, outDType: 'bf16' });
    expect(ob.dtype).toBe('bf16');
    expectClose(g, ob, cpu.matmul(xb.c, wb.c, { transB: true, outDType: 'bf16' }), 8e-3, 'matmul → bf16');
    const xs = rand([8, 4096], 37, 1, 'bf16'), ws = rand([192, 4096], 38, 1, 'bf16');
    for (let rep = 0; rep < 2; rep++) {
      expectClose(g, g.matmul(xs.g, ws.g, { transB: true, outDType: 'bf16' }), cpu.matmul(xs.c, ws.c, { transB: true, outDType: 'bf16' }), 8e-3, `skinny matmul → bf16, call ${rep}`);
    }
    expect(() => g.matmul(xb.g, wb.g, { transB: true, outDType: 'bf16', accumulateInto: acc.g })).toThrow(/outDType bf16 cannot be combined with accumulateInto/);
    expect(() => g.matmul(x.g, w.g)).toThrow(/inner dimensions/);
  });

  // decode-shaped products (a few activation rows, a long K): their algorithm is timed on first use among the
  // heuristic's candidates and their K-split variants (matmul.cpp), whichever wins must give the product; the
  // other row counts of a power-of-two bucket (5 and 7 after 8, 40 after 64) reuse that bucket's choice
  it('skinny products with a long K (timed algorithms, K splits offered, reused within a row bucket) equal the CPU, plain and accumulating', () => {
    for (const [rows, K, N] of [[8, 4096, 1024], [5, 4096, 1024], [7, 4096, 1024], [64, 8192, 768], [40, 8192, 768], [3, 3072, 2048]] as const) {
      const x = rand([rows, K], 41, 1, 'bf16'), w = rand([N, K], 42, 1, 'bf16'), acc = rand([rows, N], 43);
      for (let rep = 0; rep < 2; rep++) {  // the first call times the candidates, the second runs the chosen one
        expectClose(g, g.matmul(x.g, w.g, { transB: true }), cpu.matmul(x.c, w.c, { transB: true }), 1e-4, `skinny [${rows}×${K}]·[${N}×${K}]ᵀ call ${rep}`);
      }
      const ga = g.matmul(x.g, w.g, { transB: true, accumulateInto: g.copy(acc.g) });
      const ca = cpu.matmul(x.c, w.c, { transB: true, accumulateInto: cpu.copy(acc.c) });
      expectClose(g, ga, ca, 1e-4, `skinny [${rows}×${K}]·[${N}×${K}]ᵀ accumulateInto`);
    }
  });

  // gate and up as one batched cuBLASLt launch (the second weight addressed from the first by a batch stride): the
  // two products' values, in the caller's order whichever weight lies lower; where it does not apply (f32 weights,
  // weights closer than one weight's bytes or not 16 bytes apart) two products
  it('matmulPair: two bf16 weights of one shape in one launch, either order, skinny and wide, bf16 and f32 outputs; fallbacks', () => {
    const batched = (y: readonly [Tensor, Tensor]) => (y[0] as unknown as { buffer: unknown }).buffer === (y[1] as unknown as { buffer: unknown }).buffer;
    for (const [rows, K, N] of [[8, 3072, 1024], [64, 3072, 1024], [300, 256, 96]] as const) {
      const w1 = rand([N, K], 60, 0.05, 'bf16'), w2 = rand([N, K], 61, 0.05, 'bf16');
      for (const xd of ['bf16', 'f32'] as const) {
        const x = rand([rows, K], 62, 1, xd);
        for (const outDType of ['bf16', 'f32'] as const) {
          for (const [p, q, what] of [[w1, w2, 'w1, w2'], [w2, w1, 'w2, w1']] as const) {
            const y = g.matmulPair(x.g, p.g, q.g, { outDType });
            expect(batched(y), `${what}: one launch`).toBe(true);
            expect(y[0].dtype).toBe(outDType);
            expect(y[0].shape).toEqual([rows, N]);
            // against the CPU (which multiplies an f32 activation unrounded: 1e-2, as for matmul with a bf16 weight), and
            // against the GPU's two separate products (the same bf16 inputs; summation order only)
            const tol = xd === 'f32' ? 1e-2 : outDType === 'bf16' ? 8e-3 : 1e-4, same = outDType === 'bf16' ? 8e-3 : 1e-5;
            const shape = `[${rows}×${K}]·[${N}×${K}]ᵀ ${xd} → ${outDType} (${what})`;
            expectClose(g, y[0], cpu.matmul(x.c, p.c, { transB: true, outDType }), tol, `pair ${shape} first`);
            expectClose(g, y[1], cpu.matmul(x.c, q.c, { transB: true, outDType }), tol, `pair ${shape} second`);
            closeArrays(g.read(y[0]), g.read(g.matmul(x.g, p.g, { transB: true, outDType })), same, `pair ${shape} first vs one product`);
            closeArrays(g.read(y[1]), g.read(g.matmul(x.g, q.g, { transB: true, outDType })), same, `pair ${shape} second vs one product`);
          }
        }
      }
    }
    // rows of one tensor as the two weights: overlapping (one row apart), and 41 rows of 33 bf16 apart (not a multiple of
    // 16 bytes); f32 weights — each by two products, the same values
    const big = rand([81, 33], 63, 1, 'bf16'), bigF = rand([80, 33], 64), x = rand([5, 33], 65);
    const cases = [
      [g.rowSlice(big.g, 0, 40), g.rowSlice(big.g, 1, 41), cpu.rowSlice(big.c, 0, 40), cpu.rowSlice(big.c, 1, 41), 'overlapping'],
      [g.rowSlice(big.g, 0, 40), g.rowSlice(big.g, 41, 81), cpu.rowSlice(big.c, 0, 40), cpu.rowSlice(big.c, 41, 81), '2706 bytes apart'],
      [g.rowSlice(bigF.g, 0, 40), g.rowSlice(bigF.g, 40, 80), cpu.rowSlice(bigF.c, 0, 40), cpu.rowSlice(bigF.c, 40, 80), 'f32 weights'],
    ] as const;
    for (const [ga, gb, ca, cb, what] of cases) {
      const y = g.matmulPair(x.g, ga, gb);
      expect(batched(y), `${what}: two products`).toBe(false);
      expectClose(g, y[0], cpu.matmul(x.c, ca, { transB: true }), 1e-2, `pair (${what}) first`);
      expectClose(g, y[1], cpu.matmul(x.c, cb, { transB: true }), 1e-2, `pair (${what}) second`);
    }
    expect(() => g.matmulPair(x.g, big.g, bigF.g)).toThrow(/one shape/);
    expect(() => g.matmulPair(rand([5, 32], 66).g, g.rowSlice(big.g, 0, 40), g.rowSlice(big.g, 41, 81))).toThrow(/32 columns, the weights 33/);
  });

  it('matmul f32 × f32 by setFloat32MatmulPrecision: highest = f32, high = TF32, medium = bf16 operands', () => {
    const M = 64, K = 512, N = 48;
    const a = rand([K, M], 36), b = rand([K, N], 37); // a weight gradient's shape: aᵀ · b
    const ref = cpu.matmul(a.c, b.c, { transA: true });
    // medium rounds both operands to bf16: the CPU product of the rounded operands, to f32 summation order
    const refBf16 = cpu.matmul(cpu.cast(a.c, 'bf16'), cpu.cast(b.c, 'bf16'), { transA: true });
    try {
      g.setFloat32MatmulPrecision('high');
      const tf32 = g.matmul(a.g, b.g, { transA: true });
      expectClose(g, tf32, ref, 2e-3, 'matmul TF32');
      const t = g.read(tf32), r = cpu.read(ref);
      expect(t.some((v, i) => Math.abs(v - r[i]!) > 1e-5 * Math.abs(r[i]!)), 'TF32 differs from f32 somewhere').toBe(true);
      g.setFloat32MatmulPrecision('medium');
      expectClose(g, g.matmul(a.g, b.g, { transA: true }), refBf16, 1e-5, 'matmul medium = bf16 operands');
      expectClose(g, g.matmul(a.g, b.g, { transA: true }), ref, 1e-2, 'matmul medium vs f32');
      g.setFloat32MatmulPrecision('highest');
      expectClose(g, g.matmul(a.g, b.g, { transA: true }), ref, 1e-5, 'matmul highest');
      expect(() => g.setFloat32MatmulPrecision('low' as 'high')).toThrow(/highest, high, medium/);
    } finally {
      g.setFloat32MatmulPrecision('highest');
    }
  });

  it('rowSlice views (f32 and bf16) as matmul operands and accumulateInto targets', () => {
    const w = rand([40, 96], 38, 1, 'bf16'), x = rand([5, 96], 39), acc = rand([40, 96], 40);
    const gv = g.rowSlice(w.g, 8, 24), cv = cpu.rowSlice(w.c, 8, 24);
    expectClose(g, gv, cv, 0, 'rowSlice bf16 values');
    expectClose(g, g.matmul(x.g, gv, { transB: true }), cpu.matmul(x.c, cv, { transB: true }), 1e-2, 'matmul with a bf16 row slice');
    const dz = rand([5, 16], 41);
    g.matmul(dz.g, x.g, { transA: true, accumulateInto: g.rowSlice(acc.g, 16, 32) });
    cpu.matmul(dz.c, x.c, { transA: true, accumulateInto: cpu.rowSlice(acc.c, 16, 32) });
    expectClose(g, acc.g, acc.c, 1e-5, 'accumulate into an f32 row slice (rows outside it unchanged)');
    expectClose(g, g.reshape(g.rowSlice(acc.g, 16, 32), [1536]), cpu.reshape(cpu.rowSlice(acc.c, 16, 32), [1536]), 1e-5, 'reshape of a row slice');
  });

  it('sliceLastDim: a column range of f32 and bf16 tensors, as stored', () => {
    for (const dt of ['f32', 'bf16'] as const) {
      const a = rand([5, 3, 8384], 73, 1, dt);
      const gs = g.sliceLastDim(a.g, 8192, 8384);
      expect(gs.dtype).toBe(dt);
      expectClose(g, gs, cpu.sliceLastDim(a.c, 8192, 8384), 0, `sliceLastDim ${dt}`);
      expectClose(g, g.sliceLastDim(a.g, 3, 10), cpu.sliceLastDim(a.c, 3, 10), 0, `sliceLastDim ${dt}, odd offset`);
    }
    expect(() => g.sliceLastDim(g.zeros([2, 4]), 3, 5)).toThrow(/sliceLastDim: columns \[3, 5\)/);
  });

  it('concatLastDim: bf16 inputs copied as stored into a bf16 result (a grown KV cache), mixed dtypes into f32', () => {
    const a = rand([3, 70], 70, 1, 'bf16'), b = rand([3, 6], 71, 1, 'bf16'), f = rand([3, 5], 72);
    const gb = g.concatLastDim([a.g, b.g]);
    expect(gb.dtype).toBe('bf16');
    expectClose(g, gb, cpu.concatLastDim([a.c, b.c]), 0, 'concat bf16');
    const gm = g.concatLastDim([a.g, f.g]);
    expect(gm.dtype).toBe('f32');
    expectClose(g, gm, cpu.concatLastDim([a.c, f.c]), 0, 'concat bf16 + f32');
    // outDType bf16: f32 parts rounded as they are copied, bf16 parts as stored — widths that are multiples of 4 (the
    // float4 kernel) and not (f: 5 columns, then every later offset is odd), the same values as the CPU's rounding
    const w1 = rand([33, 64], 73), w2 = rand([33, 8], 74), w3 = rand([33, 5], 75), w4 = rand([33, 12], 76, 1, 'bf16');
    for (const parts of [[w1, w2], [w1, w3, w2], [w3, w4, w1]]) {
      const got = g.concatLastDim(parts.map((p) => p.g), 'bf16');
      expect(got.dtype).toBe('bf16');
      expectClose(g, got, cpu.concatLastDim(parts.map((p) => p.c), 'bf16'), 0, `concat into bf16 (${parts.map((p) => p.data.length / 33).join(' + ')} columns)`);
    }
  });

  it('embedding (f32 and bf16 tables), rmsNorm, swiglu', () => {
    const table = rand([50, 24], 40), tb = rand([50, 24], 41, 1, 'bf16');
    const ids = ints(17, 42, 50);
    expectClose(g, g.embedding(table.g, ids), cpu.embedding(table.c, ids), 0, 'embedding');
    expectClose(g, g.embedding(tb.g, ids), cpu.embedding(tb.c, ids), 0, 'embedding bf16');
    expect(() => g.embedding(table.g, Int32Array.from([50]))).toThrow(/outside the vocabulary/);
    const x = rand([9, 300], 43), w = rand([300], 44);
    const gr = g.rmsNorm(x.g, w.g, 1e-5), cr = cpu.rmsNorm(x.c, w.c, 1e-5);
    expectClose(g, gr.y, cr.y, 1e-5, 'rmsNorm y');
    expectClose(g, gr.rstd, cr.rstd, 1e-5, 'rmsNorm rstd');
    // 5 × 70 (a multiple of 4: the four-wide kernel) and 3 × 7 (21 elements: one per thread)
    for (const shape of [[5, 70], [3, 7]]) {
      const gate = rand(shape, 45, 3), up = rand(shape, 46);
      expectClose(g, g.swiglu(gate.g, up.g), cpu.swiglu(gate.c, up.c), 1e-5, `swiglu ${shape}`);
      // bf16 output: the same rounding (round to nearest even) on both sides, so equal up to one bf16 step where
      // the f32 values before rounding differ in their last bits
      const sb = g.swiglu(gate.g, up.g, 'bf16');
      expect(sb.dtype).toBe('bf16');
      expectClose(g, sb, cpu.swiglu(gate.c, up.c, 'bf16'), 8e-3, `swiglu → bf16 ${shape}`);
      // bf16 gate and up (a bf16 model's products), read in place
      const gb = rand(shape, 47, 3, 'bf16'), ub = rand(shape, 48, 1, 'bf16');
      expectClose(g, g.swiglu(gb.g, ub.g), cpu.swiglu(gb.c, ub.c), 1e-5, `swiglu of bf16 inputs ${shape}`);
      expectClose(g, g.swiglu(gb.g, ub.g, 'bf16'), cpu.swiglu(gb.c, ub.c, 'bf16'), 8e-3, `swiglu of bf16 inputs → bf16 ${shape}`);
      expectClose(g, g.swiglu(gb.g, up.g), cpu.swiglu(gb.c, up.c), 1e-5, `swiglu, bf16 gate and f32 up ${shape}`);
    }
  });

  it('addRmsNorm: residual add + norm, with and without r, f32 / bf16 weight, f32 / bf16 output (row-in-registers widths and odd widths)', () => {
    let seed = 60;
    // D a multiple of 4 up to 4096: the float4 kernel, 1 … 4 float4s per thread (1028: a partly idle last
    // round); 4100, 301, 5: the scalar kernel
    for (const [rows, D] of [[4, 3072], [3, 8], [2, 1028], [2, 4096], [2, 4100], [3, 301], [1, 5]] as const) {
      for (const wType of ['f32', 'bf16'] as const) {
        for (const out of ['f32', 'bf16'] as const) {
          for (const withR of [true, false]) {
            const x = rand([rows, D], (seed += 4), 2), r = rand([rows, D], seed + 1), w = rand([D], seed + 2, 1, wType);
            const what = `addRmsNorm [${rows}, ${D}] w ${wType} → ${out}${withR ? '' : ', no r'}`;
            const gg = g.addRmsNorm(x.g, withR ? r.g : null, w.g, 1e-5, out), cc = cpu.addRmsNorm(x.c, withR ? r.c : null, w.c, 1e-5, out);
            expect(gg.y.dtype, what).toBe(out);
            expectClose(g, gg.h, cc.h, 1e-6, `${what}: h`);
            // against the unfused ops on the CPU
            const ref = cpu.rmsNorm(withR ? cpu.add(x.c, r.c) : x.c, w.c, 1e-5).y;
            expectClose(g, gg.y, out === 'f32' ? ref : cpu.cast(ref, 'bf16'), out === 'f32' ? 1e-5 : 8e-3, `${what}: y`);
            if (!withR) expect(gg.h).toBe(x.g);
          }
        }
      }
    }
    expect(() => g.addRmsNorm(g.zeros([2, 8]), g.zeros([2, 7]), g.zeros([8]), 1e-5, 'f32')).toThrow(/addRmsNorm: r \[2, 7\] does not match x \[2, 8\]/);
    expect(() => g.addRmsNorm(g.zeros([2, 8]), null, g.zeros([7]), 1e-5, 'f32')).toThrow(/addRmsNorm: weight has 7 elements/);
    expect(() => g.addRmsNorm(g.zeros([2, 8]), null, g.zeros([8]), 1e-5, 'f16')).toThrow(/addRmsNorm: output dtype must be f32 or bf16/);
  });

  it('argmaxRows: one pass split over blocks (1 to 600 rows, vocabularies 7 to 128256), first maximum on ties, logprob', () => {
    let seed = 80;
    for (const [rows, V] of [[1, 128256], [8, 128256], [64, 128256], [600, 5003], [3, 7]] as const) {
      const x = rand([rows, V], (seed += 3), 3);
      const data = x.data;
      // plant ties: row r's maximum at two places, the earlier one must win
      for (let r = 0; r < rows; r++) {
        const a = (r * 7919) % V, b = Math.min(V - 1, a + 1 + ((r * 104729) % Math.max(1, V - a - 1)));
        data[r * V + a] = 50 + r;
        data[r * V + b] = 50 + r;
        if (r % 3 === 0) data[r * V + V - 1] = -Infinity;  // −∞ logits are allowed
      }
      const xg = g.fromArray(data, [rows, V]), xc = cpu.fromArray(data, [rows, V]);
      const gr = g.argmaxRows(xg), cr = cpu.argmaxRows(xc);
      expect(Array.from(gr.ids), `argmaxRows ids [${rows}, ${V}]`).toEqual(Array.from(cr.ids));
      closeArrays(gr.logprobs, cr.logprobs, 1e-5, `argmaxRows logprobs [${rows}, ${V}]`);
    }
  });

  it('logSoftmax, gatherLogprobs, crossEntropy (with mask)', () => {
    const x = rand([6, 1000], 50, 4);
    const tg = ints(6, 51, 1000);
    expectClose(g, g.logSoftmax(x.g), cpu.logSoftmax(x.c), 1e-5, 'logSoftmax');
    closeArrays(g.gatherLogprobs(x.g, tg), cpu.gatherLogprobs(x.c, tg), 1e-5, 'gatherLogprobs');
    const mask = Uint8Array.from([1, 0, 1, 1, 0, 1]);
    const gc = g.crossEntropy(x.g, tg, mask), cc = cpu.crossEntropy(x.c, tg, mask);
    expect(gc.loss).toBeCloseTo(cc.loss, 4);
    expectClose(g, gc.dlogits, cc.dlogits, 1e-5, 'crossEntropy dlogits');
  });

  it('rope (forward and inverse)', () => {
    const x = rand([7, 3, 16], 60);
    const pos = Int32Array.from([0, 1, 2, 5, 100, 4000, 3]);
    const inv = new Float32Array(8).map((_, i) => Math.fround(1 / 10000 ** (i / 8)));
    expectClose(g, g.rope(x.g, pos, inv), cpu.rope(x.c, pos, inv), 1e-6, 'rope');
    expectClose(g, g.rope(x.g, pos, inv, true), cpu.rope(x.c, pos, inv, true), 1e-6, 'rope inverse');
    // a block per token, threads over (pair, head): more heads than thread rows (24 and 8 heads of 128), more pairs
    // than threads (Dh 520), more tokens than blocks (5000), positions up to 8191
    let seed = 61;
    for (const [n, H, Dh] of [[5, 24, 128], [6, 8, 128], [3, 6, 64], [2, 2, 520], [5000, 2, 8]] as const) {
      const xr = rand([n, H, Dh], seed++);
      const p = ints(n, seed++, 8192);
      const f = new Float32Array(Dh / 2).map((_, i) => Math.fround(1 / 500000 ** (i / (Dh / 2))));
      expectClose(g, g.rope(xr.g, p, f), cpu.rope(xr.c, p, f), 1e-6, `rope [${n}, ${H}, ${Dh}]`);
      expectClose(g, g.rope(xr.g, p, f, true), cpu.rope(xr.c, p, f, true), 1e-6, `rope inverse [${n}, ${H}, ${Dh}]`);
    }
  });

  it('attention: causal GQA with packed segments, and lse', () => {
    for (const Dh of [16, 64, 80]) {
      const B = 2, T = 13, Hq = 4, Hkv = 2;
      const q = rand([B, T, Hq, Dh], 70), k = rand([B, T, Hkv, Dh], 71), v = rand([B, T, Hkv, Dh], 72);
      const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 5 ? 0 : i % T < 9 ? 1 : 2));
      for (const seg of [undefined, segments]) {
        const o = { scale: 1 / Math.sqrt(Dh), segments: seg };
        const ga = g.attention(q.g, k.g, v.g, o), ca = cpu.attention(q.c, k.c, v.c, o);
        expectClose(g, ga.out, ca.out, 1e-5, `attention out Dh=${Dh} seg=${!!seg}`);
        expectClose(g, ga.lse, ca.lse, 1e-5, `attention lse Dh=${Dh} seg=${!!seg}`);
      }
    }
  });

  it('kvCacheWrite + pagedAttentionDecode (f32 and bf16 caches) match the CPU', () => {
    const nb = 6, bs = 4, Hkv = 2, Dh = 32, Hq = 6;
    for (const dtype of ['f32', 'bf16'] as const) {
      const kc = { g: g.zeros([nb, bs, Hkv, Dh], dtype), c: cpu.zeros([nb, bs, Hkv, Dh], dtype) };
      const vc = { g: g.zeros([nb, bs, Hkv, Dh], dtype), c: cpu.zeros([nb, bs, Hkv, Dh], dtype) };
      const k = rand([10, Hkv, Dh], 80), v = rand([10, Hkv, Dh], 81);
      // sequence 0: blocks 3, 1 (7 tokens); sequence 1: block 5 (3 tokens); one padding token (−1)
      const slots = Int32Array.from([12, 13, 14, 15, 4, 5, 6, 20, 21, 22].map((s, i) => (i === 9 ? -1 : s)));
      g.kvCacheWrite(kc.g, vc.g, k.g, v.g, slots);
      cpu.kvCacheWrite(kc.c, vc.c, k.c, v.c, slots);
      expectClose(g, kc.g, kc.c, 0, `kCache ${dtype}`);
      expectClose(g, vc.g, vc.c, 0, `vCache ${dtype}`);
      const q = rand([3, Hq, Dh], 82);
      const tables = Int32Array.from([3, 1, 5, 0, 0, 0]);
      const lens = Int32Array.from([7, 2, 0]);
      expectClose(g, g.pagedAttentionDecode(q.g, kc.g, vc.g, tables, 2, lens, 0.2), cpu.pagedAttentionDecode(q.c, kc.c, vc.c, tables, 2, lens, 0.2), 1e-5, `pagedAttentionDecode ${dtype}`);
    }
  });

  it('causalConv1d (segments, stateOut) and causalConv1dStep continue it, in f32 and bf16 conv-state pools', () => {
    const B = 2, T = 9, C = 40, K = 4;
    const x = rand([B, T, C], 90), w = rand([C, K], 91, 0.5), bias = rand([C], 92);
    const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 4 ? 7 : 8));
    // a bf16 pool (the reference's conv_state in a bf16 model) holds the inputs rounded, the same rounding on both
    // backends; the steps read the rounded window
    for (const [silu, seg, dt] of [[false, undefined, 'f32'], [false, segments, 'f32'], [true, undefined, 'f32'], [true, segments, 'f32'], [true, segments, 'bf16']] as const) {
      {
        const sg = g.zeros([3, C, K - 1], dt), sc = cpu.zeros([3, C, K - 1], dt);
        const slots = Int32Array.from([2, 0]);
        const yg = g.causalConv1d(x.g, w.g, bias.g, { silu, segments: seg, stateOut: { convState: sg, slots } });
        const yc = cpu.causalConv1d(x.c, w.c, bias.c, { silu, segments: seg, stateOut: { convState: sc, slots } });
        expectClose(g, yg, yc, 1e-5, `conv silu=${silu} seg=${!!seg}`);
        expectClose(g, sg, sc, 0, 'conv stateOut');
        for (let s = 0; s < 3; s++) {
          const xs = rand([2, C], 93 + s);
          expectClose(g, g.causalConv1dStep(xs.g, sg, slots, w.g, bias.g, silu), cpu.causalConv1dStep(xs.c, sc, slots, w.c, bias.c, silu), 1e-5, `conv step ${s}`);
        }
        expectClose(g, sg, sc, 0, 'conv state after steps');
        expect(sg.dtype).toBe(dt);
      }
    }
  });

  it('selectiveScan (grouped B/C, z gate, delta bias, segments, stateOut) and selectiveScanStep, into f32 and bf16 state pools', () => {
    const B = 2, T = 11, Di = 64, N = 16, G = 4;
    const x = rand([B, T, Di], 100), delta = rand([B, T, Di], 101, 0.5), z = rand([B, T, Di], 102);
    const A = uniform([Di, N], 103, -2, -0.1), Bm = rand([B, T, G, N], 104), Cm = rand([B, T, G, N], 105);
    const D = rand([Di], 106), db = rand([Di], 107, 0.3);
    const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 6 ? 0 : 1));
    // a bf16 pool (the reference's state dtype) goes through an f32 copy of its rows on the device; a rounding that
    // falls the other way on the two backends is one bf16 ulp, which the later steps read
    for (const [seg, st] of [[undefined, 'f32'], [segments, 'f32'], [segments, 'bf16']] as const) {
      const sg = g.zeros([3, Di, N], st), sc = cpu.zeros([3, Di, N], st);
      const tol = st === 'f32' ? 1e-4 : 8e-3;
      const slots = Int32Array.from([1, 2]);
      const mk = (s: 'g' | 'c') => ({
        x: x[s], delta: delta[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: D[s], z: z[s], deltaBias: db[s], segments: seg,
        stateOut: { ssmState: s === 'g' ? sg : sc, slots },
      });
      expectClose(g, g.selectiveScan(mk('g')), cpu.selectiveScan(mk('c')), 1e-4, `selectiveScan seg=${!!seg}`);
      expectClose(g, sg, sc, tol, `selectiveScan stateOut (${st} pool)`);
      expect(cpu.read(sc).subarray(0, Di * N).every((v) => v === 0), 'slot 0 untouched').toBe(true);
      for (let s = 0; s < 3; s++) {
        const xs = rand([2, Di], 110 + s), ds = rand([2, Di], 120 + s, 0.5), zs = rand([2, Di], 130 + s);
        const bs = rand([2, G, N], 140 + s), cs = rand([2, G, N], 150 + s);
        const args = (q: 'g' | 'c') => ({ x: xs[q], delta: ds[q], A: A[q], Bm: bs[q], Cm: cs[q], D: D[q], z: zs[q], deltaBias: db[q], ssmState: q === 'g' ? sg : sc, slots });
        expectClose(g, g.selectiveScanStep(args('g')), cpu.selectiveScanStep(args('c')), tol, `selectiveScanStep ${s} (${st} pool)`);
      }
      expectClose(g, sg, sc, tol, `selectiveScan state after steps (${st} pool)`);
      expect(g.read(sg).subarray(0, Di * N).every((v) => v === 0), 'slot 0 untouched on the device').toBe(true);
    }
    // without the optional inputs
    const bare = (s: 'g' | 'c') => ({ x: x[s], delta: delta[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: null, z: null, deltaBias: null });
    expectClose(g, g.selectiveScan(bare('g')), cpu.selectiveScan(bare('c')), 1e-4, 'selectiveScan bare');
  });

  it('ssdScan (segments, stateOut) and ssdScanStep; gatedRmsNorm', () => {
    const B = 2, T = 10, H = 4, P = 8, G = 2, N = 16;
    const x = rand([B, T, H, P], 200), dt = rand([B, T, H], 201, 0.5), A = uniform([H], 202, -1.5, -0.2);
    const Bm = rand([B, T, G, N], 203), Cm = rand([B, T, G, N], 204), D = rand([H], 205), dtBias = rand([H], 206, 0.3);
    const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 3 ? 0 : 1));
    for (const seg of [undefined, segments]) {
      const sg = g.zeros([3, H, P, N]), sc = cpu.zeros([3, H, P, N]);
      const slots = Int32Array.from([0, 2]);
      const mk = (s: 'g' | 'c') => ({ x: x[s], dt: dt[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: D[s], dtBias: dtBias[s], chunkSize: 4, segments: seg, stateOut: { ssmState: s === 'g' ? sg : sc, slots } });
      expectClose(g, g.ssdScan(mk('g')), cpu.ssdScan(mk('c')), 1e-4, `ssdScan seg=${!!seg}`);
      expectClose(g, sg, sc, 1e-4, 'ssdScan stateOut');
      for (let s = 0; s < 2; s++) {
        const xs = rand([2, H, P], 210 + s), ds = rand([2, H], 220 + s, 0.5), bs = rand([2, G, N], 230 + s), cs = rand([2, G, N], 240 + s);
        const st = (q: 'g' | 'c') => ({ x: xs[q], dt: ds[q], A: A[q], Bm: bs[q], Cm: cs[q], D: D[q], dtBias: dtBias[q], ssmState: q === 'g' ? sg : sc, slots });
        expectClose(g, g.ssdScanStep(st('g')), cpu.ssdScanStep(st('c')), 1e-4, `ssdScanStep ${s}`);
      }
    }
    const y = rand([5, 32], 250), z = rand([5, 32], 251), w = rand([32], 252);
    expectClose(g, g.gatedRmsNorm(y.g, z.g, w.g, 8, 1e-5), cpu.gatedRmsNorm(y.c, z.c, w.c, 8, 1e-5), 1e-5, 'gatedRmsNorm');
  });

  it('caching allocator: a repeated op makes no new cudaMalloc', () => {
    const x = rand([64, 128], 300), w = rand([128], 301);
    for (let i = 0; i < 3; i++) { const r = g.rmsNorm(x.g, w.g, 1e-5); r.y.dispose(); r.rstd.dispose(); }
    const before = g.memoryStats().cudaMallocCalls;
    for (let i = 0; i < 20; i++) { const r = g.rmsNorm(x.g, w.g, 1e-5); r.y.dispose(); r.rstd.dispose(); }
    expect(g.memoryStats().cudaMallocCalls).toBe(before);
  });
});
