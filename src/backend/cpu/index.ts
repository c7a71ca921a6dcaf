import {
  mamba1DecodeStepComposite, type Mamba1DecodeStepArgs,
  type AdamWStepArgs, type Backend, type MatmulOptions, type SelectiveScanArgs, type SoftmaxChunkOpts, type SelectiveScanGrads, type SelectiveScanStepArgs, type SsdScanArgs, type SsdScanGrads, type SsdScanStepArgs,
} from '../backend.js';
import type { SampleRowsArgs, SampleRowsResult } from '../backend.js';
import { roundToDType } from '../dtype.js';
import { rowSliceShape, shapeSize, shapeString, type DType, type Tensor } from '../tensor.js';
import { checkMatmulOut, checkMatmulPair, sampleRowsDims, sliceLastDimRange, softmaxChunkDims } from '../validate.js';
import * as attn from './attention.js';
import * as basic from './basic.js';
import * as conv from './conv.js';
import { RowSampler, sampleRowsByDefinition } from './sampling.js';
import { matmulGeneral } from './matmul.js';
import * as scan from './selective-scan.js';
import * as ssd from './ssd.js';
import * as trainOps from './train-ops.js';
import { CpuTensor, dataOf } from './tensor.js';

/** The reference backend: pure TypeScript, f32 compute. */
export class CpuBackend implements Backend {
  readonly name = 'cpu';
  /** sampleRows' scratch (vocabulary-sized), kept for the next call with the same vocabulary */
  private rowSampler: RowSampler | null = null;

  /** wrap an f32 array (taken, not copied) as a tensor */
  wrap(data: Float32Array, shape: readonly number[], dtype: DType = 'f32'): CpuTensor {
    return new CpuTensor(this, data, shape, dtype);
  }

  fromArray(data: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const n = shapeSize(shape);
    if (data.length !== n) throw new Error(`fromArray: ${data.length} values for shape ${shapeString(shape)} (${n} elements)`);
    const a = Float32Array.from(data);
    roundToDType(a, dtype);
    return this.wrap(a, shape, dtype);
  }
  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    return this.wrap(new Float32Array(shapeSize(shape)), shape, dtype);
  }
  read(t: Tensor): Float32Array {
    return dataOf(t).slice();
  }
  write(t: Tensor, data: ArrayLike<number>): void {
    const d = dataOf(t);
    if (data.length !== d.length) throw new Error(`write: ${data.length} values into a tensor of ${d.length}`);
    d.set(data);
    roundToDType(d, t.dtype);
  }
  tidy<R>(fn: () => R): R {
    return fn();
  }
  reshape(t: Tensor, shape: readonly number[]): Tensor {
    if (shapeSize(shape) !== t.size) throw new Error(`reshape: cannot view ${shapeString(t.shape)} as ${shapeString(shape)}`);
    return this.wrap(dataOf(t), shape, t.dtype);
  }
  rowSlice(t: Tensor, r0: number, r1: number): Tensor {
    const { shape, rowSize } = rowSliceShape(t, r0, r1);
    return this.wrap(dataOf(t).subarray(r0 * rowSize, r1 * rowSize), shape, t.dtype);
  }
  copy(t: Tensor): Tensor {
    return this.wrap(dataOf(t).slice(), t.shape, t.dtype);
  }
  copyRows(t: Tensor, srcRows: Int32Array, dstRows: Int32Array): void {
    const d = dataOf(t);
    const R = t.shape[0] ?? 1;
    if (srcRows.length !== dstRows.length) throw new Error(`copyRows: ${srcRows.length} source rows but ${dstRows.length} destination rows`);
    const rowSize = R > 0 ? t.size / R : 0;
    for (let i = 0; i < srcRows.length; i++) {
      const s = srcRows[i]!, r = dstRows[i]!;
      if (!(s >= 0 && s < R && r >= 0 && r < R)) throw new Error(`copyRows: row ${s} → ${r} is outside [0, ${R}) of ${shapeString(t.shape)}`);
      if (s !== r) d.copyWithin(r * rowSize, s * rowSize, (s + 1) * rowSize);
    }
  }
  cast(t: Tensor, dtype: DType): Tensor {
    const a = dataOf(t).slice();
    roundToDType(a, dtype);
    return this.wrap(a, t.shape, dtype);
  }

  add(a: Tensor, b: Tensor): Tensor {
    const x = dataOf(a), y = dataOf(b);
    if (x.length !== y.length) throw new Error(`add: shapes ${shapeString(a.shape)} and ${shapeString(b.shape)} differ`);
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = x[i]! + y[i]!;
    return this.wrap(out, a.shape);
  }
  addInPlace(dst: Tensor, src: Tensor, alpha = 1): void {
    const x = dataOf(dst), y = dataOf(src);
    if (x.length !== y.length) throw new Error(`addInPlace: shapes ${shapeString(dst.shape)} and ${shapeString(src.shape)} differ`);
    if (alpha === 1) for (let i = 0; i < x.length; i++) x[i]! += y[i]!;
    else for (let i = 0; i < x.length; i++) x[i]! += alpha * y[i]!;
  }
  scaleInPlace(t: Tensor, s: number): void {
    const x = dataOf(t);
    for (let i = 0; i < x.length; i++) x[i]! *= s;
  }
  fill(t: Tensor, value: number): void {
    dataOf(t).fill(value);
  }
  sumSquares(t: Tensor): number {
    const x = dataOf(t);
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
    return s;
  }
  sumSquaresEach(ts: readonly Tensor[]): Float64Array {
    return Float64Array.from(ts, (t) => this.sumSquares(t));
  }

  mul(a: Tensor, b: Tensor): Tensor {
    const x = dataOf(a), y = dataOf(b);
    if (x.length !== y.length) throw new Error(`mul: shapes ${shapeString(a.shape)} and ${shapeString(b.shape)} differ`);
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = x[i]! * y[i]!;
    return this.wrap(out, a.shape);
  }
  negExp(t: Tensor): Tensor {
    const x = dataOf(t);
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = -Math.exp(x[i]!);
    return this.wrap(out, t.shape);
  }
  addBias(x: Tensor, bias: Tensor): Tensor {
    const C = basic.lastDim(x);
    if (bias.size !== C) throw new Error(`addBias: bias ${shapeString(bias.shape)} does not match last dim ${C} of ${shapeString(x.shape)}`);
    const a = dataOf(x), b = dataOf(bias);
    const out = new Float32Array(a.length);
    for (let o = 0; o < a.length; o += C) for (let c = 0; c < C; c++) out[o + c] = a[o + c]! + b[c]!;
    return this.wrap(out, x.shape);
  }
  sumRows(x: Tensor): Tensor {
    const C = basic.lastDim(x);
    const a = dataOf(x);
    const acc = new Float64Array(C);
    for (let o = 0; o < a.length; o += C) for (let c = 0; c < C; c++) acc[c]! += a[o + c]!;
    return this.wrap(Float32Array.from(acc), [C]);
  }

  splitLastDim(t: Tensor, sizes: readonly number[]): Tensor[] {
    const lead = t.shape.slice(0, -1);
    return basic.splitLastDim(dataOf(t), basic.lastDim(t), sizes).map((d, i) => this.wrap(d, [...lead, sizes[i]!], t.dtype));
  }
  sliceLastDim(t: Tensor, start: number, end: number): Tensor {
    const { rows, width } = sliceLastDimRange(t, start, end);
    const src = dataOf(t), w = end - start, out = new Float32Array(rows * w);
    for (let r = 0; r < rows; r++) out.set(src.subarray(r * width + start, r * width + end), r * w);
    return this.wrap(out, [...t.shape.slice(0, -1), w], t.dtype);
  }
  concatLastDim(ts: readonly Tensor[], outDType?: DType): Tensor {
    if (ts.length === 0) throw new Error('concatLastDim: no tensors');
    const lead = ts[0]!.shape.slice(0, -1);
    const rows = shapeSize(lead);
    for (const t of ts) {
      if (shapeSize(t.shape.slice(0, -1)) !== rows) throw new Error(`concatLastDim: leading shapes differ (${ts.map((x) => shapeString(x.shape)).join(', ')})`);
    }
    const widths = ts.map((t) => basic.lastDim(t));
    const dtype = outDType ?? (ts.every((t) => t.dtype === ts[0]!.dtype) ? ts[0]!.dtype : 'f32'); // same dtypes: already rounded to it
    const out = basic.concatLastDim(ts.map(dataOf), widths, rows);
    if (outDType !== undefined && outDType !== 'f32') roundToDType(out, outDType);
    return this.wrap(out, [...lead, widths.reduce((s, w) => s + w, 0)], dtype);
  }
  repeatGroups(x: Tensor, width: number, repeat: number): Tensor {
    const d = basic.lastDim(x);
    return this.wrap(basic.repeatGroups(dataOf(x), d, width, repeat), [...x.shape.slice(0, -1), d * repeat]);
  }
  repeatGroupsBackward(dy: Tensor, width: number, repeat: number): Tensor {
    const d = basic.lastDim(dy);
    return this.wrap(basic.repeatGroupsBackward(dataOf(dy), d, width, repeat), [...dy.shape.slice(0, -1), d / repeat]);
  }

  matmulPair(a: Tensor, w1: Tensor, w2: Tensor, opts: { outDType?: DType } = {}): [Tensor, Tensor] {
    checkMatmulPair(a, w1, w2);
    return [this.matmul(a, w1, { transB: true, outDType: opts.outDType }), this.matmul(a, w2, { transB: true, outDType: opts.outDType })];
  }
  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    const outDType = checkMatmulOut(opts);
    const aCols = basic.lastDim(a), aRows = a.size / aCols;
    if (b.shape.length !== 2) throw new Error(`matmul: b must be 2-D, got ${shapeString(b.shape)}`);
    const [bRows, bCols] = b.shape as [number, number];
    const transA = opts.transA ?? false, transB = opts.transB ?? false;
    const M = transA ? aCols : aRows;
    const N = transB ? bRows : bCols;
    const K = transA ? aRows : aCols;
    const Kb = transB ? bCols : bRows;
    if (K !== Kb) {
      throw new Error(`matmul: inner dimensions differ: a ${shapeString(a.shape)}${transA ? 'ᵀ' : ''} · b ${shapeString(b.shape)}${transB ? 'ᵀ' : ''}`);
    }
    const outShape = transA ? [M, N] : [...a.shape.slice(0, -1), N];
    let out: Float32Array;
    const into = opts.accumulateInto ?? opts.writeInto;
    if (into) {
      const what = opts.accumulateInto ? 'accumulateInto' : 'writeInto';
      if (into.size !== M * N) throw new Error(`matmul: ${what} has shape ${shapeString(into.shape)}, product is [${M}, ${N}]`);
      if (into.dtype !== 'f32') throw new Error(`matmul: ${what} must be f32, got ${into.dtype}`);
      out = dataOf(into);  // writeInto: accumulate false below writes every element, the old values are not read
    } else out = new Float32Array(M * N);
    matmulGeneral(dataOf(a), aRows, aCols, transA, dataOf(b), bRows, bCols, transB, out, !!opts.accumulateInto);
    if (into) return into;
    roundToDType(out, outDType);
    return this.wrap(out, outShape, outDType);
  }

  embedding(table: Tensor, ids: Int32Array): Tensor {
    const [V, D] = table.shape as [number, number];
    return this.wrap(basic.embedding(dataOf(table), V, D, ids), [ids.length, D]);
  }
  embeddingBackward(dTable: Tensor, ids: Int32Array, dy: Tensor): void {
    basic.embeddingBackward(dataOf(dTable), dTable.shape[1]!, ids, dataOf(dy));
  }
  rmsNorm(x: Tensor, w: Tensor, eps: number, outDType: DType = 'f32'): { y: Tensor; rstd: Tensor } {
    const D = basic.lastDim(x);
    if (w.size !== D) throw new Error(`rmsNorm: weight has ${w.size} elements, input last dim is ${D}`);
    const r = basic.rmsNorm(dataOf(x), dataOf(w), D, eps);
    if (outDType !== 'f32') roundToDType(r.y, outDType);
    return { y: this.wrap(r.y, x.shape, outDType), rstd: this.wrap(r.rstd, [x.size / D]) };
  }
  rmsNormBackward(dy: Tensor, x: Tensor, w: Tensor, rstd: Tensor, residual?: Tensor): { dx: Tensor; dw: Tensor } {
    const D = basic.lastDim(x);
    if (residual && residual.size !== x.size) throw new Error(`rmsNormBackward: residual ${shapeString(residual.shape)} does not match x ${shapeString(x.shape)}`);
    const r = basic.rmsNormBackward(dataOf(dy), dataOf(x), dataOf(w), dataOf(rstd), D);
    if (residual) {
      const e = dataOf(residual);
      for (let i = 0; i < r.dx.length; i++) r.dx[i]! += e[i]!;
    }
    return { dx: this.wrap(r.dx, x.shape), dw: this.wrap(r.dw, [D]) };
  }
  addRmsNorm(x: Tensor, r: Tensor | null, w: Tensor, eps: number, outDType: DType, opts: { rstd?: boolean } = {}): { h: Tensor; y: Tensor; rstd?: Tensor } {
    if (r && r.size !== x.size) throw new Error(`addRmsNorm: r ${shapeString(r.shape)} does not match x ${shapeString(x.shape)}`);
    const h = r ? this.add(x, r) : x;
    const { y, rstd } = this.rmsNorm(h, w, eps, outDType);
    return opts.rstd ? { h, y, rstd } : { h, y };
  }
  swiglu(gate: Tensor, up: Tensor, outDType: DType = 'f32'): Tensor {
    if (gate.size !== up.size) throw new Error(`swiglu: gate ${shapeString(gate.shape)} and up ${shapeString(up.shape)} differ`);
    const h = basic.swiglu(dataOf(gate), dataOf(up));
    if (outDType !== 'f32') roundToDType(h, outDType);
    return this.wrap(h, gate.shape, outDType);
  }
  swigluBackward(dh: Tensor, gate: Tensor, up: Tensor, outDType: DType = 'f32'): { dGate: Tensor; dUp: Tensor } {
    const r = basic.swigluBackward(dataOf(dh), dataOf(gate), dataOf(up));
    if (outDType !== 'f32') {
      roundToDType(r.dGate, outDType);
      roundToDType(r.dUp, outDType);
    }
    return { dGate: this.wrap(r.dGate, gate.shape, outDType), dUp: this.wrap(r.dUp, up.shape, outDType) };
  }

  rope(x: Tensor, positions: Int32Array, invFreq: Float32Array, inverse = false): Tensor {
    return attn.rope(this, x, positions, invFreq, inverse);
  }
  attention(q: Tensor, k: Tensor, v: Tensor, opts: { scale: number; segments?: Int32Array }): { out: Tensor; lse: Tensor } {
    return attn.attention(this, q, k, v, opts);
  }
  attentionBackward(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, opts: { scale: number; segments?: Int32Array },
  ): { dq: Tensor; dk: Tensor; dv: Tensor } {
    return attn.attentionBackward(this, dout, q, k, v, out, lse, opts);
  }
  kvCacheWrite(kCache: Tensor, vCache: Tensor, k: Tensor, v: Tensor, slotMapping: Int32Array): void {
    attn.kvCacheWrite(this, kCache, vCache, k, v, slotMapping);
  }
  pagedAttentionDecode(
    q: Tensor, kCache: Tensor, vCache: Tensor, blockTables: Int32Array, maxBlocks: number, seqLens: Int32Array, scale: number,
  ): Tensor {
    return attn.pagedAttentionDecode(this, q, kCache, vCache, blockTables, maxBlocks, seqLens, scale);
  }

  causalConv1d(
    x: Tensor, w: Tensor, bias: Tensor | null,
    opts: { silu: boolean; segments?: Int32Array; stateOut?: { convState: Tensor; slots: Int32Array } },
  ): Tensor {
    return conv.causalConv1d(this, x, w, bias, opts);
  }
  causalConv1dBackward(
    dy: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, opts: { silu: boolean; segments?: Int32Array },
  ): { dx: Tensor; dw: Tensor; dbias: Tensor | null } {
    return conv.causalConv1dBackward(this, dy, x, w, bias, opts);
  }
  causalConv1dStep(x: Tensor, convState: Tensor, slots: Int32Array, w: Tensor, bias: Tensor | null, silu: boolean): Tensor {
    return conv.causalConv1dStep(this, x, convState, slots, w, bias, silu);
  }

  selectiveScan(args: SelectiveScanArgs): Tensor {
    return scan.selectiveScan(this, args);
  }
  selectiveScanBackward(dy: Tensor, args: SelectiveScanArgs): SelectiveScanGrads {
    return scan.selectiveScanBackward(this, dy, args);
  }
  mamba1DecodeStep(args: Mamba1DecodeStepArgs): Tensor {
    return mamba1DecodeStepComposite(this, args);
  }
  selectiveScanStep(args: SelectiveScanStepArgs): Tensor {
    return scan.selectiveScanStep(this, args);
  }
  ssdScan(args: SsdScanArgs): Tensor {
    return ssd.ssdScan(this, args);
  }
  ssdScanBackward(dy: Tensor, args: SsdScanArgs): SsdScanGrads {
    return ssd.ssdScanBackward(this, dy, args);
  }
  ssdScanStep(args: SsdScanStepArgs): Tensor {
    return ssd.ssdScanStep(this, args);
  }
  gatedRmsNorm(y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number): Tensor {
    return ssd.gatedRmsNorm(this, y, z, w, groupSize, eps);
  }
  gatedRmsNormBackward(dout: Tensor, y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number): { dy: Tensor; dz: Tensor; dw: Tensor } {
    return ssd.gatedRmsNormBackward(this, dout, y, z, w, groupSize, eps);
  }

  logSoftmax(logits: Tensor): Tensor {
    return this.wrap(basic.logSoftmax(dataOf(logits), basic.lastDim(logits)), logits.shape);
  }
  argmaxRows(logits: Tensor): { ids: Int32Array; logprobs: Float32Array } {
    const V = basic.lastDim(logits);
    const x = dataOf(logits);
    const rows = V > 0 ? x.length / V : 0;
    const ids = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      let best = -Infinity, bi = 0;
      for (let j = 0; j < V; j++) if (x[r * V + j]! > best) { best = x[r * V + j]!; bi = j; }
      ids[r] = bi;
    }
    return { ids, logprobs: basic.gatherLogprobs(x, V, ids) };
  }
  /** the definition itself: RowSampler per row, on the logits in place (nothing is copied) */
  sampleRows(logits: Tensor, rows: SampleRowsArgs): SampleRowsResult {
    const { n, V } = sampleRowsDims('sampleRows', logits, rows);
    const sampler = this.rowSampler?.vocabSize === V ? this.rowSampler : (this.rowSampler = new RowSampler(V));
    const x = dataOf(logits);
    const ids = new Int32Array(n), logprobs = new Float32Array(n);
    sampleRowsByDefinition(sampler, (r) => x.subarray(r * V, (r + 1) * V), rows, ids, logprobs);
    return { ids, logprobs, fallbackRows: 0 };
  }
  gatherLogprobs(logits: Tensor, targets: Int32Array): Float32Array {
    return basic.gatherLogprobs(dataOf(logits), basic.lastDim(logits), targets);
  }
  crossEntropy(logits: Tensor, targets: Int32Array, mask?: Uint8Array): { loss: number; dlogits: Tensor } {
    const r = basic.crossEntropy(dataOf(logits), basic.lastDim(logits), targets, mask);
    return { loss: r.loss, dlogits: this.wrap(r.dlogits, logits.shape) };
  }

  softmaxChunkStats(logits: Tensor, stats: Tensor, opts: SoftmaxChunkOpts): void {
    const a = this.chunkArgs('softmaxChunkStats', logits, opts, stats, 'stats');
    trainOps.softmaxChunkStats(a, dataOf(stats));
  }
  softmaxChunkGrad(logits: Tensor, coefs: Tensor, opts: SoftmaxChunkOpts): Tensor {
    const a = this.chunkArgs('softmaxChunkGrad', logits, opts, coefs, 'coefs');
    return this.wrap(trainOps.softmaxChunkGrad(a, dataOf(coefs)), logits.shape);
  }
  private chunkArgs(op: string, logits: Tensor, opts: SoftmaxChunkOpts, rowBlock: Tensor, rowBlockName: string): trainOps.ChunkArgs {
    const { R, Vc } = softmaxChunkDims(op, logits, opts, rowBlock, rowBlockName);
    return {
      logits: dataOf(logits), R, Vc, scale: opts.scale, vocabOffset: opts.vocabOffset,
      targets: opts.targets ?? null, other: opts.other ? dataOf(opts.other) : null,
    };
  }

  adamwStep(args: AdamWStepArgs): void {
    if (args.nonFinite && args.nonFinite.size !== 1) throw new Error(`adamwStep: nonFinite must hold 1 value, got ${shapeString(args.nonFinite.shape)}`);
    const param = dataOf(args.param);
    trainOps.adamwStep(
      { param, paramDType: args.param.dtype, grad: dataOf(args.grad), m: dataOf(args.m), v: dataOf(args.v), master: args.master ? dataOf(args.master) : null },
      args,
    );
    if (args.nonFinite) {
      let bad = 0;
      for (let i = 0; i < param.length; i++) if (!Number.isFinite(param[i]!)) bad++;
      dataOf(args.nonFinite)[0]! += bad;
    }
  }
}

export { CpuTensor, dataOf };
