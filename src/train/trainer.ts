// The training loop shared by the stages (pretrain, distill, SFT): gradient accumulation, clipping,
// AdamW, the lr schedule, atomic checkpoints with everything a bit-exact resume needs, metrics.jsonl,
// a progress bar, report.html, Ctrl-C → checkpoint, and a stop on a non-finite loss.
//
// Run folder:
//   checkpoint-<step>/   model folder (configs, tokenizer, model.safetensors) + optimizer.safetensors
//                        (f32 moments and master weights) + trainer_state.json (step, data cursor, RNG)
//   final/               the finished model (model folder only)
//   metrics.jsonl        one line per optimizer step
//   report.html          curves
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { Progress } from '../cli/progress.js';
import { fsyncDirectory, writeFileAtomic } from '../io/atomic.js';
import { SafetensorsReader, writeSafetensors } from '../io/safetensors.js';
import { saveWeights } from '../model/checkpoint.js';
import type { CausalLM } from '../model/model.js';
import { CheckpointError, UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import type { Batch, DataCursor, PackedDataset } from './data.js';
import { AdamW, type AdamWOptions } from './optim.js';
import { renderTrainingReport, type MetricsLine } from './report.js';
import { lrAt, validateSchedule, type ScheduleOptions } from './schedule.js';

export interface TrainConfig extends AdamWOptions {
  schedule: ScheduleOptions['kind'];
  lr: number;
  minLr: number;
  warmup: number;
  /** global-norm clip (0 = off) */
  gradClip: number;
  /** rows per micro-batch */
  batch: number;
  /** micro-batches per optimizer step */
  gradAccum: number;
  totalSteps: number;
  seed: number;
  /** checkpoint every N steps (0 = only at the end) */
  saveEvery: number;
  /** keep at most this many checkpoint-<step> folders (0 = all) */
  saveTotalLimit: number;
}

/** what one micro-batch of a stage produced (its gradients are accumulated into the model) */
export interface MicroResult {
  /** Σ per-token loss / normalizer */
  loss: number;
  /** per-token sums of the head's diagnostics */
  sums: Record<string, number>;
  tokens: number;
}

/** a stage: how one micro-batch becomes gradients, and which files a checkpoint of its model needs */
export interface Stage {
  name: string;
  /** the trained model */
  model: CausalLM;
  /** forward + loss head + backward; `normalizer` is the label-token count of the whole step */
  microStep(batch: Batch, normalizer: number, ctx: { step: number; rng: Rng }): MicroResult;
  /** configs and tokenizer files next to the weights */
  writeModelFiles(dir: string): void;
}

export interface TrainerOptions {
  be: Backend;
  stage: Stage;
  data: PackedDataset;
  config: TrainConfig;
  runDir: string;
  /** continue from the newest checkpoint in runDir (true) or from this checkpoint folder */
  resume?: boolean | string;
  /** show a progress bar on a terminal (default true) */
  progress?: boolean;
  /** status lines (default: stderr) */
  log?: (line: string) => void;
  /** handle SIGINT by checkpointing and stopping (default true) */
  handleSigint?: boolean;
}

export interface RunSummary {
  steps: number;
  finalLoss: number;
  interrupted: boolean;
  lastCheckpoint: string | null;
  finalDir: string | null;
}

interface TrainerState {
  format: 'm1ts-trainer-state';
  version: 1;
  stage: string;
  step: number;
  cursor: DataCursor;
  /** Rng.state() with the Box–Muller spare as null when absent */
  rng: Array<number | null>;
  tokensSeen: number;
  elapsedS: number;
  config: TrainConfig;
}

/** a non-finite loss, gradient or weight: the run stops and keeps its last good checkpoint */
export class TrainingDivergedError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'TrainingDivergedError';
  }
}

const CKPT_RE = /^checkpoint-(\d+)$/;

/** checkpoint-<step> folders of a run, oldest first */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  if (!existsSync(runDir)) return [];
  return readdirSync(runDir)
    .map((n) => ({ m: CKPT_RE.exec(n), n }))
    .filter((x) => x.m && existsSync(join(runDir, x.n, 'trainer_state.json')))
    .map((x) => ({ step: Number(x.m![1]), dir: join(runDir, x.n) }))
    .sort((a, b) => a.step - b.step);
}

/** overwrite a model's parameters from a model folder (same architecture) */
export function loadWeightsInto(model: CausalLM, dir: string): void {
  const reader = SafetensorsReader.open(dir);
  try {
    for (const [key, p] of model.params()) {
      if (!reader.has(key)) throw new CheckpointError(`${dir}: tensor "${key}" is missing`);
      const info = reader.info(key);
      if (info.shape.join(',') !== p.value.shape.join(',')) {
        throw new CheckpointError(`${dir}: tensor "${key}" has shape [${info.shape.join(', ')}], the model needs [${p.value.shape.join(', ')}]`);
      }
      model.be.write(p.value, reader.read(key));
    }
  } finally {
    reader.close();
  }
}

/**
 * Gives every parameter its gradient buffer before the first step. A micro-batch runs inside
 * `be.tidy`, which disposes every tensor created in it that the step does not return; a gradient
 * allocated lazily there (Param.ensureGrad on first use) would be freed with the activations. A cleared gradient
 * (zeroGrads) stays cleared.
 */
export function allocateGrads(be: Backend, model: CausalLM): void {
  for (const [, p] of model.params()) p.allocateGrad(be);
}

export class Trainer {
  readonly be: Backend;
  readonly opt: AdamW;
  readonly config: TrainConfig;
  readonly runDir: string;
  private step = 0;
  private cursor: DataCursor = { epoch: 0, index: 0 };
  private rng: Rng;
  private tokensSeen = 0;
  private elapsedS = 0;
  private stopRequested = false;
  private lastCheckpoint: string | null = null;
  private readonly log: (line: string) => void;

  constructor(private readonly o: TrainerOptions) {
    this.be = o.be;
    this.config = o.config;
    this.runDir = resolve(o.runDir);
    this.log = o.log ?? ((l) => process.stderr.write(`${l}\n`));
    const c = o.config;
    validateSchedule({ kind: c.schedule, lr: c.lr, minLr: c.minLr, warmup: c.warmup, totalSteps: c.totalSteps });
    for (const [k, v] of [['batch', c.batch], ['gradAccum', c.gradAccum]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new UserError(`--${k === 'gradAccum' ? 'grad-accum' : k} must be an integer ≥ 1, got ${v}`);
    }
    if (!(c.gradClip >= 0)) throw new UserError(`--grad-clip must be ≥ 0, got ${c.gradClip}`);
    this.opt = new AdamW(o.be, o.stage.model.params(), c);
    allocateGrads(o.be, o.stage.model);
    this.rng = new Rng(c.seed);
  }

  private get metricsFile(): string {
    return join(this.runDir, 'metrics.jsonl');
  }

  /** restore weights, optimizer, cursor, RNG and step from a checkpoint folder */
  private restore(dir: string): void {
    const state = JSON.parse(readFileSync(join(dir, 'trainer_state.json'), 'utf8')) as TrainerState;
    if (state.format !== 'm1ts-trainer-state') throw new CheckpointError(`${dir}/trainer_state.json is not an m1ts trainer state`);
    if (state.stage !== this.o.stage.name) throw new UserError(`--resume: ${dir} is a ${state.stage} checkpoint, this is ${this.o.stage.name}`);
    const c = this.config, p = state.config;
    for (const k of ['batch', 'gradAccum', 'seed'] as const) {
      if (p[k] !== c[k]) throw new UserError(`--resume: the checkpoint was made with ${k} ${p[k]}, this run has ${c[k]}; resuming exactly needs the same value`);
    }
    loadWeightsInto(this.o.stage.model, dir);
    const reader = SafetensorsReader.open(join(dir, 'optimizer.safetensors'));
    try {
      const tensors = new Map(reader.names().map((n) => [n, reader.read(n)]));
      this.opt.load({ step: state.step, tensors });
    } finally {
      reader.close();
    }
    this.step = state.step;
    this.cursor = state.cursor;
    this.rng.restore(state.rng.map((x) => (x === null ? NaN : x)));
    this.tokensSeen = state.tokensSeen;
    this.elapsedS = state.elapsedS;
    this.lastCheckpoint = dir;
    // metrics written after this checkpoint belong to a future that did not happen
    if (existsSync(this.metricsFile)) {
      const kept = readFileSync(this.metricsFile, 'utf8').split('\n').filter((l) => l.trim() !== '' && (JSON.parse(l) as MetricsLine).step <= state.step);
      writeFileAtomic(this.metricsFile, kept.map((l) => `${l}\n`).join(''));
    }
  }

  /** write checkpoint-<step> under a temporary name, then rename it into place */
  saveCheckpoint(): string {
    const name = `checkpoint-${this.step}`;
    const final = join(this.runDir, name);
    const tmp = join(this.runDir, `.tmp-${name}-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    this.o.stage.writeModelFiles(tmp);
    saveWeights(tmp, this.o.stage.model, { metadata: { producer: `m1ts ${this.o.stage.name}`, step: String(this.step) } });
    // optimizer state: written as its own safetensors file (writeSafetensors names files model.safetensors)
    const st = this.opt.state();
    const optDir = join(tmp, '.optimizer');
    writeSafetensors(optDir, [...st.tensors].map(([n, a]) => ({ name: n, dtype: 'F32' as const, shape: [a.length], data: a })));
    renameSync(join(optDir, 'model.safetensors'), join(tmp, 'optimizer.safetensors'));
    rmSync(optDir, { recursive: true, force: true });
    const state: TrainerState = {
      format: 'm1ts-trainer-state', version: 1, stage: this.o.stage.name, step: this.step, cursor: this.cursor,
      rng: this.rng.state().map((x) => (Number.isNaN(x) ? null : x)), tokensSeen: this.tokensSeen, elapsedS: this.elapsedS,
      config: this.config,
    };
    writeFileAtomic(join(tmp, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
    if (existsSync(final)) rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
    fsyncDirectory(this.runDir);
    this.lastCheckpoint = final;
    const limit = this.config.saveTotalLimit;
    if (limit > 0) {
      const all = listCheckpoints(this.runDir);
      for (const c of all.slice(0, Math.max(0, all.length - limit))) rmSync(c.dir, { recursive: true, force: true });
    }
    return final;
  }

  private writeReport(): void {
    const lines = existsSync(this.metricsFile)
      ? readFileSync(this.metricsFile, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as MetricsLine)
      : [];
    const c = this.config;
    const html = renderTrainingReport(`m1 ${this.o.stage.name}: ${this.runDir}`, lines, {
      stage: this.o.stage.name, step: `${this.step} / ${c.totalSteps}`, lr: `${c.lr} (${c.schedule}, warmup ${c.warmup}, min ${c.minLr})`,
      'AdamW β1, β2, eps, wd': `${c.beta1}, ${c.beta2}, ${c.eps}, ${c.weightDecay}`, 'grad clip': c.gradClip,
      'rows × seq × accum': `${c.batch} × ${this.o.data.opts.seqLen} × ${c.gradAccum}`, 'tokens seen': this.tokensSeen,
      parameters: this.o.stage.model.parameterCount(), seed: c.seed,
    });
    writeFileAtomic(join(this.runDir, 'report.html'), html);
  }

  private checkWeightsFinite(): boolean {
    return this.opt.weightsFinite(this.o.stage.model.params());
  }

  private diverged(what: string): never {
    this.writeReport();
    const keep = this.lastCheckpoint ? `the last good checkpoint is ${this.lastCheckpoint} (continue from it with --resume, e.g. with a lower --lr)` : 'no checkpoint was written before it';
    throw new TrainingDivergedError(`${this.o.stage.name} step ${this.step + 1}: ${what}; stopping without saving. ${keep}`);
  }

  async run(): Promise<RunSummary> {
    const c = this.config;
    mkdirSync(this.runDir, { recursive: true });
    if (this.o.resume) {
      const dir = typeof this.o.resume === 'string' ? this.o.resume : listCheckpoints(this.runDir).at(-1)?.dir;
      if (!dir) throw new UserError(`--resume: no checkpoint-<step> folder with trainer_state.json in ${this.runDir}`);
      this.restore(dir);
      this.log(`resumed ${this.o.stage.name} from ${dir} at step ${this.step} (epoch ${this.cursor.epoch}, row ${this.cursor.index})`);
    } else if (listCheckpoints(this.runDir).length > 0) {
      throw new UserError(`${this.runDir} already holds checkpoints: pass --resume to continue, or choose another --out`);
    } else if (existsSync(this.metricsFile)) rmSync(this.metricsFile);

    const handleSigint = this.o.handleSigint ?? true;
    const onSigint = (): void => {
      if (this.stopRequested) process.exit(130); // a second Ctrl-C: leave now
      this.stopRequested = true;
      this.log('\ninterrupt: writing a checkpoint after this step (Ctrl-C again to quit at once)');
    };
    if (handleSigint) process.on('SIGINT', onSigint);
    const bar = this.o.progress === false ? null : new Progress(c.totalSteps, this.o.stage.name, 'steps');
    bar?.update(this.step);
    let lastLoss = NaN;
    try {
      const sched: ScheduleOptions = { kind: c.schedule, lr: c.lr, minLr: c.minLr, warmup: c.warmup, totalSteps: c.totalSteps };
      while (this.step < c.totalSteps && !this.stopRequested) {
        const t0 = performance.now();
        let cursor = this.cursor;
        const micro: Batch[] = [];
        for (let k = 0; k < c.gradAccum; k++) {
          const r = this.o.data.nextBatch(cursor, c.batch);
          micro.push(r.batch);
          cursor = r.next;
        }
        const normalizer = Math.max(1, micro.reduce((s, b) => s + b.labelTokens, 0));
        this.o.stage.model.zeroGrads();
        let loss = 0, tokens = 0;
        const sums: Record<string, number> = {};
        let labelTokens = 0;
        for (const b of micro) {
          // the micro-batch's activations are freed as soon as its gradients are accumulated
          const r = this.be.tidy(() => this.o.stage.microStep(b, normalizer, { step: this.step, rng: this.rng }));
          loss += r.loss;
          tokens += b.tokens;
          labelTokens += r.tokens;
          for (const [k, v] of Object.entries(r.sums)) sums[k] = (sums[k] ?? 0) + v;
        }
        if (!Number.isFinite(loss)) this.diverged(`the loss is ${loss}`);
        const gradNorm = c.gradClip > 0 ? this.opt.clipGradNorm(c.gradClip) : this.opt.gradNorm();
        if (!Number.isFinite(gradNorm)) this.diverged(`the gradient norm is ${gradNorm} (loss ${loss})`);
        const lr = lrAt(this.step, sched);
        this.opt.step(lr);
        if (!this.checkWeightsFinite()) this.diverged(`the update made weights non-finite (lr ${lr})`);
        this.step++;
        this.cursor = cursor;
        this.tokensSeen += tokens;
        const dt = (performance.now() - t0) / 1000;
        this.elapsedS += dt;
        lastLoss = loss;
        const line: MetricsLine = {
          step: this.step, loss, lr, grad_norm: gradNorm, tokens, tokens_per_s: tokens / Math.max(dt, 1e-9),
          elapsed_s: this.elapsedS, epoch: this.cursor.epoch + this.cursor.index / Math.max(1, this.o.data.rowsPerEpoch),
        };
        for (const [k, v] of Object.entries(sums)) line[k] = v / Math.max(1, labelTokens);
        appendFileSync(this.metricsFile, JSON.stringify(line) + '\n');
        bar?.update(this.step, `loss ${loss.toFixed(4)} | ${Math.round(line.tokens_per_s)} tok/s | lr ${lr.toExponential(2)}`);
        const atEnd = this.step === c.totalSteps;
        if (atEnd || (c.saveEvery > 0 && this.step % c.saveEvery === 0)) {
          this.saveCheckpoint();
          this.writeReport();
        }
        // let signal handlers run between steps
        await new Promise<void>((r) => setImmediate(r));
      }
      const interrupted = this.step < c.totalSteps;
      if (interrupted && this.lastCheckpoint !== join(this.runDir, `checkpoint-${this.step}`)) this.saveCheckpoint();
      this.writeReport();
      let finalDir: string | null = null;
      if (!interrupted) {
        finalDir = join(this.runDir, 'final');
        const tmp = join(this.runDir, `.tmp-final-${process.pid}`);
        rmSync(tmp, { recursive: true, force: true });
        mkdirSync(tmp, { recursive: true });
        this.o.stage.writeModelFiles(tmp);
        saveWeights(tmp, this.o.stage.model, { metadata: { producer: `m1ts ${this.o.stage.name}`, step: String(this.step) } });
        rmSync(finalDir, { recursive: true, force: true });
        renameSync(tmp, finalDir);
        fsyncDirectory(this.runDir);
      }
      return { steps: this.step, finalLoss: lastLoss, interrupted, lastCheckpoint: this.lastCheckpoint, finalDir };
    } finally {
      bar?.stop();
      if (handleSigint) process.off('SIGINT', onSigint);
    }
  }

  /** for tests and the CLI: ask the loop to checkpoint and stop after the current step */
  requestStop(): void {
    this.stopRequested = true;
  }
}
