import { mkdtempSync, readFileSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { registerTrain } from '../src/cli/commands/train.js';
import { initModel, loadModel, validateConfigs } from '../src/model/checkpoint.js';
import type { CausalLM } from '../src/model/model.js';
import { findPreset } from '../src/model/presets.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { tinyTokenizerFiles } from '../src/model/tiny-tokenizer.js';
import { PackedDataset, problemToRecord, SampleTokenizer } from '../src/train/data.js';
import { crossEntropyStage, modelFilesWriter } from '../src/train/stages.js';
import { syntheticProblems } from '../src/train/synthetic.js';
import { Trainer, TrainingDivergedError, type Stage, type TrainConfig } from '../src/train/trainer.js';

const be = new CpuBackend();
const files = tinyTokenizerFiles();
const tok = Tokenizer.fromObjects(files.tokenizerJson, files.tokenizerConfig);

/** the tiny preset cut to 2 layers and d 32 */
function tinyModel(seed = 0, arch: 'llama' | 'm1' = 'llama'): CausalLM {
  const p = findPreset(arch, 'tiny');
  const config = { ...p.config, num_hidden_layers: 2, hidden_size: 32, head_dim: 8, intermediate_size: 64 };
  const mamba = p.mambaConfig ? { ...p.mambaConfig, n_layer: 2, d_model: 32, d_inner: 32, d_xb: 16, intermediate_size: 64, attn_layers: [1] } : null;
  return initModel(be, validateConfigs(config, mamba), seed);
}

function syntheticData(count: number, seqLen: number, seed = 0): PackedDataset {
  const st = new SampleTokenizer(tok, 'all');
  const samples = syntheticProblems({ split: 'train', difficulty: 1, count, seed }).map((p) => st.encode(problemToRecord(p.problem, p.solution, { suffix: false })));
  return new PackedDataset(samples, { seqLen, boundaries: true, padId: st.padId, seed });
}

function config(o: Partial<TrainConfig> = {}): TrainConfig {
  return {
    schedule: 'cosine', lr: 3e-3, minLr: 3e-4, warmup: 3, gradClip: 1, batch: 2, gradAccum: 1, totalSteps: 30, seed: 0,
    saveEvery: 0, saveTotalLimit: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, ...o,
  };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'm1-train-'));
}

function metrics(dir: string): Array<Record<string, number>> {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
}

function weights(m: CausalLM): Float32Array[] {
  return m.params().map(([, p]) => be.read(p.value));
}

describe('training loop', () => {
  it('a tiny pretraining run on the synthetic task lowers the loss clearly', async () => {
    const model = tinyModel();
    const dir = tmp();
    const stage = crossEntropyStage('pretrain', model, modelFilesWriter(model, { files }));
    const r = await new Trainer({ be, stage, data: syntheticData(200, 96), config: config({ totalSteps: 30, batch: 4, lr: 1e-2, minLr: 1e-3 }), runDir: dir, progress: false, log: () => {} }).run();
    const m = metrics(dir);
    expect(m.length).toBe(30);
    const first = (m[0]!['loss']! + m[1]!['loss']!) / 2, last = (m[28]!['loss']! + m[29]!['loss']!) / 2;
    expect(first).toBeGreaterThan(5); // ≈ ln(320) at init
    expect(last).toBeLessThan(first * 0.6);
    expect(r.finalDir).toBe(join(dir, 'final'));
    const reloaded = loadModel(r.finalDir!, be).model;
    expect(weights(reloaded)).toEqual(weights(model));
    expect(readFileSync(join(dir, 'report.html'), 'utf8')).toContain('<svg');
  });

  it('--recompute (every layer, or the first k) trains to bit-identical weights', async () => {
    const cfg = config({ totalSteps: 3, batch: 2 });
    const run = async (recompute: boolean | number) => {
      const model = tinyModel(3, 'm1');
      await new Trainer({ be, stage: crossEntropyStage('sft', model, modelFilesWriter(model, { files }), {}, recompute), data: syntheticData(20, 96), config: cfg, runDir: tmp(), progress: false, log: () => {} }).run();
      return weights(model);
    };
    const plain = await run(false);
    for (const r of [true, 1]) {
      const w = await run(r);
      for (let i = 0; i < plain.length; i++) expect(Buffer.from(w[i]!.buffer).equals(Buffer.from(plain[i]!.buffer)), `recompute ${r}, tensor ${i}`).toBe(true);
    }
  });

  /** a stage that calls `hook(step)` before each micro-batch */
  function hooked(stage: Stage, hook: (step: number) => void): Stage {
    return { ...stage, microStep: (b, n, ctx) => { hook(ctx.step); return stage.microStep(b, n, ctx); } };
  }

  for (const arch of ['llama', 'm1'] as const) {
    it(`${arch}: resume after an interrupt gives bit-exactly the weights of an uninterrupted run`, async () => {
      const cfg = config({ totalSteps: 6, saveEvery: 2, gradAccum: 2, batch: 1 });
      const data = () => syntheticData(5, 128); // 5 rows per epoch: the 12 rows of the run cross two epoch ends
      const full = tinyModel(1, arch);
      const dirA = tmp();
      await new Trainer({ be, stage: crossEntropyStage('sft', full, modelFilesWriter(full, { files })), data: data(), config: cfg, runDir: dirA, progress: false, log: () => {} }).run();

      const dirB = tmp();
      const first = tinyModel(1, arch);
      let trainer: Trainer | null = null;
      // Ctrl-C during the third step: the loop finishes that step, writes checkpoint-3 and stops
      let sent = false;
      const stage1 = hooked(crossEntropyStage('sft', first, modelFilesWriter(first, { files })), (step) => {
        if (step === 2 && !sent) {
          sent = true;
          process.emit('SIGINT');
        }
      });
      trainer = new Trainer({ be, stage: stage1, data: data(), config: cfg, runDir: dirB, progress: false, log: () => {} });
      const r1 = await trainer.run();
      expect(r1.interrupted).toBe(true);
      expect(r1.steps).toBe(3);
      expect(r1.lastCheckpoint).toBe(join(dirB, 'checkpoint-3'));
      expect(existsSync(join(dirB, 'final'))).toBe(false);
      // a fresh process: new model object with different initial weights, everything comes from the checkpoint
      const second = tinyModel(99, arch);
      const r2 = await new Trainer({ be, stage: crossEntropyStage('sft', second, modelFilesWriter(second, { files })), data: data(), config: cfg, runDir: dirB, resume: true, progress: false, log: () => {} }).run();
      expect(r2.steps).toBe(6);
      const a = weights(full), b = weights(second);
      for (let i = 0; i < a.length; i++) expect(Buffer.from(b[i]!.buffer).equals(Buffer.from(a[i]!.buffer))).toBe(true);
      // metrics of the resumed run line up with the uninterrupted one
      expect(metrics(dirB).map((l) => l['loss'])).toEqual(metrics(dirA).map((l) => l['loss']));
    });
  }

  it('gradient accumulation of 2 micro-batches equals one batch of 2 rows', async () => {
    const run = async (batch: number, gradAccum: number) => {
      const m = tinyModel(2);
      await new Trainer({ be, stage: crossEntropyStage('sft', m, modelFilesWriter(m, { files })), data: syntheticData(40, 48), config: config({ totalSteps: 3, batch, gradAccum }), runDir: tmp(), progress: false, log: () => {} }).run();
      return weights(m);
    };
    const a = await run(2, 1), b = await run(1, 2);
    let maxDiff = 0, moved = 0;
    const init = weights(tinyModel(2));
    for (let i = 0; i < a.length; i++) {
      for (let j = 0; j < a[i]!.length; j++) {
        maxDiff = Math.max(maxDiff, Math.abs(a[i]![j]! - b[i]![j]!));
        moved = Math.max(moved, Math.abs(a[i]![j]! - init[i]![j]!));
      }
    }
    expect(moved).toBeGreaterThan(1e-3);
    expect(maxDiff).toBeLessThan(1e-5);
  });

  it('a poisoned batch (NaN loss) stops the run and keeps the last good checkpoint', async () => {
    const model = tinyModel(3);
    const dir = tmp();
    let before: Float32Array[] = [];
    const stage = hooked(crossEntropyStage('sft', model, modelFilesWriter(model, { files })), (step) => {
      if (step === 4) {
        before = weights(model);
        const w = model.params()[0]![1].value; // poison the embedding: the forward turns NaN
        const v = be.read(w);
        v[0] = NaN;
        be.write(w, v);
      }
    });
    const run = new Trainer({ be, stage, data: syntheticData(20, 48), config: config({ totalSteps: 10, saveEvery: 2 }), runDir: dir, progress: false, log: () => {} }).run();
    await expect(run).rejects.toThrow(TrainingDivergedError);
    await expect(run).rejects.toThrow(/sft step 5: the loss is NaN; stopping without saving\. the last good checkpoint is .*checkpoint-4/);
    expect(readdirSync(dir).filter((n) => n.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-2', 'checkpoint-4']);
    expect(existsSync(join(dir, 'final'))).toBe(false);
    expect(readdirSync(dir).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
    const kept = loadModel(join(dir, 'checkpoint-4'), be).model;
    expect(weights(kept)).toEqual(before);
    expect(metrics(dir).length).toBe(4);
  });

  it('a huge learning rate is caught as divergence', async () => {
    const model = tinyModel(4);
    const dir = tmp();
    const run = new Trainer({ be, stage: crossEntropyStage('sft', model, modelFilesWriter(model, { files })), data: syntheticData(20, 48), config: config({ totalSteps: 10, lr: 1e38, minLr: 0, warmup: 0, saveEvery: 1 }), runDir: dir, progress: false, log: () => {} }).run();
    await expect(run).rejects.toThrow(/stopping without saving/);
    for (const c of readdirSync(dir).filter((n) => n.startsWith('checkpoint-'))) {
      for (const w of weights(loadModel(join(dir, c), be).model)) expect(w.every(Number.isFinite)).toBe(true);
    }
  });

  it('refuses to overwrite a run without --resume, and resume needs the same batch layout', async () => {
    const model = tinyModel(5);
    const dir = tmp();
    const mk = (o: Partial<TrainConfig>, resume?: boolean) => new Trainer({ be, stage: crossEntropyStage('sft', model, modelFilesWriter(model, { files })), data: syntheticData(10, 48), config: config({ totalSteps: 2, ...o }), runDir: dir, resume, progress: false, log: () => {} });
    await mk({}).run();
    await expect(mk({}).run()).rejects.toThrow(/already holds checkpoints: pass --resume/);
    await expect(mk({ batch: 3, totalSteps: 4 }, true).run()).rejects.toThrow(/made with batch 2, this run has 3/);
  });
});

describe('m1 pretrain / sft / distill commands', () => {
  async function cli(args: string[]): Promise<void> {
    const program = new Command();
    program.exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    registerTrain(program);
    await program.parseAsync(args, { from: 'user' });
  }

  it('pretrain → sft → distill end to end from the command line', async () => {
    const dir = tmp();
    const quiet = { log: console.log, err: process.stderr.write };
    const log: string[] = [];
    console.log = (s: string) => void log.push(String(s));
    try {
      await cli(['pretrain', '--preset', 'tiny', '--layers', '1', '--synthetic', '1', '--synthetic-count', '40', '--no-suffix', '--out', join(dir, 'pre'), '--steps', '3', '--seq-len', '128', '--batch', '2']);
      const data = join(dir, 'sft.jsonl');
      writeFileSync(data, syntheticProblems({ split: 'train', difficulty: 2, count: 8, seed: 1 }).map((p) => JSON.stringify({ problem: p.problem, solution: p.solution })).join('\n'));
      await cli(['sft', '--model', join(dir, 'pre', 'final'), '--data', data, '--out', join(dir, 'sft'), '--steps', '2', '--seq-len', '256', '--no-boundaries', '--lr', '1e-4']);
      await cli(['distill', '--teacher', join(dir, 'pre', 'final'), '--student', join(dir, 'sft', 'final'), '--data', data, '--out', join(dir, 'distill'), '--steps', '2', '--seq-len', '256', '--kl-weight', '0.5']);
    } finally {
      console.log = quiet.log;
    }
    expect(log.join('\n')).toMatch(/pretrain done: 3 steps/);
    expect(log.join('\n')).toMatch(/distill done: 2 steps/);
    const d = metrics(join(dir, 'distill'));
    expect(d.length).toBe(2);
    expect(d[0]!['kl']).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(d[0]!['ce'])).toBe(true);
    expect(existsSync(join(dir, 'distill', 'final', 'tokenizer.json'))).toBe(true);
  });

  it('bad flags and bad data lines give clear errors', async () => {
    const dir = tmp();
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"problem": "1+1?", "solution": "\\\\boxed{2}"}\n\n{"problem": "2+2?", "solution": \n');
    await expect(cli(['pretrain', '--preset', 'tiny', '--data', bad, '--out', join(dir, 'r')])).rejects.toThrow(/bad\.jsonl:3: invalid JSON/);
    writeFileSync(bad, '{"prompt": "x"}\n');
    await expect(cli(['pretrain', '--preset', 'tiny', '--data', bad, '--out', join(dir, 'r')])).rejects.toThrow(/bad\.jsonl:1: a record needs "messages"/);
    await expect(cli(['pretrain', '--preset', 'tiny', '--out', join(dir, 'r')])).rejects.toThrow(/exactly one of --data FILE or --synthetic/);
    await expect(cli(['pretrain', '--preset', 'nope', '--synthetic', '1', '--out', join(dir, 'r')])).rejects.toThrow(/--preset "nope" is not a preset/);
    await expect(cli(['pretrain', '--preset', 'tiny', '--synthetic', '1', '--lr', 'fast', '--out', join(dir, 'r')])).rejects.toThrow(/--lr must be a number, got "fast"/);
    await expect(cli(['pretrain', '--preset', 'tiny', '--synthetic', '1', '--steps', '2', '--epochs', '1', '--out', join(dir, 'r')])).rejects.toThrow(/--steps or --epochs, not both/);
    await expect(cli(['sft', '--model', join(dir, 'missing'), '--synthetic', '1', '--out', join(dir, 'r')])).rejects.toThrow(/does not exist/);
  });
});
