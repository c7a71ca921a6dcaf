// Recorded decode steps (CudaBackend.captureStepGraph, Engine `graphs`): a graph recorded at one step
// and replayed at later steps — new positions, slots, block tables, KV writes, Mamba state — gives the
// logits and state of eager steps, and the engine's tokens do not change when it replays graphs.
// Tolerance 1e-5 absolute on logits: a recorded paged attention plans its split-K grid for the full
// table width instead of the longest sequence, which only regroups f32 sums.
import { describe, expect, it } from 'vitest';
import type { Backend, StepGraph } from '../../src/backend/backend.js';
import type { Tensor } from '../../src/backend/tensor.js';
import { Engine } from '../../src/infer/engine.js';
import { initModel, validateConfigs } from '../../src/model/checkpoint.js';
import type { CausalLM } from '../../src/model/model.js';
import type { DecodeInfo, LayerState } from '../../src/model/module.js';
import { findPreset } from '../../src/model/presets.js';
import { available, closeArrays, gpu, ints, skipReason } from './helpers.js';

function tinyModel(be: Backend, arch: string, preset: string): CausalLM {
  const p = findPreset(arch, preset);
  return initModel(be, validateConfigs(p.config, p.mambaConfig), 11, 'f32');
}

function stateTensors(states: LayerState[]): Tensor[] {
  return states.flatMap((s) => Object.values(s).filter((v): v is Tensor => typeof v === 'object'));
}

describe.skipIf(!available)(`cuda graphs${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const g = gpu!;

  for (const [arch, preset] of [['llama', 'tiny'], ['m1', 'tiny'], ['m1', 'mamba2-tiny']] as const) {
    it(`${arch}/${preset}: a step recorded once and replayed at 6 later steps equals eager steps (logits and state)`, () => {
      const model = tinyModel(g, arch, preset);
      const n = 3, bs = 4, maxBlocks = 8;
      const sizes = { slots: 4, kvBlocks: n * maxBlocks + 2, blockSize: bs, kvDType: 'f32' as const };
      const eager = model.allocateState(sizes), replayed = model.allocateState(sizes);
      // scattered blocks and slots; sequences start at different positions (earlier cache rows are zeros)
      const blockTables = new Int32Array(n * maxBlocks);
      for (let i = 0; i < n * maxBlocks; i++) blockTables[i] = (i * 7 + 3) % (n * maxBlocks + 2);
      const start = [0, 5, 11];
      const info: DecodeInfo = {
        n, slots: Int32Array.from([2, 0, 3]), positions: new Int32Array(n), slotMapping: new Int32Array(n),
        blockTables, maxBlocks, seqLens: new Int32Array(n),
      };
      const ids = new Int32Array(n);
      const inputs = [ids, info.slots, info.positions, info.slotMapping, info.blockTables, info.seqLens];
      let graph: StepGraph | null = null;
      try {
        for (let step = 0; step < 7; step++) {
          const stepIds = ints(n, 100 + step, model.vocabSize);
          for (let i = 0; i < n; i++) {
            const pos = start[i]! + step;
            ids[i] = stepIds[i]!;
            info.positions[i] = pos;
            info.seqLens[i] = pos + 1;
            info.slotMapping[i] = blockTables[i * maxBlocks + Math.floor(pos / bs)]! * bs + (pos % bs);
          }
          const want = g.tidy(() => model.step(ids, eager, info));
          const got = graph ? graph.replay(inputs) : (graph = g.captureStepGraph(inputs, () => g.tidy(() => model.step(ids, replayed, info)))).output;
          closeArrays(g.read(got), g.read(want), 1e-5, `${arch}/${preset} logits at step ${step}`);
          want.dispose();
        }
        const a = stateTensors(eager), b = stateTensors(replayed);
        a.forEach((t, i) => closeArrays(g.read(b[i]!), g.read(t), 1e-5, `${arch}/${preset} state tensor ${i} after 7 steps`));
      } finally {
        (graph as StepGraph | null)?.dispose();
        for (const t of [...stateTensors(eager), ...stateTensors(replayed)]) t.dispose();
        model.params().forEach(([, p]) => p.value.dispose());
      }
    });
  }

  it('engine: greedy and seeded sampling give the same tokens with graphs as without (batch 5, then 3)', () => {
    for (const [arch, preset] of [['llama', 'tiny'], ['m1', 'tiny']] as const) {
      const model = tinyModel(g, arch, preset);
      const reqs = [
        { promptIds: Array.from(ints(7, 1, model.vocabSize)), n: 3, maxTokens: 20, ignoreEos: true, sampling: { temperature: 0 } },
        { promptIds: Array.from(ints(12, 2, model.vocabSize)), n: 2, maxTokens: 9, ignoreEos: true, sampling: { temperature: 1 }, seed: 5 },
      ];
      const plain = new Engine(model, { blockSize: 4, maxBatch: 8, maxContext: 64 }).generate(reqs);
      const engine = new Engine(model, { blockSize: 4, maxBatch: 8, maxContext: 64, graphs: true });
      const graphed = engine.generate(reqs);
      expect(engine.numGraphs).toBeGreaterThan(0);
      expect(graphed.map((r) => r.samples.map((s) => s.tokenIds))).toEqual(plain.map((r) => r.samples.map((s) => s.tokenIds)));
      for (let r = 0; r < reqs.length; r++) {
        for (let k = 0; k < plain[r]!.samples.length; k++) {
          closeArrays(Float32Array.from(graphed[r]!.samples[k]!.logprobs), Float32Array.from(plain[r]!.samples[k]!.logprobs), 1e-4, `${arch} request ${r} sample ${k} logprobs`);
        }
      }
      engine.dropGraphs();
      expect(engine.numGraphs).toBe(0);
      model.params().forEach(([, p]) => p.value.dispose());
    }
  });

  it('an upload inside the recorded function is refused (not baked in); the backend and allocator are unharmed', () => {
    const before = g.memoryStats().liveBytes;
    const ids = Int32Array.from([1, 2, 3]);
    expect(() => g.tidy(() => g.captureStepGraph([ids], () => g.fromArray([1, 2, 3], [3])))).toThrow(/upload during a CUDA graph capture/);
    expect(g.memoryStats().liveBytes).toBe(before);
    // an index array that is not one of the inputs is an upload too
    const x = g.fromArray(new Float32Array(12).fill(1), [4, 3]);
    expect(() => g.captureStepGraph([ids], () => g.embedding(x, Int32Array.from([0, 1])))).toThrow(/during a CUDA graph capture/);
    // while a subarray of an input reads the input's device copy
    const graph = g.captureStepGraph([ids], () => g.embedding(x, ids.subarray(1)));
    expect(Array.from(g.read(graph.output))).toEqual(new Array(6).fill(1));
    expect(() => graph.replay([Int32Array.from([0, 1])])).toThrow(/input 0 has 2 entries, the graph was recorded with 3/);
    graph.dispose();
    expect(() => graph.replay([ids])).toThrow(/disposed/);
    x.dispose();
    expect(g.memoryStats().liveBytes).toBe(before);
    const y = g.fromArray([1, 2], [2]);
    expect(Array.from(g.read(g.add(y, y)))).toEqual([2, 4]);
  });
});
