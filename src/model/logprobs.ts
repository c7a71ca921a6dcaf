import { plainSeqInfo } from './module.js';
import type { CausalLM } from './model.js';

/**
 * log p(ids[i] | ids[<i]) for i = 1..n-1, from one parallel forward. The LM head runs over chunks
 * of rows so that [tokens × vocab] logits never exist at once.
 */
export function scoreLogprobs(model: CausalLM, ids: number[], chunkRows = 256): Float32Array {
  const be = model.be;
  const T = ids.length;
  const out = new Float32Array(Math.max(0, T - 1));
  if (T < 2) return out;
  const V = model.vocabSize;
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`token id ${id} is outside the vocabulary [0, ${V})`);
  }
  const { hidden } = model.forward(Int32Array.from(ids), plainSeqInfo(1, T));
  const D = model.hiddenSize;
  const h = be.read(hidden);
  for (let r0 = 0; r0 < T - 1; r0 += chunkRows) {
    const r1 = Math.min(T - 1, r0 + chunkRows);
    const rows = be.fromArray(h.subarray(r0 * D, r1 * D), [r1 - r0, D]);
    const logits = model.logits(rows);
    const lp = be.gatherLogprobs(logits, Int32Array.from(ids.slice(r0 + 1, r1 + 1)));
    out.set(lp, r0);
    logits.dispose();
    rows.dispose();
  }
  return out;
}
