import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import type { SampleRowsArgs } from '../src/backend/backend.js';
import {
  argmax, defaultSampler, DeviceSampler, HostSampler, logprobOf, MAX_TOP_LOGPROBS, RowSampler, samplingParams, topKIndices, type SampleRow, type SamplingParams,
} from '../src/infer/sampling.js';
import { UserError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

const params = (p: Partial<SamplingParams>) => samplingParams(p);
/** logits whose softmax is exactly the given probabilities */
const logitsOf = (probs: number[]) => probs.map((p) => Math.log(p));

function expectDist(got: Float64Array, want: number[], tol = 1e-9): void {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(Math.abs(got[i]! - w), `p[${i}] = ${got[i]}, want ${w}`).toBeLessThan(tol));
}

describe('sampling parameters', () => {
  it('fills defaults and rejects out-of-range values with the field name', () => {
    expect(samplingParams()).toEqual({ temperature: 1, topP: 1, topK: -1, minP: 0 });
    expect(samplingParams({ temperature: undefined, topK: 0 })).toEqual({ temperature: 1, topP: 1, topK: 0, minP: 0 });
    const bad: [Partial<SamplingParams>, RegExp][] = [
      [{ temperature: -0.1 }, /temperature must be a finite number ≥ 0, got -0.1/],
      [{ temperature: NaN }, /temperature/],
      [{ temperature: Infinity }, /temperature/],
      [{ topP: 0 }, /top_p must be in \(0, 1\], got 0/],
      [{ topP: 1.01 }, /top_p must be in \(0, 1\], got 1.01/],
      [{ topK: -2 }, /top_k must be an integer ≥ -1/],
      [{ topK: 2.5 }, /top_k must be an integer/],
      [{ minP: -0.1 }, /min_p must be in \[0, 1\]/],
      [{ minP: 1.5 }, /min_p must be in \[0, 1\], got 1.5/],
    ];
    for (const [p, re] of bad) {
      expect(() => samplingParams(p)).toThrow(UserError);
      expect(() => samplingParams(p)).toThrow(re);
    }
  });
});

describe('filters on hand-made logits', () => {
  const probs = [0.05, 0.5, 0.15, 0.3];
  const row = logitsOf(probs);
  const s = new RowSampler(4);

  it('temperature 1 without filters is the softmax; temperature T is softmax(logits / T)', () => {
    expectDist(s.distribution(row, params({})), probs);
    const sq = probs.map((p) => Math.sqrt(p));
    const z = sq.reduce((a, b) => a + b, 0);
    expectDist(s.distribution(row, params({ temperature: 2 })), sq.map((x) => x / z));
  });

  it('top-k keeps the k most likely tokens, renormalised', () => {
    expectDist(s.distribution(row, params({ topK: 2 })), [0, 0.5 / 0.8, 0, 0.3 / 0.8]);
    expectDist(s.distribution(row, params({ topK: 1 })), [0, 1, 0, 0]);
    // -1, 0 and k ≥ V are all "off"
    for (const k of [-1, 0, 4, 99]) expectDist(s.distribution(row, params({ topK: k })), probs);
  });

  it('top-p keeps the shortest most-likely prefix reaching p', () => {
    expectDist(s.distribution(row, params({ topP: 0.5 })), [0, 1, 0, 0]);
    expectDist(s.distribution(row, params({ topP: 0.75 })), [0, 0.5 / 0.8, 0, 0.3 / 0.8]);
    expectDist(s.distribution(row, params({ topP: 0.85 })), [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95]);
    expectDist(s.distribution(row, params({ topP: 1 })), probs);
  });

  it('top-p measures mass over what top-k left', () => {
    // after top-k 3: [0.5, 0.3, 0.15] / 0.95 → cumulative 0.526, 0.842: p = 0.8 keeps two tokens
    expectDist(s.distribution(row, params({ topK: 3, topP: 0.8 })), [0, 0.5 / 0.8, 0, 0.3 / 0.8]);
    // without top-k, 0.5 + 0.3 = 0.8 ≥ 0.79 also keeps two; 0.81 needs the third
    expectDist(s.distribution(row, params({ topP: 0.81 })), [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95]);
    expectDist(s.distribution(row, params({ topK: 3, topP: 0.81 })), [0, 0.5 / 0.8, 0, 0.3 / 0.8]);
  });

  it('min-p drops tokens below min_p × the top probability (after temperature)', () => {
    // threshold 0.31 × 0.5 = 0.155: 0.15 and 0.05 go
    expectDist(s.distribution(row, params({ minP: 0.31 })), [0, 0.5 / 0.8, 0, 0.3 / 0.8]);
    // threshold 0.29 × 0.5 = 0.145 keeps 0.15
    expectDist(s.distribution(row, params({ minP: 0.29 })), [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95]);
    expectDist(s.distribution(row, params({ minP: 1 })), [0, 1, 0, 0]);
    // with temperature 2 the tempered probs ∝ √p: √0.15/√0.5 = 0.548 ≥ 0.5, √0.05/√0.5 = 0.316 < 0.5
    const sq = [0, Math.sqrt(0.5), Math.sqrt(0.15), Math.sqrt(0.3)];
    const z = sq.reduce((a, b) => a + b, 0);
    expectDist(s.distribution(row, params({ temperature: 2, minP: 0.5 })), sq.map((x) => x / z));
  });

  it('all filters together keep the shortest prefix', () => {
    expectDist(s.distribution(row, params({ topK: 3, topP: 0.9, minP: 0.5 })), [0, 0.5 / 0.8, 0, 0.3 / 0.8]);
  });

  it('temperature 0 is greedy whatever the uniform and the other filters; ties go to the lowest id', () => {
    for (const u of [0, 0.3, 0.999]) expect(s.sample(row, params({ temperature: 0, topP: 0.5, minP: 0.9 }), u)).toBe(1);
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expectDist(s.distribution(row, params({ temperature: 0 })), [0, 1, 0, 0]);
  });

  it('sampling inverts the CDF of the kept tokens in descending-probability order', () => {
    // kept with top-k 2: token 1 (0.625) then token 3 (0.375)
    expect(s.sample(row, params({ topK: 2 }), 0)).toBe(1);
    expect(s.sample(row, params({ topK: 2 }), 0.624)).toBe(1);
    expect(s.sample(row, params({ topK: 2 }), 0.626)).toBe(3);
    expect(s.sample(row, params({ topK: 2 }), 0.999999)).toBe(3);
    // without filters, id order: [0, 0.05) → 0, [0.05, 0.55) → 1, [0.55, 0.7) → 2, [0.7, 1) → 3
    expect([0.01, 0.06, 0.56, 0.71].map((u) => s.sample(row, params({}), u))).toEqual([0, 1, 2, 3]);
  });

  it('rejects rows of the wrong length', () => {
    expect(() => s.sample([1, 2, 3], params({}), 0.5)).toThrow(/3 entries, vocabulary is 4/);
  });
});

describe('draws', () => {
  it('the empirical distribution matches the filtered one', () => {
    const V = 40;
    const rng = new Rng(5);
    const row = Array.from({ length: V }, () => rng.normal() * 2);
    const s = new RowSampler(V);
    for (const p of [params({ temperature: 0.7 }), params({ temperature: 1.3, topK: 10, topP: 0.9 }), params({ minP: 0.05, topP: 0.95 })]) {
      const want = s.distribution(row, p);
      const counts = new Float64Array(V);
      const draws = 40000;
      const u = new Rng(11);
      for (let i = 0; i < draws; i++) counts[s.sample(row, p, u.uniform())]!++;
      for (let i = 0; i < V; i++) {
        const f = counts[i]! / draws;
        // 5 standard deviations of a binomial proportion, plus a little
        const sd = Math.sqrt((want[i]! * (1 - want[i]!)) / draws);
        expect(Math.abs(f - want[i]!), `token ${i}: ${f} vs ${want[i]}`).toBeLessThanOrEqual(5 * sd + 1e-4);
        if (want[i] === 0) expect(counts[i]).toBe(0);
      }
    }
  });

  it('the same seed gives the same tokens', () => {
    const V = 30;
    const row = Array.from({ length: V }, (_, i) => Math.sin(i * 1.7) * 3);
    const s = new RowSampler(V);
    const run = (seed: number) => {
      const r = new Rng(seed);
      return Array.from({ length: 50 }, () => s.sample(row, params({ temperature: 1, topP: 0.9 }), r.uniform()));
    };
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
  });
});

describe('HostSampler', () => {
  it('samples each row from its logits row and returns logprobs of the unmodified logits', () => {
    const be = new CpuBackend();
    const V = 5;
    const rows = [[0.1, 2, -1, 0.5, 1.5], [3, 0, 0, 0, 2.9]];
    const logits = be.fromArray(rows.flat(), [2, V]);
    const sampler = new HostSampler(be, V);
    const out = { tokens: new Int32Array(3), logprobs: new Float32Array(3) };
    const hot = params({ temperature: 0.5, topK: 2 });
    sampler.sample(logits, [
      { params: params({ temperature: 0 }), uniform: 0, logitsRow: 1 },
      { params: hot, uniform: 0.99, logitsRow: 0 },
      { params: params({ temperature: 0 }), uniform: 0, logitsRow: 0 },
    ], out);
    expect(Array.from(out.tokens)).toEqual([0, 4, 1]);
    // log-softmax of the raw row, not of the tempered / top-k one
    const lse = (r: number[]) => Math.log(r.reduce((a, x) => a + Math.exp(x), 0));
    expect(out.logprobs[0]).toBeCloseTo(3 - lse(rows[1]!), 6);
    expect(out.logprobs[1]).toBeCloseTo(1.5 - lse(rows[0]!), 6);
    expect(logprobOf(rows[0]!, 1)).toBeCloseTo(2 - lse(rows[0]!), 12);
    expect(() => sampler.sample(logits, [{ params: hot, uniform: 0.1, logitsRow: 2 }], out)).toThrow(/logitsRow = 2 is outside \[0, 2\)/);
  });
});

/** the brute-force reference: every index sorted by value descending, ties to the lower index */
function sortedIndices(row: ArrayLike<number>): number[] {
  return Array.from({ length: row.length }, (_, i) => i).sort((a, b) => row[b]! - row[a]! || a - b);
}

describe('top-logprobs', () => {
  it('topKIndices is the k-prefix of a full stable sort, ties to the lower id', () => {
    const rng = new Rng(3);
    const ids = new Int32Array(MAX_TOP_LOGPROBS);
    for (let trial = 0; trial < 50; trial++) {
      const V = 1 + Math.floor(rng.uniform() * 60);
      // few distinct values, so ties are everywhere (including across the k-th place)
      const row = Float32Array.from({ length: V }, () => (trial % 2 ? Math.floor(rng.uniform() * 5) : rng.normal()));
      const want = sortedIndices(row);
      for (const k of [0, 1, 2, 3, 7, MAX_TOP_LOGPROBS]) {
        if (k > V) continue;
        ids.fill(-1);
        topKIndices(row, k, ids);
        expect(Array.from(ids.subarray(0, k)), `trial ${trial}, V ${V}, k ${k}`).toEqual(want.slice(0, k));
      }
    }
    // all equal: the first k ids; descending input: the prefix
    topKIndices([2, 2, 2, 2, 2], 3, ids);
    expect(Array.from(ids.subarray(0, 3))).toEqual([0, 1, 2]);
    topKIndices([1, 5, 5, 9, 0, 9], 4, ids);
    expect(Array.from(ids.subarray(0, 4))).toEqual([3, 5, 1, 2]);
    expect(() => topKIndices([1, 2], 3, ids)).toThrow(/k = 3 is outside \[0, 2\]/);
  });

  it('HostSampler: alternatives are the sorted log-softmax of the raw row; tokens do not change; fast path only without them', () => {
    const be = new CpuBackend();
    const V = 50, n = 4;
    const rng = new Rng(8);
    // row 2 has a five-way tie at the top (ties go to the lower id)
    const host = Float32Array.from({ length: n * V }, (_, i) => (i >= 2 * V && i < 3 * V ? Math.floor(rng.uniform() * 3) : rng.normal() * 2));
    const logits = be.wrap(host, [n, V]);
    let argmaxCalls = 0;
    const argmaxRows = be.argmaxRows.bind(be);
    be.argmaxRows = (t) => (argmaxCalls++, argmaxRows(t));
    const sampler = new HostSampler(be, V);
    const mk = () => ({
      tokens: new Int32Array(n), logprobs: new Float32Array(n),
      topIds: new Int32Array(n * MAX_TOP_LOGPROBS).fill(-1), topLogprobs: new Float32Array(n * MAX_TOP_LOGPROBS),
    });
    const greedy = params({ temperature: 0 });
    const cases: SampleRow[][] = [
      // all greedy
      [0, 1, 2, 3].map((r) => ({ params: greedy, uniform: 0, logitsRow: r })),
      // mixed greedy and sampled, one row shared by two samples
      [
        { params: params({ temperature: 0.9, topP: 0.9 }), uniform: 0.37, logitsRow: 0 },
        { params: greedy, uniform: 0, logitsRow: 2 },
        { params: params({ temperature: 1.5, topK: 7 }), uniform: 0.81, logitsRow: 3 },
        { params: params({ minP: 0.1 }), uniform: 0.05, logitsRow: 3 },
      ],
    ];
    for (const rows of cases) {
      const plain = mk();
      argmaxCalls = 0;
      sampler.sample(logits, rows, plain);
      const allGreedy = rows.every((r) => r.params.temperature === 0);
      expect(argmaxCalls).toBe(allGreedy ? 1 : 0);
      expect(Array.from(plain.topIds).every((x) => x === -1)).toBe(true);

      const ks = [3, 0, MAX_TOP_LOGPROBS, 1];
      const withTop = mk();
      argmaxCalls = 0;
      sampler.sample(logits, rows.map((r, i) => ({ ...r, topLogprobs: ks[i] })), withTop);
      expect(argmaxCalls).toBe(0);
      expect(Array.from(withTop.tokens)).toEqual(Array.from(plain.tokens));
      for (let i = 0; i < n; i++) {
        const r = rows[i]!.logitsRow;
        const row = host.subarray(r * V, (r + 1) * V);
        expect(Math.abs(withTop.logprobs[i]! - plain.logprobs[i]!)).toBeLessThan(1e-5);
        const want = sortedIndices(row).slice(0, ks[i]);
        const got = Array.from(withTop.topIds.subarray(i * MAX_TOP_LOGPROBS, i * MAX_TOP_LOGPROBS + ks[i]!));
        expect(got, `row ${i}`).toEqual(want);
        // untouched past k
        if (ks[i]! < MAX_TOP_LOGPROBS) expect(withTop.topIds[i * MAX_TOP_LOGPROBS + ks[i]!]).toBe(-1);
        for (let j = 0; j < ks[i]!; j++) {
          const lp = withTop.topLogprobs[i * MAX_TOP_LOGPROBS + j]!;
          expect(Math.abs(lp - logprobOf(row, want[j]!)), `row ${i} alt ${j}`).toBeLessThan(1e-6);
          // the chosen token among them carries the very same number
          if (want[j] === withTop.tokens[i]) expect(lp).toBe(withTop.logprobs[i]);
        }
      }
    }
    // greedy with k ≥ 1: the top alternative is the chosen token
    const g = mk();
    sampler.sample(logits, [{ params: greedy, uniform: 0, logitsRow: 2, topLogprobs: 2 }], g);
    expect(g.topIds[0]).toBe(g.tokens[0]);
    expect(g.tokens[0]).toBe(argmax(host.subarray(2 * V, 3 * V)));

    const bad = (k: number) => () => sampler.sample(logits, [{ params: greedy, uniform: 0, logitsRow: 0, topLogprobs: k }], mk());
    expect(bad(MAX_TOP_LOGPROBS + 1)).toThrow(/rows\[0\]\.topLogprobs = 21 is not an integer in \[0, 20\]/);
    expect(bad(1.5)).toThrow(/topLogprobs = 1.5/);
    expect(() => sampler.sample(logits, [{ params: greedy, uniform: 0, logitsRow: 0, topLogprobs: 1 }], { tokens: new Int32Array(1), logprobs: new Float32Array(1) }))
      .toThrow(/out.topIds \/ out.topLogprobs do not hold \[1, 20\]/);
  });
});

/** SampleRowsArgs from per-row params */
function rowsArgs(list: { row: number; p: SamplingParams; u: number }[]): SampleRowsArgs {
  return {
    logitsRow: Int32Array.from(list, (r) => r.row), temperature: Float64Array.from(list, (r) => r.p.temperature),
    topP: Float64Array.from(list, (r) => r.p.topP), topK: Int32Array.from(list, (r) => r.p.topK), minP: Float64Array.from(list, (r) => r.p.minP),
    uniform: Float64Array.from(list, (r) => r.u),
  };
}

describe('Backend.sampleRows (cpu: the definition)', () => {
  const be = new CpuBackend();

  it('equals RowSampler.sample row by row (greedy rows included), logprobs of the unmodified row', () => {
    const rng = new Rng(21);
    for (const V of [1, 7, 60, 500]) {
      const R = 5;
      // rows 0–2 random at growing scales, row 3 with ties everywhere, row 4 peaked
      const host = new Float32Array(R * V);
      for (let r = 0; r < R; r++) {
        for (let j = 0; j < V; j++) host[r * V + j] = r === 3 ? Math.floor(rng.uniform() * 4) : rng.normal() * (r + 1);
        if (r === 4) host[r * V + rng.int(V)]! += 12;
      }
      const logits = be.fromArray(host, [R, V]);
      const list: { row: number; p: SamplingParams; u: number }[] = [];
      for (const temperature of [0, 0.7, 1, 1.3]) {
        for (const topP of [1, 0.95, 0.5]) {
          for (const topK of [-1, 0, 1, 3, 50]) {
            for (const minP of [0, 0.05, 0.5]) list.push({ row: rng.int(R), p: params({ temperature, topP, topK, minP }), u: rng.uniform() });
          }
        }
      }
      const got = be.sampleRows(logits, rowsArgs(list));
      expect(got.fallbackRows).toBe(0);
      expect(got.ids.length).toBe(list.length);
      const s = new RowSampler(V);
      let sampledOther = 0;
      list.forEach((r, i) => {
        const row = host.subarray(r.row * V, (r.row + 1) * V);
        const want = s.sample(row, r.p, r.u);
        expect(got.ids[i], `V ${V}, row ${i}: ${JSON.stringify(r)}`).toBe(want);
        expect(got.logprobs[i]).toBe(Math.fround(logprobOf(row, want)));
        if (r.p.temperature > 0 && want !== argmax(row)) sampledOther++;
      });
      // the uniforms matter: not every sampled row took the argmax
      if (V >= 7) expect(sampledOther).toBeGreaterThan(10);
    }
  });

  it('rejects bad arguments with the field and the row', () => {
    const logits = be.fromArray([0, 1, 2, 3, 4, 5], [2, 3]);
    const ok = () => rowsArgs([{ row: 1, p: params({}), u: 0.5 }, { row: 0, p: params({ temperature: 0 }), u: 0 }]);
    expect(be.sampleRows(logits, ok()).ids.length).toBe(2);
    const bad: [(a: SampleRowsArgs) => void, RegExp][] = [
      [(a) => { a.topP = new Float64Array(1); }, /sampleRows: topP has 1 entries, logitsRow has 2/],
      [(a) => { a.uniform = new Float64Array(3); }, /uniform has 3 entries/],
      [(a) => { a.logitsRow[0] = 2; }, /logitsRow\[0\] = 2 is outside \[0, 2\)/],
      [(a) => { a.logitsRow[1] = -1; }, /logitsRow\[1\] = -1/],
      [(a) => { a.temperature[1] = -0.5; }, /temperature\[1\] = -0.5 is not a finite number ≥ 0/],
      [(a) => { a.temperature[0] = Infinity; }, /temperature\[0\] = Infinity/],
      [(a) => { a.topP[0] = 0; }, /topP\[0\] = 0 is outside \(0, 1\]/],
      [(a) => { a.topP[1] = 1.5; }, /topP\[1\] = 1.5/],
      [(a) => { a.topK[0] = -2; }, /topK\[0\] = -2 is below -1/],
      [(a) => { a.minP[1] = 1.01; }, /minP\[1\] = 1.01 is outside \[0, 1\]/],
      [(a) => { a.minP[0] = NaN; }, /minP\[0\] = NaN/],
      [(a) => { a.uniform[0] = 1; }, /uniform\[0\] = 1 is outside \[0, 1\)/],
      [(a) => { a.uniform[1] = NaN; }, /uniform\[1\] = NaN/],
    ];
    for (const [mutate, re] of bad) {
      const a = ok();
      mutate(a);
      expect(() => be.sampleRows(logits, a)).toThrow(re);
    }
    expect(() => be.sampleRows(be.fromArray([1, 2, 3], [3]), rowsArgs([]))).toThrow(/logits must be \[R, V\], got \[3\]/);
    // the definition's own check survives: a row without a finite maximum
    expect(() => be.sampleRows(be.fromArray([-Infinity, -Infinity], [1, 2]), rowsArgs([{ row: 0, p: params({}), u: 0.5 }]))).toThrow(/no finite maximum/);
  });
});

describe('DeviceSampler', () => {
  it('gives HostSampler\'s tokens and logprobs; all-greedy and top-logprobs steps keep the host paths', () => {
    const be = new CpuBackend();
    const V = 80, n = 6;
    const rng = new Rng(31);
    const host = Float32Array.from({ length: 3 * V }, () => rng.normal() * 2.5);
    const logits = be.wrap(host, [3, V]);
    let calls = 0;
    const sampleRows = be.sampleRows.bind(be);
    be.sampleRows = (t, a) => (calls++, sampleRows(t, a));
    const dev = new DeviceSampler(be, V), ref = new HostSampler(be, V);
    expect(defaultSampler(be, V)).toBeInstanceOf(DeviceSampler);
    // a backend without the op samples on the host
    expect(defaultSampler(Object.assign(Object.create(be) as CpuBackend, { sampleRows: undefined }), V)).toBeInstanceOf(HostSampler);
    const mk = () => ({
      tokens: new Int32Array(n), logprobs: new Float32Array(n),
      topIds: new Int32Array(n * MAX_TOP_LOGPROBS), topLogprobs: new Float32Array(n * MAX_TOP_LOGPROBS),
    });
    const greedy = params({ temperature: 0 });
    for (let step = 0; step < 20; step++) {
      const rows: SampleRow[] = Array.from({ length: n }, (_, i) => ({
        params: i === 1 ? greedy : params({ temperature: 0.5 + rng.uniform(), topP: [1, 0.9, 0.6][i % 3]!, topK: [-1, 5][i % 2]!, minP: i === 4 ? 0.05 : 0 }),
        uniform: rng.uniform(), logitsRow: i % 3,
      }));
      const a = mk(), b = mk();
      calls = 0;
      dev.sample(logits, rows, a);
      expect(calls).toBe(1);
      ref.sample(logits, rows, b);
      expect(Array.from(a.tokens)).toEqual(Array.from(b.tokens));
      expect(Array.from(a.logprobs)).toEqual(Array.from(b.logprobs));
    }
    calls = 0;
    dev.sample(logits, Array.from({ length: n }, (_, i) => ({ params: greedy, uniform: 0, logitsRow: i % 3 })), mk());
    dev.sample(logits, [{ params: params({}), uniform: 0.3, logitsRow: 0, topLogprobs: 2 }], mk());
    expect(calls).toBe(0);
    expect(dev.deviceSteps).toBe(20);
    expect(dev.fallbackRows).toBe(0);
    expect(() => dev.sample(logits, [{ params: params({}), uniform: 0.3, logitsRow: 3 }], mk())).toThrow(/rows\[0\]\.logitsRow = 3 is outside \[0, 3\)/);
  });
});
