// Backward ops (and the AdamW step) of the CUDA backend against the CPU reference. Tolerances are
// relative to the largest reference magnitude: 1e-5 for row ops, 1e-4 for gradients that are long
// f32 sums on the GPU (attention, conv weights, scans with atomics) against f64 sums on the CPU.
import { describe, expect, it } from 'vitest';
import type { Tensor } from '../../src/backend/tensor.js';
import { available, closeArrays, cpu, expectClose, gpu, ints, misaligned, rand, skipReason, uniform } from './helpers.js';

describe.skipIf(!available)(`cuda backward ops vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const g = gpu!;

  it('embeddingBackward (repeated ids accumulate), rmsNormBackward, swigluBackward', () => {
    const dT = { g: g.zeros([20, 16]), c: cpu.zeros([20, 16]) };
    const ids = ints(30, 1, 20);
    const dy = rand([30, 16], 2);
    g.embeddingBackward(dT.g, ids, dy.g);
    cpu.embeddingBackward(dT.c, ids, dy.c);
    expectClose(g, dT.g, dT.c, 1e-6, 'embeddingBackward');
    const x = rand([9, 200], 3), w = rand([200], 4), d = rand([9, 200], 5);
    const rg = g.rmsNorm(x.g, w.g, 1e-5), rc = cpu.rmsNorm(x.c, w.c, 1e-5);
    const bg = g.rmsNormBackward(d.g, x.g, w.g, rg.rstd), bc = cpu.rmsNormBackward(d.c, x.c, w.c, rc.rstd);
    expectClose(g, bg.dx, bc.dx, 1e-5, 'rmsNorm dx');
    expectClose(g, bg.dw, bc.dw, 1e-5, 'rmsNorm dw');
    // + residual (the skip path's gradient, added as dx is stored), on the row kernel and on the unaligned fallback
    const e = rand([9, 200], 12);
    expectClose(g, g.rmsNormBackward(d.g, x.g, w.g, rg.rstd, e.g).dx, cpu.rmsNormBackward(d.c, x.c, w.c, rc.rstd, e.c).dx, 1e-5, 'rmsNorm dx + residual');
    const xo = rand([9, 201], 13), wo = rand([201], 14), dout = rand([9, 201], 15), eo = rand([9, 201], 16);
    const ro = g.rmsNorm(xo.g, wo.g, 1e-5), rco = cpu.rmsNorm(xo.c, wo.c, 1e-5);
    expectClose(g, g.rmsNormBackward(dout.g, xo.g, wo.g, ro.rstd, eo.g).dx, cpu.rmsNormBackward(dout.c, xo.c, wo.c, rco.rstd, eo.c).dx, 1e-5,
      'rmsNorm dx + residual, D 201 (the per-row kernel)');
    // dw's block reduction: more rows than its 32 row lanes, a column count that is not a multiple of 32
    const x2 = rand([301, 70], 9), w2 = rand([70], 10), d2 = rand([301, 70], 11);
    const r2 = g.rmsNorm(x2.g, w2.g, 1e-5), c2 = cpu.rmsNorm(x2.c, w2.c, 1e-5);
    expectClose(g, g.rmsNormBackward(d2.g, x2.g, w2.g, r2.rstd).dw, cpu.rmsNormBackward(d2.c, x2.c, w2.c, c2.rstd).dw, 1e-5, 'rmsNorm dw, 301 rows');
    // 3000 rows of 70 columns: each column-sum thread adds about 94 rows
    const x3 = rand([3000, 70], 16), w3 = rand([70], 17), d3 = rand([3000, 70], 18);
    const r3 = g.rmsNorm(x3.g, w3.g, 1e-5), c3 = cpu.rmsNorm(x3.c, w3.c, 1e-5);
    expectClose(g, g.rmsNormBackward(d3.g, x3.g, w3.g, r3.rstd).dw, cpu.rmsNormBackward(d3.c, x3.c, w3.c, c3.rstd).dw, 1e-5, 'rmsNorm dw, 3000 rows');
    expectClose(g, g.sumRows(d3.g), cpu.sumRows(d3.c), 1e-5, 'sumRows, 3000 rows');
    // D a multiple of 4 up to 4096 on aligned tensors: the row-in-registers kernel (dx and dw in one pass, 1 … 4
    // float4s per thread; 1028: a partly idle last round; 3000 and 9000 rows: several rows per block), dw from the
    // blocks' f64 sums; D 4100, a misaligned view: the dx kernel and the column sum
    let seed = 30;
    for (const [rows, D, mis] of [[9, 200, false], [5, 3072, false], [3, 4096, false], [2, 1028, false], [1, 8, false], [3000, 72, false],
      [9000, 16, false], [4, 4100, false], [6, 64, true]] as const) {
      const xs = mis ? misaligned([rows, D], seed++) : rand([rows, D], seed++), ws = rand([D], seed++), ds = rand([rows, D], seed++);
      const rg4 = g.rmsNorm(xs.g, ws.g, 1e-5), rc4 = cpu.rmsNorm(xs.c, ws.c, 1e-5);
      const b4 = g.rmsNormBackward(ds.g, xs.g, ws.g, rg4.rstd), c4 = cpu.rmsNormBackward(ds.c, xs.c, ws.c, rc4.rstd);
      const what = `rmsNormBackward [${rows}, ${D}]${mis ? ' misaligned x' : ''}`;
      expectClose(g, b4.dx, c4.dx, 1e-5, `${what}: dx`);
      expectClose(g, b4.dw, c4.dw, 1e-5, `${what}: dw`);
    }
    // 4 × 50 (a multiple of 4: the four-wide kernel) and 3 × 7 (one element per thread)
    for (const shape of [[4, 50], [3, 7]]) {
      const gate = rand(shape, 6, 3), up = rand(shape, 7), dh = rand(shape, 8);
      const sg = g.swigluBackward(dh.g, gate.g, up.g), sc = cpu.swigluBackward(dh.c, gate.c, up.c);
      expectClose(g, sg.dGate, sc.dGate, 1e-5, `swiglu dGate ${shape}`);
      expectClose(g, sg.dUp, sc.dUp, 1e-5, `swiglu dUp ${shape}`);
      // bf16 outputs (what the MLP's backward asks for when its products read bf16): the CPU's, rounded
      const bg = g.swigluBackward(dh.g, gate.g, up.g, 'bf16'), bc = cpu.swigluBackward(dh.c, gate.c, up.c, 'bf16');
      expect(bg.dGate.dtype).toBe('bf16');
      expect(bg.dUp.dtype).toBe('bf16');
      expectClose(g, bg.dGate, bc.dGate, 4e-3, `swiglu dGate bf16 ${shape}`);
      expectClose(g, bg.dUp, bc.dUp, 4e-3, `swiglu dUp bf16 ${shape}`);
    }
  });

  it('attentionBackward (GQA, segments)', () => {
    const B = 2, T = 9, Hq = 4, Hkv = 2, Dh = 32;
    const q = rand([B, T, Hq, Dh], 10), k = rand([B, T, Hkv, Dh], 11), v = rand([B, T, Hkv, Dh], 12), dout = rand([B, T, Hq, Dh], 13);
    const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 4 ? 0 : 1));
    for (const seg of [undefined, segments]) {
      const o = { scale: 0.2, segments: seg };
      const fg = g.attention(q.g, k.g, v.g, o), fc = cpu.attention(q.c, k.c, v.c, o);
      const bg = g.attentionBackward(dout.g, q.g, k.g, v.g, fg.out, fg.lse, o);
      const bc = cpu.attentionBackward(dout.c, q.c, k.c, v.c, fc.out, fc.lse, o);
      expectClose(g, bg.dq, bc.dq, 1e-4, `attention dq seg=${!!seg}`);
      expectClose(g, bg.dk, bc.dk, 1e-4, `attention dk seg=${!!seg}`);
      expectClose(g, bg.dv, bc.dv, 1e-4, `attention dv seg=${!!seg}`);
    }
  });

  it('causalConv1d and its backward (silu, segments, bias; T 8 and T 700; widths 4, 3, 6)', () => {
    // T 700, B 2: the kernels' row walk cuts the 1400 rows into 21 ranges of 67 rows, so ranges end inside a
    // sequence and one straddles the two; segments start at t 3, 66 (just before a range edge at 67) and 135
    // (just after 134), so the windows and the dx gather cross range edges and segment starts both
    for (const [T, K] of [[8, 4], [700, 4], [700, 3], [700, 6]] as const) {
      const B = 2, C = 24;
      const x = rand([B, T, C], 20), w = rand([C, K], 21, 0.5), bias = rand([C], 22), dy = rand([B, T, C], 23);
      const segments = Int32Array.from({ length: B * T }, (_, i) => { const t = i % T; return t < 3 ? 0 : t < 66 ? 1 : t < 135 ? 2 : 3; });
      for (const silu of [false, true]) {
        for (const seg of [undefined, segments]) {
          const what = `T=${T} K=${K} silu=${silu} seg=${!!seg}`;
          expectClose(g, g.causalConv1d(x.g, w.g, bias.g, { silu, segments: seg }), cpu.causalConv1d(x.c, w.c, bias.c, { silu, segments: seg }), 1e-5, `conv y ${what}`);
          const og = g.causalConv1dBackward(dy.g, x.g, w.g, bias.g, { silu, segments: seg });
          const oc = cpu.causalConv1dBackward(dy.c, x.c, w.c, bias.c, { silu, segments: seg });
          expectClose(g, og.dx, oc.dx, 1e-5, `conv dx ${what}`);
          expectClose(g, og.dw, oc.dw, 1e-5, `conv dw ${what}`);
          expectClose(g, og.dbias!, oc.dbias!, 1e-5, `conv dbias ${what}`);
        }
      }
    }
  });

  it('selectiveScanBackward: warp-uniform groups and per-channel groups, segments, T over one checkpoint chunk', () => {
    for (const [Di, G] of [[64, 2], [24, 3]] as const) {
      const B = 2, T = 40, N = 16;
      const x = rand([B, T, Di], 30), delta = rand([B, T, Di], 31, 0.5), z = rand([B, T, Di], 32);
      const A = uniform([Di, N], 33, -2, -0.1), Bm = rand([B, T, G, N], 34), Cm = rand([B, T, G, N], 35);
      const D = rand([Di], 36), db = rand([Di], 37, 0.3), dy = rand([B, T, Di], 38);
      const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 17 ? 0 : 1));
      const mk = (s: 'g' | 'c') => ({ x: x[s], delta: delta[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: D[s], z: z[s], deltaBias: db[s], segments });
      const rg = g.selectiveScanBackward(dy.g, mk('g')), rc = cpu.selectiveScanBackward(dy.c, mk('c'));
      for (const key of ['dx', 'ddelta', 'dA', 'dBm', 'dCm', 'dD', 'dz', 'dDeltaBias'] as const) {
        expectClose(g, rg[key]!, rc[key]!, 1e-4, `selectiveScan ${key} Di=${Di} G=${G}`);
      }
    }
  });

  it('selectiveScan and its backward over many time chunks: resets at and inside chunk edges, stateOut, group sums of 16 lanes and of 1', () => {
    // B·Di is small, so the forward cuts T = 300 into ⌈300 / 32⌉ = 10 chunks of 30 steps (scanChunks); the backward
    // into chunks of 32 (bwdChunks). Di 64 with 16 channels per group and N 16 takes the backward's shared-memory
    // column sums for dB / dC; Di 48 (not a multiple of 32) the per-lane atomics
    for (const [Di, G, N] of [[64, 4, 16], [48, 3, 5]] as const) {
      const B = 2, T = 300;
      const x = rand([B, T, Di], 130), delta = rand([B, T, Di], 131, 0.5), z = rand([B, T, Di], 132);
      const A = uniform([Di, N], 133, -2, -0.1), Bm = rand([B, T, G, N], 134), Cm = rand([B, T, G, N], 135);
      const D = rand([Di], 136), db = rand([Di], 137, 0.3), dy = rand([B, T, Di], 138);
      // row 0: segments start at t = 60 (a forward chunk edge), t = 128 (a backward chunk edge) and t = 137 (inside
      // both); row 1: one segment
      const segments = Int32Array.from({ length: B * T }, (_, i) => (i >= T ? 0 : i < 60 ? 0 : i < 128 ? 1 : i < 137 ? 2 : 3));
      for (const seg of [undefined, segments]) {
        const sg = g.zeros([3, Di, N]), sc = cpu.zeros([3, Di, N]);
        const mk = (s: 'g' | 'c') => ({
          x: x[s], delta: delta[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: D[s], z: z[s], deltaBias: db[s], segments: seg,
          stateOut: { ssmState: s === 'g' ? sg : sc, slots: Int32Array.from([2, 0]) },
        });
        const what = `Di=${Di} G=${G} N=${N} seg=${!!seg}`;
        const yc = cpu.selectiveScan(mk('c'));
        expectClose(g, g.selectiveScan(mk('g')), yc, 1e-4, `selectiveScan ${what}`);
        expectClose(g, sg, sc, 1e-4, `selectiveScan stateOut ${what}`);
        // y stored as bf16 (outDType): the f32 result rounded as it is stored, so within bf16's rounding of the CPU's
        const yb = g.selectiveScan({ ...mk('g'), outDType: 'bf16' });
        expect(yb.dtype).toBe('bf16');
        expectClose(g, yb, yc, 8e-3, `selectiveScan bf16 y ${what}`);
        const rg = g.selectiveScanBackward(dy.g, mk('g')), rc = cpu.selectiveScanBackward(dy.c, mk('c'));
        for (const key of ['dx', 'ddelta', 'dA', 'dBm', 'dCm', 'dD', 'dz', 'dDeltaBias'] as const) {
          expectClose(g, rg[key]!, rc[key]!, 1e-4, `selectiveScanBackward ${key} ${what}`);
        }
        checkpointed(mk('g'), dy.g, rc, what);
      }
    }
  });

  /**
   * The forward's checkpoints (the states entering the backward's chunks) in place of the backward's own chunk
   * pass and carry: the same output, and gradients equal to the CPU's and to the unchecked path's
   */
  function checkpointed(args: Parameters<typeof g.selectiveScan>[0], dy: Tensor, rc: ReturnType<typeof cpu.selectiveScanBackward>, what: string) {
    const [B, T, Di] = args.x.shape as [number, number, number];
    const [, , G, N] = args.Bm.shape as [number, number, number, number];
    const shape = g.selectiveScanCheckpointShape!(B, T, Di, N, G);
    expect(shape, `checkpoint shape ${what}`).not.toBeNull();
    const ck = g.zeros(shape!);
    const { stateOut: _unused, ...plain } = args;
    closeArrays(g.read(g.selectiveScan({ ...plain, checkpoints: ck })), g.read(g.selectiveScan(plain)), 1e-6, `selectiveScan with checkpoints ${what}`);
    const rk = g.selectiveScanBackward(dy, { ...plain, checkpoints: ck }), ru = g.selectiveScanBackward(dy, plain);
    for (const key of ['dx', 'ddelta', 'dA', 'dBm', 'dCm', 'dD', 'dz', 'dDeltaBias'] as const) {
      if (!rc[key]) continue;
      expectClose(g, rk[key]!, rc[key]!, 1e-4, `selectiveScanBackward with checkpoints ${key} ${what}`);
      closeArrays(g.read(rk[key]!), g.read(ru[key]!), 1e-4, `selectiveScanBackward with checkpoints vs without ${key} ${what}`);
    }
    expect(() => g.selectiveScanBackward(dy, { ...plain, checkpoints: g.zeros([shape![0]!, shape![1]! + 1, shape![2]!, shape![3]!]) }))
      .toThrow(/selectiveScanBackward: checkpoints has \d+ values/);
  }

  it('selectiveScan and its backward, a lane per state: N 4 / 8 / 32, without z and D, a short last chunk, dB / dC stored or summed over blocks', () => {
    // [Di, G, N]: 32 channels per group of N 8 (blocks of 32 channels: stored), 64 per group of N 4 (blocks of
    // 64: stored), 8 per group of N 32 (blocks of 4 channels: two blocks per group, atomics), and 1 channel per
    // group (N 16: a block would be 16 lanes, so the channel-per-thread kernel). T 70: chunks of 32, 32, 6
    for (const [Di, G, N] of [[64, 2, 8], [128, 2, 4], [16, 2, 32], [8, 8, 16]] as const) {
      const B = 2, T = 70;
      const x = rand([B, T, Di], 230), delta = rand([B, T, Di], 231, 0.5), z = rand([B, T, Di], 232);
      const A = uniform([Di, N], 233, -2, -0.1), Bm = rand([B, T, G, N], 234), Cm = rand([B, T, G, N], 235);
      const D = rand([Di], 236), db = rand([Di], 237, 0.3), dy = rand([B, T, Di], 238);
      const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 33 ? 0 : i % T < 65 ? 1 : 2));
      for (const gated of [false, true]) {
        const mk = (s: 'g' | 'c') => ({
          x: x[s], delta: delta[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: gated ? D[s] : null, z: gated ? z[s] : null,
          deltaBias: gated ? db[s] : null, segments: gated ? segments : undefined,
        });
        // the forward in the same layout (chunk states, carry, output) with the state left in slots 1, 0
        const sg = g.zeros([2, Di, N]), sc = cpu.zeros([2, Di, N]);
        const out = (s: 'g' | 'c') => ({ ...mk(s), stateOut: { ssmState: s === 'g' ? sg : sc, slots: Int32Array.from([1, 0]) } });
        expectClose(g, g.selectiveScan(out('g')), cpu.selectiveScan(out('c')), 1e-4, `selectiveScan Di=${Di} G=${G} N=${N} gated=${gated}`);
        expectClose(g, sg, sc, 1e-4, `selectiveScan stateOut Di=${Di} G=${G} N=${N} gated=${gated}`);
        const rg = g.selectiveScanBackward(dy.g, mk('g')), rc = cpu.selectiveScanBackward(dy.c, mk('c'));
        for (const key of ['dx', 'ddelta', 'dA', 'dBm', 'dCm', 'dD', 'dz', 'dDeltaBias'] as const) {
          expect(rg[key] === null, `${key} present`).toBe(rc[key] === null);
          if (rc[key]) expectClose(g, rg[key]!, rc[key]!, 1e-4, `selectiveScanBackward ${key} Di=${Di} G=${G} N=${N} gated=${gated}`);
        }
        checkpointed(mk('g'), dy.g, rc, `Di=${Di} G=${G} N=${N} gated=${gated}`);
      }
    }
  });

  it('selectiveScan and its backward, a lane per state, with B and C at an odd float offset (one state per lane instead of float2 runs)', () => {
    const B = 2, T = 40, Di = 64, G = 4, N = 16, size = B * T * G * N;
    const x = rand([B, T, Di], 240), delta = rand([B, T, Di], 241, 0.5), z = rand([B, T, Di], 242), dy = rand([B, T, Di], 248);
    const A = uniform([Di, N], 243, -2, -0.1), D = rand([Di], 246), db = rand([Di], 247, 0.3);
    const bFlat = rand([size + 1], 244), cFlat = rand([size + 1], 245);
    // views that start one float into their buffers: 4-byte aligned only
    const view = (t: { c: Tensor; g: Tensor }, be: typeof g | typeof cpu, s: 'c' | 'g') => be.reshape(be.rowSlice(t[s], 1, size + 1), [B, T, G, N]);
    const mk = (be: typeof g | typeof cpu, s: 'g' | 'c') => ({
      x: x[s], delta: delta[s], A: A[s], Bm: view(bFlat, be, s), Cm: view(cFlat, be, s), D: D[s], z: z[s], deltaBias: db[s],
    });
    expectClose(g, g.selectiveScan(mk(g, 'g')), cpu.selectiveScan(mk(cpu, 'c')), 1e-4, 'selectiveScan, B / C at an odd offset');
    const rg = g.selectiveScanBackward(dy.g, mk(g, 'g')), rc = cpu.selectiveScanBackward(dy.c, mk(cpu, 'c'));
    for (const key of ['dx', 'ddelta', 'dA', 'dBm', 'dCm', 'dD', 'dz', 'dDeltaBias'] as const) {
      expectClose(g, rg[key]!, rc[key]!, 1e-4, `selectiveScanBackward ${key}, B / C at an odd offset`);
    }
  });

  it('ssdScanBackward: P = 32 (warp sums) and P = 8, segments', () => {
    for (const P of [32, 8]) {
      const B = 2, T = 37, H = 4, G = 2, N = 16;
      const x = rand([B, T, H, P], 40), dt = rand([B, T, H], 41, 0.5), A = uniform([H], 42, -1.5, -0.2);
      const Bm = rand([B, T, G, N], 43), Cm = rand([B, T, G, N], 44), D = rand([H], 45), dtBias = rand([H], 46, 0.3);
      const dy = rand([B, T, H, P], 47);
      const segments = Int32Array.from({ length: B * T }, (_, i) => (i % T < 20 ? 0 : 1));
      const mk = (s: 'g' | 'c') => ({ x: x[s], dt: dt[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: D[s], dtBias: dtBias[s], chunkSize: 8, segments });
      const rg = g.ssdScanBackward(dy.g, mk('g')), rc = cpu.ssdScanBackward(dy.c, mk('c'));
      for (const key of ['dx', 'ddt', 'dA', 'dBm', 'dCm', 'dD', 'dDtBias'] as const) {
        expectClose(g, rg[key]!, rc[key]!, 1e-4, `ssdScan ${key} P=${P}`);
      }
    }
  });

  it('gatedRmsNormBackward', () => {
    const y = rand([6, 48], 50), z = rand([6, 48], 51), w = rand([48], 52), d = rand([6, 48], 53);
    const og = g.gatedRmsNormBackward(d.g, y.g, z.g, w.g, 16, 1e-5), oc = cpu.gatedRmsNormBackward(d.c, y.c, z.c, w.c, 16, 1e-5);
    expectClose(g, og.dy, oc.dy, 1e-5, 'gatedRmsNorm dy');
    expectClose(g, og.dz, oc.dz, 1e-5, 'gatedRmsNorm dz');
    expectClose(g, og.dw, oc.dw, 1e-5, 'gatedRmsNorm dw');
  });

  it('adamwStep with an f32 param and with a bf16 param + f32 master', () => {
    // sizes: a multiple of 4, and n % 4 = 3 (the 4-wide kernel's scalar tail); views at element offset 1
    // (4 bytes, 2 for bf16: the unaligned fallback) and 4 (16 / 8 bytes: the 4-wide kernel on views).
    // The whole base tensors are compared, so a write outside the view would show too.
    const cases = [{ n: 300, off: 0 }, { n: 1027, off: 0 }, { n: 4096, off: 0 }, { n: 1027, off: 1 }, { n: 1027, off: 4 }];
    for (const { n, off } of cases) {
      for (const dtype of ['f32', 'bf16'] as const) {
        const what = `${dtype} n=${n} offset ${off}`;
        const p = rand([n + off], 60, 1, dtype), grad = rand([n + off], 61), m = rand([n + off], 62, 0.1);
        const v = uniform([n + off], 63, 0, 0.1), master = dtype === 'bf16' ? rand([n + off], 60) : null;
        const view = (x: { c: Tensor; g: Tensor }) => ({ c: cpu.rowSlice(x.c, off, off + n), g: g.rowSlice(x.g, off, off + n) });
        const pv = view(p), gv = view(grad), mv = view(m), vv = view(v);
        const masterV = master ? view(master) : null;
        for (let step = 1; step <= 3; step++) {
          const h = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step };
          g.adamwStep({ param: pv.g, grad: gv.g, m: mv.g, v: vv.g, master: masterV?.g ?? null, ...h });
          cpu.adamwStep({ param: pv.c, grad: gv.c, m: mv.c, v: vv.c, master: masterV?.c ?? null, ...h });
        }
        expectClose(g, m.g, m.c, 1e-6, `adamw m ${what}`);
        expectClose(g, v.g, v.c, 1e-6, `adamw v ${what}`);
        if (master) expectClose(g, master.g, master.c, 1e-5, `adamw master ${what}`);
        // bf16: a value within one ulp of the CPU's may round to the neighbouring bf16 number
        expectClose(g, p.g, p.c, dtype === 'f32' ? 1e-5 : 1e-2, `adamw param ${what}`);
        expect(p.g.dtype).toBe(dtype);
      }
    }
  });

  it('adamwStep counts the non-finite weights it stores (nonFinite), as the CPU does', () => {
    // element 5: a NaN gradient; element 9 (bf16): a master value the rounding overflows to infinity; n % 4 = 3 (the tail)
    for (const dtype of ['f32', 'bf16'] as const) {
      const n = 1027;
      const gradV = new Float32Array(n).fill(0.01);
      gradV[5] = NaN;
      const masterV = new Float32Array(n).fill(0.5);
      masterV[9] = 3.4e38;  // finite in f32, past the halfway point above the largest bf16 (3.3895e38): rounds to infinity
      const mk = (b: typeof g | typeof cpu) => {
        const master = dtype === 'bf16' ? b.fromArray(masterV, [n]) : null;
        return { param: b.fromArray(masterV, [n], dtype), grad: b.fromArray(gradV, [n]), m: b.zeros([n]), v: b.zeros([n]), master, bad: b.zeros([1]) };
      };
      const a = mk(g), c = mk(cpu);
      const h = { lr: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 };
      g.adamwStep({ param: a.param, grad: a.grad, m: a.m, v: a.v, master: a.master, nonFinite: a.bad, ...h });
      cpu.adamwStep({ param: c.param, grad: c.grad, m: c.m, v: c.v, master: c.master, nonFinite: c.bad, ...h });
      const want = dtype === 'bf16' ? 2 : 1;  // f32: 3.4e38 is finite
      expect(cpu.read(c.bad)[0], `cpu ${dtype}`).toBe(want);
      expect(g.read(a.bad)[0], `cuda ${dtype}`).toBeGreaterThanOrEqual(1);
      // a finite update adds nothing
      const z = g.zeros([1]);
      g.adamwStep({ param: g.fromArray(new Float32Array(n).fill(1), [n]), grad: g.fromArray(new Float32Array(n).fill(0.1), [n]), m: g.zeros([n]), v: g.zeros([n]),
        master: null, nonFinite: z, ...h });
      expect(g.read(z)[0]).toBe(0);
    }
  });
});
