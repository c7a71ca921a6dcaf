// The definition of token sampling from one logits row (greedy, temperature, top-k, top-p, min-p; the
// order and semantics are documented at the top of src/infer/sampling.ts, which re-exports all of this).
// It lives with the CPU backend because it is also the definition of the backend op `sampleRows`: the
// CPU backend runs it as is, the CUDA backend matches it on the device and runs it for the rows its
// kernels decline. Pure functions of the row, the parameters and the uniform; no backend, no RNG.
import type { SampleRowsArgs } from '../backend.js';

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

export function isGreedy(p: SamplingParams): boolean {
  return p.temperature === 0;
}

/** argmax, lowest index on ties */
export function argmax(row: ArrayLike<number>): number {
  let best = 0, bestV = row[0]!;
  for (let i = 1; i < row.length; i++) if (row[i]! > bestV) { bestV = row[i]!; best = i; }
  return best;
}

/** the normaliser of log-softmax, as (max, log Σ exp(x − max)) in f64; logprob(i) = row[i] − max − logSum */
export function logNormaliser(row: ArrayLike<number>): { max: number; logSum: number } {
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

/** output row i of a SampleRowsArgs as SamplingParams */
export function rowParams(a: SampleRowsArgs, i: number): SamplingParams {
  return { temperature: a.temperature[i]!, topP: a.topP[i]!, topK: a.topK[i]!, minP: a.minP[i]! };
}

/**
 * sampleRows by the definition, for the output rows `which` (all when omitted): ids[i] from
 * RowSampler.sample, logprobs[i] = log-softmax of the unmodified row at that id (f64, stored as f32).
 * `rowOf(r)` returns logits row r.
 */
export function sampleRowsByDefinition(
  sampler: RowSampler, rowOf: (r: number) => ArrayLike<number>, a: SampleRowsArgs,
  ids: Int32Array, logprobs: Float32Array, which?: Iterable<number>,
): void {
  const todo = which ?? Array.from({ length: a.logitsRow.length }, (_, i) => i);
  for (const i of todo) {
    const row = rowOf(a.logitsRow[i]!);
    const tok = sampler.sample(row, rowParams(a, i), a.uniform[i]!);
    ids[i] = tok;
    logprobs[i] = logprobOf(row, tok);
  }
}
