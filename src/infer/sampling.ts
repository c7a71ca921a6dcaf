// Token sampling from a logits row: greedy, temperature, top-k, top-p (nucleus), min-p.
//
// Order of the filters (vLLM / Hugging Face order): temperature → top-k → top-p → min-p, each on the
// distribution the previous one left (renormalised). All three keep a prefix of the tokens sorted by
// probability, so the result is the shortest of the three prefixes, with top-p's cumulative mass
// measured over the top-k survivors.
//
// Randomness: the sampler never owns an RNG. The engine draws one uniform u ∈ [0, 1) per sampled
// token from the sequence's own seeded Rng, so a sequence's tokens depend on its seed and logits only,
// whatever else is in the batch, and a GPU sampler can take the same uniforms and give the same tokens.
//
// Logprobs: the returned logprob of the chosen token is log-softmax of the UNMODIFIED logits (before
// temperature and the filters), i.e. log p_model(token | context). That is what RL (GRPO importance
// ratios) and scoring need, and what vLLM returns by default ("raw_logprobs").
//
// Top-logprobs: a row may also ask for its k most likely alternatives (k ≤ MAX_TOP_LOGPROBS), under the
// same unmodified distribution, best first, ties to the lower token id. They come from one pass of
// partial selection over the row (a k-slot insertion list), never a sort of the vocabulary, and the
// chosen token's logprob is computed with the same normaliser, so when it is among the alternatives the
// two numbers are bit-identical.
//
// Where it runs: RowSampler (src/backend/cpu/sampling.ts, re-exported here) is the definition, one row
// at a time in f64. The engine's default sampler is a DeviceSampler when the backend has `sampleRows`
// (every row of a step sampled by the backend: on the GPU, n ids and n logprobs come back instead of
// n × V logits, with the same tokens for the same uniforms), else a HostSampler (logits read back,
// RowSampler per row). Both hand all-greedy steps to the backend's argmaxRows and steps where a row
// asks for top-logprobs to the host path.
import type { Backend, SampleRowsArgs } from '../backend/backend.js';
import { isGreedy, logNormaliser, logprobOf, RowSampler, type SamplingParams } from '../backend/cpu/sampling.js';
import type { Tensor } from '../backend/tensor.js';
import { UserError } from '../util/errors.js';

export { argmax, isGreedy, logprobOf, RowSampler, type SamplingParams } from '../backend/cpu/sampling.js';

export const DEFAULT_SAMPLING: Readonly<SamplingParams> = Object.freeze({ temperature: 1, topP: 1, topK: -1, minP: 0 });
export const GREEDY: Readonly<SamplingParams> = Object.freeze({ temperature: 0, topP: 1, topK: -1, minP: 0 });

/** fill in defaults and check every field; errors name the field as the API user wrote it */
export function samplingParams(p: Partial<SamplingParams> = {}): SamplingParams {
  const s: SamplingParams = { ...DEFAULT_SAMPLING, ...stripUndefined(p) };
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!num(s.temperature) || s.temperature < 0) throw new UserError(`sampling: temperature must be a finite number ≥ 0, got ${String(s.temperature)}`);
  if (!num(s.topP) || !(s.topP > 0 && s.topP <= 1)) throw new UserError(`sampling: top_p must be in (0, 1], got ${String(s.topP)}`);
  if (!Number.isInteger(s.topK) || s.topK < -1) throw new UserError(`sampling: top_k must be an integer ≥ -1 (-1 or 0 = off), got ${String(s.topK)}`);
  if (!num(s.minP) || s.minP < 0 || s.minP > 1) throw new UserError(`sampling: min_p must be in [0, 1], got ${String(s.minP)}`);
  return s;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** most alternatives per generated token a request may ask for (OpenAI's limit for chat) */
export const MAX_TOP_LOGPROBS = 20;

/**
 * The k largest entries of row, best first, ties to the lower index, written to ids[0..k) (k ≤ row
 * length). Partial selection: a sorted list of the k best so far; an entry enters only when it beats
 * the k-th, which after the first few hundred entries almost none do, so this is O(V) in practice and
 * O(V·k) at worst (k ≤ 20), with no vocabulary-sized scratch.
 */
export function topKIndices(row: ArrayLike<number>, k: number, ids: Int32Array): void {
  if (!(Number.isInteger(k) && k >= 0 && k <= row.length)) throw new Error(`topKIndices: k = ${k} is outside [0, ${row.length}]`);
  if (ids.length < k) throw new Error(`topKIndices: ids holds ${ids.length} entries, k is ${k}`);
  if (k === 0) return;
  let filled = 0;
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    // strictly greater: an equal value with a higher id never displaces the earlier one
    if (filled === k && !(v > row[ids[k - 1]!]!)) continue;
    let j = filled < k ? filled++ : k - 1;
    // shift down everything strictly worse; ids scanned earlier that tie with v stay ahead of it
    while (j > 0 && row[ids[j - 1]!]! < v) {
      ids[j] = ids[j - 1]!;
      j--;
    }
    ids[j] = i;
  }
}

/** one row of a sampling batch: its parameters and the uniform drawn from the sequence's own Rng */
export interface SampleRow {
  params: SamplingParams;
  /** in [0, 1); ignored for greedy rows */
  uniform: number;
  /** the logits row to sample from (n samples of one prompt share the prefill's row) */
  logitsRow: number;
  /** alternatives to report for this row, in [0, MAX_TOP_LOGPROBS]; default 0 */
  topLogprobs?: number;
}

/**
 * Where a sampler writes one step's results for n rows. Row i's alternatives (when rows[i] asks for
 * k > 0) are topIds / topLogprobs[i · MAX_TOP_LOGPROBS + j] for j < k, best first; the other entries
 * are left as they were. topIds / topLogprobs may be left out when no row asks.
 */
export interface SampleOut {
  /** [n] chosen token ids */
  tokens: Int32Array;
  /** [n] log p(token) under the unmodified logits */
  logprobs: Float32Array;
  /** [n, MAX_TOP_LOGPROBS] */
  topIds?: Int32Array;
  /** [n, MAX_TOP_LOGPROBS] */
  topLogprobs?: Float32Array;
}

/** the number of alternatives row i asks for, checked */
function topCount(rows: readonly SampleRow[], i: number): number {
  const k = rows[i]!.topLogprobs ?? 0;
  if (!(Number.isInteger(k) && k >= 0 && k <= MAX_TOP_LOGPROBS)) {
    throw new Error(`sampler: rows[${i}].topLogprobs = ${String(k)} is not an integer in [0, ${MAX_TOP_LOGPROBS}]`);
  }
  return k;
}

/**
 * Picks the next token of every row of logits [n, V] and its logprob (log-softmax of the unmodified
 * logits), plus the top alternatives where a row asks. The engine talks to this interface only, so a
 * GPU backend can sample on the device and copy back n ids and n logprobs instead of n × V logits.
 */
export interface TokenSampler {
  sample(logits: Tensor, rows: readonly SampleRow[], out: SampleOut): void;
}

/**
 * Samples on the host (the CPU reference). When every row of a step is greedy and none asks for
 * alternatives it asks the backend for the argmax instead (`argmaxRows`), so a GPU backend copies back
 * 2·n numbers, not n × V logits; both paths take the first maximum and the logprob of the unmodified
 * distribution. A step where some row asks for alternatives reads the logits back and does everything
 * on the host; its tokens are the same either way, since neither the uniforms nor the filters depend
 * on it.
 */
export class HostSampler implements TokenSampler {
  private readonly rowSampler: RowSampler;
  private readonly topScratch = new Int32Array(MAX_TOP_LOGPROBS);
  constructor(private readonly be: Backend, readonly vocabSize: number) {
    this.rowSampler = new RowSampler(vocabSize);
  }
  sample(logits: Tensor, rows: readonly SampleRow[], out: SampleOut): void {
    const V = this.vocabSize, n = rows.length, S = MAX_TOP_LOGPROBS;
    const numRows = logits.size / V;
    if (!Number.isInteger(numRows)) throw new Error(`sampler: logits have ${logits.size} values, not a multiple of the vocabulary ${V}`);
    const checkRow = (i: number): number => {
      const r = rows[i]!.logitsRow;
      if (!(Number.isInteger(r) && r >= 0 && r < numRows)) throw new Error(`sampler: rows[${i}].logitsRow = ${r} is outside [0, ${numRows})`);
      return r;
    };
    let anyTop = false;
    for (let i = 0; i < n; i++) if (topCount(rows, i) > 0) anyTop = true;
    if (anyTop) {
      const need = n * S;
      if (!out.topIds || !out.topLogprobs || out.topIds.length < need || out.topLogprobs.length < need) {
        throw new Error(`sampler: a row asks for top-logprobs but out.topIds / out.topLogprobs do not hold [${n}, ${S}] entries`);
      }
    }
    if (!anyTop && rows.every((r) => isGreedy(r.params))) {
      const { ids, logprobs } = onRows(this.be, logits, numRows, V, (view) => this.be.argmaxRows(view));
      for (let i = 0; i < n; i++) {
        const r = checkRow(i);
        out.tokens[i] = ids[r]!;
        out.logprobs[i] = logprobs[r]!;
      }
      return;
    }
    const host = this.be.read(logits);
    const top = this.topScratch;
    for (let i = 0; i < n; i++) {
      const r = checkRow(i);
      const row = host.subarray(r * V, (r + 1) * V);
      const tok = this.rowSampler.sample(row, rows[i]!.params, rows[i]!.uniform);
      out.tokens[i] = tok;
      const k = Math.min(topCount(rows, i), V);
      if (k === 0) {
        out.logprobs[i] = logprobOf(row, tok);
        continue;
      }
      // one normaliser for the chosen token and its alternatives, so the same token gets the same number
      const { max, logSum } = logNormaliser(row);
      out.logprobs[i] = row[tok]! - max - logSum;
      topKIndices(row, k, top);
      for (let j = 0; j < k; j++) {
        out.topIds![i * S + j] = top[j]!;
        out.topLogprobs![i * S + j] = row[top[j]!]! - max - logSum;
      }
    }
  }
}

/**
 * Samples on the backend: every row of a step through `Backend.sampleRows` (on the GPU: n ids and n
 * logprobs copied back instead of n × V logits), with the tokens of RowSampler for the same uniforms.
 * All-greedy steps and steps where a row asks for top-logprobs go to a HostSampler (its argmaxRows
 * path, or the logits read back). `fallbackRows` counts the rows the backend declined to sample on the
 * device and computed on the host (same tokens; only slower).
 */
export class DeviceSampler implements TokenSampler {
  private readonly host: HostSampler;
  /** rows of all steps so far that the backend could not sample on the device and computed on the host */
  fallbackRows = 0;
  /** steps sampled through sampleRows */
  deviceSteps = 0;
  private cap = 0;
  private args: SampleRowsArgs = {
    logitsRow: new Int32Array(0), temperature: new Float64Array(0), topP: new Float64Array(0), topK: new Int32Array(0),
    minP: new Float64Array(0), uniform: new Float64Array(0),
  };
  constructor(private readonly be: Backend, readonly vocabSize: number) {
    if (!be.sampleRows) throw new Error(`DeviceSampler: the ${be.name} backend has no sampleRows`);
    this.host = new HostSampler(be, vocabSize);
  }
  sample(logits: Tensor, rows: readonly SampleRow[], out: SampleOut): void {
    const V = this.vocabSize, n = rows.length;
    let anyTop = false, allGreedy = true;
    for (let i = 0; i < n; i++) {
      if (topCount(rows, i) > 0) anyTop = true;
      if (!isGreedy(rows[i]!.params)) allGreedy = false;
    }
    if (anyTop || allGreedy) {
      this.host.sample(logits, rows, out);
      return;
    }
    const numRows = logits.size / V;
    if (!Number.isInteger(numRows)) throw new Error(`sampler: logits have ${logits.size} values, not a multiple of the vocabulary ${V}`);
    if (n > this.cap) {
      // grown by doubling and viewed with subarray: a step allocates no batch-sized parameter arrays
      this.cap = Math.max(n, 2 * this.cap);
      const c = this.cap;
      this.args = {
        logitsRow: new Int32Array(c), temperature: new Float64Array(c), topP: new Float64Array(c), topK: new Int32Array(c),
        minP: new Float64Array(c), uniform: new Float64Array(c),
      };
    }
    const b = this.args;
    const a: SampleRowsArgs = {
      logitsRow: b.logitsRow.subarray(0, n), temperature: b.temperature.subarray(0, n), topP: b.topP.subarray(0, n),
      topK: b.topK.subarray(0, n), minP: b.minP.subarray(0, n), uniform: b.uniform.subarray(0, n),
    };
    for (let i = 0; i < n; i++) {
      const row = rows[i]!, p = row.params;
      const r = row.logitsRow;
      if (!(Number.isInteger(r) && r >= 0 && r < numRows)) throw new Error(`sampler: rows[${i}].logitsRow = ${r} is outside [0, ${numRows})`);
      a.logitsRow[i] = r;
      a.temperature[i] = p.temperature;
      a.topP[i] = p.topP;
      a.topK[i] = p.topK;
      a.minP[i] = p.minP;
      // greedy rows draw nothing (the engine passes 0); the backend ignores their uniform
      a.uniform[i] = isGreedy(p) ? 0 : row.uniform;
    }
    const res = onRows(this.be, logits, numRows, V, (view) => this.be.sampleRows!(view, a));
    for (let i = 0; i < n; i++) {
      out.tokens[i] = res.ids[i]!;
      out.logprobs[i] = res.logprobs[i]!;
    }
    this.fallbackRows += res.fallbackRows;
    this.deviceSteps++;
  }
}

/**
 * fn on logits viewed [numRows, V]; the view is disposed after (a device view holds the logits' block, a
 * graph's output say, until the garbage collector runs)
 */
function onRows<R>(be: Backend, logits: Tensor, numRows: number, V: number, fn: (view: Tensor) => R): R {
  const view = be.reshape(logits, [numRows, V]);
  try {
    return fn(view);
  } finally {
    view.dispose();
  }
}

/** the engine's default: a DeviceSampler when the backend can sample (`sampleRows`), else a HostSampler */
export function defaultSampler(be: Backend, vocabSize: number): TokenSampler {
  return be.sampleRows ? new DeviceSampler(be, vocabSize) : new HostSampler(be, vocabSize);
}
