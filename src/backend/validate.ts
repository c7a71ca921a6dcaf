// Shape and argument validation shared by the backends (cpu/, cuda/): every backend rejects a bad call
// with the same message before touching any data, so a caller's error does not depend on where it runs.
// Backend-specific limits (storage dtypes, kernel limits) stay in the backend.
import type { SampleRowsArgs, SoftmaxChunkOpts, SsdScanArgs, SsdScanStepArgs } from './backend.js';
import { assertShape, shapeString, type DType, type Tensor } from './tensor.js';

export interface ConvDims {
  B: number;
  T: number;
  C: number;
  K: number;
}

/** causal conv1d: x [B, T, C], w [C, K], bias [C] or null, segments [B*T] */
export function convDims(op: string, x: Tensor, w: Tensor, bias: Tensor | null, segments?: Int32Array): ConvDims {
  if (x.shape.length !== 3) throw new Error(`${op}: x must be [B, T, C], got ${shapeString(x.shape)}`);
  const [B, T, C] = x.shape as [number, number, number];
  if (w.shape.length !== 2 || w.shape[0] !== C) throw new Error(`${op}: w must be [C=${C}, K], got ${shapeString(w.shape)}`);
  const K = w.shape[1]!;
  if (K < 1) throw new Error(`${op}: conv width K must be ≥ 1, got w ${shapeString(w.shape)}`);
  if (bias && bias.size !== C) throw new Error(`${op}: bias must be [${C}], got ${shapeString(bias.shape)}`);
  if (segments && segments.length !== B * T) throw new Error(`${op}: segments has ${segments.length} entries, x has B*T = ${B * T}`);
  return { B, T, C, K };
}

export interface ScanDims {
  B: number;
  T: number;
  Di: number;
  N: number;
  G: number;
  /** channels per B/C group (Di / G) */
  perGroup: number;
}

/** the M1 selective scan's shapes; `lead` is 2 for [B, T] (parallel) or 1 for [n] (step) */
export function scanDims(
  op: string, lead: 1 | 2,
  a: { x: Tensor; delta: Tensor; A: Tensor; Bm: Tensor; Cm: Tensor; D: Tensor | null; z: Tensor | null; deltaBias: Tensor | null },
): ScanDims {
  const { x } = a;
  if (x.shape.length !== lead + 1) throw new Error(`${op}: x must have ${lead + 1} dims (${lead === 2 ? '[B, T, Di]' : '[n, Di]'}), got ${shapeString(x.shape)}`);
  const B = x.shape[0]!;
  const T = lead === 2 ? x.shape[1]! : 1;
  const Di = x.shape[lead]!;
  const same = (t: Tensor, name: string): void => {
    if (t.shape.length !== x.shape.length || t.shape.some((d, i) => d !== x.shape[i])) {
      throw new Error(`${op}: ${name} must have the shape of x ${shapeString(x.shape)}, got ${shapeString(t.shape)}`);
    }
  };
  same(a.delta, 'delta');
  if (a.z) same(a.z, 'z');
  if (a.A.shape.length !== 2 || a.A.shape[0] !== Di) throw new Error(`${op}: A must be [Di=${Di}, N], got ${shapeString(a.A.shape)}`);
  const N = a.A.shape[1]!;
  const bcShape = a.Bm.shape;
  if (bcShape.length !== lead + 2 || bcShape[0] !== B || (lead === 2 && bcShape[1] !== T) || bcShape[lead + 1] !== N) {
    throw new Error(`${op}: Bm must be ${lead === 2 ? `[B=${B}, T=${T}` : `[n=${B}`}, G, N=${N}], got ${shapeString(bcShape)}`);
  }
  const G = bcShape[lead]!;
  if (G < 1 || Di % G !== 0) throw new Error(`${op}: Di = ${Di} is not a multiple of the B/C group count G = ${G}`);
  if (a.Cm.shape.length !== bcShape.length || a.Cm.shape.some((d, i) => d !== bcShape[i])) {
    throw new Error(`${op}: Cm must have the shape of Bm ${shapeString(bcShape)}, got ${shapeString(a.Cm.shape)}`);
  }
  if (a.D && a.D.size !== Di) throw new Error(`${op}: D must be [${Di}], got ${shapeString(a.D.shape)}`);
  if (a.deltaBias && a.deltaBias.size !== Di) throw new Error(`${op}: deltaBias must be [${Di}], got ${shapeString(a.deltaBias.shape)}`);
  return { B, T, Di, N, G, perGroup: Di / G };
}

/** the selective scan's state pool [S, Di, N]; returns S */
export function scanStateRows(op: string, ssmState: Tensor, Di: number, N: number): number {
  if (ssmState.shape.length !== 3 || ssmState.shape[1] !== Di || ssmState.shape[2] !== N) {
    throw new Error(`${op}: ssmState must be [S, ${Di}, ${N}], got ${shapeString(ssmState.shape)}`);
  }
  if (ssmState.dtype !== 'f32' && ssmState.dtype !== 'bf16') {
    throw new Error(`${op}: ssmState must be stored as f32 or bf16 (the reference's Mamba state dtypes), got ${ssmState.dtype}`);
  }
  return ssmState.shape[0]!;
}

export interface SsdDims {
  B: number;
  T: number;
  H: number;
  P: number;
  G: number;
  N: number;
}

/** the Mamba-2 SSD scan's shapes (x [B, T, H, P], Bm/Cm [B, T, G, N]), its state pool included when stateOut is given */
export function ssdDims(op: string, args: SsdScanArgs): SsdDims {
  const { x, dt, A, Bm, Cm, D, dtBias } = args;
  if (x.shape.length !== 4) throw new Error(`${op}: x must be [B, T, H, P], got ${shapeString(x.shape)}`);
  const [B, T, H, P] = x.shape as [number, number, number, number];
  if (Bm.shape.length !== 4) throw new Error(`${op}: Bm must be [B, T, G, N], got ${shapeString(Bm.shape)}`);
  const G = Bm.shape[2]!, N = Bm.shape[3]!;
  assertShape(dt, [B, T, H], `${op}: dt`);
  assertShape(A, [H], `${op}: A`);
  assertShape(Bm, [B, T, G, N], `${op}: Bm`);
  assertShape(Cm, [B, T, G, N], `${op}: Cm`);
  if (D) assertShape(D, [H], `${op}: D`);
  if (dtBias) assertShape(dtBias, [H], `${op}: dtBias`);
  if (G < 1 || H % G !== 0) throw new Error(`${op}: ${H} heads are not a multiple of ${G} B/C groups`);
  if (!Number.isInteger(args.chunkSize) || args.chunkSize < 1) throw new Error(`${op}: chunkSize must be a positive integer, got ${args.chunkSize}`);
  if (args.segments && args.segments.length !== B * T) throw new Error(`${op}: segments has ${args.segments.length} entries, expected B*T = ${B * T}`);
  if (args.stateOut) ssdStateSlots(op, args.stateOut.ssmState, args.stateOut.slots, B, H, P, N);
  return { B, T, H, P, G, N };
}

/** the SSD one-token step's shapes (x [n, H, P], Bm/Cm [n, G, N]) and its state pool; T is 1 */
export function ssdStepDims(op: string, args: SsdScanStepArgs): SsdDims {
  if (args.x.shape.length !== 3) throw new Error(`${op}: x must be [n, H, P], got ${shapeString(args.x.shape)}`);
  const [n, H, P] = args.x.shape as [number, number, number];
  if (args.Bm.shape.length !== 3) throw new Error(`${op}: Bm must be [n, G, N], got ${shapeString(args.Bm.shape)}`);
  const G = args.Bm.shape[1]!, N = args.Bm.shape[2]!;
  assertShape(args.dt, [n, H], `${op}: dt`);
  assertShape(args.A, [H], `${op}: A`);
  assertShape(args.Bm, [n, G, N], `${op}: Bm`);
  assertShape(args.Cm, [n, G, N], `${op}: Cm`);
  if (args.D) assertShape(args.D, [H], `${op}: D`);
  if (args.dtBias) assertShape(args.dtBias, [H], `${op}: dtBias`);
  if (G < 1 || H % G !== 0) throw new Error(`${op}: ${H} heads are not a multiple of ${G} B/C groups`);
  ssdStateSlots(op, args.ssmState, args.slots, n, H, P, N);
  return { B: n, T: 1, H, P, G, N };
}

/** SSD state pool [S, H, P, N] and n slots into it */
export function ssdStateSlots(op: string, ssmState: Tensor, slots: Int32Array, n: number, H: number, P: number, N: number): void {
  if (ssmState.shape.length !== 4) throw new Error(`${op}: ssmState must be [S, H, P, N], got ${shapeString(ssmState.shape)}`);
  assertShape(ssmState, [ssmState.shape[0]!, H, P, N], `${op}: ssmState`);
  if (slots.length !== n) throw new Error(`${op}: slots has ${slots.length} entries, expected ${n}`);
  const S = ssmState.shape[0]!;
  for (let i = 0; i < n; i++) {
    if (slots[i]! < 0 || slots[i]! >= S) throw new Error(`${op}: slots[${i}] = ${slots[i]} is outside the state pool [0, ${S})`);
  }
}

/** gated RMSNorm: y, z [.., D], w [D], groups of groupSize along D; returns D */
export function gatedNormDim(op: string, y: Tensor, z: Tensor, w: Tensor, groupSize: number): number {
  const D = y.shape[y.shape.length - 1];
  if (D === undefined) throw new Error(`${op}: y must have at least one dimension`);
  assertShape(z, y.shape, `${op}: z`);
  assertShape(w, [D], `${op}: w`);
  if (!Number.isInteger(groupSize) || groupSize < 1 || D % groupSize !== 0) {
    throw new Error(`${op}: last dim ${D} is not a multiple of groupSize ${groupSize}`);
  }
  return D;
}

/**
 * softmaxChunkStats / softmaxChunkGrad: logits [R, Vc], `other` [R, Vc], targets [R], and the per-row
 * block `rowBlock` [R, 4] (stats or coefs, named `rowBlockName` in the message)
 */
export function softmaxChunkDims(
  op: string, logits: Tensor, opts: SoftmaxChunkOpts, rowBlock: Tensor, rowBlockName: string,
): { R: number; Vc: number } {
  if (logits.shape.length !== 2) throw new Error(`${op}: logits must be [R, Vc], got ${shapeString(logits.shape)}`);
  const [R, Vc] = logits.shape as [number, number];
  if (opts.other && opts.other.size !== R * Vc) throw new Error(`${op}: other has shape ${shapeString(opts.other.shape)}, logits ${shapeString(logits.shape)}`);
  if (opts.targets && opts.targets.length !== R) throw new Error(`${op}: ${opts.targets.length} targets for ${R} rows`);
  if (rowBlock.size !== R * 4) throw new Error(`${op}: ${rowBlockName} has shape ${shapeString(rowBlock.shape)}, expected [${R}, 4]`);
  return { R, Vc };
}

/**
 * sampleRows: logits [R, V] and one entry per output row in every field of `rows`, each checked (the
 * message names the field and the row). Returns n (output rows), R and V.
 */
export function sampleRowsDims(op: string, logits: Tensor, rows: SampleRowsArgs): { n: number; R: number; V: number } {
  if (logits.shape.length !== 2) throw new Error(`${op}: logits must be [R, V], got ${shapeString(logits.shape)}`);
  const [R, V] = logits.shape as [number, number];
  if (V < 1) throw new Error(`${op}: logits ${shapeString(logits.shape)} have an empty vocabulary`);
  const n = rows.logitsRow.length;
  const fields = ['temperature', 'topP', 'topK', 'minP', 'uniform'] as const;
  for (const f of fields) {
    if (rows[f].length !== n) throw new Error(`${op}: ${f} has ${rows[f].length} entries, logitsRow has ${n}`);
  }
  for (let i = 0; i < n; i++) {
    const r = rows.logitsRow[i]!, t = rows.temperature[i]!, p = rows.topP[i]!, k = rows.topK[i]!, m = rows.minP[i]!, u = rows.uniform[i]!;
    if (!(r >= 0 && r < R)) throw new Error(`${op}: logitsRow[${i}] = ${r} is outside [0, ${R}) of logits ${shapeString(logits.shape)}`);
    if (!(Number.isFinite(t) && t >= 0)) throw new Error(`${op}: temperature[${i}] = ${t} is not a finite number ≥ 0`);
    if (!(p > 0 && p <= 1)) throw new Error(`${op}: topP[${i}] = ${p} is outside (0, 1]`);
    if (!(k >= -1)) throw new Error(`${op}: topK[${i}] = ${k} is below -1 (-1 or 0 = off)`);
    if (!(m >= 0 && m <= 1)) throw new Error(`${op}: minP[${i}] = ${m} is outside [0, 1]`);
    if (!(u >= 0 && u < 1)) throw new Error(`${op}: uniform[${i}] = ${u} is outside [0, 1)`);
  }
  return { n, R, V };
}

/**
 * A matmul's output dtype (f32 or bf16; f32 by default), refused with accumulateInto / writeInto (which hold f32 sums),
 * and at most one of those two.
 */
export function checkMatmulOut(opts: { accumulateInto?: Tensor; writeInto?: Tensor; outDType?: DType }): DType {
  const d = opts.outDType ?? 'f32';
  if (d !== 'f32' && d !== 'bf16') throw new Error(`matmul: outDType must be f32 or bf16, got ${String(d)}`);
  if (opts.accumulateInto && opts.writeInto) throw new Error('matmul: accumulateInto and writeInto cannot be combined (add to one tensor, or write over it)');
  if (d !== 'f32' && opts.accumulateInto) throw new Error(`matmul: outDType ${d} cannot be combined with accumulateInto (an f32 sum)`);
  if (d !== 'f32' && opts.writeInto) throw new Error(`matmul: outDType ${d} cannot be combined with writeInto (an f32 tensor)`);
  return d;
}

/** matmulPair's operands: two 2-D weights of one shape and dtype whose columns match a's last dimension */
export function checkMatmulPair(a: Tensor, w1: Tensor, w2: Tensor): void {
  if (w1.shape.length !== 2 || w2.shape.length !== 2 || w1.shape[0] !== w2.shape[0] || w1.shape[1] !== w2.shape[1]) {
    throw new Error(`matmulPair: the weights must be 2-D of one shape, got ${shapeString(w1.shape)} and ${shapeString(w2.shape)}`);
  }
  if (w1.dtype !== w2.dtype) throw new Error(`matmulPair: the weights' dtypes differ (${w1.dtype}, ${w2.dtype})`);
  const k = a.shape.length > 0 ? a.shape[a.shape.length - 1]! : 1;
  if (k !== w1.shape[1]) throw new Error(`matmulPair: a ${shapeString(a.shape)} has ${k} columns, the weights ${w1.shape[1]}`);
}

/** checks a sliceLastDim range; [rows, width of t's last dim] */
export function sliceLastDimRange(t: Tensor, start: number, end: number): { rows: number; width: number } {
  const width = t.shape.length > 0 ? t.shape[t.shape.length - 1]! : 1;
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= width)) {
    throw new Error(`sliceLastDim: columns [${start}, ${end}) are not a range inside the last dimension ${width} of ${shapeString(t.shape)}`);
  }
  return { rows: width > 0 ? t.size / width : 0, width };
}
