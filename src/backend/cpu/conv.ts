// Causal depthwise conv1d over time (forward, backward, one-token step).
//
// y[b,t,c] = act(bias[c] + Σ_k w[c,k] · x[b, t−(K−1)+k, c]), where inputs before the start of the
// row, or of the segment that t belongs to, count as zeros (a packed row never leaks across
// sequences). act = SiLU or identity.
import { f32ToBf16Value } from '../dtype.js';
import { shapeString, type Tensor } from '../tensor.js';
import { convDims, type ConvDims } from '../validate.js';
import { silu, siluGrad } from './basic.js';
import type { CpuBackend } from './index.js';
import { dataOf } from './tensor.js';

/** w [C, K] → [K, C], so the inner loop over channels reads taps contiguously */
function transposeTaps(w: Float32Array, C: number, K: number): Float32Array {
  const wt = new Float32Array(K * C);
  for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) wt[k * C + c] = w[c * K + k]!;
  return wt;
}

/**
 * Pre-activation conv output [B*T*C] (bias included). Shared by forward and backward: the backward
 * recomputes it instead of having the caller keep it.
 */
function convPreActivation(xd: Float32Array, wt: Float32Array, bd: Float32Array | null, dims: ConvDims, segments?: Int32Array): Float32Array {
  const { B, T, C, K } = dims;
  const pre = new Float32Array(B * T * C);
  for (let b = 0; b < B; b++) {
    let segStart = 0;
    for (let t = 0; t < T; t++) {
      const r = b * T + t;
      if (segments && t > 0 && segments[r] !== segments[r - 1]) segStart = t;
      const o = r * C;
      if (bd) pre.set(bd, o);
      // tap k reads time t−(K−1)+k, which must not precede the segment start
      for (let k = Math.max(0, K - 1 - (t - segStart)); k < K; k++) {
        const xo = (r - (K - 1) + k) * C;
        const wo = k * C;
        for (let c = 0; c < C; c++) pre[o + c]! += wt[wo + c]! * xd[xo + c]!;
      }
    }
  }
  return pre;
}

export function causalConv1d(
  be: CpuBackend, x: Tensor, w: Tensor, bias: Tensor | null,
  opts: { silu: boolean; segments?: Int32Array; stateOut?: { convState: Tensor; slots: Int32Array } },
): Tensor {
  const dims = convDims('causalConv1d', x, w, bias, opts.segments);
  const { B, T, C, K } = dims;
  const xd = dataOf(x);
  const y = convPreActivation(xd, transposeTaps(dataOf(w), C, K), bias ? dataOf(bias) : null, dims, opts.segments);
  if (opts.silu) for (let i = 0; i < y.length; i++) y[i] = silu(y[i]!);
  if (opts.stateOut) writeConvState(xd, dims, opts.segments, opts.stateOut.convState, opts.stateOut.slots);
  return be.wrap(y, x.shape);
}

/**
 * Prefill → decode hand-over: the last K−1 inputs of each row's last segment, oldest first, zeros
 * where the segment is shorter than K−1.
 */
function writeConvState(xd: Float32Array, dims: ConvDims, segments: Int32Array | undefined, convState: Tensor, slots: Int32Array): void {
  const { B, T, C, K } = dims;
  const W = K - 1;
  if (convState.shape.length !== 3 || convState.shape[1] !== C || convState.shape[2] !== W) {
    throw new Error(`causalConv1d: stateOut.convState must be [S, ${C}, ${W}], got ${shapeString(convState.shape)}`);
  }
  const S = convState.shape[0]!;
  if (slots.length !== B) throw new Error(`causalConv1d: stateOut.slots has ${slots.length} entries for B = ${B} rows`);
  const st = dataOf(convState);
  const store = convStore('causalConv1d', convState);
  for (let b = 0; b < B; b++) {
    const slot = slots[b]!;
    if (slot < 0 || slot >= S) throw new Error(`causalConv1d: stateOut.slots[${b}] = ${slot} is outside [0, ${S})`);
    let lastStart = 0;
    if (segments) for (let t = 1; t < T; t++) if (segments[b * T + t] !== segments[b * T + t - 1]) lastStart = t;
    for (let j = 0; j < W; j++) {
      const t = T - W + j;
      const valid = t >= lastStart && t >= 0;
      for (let c = 0; c < C; c++) st[(slot * C + c) * W + j] = valid ? store(xd[(b * T + t) * C + c]!) : 0;
    }
  }
}

export function causalConv1dBackward(
  be: CpuBackend, dy: Tensor, x: Tensor, w: Tensor, bias: Tensor | null,
  opts: { silu: boolean; segments?: Int32Array },
): { dx: Tensor; dw: Tensor; dbias: Tensor | null } {
  const dims = convDims('causalConv1dBackward', x, w, bias, opts.segments);
  const { B, T, C, K } = dims;
  if (dy.size !== x.size) throw new Error(`causalConv1dBackward: dy ${shapeString(dy.shape)} does not match x ${shapeString(x.shape)}`);
  const xd = dataOf(x), dyd = dataOf(dy);
  const wt = transposeTaps(dataOf(w), C, K);
  let dpre: Float32Array;
  if (opts.silu) {
    dpre = convPreActivation(xd, wt, bias ? dataOf(bias) : null, dims, opts.segments);
    for (let i = 0; i < dpre.length; i++) dpre[i] = dyd[i]! * siluGrad(dpre[i]!);
  } else dpre = dyd;

  const dx = new Float32Array(x.size);
  // dw and dbias sum over all B·T positions: f64 accumulators
  const dwt = new Float64Array(K * C);
  const db = new Float64Array(C);
  const segments = opts.segments;
  for (let b = 0; b < B; b++) {
    let segStart = 0;
    for (let t = 0; t < T; t++) {
      const r = b * T + t;
      if (segments && t > 0 && segments[r] !== segments[r - 1]) segStart = t;
      const o = r * C;
      for (let c = 0; c < C; c++) db[c]! += dpre[o + c]!;
      for (let k = Math.max(0, K - 1 - (t - segStart)); k < K; k++) {
        const xo = (r - (K - 1) + k) * C;
        const wo = k * C;
        for (let c = 0; c < C; c++) {
          const g = dpre[o + c]!;
          dx[xo + c]! += wt[wo + c]! * g;
          dwt[wo + c]! += g * xd[xo + c]!;
        }
      }
    }
  }
  const dw = new Float32Array(C * K);
  for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) dw[c * K + k] = dwt[k * C + c]!;
  return {
    dx: be.wrap(dx, x.shape),
    dw: be.wrap(dw, [C, K]),
    dbias: bias ? be.wrap(Float32Array.from(db), [C]) : null,
  };
}

export function causalConv1dStep(
  be: CpuBackend, x: Tensor, convState: Tensor, slots: Int32Array, w: Tensor, bias: Tensor | null, silu_: boolean,
): Tensor {
  if (x.shape.length !== 2) throw new Error(`causalConv1dStep: x must be [n, C], got ${shapeString(x.shape)}`);
  const [n, C] = x.shape as [number, number];
  if (w.shape.length !== 2 || w.shape[0] !== C) throw new Error(`causalConv1dStep: w must be [C=${C}, K], got ${shapeString(w.shape)}`);
  const K = w.shape[1]!;
  const W = K - 1;
  if (bias && bias.size !== C) throw new Error(`causalConv1dStep: bias must be [${C}], got ${shapeString(bias.shape)}`);
  if (convState.shape.length !== 3 || convState.shape[1] !== C || convState.shape[2] !== W) {
    throw new Error(`causalConv1dStep: convState must be [S, ${C}, ${W}], got ${shapeString(convState.shape)}`);
  }
  const S = convState.shape[0]!;
  if (slots.length !== n) throw new Error(`causalConv1dStep: slots has ${slots.length} entries for n = ${n} tokens`);
  const xd = dataOf(x), wd = dataOf(w), st = dataOf(convState);
  const bd = bias ? dataOf(bias) : null;
  const store = convStore('causalConv1dStep', convState);
  const y = new Float32Array(n * C);
  for (let i = 0; i < n; i++) {
    const slot = slots[i]!;
    if (slot < 0 || slot >= S) throw new Error(`causalConv1dStep: slots[${i}] = ${slot} is outside [0, ${S})`);
    for (let c = 0; c < C; c++) {
      const so = (slot * C + c) * W;
      const wo = c * K;
      const xv = xd[i * C + c]!;
      // window = [state (oldest first), x]; the state row is contiguous in this layout
      let acc = bd ? bd[c]! : 0;
      for (let k = 0; k < W; k++) acc += wd[wo + k]! * st[so + k]!;
      acc += wd[wo + W]! * xv;
      y[i * C + c] = silu_ ? silu(acc) : acc;
      for (let k = 0; k + 1 < W; k++) st[so + k] = st[so + k + 1]!;
      if (W > 0) st[so + W - 1] = store(xv);
    }
  }
  return be.wrap(y, x.shape);
}

/**
 * How a value enters a conv state: as is (f32), or rounded to bf16 — the reference's conv_state in a bf16 model (the
 * conv weight's dtype). The step's own output uses the unrounded input; the state keeps what the storage holds.
 */
function convStore(op: string, convState: Tensor): (v: number) => number {
  if (convState.dtype === 'f32') return (v) => v;
  if (convState.dtype === 'bf16') return f32ToBf16Value;
  throw new Error(`${op}: convState must be stored as f32 or bf16, got ${convState.dtype}`);
}
