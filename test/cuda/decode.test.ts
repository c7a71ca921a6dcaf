// The decode-path kernels against the CPU reference: split-K paged attention (decode_attention.cu),
// the lane-per-state selective scan step, and the pinned upload ring (addon.cpp) under a GPU that
// lags behind the host. Attention is compared per sequence (a long sequence's output is a small
// average; a tolerance on the whole batch's scale would hide its errors): 1e-5 of that sequence's
// largest value. Scan steps: 1e-4 (f32 sums of N terms against f64), as in ops.test.ts.
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/util/rng.js';
import { available, closeArrays, cpu, expectClose, gpu, rand, skipReason } from './helpers.js';

/** a random permutation of [0, n): block ids handed out in scattered, non-monotonic order */
function shuffled(n: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  const a = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

describe.skipIf(!available)(`cuda decode path vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const g = gpu!;

  /**
   * Caches filled with random values (the same on both backends, bf16-rounded for bf16), each
   * sequence's blocks taken from a shuffled list, and the table's unused entries set to −1 (never read).
   */
  function checkPaged(lens: number[], Hkv: number, group: number, Dh: number, bs: number, dtype: 'f32' | 'bf16', seed: number): void {
    const n = lens.length, Hq = Hkv * group;
    const blocksOf = lens.map((L) => Math.ceil(L / bs));
    const maxBlocks = Math.max(1, ...blocksOf);
    const used = blocksOf.reduce((a, b) => a + b, 0);
    const numBlocks = used + 3;  // a few blocks no sequence owns
    const order = shuffled(numBlocks, seed);
    const tables = new Int32Array(n * maxBlocks).fill(-1);
    let next = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < blocksOf[i]!; j++) tables[i * maxBlocks + j] = order[next++]!;
    const kc = rand([numBlocks, bs, Hkv, Dh], seed + 1, 1, dtype), vc = rand([numBlocks, bs, Hkv, Dh], seed + 2, 1, dtype);
    const q = rand([n, Hq, Dh], seed + 3);
    const seqLens = Int32Array.from(lens);
    const scale = 2 / Math.sqrt(Dh);  // peaked softmax: the max moves between chunks
    const og = g.pagedAttentionDecode(q.g, kc.g, vc.g, tables, maxBlocks, seqLens, scale);
    const oc = cpu.pagedAttentionDecode(q.c, kc.c, vc.c, tables, maxBlocks, seqLens, scale);
    expect(og.shape).toEqual([n, Hq, Dh]);
    const a = g.read(og), b = cpu.read(oc), row = Hq * Dh;
    // bf16 caches at Dh 64 / 128 take the tensor-core pass: Q and P as bf16 hi + lo parts (2⁻¹⁸ relative each)
    // and the tensor cores' f32 accumulation put its error at ~1e-5 of the output's scale; f32 caches: 1e-5
    const rtol = dtype === 'bf16' && (Dh === 64 || Dh === 128) ? 3e-5 : 1e-5;
    for (let i = 0; i < n; i++) {
      closeArrays(a.subarray(i * row, (i + 1) * row), b.subarray(i * row, (i + 1) * row), rtol,
        `paged decode ${dtype} Dh=${Dh} Hkv=${Hkv} group=${group} bs=${bs} seq ${i} (len ${lens[i]})`);
    }
    for (const t of [og, kc.g, vc.g, q.g]) t.dispose();
  }

  it('split-K paged decode: lengths 0..1000 across many chunks, GQA groups 1/3/4, head dims 16/64/128, both caches', () => {
    const lens = [0, 1, 255, 256, 257, 1000];
    let seed = 200;
    for (const dtype of ['f32', 'bf16'] as const) {
      for (const Dh of [16, 64, 128]) {
        for (const [Hkv, group] of [[3, 1], [2, 3], [1, 4]] as const) {
          checkPaged(lens, Hkv, group, Dh, Dh === 64 ? 5 : 16, dtype, (seed += 10));  // block size 5: chunks cut blocks
        }
      }
    }
  });

  it('split-K paged decode: unusual shapes (Dh 24 / 256, group 16, one chunk, all empty, fallback head dims)', () => {
    for (const dtype of ['f32', 'bf16'] as const) {
      checkPaged([300, 7, 0, 65], 2, 2, 24, 16, dtype, 400);   // 16-byte vectors per row: 3 (bf16), 6 (f32)
      checkPaged([130, 1, 513], 1, 2, 256, 16, dtype, 410);    // f32: two vectors per lane in the score pass
      checkPaged([300, 5], 1, 16, 256, 16, dtype, 420);       // four blocks of 4 q heads; f32: 16-row tiles to fit shared memory
      checkPaged([3, 0, 17], 2, 3, 64, 16, dtype, 430);       // one chunk: pass 1 writes the output itself
      checkPaged([0, 0], 2, 2, 32, 16, dtype, 440);           // no keys anywhere
      checkPaged([40, 0, 90], 1, 48, 256, 16, dtype, 450);    // group 48: twelve head blocks
      checkPaged([33, 0, 200], 2, 3, 12, 4, dtype, 460);      // head dim not a multiple of 8: the warp-per-head kernel
    }
  });

  it('split-K paged decode: many sequences, so few chunks each — several tiles per chunk (two stages, online softmax), per-sequence chunk lengths', () => {
    // the launch plans ~2 waves of blocks: 300 sequences × 2 kv heads give 2 chunks per sequence (up to 6 tiles
    // of 64 keys in a chunk), 800 × 1 one chunk (the direct path, up to 6 tiles)
    const lensOf = (n: number, max: number, seed: number): number[] => {
      const rng = new Rng(seed);
      return Array.from({ length: n }, () => Math.floor(rng.range(0, max + 1)));
    };
    let seed = 600;
    for (const dtype of ['f32', 'bf16'] as const) {
      checkPaged(lensOf(300, 700, (seed += 10)), 2, 3, 64, 16, dtype, seed);
      checkPaged(lensOf(800, 330, (seed += 10)), 1, 3, 64, 16, dtype, seed);
    }
  });

  it('selectiveScanStep: wide channels (Di 3072, N 16) over several slots, N = 1, 4, 5, 8, 32, 40; with and without the optional inputs', () => {
    // N = 4, 8, 16, 32 (16-byte aligned rows): the thread-per-channel float4 kernel; others: lanes per state
    const cases = [
      { Di: 3072, N: 16, G: 192, S: 6, slots: [5, 0, 3, 2] },  // M1-3B: 192 groups of 16 channels
      { Di: 3072, N: 16, G: 1, S: 6, slots: [5, 0, 3, 2] },
      { Di: 200, N: 4, G: 5, S: 3, slots: [2, 1] },  // Di not a multiple of the 128-thread block
      { Di: 96, N: 8, G: 3, S: 4, slots: [1, 3, 0] },
      { Di: 130, N: 32, G: 2, S: 3, slots: [0, 2] },
      { Di: 64, N: 1, G: 2, S: 3, slots: [2, 0] },
      { Di: 96, N: 5, G: 3, S: 4, slots: [1, 3, 0] },
      { Di: 32, N: 40, G: 1, S: 2, slots: [1] },  // N > 32: a warp per channel, lanes loop over the states
    ];
    let seed = 500;
    for (const { Di, N, G, S, slots: sl } of cases) {
      const n = sl.length, slots = Int32Array.from(sl);
      for (const full of [true, false]) {
        const A = rand([Di, N], (seed += 10), 0.5), D = rand([Di], seed + 1), db = rand([Di], seed + 2, 0.3);
        const st = rand([S, Di, N], seed + 3);  // a non-zero state to continue from
        for (let step = 0; step < 3; step++) {
          const x = rand([n, Di], seed + 4 + step), delta = rand([n, Di], seed + 5 + step, 0.5), z = rand([n, Di], seed + 6 + step);
          const Bm = rand([n, G, N], seed + 7 + step), Cm = rand([n, G, N], seed + 8 + step);
          const args = (s: 'g' | 'c') => ({
            x: x[s], delta: delta[s], A: A[s], Bm: Bm[s], Cm: Cm[s], D: full ? D[s] : null, z: full ? z[s] : null,
            deltaBias: full ? db[s] : null, ssmState: st[s], slots,
          });
          const what = `selectiveScanStep Di=${Di} N=${N} G=${G} full=${full} step ${step}`;
          expectClose(g, g.selectiveScanStep(args('g')), cpu.selectiveScanStep(args('c')), 1e-4, what);
          expectClose(g, st.g, st.c, 1e-4, `${what}: state`);
        }
      }
    }
  });

  it('mamba1DecodeStep: the fused kernel (M1-3B widths, N = 4, 8, 32, with and without conv bias) and the unfused path it leaves to (N = 5, odd dt rank) equal the CPU definition, with f32 and bf16 states (SSM and conv)', () => {
    const cases = [
      { Di: 3072, dXb: 1024, N: 16, R: 192, K: 4, S: 6, slots: [5, 0, 3, 2], bias: true },  // M1-3B
      { Di: 96, dXb: 32, N: 4, R: 8, K: 4, S: 3, slots: [2, 0], bias: false },
      { Di: 64, dXb: 64, N: 8, R: 4, K: 2, S: 4, slots: [1, 3, 0], bias: true },  // no repeat
      { Di: 128, dXb: 32, N: 32, R: 12, K: 4, S: 2, slots: [1], bias: true },
      { Di: 60, dXb: 20, N: 5, R: 6, K: 4, S: 3, slots: [0, 2], bias: true },  // N = 5: the unfused ops
      { Di: 64, dXb: 16, N: 16, R: 7, K: 4, S: 3, slots: [2, 1], bias: true },  // row width not a multiple of 4: unfused
      { Di: 48, dXb: 16, N: 16, R: 4, K: 4, S: 3, slots: [2, 0], bias: true },  // Di not a multiple of the kernel's 32-channel warp tiles
      { Di: 200, dXb: 40, N: 8, R: 4, K: 4, S: 4, slots: [3, 1, 2], bias: false },
      // 300 tokens over 320 slots
      { Di: 96, dXb: 32, N: 16, R: 8, K: 4, S: 320, slots: Array.from({ length: 300 }, (_, i) => (i * 7) % 320), bias: true },
    ];
    let seed = 900;
    for (const { Di, dXb, N, R, K, S, slots: sl, bias, st } of cases.flatMap((c) => [{ ...c, st: 'f32' as const }, { ...c, st: 'bf16' as const }])) {
      // a bf16 state (the reference's) is stored rounded by both backends: a rounding that falls the other way
      // on the two sides is one bf16 ulp of that value, and the steps after it read those states
      const n = sl.length, slots = Int32Array.from(sl), P = 2 * Di + 2 * dXb + R;
      const aLog = rand([Di, N], (seed += 20), 0.5), D = rand([Di], seed + 1), db = rand([Di], seed + 2, 0.3);
      const w = rand([Di, K], seed + 3), cb = rand([Di], seed + 4);
      const ss = rand([S, Di, N], seed + 5, 1, st), cs = rand([S, Di, K - 1], seed + 6, 1, st);  // states to continue from
      const tolY = (step: number) => (st === 'f32' || step === 0 ? 1e-4 : 8e-3), tolSt = st === 'f32' ? 1e-4 : 8e-3;
      for (let step = 0; step < 3; step++) {
        const proj = rand([n, P], seed + 7 + step), dl = rand([n, Di], seed + 10 + step, 0.5);
        const args = (q: 'g' | 'c') => ({
          proj: proj[q], deltaLow: dl[q], dims: { dInner: Di, dXb, dState: N, dtRank: R }, convState: cs[q], convWeight: w[q],
          convBias: bias ? cb[q] : null, aLog: aLog[q], D: D[q], dtBias: db[q], ssmState: ss[q], slots,
        });
        const what = `mamba1DecodeStep Di=${Di} dXb=${dXb} N=${N} R=${R} n=${n} ${st} state, step ${step}`;
        expectClose(g, g.mamba1DecodeStep(args('g')), cpu.mamba1DecodeStep(args('c')), tolY(step), what);
        expectClose(g, ss.g, ss.c, tolSt, `${what}: ssm state`);
        expect(ss.g.dtype).toBe(st);
        expect(cs.g.dtype).toBe(st);
        expectClose(g, cs.g, cs.c, 0, `${what}: conv state`);
      }
    }
    // bf16 weights read in place (no f32 copies) and a bf16 output for a bf16 out_proj; in_proj's output (proj) f32,
    // then bf16 as a bf16 model stores it (read in place: the B and C rows staged as bf16)
    for (const pd of ['f32', 'bf16'] as const) {
      const Di = 3072, dXb = 1024, N = 16, R = 192, K = 4, slots = Int32Array.from([3, 1]), n = 2, P = 2 * Di + 2 * dXb + R;
      const aLog = rand([Di, N], 990, 0.5), D = rand([Di], 991, 1, 'bf16'), db = rand([Di], 992, 0.3, 'bf16');
      const w = rand([Di, K], 993, 1, 'bf16'), cb = rand([Di], 994, 1, 'bf16');
      const ss = rand([4, Di, N], 995), cs = rand([4, Di, K - 1], 996);
      const proj = rand([n, P], 997, 1, pd), dl = rand([n, Di], 998, 0.5);
      const args = (q: 'g' | 'c') => ({
        proj: proj[q], deltaLow: dl[q], dims: { dInner: Di, dXb, dState: N, dtRank: R }, convState: cs[q], convWeight: w[q],
        convBias: cb[q], aLog: aLog[q], D: D[q], dtBias: db[q], ssmState: ss[q], slots, outDType: 'bf16' as const,
      });
      const yg = g.mamba1DecodeStep(args('g'));
      expect(yg.dtype).toBe('bf16');
      expectClose(g, yg, cpu.mamba1DecodeStep(args('c')), 8e-3, `mamba1DecodeStep, bf16 weights and output, ${pd} proj`);
      expectClose(g, ss.g, ss.c, 1e-4, `mamba1DecodeStep, bf16 weights, ${pd} proj: ssm state`);
      expectClose(g, cs.g, cs.c, 0, `mamba1DecodeStep, bf16 weights, ${pd} proj: conv state`);
    }
    const bad = rand([2, 10], 1);
    expect(() => g.mamba1DecodeStep({
      proj: bad.g, deltaLow: bad.g, dims: { dInner: 4, dXb: 4, dState: 4, dtRank: 4 }, convState: g.zeros([1, 4, 3]), convWeight: g.zeros([4, 4]),
      convBias: null, aLog: g.zeros([4, 4]), D: g.zeros([4]), dtBias: g.zeros([4]), ssmState: g.zeros([1, 4, 4]), slots: Int32Array.from([0, 0]),
    })).toThrow(/mamba1DecodeStep: proj must be \[n, 20\]/);
  });

  it('uploads: many index arrays (more than the 8 MiB pinned ring, some over the 1 MiB staging limit) queued behind slow GPU work', () => {
    const V = 50, D = 4;
    const table = rand([V, D], 600);
    // keep the GPU busy for a while so the uploads below queue up behind it and the ring wraps
    // while its earlier copies are still pending
    const big = g.zeros([4096, 4096]);
    const busy = [];
    for (let i = 0; i < 4; i++) busy.push(g.matmul(big, big));
    const rng = new Rng(601);
    const sizes = [1, 3, 100_000, 64, 300_000];  // 300 000 ids = 1.2 MB: the pageable path
    const idsList: Int32Array[] = [];
    const outs = [];
    let staged = 0;  // bytes that go through the ring
    for (let k = 0; k < 56; k++) {
      const len = k % 7 === 6 ? sizes[k % sizes.length]! : 100_000 + k;
      const ids = new Int32Array(len);
      for (let j = 0; j < len; j++) ids[j] = Math.floor(rng.uniform() * V);
      idsList.push(ids);
      outs.push(g.embedding(table.g, ids));
      if (ids.byteLength <= 1024 * 1024) staged += ids.byteLength;
    }
    expect(staged).toBeGreaterThan(2 * 8 * 1024 * 1024);
    for (let k = 0; k < idsList.length; k++) {
      expectClose(g, outs[k]!, cpu.embedding(table.c, idsList[k]!), 0, `embedding after upload ${k} (${idsList[k]!.length} ids)`);
      outs[k]!.dispose();
    }
    for (const t of [...busy, big]) t.dispose();
  });
  it('an allocation the device cannot hold fails with out of memory, and the next ops run normally', () => {
    // more than any GPU holds: the allocator gives its cache back, retries, and reports the failure; the
    // failure must not stay as the thread's last CUDA error (the next kernel would report it as its own)
    expect(() => g.zeros([64, 2 ** 30])).toThrow(/out of memory/i);
    const a = rand([4, 32], 901), b = rand([4, 32], 902);
    expectClose(g, g.add(a.g, b.g), cpu.add(a.c, b.c), 0, 'add after a failed allocation');
    const ids = Int32Array.from([3, 1, 0]);
    const table = rand([5, 32], 903);
    expectClose(g, g.embedding(table.g, ids), cpu.embedding(table.c, ids), 0, 'embedding after a failed allocation');
  });
});
