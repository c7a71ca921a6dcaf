// A small in-memory evaluation for the demo: n sampled answers per held-out problem through the
// generation engine, graded, scored as pass@1 (mean correctness over problems × samples) and maj@k,
// with the standard errors the demo needs to say whether a gain is more than sampling noise.
//
// Standard errors. Samples of one problem are correlated (an easy problem is solved by most of its
// samples), so the plain binomial SE over problems × samples, sqrt(p(1−p)/(P·n)), understates the noise
// of a held-out estimate; the demo reports it, and uses the SE over problems (cluster SE: the spread of
// the per-problem accuracies / sqrt(P)), which accounts for both the problem draw and the sample draw.
// Two models evaluated on the same problems are compared with the paired version: the SE of the mean
// per-problem difference.
import { gradeAnswer, type GradeOptions } from '../eval/grader/grade.js';
import { benchmarkMetrics, type ProblemSamples } from '../eval/metrics.js';
import { Engine, type RequestOutput } from '../infer/engine.js';
import type { CausalLM } from '../model/model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { rolloutSeed } from './grpo.js';

export interface EvalProblem {
  id: string;
  promptIds: number[];
  answer: string;
}

export interface DemoEvalResult {
  /** pass@1: mean correctness over problems × samples */
  accuracy: number;
  /** binomial SE over problems × samples */
  seBinomial: number;
  /** SE over problems of the per-problem accuracy (the one used for decisions) */
  se: number;
  /** maj@k (k = n), averaged over resamplings */
  majAtK: number;
  k: number;
  n: number;
  problems: number;
  /** per-problem fraction of correct samples, in problem order */
  perProblem: number[];
  meanResponseTokens: number;
  seconds: number;
}

export interface DemoEvalOptions {
  n: number;
  temperature: number;
  maxTokens: number;
  seed: number;
  stopTokenIds: readonly number[];
  /** most sequences decoded together */
  maxBatch?: number;
  grade?: GradeOptions;
}

function meanOf(xs: readonly number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** SE of the mean of xs (sample std / sqrt(len)); 0 for fewer than two values */
export function standardError(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = meanOf(xs);
  const v = xs.reduce((s, x) => s + (x - m) ** 2, 0) / (xs.length - 1);
  return Math.sqrt(v / xs.length);
}

/** gain of b over a on the same problems: mean per-problem difference and its paired SE */
export function pairedGain(a: readonly number[], b: readonly number[]): { gain: number; se: number; z: number } {
  if (a.length !== b.length) throw new Error(`pairedGain: ${a.length} vs ${b.length} problems`);
  const d = a.map((x, i) => b[i]! - x);
  const gain = meanOf(d), se = standardError(d);
  return { gain, se, z: se > 0 ? gain / se : gain > 0 ? Infinity : 0 };
}

export function evaluateModel(model: CausalLM, tokenizer: Tokenizer, problems: readonly EvalProblem[], o: DemoEvalOptions): DemoEvalResult {
  if (problems.length === 0) throw new Error('evaluateModel: no problems');
  if (!Number.isInteger(o.n) || o.n < 1) throw new Error(`evaluateModel: n must be an integer ≥ 1, got ${o.n}`);
  const t0 = performance.now();
  const maxPrompt = Math.max(...problems.map((p) => p.promptIds.length));
  const engine = new Engine(model, {
    tokenizer, stopTokenIds: o.stopTokenIds, maxBatch: Math.max(o.n, o.maxBatch ?? 128),
    maxContext: Math.min(model.cfg.llama.maxPositionEmbeddings, maxPrompt + o.maxTokens),
  });
  // seeds per problem index, from a stream separate from GRPO's (step −1 never occurs in training)
  let outs: RequestOutput[];
  try {
    outs = engine.generate(problems.map((p, j) => ({
      promptIds: p.promptIds, n: o.n, sampling: { temperature: o.temperature }, maxTokens: o.maxTokens, seed: rolloutSeed(o.seed, -2, j),
    })));
  } finally {
    engine.dispose();
  }
  const samples: ProblemSamples[] = [];
  let tokens = 0;
  outs.forEach((out, j) => {
    const answers: (string | null)[] = [], correct: boolean[] = [];
    for (const s of out.samples) {
      const g = gradeAnswer(s.text ?? '', problems[j]!.answer, o.grade);
      answers.push(g.extracted);
      correct.push(g.correct);
      tokens += s.tokenIds.length;
    }
    samples.push({ answers, correct });
  });
  const perProblem = samples.map((p) => p.correct.filter((c) => c).length / p.correct.length);
  const accuracy = meanOf(perProblem);
  const m = benchmarkMetrics(samples, [o.n], { grade: o.grade, seed: o.seed });
  return {
    accuracy, seBinomial: Math.sqrt((accuracy * (1 - accuracy)) / (problems.length * o.n)), se: standardError(perProblem),
    majAtK: m.majAtK[o.n]!, k: o.n, n: o.n, problems: problems.length, perProblem,
    meanResponseTokens: tokens / (problems.length * o.n), seconds: (performance.now() - t0) / 1000,
  };
}
