// GRPO (M1 stage 3, veRL's recipe; m1-spec §4): each step samples `group` responses for each of `batch`
// prompts with the generation engine, scores them with a binary verifiable reward (the grader: correct
// boxed answer, optionally only after `</think>`), turns rewards into group-normalised advantages, takes
// the old log-probabilities of the sampled tokens at the rollout temperature (only needed, and only
// computed, when a step makes more than one update), and then makes batch/miniBatch optimizer updates (μ),
// each on one mini-batch of prompts with the PPO-clipped loss plus the entropy bonus (heads.ts grpoLoss),
// token-mean over the mini-batch. No KL term. Without the entropy bonus, rows whose advantage is 0 are
// left out of the forward/backward (their gradient is exactly zero).
//
// Run folder (same layout as the other stages, trainer.ts):
//   checkpoint-<step>/  model folder + optimizer.safetensors + grpo_state.json (step, prompt cursor, best)
//   best/               the weights whose rollouts had the highest mean reward (veRL's critic/score/mean)
//   final/              the weights after the last step
//   metrics.jsonl, report.html
//
// Determinism: rollout seeds are a function of (seed, step, prompt slot), the prompt order of (seed,
// epoch), so a resumed run redraws exactly the samples an uninterrupted run would have drawn.
import { parseJsonl } from '../util/jsonl.js';
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { Progress } from '../cli/progress.js';
import { gradeAnswer, type GradeOptions } from '../eval/grader/grade.js';
import { Engine } from '../infer/engine.js';
import { fsyncDirectory, writeFileAtomic } from '../io/atomic.js';
import { SafetensorsReader, writeSafetensors } from '../io/safetensors.js';
import { saveWeights } from '../model/checkpoint.js';
import type { CausalLM } from '../model/model.js';
import { plainSeqInfo } from '../model/module.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { CheckpointError, UserError } from '../util/errors.js';
import { epochPermutation, type DataCursor } from './data.js';
import { grpoAdvantages, grpoLoss, tokenLogprobs, type ChunkOptions } from './heads.js';
import { AdamW } from './optim.js';
import { renderTrainingReport, type MetricsLine } from './report.js';
import { lrAt, validateSchedule, type ScheduleOptions } from './schedule.js';
import { allocateGrads, listCheckpoints, loadWeightsInto, TrainingDivergedError } from './trainer.js';

/** one RL prompt: token ids ready for generation (chat template applied) and the reference answer */
export interface GrpoPrompt {
  id: string;
  promptIds: number[];
  answer: string;
}

export interface GrpoConfig {
  /** samples per prompt (G) */
  group: number;
  /** prompts per step */
  batch: number;
  /** prompts per optimizer update; batch / miniBatch updates per step (μ) */
  miniBatch: number;
  lr: number;
  minLr: number;
  warmup: number;
  schedule: ScheduleOptions['kind'];
  /** PPO clip ε */
  clip: number;
  /** entropy bonus η */
  entropyCoef: number;
  /** rollout temperature; the loss divides logits by it too */
  temperature: number;
  /** most generated tokens per sample */
  maxTokens: number;
  steps: number;
  seed: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** global-norm gradient clip (0 = off) */
  gradClip: number;
  /** sequences per forward/backward (bounds activation memory) */
  microRows: number;
  /** checkpoint every N steps (0 = only at the end) */
  saveEvery: number;
  /** keep the newest N checkpoint-<step> folders (0 = all) */
  saveTotalLimit: number;
  /** M1/DeepScaleR reward parity: no `</think>`, no reward */
  requireThinkClose: boolean;
}

/** M1's GRPO settings (m1-spec §4): 128 prompts × 8, mini-batch 64, lr 1e-6 constant, clip 0.2, η 0.01, T 0.9 */
export const M1_GRPO: Omit<GrpoConfig, 'maxTokens' | 'steps' | 'seed' | 'saveEvery' | 'saveTotalLimit' | 'microRows'> = {
  group: 8, batch: 128, miniBatch: 64, lr: 1e-6, minLr: 0, warmup: 0, schedule: 'constant', clip: 0.2, entropyCoef: 0.01,
  temperature: 0.9, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, gradClip: 1.0, requireThinkClose: false,
};

/** one sampled response with its reward */
export interface Rollout {
  /** index into the step's prompt list */
  prompt: number;
  promptIds: number[];
  /** generated ids, including the stop token when one ended the sample */
  responseIds: number[];
  text: string;
  reward: number;
  finishReason: string;
}

/** reward of a response: 1 for a correct final answer, else 0 (override for other tasks) */
export type RewardFn = (text: string, prompt: GrpoPrompt) => number;

export function graderReward(opts: GradeOptions = {}): RewardFn {
  return (text, p) => (gradeAnswer(text, p.answer, opts).correct ? 1 : 0);
}

/** seed of the request for prompt slot `slot` of step `step` (independent of batching and of resumes) */
export function rolloutSeed(seed: number, step: number, slot: number): number {
  let h = (seed >>> 0) ^ 0x85ebca6b;
  h = Math.imul(h ^ (step + 1), 0x9e3779b1) >>> 0;
  h = Math.imul(h ^ (h >>> 15) ^ (slot + 1), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 13)) >>> 0;
}

/** sample `group` responses for every prompt (one engine request each, shared prefill) and score them */
export function generateRollouts(
  engine: Engine, prompts: readonly GrpoPrompt[],
  o: { group: number; temperature: number; maxTokens: number; seed: number; step: number; reward: RewardFn },
): Rollout[] {
  const outs = engine.generate(prompts.map((p, j) => ({
    promptIds: p.promptIds, n: o.group, sampling: { temperature: o.temperature }, maxTokens: o.maxTokens,
    seed: rolloutSeed(o.seed, o.step, j),
  })));
  const rollouts: Rollout[] = [];
  outs.forEach((out, j) => {
    for (const s of out.samples) {
      const text = s.text ?? '';
      const reward = o.reward(text, prompts[j]!);
      if (!Number.isFinite(reward)) throw new Error(`reward of prompt "${prompts[j]!.id}" sample ${s.index} is ${reward}`);
      rollouts.push({ prompt: j, promptIds: prompts[j]!.promptIds, responseIds: s.tokenIds, text, reward, finishReason: s.finishReason });
    }
  });
  return rollouts;
}

/**
 * Rollouts as a padded batch for the policy forward: row b holds prompt ++ response; position t
 * predicts token t+1, and only response tokens carry the loss. `advantages` is broadcast to every
 * token of its sequence. Shapes: ids/targets/mask/advantages [B*T].
 */
export interface RolloutBatch {
  B: number;
  T: number;
  ids: Int32Array;
  targets: Int32Array;
  mask: Uint8Array;
  advantages: Float32Array;
  /** response tokens (mask ≠ 0) */
  tokens: number;
}

export function rolloutBatch(rollouts: readonly Rollout[], advantages: ArrayLike<number>, padId: number): RolloutBatch {
  if (advantages.length !== rollouts.length) throw new Error(`rolloutBatch: ${advantages.length} advantages for ${rollouts.length} rollouts`);
  const B = rollouts.length;
  // a response of zero tokens cannot happen (the engine emits at least one), but keep T ≥ 1 anyway
  const T = Math.max(1, ...rollouts.map((r) => r.promptIds.length + r.responseIds.length - 1));
  const ids = new Int32Array(B * T).fill(padId), targets = new Int32Array(B * T).fill(padId);
  const mask = new Uint8Array(B * T), adv = new Float32Array(B * T);
  let tokens = 0;
  rollouts.forEach((r, b) => {
    const seq = [...r.promptIds, ...r.responseIds];
    const Lp = r.promptIds.length;
    for (let t = 0; t + 1 < seq.length; t++) {
      ids[b * T + t] = seq[t]!;
      targets[b * T + t] = seq[t + 1]!;
      if (t + 1 >= Lp) {
        mask[b * T + t] = 1;
        adv[b * T + t] = advantages[b]!;
        tokens++;
      }
    }
  });
  return { B, T, ids, targets, mask, advantages: adv, tokens };
}

function countMask(mask: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i]!;
  return n;
}

/** rows `rows` of a batch (in that order), each cut to its first W positions */
function gatherRows(x: RolloutBatch, rows: readonly number[], W: number): RolloutBatch {
  const T = x.T, B = rows.length;
  const ids = new Int32Array(B * W), targets = new Int32Array(B * W), mask = new Uint8Array(B * W), advantages = new Float32Array(B * W);
  rows.forEach((r, b) => {
    ids.set(x.ids.subarray(r * T, r * T + W), b * W);
    targets.set(x.targets.subarray(r * T, r * T + W), b * W);
    mask.set(x.mask.subarray(r * T, r * T + W), b * W);
    advantages.set(x.advantages.subarray(r * T, r * T + W), b * W);
  });
  return { B, T: W, ids, targets, mask, advantages, tokens: countMask(mask) };
}

/**
 * The batch cut into micro-batches of at most `microRows` rows for the model passes: rows sorted by
 * length (prompt + response), each micro-batch cut to its longest row. Only trailing padding is
 * dropped, which a causal model never reads from earlier positions, so every token's logprob is
 * the same as in the full-width batch; the sort keeps short rows from being padded to the longest
 * of the whole batch (at the demo's lengths this saved only a few percent of an update).
 */
export function microBatches(x: RolloutBatch, microRows: number): Array<{ rows: number[]; batch: RolloutBatch }> {
  const lengths: number[] = [];
  for (let r = 0; r < x.B; r++) {
    let L = 1;
    for (let t = x.T - 1; t >= 0; t--) {
      if (x.mask[r * x.T + t] !== 0) {
        L = t + 1;
        break;
      }
    }
    lengths.push(L);
  }
  const order = lengths.map((L, r) => r).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
  const out: Array<{ rows: number[]; batch: RolloutBatch }> = [];
  for (let i = 0; i < order.length; i += microRows) {
    const rows = order.slice(i, i + microRows);
    out.push({ rows, batch: gatherRows(x, rows, Math.max(...rows.map((r) => lengths[r]!))) });
  }
  return out;
}

/** the rows `rows` of a batch (in that order), same T */
export function selectRows(x: RolloutBatch, rows: readonly number[]): RolloutBatch {
  for (const r of rows) if (!(r >= 0 && r < x.B)) throw new Error(`selectRows: row ${r} is outside [0, ${x.B})`);
  return gatherRows(x, rows, x.T);
}

/** rows whose response tokens all have advantage 0 (groups where every sample got the same reward) */
export function zeroAdvantageRows(x: RolloutBatch): boolean[] {
  const out: boolean[] = [];
  for (let r = 0; r < x.B; r++) {
    let zero = true;
    for (let t = r * x.T; t < (r + 1) * x.T && zero; t++) if (x.mask[t] !== 0 && x.advantages[t] !== 0) zero = false;
    out.push(zero);
  }
  return out;
}

/** old log-probabilities of the sampled tokens at temperature `temperature`, computed micro-batch by micro-batch: [B*T] */
export function oldLogprobs(model: CausalLM, x: RolloutBatch, temperature: number, microRows: number, chunks: ChunkOptions = {}): Float32Array {
  const out = new Float32Array(x.B * x.T);
  for (const { rows, batch: m } of microBatches(x, microRows)) {
    const lp = model.be.tidy(() => {
      const { hidden } = model.forward(m.ids, plainSeqInfo(m.B, m.T), { needBackward: false });
      return tokenLogprobs(model.be, { hidden, weight: model.lmHead.value, targets: m.targets, mask: m.mask }, { ...chunks, temperature });
    });
    rows.forEach((r, b) => out.set(lp.logprobs.subarray(b * m.T, (b + 1) * m.T), r * x.T));
  }
  return out;
}

/** one optimizer update's gradients over the rows of a mini-batch: token-mean GRPO loss, accumulated over micro-batches */
export function grpoGradients(
  model: CausalLM, x: RolloutBatch, old: Float32Array | null,
  o: {
    clip: number; entropyCoef: number; temperature: number; microRows: number; chunks?: ChunkOptions;
    /** activation recomputation of the forward (CausalLM.forward `recompute`; default none) */
    recompute?: boolean | number;
    /** token count of the token-mean (default: the response tokens of x; more when rows were left out of x) */
    normalizer?: number;
  },
): { loss: number; tokens: number; sums: Record<string, number> } {
  let normalizer = countMask(x.mask);
  if (o.normalizer !== undefined) {
    if (!(o.normalizer >= normalizer)) throw new Error(`grpoGradients: normalizer ${o.normalizer} is below the ${normalizer} response tokens of the batch`);
    normalizer = o.normalizer;
  }
  let loss = 0;
  const sums: Record<string, number> = {};
  if (normalizer === 0) return { loss: 0, tokens: 0, sums };
  for (const { rows, batch: m } of microBatches(x, o.microRows)) {
    let oldM: Float32Array | null = null;
    if (old) {
      oldM = new Float32Array(m.B * m.T);
      rows.forEach((r, b) => oldM!.set(old.subarray(r * x.T, r * x.T + m.T), b * m.T));
    }
    // activations freed on the device once the gradients are accumulated (grads: allocateGrads, before the loop)
    const r = model.be.tidy(() => {
      const { hidden, saved } = model.forward(m.ids, plainSeqInfo(m.B, m.T), { needBackward: true, recompute: o.recompute ?? false });
      const h = grpoLoss(model.be, { hidden, weight: model.lmHead, targets: m.targets, mask: m.mask }, {
        ...o.chunks, normalizer, advantages: m.advantages, oldLogprobs: oldM,
        clip: o.clip, entropyCoef: o.entropyCoef, temperature: o.temperature,
      });
      model.backwardFromHidden(h.dHidden!, saved!);
      return { loss: h.loss, sums: h.sums };
    });
    loss += r.loss;
    for (const [k, v] of Object.entries(r.sums)) sums[k] = (sums[k] ?? 0) + v;
  }
  return { loss, tokens: normalizer, sums };
}

export interface GrpoRunOptions {
  be: Backend;
  model: CausalLM;
  tokenizer: Tokenizer;
  /** training prompts (walked in a seeded order, epoch after epoch) */
  prompts: readonly GrpoPrompt[];
  config: GrpoConfig;
  runDir: string;
  /** configs and tokenizer files next to the weights */
  writeModelFiles: (dir: string) => void;
  /** stop token ids of the rollouts (eos) */
  stopTokenIds: readonly number[];
  padId: number;
  /** default: the grader's binary correctness (with config.requireThinkClose) */
  reward?: RewardFn;
  /** grading options of the default reward (e.g. tighter CAS budgets) */
  gradeOptions?: GradeOptions;
  chunks?: ChunkOptions;
  /** activation recomputation of the training forward (CausalLM.forward `recompute`; default none) */
  recompute?: boolean | number;
  resume?: boolean | string;
  progress?: boolean;
  log?: (line: string) => void;
  handleSigint?: boolean;
  /** called after each step with its metrics line */
  onStep?: (line: MetricsLine) => void;
}

export interface GrpoSummary {
  steps: number;
  interrupted: boolean;
  bestReward: number;
  /** the step whose rollouts scored bestReward (the weights before that step's update) */
  bestStep: number;
  bestDir: string | null;
  finalDir: string | null;
  lastCheckpoint: string | null;
}

interface GrpoState {
  format: 'm1ts-grpo-state';
  version: 1;
  step: number;
  cursor: DataCursor;
  bestReward: number | null;
  bestStep: number;
  elapsedS: number;
  config: GrpoConfig;
}

export function validateGrpoConfig(c: GrpoConfig): void {
  const int = (v: number, name: string, min: number): void => {
    if (!Number.isInteger(v) || v < min) throw new UserError(`--${name} must be an integer ≥ ${min}, got ${v}`);
  };
  int(c.group, 'group', 1);
  int(c.batch, 'batch', 1);
  int(c.miniBatch, 'mini-batch', 1);
  int(c.maxTokens, 'max-tokens', 1);
  int(c.steps, 'steps', 1);
  int(c.microRows, 'micro-rows', 1);
  if (c.batch % c.miniBatch !== 0) throw new UserError(`--batch ${c.batch} is not a multiple of --mini-batch ${c.miniBatch}`);
  if (!(c.temperature > 0)) throw new UserError(`--temperature must be > 0 for GRPO rollouts, got ${c.temperature}`);
  if (!(c.clip >= 0)) throw new UserError(`--clip must be ≥ 0, got ${c.clip}`);
  if (!(c.entropyCoef >= 0)) throw new UserError(`--entropy must be ≥ 0, got ${c.entropyCoef}`);
  if (!(c.gradClip >= 0)) throw new UserError(`--grad-clip must be ≥ 0, got ${c.gradClip}`);
  validateSchedule({ kind: c.schedule, lr: c.lr, minLr: c.minLr, warmup: c.warmup, totalSteps: c.steps });
}

function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return xs.length > 0 ? s / xs.length : 0;
}

/** write a model folder under a temporary name, then rename it over `final` */
function writeModelDirAtomic(runDir: string, name: string, fill: (tmp: string) => void): string {
  const final = join(runDir, name);
  const tmp = join(runDir, `.tmp-${name}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  fill(tmp);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  fsyncDirectory(runDir);
  return final;
}

/** the GRPO loop; see the file comment */
export async function runGrpo(o: GrpoRunOptions): Promise<GrpoSummary> {
  const c = o.config;
  validateGrpoConfig(c);
  if (o.prompts.length === 0) throw new UserError('grpo: no training prompts');
  const be = o.be, model = o.model;
  const runDir = resolve(o.runDir);
  const log = o.log ?? ((l: string) => void process.stderr.write(`${l}\n`));
  const metricsFile = join(runDir, 'metrics.jsonl');
  const reward = o.reward ?? graderReward({ ...o.gradeOptions, requireThinkClose: c.requireThinkClose });
  const opt = new AdamW(be, model.params(), c);
  allocateGrads(be, model);
  const sched: ScheduleOptions = { kind: c.schedule, lr: c.lr, minLr: c.minLr, warmup: c.warmup, totalSteps: c.steps };
  const maxPrompt = Math.max(...o.prompts.map((p) => p.promptIds.length));
  const maxContext = model.cfg.llama.maxPositionEmbeddings;
  if (maxPrompt + c.maxTokens > maxContext) {
    throw new UserError(`grpo: the longest prompt (${maxPrompt} tokens) + --max-tokens ${c.maxTokens} exceeds the model's context ${maxContext}`);
  }
  const engine = new Engine(model, {
    tokenizer: o.tokenizer, stopTokenIds: o.stopTokenIds, maxBatch: Math.min(c.batch * c.group, 256), maxContext: Math.min(maxContext, maxPrompt + c.maxTokens),
  });

  let step = 0;
  let cursor: DataCursor = { epoch: 0, index: 0 };
  let bestReward = -Infinity, bestStep = 0, elapsedS = 0;
  let lastCheckpoint: string | null = null;
  mkdirSync(runDir, { recursive: true });

  const saveCheckpoint = (): string => {
    const dir = writeModelDirAtomic(runDir, `checkpoint-${step}`, (tmp) => {
      o.writeModelFiles(tmp);
      saveWeights(tmp, model, { metadata: { producer: 'm1ts grpo', step: String(step) } });
      const st = opt.state();
      const optDir = join(tmp, '.optimizer');
      writeSafetensors(optDir, [...st.tensors].map(([n, a]) => ({ name: n, dtype: 'F32' as const, shape: [a.length], data: a })));
      renameSync(join(optDir, 'model.safetensors'), join(tmp, 'optimizer.safetensors'));
      rmSync(optDir, { recursive: true, force: true });
      const state: GrpoState = {
        format: 'm1ts-grpo-state', version: 1, step, cursor, bestReward: Number.isFinite(bestReward) ? bestReward : null, bestStep, elapsedS, config: c,
      };
      // trainer_state.json marks a complete checkpoint for listCheckpoints; it is the GRPO state here
      writeFileAtomic(join(tmp, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
    });
    lastCheckpoint = dir;
    if (c.saveTotalLimit > 0) {
      const all = listCheckpoints(runDir);
      for (const x of all.slice(0, Math.max(0, all.length - c.saveTotalLimit))) rmSync(x.dir, { recursive: true, force: true });
    }
    return dir;
  };
  const saveModel = (name: string): string => writeModelDirAtomic(runDir, name, (tmp) => {
    o.writeModelFiles(tmp);
    saveWeights(tmp, model, { metadata: { producer: 'm1ts grpo', step: String(step) } });
  });
  const readMetrics = (): MetricsLine[] => (existsSync(metricsFile)
    ? readFileSync(metricsFile, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as MetricsLine) : []);
  const writeReport = (): void => {
    const html = renderTrainingReport(`m1 grpo: ${runDir}`, readMetrics(), {
      stage: 'grpo', step: `${step} / ${c.steps}`, 'prompts × group': `${c.batch} × ${c.group}`,
      'mini-batch (μ updates per step)': `${c.miniBatch} (${c.batch / c.miniBatch})`, lr: `${c.lr} (${c.schedule}, warmup ${c.warmup})`,
      'clip ε, entropy η, temperature': `${c.clip}, ${c.entropyCoef}, ${c.temperature}`, 'max tokens': c.maxTokens,
      'best mean reward': Number.isFinite(bestReward) ? `${bestReward.toFixed(4)} (rollouts of step ${bestStep})` : '—',
      parameters: model.parameterCount(), seed: c.seed,
    });
    writeFileAtomic(join(runDir, 'report.html'), html);
  };
  const diverged = (what: string): never => {
    writeReport();
    const keep = lastCheckpoint ? `the last good checkpoint is ${lastCheckpoint} (continue with --resume, e.g. with a lower --lr)` : 'no checkpoint was written before it';
    throw new TrainingDivergedError(`grpo step ${step + 1}: ${what}; stopping without saving. ${keep}`);
  };

  if (o.resume) {
    const dir = typeof o.resume === 'string' ? o.resume : listCheckpoints(runDir).at(-1)?.dir;
    if (!dir) throw new UserError(`--resume: no checkpoint-<step> folder in ${runDir}`);
    const st = JSON.parse(readFileSync(join(dir, 'trainer_state.json'), 'utf8')) as GrpoState;
    if (st.format !== 'm1ts-grpo-state') throw new CheckpointError(`${dir}/trainer_state.json is not a GRPO checkpoint`);
    for (const k of ['group', 'batch', 'miniBatch', 'seed', 'temperature', 'maxTokens'] as const) {
      if (st.config[k] !== c[k]) throw new UserError(`--resume: the checkpoint was made with ${k} ${st.config[k]}, this run has ${c[k]}; resuming exactly needs the same value`);
    }
    loadWeightsInto(model, dir);
    const reader = SafetensorsReader.open(join(dir, 'optimizer.safetensors'));
    try {
      opt.load({ step: st.step * (c.batch / c.miniBatch), tensors: new Map(reader.names().map((n) => [n, reader.read(n)])) });
    } finally {
      reader.close();
    }
    step = st.step;
    cursor = st.cursor;
    bestReward = st.bestReward ?? -Infinity;
    bestStep = st.bestStep;
    elapsedS = st.elapsedS;
    lastCheckpoint = dir;
    writeFileAtomic(metricsFile, readMetrics().filter((l) => l.step <= step).map((l) => `${JSON.stringify(l)}\n`).join(''));
    log(`resumed grpo from ${dir} at step ${step}`);
  } else if (listCheckpoints(runDir).length > 0) {
    throw new UserError(`${runDir} already holds checkpoints: pass --resume to continue, or choose another --out`);
  } else if (existsSync(metricsFile)) rmSync(metricsFile);

  let stopRequested = false;
  const onSigint = (): void => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    log('\ninterrupt: writing a checkpoint after this step (Ctrl-C again to quit at once)');
  };
  const handleSigint = o.handleSigint ?? true;
  if (handleSigint) process.on('SIGINT', onSigint);
  const bar = o.progress === false ? null : new Progress(c.steps, 'grpo', 'steps');
  bar?.update(step);
  const updates = c.batch / c.miniBatch;
  try {
    while (step < c.steps && !stopRequested) {
      const t0 = performance.now();
      // the step's prompts, in the seeded order of their epoch
      const prompts: GrpoPrompt[] = [];
      for (let i = 0; i < c.batch; i++) {
        if (cursor.index >= o.prompts.length) cursor = { epoch: cursor.epoch + 1, index: 0 };
        const order = epochPermutation(o.prompts.length, c.seed, cursor.epoch);
        prompts.push(o.prompts[order[cursor.index]!]!);
        cursor = { epoch: cursor.epoch, index: cursor.index + 1 };
      }
      const rollouts = generateRollouts(engine, prompts, { group: c.group, temperature: c.temperature, maxTokens: c.maxTokens, seed: c.seed, step, reward });
      const tRoll = performance.now();
      const rewards = rollouts.map((r) => r.reward);
      const meanReward = mean(rewards);
      // best = the policy that produced the best-scoring rollouts: the weights before this update
      if (meanReward > bestReward) {
        bestReward = meanReward;
        bestStep = step + 1;
        saveModel('best');
      }
      const adv = grpoAdvantages(rewards, c.group);
      const batch = rolloutBatch(rollouts, adv, o.padId);
      const rowsPer = c.miniBatch * c.group;
      // Without the entropy bonus a row whose advantage is 0 (its group's samples all scored the same)
      // has an exactly zero loss gradient: it is left out of the forward/backward, and the token-mean
      // keeps its tokens in the denominator, so the update is the same as with it.
      const zero = c.entropyCoef === 0 ? zeroAdvantageRows(batch) : null;
      const minis = Array.from({ length: updates }, (_, u) => {
        const rows = [...Array(rowsPer).keys()].map((r) => u * rowsPer + r).filter((r) => r < batch.B);
        const full = updates === 1 ? batch : selectRows(batch, rows);
        const keep = [...Array(full.B).keys()].filter((r) => !zero || !zero[rows[r]!]);
        return { x: keep.length === full.B ? full : selectRows(full, keep), normalizer: full.tokens };
      });
      // With one update per step the policy being differentiated is the one that sampled the rollouts:
      // log p_old = log p exactly, so the extra forward is skipped (ratio ≡ 1). Otherwise the old
      // log-probabilities of every mini-batch are taken before the first update.
      const olds = minis.map((m) => (updates > 1 ? oldLogprobs(model, m.x, c.temperature, c.microRows, o.chunks) : null));
      let loss = 0, gradNormSum = 0, lr = 0, tokens = 0, activeTokens = 0, activeRows = 0;
      const sums: Record<string, number> = {};
      for (let u = 0; u < updates; u++) {
        const mb = minis[u]!.x;
        activeRows += mb.B;
        activeTokens += mb.tokens;
        model.zeroGrads();
        const r = grpoGradients(model, mb, olds[u]!, {
          clip: c.clip, entropyCoef: c.entropyCoef, temperature: c.temperature, microRows: c.microRows, chunks: o.chunks, recompute: o.recompute,
          normalizer: minis[u]!.normalizer,
        });
        if (!Number.isFinite(r.loss)) diverged(`the GRPO loss is ${r.loss}`);
        const gn = c.gradClip > 0 ? opt.clipGradNorm(c.gradClip) : opt.gradNorm();
        if (!Number.isFinite(gn)) diverged(`the gradient norm is ${gn} (loss ${r.loss})`);
        lr = lrAt(step, sched);
        opt.step(lr);
        loss += r.loss / updates;
        gradNormSum += gn;
        tokens += r.tokens;
        for (const [k, v] of Object.entries(r.sums)) sums[k] = (sums[k] ?? 0) + v;
      }
      if (!opt.weightsFinite(model.params())) diverged(`the update made weights non-finite (lr ${lr})`);
      step++;
      const dt = (performance.now() - t0) / 1000;
      elapsedS += dt;
      const groups = rewards.length / c.group;
      let solved = 0, unsolved = 0;
      for (let g = 0; g < groups; g++) {
        const s = mean(rewards.slice(g * c.group, (g + 1) * c.group));
        if (s === 1) solved++;
        if (s === 0) unsolved++;
      }
      const line: MetricsLine = {
        step, loss, lr, grad_norm: gradNormSum / updates, tokens_per_s: tokens / Math.max(dt, 1e-9),
        reward_mean: meanReward, reward_best: bestReward,
        response_length: mean(rollouts.map((r) => r.responseIds.length)),
        truncated_frac: mean(rollouts.map((r) => (r.finishReason === 'length' ? 1 : 0))),
        // diagnostics are means over the tokens that went through the update (rows with advantage ≠ 0 when skipped)
        entropy: (sums['entropy'] ?? 0) / Math.max(1, activeTokens), clip_frac: (sums['clipped'] ?? 0) / Math.max(1, activeTokens),
        pg_loss: (sums['pg'] ?? 0) / Math.max(1, activeTokens), approx_kl: (sums['approx_kl'] ?? 0) / Math.max(1, activeTokens),
        updated_rows_frac: activeRows / Math.max(1, batch.B),
        groups_all_correct: solved / groups, groups_all_wrong: unsolved / groups,
        rollout_s: (tRoll - t0) / 1000, update_s: (performance.now() - tRoll) / 1000, elapsed_s: elapsedS,
      };
      appendFileSync(metricsFile, JSON.stringify(line) + '\n');
      o.onStep?.(line);
      bar?.update(step, `reward ${meanReward.toFixed(3)} | best ${bestReward.toFixed(3)} | len ${line.response_length!.toFixed(1)} | ${dt.toFixed(1)} s/step`);
      if (step === c.steps || (c.saveEvery > 0 && step % c.saveEvery === 0)) {
        saveCheckpoint();
        writeReport();
      }
      await new Promise<void>((r) => setImmediate(r));
    }
    const interrupted = step < c.steps;
    if (interrupted && lastCheckpoint !== join(runDir, `checkpoint-${step}`)) saveCheckpoint();
    writeReport();
    const finalDir = interrupted ? null : saveModel('final');
    return {
      steps: step, interrupted, bestReward, bestStep, bestDir: existsSync(join(runDir, 'best')) ? join(runDir, 'best') : null, finalDir, lastCheckpoint,
    };
  } finally {
    bar?.stop();
    if (handleSigint) process.off('SIGINT', onSigint);
    engine.dispose();
  }
}

/** one prompt-file record: {"problem"|"question"|"prompt", "answer"}; a GSM8K answer's `#### N` line is the answer */
export function promptRecordFromJson(obj: unknown, where: string): { id: string; problem: string; answer: string } {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new UserError(`${where}: expected a JSON object`);
  const o = obj as Record<string, unknown>;
  const problem = o['problem'] ?? o['question'] ?? o['prompt'];
  if (typeof problem !== 'string' || problem.trim() === '') throw new UserError(`${where}: needs a non-empty string "problem" (or "question" / "prompt")`);
  let answer = o['answer'];
  if (typeof answer === 'number') answer = String(answer);
  if (typeof answer !== 'string' || answer.trim() === '') throw new UserError(`${where}: needs a non-empty "answer"`);
  const hash = /####\s*(.+?)\s*$/.exec(answer);
  if (hash) answer = hash[1]!.replace(/,/g, '');
  const id = typeof o['id'] === 'string' || typeof o['id'] === 'number' ? String(o['id']) : where;
  return { id, problem, answer: (answer as string).trim() };
}

/** a JSONL prompt file; a malformed line is reported as `file:line` */
export function parsePromptFile(text: string, file: string): Array<{ id: string; problem: string; answer: string }> {
  return parseJsonl(text, file, promptRecordFromJson, 'prompts');
}
