// The M1 Mamba-1 selective scan with grouped B/C (forward, backward, one-token step).
//
//   Δ_t = softplus(delta_t + deltaBias)                     (threshold 20, as mamba's CUDA kernel)
//   h_t[c,n] = exp(Δ_t[c]·A[c,n])·h_{t−1}[c,n] + Δ_t[c]·B_t[g,n]·x_t[c]      g = ⌊c/(Di/G)⌋
//   y_t[c]  = (Σ_n C_t[g,n]·h_t[c,n] + D[c]·x_t[c]) · silu(z_t[c])
//
// Every channel c is an independent recurrence over time, so the loops run per (b, c) over t with
// the N-wide state in a small array; x/delta/z are read with stride Di, B/C rows are shared by the
// Di/G channels of a group. The forward and backward loops live in scan-kernels.ts, which the worker
// threads run row by row (parallel.ts); the one-token step stays here.
import type { SelectiveScanArgs, SelectiveScanGrads, SelectiveScanStepArgs } from '../backend.js';
import { f32ToBf16Value, roundToDType } from '../dtype.js';
import { shapeString, type Tensor } from '../tensor.js';
import { scanDims, scanStateRows } from '../validate.js';
import { silu, softplus } from './basic.js';
import type { CpuBackend } from './index.js';
import { runTasksParallel } from './parallel.js';
import { dataOf } from './tensor.js';

function checkSlot(op: string, slots: Int32Array, i: number, S: number): number {
  const s = slots[i]!;
  if (!(s >= 0 && s < S)) throw new Error(`${op}: slots[${i}] = ${s} is outside [0, ${S})`);
  return s;
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
  const none = new Float32Array(0);
  // rows on the worker threads; with a state to write (prefill: the whole slot pool) on this thread
  runTasksParallel('selectiveScanForwardTasks',
    [x, delta, A, Bm, Cm, D ?? none, z ?? none, db ?? none, args.segments ?? new Int32Array(0), y, st ?? none, args.stateOut?.slots ?? new Int32Array(0)],
    [9], [T, Di, N, G], B, st ? 0 : 6 * B * T * Di * N);
  // a bf16 pool holds the final states rounded, as the reference's bf16 ssm_state does after prefill
  if (st && args.stateOut!.ssmState.dtype !== 'f32') {
    for (const slot of args.stateOut!.slots) roundToDType(st.subarray(slot * Di * N, (slot + 1) * Di * N), args.stateOut!.ssmState.dtype);
  }
  const outDType = args.outDType ?? 'f32';
  if (outDType !== 'f32') roundToDType(y, outDType);
  return be.wrap(y, args.x.shape, outDType);
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
  // reductions over the channels of a group (dB, dC) stay inside a row; over time and rows (dA, dD,
  // dDeltaBias) each row keeps its own partial sums, added here in row order: f64 throughout
  const dB = new Float64Array(B * T * G * N);
  const dC = new Float64Array(B * T * G * N);
  const dAp = new Float64Array(B * Di * N), dDp = new Float64Array(B * Di), dDbp = new Float64Array(B * Di);
  const none = new Float32Array(0);
  runTasksParallel('selectiveScanBackwardTasks',
    [x, delta, A, Bm, Cm, D ?? none, z ?? none, db ?? none, dyd, args.segments ?? new Int32Array(0), dx, ddelta, dz ?? none, dB, dC, dAp, dDp, dDbp],
    [10, 11, 12, 13, 14, 15, 16, 17], [T, Di, N, G], B, 20 * B * T * Di * N);
  const dA = new Float64Array(Di * N), dD = new Float64Array(Di), dDb = new Float64Array(Di);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < Di * N; j++) dA[j]! += dAp[b * Di * N + j]!;
    for (let c = 0; c < Di; c++) {
      dD[c]! += dDp[b * Di + c]!;
      dDb[c]! += dDbp[b * Di + c]!;
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
  // a bf16 state (the reference's in a bf16 model) is read as stored, updated in f32 and rounded when stored; y reads
  // the f32 update (mamba_ssm's selective_state_update: tl.store(state) then out = Σ state·C of the same f32 values)
  const round = args.ssmState.dtype === 'bf16' ? f32ToBf16Value : null;
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
        st[so + k] = round ? round(hn) : hn;
        acc += Cm[bo + k]! * hn;
      }
      if (D) acc += D[c]! * xv;
      y[i] = z ? acc * silu(z[i]!) : acc;
    }
  }
  return be.wrap(y, args.x.shape);
}
