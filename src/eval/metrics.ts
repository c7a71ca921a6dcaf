/**
 * Evaluation metrics over n samples per problem (grading.md §6).
 *
 * - pass@1: mean correctness over the n samples (then over problems).
 * - pass@k: unbiased estimator 1 − C(n−c,k)/C(n,k) (Chen et al. 2021) in the stable product form
 *   1 − Π_{i=n−c+1..n} (1 − k/i).
 * - maj@k: majority vote over k samples drawn without replacement from the n, averaged over R seeded
 *   resamplings (the M1 paper repeats the vote 100 times). Answers are grouped by equivalence
 *   (grader's canonical key, then answersEquivalent to merge groups), not by raw strings.
 *   Samples without an answer do not vote; if none of the k has an answer the vote is wrong.
 *   TIE RULE: among the tied largest groups, the one whose first member appears earliest in the
 *   drawn order wins (= Python Counter.most_common(1) on the drawn sequence; parity with Qwen/lm-eval).
 *   Because the draw order is a uniformly random permutation, this is a uniformly random tie break.
 * - timeBudgetCurve: the M1 paper's fixed-time-budget comparison: for each budget, the largest
 *   k with k·secondsPerSample ≤ budget, and maj@k / pass@k at that k.
 */
import { Rng } from '../util/rng.js';
import { answersEquivalent, canonicalKey, type GradeOptions } from './grader/grade.js';

/** one problem's n samples: the extracted answer (null = none) and whether it was graded correct */
export interface ProblemSamples {
  answers: (string | null)[];
  correct: boolean[];
  /** answer-group id per sample (null = no answer); filled by groupAnswers when absent */
  groups?: (number | null)[];
}

function checkSamples(p: ProblemSamples, where: string): void {
  if (p.answers.length !== p.correct.length) {
    throw new Error(`${where}: answers (${p.answers.length}) and correct (${p.correct.length}) differ in length`);
  }
  if (p.groups !== undefined && p.groups.length !== p.correct.length) {
    throw new Error(`${where}: groups (${p.groups.length}) and correct (${p.correct.length}) differ in length`);
  }
}

/** mean correctness of the n samples of one problem */
export function passAt1(correct: boolean[]): number {
  if (correct.length === 0) throw new Error('passAt1: no samples');
  let c = 0;
  for (const x of correct) if (x) c++;
  return c / correct.length;
}

/** unbiased pass@k for n samples of which c are correct (product form; no big binomials) */
export function passAtK(n: number, c: number, k: number): number {
  if (!Number.isInteger(n) || !Number.isInteger(c) || !Number.isInteger(k)) throw new Error('passAtK: n, c, k must be integers');
  if (k < 1 || k > n) throw new Error(`passAtK: need 1 ≤ k ≤ n (k=${k}, n=${n})`);
  if (c < 0 || c > n) throw new Error(`passAtK: need 0 ≤ c ≤ n (c=${c}, n=${n})`);
  if (n - c < k) return 1;
  let prod = 1;
  for (let i = n - c + 1; i <= n; i++) prod *= 1 - k / i;
  return 1 - prod;
}

/**
 * Group the answers of one problem into equivalence classes: same canonical key, or equivalent by
 * the grader (first representative of each group is compared). Returns a group id per sample.
 */
export function groupAnswers(answers: (string | null)[], opts: GradeOptions = {}): (number | null)[] {
  const byKey = new Map<string, number>();
  const reps: string[] = [];
  return answers.map((a) => {
    if (a === null || a.trim() === '') return null;
    const key = canonicalKey(a, opts);
    const known = byKey.get(key);
    if (known !== undefined) return known;
    let id = reps.findIndex((r) => answersEquivalent(a, r, opts).equal);
    if (id < 0) {
      id = reps.length;
      reps.push(a);
    }
    byKey.set(key, id);
    return id;
  });
}

/**
 * Majority vote over the samples at `indices` (in draw order): correctness of the winning group.
 * Ties → the group seen first in `indices`. A group's correctness is that of its first member seen.
 */
export function majorityVote(groups: (number | null)[], correct: boolean[], indices: number[]): boolean {
  const count = new Map<number, number>();
  const firstAt = new Map<number, number>(); // group → position in `indices` of its first member
  indices.forEach((i, pos) => {
    const g = groups[i];
    if (g === null || g === undefined) return;
    count.set(g, (count.get(g) ?? 0) + 1);
    if (!firstAt.has(g)) firstAt.set(g, pos);
  });
  let winner: number | null = null;
  for (const [g, c] of count) {
    const w = winner === null ? -1 : count.get(winner)!;
    if (c > w || (c === w && firstAt.get(g)! < firstAt.get(winner!)!)) winner = g;
  }
  if (winner === null) return false;
  return correct[indices[firstAt.get(winner)!]!]!;
}

/** partial Fisher–Yates: k distinct indices of [0, n) in random order */
function drawIndices(rng: Rng, n: number, k: number): number[] {
  const pool = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    const t = pool[i]!;
    pool[i] = pool[j]!;
    pool[j] = t;
  }
  return pool.slice(0, k);
}

export interface MajOptions {
  /** resamplings of k from n (default 100, as in the M1 paper); with k = n one draw suffices */
  resamples?: number;
  seed?: number;
}

/** maj@k of one problem, averaged over seeded resamplings of k of its n samples */
export function majAtK(groups: (number | null)[], correct: boolean[], k: number, opts: MajOptions = {}): number {
  const n = correct.length;
  if (groups.length !== n) throw new Error('majAtK: groups and correct differ in length');
  if (k < 1 || k > n) throw new Error(`majAtK: need 1 ≤ k ≤ n (k=${k}, n=${n})`);
  const rng = new Rng(opts.seed ?? 0);
  const R = opts.resamples ?? 100;
  if (R < 1) throw new Error('majAtK: resamples must be ≥ 1');
  let wins = 0;
  for (let r = 0; r < R; r++) if (majorityVote(groups, correct, drawIndices(rng, n, k))) wins++;
  return wins / R;
}

export interface BenchmarkMetrics {
  problems: number;
  /** samples per problem (the minimum over problems) */
  n: number;
  passAt1: number;
  passAtK: Record<number, number>;
  majAtK: Record<number, number>;
}

/** the groups of a problem, computed once (grouping may call the CAS) */
function groupsOf(p: ProblemSamples, opts: GradeOptions): (number | null)[] {
  p.groups ??= groupAnswers(p.answers, opts);
  return p.groups;
}

/** mean over problems of pass@1, pass@k and maj@k for each k in `ks` (k ≤ n for every problem) */
export function benchmarkMetrics(
  problems: ProblemSamples[],
  ks: number[],
  opts: MajOptions & { grade?: GradeOptions } = {},
): BenchmarkMetrics {
  if (problems.length === 0) throw new Error('benchmarkMetrics: no problems');
  problems.forEach((p, i) => checkSamples(p, `problem ${i}`));
  const n = Math.min(...problems.map((p) => p.correct.length));
  const out: BenchmarkMetrics = { problems: problems.length, n, passAt1: 0, passAtK: {}, majAtK: {} };
  out.passAt1 = mean(problems.map((p) => passAt1(p.correct)));
  for (const k of ks) {
    if (k > n) throw new Error(`benchmarkMetrics: k=${k} exceeds the smallest sample count n=${n}`);
    out.passAtK[k] = mean(problems.map((p) => passAtK(p.correct.length, count(p.correct), k)));
    out.majAtK[k] = mean(
      problems.map((p, i) => majAtK(groupsOf(p, opts.grade ?? {}), p.correct, k, { ...opts, seed: (opts.seed ?? 0) + i })),
    );
  }
  return out;
}

export interface TimeBudgetPoint {
  budgetSeconds: number;
  /** largest k with k·secondsPerSample ≤ budget (0 when not even one sample fits) */
  k: number;
  majAtK: number | null;
  passAtK: number | null;
}

/**
 * Accuracy under a fixed generation-time budget (M1 paper §4): sampling k answers costs
 * k·secondsPerSample; for each budget take the largest affordable k (capped at n).
 */
export function timeBudgetCurve(
  perProblemSamples: ProblemSamples[],
  secondsPerSample: number,
  budgets: number[],
  opts: MajOptions & { grade?: GradeOptions } = {},
): TimeBudgetPoint[] {
  if (!(secondsPerSample > 0)) throw new Error(`timeBudgetCurve: secondsPerSample must be > 0 (got ${secondsPerSample})`);
  if (perProblemSamples.length === 0) throw new Error('timeBudgetCurve: no problems');
  const n = Math.min(...perProblemSamples.map((p) => p.correct.length));
  return budgets.map((budget) => {
    // the epsilon keeps 3·0.1 ≤ 0.3 true in floating point
    const k = Math.min(n, Math.floor(budget / secondsPerSample + 1e-9));
    if (k < 1) return { budgetSeconds: budget, k: 0, majAtK: null, passAtK: null };
    const m = benchmarkMetrics(perProblemSamples, [k], opts);
    return { budgetSeconds: budget, k, majAtK: m.majAtK[k]!, passAtK: m.passAtK[k]! };
  });
}

function count(xs: boolean[]): number {
  let c = 0;
  for (const x of xs) if (x) c++;
  return c;
}

function mean(xs: number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}
