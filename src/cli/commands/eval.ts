/**
 * `m1 eval`: evaluate a model on math benchmarks, or score responses made elsewhere.
 *
 *   m1 eval --model DIR --bench math500,aime25 -n 16 --temperature 0.7 --top-p 1 --max-tokens 32768 --out DIR
 *           [--limit N] [--batch N] [--seed S] [--k 1,2,4,8,16] [--require-think] [--backend cpu|cuda]
 *   m1 eval --responses FILE.jsonl --bench NAME [--out DIR] [--k …] [--require-think]
 *
 * Model mode writes OUT/<bench>.samples.jsonl (one graded sample per line, appended as samples finish;
 * a rerun with the same settings resumes), OUT/summary.json and OUT/report.html.
 *
 * Responses mode reads one JSON object per line:
 *   problem id:  "problem_id" | "id" | "idx" | "unique_id" | "question_id" | "index" — the benchmark's
 *                problem id (see the `id` of its loader), or, when the ids are not problem ids but all
 *                are integers, the 0-based position of the problem in the benchmark file;
 *   response:    "response" | "responses" | "output" | "outputs" | "completion" | "completions" |
 *                "generated_text" | "model_output" | "text" — a string, or a list of strings (or of
 *                {"text": …}, as vLLM writes) meaning several samples;
 *   optional:    "tokens" | "num_tokens" | "completion_tokens", "seconds" | "time", "finish_reason".
 * Several lines per problem are samples 0, 1, … in file order. It writes OUT/<bench>.graded.jsonl,
 * summary.json and report.html (OUT defaults to FILE's folder + "<name>.eval"). Bad lines are reported
 * with their line number and skipped; the exit code is then 1.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { BACKEND_NAMES, createBackend } from '../../backend/registry.js';
import { loadGenerationDefaults } from '../../infer/generation-config.js';
import { samplingParams } from '../../infer/sampling.js';
import { loadModel } from '../../model/checkpoint.js';
import { Tokenizer } from '../../model/tokenizer.js';
import { UserError } from '../../util/errors.js';
import { defaultKs, parseBenchList, resolveBenchmark, runModelEval, scoreResponses, type EvalSummary } from '../../eval/run.js';
import { Progress } from '../progress.js';
import { addSamplingOptions, type SamplingFlags, intFlag } from '../options.js';

interface EvalFlags extends SamplingFlags {
  model?: string;
  responses?: string;
  bench: string;
  n: number;
  maxTokens: number;
  out?: string;
  limit?: number;
  batch: number;
  seed: number;
  k?: number[];
  requireThink?: boolean;
  backend: string;
  cudaGraphs?: boolean;
}

function kList(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0) throw new InvalidArgumentError('--k needs at least one k');
  const ks = parts.map((p) => {
    if (!/^\d+$/.test(p) || Number(p) < 1) throw new InvalidArgumentError(`--k: "${p}" is not a positive integer`);
    return Number(p);
  });
  return [...new Set(ks)].sort((a, b) => a - b);
}


export function registerEval(program: Command): void {
  const cmd = program
    .command('eval')
    .description('evaluate a model on math benchmarks (--model), or score responses made elsewhere (--responses)')
    .option('--model <dir>', 'model folder to generate with')
    .option('--responses <file>', 'JSONL of responses made elsewhere, e.g. by vLLM (see m1 eval --help)')
    .requiredOption('--bench <names>', 'comma-separated benchmarks (math500, aime24, aime25, amc23, amc23-83, olympiadbench, minerva, gsm8k, synthetic-<d>)');
  addSamplingOptions(cmd)
    .option('-n, --n <n>', 'samples per problem', intFlag('-n', { min: 1 }), 1)
    .option('--max-tokens <k>', 'most generated tokens per sample (capped by the context)', intFlag('--max-tokens', { min: 1 }), 32768)
    .option('--out <dir>', 'output folder (required with --model)')
    .option('--limit <n>', 'only the first n problems of each benchmark', intFlag('--limit', { min: 1 }))
    .option('--batch <n>', 'most sequences decoded together', intFlag('--batch', { min: 1 }), 128)
    .option('--seed <s>', 'base seed (per sample: seed + hash(problem id), then the sample index)', intFlag('--seed', { min: 0 }), 0)
    .option('--k <list>', 'k for pass@k and maj@k (default: powers of two up to n, and n)', kList)
    .option('--require-think', 'only an answer after </think> counts (reasoning models)')
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
    .option('--cuda-graphs', 'replay decode steps as recorded CUDA graphs (one per batch size; --backend cuda, ignored by the cpu backend)')
    .action(async (o: EvalFlags) => {
      if ((o.model === undefined) === (o.responses === undefined)) {
        throw new UserError('m1 eval: give exactly one of --model DIR (generate and grade) or --responses FILE.jsonl (grade responses made elsewhere)');
      }
      if (o.responses !== undefined) runResponses(o, o.responses);
      else await runModel(o, o.model!);
    });
}

function printSummary(s: EvalSummary, out: string): void {
  for (const [name, b] of Object.entries(s.benchmarks)) {
    const ks = Object.keys(b['pass@k']).map(Number);
    const kMax = ks.length > 0 ? Math.max(...ks) : null;
    const p = (x: number): string => `${(100 * x).toFixed(1)}%`;
    const extra = kMax !== null && kMax > 1 ? `  pass@${kMax} ${p(b['pass@k'][String(kMax)]!)}  maj@${kMax} ${p(b['maj@k'][String(kMax)]!)}` : '';
    process.stdout.write(`${name}: ${b.problems} problems × ${b.n}  pass@1 ${b.problems > 0 ? p(b['pass@1']) : '–'}${extra}\n`);
  }
  process.stdout.write(`wrote ${path.join(out, 'summary.json')} and ${path.join(out, 'report.html')}\n`);
}

function runResponses(o: EvalFlags, file: string): void {
  const names = parseBenchList(o.bench);
  if (names.length !== 1) throw new UserError(`--responses scores one benchmark at a time; --bench has ${names.length} (${names.join(', ')})`);
  if (!existsSync(file)) throw new UserError(`--responses: file not found: ${file}`);
  const bench = resolveBenchmark(names[0]!, { limit: o.limit, extra: o.requireThink ? { requireThinkClose: true } : {} });
  const out = o.out ?? path.join(path.dirname(file), `${path.basename(file).replace(/\.jsonl?$/, '')}.eval`);
  const { summary, errors } = scoreResponses({ file, bench, out, ks: o.k ?? null });
  printSummary(summary, out);
  if (errors > 0) {
    process.stderr.write(`${errors} line(s) of ${file} could not be used (see above); the others are scored\n`);
    process.exitCode = 1;
  }
}

async function runModel(o: EvalFlags, modelDir: string): Promise<void> {
  if (o.out === undefined) throw new UserError('--out DIR is required with --model (samples, summary.json and report.html go there)');
  const names = parseBenchList(o.bench);
  const ks = o.k ?? defaultKs(o.n);
  const tooBig = ks.filter((k) => k > o.n);
  if (tooBig.length > 0) throw new UserError(`--k ${tooBig.join(',')} exceeds -n ${o.n}: pass@k and maj@k need k ≤ n samples`);
  // check cheap things (flags, benchmark files, tokenizer) before the slow model load
  samplingParams({ temperature: o.temperature, topP: o.topP, topK: o.topK, minP: o.minP });
  const extra = o.requireThink ? { requireThinkClose: true } : {};
  const benches = names.map((n) => resolveBenchmark(n, { limit: o.limit, extra }));
  if (!existsSync(path.join(modelDir, 'tokenizer.json'))) throw new UserError(`--model: ${modelDir} has no tokenizer.json (needed for the chat template and to decode responses)`);
  const tok = Tokenizer.fromDir(modelDir);
  if (!tok.hasChatTemplate()) throw new UserError(`--model: ${modelDir}/tokenizer_config.json has no chat_template; m1 eval prompts through the chat template`);
  const be = await createBackend(o.backend);
  const { model, cfg } = loadModel(modelDir, be);

  const defaults = loadGenerationDefaults(modelDir, cfg);
  const stopTokenIds = [...defaults.eosTokenIds];
  if (tok.eosTokenId !== null && !stopTokenIds.includes(tok.eosTokenId)) stopTokenIds.push(tok.eosTokenId);
  const sampling = {
    ...defaults.sampling,
    ...Object.fromEntries(Object.entries({ temperature: o.temperature, topP: o.topP, topK: o.topK, minP: o.minP }).filter(([, v]) => v !== undefined)),
  };

  let bar: Progress | null = null;
  let lastLog = Date.now();
  const summary = await runModelEval({
    modelDir, model, tokenizer: tok, benches, out: o.out, n: o.n, sampling, maxTokens: o.maxTokens, seed: o.seed, batch: o.batch, graphs: o.cudaGraphs === true,
    stopTokenIds, ks, configExtra: { backend: o.backend, require_think: o.requireThink === true, limit: o.limit ?? null, bench: names.join(',') },
    onProgress: (done, total, tokens, secs) => {
      bar ??= new Progress(total, 'eval', 'samples');
      const tps = secs > 0 ? tokens / secs : 0;
      bar.update(done, `| ${tps.toFixed(1)} tok/s`);
      // a log (not a terminal) gets a line a minute instead of a bar
      if (!process.stderr.isTTY && Date.now() - lastLog > 60_000) {
        lastLog = Date.now();
        const eta = done > 0 ? ((total - done) * secs) / done : NaN;
        process.stderr.write(`eval: ${done}/${total} samples, ${tps.toFixed(1)} tok/s, ETA ${Number.isFinite(eta) ? `${Math.round(eta)} s` : '?'}\n`);
      }
    },
  }).finally(() => (bar as Progress | null)?.stop());
  printSummary(summary, o.out);
}
