// The M1 Mamba-1 selective scan with grouped B/C (forward, backward, one-token step).
//
//   Δ_t = softplus(delta_t + deltaBias)                     (threshold 20, as mamba's CUDA kernel)
//   h_t[c,n] = exp(Δ_t[c]·A[c,n])·h_{t−1}[c,n] + Δ_t[c]·B_t[g,n]·x_t[c]      g = ⌊c/(Di/G)⌋
//   y_t[c]  = (Σ_n C_t[g,n]·h_t[c,n] + D[c]·x_t[c]) · silu(z_t[c])
//
// Every channel c is an independent recurrence over time, so the loops run per (b, c) over t with
// the N-wide state in a small array; x/delta/z are read with stride Di, B/C rows are shared by the
// Di/G channels of a group.
import type { SelectiveScanArgs, SelectiveScanGrads, SelectiveScanStepArgs } from '../backend.js';
import { shapeString, type Tensor } from '../tensor.js';
import { scanDims, scanStateRows } from '../validate.js';
import { sigmoid, silu, siluGrad, softplus } from './basic.js';
import type { CpuBackend } from './index.js';
import { dataOf } from './tensor.js';

function checkSlot(op: string, slots: Int32Array, i: number, S: number): number {
  const s = slots[i]!;
  if (!(s >= 0 && s < S)) throw new Error(`${op}: slots[${i}] = ${s} is outside [0, ${S})`);
  return s;
}

/** 1 where a new sequence starts in row b: t = 0 and every change of segment id */
function rowStarts(starts: Uint8Array, b: number, T: number, segments?: Int32Array): void {
  starts.fill(0);
  starts[0] = 1;
  if (segments) for (let t = 1; t < T; t++) if (segments[b * T + t] !== segments[b * T + t - 1]) starts[t] = 1;
}

export function selectiveScan(be: CpuBackend, args: SelectiveScanArgs): Tensor {
  const { B, T, Di, N, G, perGroup } = scanDims('selectiveScan', 2, args);
  if (args.segments && args.segments.length !== B * T) throw new Error(`selectiveScan: segments has ${args.segments.length} entries, x has B*T = ${B * T}`);
  const x = dataOf(args.x), delta = dataOf(args.delta), A = dataOf(args.A), Bm = dataOf(args.Bm), Cm = dataOf(args.Cm);
  const D = args.D ? dataOf(args.D) : null, z = args.z ? dataOf(args.z) : null, db = args.deltaBias ? dataOf(args.deltaBias) : null;
  let st: Float32Array | null = null;
  if (args.stateOut) {
    const S = scanStateRows('selectiveScan', args.stateOut.ssmState, Di, N);
    if (args.stateOut.slots.length !== B) throw new Error(`selectiveScan: stateOut.slots has ${args.stateOut.slots.length} entries for B = ${B} rows`);
    for (let b = 0; b < B; b++) checkSlot('selectiveScan', args.stateOut.slots, b, S);
    st = dataOf(args.stateOut.ssmState);
  }
  const y = new Float32Array(B * T * Di);
  const h = new Float64Array(N);
  const starts = new Uint8Array(T);
  for (let b = 0; b < B; b++) {
    rowStarts(starts, b, T, args.segments);
    for (let c = 0; c < Di; c++) {
      const g = Math.floor(c / perGroup);
      const ao = c * N;
      const bias = db ? db[c]! : 0;
      for (let t = 0; t < T; t++) {
        if (starts[t]) h.fill(0);
        const i = (b * T + t) * Di + c;
        const dt = softplus(delta[i]! + bias);
        const xv = x[i]!;
        const dtx = dt * xv;
        const bo = ((b * T + t) * G + g) * N;
        let acc = 0;
        for (let n = 0; n < N; n++) {
          const hn = Math.exp(dt * A[ao + n]!) * h[n]! + dtx * Bm[bo + n]!;
          h[n] = hn;
          acc += Cm[bo + n]! * hn;
        }
        if (D) acc += D[c]! * xv;
        y[i] = z ? acc * silu(z[i]!) : acc;
      }
      if (st) {
        const so = (args.stateOut!.slots[b]! * Di + c) * N;
        for (let n = 0; n < N; n++) st[so + n] = T > 0 ? h[n]! : 0;
      }
    }
  }
  return be.wrap(y, args.x.shape);
}

export function selectiveScanBackward(be: CpuBackend, dy: Tensor, args: SelectiveScanArgs): SelectiveScanGrads {
  const { B, T, Di, N, G, perGroup } = scanDims('selectiveScanBackward', 2, args);
  if (dy.size !== args.x.size) throw new Error(`selectiveScanBackward: dy ${shapeString(dy.shape)} does not match x ${shapeString(args.x.shape)}`);
  if (args.segments && args.segments.length !== B * T) throw new Error(`selectiveScanBackward: segments has ${args.segments.length} entries, x has B*T = ${B * T}`);
  const x = dataOf(args.x), delta = dataOf(args.delta), A = dataOf(args.A), Bm = dataOf(args.Bm), Cm = dataOf(args.Cm);
  const D = args.D ? dataOf(args.D) : null, z = args.z ? dataOf(args.z) : null, db = args.deltaBias ? dataOf(args.deltaBias) : null;
  const dyd = dataOf(dy);

  const dx = new Float32Array(B * T * Di);
  const ddelta = new Float32Array(B * T * Di);
  const dz = z ? new Float32Array(B * T * Di) : null;
  // reductions over time and over the channels of a group: f64
  const dA = new Float64Array(Di * N);
  const dB = new Float64Array(B * T * G * N);
  const dC = new Float64Array(B * T * G * N);
  const dD = new Float64Array(Di);
  const dDb = new Float64Array(Di);

  const hs = new Float64Array(T * N); // h_t of the current (b, c), recomputed
  const dts = new Float64Array(T);
  const adj = new Float64Array(N); // ∂L/∂h_t carried back from t+1
  const starts = new Uint8Array(T);
  for (let b = 0; b < B; b++) {
    rowStarts(starts, b, T, args.segments);
    for (let c = 0; c < Di; c++) {
      const g = Math.floor(c / perGroup);
      const ao = c * N;
      const bias = db ? db[c]! : 0;
      for (let t = 0; t < T; t++) {
        const i = (b * T + t) * Di + c;
        const dt = softplus(delta[i]! + bias);
        dts[t] = dt;
        const dtx = dt * x[i]!;
        const bo = ((b * T + t) * G + g) * N;
        const ho = t * N, po = (t - 1) * N;
        for (let n = 0; n < N; n++) {
          const prev = starts[t] ? 0 : hs[po + n]!;
          hs[ho + n] = Math.exp(dt * A[ao + n]!) * prev + dtx * Bm[bo + n]!;
        }
      }
      adj.fill(0);
      for (let t = T - 1; t >= 0; t--) {
        const i = (b * T + t) * Di + c;
        const bo = ((b * T + t) * G + g) * N;
        const ho = t * N, po = (t - 1) * N;
        const xv = x[i]!, dt = dts[t]!;
        // y = r·silu(z) with r = C·h + D·x
        let dr = dyd[i]!;
        if (z) {
          let r = D ? D[c]! * xv : 0;
          for (let n = 0; n < N; n++) r += Cm[bo + n]! * hs[ho + n]!;
          const zv = z[i]!;
          dz![i] = dr * r * siluGrad(zv);
          dr *= silu(zv);
        }
        let dxv = 0;
        if (D) {
          dD[c]! += dr * xv;
          dxv = dr * D[c]!;
        }
        let ddt = 0;
        for (let n = 0; n < N; n++) {
          const an = A[ao + n]!;
          const bn = Bm[bo + n]!;
          dC[bo + n]! += dr * hs[ho + n]!;
          const gh = adj[n]! + dr * Cm[bo + n]!; // total ∂L/∂h_t[n]
          const prev = starts[t] ? 0 : hs[po + n]!;
          const decay = Math.exp(dt * an);
          ddt += gh * (an * decay * prev + bn * xv);
          dA[ao + n]! += gh * dt * decay * prev;
          dB[bo + n]! += gh * dt * xv;
          dxv += gh * dt * bn;
          adj[n] = starts[t] ? 0 : gh * decay;
        }
        dx[i] = dxv;
        const v = delta[i]! + bias;
        const dv = ddt * (v > 20 ? 1 : sigmoid(v)); // softplus' = σ below the threshold, 1 above
        ddelta[i] = dv;
        dDb[c]! += dv;
      }
    }
  }
  return {
    dx: be.wrap(dx, args.x.shape),
    ddelta: be.wrap(ddelta, args.delta.shape),
    dA: be.wrap(Float32Array.from(dA), args.A.shape),
    dBm: be.wrap(Float32Array.from(dB), args.Bm.shape),
    dCm: be.wrap(Float32Array.from(dC), args.Cm.shape),
    dD: args.D ? be.wrap(Float32Array.from(dD), args.D.shape) : null,
    dz: dz ? be.wrap(dz, args.x.shape) : null,
    dDeltaBias: args.deltaBias ? be.wrap(Float32Array.from(dDb), args.deltaBias.shape) : null,
  };
}

export function selectiveScanStep(be: CpuBackend, args: SelectiveScanStepArgs): Tensor {
  const { B: n, Di, N, G, perGroup } = scanDims('selectiveScanStep', 1, args);
  const S = scanStateRows('selectiveScanStep', args.ssmState, Di, N);
  if (args.slots.length !== n) throw new Error(`selectiveScanStep: slots has ${args.slots.length} entries for n = ${n} tokens`);
  const x = dataOf(args.x), delta = dataOf(args.delta), A = dataOf(args.A), Bm = dataOf(args.Bm), Cm = dataOf(args.Cm);
  const D = args.D ? dataOf(args.D) : null, z = args.z ? dataOf(args.z) : null, db = args.deltaBias ? dataOf(args.deltaBias) : null;
  const st = dataOf(args.ssmState);
  const y = new Float32Array(n * Di);
  for (let s = 0; s < n; s++) {
    const slot = checkSlot('selectiveScanStep', args.slots, s, S);
    for (let c = 0; c < Di; c++) {
      const i = s * Di + c;
      const g = Math.floor(c / perGroup);
      const dt = softplus(delta[i]! + (db ? db[c]! : 0));
      const xv = x[i]!;
      const dtx = dt * xv;
      const bo = (s * G + g) * N, ao = c * N, so = (slot * Di + c) * N;
      let acc = 0;
      for (let k = 0; k < N; k++) {
        const hn = Math.exp(dt * A[ao + k]!) * st[so + k]! + dtx * Bm[bo + k]!;
        st[so + k] = hn;
        acc += Cm[bo + k]! * hn;
      }
      if (D) acc += D[c]! * xv;
      y[i] = z ? acc * silu(z[i]!) : acc;
    }
  }
  return be.wrap(y, args.x.shape);
}
