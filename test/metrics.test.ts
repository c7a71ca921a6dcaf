import { afterAll, describe, expect, it } from 'vitest';
import {
  benchmarkMetrics,
  groupAnswers,
  majAtK,
  majorityVote,
  passAt1,
  passAtK,
  timeBudgetCurve,
  type ProblemSamples,
} from '../src/eval/metrics.js';
import { shutdownCas } from '../src/eval/grader/index.js';

afterAll(() => shutdownCas());

function binom(n: number, k: number): number {
  if (k < 0 || k > n) return 0;
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return r;
}

describe('pass@k', () => {
  it('matches hand-computed values', () => {
    expect(passAtK(5, 2, 2)).toBeCloseTo(1 - 3 / 10, 12); // 1 − C(3,2)/C(5,2) = 0.7
    expect(passAtK(5, 2, 1)).toBeCloseTo(0.4, 12);
    expect(passAtK(4, 1, 4)).toBe(1);
    expect(passAtK(4, 0, 3)).toBe(0);
    expect(passAtK(10, 3, 8)).toBe(1); // n − c < k
  });
  it('equals the binomial form on a grid', () => {
    for (let n = 1; n <= 20; n++)
      for (let c = 0; c <= n; c++)
        for (let k = 1; k <= n; k++) expect(passAtK(n, c, k)).toBeCloseTo(1 - binom(n - c, k) / binom(n, k), 10);
  });
  it('stays finite for large n', () => {
    const v = passAtK(1000, 10, 100);
    expect(v).toBeGreaterThan(0.65);
    expect(v).toBeLessThan(0.66); // 1 − Π_{i=991..1000}(1 − 100/i) ≈ 0.6536
  });
  it('rejects k > n', () => {
    expect(() => passAtK(3, 1, 4)).toThrow(/k ≤ n/);
  });
  it('pass@1 is the mean', () => {
    expect(passAt1([true, false, false, true])).toBe(0.5);
  });
});

describe('majority vote', () => {
  it('groups equivalent answers, not raw strings', () => {
    const g = groupAnswers(['\\frac{1}{2}', '0.5', '2/4', '\\dfrac12', '3', null, '003', '\\sqrt{117}', '3\\sqrt{13}']);
    expect(g).toEqual([0, 0, 0, 0, 1, null, 1, 2, 2]);
  });
  it('breaks ties by the earliest-appearing answer in draw order; no-answer samples do not vote', () => {
    // groups: A B B A ; A first → A wins the 2-2 tie
    expect(majorityVote([0, 1, 1, 0], [true, false, false, true], [0, 1, 2, 3])).toBe(true);
    // reversed draw order: B appears first → B wins
    expect(majorityVote([0, 1, 1, 0], [true, false, false, true], [1, 0, 2, 3])).toBe(false);
    expect(majorityVote([null, null, 1], [false, false, true], [0, 1, 2])).toBe(true);
    expect(majorityVote([null, null], [false, false], [0, 1])).toBe(false);
  });
  it('maj@n needs no resampling to be exact; maj@1 averages to pass@1', () => {
    const groups = [0, 0, 1, 2, 0];
    const correct = [true, true, false, false, true];
    expect(majAtK(groups, correct, 5, { resamples: 7 })).toBe(1);
    // maj@1 is the correctness of one random sample: its expectation is 3/5
    expect(majAtK(groups, correct, 1, { resamples: 20000, seed: 3 })).toBeCloseTo(0.6, 1);
  });
  it('maj@2 with a 2-2 split equals the exact probability under random tie-breaking', () => {
    // n = 4: two correct (group 0), two wrong (group 1). Pairs: 6; same-group pairs 2 → decided
    // (1 correct, 1 wrong); mixed pairs 4 → tie, first drawn wins: correct half the time.
    // P(correct) = 1/6 + 4/6 · 1/2 = 0.5
    expect(majAtK([0, 0, 1, 1], [true, true, false, false], 2, { resamples: 40000, seed: 1 })).toBeCloseTo(0.5, 1);
    // 3 correct of 4: same-group pairs correct 3/6, mixed 3/6 half → 0.75
    expect(majAtK([0, 0, 0, 1], [true, true, true, false], 2, { resamples: 40000, seed: 2 })).toBeCloseTo(0.75, 1);
  });
  it('is deterministic for a seed', () => {
    const g = [0, 1, 2, 0, 1, 3, 0];
    const c = [true, false, false, true, false, false, true];
    expect(majAtK(g, c, 3, { seed: 9 })).toBe(majAtK(g, c, 3, { seed: 9 }));
  });
});

describe('benchmark metrics and time budgets', () => {
  const problems: ProblemSamples[] = [
    { answers: ['1', '1', '2', '1'], correct: [true, true, false, true] },
    { answers: ['5', '6', '7', null], correct: [false, false, true, false] },
  ];
  it('averages over problems', () => {
    const m = benchmarkMetrics(problems, [1, 4], { resamples: 10 });
    expect(m.n).toBe(4);
    expect(m.passAt1).toBeCloseTo((0.75 + 0.25) / 2, 12);
    expect(m.passAtK[4]).toBe(1);
    // maj@4: problem 1 → "1" (3 votes) correct; problem 2 → 1-1-1 tie among drawn order → random
    expect(m.majAtK[4]).toBeGreaterThanOrEqual(0.5);
    expect(m.majAtK[4]).toBeLessThanOrEqual(1);
    expect(m.passAtK[1]).toBeCloseTo(m.passAt1, 12);
  });
  it('picks the largest affordable k per budget', () => {
    const curve = timeBudgetCurve(problems, 10, [5, 10, 25, 30, 1000], { resamples: 10 });
    expect(curve.map((p) => p.k)).toEqual([0, 1, 2, 3, 4]);
    expect(curve[0]!.majAtK).toBeNull();
    expect(curve[1]!.passAtK).toBeCloseTo(0.5, 12);
    expect(curve[3]!.passAtK).toBeCloseTo((1 + passAtK(4, 1, 3)) / 2, 12);
  });
  it('rejects bad input', () => {
    expect(() => timeBudgetCurve(problems, 0, [1])).toThrow(/secondsPerSample/);
    expect(() => benchmarkMetrics([{ answers: ['1'], correct: [true, false] }], [1])).toThrow(/differ in length/);
    expect(() => benchmarkMetrics(problems, [5])).toThrow(/exceeds/);
  });
});
