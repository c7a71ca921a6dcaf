import { appendFileSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { registerEval } from '../src/cli/commands/eval.js';
import { loadBenchmark } from '../src/eval/datasets.js';
import { gradeAnswer } from '../src/eval/grader/grade.js';
import { passAtK } from '../src/eval/metrics.js';
import { problemSeed, readSampleFile, resolveBenchmark, SampleWriter, type EvalSummary, type SampleRecord } from '../src/eval/run.js';
import { Engine, sampleSeed } from '../src/infer/engine.js';
import { loadGenerationDefaults } from '../src/infer/generation-config.js';
import { initWeights, loadModel, validateConfigs, writeConfigs } from '../src/model/checkpoint.js';
import { findPreset } from '../src/model/presets.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { writeTokenizerFor } from '../src/model/tokenizer-files.js';
import { M1_PROMPT_SUFFIX } from '../src/train/data.js';
import { UserError } from '../src/util/errors.js';

/** a tiny hybrid m1 model folder (2 layers: Mamba + attention) with the byte-level tokenizer */
let modelDir = '';
beforeAll(() => {
  const preset = findPreset('m1', 'tiny');
  const config = { ...preset.config, num_hidden_layers: 2, max_position_embeddings: 2048 };
  const mambaConfig = { ...preset.mambaConfig!, n_layer: 2, attn_layers: [1] };
  modelDir = mkdtempSync(join(tmpdir(), 'm1ts-eval-model-'));
  writeConfigs(modelDir, { config, mambaConfig }, 'f32');
  writeTokenizerFor(modelDir, 'tiny');
  initWeights(modelDir, validateConfigs(config, mambaConfig), 5, 'f32');
});

afterEach(() => vi.restoreAllMocks());

const tmp = (): string => mkdtempSync(join(tmpdir(), 'm1ts-eval-'));

/** run `m1 eval ...args` as main() would: exit code, stdout, stderr */
async function m1eval(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
  const program = new Command().exitOverride().configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (err += s) });
  registerEval(program);
  process.exitCode = undefined;
  try {
    await program.parseAsync(['eval', ...args], { from: 'user' });
    const code = typeof process.exitCode === 'number' ? process.exitCode : 0;
    return { code, out, err };
  } catch (e) {
    if (e instanceof CommanderError) return { code: e.exitCode, out, err };
    if (e instanceof UserError) return { code: 1, out, err: err + e.message };
    throw e;
  } finally {
    process.exitCode = undefined;
    vi.restoreAllMocks();
  }
}

function readLines(file: string): SampleRecord[] {
  return readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as SampleRecord);
}

const keyOf = (r: SampleRecord): string => `${r.problem_id}#${r.sample}`;
/** everything a sample line holds except its measured seconds */
const content = (r: SampleRecord): Omit<SampleRecord, 'seconds'> => {
  const { seconds: _s, ...rest } = r;
  return rest;
};

describe('m1 eval --model', () => {
  it('writes graded samples equal to the engine\'s own output for the M1 chat prompt, a summary and a report', async () => {
    const out = tmp();
    const r = await m1eval(['--model', modelDir, '--bench', 'aime25,synthetic-2', '--limit', '2', '-n', '2', '--max-tokens', '8',
      '--temperature', '1', '--seed', '3', '--out', out]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/aime25: 2 problems × 2 {2}pass@1 /);

    const tok = Tokenizer.fromDir(modelDir);
    const { model, cfg } = loadModel(modelDir, new CpuBackend());
    // generation_config.json's top_p = 0.9 applies; --temperature overrides its 0.6
    const defaults = loadGenerationDefaults(modelDir, cfg);
    expect(defaults.sampling.topP).toBe(0.9);
    const engine = new Engine(model, { tokenizer: tok, stopTokenIds: [...new Set([...defaults.eosTokenIds, tok.eosTokenId!])] });
    for (const bench of ['aime25', 'synthetic-2']) {
      const problems = resolveBenchmark(bench, { limit: 2 }).problems;
      const lines = readLines(join(out, `${bench}.samples.jsonl`));
      expect(lines.map(keyOf).sort()).toEqual(problems.flatMap((p) => [`${p.id}#0`, `${p.id}#1`]).sort());
      for (const p of problems) {
        // the reference: the same prompt and seed through the engine directly
        const promptIds = tok.encodeChat([{ role: 'user', content: `${p.problem.trim()} ${M1_PROMPT_SUFFIX}` }], { addGenerationPrompt: true });
        const ref = engine.generate([{ promptIds, n: 2, seed: problemSeed(3, p.id), sampling: { ...defaults.sampling, temperature: 1 }, maxTokens: 8 }])[0]!;
        for (const rec of lines.filter((l) => l.problem_id === p.id)) {
          const s = ref.samples[rec.sample]!;
          expect(rec.bench).toBe(bench);
          expect(rec.response).toBe(s.text);
          expect(rec.tokens).toBe(s.tokenIds.length);
          expect(rec.tokens).toBeLessThanOrEqual(8);
          expect(rec.finish_reason).toBe(s.finishReason);
          expect(rec.seed).toBe(sampleSeed(problemSeed(3, p.id), rec.sample));
          const g = gradeAnswer(rec.response, p.answer);
          expect({ correct: rec.correct, extracted: rec.extracted, reason: rec.reason }).toEqual(g);
          expect(rec.seconds).toBeGreaterThanOrEqual(0);
        }
      }
    }
    // the responses of an untrained model differ between samples (they are sampled, not copies)
    const aime = readLines(join(out, 'aime25.samples.jsonl'));
    expect(new Set(aime.map((l) => l.response)).size).toBeGreaterThan(1);

    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as EvalSummary;
    expect(summary.mode).toBe('model');
    expect(Object.keys(summary.benchmarks).sort()).toEqual(['aime25', 'synthetic-2']);
    const b = summary.benchmarks['aime25']!;
    expect(b.problems).toBe(2);
    expect(b.samples).toBe(4);
    expect(b.n).toBe(2);
    expect(Object.keys(b['pass@k'])).toEqual(['1', '2']);
    expect(b.mean_tokens).toBeCloseTo(aime.reduce((s, l) => s + l.tokens!, 0) / 4, 10);
    expect(b.seconds).toBeGreaterThan(0);
    expect(b.tokens_per_s).toBeCloseTo(b.timed_tokens! / b.seconds!, 6);
    expect(b.timed_tokens).toBe(aime.reduce((s, l) => s + l.tokens!, 0));
    expect(b.time_budget).not.toBeNull();
    expect(b.time_budget!.map((t) => t.k)).toEqual([1, 2]);
    expect(b.time_budget![1]!.seconds).toBeCloseTo(2 * b.seconds_per_sample!, 9);
    expect(summary.config['temperature']).toBe(1);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toMatch(/^<!doctype html>/);
    expect(html.match(/<svg /g)?.length).toBe(4); // accuracy vs k and vs seconds, for each benchmark
    expect(html).toContain('accuracy vs generation time');
    expect(html).toContain('<th>pass@2</th>');

    // the summary is computed from the file: mark samples correct by hand and rerun (nothing to generate)
    const file = join(out, 'aime25.samples.jsonl');
    const answers = new Map(loadBenchmark('aime25').map((p) => [p.id, p.answer]));
    const edited = aime.map((l, i) => {
      const correct = i === 0 || i === 3;
      // right samples vote for the answer; wrong ones have none (do not vote)
      return { ...l, correct, extracted: correct ? answers.get(l.problem_id)! : null };
    });
    writeFileSync(file, edited.map((l) => JSON.stringify(l) + '\n').join(''));
    const again = await m1eval(['--model', modelDir, '--bench', 'aime25', '--limit', '2', '-n', '2', '--max-tokens', '8',
      '--temperature', '1', '--seed', '3', '--out', out]);
    expect(again.code).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(edited.map((l) => JSON.stringify(l) + '\n').join(''));
    const s2 = (JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as EvalSummary).benchmarks['aime25']!;
    expect(s2['pass@1']).toBe(edited.filter((l) => l.correct).length / edited.length);
    // per problem: c correct of 2 → pass@2 = 1 − C(2−c, 2)/C(2, 2)
    const perProblem = [...new Set(edited.map((l) => l.problem_id))].map((id) => edited.filter((l) => l.problem_id === id && l.correct).length);
    expect(s2['pass@k']['2']).toBeCloseTo(perProblem.reduce((s, c) => s + passAtK(2, c, 2), 0) / 2, 12);
    // maj@1 of one sample is that sample's correctness, so it averages to about pass@1 over the draws;
    // maj@2: the only voters are the right samples, so a problem is right when it has any
    expect(Math.abs(s2['maj@k']['1']! - s2['pass@1'])).toBeLessThan(0.2);
    expect(s2['maj@k']['2']).toBe(perProblem.filter((c) => c > 0).length / 2);
    // the timing of the first run is kept (nothing was generated this time)
    expect(s2.seconds).toBe(b.seconds);
    // the synthetic benchmark of the first run is still in the summary
    expect(Object.keys((JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as EvalSummary).benchmarks).sort()).toEqual(['aime25', 'synthetic-2']);
  });

  it('resumes: after losing lines (and a cut last line) a rerun generates only those and gives the same samples', async () => {
    const args = (out: string, n = 2): string[] => ['--model', modelDir, '--bench', 'synthetic-3', '--limit', '2', '-n', String(n), '--max-tokens', '8',
      '--temperature', '0.9', '--top-p', '0.95', '--seed', '11', '--out', out];
    const full = tmp();
    expect((await m1eval(args(full))).code).toBe(0);
    const all = readLines(join(full, 'synthetic-3.samples.jsonl'));
    expect(all).toHaveLength(4);
    const ids = [...new Set(all.map((l) => l.problem_id))];

    // keep sample 0 of the first problem only: the first problem resumes sample 1 (a 1-sample request
    // that must draw sample 1's stream), the second both (a 2-sample request); plus a malformed line
    // and a line cut by a crash
    const part = tmp();
    const kept = all.filter((l) => l.problem_id === ids[0] && l.sample === 0);
    const file = join(part, 'synthetic-3.samples.jsonl');
    writeFileSync(file, kept.map((l) => JSON.stringify(l) + '\n').join('') + '{"bench": "synthetic-3", oops\n');
    appendFileSync(file, JSON.stringify(all.find((l) => l.problem_id === ids[1])).slice(0, 40));
    const r = await m1eval(args(part));
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/samples\.jsonl:2: .*line skipped/);
    expect(r.err).toMatch(/samples\.jsonl:3: incomplete last line/);
    expect(r.err).toMatch(/resuming: 1 samples already/);

    const text = readFileSync(file, 'utf8');
    const lines = text.trimEnd().split('\n');
    // kept line, the malformed line (left as it was), 3 new lines; the cut line is gone
    expect(lines).toHaveLength(5);
    expect(lines[1]).toBe('{"bench": "synthetic-3", oops');
    const resumed = readSampleFile(file);
    expect(resumed.records).toHaveLength(4);
    const byKey = new Map(resumed.records.map((l) => [keyOf(l), content(l)]));
    for (const l of all) expect(byKey.get(keyOf(l))).toEqual(content(l));
    // the same summary numbers as the uninterrupted run
    const sa = (JSON.parse(readFileSync(join(full, 'summary.json'), 'utf8')) as EvalSummary).benchmarks['synthetic-3']!;
    const sb = (JSON.parse(readFileSync(join(part, 'summary.json'), 'utf8')) as EvalSummary).benchmarks['synthetic-3']!;
    expect([sb['pass@1'], sb['pass@k'], sb['maj@k'], sb.mean_tokens, sb.samples]).toEqual([sa['pass@1'], sa['pass@k'], sa['maj@k'], sa.mean_tokens, sa.samples]);

    // growing n later extends the same folder; changing the sampling settings is refused
    const more = await m1eval(args(part, 3));
    expect(more.code).toBe(0);
    const grown = readSampleFile(file).records;
    expect(grown).toHaveLength(6);
    for (const l of all) expect(content(grown.find((g) => keyOf(g) === keyOf(l))!)).toEqual(content(l));
    const changed = await m1eval(args(part).map((a) => (a === '0.9' ? '0.5' : a)));
    expect(changed.code).toBe(1);
    expect(changed.err).toMatch(/made with temperature = 0\.9.*0\.5/);
  });

  it('rejects bad input with clear messages', async () => {
    const out = tmp();
    const unknown = await m1eval(['--model', modelDir, '--bench', 'math500,aime2099', '--out', out]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/unknown benchmark "aime2099"; valid names: math500, aime24, aime25.*synthetic-1/);
    const both = await m1eval(['--model', modelDir, '--responses', 'x.jsonl', '--bench', 'aime25']);
    expect(both.code).toBe(1);
    expect(both.err).toMatch(/exactly one of --model .* or --responses/);
    const neither = await m1eval(['--bench', 'aime25']);
    expect(neither.code).toBe(1);
    expect(neither.err).toMatch(/exactly one of --model/);
    const noOut = await m1eval(['--model', modelDir, '--bench', 'aime25']);
    expect(noOut.err).toMatch(/--out DIR is required/);
    const bigK = await m1eval(['--model', modelDir, '--bench', 'aime25', '-n', '2', '--k', '1,4', '--out', out]);
    expect(bigK.err).toMatch(/--k 4 exceeds -n 2/);
    const badK = await m1eval(['--model', modelDir, '--bench', 'aime25', '--k', '1,x', '--out', out]);
    expect(badK.code).not.toBe(0);
    expect(badK.err).toMatch(/--k: "x" is not a positive integer/);
    const noFile = await m1eval(['--responses', join(out, 'nope.jsonl'), '--bench', 'aime25']);
    expect(noFile.err).toMatch(/file not found/);
    const two = await m1eval(['--responses', join(out, 'nope.jsonl'), '--bench', 'aime25,aime24']);
    expect(two.err).toMatch(/one benchmark at a time/);
    const badSynth = await m1eval(['--responses', join(out, 'nope.jsonl'), '--bench', 'synthetic-99']);
    expect(badSynth.err).toMatch(/unknown benchmark "synthetic-99"/);
    expect(existsSync(join(out, 'summary.json'))).toBe(false);
  });
});

describe('m1 eval --responses', () => {
  // aime25 answers: 2025-I-1 → 70, 2025-I-2 → 588, 2025-I-3 → 16, 2025-I-4 → 117
  it('scores a hand-written file to the exact pass@1, pass@k and maj@k', async () => {
    const dir = tmp();
    const file = join(dir, 'vllm.jsonl');
    const lines = [
      // 2025-I-1: 4 of 4 correct, in several spellings and id / response field names
      { problem_id: '2025-I-1', response: 'so \\boxed{70}' },
      { id: '2025-I-1', output: 'The answer is \\boxed{070}.' },
      { idx: '2025-I-1', completion: '\\fbox{70}' },
      { problem_id: '2025-I-1', generated_text: '$\\boxed{70}$' },
      // 2025-I-2: 0 of 4 (one without any answer)
      { problem_id: '2025-I-2', responses: ['\\boxed{587}', '\\boxed{589}', 'no idea', '\\boxed{5880}'] },
      // 2025-I-3: 3 of 4, majority right
      { problem_id: '2025-I-3', outputs: [{ text: '\\boxed{16}' }, { text: '\\boxed{16}' }, { text: '\\boxed{15}' }, { text: '\\boxed{16.0}' }] },
      // 2025-I-4: 1 of 4, the three wrong ones agree (maj@4 is wrong)
      { problem_id: '2025-I-4', response: '\\boxed{117}' },
      { problem_id: '2025-I-4', response: '\\boxed{118}', tokens: 12 },
      { problem_id: '2025-I-4', response: '\\boxed{118}' },
      { problem_id: '2025-I-4', response: '\\boxed{118}' },
    ];
    writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    const r = await m1eval(['--responses', file, '--bench', 'aime25', '--limit', '4', '--k', '1,2,4']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const out = join(dir, 'vllm.eval');
    const s = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as EvalSummary;
    expect(s.mode).toBe('responses');
    const b = s.benchmarks['aime25']!;
    expect([b.problems, b.samples, b.n, b.correct, b.no_answer]).toEqual([4, 16, 4, 8, 1]);
    // per problem c = 4, 0, 3, 1 of n = 4
    expect(b['pass@1']).toBeCloseTo((1 + 0 + 0.75 + 0.25) / 4, 12);
    expect(b['pass@k']['2']).toBeCloseTo((1 + 0 + 1 + (1 - 3 / 6)) / 4, 12);
    expect(b['pass@k']['4']).toBeCloseTo((1 + 0 + 1 + 1) / 4, 12);
    expect(b['maj@k']['4']).toBeCloseTo((1 + 0 + 1 + 0) / 4, 12);
    // maj@1 is exact on the all-right and all-wrong problems and ≈ c/n on the others
    expect(Math.abs(b['maj@k']['1']! - 0.5)).toBeLessThan(0.1);
    expect(b.time_budget).toBeNull();
    expect(b.mean_tokens).toBe(12);
    const graded = readLines(join(out, 'aime25.graded.jsonl'));
    expect(graded).toHaveLength(16);
    expect(graded.filter((g) => g.problem_id === '2025-I-3').map((g) => [g.sample, g.correct])).toEqual([[0, true], [1, true], [2, false], [3, true]]);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toContain('<svg ');
    expect(html).toContain('No per-sample timings');
    expect(html).toMatch(/<td>50\.0<\/td><td>62\.5<\/td><td>75\.0<\/td>/); // pass@1, pass@2, pass@4 in %
  });

  it('reports bad lines with their line numbers and still scores the rest; integer ids match positions', async () => {
    const dir = tmp();
    const file = join(dir, 'r.jsonl');
    writeFileSync(file, [
      JSON.stringify({ problem_id: '2025-I-1', response: '\\boxed{70}' }),
      '{"problem_id": "2025-I-2", "response": ',
      JSON.stringify({ problem_id: '2025-I-2' }),
      JSON.stringify({ response: '\\boxed{1}' }),
      JSON.stringify({ problem_id: 'nope', response: '\\boxed{1}' }),
      JSON.stringify({ problem_id: '2025-I-2', response: '\\boxed{588}' }),
      '',
    ].join('\n'));
    const out = join(dir, 'scored');
    const r = await m1eval(['--responses', file, '--bench', 'aime25', '--out', out]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/r\.jsonl:2: invalid JSON/);
    expect(r.err).toMatch(/r\.jsonl:3: no response: give one of the fields "response"/);
    expect(r.err).toMatch(/r\.jsonl:4: no problem id: give one of the fields "problem_id", "id", "idx"/);
    expect(r.err).toMatch(/r\.jsonl:5: problem id "nope" is not in aime25 \(ids look like "2025-I-1"\)/);
    expect(r.err).toMatch(/28 of 30 aime25 problems have no response/);
    expect(r.err).toMatch(/4 line\(s\) of .* could not be used/);
    const b = (JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as EvalSummary).benchmarks['aime25']!;
    expect([b.problems, b.problems_total, b.samples, b['pass@1']]).toEqual([2, 30, 2, 1]);

    // 0-based positions when the ids are integers but not problem ids
    const pos = join(dir, 'pos.jsonl');
    writeFileSync(pos, [{ idx: 0, response: '\\boxed{70}' }, { idx: 1, response: '\\boxed{1}' }, { idx: 2, response: '\\boxed{16}' }]
      .map((l) => JSON.stringify(l)).join('\n'));
    const p = await m1eval(['--responses', pos, '--bench', 'aime25', '--limit', '3']);
    expect(p.code).toBe(0);
    expect(p.err).toMatch(/matching them as 0-based problem positions/);
    const bp = (JSON.parse(readFileSync(join(dir, 'pos.eval', 'summary.json'), 'utf8')) as EvalSummary).benchmarks['aime25']!;
    expect(bp['pass@1']).toBeCloseTo(2 / 3, 12);
    expect(loadBenchmark('aime25')[0]!.id).toBe('2025-I-1');
  });
});

describe('samples file', () => {
  const rec = (i: number, response: string): SampleRecord => ({
    bench: 'b', problem_id: `p${i >> 2}`, sample: i & 3, seed: i, response, extracted: null, correct: i % 3 === 0, reason: 'r',
    tokens: i, seconds: 0.5, finish_reason: 'stop',
  });

  it('reads lines across 4 MiB chunk boundaries, multi-byte text included, and keeps a whole record that lost its newline', () => {
    const dir = tmp();
    const file = join(dir, 'b.samples.jsonl');
    // ~6 MB: lines straddle the chunk boundary; 'π' and '→' are 2- and 3-byte UTF-8
    const recs = Array.from({ length: 3000 }, (_, i) => rec(i, `${'π→x'.repeat(300 + (i % 7))} \\boxed{${i}}`));
    const body = recs.map((r) => JSON.stringify(r)).join('\n');
    writeFileSync(file, body); // the last line has no newline but is a whole record
    const f = readSampleFile(file);
    expect(f.warnings).toEqual([]);
    expect(f.records).toEqual(recs);
    expect(f.validBytes).toBe(statSync(file).size);
    expect(f.validBytes).toBeGreaterThan(4 << 20);
    expect(readSampleFile(file, { keepResponses: false }).records.every((r) => r.response === '')).toBe(true);

    // the writer completes that line before appending
    const w = new SampleWriter(file, f.validBytes);
    w.append(rec(3000, 'new'));
    w.close();
    const again = readSampleFile(file);
    expect(again.records).toEqual([...recs, rec(3000, 'new')]);
    expect(readFileSync(file, 'utf8').endsWith(`}\n${JSON.stringify(rec(3000, 'new'))}\n`)).toBe(true);

    // a cut line is dropped and cut off by the writer; a repeated (problem, sample) keeps its first line
    writeFileSync(file, `${JSON.stringify(rec(0, 'a'))}\n${JSON.stringify(rec(0, 'b'))}\n${JSON.stringify(rec(1, 'c')).slice(0, 30)}`);
    const cut = readSampleFile(file);
    expect(cut.records.map((r) => r.response)).toEqual(['a']);
    expect(cut.warnings).toEqual([`${file}:3: incomplete last line (an interrupted write) dropped`]);
    new SampleWriter(file, cut.validBytes).close();
    expect(readFileSync(file, 'utf8')).toBe(`${JSON.stringify(rec(0, 'a'))}\n${JSON.stringify(rec(0, 'b'))}\n`);
  });
});
