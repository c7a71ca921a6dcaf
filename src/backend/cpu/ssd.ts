// The Mamba-2 SSD chunked scan (forward, backward, one-token step) and the gated RMSNorm.
//
// Per head h (scalar decay), with Δ_t = softplus(dt_t + dtBias) and a_t = Δ_t·A_h ≤ 0:
//   H_t = exp(a_t) H_{t−1} + Δ_t x_t B_tᵀ      [P, N]
//   y_t = H_t C_t + D_h x_t                     [P]
// The forward uses the SSD chunked form (m1-spec §1.9), the shape the CUDA kernel will take, so this
// file is its reference; the backward uses the plain recurrence, which is simpler to get exactly
// right and independently checks the chunked algebra (tests compare both against finite differences).
import type { SsdScanArgs, SsdScanGrads, SsdScanStepArgs } from '../backend.js';
import { assertShape, shapeString, type Tensor } from '../tensor.js';
import { gatedNormDim, ssdDims, ssdStepDims } from '../validate.js';
import { sigmoid, silu, siluGrad, softplus } from './basic.js';
import type { CpuBackend } from './index.js';
import { dataOf } from './tensor.js';

/** Δ = softplus(dt + dtBias) per (token, head), kept in f64 because it feeds exponent sums */
function softplusDelta(dt: Float32Array, dtBias: Float32Array | null, H: number): Float64Array {
  const delta = new Float64Array(dt.length);
  for (let i = 0; i < dt.length; i++) delta[i] = softplus(dt[i]! + (dtBias ? dtBias[i % H]! : 0));
  return delta;
}

/** true where position t of row b starts a new segment (its state must not see earlier tokens) */
function resetAt(segments: Int32Array | undefined, b: number, T: number, t: number): boolean {
  return t === 0 || (segments !== undefined && segments[b * T + t] !== segments[b * T + t - 1]);
}

export function ssdScan(be: CpuBackend, args: SsdScanArgs): Tensor {
  const { B, T, H, P, G, N } = ssdDims('ssdScan', args);
  const Q = args.chunkSize;
  const x = dataOf(args.x), A = dataOf(args.A), Bm = dataOf(args.Bm), Cm = dataOf(args.Cm);
  const Dv = args.D ? dataOf(args.D) : null;
  const delta = softplusDelta(dataOf(args.dt), args.dtBias ? dataOf(args.dtBias) : null, H);
  const headsPerGroup = H / G;
  const y = new Float32Array(B * T * H * P);
  const state = new Float64Array(H * P * N); // [H, P, N] of the current row, carried chunk to chunk
  const cum = new Float64Array(Q); // cum[i] = Σ_{r=c0..c0+i} a_r (log of the decay since the chunk start)
  const cb = new Float64Array(Q * Q); // cb[i, j] = C_{c0+i} · B_{c0+j} for j in i's run, j ≤ i
  const runStart = new Int32Array(Q); // chunk-local index where position i's segment run begins
  const acc = new Float64Array(P);
  const prodHC = new Float64Array(P);

  for (let b = 0; b < B; b++) {
    state.fill(0);
    for (let c0 = 0; c0 < T; c0 += Q) {
      const q = Math.min(Q, T - c0);
      // A position sees the previous chunk's state only if no reset lies in [c0, t]; the intra-chunk
      // decay L[i, j] is zero for j before i's run start (decay −inf across a segment boundary).
      const carryIn = !resetAt(args.segments, b, T, c0);
      for (let i = 0; i < q; i++) runStart[i] = i === 0 ? 0 : resetAt(args.segments, b, T, c0 + i) ? i : runStart[i - 1]!;
      const lastRun = runStart[q - 1]!;

      for (let g = 0; g < G; g++) {
        for (let i = 0; i < q; i++) {
          const ci = ((b * T + c0 + i) * G + g) * N;
          for (let j = runStart[i]!; j <= i; j++) {
            const bj = ((b * T + c0 + j) * G + g) * N;
            let s = 0;
            for (let n = 0; n < N; n++) s += Cm[ci + n]! * Bm[bj + n]!;
            cb[i * Q + j] = s;
          }
        }

        for (let h = g * headsPerGroup; h < (g + 1) * headsPerGroup; h++) {
          const Ah = A[h]!;
          const Dh = Dv ? Dv[h]! : 0;
          let run = 0;
          for (let i = 0; i < q; i++) {
            run += delta[(b * T + c0 + i) * H + h]! * Ah;
            cum[i] = run;
          }
          const hs = h * P * N;

          for (let i = 0; i < q; i++) {
            const ti = b * T + c0 + i;
            acc.fill(0);
            // Y_intra[i] = Σ_j L[i, j] (C_i·B_j) Δ_j x_j, with L[i, j] = exp(cum[i] − cum[j]) (segsum)
            for (let j = runStart[i]!; j <= i; j++) {
              const tj = b * T + c0 + j;
              const w = Math.exp(cum[i]! - cum[j]!) * cb[i * Q + j]! * delta[tj * H + h]!;
              const xj = (tj * H + h) * P;
              for (let p = 0; p < P; p++) acc[p]! += w * x[xj + p]!;
            }
            // Y_inter[i] = exp(cum[i]) H_{k−1} C_i
            if (carryIn && runStart[i] === 0) {
              const ci = (ti * G + g) * N;
              const decay = Math.exp(cum[i]!);
              for (let p = 0; p < P; p++) {
                let s = 0;
                for (let n = 0; n < N; n++) s += state[hs + p * N + n]! * Cm[ci + n]!;
                prodHC[p] = s;
              }
              for (let p = 0; p < P; p++) acc[p]! += decay * prodHC[p]!;
            }
            const xi = (ti * H + h) * P;
            for (let p = 0; p < P; p++) y[xi + p] = acc[p]! + Dh * x[xi + p]!;
          }

          // H_k = exp(Σ_chunk a) H_{k−1} + S_k, S_k = Σ_j exp(cum[q−1] − cum[j]) Δ_j x_j B_jᵀ
          const chunkDecay = carryIn && lastRun === 0 ? Math.exp(cum[q - 1]!) : 0;
          for (let e = 0; e < P * N; e++) state[hs + e]! *= chunkDecay;
          for (let j = lastRun; j < q; j++) {
            const tj = b * T + c0 + j;
            const w = Math.exp(cum[q - 1]! - cum[j]!) * delta[tj * H + h]!;
            const xj = (tj * H + h) * P, bj = (tj * G + g) * N;
            for (let p = 0; p < P; p++) {
              const wx = w * x[xj + p]!;
              for (let n = 0; n < N; n++) state[hs + p * N + n]! += wx * Bm[bj + n]!;
            }
          }
        }
      }
    }
    if (args.stateOut) {
      const dst = dataOf(args.stateOut.ssmState);
      const off = args.stateOut.slots[b]! * H * P * N;
      for (let e = 0; e < H * P * N; e++) dst[off + e] = state[e]!;
    }
  }
  return be.wrap(y, args.x.shape);
}

/**
 * Exact gradients by the plain sequential recurrence (not the chunked form): per (row, head) the
 * forward states are recomputed, checkpointed at every chunkSize-th step so memory stays
 * O(T/chunk · P·N) rather than O(T·P·N), and the adjoint G_t = dL/dH_t is carried backwards:
 *   G_t = dy_t C_tᵀ + exp(a_{t+1}) G_{t+1}
 *   dx_t = D dy_t + Δ_t G_t B_t ; dB_t = Δ_t G_tᵀ x_t ; dC_t = H_tᵀ dy_t
 *   dΔ_t = x_tᵀ G_t B_t + A exp(a_t) ⟨G_t, H_{t−1}⟩ ; dA = Σ_t Δ_t exp(a_t) ⟨G_t, H_{t−1}⟩
 */
export function ssdScanBackward(be: CpuBackend, dyT: Tensor, args: SsdScanArgs): SsdScanGrads {
  const { B, T, H, P, G, N } = ssdDims('ssdScanBackward', { ...args, stateOut: undefined });
  assertShape(dyT, [B, T, H, P], 'ssdScanBackward: dy');
  const Q = args.chunkSize;
  const x = dataOf(args.x), dt = dataOf(args.dt), A = dataOf(args.A), Bm = dataOf(args.Bm), Cm = dataOf(args.Cm);
  const dy = dataOf(dyT);
  const Dv = args.D ? dataOf(args.D) : null;
  const bias = args.dtBias ? dataOf(args.dtBias) : null;
  const delta = softplusDelta(dt, bias, H);
  const headsPerGroup = H / G;
  const PN = P * N;

  const dx = new Float32Array(x.length);
  const ddt = new Float32Array(dt.length);
  const dBm = new Float64Array(Bm.length); // heads of one group add into the same B/C entries
  const dCm = new Float64Array(Cm.length);
  const dA = new Float64Array(H);
  const dD = new Float64Array(H);
  const dBias = new Float64Array(H);

  const nChunks = Math.ceil(T / Q);
  const ckpt = new Float64Array(nChunks * PN); // state before each chunk's first step
  const hs = new Float64Array((Q + 1) * PN); // hs[i] = state before local step i; hs[i+1] after it
  const Gcur = new Float64Array(PN);
  const Gnext = new Float64Array(PN); // exp(a_{t+1}) G_{t+1}: what the future sends back to H_t
  const GB = new Float64Array(P);

  // one forward step H ← α H + Δ x Bᵀ from `src` into `dst` (both PN-long views)
  const stepState = (src: Float64Array, so: number, dst: Float64Array, dO: number, t: number, h: number, reset: boolean): void => {
    const g = Math.floor(h / headsPerGroup);
    const alpha = reset ? 0 : Math.exp(delta[t * H + h]! * A[h]!);
    const d = delta[t * H + h]!;
    const xo = (t * H + h) * P, bo = (t * G + g) * N;
    for (let p = 0; p < P; p++) {
      const dxp = d * x[xo + p]!;
      for (let n = 0; n < N; n++) dst[dO + p * N + n] = alpha * src[so + p * N + n]! + dxp * Bm[bo + n]!;
    }
  };

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / headsPerGroup);
      const Ah = A[h]!;
      const Dh = Dv ? Dv[h]! : 0;
      // forward: record the state at each chunk start
      const run = hs.subarray(0, PN);
      run.fill(0);
      for (let k = 0; k < nChunks; k++) {
        ckpt.set(run, k * PN);
        for (let t = k * Q; t < Math.min(T, (k + 1) * Q); t++) stepState(run, 0, run, 0, b * T + t, h, resetAt(args.segments, b, T, t));
      }

      Gnext.fill(0);
      for (let k = nChunks - 1; k >= 0; k--) {
        const c0 = k * Q, q = Math.min(Q, T - c0);
        hs.set(ckpt.subarray(k * PN, (k + 1) * PN), 0);
        for (let i = 0; i < q; i++) stepState(hs, i * PN, hs, (i + 1) * PN, b * T + c0 + i, h, resetAt(args.segments, b, T, c0 + i));

        for (let i = q - 1; i >= 0; i--) {
          const t = b * T + c0 + i;
          const reset = resetAt(args.segments, b, T, c0 + i);
          const d = delta[t * H + h]!;
          const xo = (t * H + h) * P, bo = (t * G + g) * N;
          const after = (i + 1) * PN, before = i * PN;
          let dDelta = 0, dDh = 0;
          for (let p = 0; p < P; p++) {
            const dyp = dy[xo + p]!;
            dDh += dyp * x[xo + p]!;
            let gb = 0;
            for (let n = 0; n < N; n++) {
              const e = p * N + n;
              const gv = Gnext[e]! + dyp * Cm[bo + n]!;
              Gcur[e] = gv;
              gb += gv * Bm[bo + n]!;
              dCm[bo + n]! += dyp * hs[after + e]!;
            }
            GB[p] = gb;
            dDelta += x[xo + p]! * gb;
            dx[xo + p] = Dh * dyp + d * gb;
          }
          for (let n = 0; n < N; n++) {
            let s = 0;
            for (let p = 0; p < P; p++) s += Gcur[p * N + n]! * x[xo + p]!;
            dBm[bo + n]! += d * s;
          }
          if (reset) Gnext.fill(0);
          else {
            const alpha = Math.exp(d * Ah);
            let dAlpha = 0;
            for (let e = 0; e < PN; e++) dAlpha += Gcur[e]! * hs[before + e]!;
            dDelta += dAlpha * alpha * Ah;
            dA[h]! += dAlpha * alpha * d;
            for (let e = 0; e < PN; e++) Gnext[e] = alpha * Gcur[e]!;
          }
          dD[h]! += dDh;
          // softplus'(v) = σ(v), and 1 above the threshold where softplus(v) = v
          const v = dt[t * H + h]! + (bias ? bias[h]! : 0);
          const g2 = dDelta * (v > 20 ? 1 : sigmoid(v));
          ddt[t * H + h] = g2;
          dBias[h]! += g2;
        }
      }
    }
  }
  return {
    dx: be.wrap(dx, args.x.shape),
    ddt: be.wrap(ddt, args.dt.shape),
    dA: be.wrap(Float32Array.from(dA), [H]),
    dBm: be.wrap(Float32Array.from(dBm), args.Bm.shape),
    dCm: be.wrap(Float32Array.from(dCm), args.Cm.shape),
    dD: args.D ? be.wrap(Float32Array.from(dD), [H]) : null,
    dDtBias: args.dtBias ? be.wrap(Float32Array.from(dBias), [H]) : null,
  };
}

export function ssdScanStep(be: CpuBackend, args: SsdScanStepArgs): Tensor {
  const op = 'ssdScanStep';
  const { B: n, H, P, G, N } = ssdStepDims(op, args);

  const x = dataOf(args.x), A = dataOf(args.A), Bm = dataOf(args.Bm), Cm = dataOf(args.Cm);
  const Dv = args.D ? dataOf(args.D) : null;
  const delta = softplusDelta(dataOf(args.dt), args.dtBias ? dataOf(args.dtBias) : null, H);
  const st = dataOf(args.ssmState);
  const y = new Float32Array(n * H * P);
  const headsPerGroup = H / G;
  for (let i = 0; i < n; i++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / headsPerGroup);
      const d = delta[i * H + h]!;
      const alpha = Math.exp(d * A[h]!);
      const so = ((args.slots[i]! * H + h) * P) * N;
      const xo = (i * H + h) * P, bo = (i * G + g) * N;
      for (let p = 0; p < P; p++) {
        const dxp = d * x[xo + p]!;
        let s = 0;
        for (let k = 0; k < N; k++) {
          const e = so + p * N + k;
          const v = alpha * st[e]! + dxp * Bm[bo + k]!;
          st[e] = v;
          s += v * Cm[bo + k]!;
        }
        y[xo + p] = s + (Dv ? Dv[h]! : 0) * x[xo + p]!;
      }
    }
  }
  return be.wrap(y, args.x.shape);
}

export function gatedRmsNorm(be: CpuBackend, yT: Tensor, zT: Tensor, wT: Tensor, groupSize: number, eps: number): Tensor {
  const D = gatedNormDim('gatedRmsNorm', yT, zT, wT, groupSize);
  const y = dataOf(yT), z = dataOf(zT), w = dataOf(wT);
  const out = new Float32Array(y.length);
  const gbuf = new Float64Array(groupSize);
  for (let o = 0; o < y.length; o += groupSize) {
    let ss = 0;
    for (let j = 0; j < groupSize; j++) {
      const g = y[o + j]! * silu(z[o + j]!);
      gbuf[j] = g;
      ss += g * g;
    }
    const rstd = 1 / Math.sqrt(ss / groupSize + eps);
    const wo = o % D;
    for (let j = 0; j < groupSize; j++) out[o + j] = gbuf[j]! * rstd * w[wo + j]!;
  }
  return be.wrap(out, yT.shape);
}

export function gatedRmsNormBackward(
  be: CpuBackend, doutT: Tensor, yT: Tensor, zT: Tensor, wT: Tensor, groupSize: number, eps: number,
): { dy: Tensor; dz: Tensor; dw: Tensor } {
  const D = gatedNormDim('gatedRmsNormBackward', yT, zT, wT, groupSize);
  assertShape(doutT, yT.shape, 'gatedRmsNormBackward: dout');
  const dout = dataOf(doutT), y = dataOf(yT), z = dataOf(zT), w = dataOf(wT);
  const dy = new Float32Array(y.length), dz = new Float32Array(y.length);
  const dw = new Float64Array(D);
  const gbuf = new Float64Array(groupSize);
  for (let o = 0; o < y.length; o += groupSize) {
    const wo = o % D;
    let ss = 0;
    for (let j = 0; j < groupSize; j++) {
      const g = y[o + j]! * silu(z[o + j]!);
      gbuf[j] = g;
      ss += g * g;
    }
    const rstd = 1 / Math.sqrt(ss / groupSize + eps);
    // out = g·r·w ; dg = r·(dout·w) − g · r³/n · Σ(dout·w·g)
    let dot = 0;
    for (let j = 0; j < groupSize; j++) {
      dot += dout[o + j]! * w[wo + j]! * gbuf[j]!;
      dw[wo + j]! += dout[o + j]! * gbuf[j]! * rstd;
    }
    const k = (dot * rstd * rstd * rstd) / groupSize;
    for (let j = 0; j < groupSize; j++) {
      const dg = dout[o + j]! * w[wo + j]! * rstd - gbuf[j]! * k;
      const zj = z[o + j]!;
      dy[o + j] = dg * silu(zj);
      dz[o + j] = dg * y[o + j]! * siluGrad(zj);
    }
  }
  return { dy: be.wrap(dy, yT.shape), dz: be.wrap(dz, zT.shape), dw: be.wrap(Float32Array.from(dw), [D]) };
}
