// End to end: scoreLogprobs of the `m1 init` tiny models through the CUDA backend equals the CPU's.
// f32 weights: ≤ 2e-4 absolute on logprobs (f32 rounding through a few layers); bf16 weights: the GPU
// rounds activations to bf16 before each matmul, the CPU does not, so ≤ 5e-2.
import { describe, expect, it } from 'vitest';
import type { Backend } from '../../src/backend/backend.js';
import { initModel, validateConfigs } from '../../src/model/checkpoint.js';
import { scoreLogprobs } from '../../src/model/logprobs.js';
import { findPreset } from '../../src/model/presets.js';
import type { DType } from '../../src/backend/tensor.js';
import { available, cpu, gpu, ints, skipReason } from './helpers.js';

function logprobs(be: Backend, arch: string, preset: string, dtype: DType, ids: number[]): Float32Array {
  const p = findPreset(arch, preset);
  const cfg = validateConfigs(p.config, p.mambaConfig);
  return scoreLogprobs(initModel(be, cfg, 7, dtype), ids);
}

describe.skipIf(!available)(`cuda end to end${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const cases: [string, string, DType, number][] = [
    ['llama', 'tiny', 'f32', 2e-4], ['m1', 'tiny', 'f32', 2e-4], ['m1', 'mamba2-tiny', 'f32', 2e-4],
    ['llama', 'tiny', 'bf16', 5e-2], ['m1', 'tiny', 'bf16', 5e-2],
  ];
  for (const [arch, preset, dtype, tol] of cases) {
    it(`scoreLogprobs ${arch}/${preset} ${dtype}: cuda == cpu`, () => {
      const ids = Array.from(ints(48, 5, 300));
      const c = logprobs(cpu, arch, preset, dtype, ids);
      const g = logprobs(gpu!, arch, preset, dtype, ids);
      let err = 0;
      for (let i = 0; i < c.length; i++) err = Math.max(err, Math.abs(c[i]! - g[i]!));
      console.log(`${arch}/${preset} ${dtype}: max |Δ logprob| = ${err.toExponential(2)} over ${c.length} tokens`);
      expect(c.every(Number.isFinite)).toBe(true);
      expect(err).toBeLessThanOrEqual(tol);
    });
  }
});
