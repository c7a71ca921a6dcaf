// CPU reference of the training ops: the two online-softmax passes of the fused LM-head losses and
// the AdamW update. Per-row sums run in f64: a vocabulary chunk can be thousands of columns wide.
import { roundToDType } from '../dtype.js';
import type { DType } from '../tensor.js';

export interface ChunkArgs {
  /** [R, Vc] raw logits of the chunk */
  logits: Float32Array;
  R: number;
  Vc: number;
  scale: number;
  vocabOffset: number;
  targets: Int32Array | null;
  /** [R, Vc] or null */
  other: Float32Array | null;
}

/** pass 1: merge the chunk into stats [R, 4] = (m, s, w, zt); see Backend.softmaxChunkStats */
export function softmaxChunkStats(a: ChunkArgs, stats: Float32Array): void {
  const { logits, R, Vc, scale, vocabOffset, targets, other } = a;
  for (let i = 0; i < R; i++) {
    const row = i * Vc;
    let chunkMax = -Infinity;
    for (let v = 0; v < Vc; v++) chunkMax = Math.max(chunkMax, scale * logits[row + v]!);
    const m0 = stats[4 * i]!;
    const m = Math.max(m0, chunkMax);
    // rescale what earlier chunks accumulated to the new max (exp(−inf) = 0 on the first chunk)
    const rescale = m0 === -Infinity ? 0 : Math.exp(m0 - m);
    let s = 0, w = 0;
    for (let v = 0; v < Vc; v++) {
      const z = scale * logits[row + v]!;
      const e = Math.exp(z - m);
      s += e;
      w += e * (other ? z - other[row + v]! : z);
    }
    stats[4 * i] = m;
    stats[4 * i + 1] = stats[4 * i + 1]! * rescale + s;
    stats[4 * i + 2] = stats[4 * i + 2]! * rescale + w;
    if (targets) {
      const c = targets[i]! - vocabOffset;
      if (c >= 0 && c < Vc) stats[4 * i + 3] = scale * logits[row + c]!;
    }
  }
}

/** pass 2: dlogits [R, Vc] from coefs [R, 4] = (lse, c0, c2, ct); see Backend.softmaxChunkGrad */
export function softmaxChunkGrad(a: ChunkArgs, coefs: Float32Array): Float32Array {
  const { logits, R, Vc, scale, vocabOffset, targets, other } = a;
  const out = new Float32Array(R * Vc);
  for (let i = 0; i < R; i++) {
    const row = i * Vc;
    const lse = coefs[4 * i]!, c0 = coefs[4 * i + 1]!, c2 = coefs[4 * i + 2]!, ct = coefs[4 * i + 3]!;
    for (let v = 0; v < Vc; v++) {
      const z = scale * logits[row + v]!;
      const p = Math.exp(z - lse);
      const d = other ? z - other[row + v]! : z;
      out[row + v] = scale * p * (c0 + c2 * d);
    }
    if (targets && ct !== 0) {
      const c = targets[i]! - vocabOffset;
      if (c >= 0 && c < Vc) out[row + c]! += scale * ct;
    }
  }
  return out;
}

export interface AdamWArrays {
  param: Float32Array; paramDType: DType; grad: Float32Array; m: Float32Array; v: Float32Array; master: Float32Array | null;
}

/** in-place AdamW; see Backend.adamwStep */
export function adamwStep(t: AdamWArrays, h: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number }): void {
  const { grad, m, v } = t;
  const w = t.master ?? t.param;
  const n = w.length;
  if (grad.length !== n || m.length !== n || v.length !== n || t.param.length !== n) {
    throw new Error(`adamwStep: sizes differ (param ${t.param.length}, grad ${grad.length}, m ${m.length}, v ${v.length}, master ${w.length})`);
  }
  if (!(h.step >= 1)) throw new Error(`adamwStep: step must be ≥ 1 (1-based), got ${h.step}`);
  const bc1 = 1 - Math.pow(h.beta1, h.step);
  const sqrtBc2 = Math.sqrt(1 - Math.pow(h.beta2, h.step));
  const stepSize = h.lr / bc1;
  const decay = 1 - h.lr * h.weightDecay;
  const b1 = h.beta1, b2 = h.beta2, eps = h.eps;
  for (let i = 0; i < n; i++) {
    const g = grad[i]!;
    const mi = b1 * m[i]! + (1 - b1) * g;
    const vi = b2 * v[i]! + (1 - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    // f32 round trips mirror PyTorch's in-place f32 ops closely enough; the master copy is what is exact
    w[i] = w[i]! * decay - stepSize * m[i]! / (Math.sqrt(v[i]!) / sqrtBc2 + eps);
  }
  if (t.master) {
    t.param.set(t.master);
    roundToDType(t.param, t.paramDType);
  }
}
