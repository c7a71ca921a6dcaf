/**
 * `m1 eval`: generate, grade and score benchmark samples (library side; the CLI is cli/commands/eval.ts).
 *
 * Two modes share grading, metrics and the output folder layout:
 *   - model mode (runModelEval): every problem becomes the M1 prompt (problem + " Let's think step by
 *     step …") as a user message through the chat template; all problems of a benchmark are queued on
 *     one Engine, which batches them continuously (the n samples of a prompt share its prefill). Each
 *     finished sample is graded at once and appended as one JSON line to OUT/<bench>.samples.jsonl.
 *   - responses mode (scoreResponses): lines made elsewhere (vLLM, …) are matched to problems and graded.
 *
 * Resume: a rerun reads OUT/<bench>.samples.jsonl and generates only the (problem, sample) pairs that
 * are missing. Seeds are per (problem, sample) — base = (seed + fnv1a(problem_id)) mod 2^32, sample i
 * draws from the engine's sampleSeed(base, i) — so a sample's tokens do not depend on what else is in
 * the batch or on whether the run was interrupted (exactly on the CPU backend; on a GPU, batch-size-
 * dependent kernels may round differently). A problem with all samples missing is one n-sample request
 * (shared prefill); a partially done one gets one 1-sample request per missing sample, seeded so that
 * its stream equals sample i of the n-sample request.
 *
 * No finished work is lost: sample lines are written one write(2) each as they finish (a crash can only
 * cut the last line, which the next run drops), summary.json and report.html are written to a
 * temporary name and renamed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { benchmarkSpec, BENCHMARK_NAMES, gradeOptionsFor, loadBenchmark, type BenchProblem } from './datasets.js';
import { gradeAnswer, type GradeOptions } from './grader/grade.js';
import { benchmarkMetrics, groupAnswers, timeBudgetCurve, type ProblemSamples } from './metrics.js';
import { renderReport } from './report.js';
import { Engine, sampleSeed } from '../infer/engine.js';
import type { SamplingParams } from '../infer/sampling.js';
import type { CausalLM } from '../model/model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { loadSyntheticBenchmark, MAX_SYNTHETIC_DIFFICULTY, parseSyntheticName } from '../train/synthetic.js';
import { withM1Suffix } from '../train/data.js';
import { UserError } from '../util/errors.js';

// ------------------------------------------------------------------ benchmarks

/** a benchmark ready to evaluate: its problems (after --limit) and per-problem grading options */
export interface EvalBenchmark {
  name: string;
  problems: BenchProblem[];
  gradeOptions(p: BenchProblem): GradeOptions;
}

/** every name --bench accepts, for error messages */
export function validBenchNames(): string {
  return `${BENCHMARK_NAMES.join(', ')}, synthetic-1 … synthetic-${MAX_SYNTHETIC_DIFFICULTY}`;
}

/**
 * Load a benchmark by name: the shipped ones (datasets.ts), or `synthetic-<d>`, the held-out test
 * split of the synthetic arithmetic task (train/synthetic.ts; integer answers). `limit` keeps the
 * first N problems; `extra` grading options (e.g. requireThinkClose) apply to every problem.
 */
export function resolveBenchmark(name: string, opts: { limit?: number; extra?: GradeOptions } = {}): EvalBenchmark {
  const extra = opts.extra ?? {};
  let problems: BenchProblem[];
  let optsFor: (p: BenchProblem) => GradeOptions;
  if (name.startsWith('synthetic-')) {
    if (parseSyntheticName(name) === null) throw new UserError(`unknown benchmark "${name}"; valid names: ${validBenchNames()}`);
    problems = loadSyntheticBenchmark(name);
    optsFor = () => ({ ...extra });
  } else {
    const known = (BENCHMARK_NAMES as readonly string[]).includes(name);
    if (!known) throw new UserError(`unknown benchmark "${name}"; valid names: ${validBenchNames()}`);
    const spec = benchmarkSpec(name);
    problems = loadBenchmark(name);
    optsFor = (p) => ({ ...gradeOptionsFor(spec, p), ...extra });
  }
  if (opts.limit !== undefined) problems = problems.slice(0, opts.limit);
  const ids = new Set<string>();
  for (const p of problems) {
    if (ids.has(p.id)) throw new Error(`${name}: duplicate problem id "${p.id}"`);
    ids.add(p.id);
  }
  return { name, problems, gradeOptions: optsFor };
}

/** parse "a,b,c" into benchmark names (checked, deduplicated, in order) */
export function parseBenchList(list: string): string[] {
  const names = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (names.length === 0) throw new UserError('--bench: give at least one benchmark name');
  for (const n of names) {
    const ok = (BENCHMARK_NAMES as readonly string[]).includes(n) || parseSyntheticName(n) !== null;
    if (!ok) throw new UserError(`--bench: unknown benchmark "${n}"; valid names: ${validBenchNames()}`);
  }
  return [...new Set(names)];
}

// ------------------------------------------------------------------ sample records

/** one line of OUT/<bench>.samples.jsonl (snake_case: the file is read by other tools too) */
export interface SampleRecord {
  bench: string;
  problem_id: string;
  /** sample index within the problem, 0 … n−1 */
  sample: number;
  /** Rng seed of this sample's stream (engine sampleSeed); null for responses made elsewhere */
  seed: number | null;
  response: string;
  extracted: string | null;
  correct: boolean;
  reason: string;
  /** generated tokens (incl. the stop token); null when unknown */
  tokens: number | null;
  /** seconds from the sample's prefill step to its last token; null when unknown */
  seconds: number | null;
  finish_reason: string | null;
}

export function samplesPath(out: string, bench: string): string {
  return path.join(out, `${bench}.samples.jsonl`);
}

/** FNV-1a over UTF-16 code units: a stable 32-bit hash of a problem id */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** base seed of a problem's request; sample i draws from sampleSeed(problemSeed, i) */
export function problemSeed(seed: number, problemId: string): number {
  return (seed + fnv1a(problemId)) >>> 0;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** check one parsed samples line; throws naming the field */
function toSampleRecord(v: unknown): SampleRecord {
  if (!isRecord(v)) throw new Error('expected a JSON object');
  const need = (k: string, t: 'string' | 'number' | 'boolean'): void => {
    if (typeof v[k] !== t) throw new Error(`field "${k}" missing or not a ${t}`);
  };
  need('bench', 'string');
  need('problem_id', 'string');
  need('sample', 'number');
  need('response', 'string');
  need('correct', 'boolean');
  if (!Number.isInteger(v.sample) || (v.sample as number) < 0) throw new Error('field "sample" must be an integer ≥ 0');
  const numOrNull = (k: string): number | null => (typeof v[k] === 'number' ? (v[k] as number) : null);
  return {
    bench: v.bench as string, problem_id: v.problem_id as string, sample: v.sample as number, seed: numOrNull('seed'),
    response: v.response as string, extracted: typeof v.extracted === 'string' ? v.extracted : null, correct: v.correct as boolean,
    reason: typeof v.reason === 'string' ? v.reason : '', tokens: numOrNull('tokens'), seconds: numOrNull('seconds'),
    finish_reason: typeof v.finish_reason === 'string' ? v.finish_reason : null,
  };
}

export interface SampleFile {
  records: SampleRecord[];
  /** bytes of complete lines: a cut last line starts here */
  validBytes: number;
  /** malformed lines: "FILE:LINE: message" (the pairs they held are generated again) */
  warnings: string[];
}

/**
 * The lines of a file, read in chunks (a long evaluation's samples file may exceed the largest string
 * Node can hold): each with its 1-based number, whether it ended in a newline, and the byte offset
 * just past it.
 */
function* fileLines(file: string): Generator<{ text: string; lineNo: number; complete: boolean; end: number }> {
  const fd = fs.openSync(file, 'r');
  try {
    const chunk = Buffer.alloc(1 << 22);
    let pending: Buffer[] = [];
    let offset = 0, lineNo = 0;
    for (;;) {
      const got = fs.readSync(fd, chunk, 0, chunk.length, offset);
      if (got === 0) break;
      let from = 0;
      for (let nl = chunk.indexOf(0x0a, 0); nl >= 0 && nl < got; nl = chunk.indexOf(0x0a, from)) {
        pending.push(chunk.subarray(from, nl));
        yield { text: Buffer.concat(pending).toString('utf8'), lineNo: ++lineNo, complete: true, end: offset + nl + 1 };
        pending = [];
        from = nl + 1;
      }
      // copy: the chunk buffer is reused by the next read
      if (from < got) pending.push(Buffer.from(chunk.subarray(from, got)));
      offset += got;
    }
    if (pending.length > 0) yield { text: Buffer.concat(pending).toString('utf8'), lineNo: ++lineNo, complete: false, end: offset };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Read a samples file. A last line without its newline is a write cut by a crash: it is dropped
 * (validBytes excludes it) unless it is a complete record. Malformed lines elsewhere are reported
 * with their line number and skipped. A repeated (problem, sample) keeps its first line.
 * `keepResponses: false` drops the response texts (the summary does not need them; a long run's
 * texts would fill the memory).
 */
export function readSampleFile(file: string, opts: { keepResponses?: boolean } = {}): SampleFile {
  const out: SampleFile = { records: [], validBytes: 0, warnings: [] };
  if (!fs.existsSync(file)) return out;
  const seen = new Set<string>();
  for (const { text, lineNo, complete, end } of fileLines(file)) {
    const line = text.replace(/\r$/, '');
    let rec: SampleRecord | null = null;
    if (line.trim() !== '') {
      try {
        rec = toSampleRecord(JSON.parse(line));
      } catch (e) {
        if (!complete) {
          out.warnings.push(`${file}:${lineNo}: incomplete last line (an interrupted write) dropped`);
          continue;
        }
        out.warnings.push(`${file}:${lineNo}: ${(e as Error).message}; line skipped`);
      }
    }
    // complete lines stay whatever they hold; a cut line stays only when it is a whole record
    // (the write stopped exactly before its newline) — the writer then adds the newline
    if (complete || rec !== null) out.validBytes = end;
    if (rec === null) continue;
    const key = `${rec.problem_id}\u0000${rec.sample}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (opts.keepResponses === false) rec.response = '';
    out.records.push(rec);
  }
  return out;
}

/** appends sample lines to a samples file, one write per line, after cutting an interrupted last line */
export class SampleWriter {
  private fd: number;
  private lastSync = Date.now();

  constructor(readonly file: string, validBytes: number) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+');
    const size = fs.fstatSync(this.fd).size;
    if (size > validBytes) fs.ftruncateSync(this.fd, validBytes);
    // a complete last record without its newline gets one, so the next line starts on its own
    if (validBytes > 0) {
      const b = Buffer.alloc(1);
      fs.readSync(this.fd, b, 0, 1, validBytes - 1);
      if (b[0] !== 0x0a) fs.writeSync(this.fd, '\n', validBytes);
    }
    fs.closeSync(this.fd);
    this.fd = fs.openSync(file, 'a');
  }

  append(rec: SampleRecord): void {
    fs.writeSync(this.fd, JSON.stringify(rec) + '\n');
    // the OS has the line once write() returns (a process crash loses nothing); fsync now and then
    // bounds what a power cut could lose without paying a disk flush per sample
    if (Date.now() - this.lastSync > 5000) {
      fs.fsyncSync(this.fd);
      this.lastSync = Date.now();
    }
  }

  close(): void {
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
  }
}

/** write a file under a temporary name and rename it: readers see the old or the new file, never half */
export function writeFileAtomic(file: string, content: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}

// ------------------------------------------------------------------ summary

export interface KPoint {
  k: number;
  pass: number;
  maj: number;
}

export interface TimePoint {
  seconds: number;
  k: number;
  pass: number;
  maj: number;
}

/** the per-benchmark entry of summary.json */
export interface BenchSummary {
  /** problems with at least one sample (the metrics are over these) */
  problems: number;
  /** problems of the benchmark (after --limit) */
  problems_total: number;
  /** ids of problems without any sample (first 20) */
  missing_problems: string[];
  samples: number;
  /** samples per problem: the smallest count over the scored problems (pass@k, maj@k need k ≤ n) */
  n: number;
  'pass@1': number;
  'pass@k': Record<string, number>;
  'maj@k': Record<string, number>;
  /** pass@k and maj@k for the plotted k */
  curve: KPoint[];
  /** fixed-time-budget curve: accuracy when k samples cost k × seconds_per_sample (null without timings) */
  time_budget: TimePoint[] | null;
  correct: number;
  no_answer: number;
  mean_tokens: number | null;
  /** mean seconds of one sample, from its prefill step to its last token (null without timings) */
  seconds_per_sample: number | null;
  /** generated tokens / generation wall-clock, summed over the runs that made this file (null without) */
  tokens_per_s: number | null;
  /** generation wall-clock, summed over runs (null in responses mode) */
  seconds: number | null;
  /** tokens generated in those seconds (the numerator of tokens_per_s) */
  timed_tokens: number | null;
  finish_reasons: Record<string, number>;
}

export interface EvalSummary {
  created: string;
  mode: 'model' | 'responses';
  /** model folder, or the responses file */
  source: string;
  config: Record<string, string | number | boolean | null | number[]>;
  benchmarks: Record<string, BenchSummary>;
}

/** the k of the accuracy-vs-k plot: every k ≤ 16, then powers of two, n, and the requested ks */
function curveKs(n: number, ks: number[]): number[] {
  const out = new Set<number>();
  for (let k = 1; k <= Math.min(n, 16); k++) out.add(k);
  for (let k = 32; k <= n; k *= 2) out.add(k);
  out.add(n);
  for (const k of ks) if (k <= n) out.add(k);
  return [...out].sort((a, b) => a - b);
}

/** powers of two up to n, and n */
export function defaultKs(n: number): number[] {
  const ks: number[] = [];
  for (let k = 1; k <= n; k *= 2) ks.push(k);
  if (ks[ks.length - 1] !== n) ks.push(n);
  return ks;
}

const MAJ_RESAMPLES = 100;

/**
 * Metrics of one benchmark from its sample records. Only samples with index < `nCap` (when given) and
 * problems of `bench` count. `ks` are the pass@k / maj@k reported (those > n are left out; null: defaultKs(n)).
 * `timing` carries the generation wall-clock and its tokens (model mode).
 */
export function summarizeBenchmark(
  bench: EvalBenchmark,
  records: readonly SampleRecord[],
  ks: readonly number[] | null,
  opts: { nCap?: number; timing?: { seconds: number; tokens: number } | null } = {},
): BenchSummary {
  const byProblem = new Map<string, SampleRecord[]>();
  for (const p of bench.problems) byProblem.set(p.id, []);
  for (const r of records) {
    if (opts.nCap !== undefined && r.sample >= opts.nCap) continue;
    byProblem.get(r.problem_id)?.push(r);
  }
  const scored: ProblemSamples[] = [];
  const missing: string[] = [];
  let samples = 0, correct = 0, noAnswer = 0, tokSum = 0, tokCount = 0, secSum = 0, secCount = 0;
  const finish: Record<string, number> = {};
  for (const p of bench.problems) {
    const rs = byProblem.get(p.id)!.sort((a, b) => a.sample - b.sample);
    if (rs.length === 0) {
      missing.push(p.id);
      continue;
    }
    const answers = rs.map((r) => r.extracted);
    const ok = rs.map((r) => r.correct);
    // group per problem with its own options (sets, tolerances) so maj@k merges equivalent answers right
    scored.push({ answers, correct: ok, groups: groupAnswers(answers, bench.gradeOptions(p)) });
    for (const r of rs) {
      samples++;
      if (r.correct) correct++;
      if (r.extracted === null) noAnswer++;
      if (r.tokens !== null) (tokSum += r.tokens), tokCount++;
      if (r.seconds !== null) (secSum += r.seconds), secCount++;
      const f = r.finish_reason ?? 'unknown';
      finish[f] = (finish[f] ?? 0) + 1;
    }
  }
  const timing = opts.timing ?? null;
  const base: BenchSummary = {
    problems: scored.length, problems_total: bench.problems.length, missing_problems: missing.slice(0, 20), samples, n: 0,
    'pass@1': 0, 'pass@k': {}, 'maj@k': {}, curve: [], time_budget: null, correct, no_answer: noAnswer,
    mean_tokens: tokCount > 0 ? tokSum / tokCount : null,
    seconds_per_sample: secCount > 0 ? secSum / secCount : null,
    tokens_per_s: timing && timing.seconds > 0 ? timing.tokens / timing.seconds : null,
    seconds: timing ? timing.seconds : null,
    timed_tokens: timing ? timing.tokens : null,
    finish_reasons: finish,
  };
  if (scored.length === 0) return base;
  const n = Math.min(...scored.map((p) => p.correct.length));
  ks ??= defaultKs(n);
  const plotKs = curveKs(n, [...ks]);
  const m = benchmarkMetrics(scored, plotKs, { resamples: MAJ_RESAMPLES, seed: 0 });
  base.n = n;
  base['pass@1'] = m.passAt1;
  for (const k of ks) {
    if (k > n) continue;
    base['pass@k'][String(k)] = m.passAtK[k]!;
    base['maj@k'][String(k)] = m.majAtK[k]!;
  }
  base.curve = plotKs.map((k) => ({ k, pass: m.passAtK[k]!, maj: m.majAtK[k]! }));
  // every scored sample must carry a time for the budget curve to mean anything
  if (secCount === samples && base.seconds_per_sample !== null && base.seconds_per_sample > 0) {
    const sps = base.seconds_per_sample;
    const curve = timeBudgetCurve(scored, sps, plotKs.map((k) => k * sps), { resamples: MAJ_RESAMPLES, seed: 0 });
    base.time_budget = curve
      .filter((c) => c.k > 0)
      .map((c) => ({ seconds: c.budgetSeconds, k: c.k, pass: c.passAtK!, maj: c.majAtK! }));
  }
  return base;
}

// ------------------------------------------------------------------ model mode

export interface ModelEvalOptions {
  /** model folder (recorded in the summary) */
  modelDir: string;
  model: CausalLM;
  tokenizer: Tokenizer;
  benches: EvalBenchmark[];
  out: string;
  n: number;
  sampling: Partial<SamplingParams>;
  maxTokens: number;
  seed: number;
  /** most sequences decoded together (at least n) */
  batch: number;
  /** decode with recorded CUDA graphs (EngineOptions.graphs; the context is sized to the longest prompt + maxTokens) */
  graphs?: boolean;
  stopTokenIds: number[];
  ks: number[];
  /** extra fields recorded in summary.json config (backend, require_think, …) */
  configExtra?: Record<string, string | number | boolean | null>;
  /** progress: samples done of total this run, tokens generated this run, seconds since start */
  onProgress?: (done: number, total: number, tokens: number, seconds: number) => void;
  /** messages for the user (malformed lines, resume notes) */
  log?: (msg: string) => void;
}

/** fields of a run that must match for a rerun to resume it (n and --limit may grow) */
const RESUME_KEYS = ['temperature', 'top_p', 'top_k', 'min_p', 'max_tokens', 'seed', 'model'] as const;

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Generate, grade and score. Returns the summary (also written to OUT/summary.json with OUT/report.html).
 * Throws UserError when OUT holds a run made with other generation settings.
 */
export async function runModelEval(o: ModelEvalOptions): Promise<EvalSummary> {
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const config: EvalSummary['config'] = {
    model: path.resolve(o.modelDir), n: o.n, temperature: o.sampling.temperature ?? null, top_p: o.sampling.topP ?? null,
    top_k: o.sampling.topK ?? null, min_p: o.sampling.minP ?? null, max_tokens: o.maxTokens, seed: o.seed, batch: o.batch,
    k: o.ks, ...o.configExtra,
  };
  const summaryFile = path.join(o.out, 'summary.json');
  const previous = readJson(summaryFile) as EvalSummary | null;
  if (previous && isRecord(previous) && isRecord(previous.config)) {
    if (previous.mode !== 'model') throw new UserError(`${summaryFile}: this folder holds a --responses evaluation; use another --out`);
    for (const k of RESUME_KEYS) {
      const was = previous.config[k], now = config[k];
      if (was !== undefined && JSON.stringify(was) !== JSON.stringify(now)) {
        throw new UserError(`${o.out} was made with ${k} = ${JSON.stringify(was)}, this run has ${JSON.stringify(now)}: resuming would mix samples; use the same settings or another --out`);
      }
    }
  }
  fs.mkdirSync(o.out, { recursive: true });
  // benchmarks of earlier runs into this folder stay in the summary; writing it now also records this
  // run's settings, so that a rerun after a crash is checked against them
  const summary: EvalSummary = {
    created: new Date().toISOString(), mode: 'model', source: path.resolve(o.modelDir), config,
    benchmarks: previous && isRecord(previous.benchmarks) ? { ...previous.benchmarks } : {},
  };
  writeOutputs(o.out, summary);

  // what is done and what is left, for every benchmark, before generating anything
  interface Plan {
    bench: EvalBenchmark;
    file: SampleFile;
    todo: { problem: BenchProblem; prompt: number[]; samples: number[] }[];
  }
  const maxContext = o.model.cfg.llama.maxPositionEmbeddings;
  const plans: Plan[] = o.benches.map((bench) => {
    const file = readSampleFile(samplesPath(o.out, bench.name), { keepResponses: false });
    for (const w of file.warnings) log(`warning: ${w}`);
    const done = new Set(file.records.filter((r) => r.bench === bench.name).map((r) => `${r.problem_id}\u0000${r.sample}`));
    const todo: Plan['todo'] = [];
    for (const problem of bench.problems) {
      const samples: number[] = [];
      for (let i = 0; i < o.n; i++) if (!done.has(`${problem.id}\u0000${i}`)) samples.push(i);
      if (samples.length === 0) continue;
      const prompt = o.tokenizer.encodeChat([{ role: 'user', content: withM1Suffix(problem.problem) }], { addGenerationPrompt: true });
      if (prompt.length >= maxContext) {
        throw new UserError(`${bench.name} problem "${problem.id}": the prompt has ${prompt.length} tokens but the model's context is ${maxContext} (max_position_embeddings)`);
      }
      todo.push({ problem, prompt, samples });
    }
    return { bench, file, todo };
  });
  const total = plans.reduce((s, p) => s + p.todo.reduce((t, x) => t + x.samples.length, 0), 0);
  const resumed = plans.reduce((s, p) => s + p.file.records.length, 0);
  if (resumed > 0) log(`resuming: ${resumed} samples already in ${o.out}; ${total} to generate`);

  const t0 = performance.now();
  let done = 0, tokensAll = 0;
  // graphs plan paged attention for the whole context: size it to what these prompts need
  const longest = Math.max(0, ...plans.flatMap((p) => p.todo.map((t) => t.prompt.length)));
  const engine = new Engine(o.model, {
    tokenizer: o.tokenizer, stopTokenIds: o.stopTokenIds, maxBatch: Math.max(o.batch, o.n),
    ...(o.graphs ? { graphs: true, maxContext: Math.max(2, Math.min(maxContext, longest + o.maxTokens)) } : {}),
  });
  try {
    for (const plan of plans) {
      const { bench } = plan;
      const prevTiming = previous?.benchmarks?.[bench.name];
      const timing = { seconds: prevTiming?.seconds ?? 0, tokens: prevTiming?.timed_tokens ?? 0 };
      if (plan.todo.length > 0) {
        const writer = new SampleWriter(samplesPath(o.out, bench.name), plan.file.validBytes);
        const records = plan.file.records;
        let stepStart = 0;
        const tb = performance.now();
        let benchTokens = 0;
        try {
          for (const item of plan.todo) {
            const base = problemSeed(o.seed, item.problem.id);
            const opts = bench.gradeOptions(item.problem);
            // all samples missing: one request, shared prefill; otherwise one request per missing sample,
            // seeded so that its sample 0 draws the stream of sample i (sampleSeed(s, 0) = s for s < 2^32)
            const requests = item.samples.length === o.n
              ? [{ n: o.n, seed: base, index: (i: number) => i }]
              : item.samples.map((i) => ({ n: 1, seed: sampleSeed(base, i), index: () => i }));
            for (const rq of requests) {
              const started = new Map<number, number>();
              // the handle is not kept: its event queue and final output (every response text) would
              // otherwise live until the end of the benchmark; onEvent sees everything needed
              engine.addRequest({
                promptIds: item.prompt, n: rq.n, sampling: o.sampling, maxTokens: o.maxTokens, seed: rq.seed,
                onEvent: (e) => {
                  if (e.type === 'token') {
                    if (!started.has(e.sample)) started.set(e.sample, stepStart);
                    benchTokens++;
                    tokensAll++;
                  } else if (e.type === 'finished') {
                    const sample = rq.index(e.sample);
                    const response = e.output.text ?? '';
                    const g = gradeAnswer(response, item.problem.answer, opts);
                    const rec: SampleRecord = {
                      bench: bench.name, problem_id: item.problem.id, sample, seed: sampleSeed(rq.seed, e.sample), response,
                      extracted: g.extracted, correct: g.correct, reason: g.reason, tokens: e.output.tokenIds.length,
                      seconds: round((performance.now() - (started.get(e.sample) ?? stepStart)) / 1000, 4),
                      finish_reason: e.output.finishReason,
                    };
                    writer.append(rec);
                    records.push({ ...rec, response: '' });
                    done++;
                    o.onProgress?.(done, total, tokensAll, (performance.now() - t0) / 1000);
                  }
                },
              });
            }
          }
          while (engine.hasWork()) {
            stepStart = performance.now();
            engine.step();
            o.onProgress?.(done, total, tokensAll, (performance.now() - t0) / 1000);
            // let signals and timers run between steps (Ctrl-C during a long run)
            if (o.onProgress) await new Promise<void>((resolve) => setImmediate(resolve));
          }
        } finally {
          writer.close();
        }
        timing.seconds += (performance.now() - tb) / 1000;
        timing.tokens += benchTokens;
      }
      const own = plan.file.records.filter((r) => r.bench === bench.name);
      summary.benchmarks[bench.name] = summarizeBenchmark(bench, own, o.ks, {
        nCap: o.n, timing: timing.seconds > 0 ? { seconds: round(timing.seconds, 3), tokens: timing.tokens } : null,
      });
      writeOutputs(o.out, summary);
    }
  } finally {
    engine.dispose(); // its pools and graphs, also when a benchmark fails part-way
  }
  return summary;
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** summary.json and report.html, each written atomically */
export function writeOutputs(out: string, summary: EvalSummary): void {
  writeFileAtomic(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  writeFileAtomic(path.join(out, 'report.html'), renderReport(summary));
}

// ------------------------------------------------------------------ responses mode

/** field spellings accepted for the problem id of a responses line, in order of preference */
export const ID_FIELDS = ['problem_id', 'id', 'idx', 'unique_id', 'question_id', 'index'] as const;
/** field spellings accepted for the response text (a string, or a list of strings = several samples) */
export const RESPONSE_FIELDS = ['response', 'responses', 'output', 'outputs', 'completion', 'completions', 'generated_text', 'model_output', 'text'] as const;

interface ResponseLine {
  line: number;
  id: string;
  /** the id as a non-negative integer, when it is one (for matching by position) */
  index: number | null;
  responses: string[];
  tokens: number | null;
  seconds: number | null;
  finish: string | null;
}

function parseResponseLine(raw: string): Omit<ResponseLine, 'line'> {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw new Error(`invalid JSON (${(e as Error).message})`);
  }
  if (!isRecord(v)) throw new Error('expected a JSON object');
  const idField = ID_FIELDS.find((f) => v[f] !== undefined && v[f] !== null);
  if (idField === undefined) throw new Error(`no problem id: give one of the fields ${ID_FIELDS.map((f) => `"${f}"`).join(', ')}`);
  const idv = v[idField];
  if (typeof idv !== 'string' && typeof idv !== 'number') throw new Error(`field "${idField}" must be a string or a number`);
  const respField = RESPONSE_FIELDS.find((f) => v[f] !== undefined && v[f] !== null);
  if (respField === undefined) throw new Error(`no response: give one of the fields ${RESPONSE_FIELDS.map((f) => `"${f}"`).join(', ')}`);
  const rv = v[respField];
  let responses: string[];
  if (typeof rv === 'string') responses = [rv];
  else if (Array.isArray(rv) && rv.length > 0) {
    // vLLM-style [{text: …}] lists are accepted as well as plain strings
    responses = rv.map((x, i) => {
      if (typeof x === 'string') return x;
      if (isRecord(x) && typeof x.text === 'string') return x.text;
      throw new Error(`field "${respField}"[${i}] must be a string or {"text": string}`);
    });
  } else throw new Error(`field "${respField}" must be a string or a non-empty list of strings`);
  const num = (k: string): number | null => (typeof v[k] === 'number' && Number.isFinite(v[k]) ? (v[k] as number) : null);
  const asIndex = typeof idv === 'number' ? idv : /^\d+$/.test(idv) ? Number(idv) : NaN;
  return {
    id: String(idv), index: Number.isInteger(asIndex) && asIndex >= 0 ? asIndex : null, responses,
    tokens: responses.length === 1 ? num('tokens') ?? num('num_tokens') ?? num('completion_tokens') : null,
    seconds: responses.length === 1 ? num('seconds') ?? num('time') : null,
    finish: responses.length === 1 && typeof v.finish_reason === 'string' ? v.finish_reason : null,
  };
}

export interface ResponsesEvalOptions {
  file: string;
  bench: EvalBenchmark;
  out: string;
  /** null: powers of two up to n, and n */
  ks: number[] | null;
  log?: (msg: string) => void;
}

export interface ResponsesEvalResult {
  summary: EvalSummary;
  /** lines that could not be used (malformed, unknown problem) */
  errors: number;
}

/**
 * Score responses made elsewhere. Lines are matched to problems by id; when some ids are not problem
 * ids but every id is an integer in [0, problems), they are taken as 0-based positions instead (a note
 * says so). Several lines (or a list of responses) per problem are samples 0, 1, … in file order.
 * Bad lines are reported as FILE:LINE and skipped; the rest is scored. Writes OUT/<bench>.graded.jsonl
 * (SampleRecord lines), summary.json and report.html.
 */
export function scoreResponses(o: ResponsesEvalOptions): ResponsesEvalResult {
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  if (!fs.existsSync(o.file)) throw new UserError(`--responses: file not found: ${o.file}`);
  const text = fs.readFileSync(o.file, 'utf8');
  const lines: ResponseLine[] = [];
  let errors = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return;
    try {
      lines.push({ line: i + 1, ...parseResponseLine(line) });
    } catch (e) {
      errors++;
      log(`${o.file}:${i + 1}: ${(e as Error).message}; line skipped`);
    }
  });
  const problems = o.bench.problems;
  const byId = new Map(problems.map((p) => [p.id, p]));
  const unmatched = lines.filter((l) => !byId.has(l.id));
  const byPosition = unmatched.length > 0 && lines.length > 0 && lines.every((l) => l.index !== null && l.index < problems.length);
  if (byPosition) log(`note: ${unmatched.length} ids of ${o.file} are not ${o.bench.name} problem ids, but all ids are integers below ${problems.length}: matching them as 0-based problem positions`);
  const perProblem = new Map<string, number>();
  const records: SampleRecord[] = [];
  for (const l of lines) {
    const problem = byPosition ? problems[l.index!]! : byId.get(l.id);
    if (problem === undefined) {
      errors++;
      log(`${o.file}:${l.line}: problem id "${l.id}" is not in ${o.bench.name}${problems.length > 0 ? ` (ids look like "${problems[0]!.id}")` : ''}; line skipped`);
      continue;
    }
    const opts = o.bench.gradeOptions(problem);
    for (const response of l.responses) {
      const sample = perProblem.get(problem.id) ?? 0;
      perProblem.set(problem.id, sample + 1);
      const g = gradeAnswer(response, problem.answer, opts);
      records.push({
        bench: o.bench.name, problem_id: problem.id, sample, seed: null, response, extracted: g.extracted, correct: g.correct,
        reason: g.reason, tokens: l.tokens, seconds: l.seconds, finish_reason: l.finish,
      });
    }
  }
  fs.mkdirSync(o.out, { recursive: true });
  writeFileAtomic(path.join(o.out, `${o.bench.name}.graded.jsonl`), records.map((r) => JSON.stringify(r) + '\n').join(''));
  const s = summarizeBenchmark(o.bench, records, o.ks);
  if (s.problems < s.problems_total) {
    log(`warning: ${s.problems_total - s.problems} of ${s.problems_total} ${o.bench.name} problems have no response (e.g. "${s.missing_problems[0]}"); the metrics are over the ${s.problems} that do`);
  }
  const summary: EvalSummary = {
    created: new Date().toISOString(), mode: 'responses', source: path.resolve(o.file),
    config: { bench: o.bench.name, k: Object.keys(s['pass@k']).map(Number), lines: lines.length, bad_lines: errors }, benchmarks: { [o.bench.name]: s },
  };
  writeOutputs(o.out, summary);
  return { summary, errors };
}
