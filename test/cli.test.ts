// The m1 executable end to end: spawns bin/m1 (built into dist/ by `npm test` / `npm ci`).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { choiceFlag, intFlag } from '../src/cli/options.js';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'm1');

function m1(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const work = mkdtempSync(join(tmpdir(), 'm1ts-cli-'));
const teacher = join(work, 'teacher');
const hybrid = join(work, 'hybrid');

beforeAll(() => {
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it)');
  const r = m1('init', '--arch', 'llama', '--preset', 'tiny', '--seed', '1', '--out', teacher);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
});

describe('m1 CLI', () => {
  it('init writes the Hugging Face layout', () => {
    for (const f of ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
      expect(existsSync(join(teacher, f)), f).toBe(true);
    }
    const cfg = JSON.parse(readFileSync(join(teacher, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ hidden_size: 64, num_hidden_layers: 4, tie_word_embeddings: true, torch_dtype: 'float32' });
  });

  it('convert prints a summary and the result inspects as a hybrid', () => {
    const r = m1('convert', '--teacher', teacher, '--attn-layers', '1,3', '--out', hybrid);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/layout MAMA/);
    expect(r.stdout).toMatch(/attention\s+1,3/);
    const i = m1('inspect', hybrid, '--json');
    expect(i.code).toBe(0);
    const info = JSON.parse(i.stdout);
    expect(info.layout).toBe('MAMA');
    expect(info.arch).toMatch(/m1 hybrid \(Mamba-1\)/);
    expect(info.mamba).toMatchObject({ d_inner: 64, d_xb: 32, d_state: 16, dt_rank: 4 });
    const text = m1('inspect', teacher);
    expect(text.stdout).toMatch(/architecture llama/);
    expect(text.stdout).toMatch(/llama3 scaling ×8/);
  });

  it('logprobs --ids and --text agree and follow the documented format', () => {
    const a = m1('logprobs', '--model', teacher, '--ids', '72,105,33', '--json');
    expect(a.code).toBe(0);
    const ja = JSON.parse(a.stdout);
    expect(ja.tokens).toEqual([72, 105, 33]);
    expect(ja.logprobs[0]).toBeNull();
    expect(ja.logprobs).toHaveLength(3);
    for (const lp of ja.logprobs.slice(1)) expect(lp).toBeLessThan(0);
    // the tiny tokenizer is byte-level: "Hi!" is 72,105,33
    const b = m1('logprobs', '--model', teacher, '--text', 'Hi!');
    expect(JSON.parse(b.stdout)).toEqual(ja);
  });

  it('every command has --help', () => {
    for (const c of ['init', 'convert', 'logprobs', 'inspect', 'grade']) {
      const r = m1(c, '--help');
      expect(r.code, c).toBe(0);
      expect(r.stdout, c).toMatch(/Usage: m1/);
    }
  });

  it('bad input: one clear message naming the flag / file / tensor, non-zero exit, no stack trace', () => {
    const cases: [string[], RegExp][] = [
      [['init', '--arch', 'llama', '--preset', 'tiny', '--out', join(work, 'x'), '--bogus'], /unknown option '--bogus'/],
      [['init', '--arch', 'gpt', '--preset', 'tiny', '--out', join(work, 'x')], /--arch must be "llama" or "m1", got "gpt"/],
      [['init', '--arch', 'm1', '--preset', 'huge', '--out', join(work, 'x')], /--preset "huge" is not a preset of --arch m1/],
      [['init', '--arch', 'm1', '--preset', 'tiny', '--seed', 'abc', '--out', join(work, 'x')], /--seed must be an integer/],
      [['logprobs', '--model', join(work, 'nope'), '--ids', '1,2'], /model folder .*nope does not exist/],
      [['logprobs', '--model', teacher, '--ids', '1,x'], /--ids: "x" is not a token id/],
      [['logprobs', '--model', teacher, '--ids', '1,99999'], /token id 99999 is outside the vocabulary/],
      [['convert', '--teacher', teacher, '--attn-layers', '1,9', '--out', join(work, 'y')], /--attn-layers: layer 9 is outside \[0, 4\)/],
      [['convert', '--teacher', hybrid, '--attn-layers', '1', '--out', join(work, 'y')], /already a hybrid/],
      [['demo', '--out', join(work, 'd'), '--set', 'grpo.lrr=1'], /--set "grpo.lrr=1": no field "lrr"/],
      [['demo', '--out', join(work, 'd'), '--set', 'grpo.batch=30'], /grpo.batch 30 is not a multiple of grpo.miniBatch 32/],
      [['sft', '--model', hybrid, '--synthetic', '1', '--out', join(work, 't'), '--recompute', 'some'], /--recompute must be off, on or a layer count, got "some"/],
      [['sft', '--model', hybrid, '--synthetic', '1', '--out', join(work, 't'), '--recompute', '9'], /--recompute 9: the model has 4 layers/],
    ];
    for (const [args, re] of cases) {
      const r = m1(...args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr, args.join(' ')).toMatch(re);
      expect(r.stderr, args.join(' ')).not.toMatch(/\n\s+at /);
    }
  });

  it('a truncated checkpoint is reported with the file name', () => {
    const broken = join(work, 'broken');
    expect(m1('init', '--arch', 'm1', '--preset', 'tiny', '--out', broken).code).toBe(0);
    const f = join(broken, 'model.safetensors');
    truncateSync(f, Math.floor(statSync(f).size / 2));
    const r = m1('logprobs', '--model', broken, '--ids', '1,2');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/model\.safetensors/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    writeFileSync(f, Buffer.alloc(4));
    expect(m1('inspect', broken).stderr).toMatch(/model\.safetensors/);
  });
});

describe('flag parsers', () => {
  it('choiceFlag takes one of its values and names the flag otherwise; intFlag checks its bounds', () => {
    const p = choiceFlag('--ssm-dtype', ['bf16', 'f32'] as const);
    expect(p('bf16')).toBe('bf16');
    expect(() => p('f16')).toThrow(/--ssm-dtype must be one of bf16 \| f32, got "f16"/);
    expect(intFlag('--warmup', { min: 0 })('4')).toBe(4);
    expect(() => intFlag('--warmup', { min: 0 })('-1')).toThrow(/--warmup must be ≥ 0, got -1/);
  });
});
