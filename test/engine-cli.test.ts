import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { registerGenerate } from '../src/cli/commands/generate.js';
import { Engine } from '../src/infer/engine.js';
import { initWeights, loadModel, validateConfigs, writeConfigs } from '../src/model/checkpoint.js';
import { findPreset } from '../src/model/presets.js';
import { writeTokenizerFor } from '../src/model/tokenizer-files.js';
import { UserError } from '../src/util/errors.js';

/** a tiny m1 model folder with the byte-level tokenizer and a 32-token context */
let dir = '';
beforeAll(() => {
  const preset = findPreset('m1', 'tiny');
  const config = { ...preset.config, num_hidden_layers: 2, max_position_embeddings: 32 };
  const mambaConfig = { ...preset.mambaConfig!, n_layer: 2, attn_layers: [1] };
  dir = mkdtempSync(join(tmpdir(), 'm1ts-generate-'));
  writeConfigs(dir, { config, mambaConfig }, 'f32');
  writeTokenizerFor(dir, 'tiny');
  initWeights(dir, validateConfigs(config, mambaConfig), 3, 'f32');
});

afterEach(() => vi.restoreAllMocks());

/** run `m1 generate ...args`; returns the exit code main() would give, stdout and stderr */
async function generate(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
  const program = new Command().exitOverride().configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (err += s) });
  registerGenerate(program);
  try {
    await program.parseAsync(['generate', ...args], { from: 'user' });
    return { code: 0, out, err };
  } catch (e) {
    if (e instanceof CommanderError) return { code: e.exitCode, out, err };
    if (e instanceof UserError) return { code: 1, out, err: err + e.message };
    throw e;
  } finally {
    vi.restoreAllMocks();
  }
}

interface JsonOut {
  prompt_token_ids: number[];
  samples: { token_ids: number[]; text: string | null; logprobs: number[]; finish_reason: string }[];
  usage: { prompt_tokens: number; completion_tokens: number };
}

describe('m1 generate', () => {
  it('--json gives the engine\'s greedy tokens, text and logprobs; plain output streams the same text', async () => {
    const r = await generate(['--model', dir, '--prompt-ids', '256,72,105', '--temperature', '0', '--max-tokens', '6', '--ignore-eos', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as JsonOut;
    const be = new CpuBackend();
    const { model } = loadModel(dir, be);
    const ref = new Engine(model).generate([{ promptIds: [256, 72, 105], sampling: { temperature: 0 }, maxTokens: 6, ignoreEos: true }])[0]!.samples[0]!;
    expect(j.prompt_token_ids).toEqual([256, 72, 105]);
    expect(j.samples).toHaveLength(1);
    expect(j.samples[0]!.token_ids).toEqual(ref.tokenIds);
    expect(j.samples[0]!.logprobs.map((x) => x.toFixed(5))).toEqual(ref.logprobs.map((x) => x.toFixed(5)));
    expect(j.samples[0]!.finish_reason).toBe('length');
    expect(typeof j.samples[0]!.text).toBe('string');
    expect(j.usage).toEqual({ prompt_tokens: 3, completion_tokens: 6 });
    const plain = await generate(['--model', dir, '--prompt-ids', '256,72,105', '--temperature', '0', '--max-tokens', '6', '--ignore-eos']);
    expect(plain.code).toBe(0);
    expect(plain.out).toBe(`${j.samples[0]!.text}\n`);
    expect(plain.err).toMatch(/6 tokens in .* s/);
  });

  it('-n samples with a seed are reproducible; --chat applies the template', async () => {
    const args = ['--model', dir, '--prompt', 'Hi', '--chat', '-n', '3', '--temperature', '1', '--top-p', '0.9', '--seed', '7', '--max-tokens', '5', '--json'];
    const a = JSON.parse((await generate(args)).out) as JsonOut;
    const b = JSON.parse((await generate(args)).out) as JsonOut;
    expect(a.samples).toHaveLength(3);
    expect(a.samples.map((s) => s.token_ids)).toEqual(b.samples.map((s) => s.token_ids));
    // <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant…
    expect(a.prompt_token_ids.slice(0, 2)).toEqual([256, 258]);
    expect(a.prompt_token_ids.slice(-3)).toEqual([259, 10, 10]);
  });

  it('--cuda-graphs is accepted and the cpu backend ignores it: the same samples', async () => {
    const args = ['--model', dir, '--prompt-ids', '256,72,105', '-n', '2', '--temperature', '1', '--seed', '3', '--max-tokens', '5', '--json'];
    const plain = JSON.parse((await generate(args)).out) as JsonOut;
    const r = await generate([...args, '--cuda-graphs']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as JsonOut).samples.map((x) => x.token_ids)).toEqual(plain.samples.map((x) => x.token_ids));
  });

  it('bad input: clear error and a non-zero exit', async () => {
    const cases: [string[], RegExp][] = [
      [['--model', join(dir, 'nope'), '--prompt-ids', '1'], /model folder .*nope does not exist/],
      [['--model', dir, '--prompt-ids', Array(32).fill('1').join(',')], /prompt has 32 tokens but the context is 32 tokens/],
      [['--model', dir, '--prompt-ids', '1', '--top-p', '1.5'], /--top-p must be ≤ 1, got 1.5/],
      [['--model', dir, '--prompt-ids', '1', '--top-p', '0'], /--top-p must be > 0/],
      [['--model', dir, '--prompt-ids', '1', '--temperature', '-1'], /--temperature must be ≥ 0/],
      [['--model', dir, '--prompt-ids', '1', '--min-p', '2'], /--min-p must be ≤ 1/],
      [['--model', dir, '--prompt-ids', '1', '--top-k', '-2'], /--top-k must be ≥ -1/],
      [['--model', dir, '--prompt-ids', '1', '-n', '0'], /-n must be ≥ 1/],
      [['--model', dir, '--prompt-ids', '1', '--bogus'], /unknown option '--bogus'/],
      [['--model', dir, '--prompt-ids', '1', '--prompt', 'x'], /exactly one of --prompt or --prompt-ids/],
      [['--model', dir, '--prompt-ids', '1', '--chat'], /--chat needs --prompt/],
      [['--model', dir, '--prompt-ids', '1,999'], /promptIds\[1\]: 999 is not a token id/],
    ];
    for (const [args, re] of cases) {
      const r = await generate(args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.err, args.join(' ')).toMatch(re);
    }
  });
});
