// `m1 demo`: the whole M1 recipe at toy scale on the CPU, in minutes.
//
//   teacher (a tiny transformer made by `m1 pretrain`, shipped in assets/teacher/)
//   → convert to a hybrid (Mamba layers initialised from attention; 2 of the 4 layers stay attention)
//   → distill (reverse KL to the frozen teacher) → SFT (cross-entropy on solutions) → GRPO (verifiable reward)
//   → evaluate every stage on held-out synthetic problems (pass@1 over n samples, maj@n, standard errors)
//   → teacher-vs-hybrid generation speed at growing lengths.
//
// Everything is seeded; the held-out problems are the synthetic task's test split (train/synthetic.ts),
// which no stage trains on. The verdict on GRPO compares it with SFT on the same problems (paired SE
// over problems, demo-eval.ts) and says whether the gain exceeds two standard errors.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../backend/backend.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Engine } from '../infer/engine.js';
import { convertToHybrid } from '../model/convert.js';
import { loadModel } from '../model/checkpoint.js';
import type { CausalLM } from '../model/model.js';
import { Tokenizer } from '../model/tokenizer.js';
import { UserError } from '../util/errors.js';
import { PackedDataset, problemToRecord, SampleTokenizer, withM1Suffix, type LossOn } from './data.js';
import { evaluateModel, pairedGain, type DemoEvalResult, type EvalProblem } from './demo-eval.js';
import { renderDemoReport } from './demo-report.js';
import { M1_GRPO, runGrpo, type GrpoPrompt } from './grpo.js';
import type { MetricsLine } from './report.js';
import { crossEntropyStage, distillStage, modelFilesWriter } from './stages.js';
import { syntheticProblems } from './synthetic.js';
import { Trainer, type Stage, type TrainConfig } from './trainer.js';

/** sizes and knobs of one demo run */
export interface DemoBudget {
  /** synthetic task difficulty (steps per problem) of every stage and of the evaluation */
  difficulty: number;
  /** append M1's "Let's think step by step …" suffix to problems (off: shorter prompts, the teacher's format) */
  suffix: boolean;
  /** attention layers kept by the conversion (the rest become Mamba) */
  attnLayers: number[] | null;
  seqLen: number;
  distill: { steps: number; batch: number; lr: number; lossOn: LossOn; problems: number };
  sft: { steps: number; batch: number; lr: number; problems: number };
  grpo: { steps: number; prompts: number; group: number; batch: number; miniBatch: number; lr: number; temperature: number; entropy: number; clip: number; maxTokens: number };
  eval: { problems: number; n: number; temperature: number; maxTokens: number };
  speed: { lengths: number[]; batch: number };
}

/** the full demo: ~8 minutes on 2 CPU cores */
export const FULL_BUDGET: DemoBudget = {
  // Attention stays at layers 1 and 3 (2 of 4, MambaInLlama's 50 % hybrid). Measured on the GPU
  // (bench/sweeps-demo-2.tsv, 300 held-out problems, seeds 0 / 1, SFT accuracy): one attention layer
  // — at 0: 9.3 / 5.4 %, 1: 5.8 / 7.5 %, 2: 10.8 / 7.9 %, 3: 7.8 / 7.4 % — against 36.9 / 33.3 % with
  // layers 1 and 3 (teacher 34 / 32 %). With a single attention layer the toy hybrid does not learn to
  // read the numbers of the problem within this budget (its samples are nearly the same whatever the
  // prompt), and GRPO has no signal to work with.
  difficulty: 3, suffix: false, attnLayers: [1, 3], seqLen: 448,
  distill: { steps: 100, batch: 4, lr: 3e-3, lossOn: 'all', problems: 4000 },
  sft: { steps: 60, batch: 4, lr: 2e-3, problems: 4000 },
  // GRPO: one update per step on 32 prompts × 8 samples, 36 steps at lr 1e-4, rollouts at the
  // evaluation temperature 0.7. GRPO-only trials from four saved SFT models on 400 validation problems
  // (bench/grpo-trials.sh; bench/results/grpo-trials-{1,2}-cuda-2026-11-28.txt): the gain grows with
  // the number of updates (12 / 24 / 36 steps at lr 5e-5: +1.6 / +3.0 / +4.4 points on average), rollouts
  // at T 0.7 add about one point, lr 1e-4 is better than 5e-5 and 2e-4 (+5.4 twice, every model above
  // 2 SE; lr 2e-4: −0.2 … +2.6).
  grpo: { steps: 36, prompts: 2000, group: 8, batch: 32, miniBatch: 32, lr: 1e-4, temperature: 0.7, entropy: 0, clip: 0.2, maxTokens: 48 },
  eval: { problems: 200, n: 4, temperature: 0.7, maxTokens: 48 },
  speed: { lengths: [128, 512, 1024], batch: 8 },
};

/** a smoke run of every stage (tests): seconds, not minutes; the numbers mean nothing */
export const QUICK_BUDGET: DemoBudget = {
  difficulty: 3, suffix: false, attnLayers: null, seqLen: 448,
  distill: { steps: 2, batch: 1, lr: 1e-3, lossOn: 'all', problems: 40 },
  sft: { steps: 2, batch: 1, lr: 1e-3, problems: 40 },
  grpo: { steps: 2, prompts: 20, group: 2, batch: 2, miniBatch: 1, lr: 1e-4, temperature: 1.0, entropy: 0.01, clip: 0.2, maxTokens: 8 },
  eval: { problems: 4, n: 2, temperature: 0.7, maxTokens: 8 },
  speed: { lengths: [4, 8], batch: 2 },
};

export interface DemoOptions {
  be: Backend;
  out: string;
  seed: number;
  budget: DemoBudget;
  /** the teacher model folder (default: the shipped assets/teacher) */
  teacherDir?: string;
  /** status lines (stderr) */
  log?: (line: string) => void;
  progress?: boolean;
}

export interface StageResult {
  stage: 'teacher' | 'converted' | 'distilled' | 'sft' | 'grpo';
  model: string;
  accuracy: number;
  /** SE over problems (cluster SE), and the binomial one over problems × samples */
  se: number;
  se_binomial: number;
  maj_at_k: number;
  k: number;
  n: number;
  problems: number;
  mean_response_tokens: number;
  /** evaluation seconds */
  seconds: number;
  /** seconds spent making this stage's model (training, conversion) */
  train_seconds: number;
}

export interface SpeedPoint {
  length: number;
  batch: number;
  teacher_seconds: number;
  hybrid_seconds: number;
  teacher_tokens_per_s: number;
  hybrid_tokens_per_s: number;
  speedup: number;
}

export interface DemoSummary {
  format: 'm1ts-demo';
  seed: number;
  difficulty: number;
  eval: { problems: number; n: number; temperature: number; max_tokens: number; split: 'test' };
  stages: StageResult[];
  grpo_vs_sft: { gain: number; se: number; z: number; exceeds_2se: boolean };
  /** M1's best-mean-reward checkpoint (weights before the update of step `step`), evaluated beside the final weights */
  grpo_best: { model: string; step: number; mean_reward: number; accuracy: number; se: number; maj_at_k: number; gain_over_sft: number; gain_se: number } | null;
  speed: SpeedPoint[];
  curves: { distill: Array<[number, number]>; sft: Array<[number, number]>; grpo_reward: Array<[number, number]> };
  budget: DemoBudget;
  total_seconds: number;
}

/** the package root (where package.json and assets/ live), from this module's location */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'assets'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new UserError('no assets/ folder found next to package.json (the shipped demo teacher lives in assets/teacher)');
    dir = up;
  }
}

export function defaultTeacherDir(): string {
  return join(packageRoot(), 'assets', 'teacher');
}

/** `count` attention layers spread over `layers` (M1 keeps 6 of 28; the --quick budget keeps 1 of 4) */
export function spreadAttentionLayers(layers: number, count: number): number[] {
  const out = new Set<number>();
  for (let j = 0; j < count; j++) out.add(Math.min(layers - 1, Math.floor(((j + 0.5) * layers) / count)));
  return [...out].sort((a, b) => a - b);
}

function promptText(problem: string, suffix: boolean): string {
  return suffix ? withM1Suffix(problem) : problem.trim();
}

function stopIdsOf(model: CausalLM, tok: Tokenizer): number[] {
  const ids = new Set<number>(model.cfg.llama.eosTokenIds);
  for (const id of [tok.eosTokenId, tok.tokenToId('<|eot_id|>')]) if (id !== null) ids.add(id);
  return [...ids];
}

function metricsOf(runDir: string): MetricsLine[] {
  const f = join(runDir, 'metrics.jsonl');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as MetricsLine);
}

/** generation speed of one model: `batch` sequences of exactly `length` tokens each (eos ignored), greedy */
function timeGeneration(model: CausalLM, promptIds: number[], length: number, batch: number): number {
  const engine = new Engine(model, { maxBatch: batch, maxContext: Math.min(model.cfg.llama.maxPositionEmbeddings, promptIds.length + length) });
  try {
    const t0 = performance.now();
    engine.generate([{ promptIds, n: batch, maxTokens: length, ignoreEos: true, sampling: { temperature: 0 } }]);
    return (performance.now() - t0) / 1000;
  } finally {
    engine.dispose();
  }
}

export async function runDemo(o: DemoOptions): Promise<DemoSummary> {
  const t0 = performance.now();
  const b = o.budget;
  const be = o.be;
  const log = o.log ?? ((s: string) => void process.stderr.write(`${s}\n`));
  const out = resolve(o.out);
  const teacherDir = resolve(o.teacherDir ?? defaultTeacherDir());
  if (!existsSync(join(teacherDir, 'config.json'))) throw new UserError(`demo teacher ${teacherDir} has no config.json`);
  mkdirSync(out, { recursive: true });
  for (const d of ['converted', 'distill', 'sft', 'grpo']) rmSync(join(out, d), { recursive: true, force: true });
  const seconds = (): number => (performance.now() - t0) / 1000;
  const stageLog = (name: string, what: string): void => log(`[demo ${seconds().toFixed(0).padStart(4)} s] ${name}: ${what}`);

  const tok = Tokenizer.fromDir(teacherDir);
  const { model: teacher } = loadModel(teacherDir, be);
  const stopTokenIds = stopIdsOf(teacher, tok);
  const st = new SampleTokenizer(tok, 'assistant');
  const prompt = (problem: string): number[] => tok.encodeChat([{ role: 'user', content: promptText(problem, b.suffix) }], { addGenerationPrompt: true });

  // held-out problems: the test split, drawn with the demo seed
  const testProblems: EvalProblem[] = syntheticProblems({ split: 'test', difficulty: b.difficulty, count: b.eval.problems, seed: o.seed })
    .map((p) => ({ id: p.id, promptIds: prompt(p.problem), answer: p.answer }));
  const grade = { casBudgetMs: 50, answerBudgetMs: 200 };
  const evalOpts = { n: b.eval.n, temperature: b.eval.temperature, maxTokens: b.eval.maxTokens, seed: o.seed, stopTokenIds, grade };
  const stages: StageResult[] = [];
  const evaluate = (stage: StageResult['stage'], model: CausalLM, dir: string, trainSeconds: number): DemoEvalResult => {
    stageLog(stage, `evaluating on ${b.eval.problems} held-out problems × ${b.eval.n} samples (T ${b.eval.temperature})`);
    const r = evaluateModel(model, tok, testProblems, evalOpts);
    stages.push({
      stage, model: dir, accuracy: r.accuracy, se: r.se, se_binomial: r.seBinomial, maj_at_k: r.majAtK, k: r.k, n: r.n, problems: r.problems,
      mean_response_tokens: r.meanResponseTokens, seconds: r.seconds, train_seconds: trainSeconds,
    });
    stageLog(stage, `accuracy ${(100 * r.accuracy).toFixed(1)} % ± ${(100 * r.se).toFixed(1)}, maj@${r.k} ${(100 * r.majAtK).toFixed(1)} % (${r.seconds.toFixed(1)} s)`);
    return r;
  };

  // 1. teacher
  evaluate('teacher', teacher, teacherDir, 0);

  // 2. conversion
  let tStage = performance.now();
  const layers = teacher.cfg.llama.numLayers;
  const attnLayers = b.attnLayers ?? spreadAttentionLayers(layers, Math.max(1, Math.round(layers / 4)));
  const convertedDir = join(out, 'converted');
  convertToHybrid(teacherDir, convertedDir, { attnLayers, seed: o.seed });
  const convertSeconds = (performance.now() - tStage) / 1000;
  stageLog('convert', `${layers} layers → attention at [${attnLayers.join(', ')}], Mamba elsewhere`);
  const { model: converted } = loadModel(convertedDir, be);
  evaluate('converted', converted, convertedDir, convertSeconds);

  const trainConfig = (steps: number, batch: number, lr: number, seedOffset: number): TrainConfig => ({
    schedule: 'cosine', lr, minLr: lr / 10, warmup: Math.max(1, Math.round(steps / 10)), gradClip: 1, batch, gradAccum: 1, totalSteps: steps,
    seed: o.seed + seedOffset, saveEvery: 0, saveTotalLimit: 1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1,
  });
  const dataset = (count: number, lossOn: LossOn, seedOffset: number): PackedDataset => {
    const s = new SampleTokenizer(tok, lossOn);
    const samples = syntheticProblems({ split: 'train', difficulty: b.difficulty, count, seed: o.seed + seedOffset })
      .map((p, i) => s.encode(problemToRecord(p.problem, p.solution, { suffix: b.suffix }), `synthetic problem ${i}`));
    return new PackedDataset(samples, { seqLen: b.seqLen, boundaries: true, padId: s.padId, seed: o.seed + seedOffset });
  };
  const train = async (stage: Stage, data: PackedDataset, cfg: TrainConfig, dir: string): Promise<number> => {
    const ts = performance.now();
    const r = await new Trainer({ be, stage, data, config: cfg, runDir: dir, progress: o.progress, log, handleSigint: false }).run();
    stageLog(stage.name, `${r.steps} steps, final loss ${r.finalLoss.toFixed(4)} (${((performance.now() - ts) / 1000).toFixed(1)} s)`);
    return (performance.now() - ts) / 1000;
  };

  // 3. distillation: the converted hybrid learns the teacher's distribution (reverse KL)
  const distillDir = join(out, 'distill');
  stageLog('distill', `${b.distill.steps} steps × ${b.distill.batch} rows of ${b.seqLen}, lr ${b.distill.lr}, reverse KL on ${b.distill.lossOn} tokens`);
  const distillSeconds = await train(
    distillStage(converted, teacher, 1, modelFilesWriter(converted, { dir: convertedDir })),
    dataset(b.distill.problems, b.distill.lossOn, 1), trainConfig(b.distill.steps, b.distill.batch, b.distill.lr, 1), distillDir,
  );
  evaluate('distilled', converted, join(distillDir, 'final'), distillSeconds);

  // 4. SFT on worked solutions (assistant tokens only)
  const sftDir = join(out, 'sft');
  stageLog('sft', `${b.sft.steps} steps × ${b.sft.batch} rows of ${b.seqLen}, lr ${b.sft.lr}`);
  const sftSeconds = await train(
    crossEntropyStage('sft', converted, modelFilesWriter(converted, { dir: convertedDir })),
    dataset(b.sft.problems, 'assistant', 2), trainConfig(b.sft.steps, b.sft.batch, b.sft.lr, 2), sftDir,
  );
  const sftEval = evaluate('sft', converted, join(sftDir, 'final'), sftSeconds);

  // 5. GRPO from the SFT model, on training-split prompts; the best-reward weights are evaluated (M1)
  const grpoDir = join(out, 'grpo');
  const g = b.grpo;
  stageLog('grpo', `${g.steps} steps × ${g.batch} prompts × ${g.group} samples (T ${g.temperature}), mini-batch ${g.miniBatch}, lr ${g.lr}`);
  const grpoPrompts: GrpoPrompt[] = syntheticProblems({ split: 'train', difficulty: b.difficulty, count: g.prompts, seed: o.seed + 3 })
    .map((p) => ({ id: p.id, promptIds: prompt(p.problem), answer: p.answer }));
  tStage = performance.now();
  const gr = await runGrpo({
    be, model: converted, tokenizer: tok, prompts: grpoPrompts, runDir: grpoDir, stopTokenIds, padId: st.padId, gradeOptions: grade,
    writeModelFiles: modelFilesWriter(converted, { dir: convertedDir }), progress: o.progress, log, handleSigint: false,
    config: {
      ...M1_GRPO, group: g.group, batch: g.batch, miniBatch: g.miniBatch, lr: g.lr, temperature: g.temperature, entropyCoef: g.entropy, clip: g.clip,
      maxTokens: g.maxTokens, steps: g.steps, seed: o.seed + 4, microRows: 32, saveEvery: 0, saveTotalLimit: 1, weightDecay: 0,
    },
    onStep: (l) => stageLog('grpo', `step ${l.step}/${g.steps}: reward ${l['reward_mean']!.toFixed(3)}, length ${l['response_length']!.toFixed(1)}, entropy ${l['entropy']!.toFixed(3)}, clip ${l['clip_frac']!.toFixed(3)} (${(l['rollout_s']! + l['update_s']!).toFixed(1)} s)`),
  });
  const grpoSeconds = (performance.now() - tStage) / 1000;
  // The GRPO stage is the final weights. M1 keeps the checkpoint with the best mean rollout reward
  // (best/); with a few noisy batches that choice is biased towards lucky batches and can even pick
  // the weights before any update, so it is evaluated and reported beside, not instead.
  const grpoModelDir = gr.finalDir ?? join(grpoDir, 'final');
  const grpoModel = converted;
  const grpoEval = evaluate('grpo', grpoModel, grpoModelDir, grpoSeconds);
  const pg = pairedGain(sftEval.perProblem, grpoEval.perProblem);
  let grpoBest: DemoSummary['grpo_best'] = null;
  if (gr.bestDir) {
    const { model: best } = loadModel(gr.bestDir, be);
    stageLog('grpo', `best mean reward ${gr.bestReward.toFixed(3)} (rollouts of step ${gr.bestStep}): evaluating ${gr.bestDir} too`);
    const r = evaluateModel(best, tok, testProblems, evalOpts);
    const pb = pairedGain(sftEval.perProblem, r.perProblem);
    grpoBest = { model: gr.bestDir, step: gr.bestStep, mean_reward: gr.bestReward, accuracy: r.accuracy, se: r.se, maj_at_k: r.majAtK, gain_over_sft: pb.gain, gain_se: pb.se };
    stageLog('grpo', `best/: accuracy ${(100 * r.accuracy).toFixed(1)} % ± ${(100 * r.se).toFixed(1)}`);
  }

  // 6. speed: the transformer teacher against the hybrid at growing generation lengths
  const speed: SpeedPoint[] = [];
  const speedPrompt = testProblems[0]!.promptIds;
  for (const L of b.speed.lengths) {
    const ts = timeGeneration(teacher, speedPrompt, L, b.speed.batch);
    const hs = timeGeneration(grpoModel, speedPrompt, L, b.speed.batch);
    const tokens = L * b.speed.batch;
    speed.push({ length: L, batch: b.speed.batch, teacher_seconds: ts, hybrid_seconds: hs, teacher_tokens_per_s: tokens / ts, hybrid_tokens_per_s: tokens / hs, speedup: ts / hs });
    stageLog('speed', `${b.speed.batch} × ${L} tokens: teacher ${(tokens / ts).toFixed(0)} tok/s, hybrid ${(tokens / hs).toFixed(0)} tok/s (×${(ts / hs).toFixed(2)})`);
  }

  const curve = (dir: string, key: string): Array<[number, number]> => metricsOf(dir).filter((l) => typeof l[key] === 'number').map((l) => [l.step, l[key]!]);
  const summary: DemoSummary = {
    format: 'm1ts-demo', seed: o.seed, difficulty: b.difficulty,
    eval: { problems: b.eval.problems, n: b.eval.n, temperature: b.eval.temperature, max_tokens: b.eval.maxTokens, split: 'test' },
    stages, grpo_vs_sft: { gain: pg.gain, se: pg.se, z: pg.z, exceeds_2se: pg.gain > 2 * pg.se }, grpo_best: grpoBest,
    speed, curves: { distill: curve(distillDir, 'loss'), sft: curve(sftDir, 'loss'), grpo_reward: curve(grpoDir, 'reward_mean') },
    budget: b, total_seconds: seconds(),
  };
  writeFileAtomic(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  writeFileAtomic(join(out, 'report.html'), renderDemoReport(summary));
  return summary;
}

/** the table `m1 demo` prints */
export function formatDemoTable(s: DemoSummary): string {
  const pct = (x: number): string => `${(100 * x).toFixed(1)}`;
  const rows = [
    ['stage', 'accuracy %', '± SE', `maj@${s.eval.n} %`, 'resp. tokens', 'train s', 'eval s'],
    ...s.stages.map((r) => [r.stage, pct(r.accuracy), pct(r.se), pct(r.maj_at_k), r.mean_response_tokens.toFixed(1), r.train_seconds.toFixed(1), r.seconds.toFixed(1)]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const g = s.grpo_vs_sft;
  const out = [
    `held-out synthetic-${s.difficulty}: ${s.eval.problems} test problems × ${s.eval.n} samples, temperature ${s.eval.temperature}; SE over problems`,
    line(rows[0]!), ...rows.slice(1).map(line), '',
    `GRPO (final weights) vs SFT: ${g.gain >= 0 ? '+' : ''}${pct(g.gain)} points, paired SE ${pct(g.se)} (z = ${g.z.toFixed(2)}): ${g.exceeds_2se ? 'exceeds' : 'does NOT exceed'} 2 standard errors`,
    ...(s.grpo_best ? [`GRPO best/ (M1's best mean reward, step ${s.grpo_best.step}): ${pct(s.grpo_best.accuracy)} % ± ${pct(s.grpo_best.se)}, ${s.grpo_best.gain_over_sft >= 0 ? '+' : ''}${pct(s.grpo_best.gain_over_sft)} ± ${pct(s.grpo_best.gain_se)} points over SFT`] : []),
    '',
    ['length', 'batch', 'teacher tok/s', 'hybrid tok/s', 'speedup'].join('  '),
    ...s.speed.map((p) => [String(p.length).padStart(6), String(p.batch).padStart(5), p.teacher_tokens_per_s.toFixed(0).padStart(13), p.hybrid_tokens_per_s.toFixed(0).padStart(12), `×${p.speedup.toFixed(2)}`.padStart(7)].join('  ')),
    '', `total ${s.total_seconds.toFixed(0)} s`,
  ];
  return out.join('\n');
}
