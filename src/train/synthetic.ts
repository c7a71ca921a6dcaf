// A synthetic reasoning task family: multi-step arithmetic word problems with step-by-step solutions
// ending in \boxed{}. Difficulty = number of steps, so harder problems need longer chains. Problems
// are short and numbers small, so a ~1M-parameter byte-level model can learn them on a CPU in minutes:
//   "Tom has 3 apples. He gets 4 more. He gives 2 away. How many apples now?"  →  "3+4=7. 7-2=5. \boxed{5}"
// Train and test are split by a hash of the problem text, independent of the seed, so no problem is in
// both splits whatever seeds the two sides use. (Single arithmetic facts such as 3+4 are shared by
// both splits on purpose, as in any word-problem benchmark.)
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

export type SyntheticSplit = 'train' | 'test';

export interface SyntheticProblem {
  id: string;
  problem: string;
  answer: string;
  solution: string;
}

const NAMES: ReadonlyArray<[string, string]> = [
  ['Tom', 'He'], ['Ann', 'She'], ['Bob', 'He'], ['Eve', 'She'], ['Max', 'He'], ['Mia', 'She'], ['Sam', 'He'], ['Zoe', 'She'],
];
const THINGS = ['apples', 'pens', 'cards', 'coins', 'books', 'eggs', 'shells', 'stamps'];
/** operand range and the largest value a chain may reach */
const MAX_OPERAND = 9;
const MAX_VALUE = 20;
/** share of problem texts that belong to the test split */
const TEST_SHARE = 0.2;

/** difficulties `synthetic-<d>` accepts */
export const MAX_SYNTHETIC_DIFFICULTY = 8;

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** which split a problem text belongs to (seed-independent) */
export function splitOf(problemText: string): SyntheticSplit {
  return fnv1a(problemText) / 2 ** 32 < TEST_SHARE ? 'test' : 'train';
}

/** one random problem with exactly `steps` operations after the starting amount */
export function randomProblem(rng: Rng, steps: number): Omit<SyntheticProblem, 'id'> {
  const [name, pronoun] = NAMES[rng.int(NAMES.length)]!;
  const thing = THINGS[rng.int(THINGS.length)]!;
  let value = 1 + rng.int(MAX_OPERAND);
  const sentences = [`${name} has ${value} ${thing}.`];
  const work: string[] = [];
  for (let s = 0; s < steps; s++) {
    // subtract when adding could overflow the range, add when nothing can be taken away
    const canAdd = value + 1 <= MAX_VALUE, canSub = value >= 1;
    const add = canAdd && (!canSub || rng.uniform() < 0.5);
    const limit = add ? Math.min(MAX_OPERAND, MAX_VALUE - value) : Math.min(MAX_OPERAND, value);
    const k = 1 + rng.int(limit);
    const next = add ? value + k : value - k;
    sentences.push(add ? `${pronoun} gets ${k} more.` : `${pronoun} gives ${k} away.`);
    work.push(`${value}${add ? '+' : '-'}${k}=${next}.`);
    value = next;
  }
  sentences.push(`How many ${thing} now?`);
  return { problem: sentences.join(' '), answer: String(value), solution: `${work.join(' ')} \\boxed{${value}}` };
}

/**
 * `count` distinct problems of the split with `difficulty` steps, deterministic in (split, difficulty,
 * count, seed). Throws when the split has fewer distinct problems than asked for.
 */
export function syntheticProblems(o: { split: SyntheticSplit; difficulty: number; count: number; seed: number }): SyntheticProblem[] {
  if (o.split !== 'train' && o.split !== 'test') throw new UserError(`synthetic: split must be "train" or "test", got "${String(o.split)}"`);
  if (!Number.isInteger(o.difficulty) || o.difficulty < 1 || o.difficulty > MAX_SYNTHETIC_DIFFICULTY) {
    throw new UserError(`synthetic: difficulty must be an integer in [1, ${MAX_SYNTHETIC_DIFFICULTY}], got ${o.difficulty}`);
  }
  if (!Number.isInteger(o.count) || o.count < 0) throw new UserError(`synthetic: count must be an integer ≥ 0, got ${o.count}`);
  const rng = new Rng((fnv1a(`synthetic/${o.split}/${o.difficulty}`) ^ (o.seed >>> 0)) >>> 0);
  const seen = new Set<string>();
  const out: SyntheticProblem[] = [];
  const maxTries = 200 * o.count + 1000;
  for (let tries = 0; out.length < o.count; tries++) {
    if (tries >= maxTries) throw new UserError(`synthetic: only ${out.length} distinct ${o.split} problems of difficulty ${o.difficulty} found; asked for ${o.count}`);
    const p = randomProblem(rng, o.difficulty);
    if (seen.has(p.problem) || splitOf(p.problem) !== o.split) continue;
    seen.add(p.problem);
    out.push({ id: `synthetic-${o.difficulty}-${o.split}-${fnv1a(p.problem).toString(16).padStart(8, '0')}`, ...p });
  }
  return out;
}

/** benchmark name for a difficulty: `synthetic-<difficulty>` */
export function syntheticBenchmarkName(difficulty: number): string {
  return `synthetic-${difficulty}`;
}

/** the difficulty of a `synthetic-<d>` name, or null when the name is not one */
export function parseSyntheticName(name: string): number | null {
  const m = /^synthetic-(\d+)$/.exec(name);
  if (!m) return null;
  const d = Number(m[1]);
  return d >= 1 && d <= MAX_SYNTHETIC_DIFFICULTY ? d : null;
}

/** default size of a synthetic test benchmark */
export const SYNTHETIC_TEST_COUNT = 200;

/**
 * The test split of `synthetic-<d>` as benchmark problems ({id, problem, answer, metadata}, the shape
 * of src/eval/datasets.ts BenchProblem); integer answers.
 */
export function loadSyntheticBenchmark(name: string, opts: { count?: number; seed?: number } = {}): Array<{ id: string; problem: string; answer: string; metadata: Record<string, string | number> }> {
  const d = parseSyntheticName(name);
  if (d === null) throw new UserError(`"${name}" is not a synthetic benchmark (synthetic-1 … synthetic-${MAX_SYNTHETIC_DIFFICULTY})`);
  return syntheticProblems({ split: 'test', difficulty: d, count: opts.count ?? SYNTHETIC_TEST_COUNT, seed: opts.seed ?? 0 }).map((p) => ({
    id: p.id, problem: p.problem, answer: p.answer, metadata: { solution: p.solution, difficulty: d },
  }));
}
