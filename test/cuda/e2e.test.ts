// End to end on the GPU against the CPU: generation through the Engine, and `m1 logprobs` through the
// built CLI (bin/m1 → dist/, so `npm run build` must have run).
//
// Generation: the host sampler reads the logits (greedy: the device argmax), so equal tokens need the
// two backends' logits to order the candidates the same way. They agree to ~5e-7 (model.test.ts), far
// below the gaps of these random tiny models, but a near-tie could still flip a token: the prompts and
// seeds are fixed, and equality is asserted on them; a failure message shows where and by how much the
// chosen tokens' logprobs differ, so a genuine near-tie (|Δ| < 1e-4) is told apart from a bug.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../../src/backend/backend.js';
import { Engine, type GenerationRequest, type SampleOutput } from '../../src/infer/engine.js';
import { initModel, initWeights, validateConfigs, writeConfigs } from '../../src/model/checkpoint.js';
import { findPreset } from '../../src/model/presets.js';
import { writeTokenizerFor } from '../../src/model/tokenizer-files.js';
import { available, cpu, gpu, ints, skipReason } from './helpers.js';

const cases = [['llama', 'tiny'], ['m1', 'tiny'], ['m1', 'mamba2-tiny']] as const;

function generate(be: Backend, arch: string, preset: string, reqs: GenerationRequest[]): SampleOutput[] {
  const p = findPreset(arch, preset);
  const model = initModel(be, validateConfigs(p.config, p.mambaConfig), 21, 'f32');
  return new Engine(model, { blockSize: 4 }).generate(reqs).flatMap((o) => o.samples);
}

/** same tokens, logprobs within 2e-4; on a mismatch, the first differing step and its logprobs */
function expectSameSamples(name: string, c: SampleOutput[], g: SampleOutput[]): void {
  expect(g.length).toBe(c.length);
  let worst = 0;
  c.forEach((sc, i) => {
    const sg = g[i]!;
    const k = sc.tokenIds.findIndex((t, j) => t !== sg.tokenIds[j]);
    const where = k < 0 ? '' : `: first difference at step ${k}: cpu ${sc.tokenIds[k]} (logprob ${sc.logprobs[k]}) vs cuda ${sg.tokenIds[k]} (logprob ${sg.logprobs[k]})`;
    expect(sg.tokenIds, `${name} sample ${i}${where}`).toEqual(sc.tokenIds);
    expect(sg.finishReason).toBe(sc.finishReason);
    sc.logprobs.forEach((lp, j) => (worst = Math.max(worst, Math.abs(lp - sg.logprobs[j]!))));
  });
  console.log(`${name}: ${c.reduce((a, s) => a + s.tokenIds.length, 0)} tokens equal, max |Δ logprob| ${worst.toExponential(2)}`);
  expect(worst).toBeLessThanOrEqual(2e-4);
}

describe.skipIf(!available)(`cuda generation vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const prompts = [Array.from(ints(7, 31, 300)), Array.from(ints(1, 32, 300)), Array.from(ints(12, 33, 300))];
  for (const [arch, preset] of cases) {
    it(`greedy: same tokens on both backends, ${arch}/${preset}`, () => {
      const reqs = prompts.map((p): GenerationRequest => ({ promptIds: p, sampling: { temperature: 0 }, maxTokens: 16, ignoreEos: true }));
      expectSameSamples(`greedy ${arch}/${preset}`, generate(cpu, arch, preset, reqs), generate(gpu!, arch, preset, reqs));
    });
    it(`sampled (temperature 0.9, top-p 0.95, top-k 50, seed 1234, n = 2): same tokens, ${arch}/${preset}`, () => {
      const reqs = prompts.map((p, i): GenerationRequest => ({
        promptIds: p, n: 2, sampling: { temperature: 0.9, topP: 0.95, topK: 50 }, maxTokens: 16, ignoreEos: true, seed: 1234 + i,
      }));
      expectSameSamples(`sampled ${arch}/${preset}`, generate(cpu, arch, preset, reqs), generate(gpu!, arch, preset, reqs));
    });
  }
});

describe.skipIf(!available)(`cuda engine pools${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  it('a bf16 KV cache grown block by block stays bf16: the same tokens and logprobs, bit for bit, as a pool that never grows', () => {
    const p = findPreset('m1', 'tiny');
    const model = initModel(gpu!, validateConfigs(p.config, p.mambaConfig), 21, 'bf16');
    const reqs = Array.from({ length: 20 }, (_, i): GenerationRequest => ({ promptIds: Array.from(ints(3 + (i % 5), 60 + i, 300)), sampling: { temperature: 0 }, maxTokens: 12, ignoreEos: true }));
    const run = (initialKvBlocks: number) => new Engine(model, { blockSize: 4, maxBatch: 20, initialKvBlocks }).generate(reqs).flatMap((o) => o.samples);
    const grown = run(1), fixed = run(512);
    grown.forEach((sg, i) => {
      expect(sg.tokenIds, `request ${i}`).toEqual(fixed[i]!.tokenIds);
      expect(sg.logprobs, `request ${i}`).toEqual(fixed[i]!.logprobs);
    });
  });
});

const root = resolve(import.meta.dirname, '../..');
const cli = join(root, 'bin/m1');

/** a model folder (f32 weights from `seed`, the tiny tokenizer) for the built CLI to load */
function cliModelFolder(arch: string, preset: string, seed: number): string {
  if (!existsSync(join(root, 'dist/src/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build` first (bin/m1 runs the built CLI)');
  const p = findPreset(arch, preset);
  const dir = mkdtempSync(join(tmpdir(), `m1-cli-${arch}-`));
  writeConfigs(dir, { config: p.config, mambaConfig: p.mambaConfig }, 'f32');
  writeTokenizerFor(dir, 'tiny');
  initWeights(dir, validateConfigs(p.config, p.mambaConfig), seed, 'f32');
  return dir;
}

describe.skipIf(!available)(`m1 logprobs --backend cuda vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  for (const [arch, preset] of cases) {
    it(`${arch}/${preset} model folder: same tokens, logprobs within 2e-4`, () => {
      const dir = cliModelFolder(arch, preset, 5);
      const ids = Array.from(ints(40, 41, 262)).join(',');
      const run = (backend: string): { tokens: number[]; logprobs: (number | null)[] } => {
        const r = spawnSync(process.execPath, [cli, 'logprobs', '--model', dir, '--ids', ids, '--backend', backend], { encoding: 'utf8', cwd: root });
        expect(r.status, `m1 logprobs --backend ${backend}: ${r.stderr}`).toBe(0);
        return JSON.parse(r.stdout) as { tokens: number[]; logprobs: (number | null)[] };
      };
      const c = run('cpu'), g = run('cuda');
      expect(g.tokens).toEqual(c.tokens);
      expect(c.logprobs[0]).toBeNull();
      expect(g.logprobs.length).toBe(c.logprobs.length);
      let worst = 0;
      for (let i = 1; i < c.logprobs.length; i++) worst = Math.max(worst, Math.abs(g.logprobs[i]! - c.logprobs[i]!));
      console.log(`m1 logprobs ${arch}/${preset}: max |Δ| ${worst.toExponential(2)} over ${c.logprobs.length - 1} tokens`);
      expect(worst).toBeLessThanOrEqual(2e-4);
    }, 60_000);
  }
});

describe.skipIf(!available)(`m1 generate --backend cuda --cuda-graphs vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  for (const [arch, preset] of cases) {
    it(`${arch}/${preset}: greedy tokens through recorded graphs equal the cpu's`, () => {
      const dir = cliModelFolder(arch, preset, 7);
      const run = (extra: string[]): number[][] => {
        const args = [cli, 'generate', '--model', dir, '--prompt-ids', '256,72,105,33', '-n', '3', '--temperature', '0', '--max-tokens', '24', '--ignore-eos', '--json', ...extra];
        const r = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: root });
        expect(r.status, `m1 generate ${extra.join(' ')}: ${r.stderr}`).toBe(0);
        return (JSON.parse(r.stdout) as { samples: { token_ids: number[] }[] }).samples.map((s) => s.token_ids);
      };
      expect(run(['--backend', 'cuda', '--cuda-graphs'])).toEqual(run(['--backend', 'cpu']));
    }, 60_000);
  }
});
