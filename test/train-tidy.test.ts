// The training steps free their activations with Backend.tidy (which the CUDA backend honours; the
// CPU's tidy is a no-op). A CPU backend that implements tidy's contract — dispose every tensor created
// inside that the result does not reach — shows on the CPU what the GPU would do: a parameter, gradient
// or optimizer tensor created inside a step would be disposed and its next use would throw.
import { describe, expect, it } from 'vitest';
import type { Tensor } from '../src/backend/tensor.js';
import { CpuBackend, CpuTensor } from '../src/backend/cpu/index.js';
import { initModel, validateConfigs } from '../src/model/checkpoint.js';
import type { CausalLM } from '../src/model/model.js';
import { findPreset } from '../src/model/presets.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { tinyTokenizerFiles } from '../src/model/tiny-tokenizer.js';
import { PackedDataset, problemToRecord, SampleTokenizer } from '../src/train/data.js';
import { grpoGradients, type RolloutBatch } from '../src/train/grpo.js';
import { crossEntropyStage, distillStage, modelFilesWriter } from '../src/train/stages.js';
import { syntheticProblems } from '../src/train/synthetic.js';
import { allocateGrads, Trainer, type Stage, type TrainConfig } from '../src/train/trainer.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** CpuBackend whose tidy disposes what it does not return, like the CUDA backend's */
class TidyCheckBackend extends CpuBackend {
  private scopes: CpuTensor[][] = [];
  /** every tensor a tidy scope disposed */
  readonly disposed = new Set<Tensor>();
  /** outermost tidy scopes opened (the trainer's one per micro-step; the loss heads nest their own per vocabulary chunk) */
  tidyCalls = 0;

  override wrap(data: Float32Array, shape: readonly number[], dtype: Tensor['dtype'] = 'f32'): CpuTensor {
    const t = super.wrap(data, shape, dtype);
    this.scopes[this.scopes.length - 1]?.push(t);
    return t;
  }
  override tidy<R>(fn: () => R): R {
    if (this.scopes.length === 0) this.tidyCalls++;
    this.scopes.push([]);
    let result: R;
    try {
      result = fn();
    } catch (e) {
      for (const t of this.scopes.pop()!) { t.dispose(); this.disposed.add(t); }
      throw e;
    }
    const created = this.scopes.pop()!;
    const keep = new Set<Tensor>();
    const collect = (v: unknown, depth: number): void => {
      if (depth > 4 || v === null || typeof v !== 'object') return;
      if (v instanceof CpuTensor) { keep.add(v); return; }
      for (const x of Array.isArray(v) ? v : Object.values(v as Record<string, unknown>)) collect(x, depth + 1);
    };
    collect(result, 0);
    for (const t of created) {
      if (keep.has(t)) this.scopes[this.scopes.length - 1]?.push(t);
      else { t.dispose(); this.disposed.add(t); }
    }
    return result;
  }
}

const files = tinyTokenizerFiles();
const tok = Tokenizer.fromObjects(files.tokenizerJson, files.tokenizerConfig);

function tinyModel(be: CpuBackend, arch: 'llama' | 'm1', seed: number): CausalLM {
  const p = findPreset(arch, 'tiny');
  const config = { ...p.config, num_hidden_layers: 2, hidden_size: 32, head_dim: 8, intermediate_size: 64 };
  const mamba = p.mambaConfig ? { ...p.mambaConfig, n_layer: 2, d_model: 32, d_inner: 32, d_xb: 16, intermediate_size: 64, attn_layers: [1] } : null;
  return initModel(be, validateConfigs(config, mamba), seed);
}

function data(): PackedDataset {
  const st = new SampleTokenizer(tok, 'all');
  const samples = syntheticProblems({ split: 'train', difficulty: 1, count: 20, seed: 0 }).map((p) => st.encode(problemToRecord(p.problem, p.solution, { suffix: false })));
  return new PackedDataset(samples, { seqLen: 48, boundaries: true, padId: st.padId, seed: 0 });
}

const CONFIG: TrainConfig = {
  schedule: 'constant', lr: 1e-3, minLr: 1e-3, warmup: 0, gradClip: 1, batch: 2, gradAccum: 2, totalSteps: 2, seed: 0,
  saveEvery: 0, saveTotalLimit: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1,
};

/** no parameter value or gradient of `model` is among the tensors a tidy scope disposed */
function expectParamsAlive(be: TidyCheckBackend, model: CausalLM): void {
  for (const [key, p] of model.params()) {
    expect(be.disposed.has(p.value), `${key}: value disposed by tidy`).toBe(false);
    expect(p.grad !== null && be.disposed.has(p.grad), `${key}: grad disposed by tidy`).toBe(false);
  }
}

async function runTrainer(be: CpuBackend, stage: (m: CausalLM) => Stage, arch: 'llama' | 'm1'): Promise<{ model: CausalLM; weights: Float32Array[] }> {
  const model = tinyModel(be, arch, 3);
  const runDir = mkdtempSync(join(tmpdir(), 'm1-tidy-'));
  await new Trainer({ be, stage: stage(model), data: data(), config: CONFIG, runDir, progress: false, log: () => {}, handleSigint: false }).run();
  return { model, weights: model.params().map(([, p]) => be.read(p.value)) };
}

describe('training steps under tidy', () => {
  for (const arch of ['llama', 'm1'] as const) {
    it(`${arch}: SFT steps free their activations, keep params and grads, and equal the untidied run`, async () => {
      const be = new TidyCheckBackend();
      const sft = (m: CausalLM): Stage => crossEntropyStage('sft', m, modelFilesWriter(m, { files }));
      const a = await runTrainer(be, sft, arch);
      expect(be.tidyCalls).toBe(CONFIG.totalSteps * CONFIG.gradAccum);
      expect(be.disposed.size).toBeGreaterThan(100); // the activations really were dropped
      expectParamsAlive(be, a.model);
      const b = await runTrainer(new CpuBackend(), sft, arch);
      a.weights.forEach((w, i) => expect(Array.from(w)).toEqual(Array.from(b.weights[i]!)));
    });
  }

  it('distill: the teacher forward and the student step run inside one scope; params survive', async () => {
    const be = new TidyCheckBackend();
    const teacher = tinyModel(be, 'llama', 9);
    const r = await runTrainer(be, (m) => distillStage(m, teacher, 0.7, modelFilesWriter(m, { files })), 'm1');
    expectParamsAlive(be, r.model);
    expectParamsAlive(be, teacher);
    for (const w of r.weights) expect(w.every(Number.isFinite)).toBe(true);
  });

  it('GRPO micro-batches: grads allocated before the loop survive; lazily allocated ones would not', () => {
    const be = new TidyCheckBackend();
    const B = 3, T = 10;
    const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % 50 + 3);
    const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 11) % 50 + 3);
    const mask = Uint8Array.from({ length: B * T }, (_, i) => (i % T >= 4 ? 1 : 0));
    const advantages = Float32Array.from({ length: B * T }, (_, i) => [0.5, -1, 0.5][Math.floor(i / T)]!);
    const x: RolloutBatch = { B, T, ids, targets, mask, advantages, tokens: 18 };
    const old = new Float32Array(B * T).fill(-4);
    const o = { clip: 0.2, entropyCoef: 0.01, temperature: 1, microRows: 2 };

    // what the regression looks like: without allocateGrads the first micro-batch allocates the grads
    // inside its scope, they are disposed with it, and the second micro-batch's accumulation throws
    const lazy = tinyModel(be, 'm1', 4);
    expect(() => grpoGradients(lazy, x, old, o)).toThrow(/used after dispose/);
    expect(lazy.params().some(([, p]) => p.grad !== null && be.disposed.has(p.grad))).toBe(true);

    const model = tinyModel(be, 'm1', 4);
    allocateGrads(be, model);
    const r = grpoGradients(model, x, old, o);
    expect(Number.isFinite(r.loss)).toBe(true);
    expectParamsAlive(be, model);
    let sq = 0;
    for (const [, p] of model.params()) sq += be.sumSquares(p.grad!);
    expect(sq).toBeGreaterThan(0);
  });
});
