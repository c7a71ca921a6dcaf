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
import type { Backend } from '../backend/backend.js';
import type { Tensor } from '../backend/tensor.js';
import { UserError } from '../util/errors.js';

export interface SamplingParams {
  /** 0 = greedy (argmax, lowest id on ties); otherwise logits are divided by it */
  temperature: number;
  /** nucleus: keep the smallest set of most likely tokens whose mass reaches topP; 1 = off */
  topP: number;
  /** keep the topK most likely tokens; -1 or 0 = off */
  topK: number;
  /** drop tokens with p < minP · p_max; 0 = off */
  minP: number;
}

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

export function isGreedy(p: SamplingParams): boolean {
  return p.temperature === 0;
}

/** argmax, lowest index on ties */
export function argmax(row: ArrayLike<number>): number {
  let best = 0, bestV = row[0]!;
  for (let i = 1; i < row.length; i++) if (row[i]! > bestV) { bestV = row[i]!; best = i; }
  return best;
}

/** most alternatives per generated token a request may ask for (OpenAI's limit for chat) */
export const MAX_TOP_LOGPROBS = 20;

/** the normaliser of log-softmax, as (max, log Σ exp(x − max)) in f64; logprob(i) = row[i] − max − logSum */
function logNormaliser(row: ArrayLike<number>): { max: number; logSum: number } {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > m) m = row[i]!;
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i]! - m);
  return { max: m, logSum: Math.log(s) };
}

/** log-softmax of one row at one index, in f64 */
export function logprobOf(row: ArrayLike<number>, index: number): number {
  const { max, logSum } = logNormaliser(row);
  return row[index]! - max - logSum;
}

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

/**
 * Samples one row at a time with reusable scratch buffers (no per-token allocation of vocabulary-sized
 * arrays). `keep` holds the surviving token ids, `weight` their unnormalised probabilities.
 */
export class RowSampler {
  private weight: Float64Array;
  private order: Int32Array;
  constructor(readonly vocabSize: number) {
    this.weight = new Float64Array(vocabSize);
    this.order = new Int32Array(vocabSize);
  }

  /**
   * The filtered distribution: after this, order[0..count) are the kept ids (descending probability when
   * a filter is on, id order otherwise) and weight[id] their unnormalised probabilities; returns
   * {count, total} with total = Σ weight over the kept ids.
   */
  private filter(row: ArrayLike<number>, p: SamplingParams): { count: number; total: number } {
    const V = this.vocabSize, w = this.weight, order = this.order;
    if (row.length !== V) throw new Error(`sampling: logits row has ${row.length} entries, vocabulary is ${V}`);
    let m = -Infinity;
    for (let i = 0; i < V; i++) if (row[i]! > m) m = row[i]!;
    if (!Number.isFinite(m)) throw new Error(`sampling: logits row has no finite maximum (${m})`);
    const invT = 1 / p.temperature;
    let sum = 0;
    for (let i = 0; i < V; i++) {
      const e = Math.exp((row[i]! - m) * invT);
      w[i] = e;
      sum += e;
    }
    const topK = p.topK > 0 && p.topK < V ? p.topK : V;
    const topP = p.topP;
    // after temperature the most likely token has weight exp(0) = 1, so min-p's threshold is minP itself
    const minW = p.minP;
    if (topK === V && topP >= 1 && minW <= 0) {
      for (let i = 0; i < V; i++) order[i] = i;
      return { count: V, total: sum };
    }
    // Candidates: every filter keeps a prefix of the sorted order, so tokens below each cut can be
    // dropped before sorting. For top-p without top-k, tokens with weight < (1 − topP)/V · sum together
    // hold less than 1 − topP of the mass, so the nucleus never reaches them.
    let cut = minW;
    if (topK === V && topP < 1) cut = Math.max(cut, ((1 - topP) / V) * sum);
    let count = 0;
    for (let i = 0; i < V; i++) if (w[i]! >= cut) order[count++] = i;
    const sorted = order.subarray(0, count).sort((a, b) => w[b]! - w[a]! || a - b);
    count = Math.min(count, topK);
    // top-p's mass is relative to what top-k left
    let zTopK = sum;
    if (topK < V) {
      // the k largest are a prefix of `sorted` unless min-p cut into them; then sum the k largest directly
      zTopK = 0;
      if (sorted.length >= topK) for (let j = 0; j < topK; j++) zTopK += w[sorted[j]!]!;
      else zTopK = kLargestSum(w, V, topK);
    }
    if (topP < 1) {
      const target = topP * zTopK;
      let cum = 0;
      for (let j = 0; j < count; j++) {
        cum += w[sorted[j]!]!;
        if (cum >= target) { count = j + 1; break; }
      }
    }
    let total = 0;
    for (let j = 0; j < count; j++) total += w[sorted[j]!]!;
    return { count, total };
  }

  /** the normalised filtered distribution over the whole vocabulary (zeros where masked); for tests and tools */
  distribution(row: ArrayLike<number>, p: SamplingParams): Float64Array {
    const out = new Float64Array(this.vocabSize);
    if (isGreedy(p)) {
      out[argmax(row)] = 1;
      return out;
    }
    const { count, total } = this.filter(row, p);
    for (let j = 0; j < count; j++) {
      const id = this.order[j]!;
      out[id] = this.weight[id]! / total;
    }
    return out;
  }

  /** one token from row with uniform u ∈ [0, 1) (ignored when greedy) */
  sample(row: ArrayLike<number>, p: SamplingParams, u: number): number {
    if (isGreedy(p)) return argmax(row);
    const { count, total } = this.filter(row, p);
    const target = u * total;
    let cum = 0;
    for (let j = 0; j < count; j++) {
      const id = this.order[j]!;
      cum += this.weight[id]!;
      if (cum > target) return id;
    }
    // rounding can leave target a hair above the last partial sum
    return this.order[count - 1]!;
  }
}

function kLargestSum(w: Float64Array, V: number, k: number): number {
  const copy = Float64Array.from(w.subarray(0, V)).sort();
  let s = 0;
  for (let j = V - k; j < V; j++) s += copy[j]!;
  return s;
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
      const { ids, logprobs } = this.be.argmaxRows(this.be.reshape(logits, [numRows, V]));
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
