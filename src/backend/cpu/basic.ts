// Elementwise, layout, embedding, norm, MLP and logits ops of the CPU backend.
import { dataOf } from './tensor.js';
import type { Tensor } from '../tensor.js';

export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}
/** d silu(x)/dx = σ(x)(1 + x(1 − σ(x))) */
export function siluGrad(x: number): number {
  const s = 1 / (1 + Math.exp(-x));
  return s * (1 + x * (1 - s));
}
/** softplus with PyTorch/mamba's threshold: x when x > 20 */
export function softplus(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}

export function lastDim(t: Tensor): number {
  const d = t.shape[t.shape.length - 1];
  if (d === undefined) throw new Error('expected a tensor with at least one dimension');
  return d;
}

export function splitLastDim(x: Float32Array, width: number, sizes: readonly number[]): Float32Array[] {
  const total = sizes.reduce((s, v) => s + v, 0);
  if (total !== width) throw new Error(`splitLastDim: sizes sum to ${total}, last dimension is ${width}`);
  const rows = x.length / width;
  const outs = sizes.map((s) => new Float32Array(rows * s));
  for (let r = 0; r < rows; r++) {
    let off = r * width;
    for (let i = 0; i < sizes.length; i++) {
      const s = sizes[i]!;
      outs[i]!.set(x.subarray(off, off + s), r * s);
      off += s;
    }
  }
  return outs;
}

export function concatLastDim(xs: readonly Float32Array[], widths: readonly number[], rows: number): Float32Array {
  const width = widths.reduce((s, v) => s + v, 0);
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    let off = r * width;
    for (let i = 0; i < xs.length; i++) {
      const w = widths[i]!;
      out.set(xs[i]!.subarray(r * w, r * w + w), off);
      off += w;
    }
  }
  return out;
}

export function repeatGroups(x: Float32Array, inWidth: number, width: number, repeat: number): Float32Array {
  if (inWidth % width !== 0) throw new Error(`repeatGroups: last dim ${inWidth} is not a multiple of group width ${width}`);
  const groups = inWidth / width;
  const rows = x.length / inWidth;
  const outWidth = inWidth * repeat;
  const out = new Float32Array(rows * outWidth);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups * repeat; g++) {
      const src = r * inWidth + Math.floor(g / repeat) * width;
      out.set(x.subarray(src, src + width), r * outWidth + g * width);
    }
  }
  return out;
}

export function repeatGroupsBackward(dy: Float32Array, outWidth: number, width: number, repeat: number): Float32Array {
  const inWidth = outWidth / repeat;
  if (!Number.isInteger(inWidth) || inWidth % width !== 0) {
    throw new Error(`repeatGroupsBackward: last dim ${outWidth} does not hold groups of ${width} × ${repeat}`);
  }
  const rows = dy.length / outWidth;
  const dx = new Float32Array(rows * inWidth);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < (inWidth / width) * repeat; g++) {
      const dst = r * inWidth + Math.floor(g / repeat) * width;
      const src = r * outWidth + g * width;
      for (let i = 0; i < width; i++) dx[dst + i]! += dy[src + i]!;
    }
  }
  return dx;
}

export function embedding(table: Float32Array, V: number, D: number, ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length * D);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= V) throw new Error(`embedding: token id ${id} at position ${i} is outside the vocabulary [0, ${V})`);
    out.set(table.subarray(id * D, id * D + D), i * D);
  }
  return out;
}

export function embeddingBackward(dTable: Float32Array, D: number, ids: Int32Array, dy: Float32Array): void {
  for (let i = 0; i < ids.length; i++) {
    const row = ids[i]! * D;
    for (let j = 0; j < D; j++) dTable[row + j]! += dy[i * D + j]!;
  }
}

export function rmsNorm(x: Float32Array, w: Float32Array, D: number, eps: number): { y: Float32Array; rstd: Float32Array } {
  const rows = x.length / D;
  const y = new Float32Array(x.length);
  const rstd = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    let ss = 0;
    for (let j = 0; j < D; j++) ss += x[o + j]! * x[o + j]!;
    const rs = 1 / Math.sqrt(ss / D + eps);
    rstd[r] = rs;
    for (let j = 0; j < D; j++) y[o + j] = x[o + j]! * rs * w[j]!;
  }
  return { y, rstd };
}

export function rmsNormBackward(
  dy: Float32Array, x: Float32Array, w: Float32Array, rstd: Float32Array, D: number,
): { dx: Float32Array; dw: Float32Array } {
  const rows = x.length / D;
  const dx = new Float32Array(x.length);
  const dw = new Float32Array(D);
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    const rs = rstd[r]!;
    // y = x·rs·w ; dx = rs·(dy·w) − rs³/D · x · Σ(dy·w·x)
    let dot = 0;
    for (let j = 0; j < D; j++) {
      const g = dy[o + j]! * w[j]!;
      dot += g * x[o + j]!;
      dw[j]! += dy[o + j]! * x[o + j]! * rs;
    }
    const k = (dot * rs * rs * rs) / D;
    for (let j = 0; j < D; j++) dx[o + j] = dy[o + j]! * w[j]! * rs - x[o + j]! * k;
  }
  return { dx, dw };
}

export function swiglu(gate: Float32Array, up: Float32Array): Float32Array {
  const h = new Float32Array(gate.length);
  for (let i = 0; i < h.length; i++) h[i] = silu(gate[i]!) * up[i]!;
  return h;
}

export function swigluBackward(dh: Float32Array, gate: Float32Array, up: Float32Array): { dGate: Float32Array; dUp: Float32Array } {
  const dGate = new Float32Array(gate.length);
  const dUp = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    dUp[i] = dh[i]! * silu(g);
    dGate[i] = dh[i]! * up[i]! * siluGrad(g);
  }
  return { dGate, dUp };
}

export function logSoftmax(x: Float32Array, V: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += V) {
    let mx = -Infinity;
    for (let j = 0; j < V; j++) if (x[o + j]! > mx) mx = x[o + j]!;
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(x[o + j]! - mx);
    const lse = mx + Math.log(s);
    for (let j = 0; j < V; j++) out[o + j] = x[o + j]! - lse;
  }
  return out;
}

export function gatherLogprobs(x: Float32Array, V: number, targets: Int32Array): Float32Array {
  const rows = x.length / V;
  if (targets.length !== rows) throw new Error(`gatherLogprobs: ${targets.length} targets for ${rows} rows`);
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    const t = targets[r]!;
    if (t < 0 || t >= V) throw new Error(`gatherLogprobs: target ${t} at row ${r} is outside [0, ${V})`);
    let mx = -Infinity;
    for (let j = 0; j < V; j++) if (x[o + j]! > mx) mx = x[o + j]!;
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(x[o + j]! - mx);
    out[r] = x[o + t]! - mx - Math.log(s);
  }
  return out;
}

export function crossEntropy(
  x: Float32Array, V: number, targets: Int32Array, mask?: Uint8Array,
): { loss: number; dlogits: Float32Array } {
  const rows = x.length / V;
  if (targets.length !== rows) throw new Error(`crossEntropy: ${targets.length} targets for ${rows} rows`);
  if (mask && mask.length !== rows) throw new Error(`crossEntropy: mask has ${mask.length} entries for ${rows} rows`);
  const dl = new Float32Array(x.length);
  let count = 0;
  for (let r = 0; r < rows; r++) if (!mask || mask[r]) count++;
  if (count === 0) return { loss: 0, dlogits: dl };
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    if (mask && !mask[r]) continue;
    const o = r * V;
    const t = targets[r]!;
    if (t < 0 || t >= V) throw new Error(`crossEntropy: target ${t} at row ${r} is outside [0, ${V})`);
    let mx = -Infinity;
    for (let j = 0; j < V; j++) if (x[o + j]! > mx) mx = x[o + j]!;
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(x[o + j]! - mx);
    const lse = mx + Math.log(s);
    loss += lse - x[o + t]!;
    for (let j = 0; j < V; j++) dl[o + j] = Math.exp(x[o + j]! - lse) / count;
    dl[o + t]! -= 1 / count;
  }
  return { loss: loss / count, dlogits: dl };
}

export function check(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

export { dataOf };
