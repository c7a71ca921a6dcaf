// RoPE, causal GQA attention (forward/backward), paged KV cache write and decode attention.
//
// Loop order: attention works per (row b, kv head g). The K and V rows of that head are gathered
// once into contiguous [T, Dh] panels, then every q head of the group streams its queries past
// them, so the inner dot products read contiguous memory instead of striding over Hkv·Dh.
import { roundToDType } from '../dtype.js';
import { shapeString, type Tensor } from '../tensor.js';
import { dataOf } from './tensor.js';
import type { CpuBackend } from './index.js';
import { runTasksParallel } from './parallel.js';

const NO_SEGMENTS = new Int32Array(0);

function dotRow(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i]! * b[bo + i]!;
  return s;
}

function lastTwoDims(t: Tensor, what: string): [number, number] {
  const r = t.shape.length;
  if (r < 2) throw new Error(`${what}: expected at least [H, Dh], got shape ${shapeString(t.shape)}`);
  return [t.shape[r - 2]!, t.shape[r - 1]!];
}

function check4d(t: Tensor, what: string): [number, number, number, number] {
  if (t.shape.length !== 4) throw new Error(`${what}: expected shape [B, T, H, Dh], got ${shapeString(t.shape)}`);
  return t.shape as unknown as [number, number, number, number];
}

/**
 * Rotate-half RoPE. x [..., H, Dh] is viewed as [n, H, Dh] with n = positions.length. The angle is
 * rounded to f32 the way an fp32 `positions × inv_freq` product is (PyTorch/HF), then cos/sin are
 * taken in f64.
 */
export function rope(be: CpuBackend, x: Tensor, positions: Int32Array, invFreq: Float32Array, inverse: boolean): Tensor {
  const [H, Dh] = lastTwoDims(x, 'rope: x');
  if (Dh % 2 !== 0) throw new Error(`rope: head dim ${Dh} of x ${shapeString(x.shape)} must be even`);
  const half = Dh / 2;
  if (invFreq.length !== half) throw new Error(`rope: invFreq has ${invFreq.length} values, head dim ${Dh} needs ${half}`);
  const n = x.size / (H * Dh);
  if (positions.length !== n) throw new Error(`rope: positions has ${positions.length} entries, x ${shapeString(x.shape)} has ${n} tokens`);
  const src = dataOf(x);
  const out = new Float32Array(src.length);
  const cos = new Float64Array(half), sin = new Float64Array(half);
  const sign = inverse ? -1 : 1;
  for (let t = 0; t < n; t++) {
    const pos = positions[t]!;
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * invFreq[i]!);
      cos[i] = Math.cos(angle);
      sin[i] = sign * Math.sin(angle);
    }
    for (let h = 0; h < H; h++) {
      const o = (t * H + h) * Dh;
      for (let i = 0; i < half; i++) {
        const a = src[o + i]!, b = src[o + i + half]!;
        out[o + i] = a * cos[i]! - b * sin[i]!;
        out[o + i + half] = b * cos[i]! + a * sin[i]!;
      }
    }
  }
  return be.wrap(out, x.shape);
}

interface AttnDims { B: number; T: number; Hq: number; Hkv: number; Dh: number; group: number }

function attentionDims(q: Tensor, k: Tensor, v: Tensor, segments: Int32Array | undefined, op: string): AttnDims {
  const [B, T, Hq, Dh] = check4d(q, `${op}: q`);
  const [kB, kT, Hkv, kDh] = check4d(k, `${op}: k`);
  if (kB !== B || kT !== T || kDh !== Dh) throw new Error(`${op}: k ${shapeString(k.shape)} does not match q ${shapeString(q.shape)}`);
  if (v.shape.length !== 4 || v.shape.some((d, i) => d !== k.shape[i])) {
    throw new Error(`${op}: v ${shapeString(v.shape)} must have the shape of k ${shapeString(k.shape)}`);
  }
  if (Hkv === 0 || Hq % Hkv !== 0) throw new Error(`${op}: ${Hq} q heads are not a multiple of ${Hkv} kv heads`);
  if (segments && segments.length !== B * T) throw new Error(`${op}: segments has ${segments.length} entries, expected B*T = ${B * T}`);
  return { B, T, Hq, Hkv, Dh, group: Hq / Hkv };
}

export function attention(be: CpuBackend, q: Tensor, k: Tensor, v: Tensor, opts: { scale: number; segments?: Int32Array }): { out: Tensor; lse: Tensor } {
  const { B, T, Hq, Hkv, Dh } = attentionDims(q, k, v, opts.segments, 'attention');
  const qd = dataOf(q);
  const out = new Float32Array(qd.length);
  const lse = new Float32Array(B * Hq * T);
  // tasks (row, kv head) on the worker threads; work ≈ T²/2 · Hq · Dh · 2 multiply-adds
  runTasksParallel('attentionForwardTasks', [qd, dataOf(k), dataOf(v), out, lse, opts.segments ?? NO_SEGMENTS], [3, 4],
    [T, Hq, Hkv, Dh, opts.scale], B * Hkv, B * T * T * Hq * Dh);
  return { out: be.wrap(out, q.shape), lse: be.wrap(lse, [B, Hq, T]) };
}

/** flash-attention style backward (attention-kernels.ts): P is recomputed from q, k and lse */
export function attentionBackward(
  be: CpuBackend, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
  opts: { scale: number; segments?: Int32Array },
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const { B, T, Hq, Hkv, Dh } = attentionDims(q, k, v, opts.segments, 'attentionBackward');
  if (dout.size !== q.size) throw new Error(`attentionBackward: dout ${shapeString(dout.shape)} must have the shape of q ${shapeString(q.shape)}`);
  if (out.size !== q.size) throw new Error(`attentionBackward: out ${shapeString(out.shape)} must have the shape of q ${shapeString(q.shape)}`);
  if (lse.size !== B * Hq * T) throw new Error(`attentionBackward: lse ${shapeString(lse.shape)} must be [${B}, ${Hq}, ${T}]`);
  const qd = dataOf(q), kd = dataOf(k), vd = dataOf(v);
  const dq = new Float32Array(qd.length), dk = new Float32Array(kd.length), dv = new Float32Array(vd.length);
  runTasksParallel('attentionBackwardTasks', [qd, kd, vd, dataOf(out), dataOf(dout), dataOf(lse), opts.segments ?? NO_SEGMENTS, dq, dk, dv], [7, 8, 9],
    [T, Hq, Hkv, Dh, opts.scale], B * Hkv, 3 * B * T * T * Hq * Dh);
  return { dq: be.wrap(dq, q.shape), dk: be.wrap(dk, k.shape), dv: be.wrap(dv, v.shape) };
}

function cacheDims(kCache: Tensor, vCache: Tensor, op: string): { numBlocks: number; blockSize: number; Hkv: number; Dh: number } {
  if (kCache.shape.length !== 4) throw new Error(`${op}: kCache must be [numBlocks, blockSize, Hkv, Dh], got ${shapeString(kCache.shape)}`);
  if (vCache.shape.length !== 4 || vCache.shape.some((d, i) => d !== kCache.shape[i])) {
    throw new Error(`${op}: vCache ${shapeString(vCache.shape)} must have the shape of kCache ${shapeString(kCache.shape)}`);
  }
  const [numBlocks, blockSize, Hkv, Dh] = kCache.shape as unknown as [number, number, number, number];
  return { numBlocks, blockSize, Hkv, Dh };
}

/** k/v [..., Hkv, Dh] (n tokens) → cache rows slotMapping[i]; a negative slot marks a padding token */
export function kvCacheWrite(be: CpuBackend, kCache: Tensor, vCache: Tensor, k: Tensor, v: Tensor, slotMapping: Int32Array): void {
  const { numBlocks, blockSize, Hkv, Dh } = cacheDims(kCache, vCache, 'kvCacheWrite');
  const [kH, kDh] = lastTwoDims(k, 'kvCacheWrite: k');
  if (kH !== Hkv || kDh !== Dh) throw new Error(`kvCacheWrite: k ${shapeString(k.shape)} does not match cache heads [${Hkv}, ${Dh}]`);
  if (v.size !== k.size) throw new Error(`kvCacheWrite: v ${shapeString(v.shape)} must have the shape of k ${shapeString(k.shape)}`);
  const row = Hkv * Dh;
  const n = k.size / row;
  if (slotMapping.length !== n) throw new Error(`kvCacheWrite: slotMapping has ${slotMapping.length} entries, k has ${n} tokens`);
  const numSlots = numBlocks * blockSize;
  for (let i = 0; i < n; i++) {
    const slot = slotMapping[i]!;
    if (slot >= numSlots) {
      throw new Error(`kvCacheWrite: slotMapping[${i}] = ${slot} is outside the cache (${numBlocks} blocks × ${blockSize} = ${numSlots} slots)`);
    }
  }
  const kc = dataOf(kCache), vc = dataOf(vCache), kd = dataOf(k), vd = dataOf(v);
  for (let i = 0; i < n; i++) {
    const slot = slotMapping[i]!;
    if (slot < 0) continue;
    const dst = slot * row;
    kc.set(kd.subarray(i * row, i * row + row), dst);
    vc.set(vd.subarray(i * row, i * row + row), dst);
    // a bf16/f16 cache holds rounded values, as the device cache would
    if (kCache.dtype !== 'f32') roundToDType(kc.subarray(dst, dst + row), kCache.dtype);
    if (vCache.dtype !== 'f32') roundToDType(vc.subarray(dst, dst + row), vCache.dtype);
  }
}

/**
 * Decode attention over a paged cache: query i [Hq, Dh] attends to its seqLens[i] cached tokens;
 * token j lives at block blockTables[i·maxBlocks + ⌊j/blockSize⌋], offset j mod blockSize.
 * A sequence with seqLens[i] = 0 (a padding row) gets a zero output.
 */
export function pagedAttentionDecode(
  be: CpuBackend, q: Tensor, kCache: Tensor, vCache: Tensor,
  blockTables: Int32Array, maxBlocks: number, seqLens: Int32Array, scale: number,
): Tensor {
  const { numBlocks, blockSize, Hkv, Dh } = cacheDims(kCache, vCache, 'pagedAttentionDecode');
  if (q.shape.length !== 3) throw new Error(`pagedAttentionDecode: q must be [n, Hq, Dh], got ${shapeString(q.shape)}`);
  const [n, Hq, qDh] = q.shape as unknown as [number, number, number];
  if (qDh !== Dh) throw new Error(`pagedAttentionDecode: q head dim ${qDh} differs from the cache's ${Dh}`);
  if (Hq % Hkv !== 0) throw new Error(`pagedAttentionDecode: ${Hq} q heads are not a multiple of ${Hkv} kv heads`);
  if (seqLens.length !== n) throw new Error(`pagedAttentionDecode: seqLens has ${seqLens.length} entries, q has ${n} sequences`);
  if (!Number.isInteger(maxBlocks) || maxBlocks < 1) throw new Error(`pagedAttentionDecode: maxBlocks must be a positive integer, got ${maxBlocks}`);
  if (blockTables.length < n * maxBlocks) {
    throw new Error(`pagedAttentionDecode: blockTables has ${blockTables.length} entries, need n*maxBlocks = ${n * maxBlocks}`);
  }
  let maxLen = 0;
  for (let i = 0; i < n; i++) {
    const L = seqLens[i]!;
    if (L < 0 || L > maxBlocks * blockSize) {
      throw new Error(`pagedAttentionDecode: seqLens[${i}] = ${L} is outside [0, maxBlocks*blockSize = ${maxBlocks * blockSize}]`);
    }
    for (let j = 0; j < Math.ceil(L / blockSize); j++) {
      const blk = blockTables[i * maxBlocks + j]!;
      if (blk < 0 || blk >= numBlocks) {
        throw new Error(`pagedAttentionDecode: blockTables[${i * maxBlocks + j}] = ${blk} (sequence ${i}, block ${j}) is outside [0, ${numBlocks})`);
      }
    }
    maxLen = Math.max(maxLen, L);
  }
  const group = Hq / Hkv;
  const qd = dataOf(q), kc = dataOf(kCache), vc = dataOf(vCache);
  const out = new Float32Array(qd.length);
  const kPanel = new Float32Array(maxLen * Dh), vPanel = new Float32Array(maxLen * Dh);
  const scores = new Float64Array(maxLen);
  const acc = new Float64Array(Dh);
  for (let i = 0; i < n; i++) {
    const L = seqLens[i]!;
    if (L === 0) continue;
    for (let g = 0; g < Hkv; g++) {
      // gather this head's cached rows out of the scattered blocks into contiguous panels
      // (element loops, not subarray().set(): two views per cached row cost more than the copy)
      for (let j = 0; j < L; j++) {
        const blk = blockTables[i * maxBlocks + Math.floor(j / blockSize)]!;
        const src = ((blk * blockSize + (j % blockSize)) * Hkv + g) * Dh, dst = j * Dh;
        for (let d = 0; d < Dh; d++) {
          kPanel[dst + d] = kc[src + d]!;
          vPanel[dst + d] = vc[src + d]!;
        }
      }
      for (let h = g * group; h < (g + 1) * group; h++) {
        const qo = (i * Hq + h) * Dh;
        let max = -Infinity;
        for (let j = 0; j < L; j++) {
          const sc = scale * dotRow(qd, qo, kPanel, j * Dh, Dh);
          scores[j] = sc;
          if (sc > max) max = sc;
        }
        acc.fill(0);
        let sum = 0;
        for (let j = 0; j < L; j++) {
          const p = Math.exp(scores[j]! - max);
          sum += p;
          for (let d = 0; d < Dh; d++) acc[d]! += p * vPanel[j * Dh + d]!;
        }
        for (let d = 0; d < Dh; d++) out[qo + d] = acc[d]! / sum;
      }
    }
  }
  return be.wrap(out, q.shape);
}
