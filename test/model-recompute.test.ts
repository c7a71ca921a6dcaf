// Activation recomputation (CausalLM forward `recompute`): the checkpointed backward must give the
// same gradients as the saving one, for every layer kind and for packed rows.
import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { initModel, validateConfigs } from '../src/model/checkpoint.js';
import type { CausalLM, ModelConfig } from '../src/model/model.js';
import { plainSeqInfo, type SeqInfo } from '../src/model/module.js';
import { findPreset } from '../src/model/presets.js';
import { maxAbsDiff, randomArray } from './util/gradcheck.js';

const be = new CpuBackend();

/** the tiny presets with 3 layers, attention in the middle for the hybrids */
function tinyConfig(kind: 'llama' | 'm1' | 'mamba2'): ModelConfig {
  const preset = findPreset(kind === 'llama' ? 'llama' : 'm1', kind === 'mamba2' ? 'mamba2-tiny' : 'tiny');
  const config = { ...preset.config, num_hidden_layers: 3, vocab_size: 40 };
  const mamba = preset.mambaConfig ? { ...preset.mambaConfig, n_layer: 3, attn_layers: [1] } : null;
  return validateConfigs(config, mamba);
}

function tokenIds(n: number, V: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => (i * 7 + 3) % V);
}

/** hidden and every parameter gradient after forward + backward from a fixed dHidden */
function gradients(model: CausalLM, ids: Int32Array, seq: SeqInfo, recompute: boolean | number): { hidden: Float32Array; grads: Map<string, Float32Array>; savedLayers: number; inputs: number } {
  model.zeroGrads();
  const { hidden, saved } = model.forward(ids, seq, { needBackward: true, recompute });
  const dHidden = be.fromArray(randomArray(hidden.size, 17), hidden.shape);
  model.backwardFromHidden(dHidden, saved!);
  const grads = new Map<string, Float32Array>();
  for (const [k, p] of model.params()) grads.set(k, be.read(p.grad!));
  return { hidden: be.read(hidden), grads, savedLayers: saved!.layers.filter((l) => l).length, inputs: saved!.inputs.filter((t) => t).length };
}

describe('CausalLM recompute (activation checkpointing)', () => {
  const cases: { kind: 'llama' | 'm1' | 'mamba2'; packed: boolean }[] = [
    { kind: 'llama', packed: false },
    { kind: 'm1', packed: false },
    { kind: 'm1', packed: true },
    { kind: 'mamba2', packed: true },
  ];
  for (const { kind, packed } of cases) {
    it(`${kind}${packed ? ', packed rows' : ''}: gradients equal the saving backward`, () => {
      const model = initModel(be, tinyConfig(kind), 5);
      const B = 2, T = 9;
      const seq = plainSeqInfo(B, T);
      if (packed) {
        // row 0 holds two documents (4 + 5 tokens), row 1 one; positions restart per document
        seq.segments = Int32Array.from([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
        seq.positions = Int32Array.from([0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
      }
      const ids = tokenIds(B * T, model.vocabSize);
      const plain = gradients(model, ids, seq, false);
      expect(plain.savedLayers).toBe(3);
      expect(plain.inputs).toBe(0);
      // every layer recomputed (the forward keeps only the layer inputs), or the first k (selective)
      for (const [recompute, kept] of [[true, 0], [3, 0], [1, 2], [2, 1], [0, 3]] as const) {
        const ckpt = gradients(model, ids, seq, recompute);
        expect(ckpt.savedLayers, `recompute ${recompute}`).toBe(kept);
        expect(ckpt.inputs, `recompute ${recompute}`).toBe(3 - kept);
        expect(maxAbsDiff(ckpt.hidden, plain.hidden)).toBe(0);
        expect([...ckpt.grads.keys()]).toEqual([...plain.grads.keys()]);
        for (const [key, g] of plain.grads) {
          const scale = Math.max(...Array.from(g, Math.abs));
          // every parameter takes part (a zero gradient would make the comparison vacuous), except
          // embedding rows of tokens that never occur, which the max over the tensor ignores
          expect(scale, `${key} has a zero gradient`).toBeGreaterThan(0);
          expect(maxAbsDiff(ckpt.grads.get(key)!, g), `${key}, recompute ${recompute}`).toBeLessThanOrEqual(1e-6 * Math.max(1, scale));
        }
      }
    });
  }

  it('a second recompute step accumulates like the saving one (grads are not reset by the rerun forward)', () => {
    const model = initModel(be, tinyConfig('m1'), 9);
    const seq = plainSeqInfo(1, 8);
    const ids = tokenIds(8, model.vocabSize);
    const run = (recompute: boolean): Float32Array => {
      model.zeroGrads();
      for (let k = 0; k < 2; k++) {
        const { hidden, saved } = model.forward(ids, seq, { needBackward: true, recompute });
        model.backwardFromHidden(be.fromArray(randomArray(hidden.size, 30 + k), hidden.shape), saved!);
      }
      return be.read(model.layers[0]!.mlp.down.grad!);
    };
    const a = run(false), b = run(true);
    expect(Math.max(...Array.from(a, Math.abs))).toBeGreaterThan(0);
    expect(maxAbsDiff(b, a)).toBeLessThanOrEqual(1e-6);
  });

  it('zeroGrads clears lazily: a step after a step gives the first step\'s gradients; an untouched gradient reads zero', () => {
    const model = initModel(be, tinyConfig('m1'), 9);
    const seq = plainSeqInfo(1, 8);
    const ids = tokenIds(8, model.vocabSize);
    const step = (seed: number): Map<string, Float32Array> => {
      model.zeroGrads();
      const { hidden, saved } = model.forward(ids, seq, { needBackward: true });
      model.backwardFromHidden(be.fromArray(randomArray(hidden.size, seed), hidden.shape), saved!);
      return new Map(model.params().map(([k, p]) => [k, be.read(p.grad!)]));
    };
    const first = step(41);
    step(42);  // other gradients in the buffers, then cleared again
    const again = step(41);
    for (const [k, g] of first) expect(maxAbsDiff(again.get(k)!, g), k).toBe(0);
    // the weight gradients were written over their buffers (gradProduct), the rest added to zeros: both nonzero
    const down = model.layers[0]!.mlp.down;
    expect(Math.max(...Array.from(first.get(model.params().find(([, p]) => p === down)![0])!, Math.abs))).toBeGreaterThan(0);
    // cleared and not written since: reads (and stays) zero; the next product is written over it, then added to
    model.zeroGrads();
    expect(Math.max(...Array.from(be.read(down.grad!), Math.abs))).toBe(0);
    model.zeroGrads();
    const opts = down.gradProduct(be);
    expect('writeInto' in opts).toBe(true);
    expect('accumulateInto' in down.gradProduct(be)).toBe(true);
  });

  it('recompute without needBackward is a plain forward (nothing saved)', () => {
    const model = initModel(be, tinyConfig('llama'), 2);
    const seq = plainSeqInfo(1, 6);
    const ids = tokenIds(6, model.vocabSize);
    const r = model.forward(ids, seq, { recompute: true });
    expect(r.saved).toBeNull();
    expect(() => model.forward(ids, seq, { needBackward: true, recompute: 4 })).toThrow(/recompute must be a boolean or a layer count in \[0, 3\], got 4/);
    expect(maxAbsDiff(be.read(r.hidden), be.read(model.forward(ids, seq, { needBackward: true }).hidden))).toBe(0);
  });
});
