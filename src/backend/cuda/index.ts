// The CUDA backend: every op of the Backend interface on the GPU through the m1cuda addon.
//
// Storage: tensors keep their dtype — f32, or bf16 (weights loaded as bf16); f16 tensors are held as
// f32 on the device with values rounded to f16 at upload. Activations are f32. Ops that take a bf16
// tensor where they compute in f32 read it through a temporary f32 copy; the matmul and embedding
// read bf16 directly. Host index data (ids, positions, slots, block tables) is uploaded into
// temporary buffers from the caching allocator, freed as soon as the op is queued (all work runs on
// one stream, so a block is reused only after the kernels that read it).
//
// Shape validation is shared with the CPU backend (src/backend/validate.ts); this file adds the
// cuda-only checks (device tensors, f32 storage of in-place state, kernel limits).
import {
  MATMUL_PRECISIONS, mamba1DecodeStepComposite, type Mamba1DecodeStepArgs, type MatmulPrecision,
  type AdamWStepArgs, type Backend, type MatmulOptions, type StepGraph, type SelectiveScanArgs, type SoftmaxChunkOpts, type SelectiveScanGrads, type SelectiveScanStepArgs,
  type SsdScanArgs, type SsdScanGrads, type SsdScanStepArgs,
} from '../backend.js';
import { bf16BitsToF32, f32ToBf16Bits, roundToDType } from '../dtype.js';
import { assertShape, rowSliceShape, shapeSize, shapeString, type DType, type Tensor } from '../tensor.js';
import { loadAddon, type AllocatorStats, type DeviceInfo, type M1Cuda } from './addon.js';
import { checkMatmulOut, checkMatmulPair, convDims, gatedNormDim, scanDims, sliceLastDimRange, scanStateRows, softmaxChunkDims, ssdDims, ssdStepDims } from '../validate.js';
import { CudaTensor, DeviceBuffer, storageOf, tidyScopes, type Storage } from './tensor.js';
import type { SampleRowsArgs, SampleRowsResult } from '../backend.js';
import { RowSampler, sampleRowsByDefinition } from '../cpu/sampling.js';
import { sampleRowsDims } from '../validate.js';

/** temporaries of one op: uploaded index arrays, f32 copies of bf16 inputs, scratch */
class Scope {
  private bufs: number[] = [];
  constructor(
    private readonly a: M1Cuda,
    /** the device copy of arr when it is (part of) a recorded graph's input, else 0 */
    private readonly resident: (arr: Int32Array) => number,
  ) {}
  temp(bytes: number): number {
    const p = this.a.alloc(Math.max(4, bytes));
    this.bufs.push(p);
    return p;
  }
  ints(arr: Int32Array): number {
    const r = this.resident(arr);
    if (r !== 0) return r;
    const p = this.temp(arr.byteLength);
    this.a.upload(p, arr);
    return p;
  }
  /** device address of t's values as f32 (a converted copy for bf16 storage) */
  f32(t: Tensor): number {
    const c = t as CudaTensor;
    if (c.storage === 'f32') return c.ptr;
    const p = this.temp(c.size * 4);
    this.a.call('cast_bf16_f32', new Float64Array([p, c.ptr, c.size]));
    return p;
  }
  optF32(t: Tensor | null | undefined): number {
    return t ? this.f32(t) : 0;
  }
  close(): void {
    for (const p of this.bufs) this.a.free(p);
    this.bufs = [];
  }
}

function lastDim(t: Tensor): number {
  const d = t.shape[t.shape.length - 1];
  if (d === undefined) throw new Error('expected a tensor with at least one dimension');
  return d;
}

/** segStart[b*T + t]: where t's segment begins in row b (row start, or the last change of segment id) */
function segmentStarts(segments: Int32Array, B: number, T: number): Int32Array {
  const s = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    let start = 0;
    for (let t = 0; t < T; t++) {
      if (t > 0 && segments[b * T + t] !== segments[b * T + t - 1]) start = t;
      s[b * T + t] = start;
    }
  }
  return s;
}

function collectTensors(v: unknown, out: Set<Tensor>, depth: number): void {
  if (depth > 4 || v === null || typeof v !== 'object') return;
  if (v instanceof CudaTensor) {
    out.add(v);
    return;
  }
  for (const x of Array.isArray(v) ? v : Object.values(v as Record<string, unknown>)) collectTensors(x, out, depth + 1);
}

/** a host index array's device copy while a graph is recorded: ops given [off, end) of buf read ptr */
interface ResidentInput {
  buf: ArrayBufferLike;
  off: number;
  end: number;
  ptr: number;
}

export class CudaBackend implements Backend {
  readonly name = 'cuda';
  /** products with a bf16 weight run on the tensor cores with the activation rounded to bf16 (matmul.cpp) */
  readonly roundsMatmulInputsToBf16 = true;
  get roundsF32ProductsToBf16(): boolean {
    return MATMUL_PRECISIONS[this.f32Precision] === 'medium';
  }
  readonly addon: M1Cuda;
  readonly device: DeviceInfo;
  /** set while a graph is being recorded */
  private resident: ResidentInput[] | null = null;
  /** device copies of small constant f32 tables (RoPE's inverse frequencies), by array */
  private constants = new WeakMap<Float32Array, { ptr: number; values: Float32Array }>();
  private readonly constantRegistry: FinalizationRegistry<number>;
  private readonly residentInput = (arr: Int32Array): number => {
    if (this.resident === null) return 0;
    for (const r of this.resident) {
      if (arr.buffer === r.buf && arr.byteOffset >= r.off && arr.byteOffset + arr.byteLength <= r.end) return r.ptr + (arr.byteOffset - r.off);
    }
    return 0;
  };

  constructor() {
    const r = loadAddon();
    if (!r.ok) throw new Error(`cuda backend unavailable: ${r.reason}`);
    this.addon = r.addon;
    this.device = r.device;
    const addon = r.addon;
    this.constantRegistry = new FinalizationRegistry<number>((ptr) => addon.free(ptr));
  }

  /** device address of a constant f32 table, uploaded once per array (again if its values change) */
  private constantF32(arr: Float32Array): number {
    const hit = this.constants.get(arr);
    if (hit && hit.values.length === arr.length && hit.values.every((v, i) => Object.is(v, arr[i]))) return hit.ptr;
    const ptr = this.addon.constant(arr);
    if (hit) {
      this.constantRegistry.unregister(hit);
      this.addon.free(hit.ptr);
    }
    const entry = { ptr, values: Float32Array.from(arr) };
    this.constants.set(arr, entry);
    this.constantRegistry.register(arr, ptr, entry);
    return ptr;
  }

  // ---------- internals ----------

  private t(x: Tensor, what = 'tensor'): CudaTensor {
    if (!(x instanceof CudaTensor)) throw new Error(`${what}: expected a cuda tensor, got one of backend '${x.backend.name}'`);
    if (x.disposed) throw new Error(`${what}: tensor used after dispose()`);
    return x;
  }
  private f32Tensor(x: Tensor, what: string): CudaTensor {
    const c = this.t(x, what);
    if (c.storage !== 'f32') throw new Error(`${what}: must be stored as f32 (it is updated in place), got ${c.dtype}`);
    return c;
  }
  private alloc(shape: readonly number[], dtype: DType = 'f32'): CudaTensor {
    const n = shapeSize(shape);
    const bytes = n * (storageOf(dtype) === 'bf16' ? 2 : 4);
    const buf = new DeviceBuffer(this.addon, this.addon.alloc(Math.max(4, bytes)), bytes);
    return new CudaTensor(this, buf, shape, dtype);
  }
  private call(op: string, args: number[]): number {
    return this.addon.call(op, Float64Array.from(args));
  }
  private scoped<R>(fn: (s: Scope) => R): R {
    const s = new Scope(this.addon, this.residentInput);
    try {
      return fn(s);
    } finally {
      s.close();
    }
  }
  /** a new tensor (f32, or `dtype`) filled by `fill` from its device address; freed again if `fill` throws */
  private produce(shape: readonly number[], fill: (out: number) => void, dtype: DType = 'f32'): CudaTensor {
    const out = this.alloc(shape, dtype);
    try {
      fill(out.ptr);
    } catch (e) {
      out.dispose();
      throw e;
    }
    return out;
  }
  private upload(t: CudaTensor, data: ArrayLike<number>): void {
    if (t.storage === 'bf16') {
      const bits = new Uint16Array(data.length);
      for (let i = 0; i < data.length; i++) bits[i] = f32ToBf16Bits(data[i]!);
      this.addon.upload(t.ptr, bits);
    } else {
      const a = Float32Array.from(data);
      roundToDType(a, t.dtype); // f16 values, held as f32
      this.addon.upload(t.ptr, a);
    }
  }

  /** allocator statistics (to check that steady-state steps make no cudaMalloc) */
  memoryStats(): AllocatorStats {
    return this.addon.stats();
  }
  /** restart memoryStats()' peakLiveBytes / peakReservedBytes from what is held now */
  resetPeakMemory(): void {
    this.addon.resetPeak();
  }
  synchronize(): void {
    this.addon.sync();
  }

  // ---------- memory ----------

  fromArray(data: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const n = shapeSize(shape);
    if (data.length !== n) throw new Error(`fromArray: ${data.length} values for shape ${shapeString(shape)} (${n} elements)`);
    const t = this.alloc(shape, dtype);
    this.upload(t, data);
    return t;
  }
  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.alloc(shape, dtype);
    this.addon.zero(t.ptr, t.size * t.elemBytes);
    return t;
  }
  read(x: Tensor): Float32Array {
    const t = this.t(x, 'read');
    if (t.storage === 'bf16') {
      const bits = new Uint16Array(t.size);
      this.addon.download(t.ptr, bits);
      const out = new Float32Array(t.size);
      for (let i = 0; i < bits.length; i++) out[i] = bf16BitsToF32(bits[i]!);
      return out;
    }
    const out = new Float32Array(t.size);
    this.addon.download(t.ptr, out);
    return out;
  }
  write(x: Tensor, data: ArrayLike<number>): void {
    const t = this.t(x, 'write');
    if (data.length !== t.size) throw new Error(`write: ${data.length} values into a tensor of ${t.size}`);
    this.upload(t, data);
  }
  reshape(x: Tensor, shape: readonly number[]): Tensor {
    const t = this.t(x, 'reshape');
    if (shapeSize(shape) !== t.size) throw new Error(`reshape: cannot view ${shapeString(t.shape)} as ${shapeString(shape)}`);
    return new CudaTensor(this, t.buffer, shape, t.dtype, t.offset);
  }
  rowSlice(x: Tensor, r0: number, r1: number): Tensor {
    const t = this.t(x, 'rowSlice');
    const { shape, rowSize } = rowSliceShape(t, r0, r1);
    return new CudaTensor(this, t.buffer, shape, t.dtype, t.offset + r0 * rowSize);
  }
  copy(x: Tensor): Tensor {
    const t = this.t(x, 'copy');
    const out = this.alloc(t.shape, t.dtype);
    this.addon.copy(out.ptr, t.ptr, t.size * t.elemBytes);
    return out;
  }
  copyRows(x: Tensor, srcRows: Int32Array, dstRows: Int32Array): void {
    const t = this.t(x, 'copyRows');
    const R = t.shape[0] ?? 1;
    if (srcRows.length !== dstRows.length) throw new Error(`copyRows: ${srcRows.length} source rows but ${dstRows.length} destination rows`);
    const rowBytes = R > 0 ? (t.size / R) * t.elemBytes : 0;
    for (let i = 0; i < srcRows.length; i++) {
      const s = srcRows[i]!, r = dstRows[i]!;
      if (!(s >= 0 && s < R && r >= 0 && r < R)) throw new Error(`copyRows: row ${s} → ${r} is outside [0, ${R}) of ${shapeString(t.shape)}`);
    }
    // one stream-ordered copy per pair keeps the CPU's in-order semantics for chained moves
    for (let i = 0; i < srcRows.length; i++) {
      const s = srcRows[i]!, r = dstRows[i]!;
      if (s !== r) this.addon.copy(t.ptr + r * rowBytes, t.ptr + s * rowBytes, rowBytes);
    }
  }
  cast(x: Tensor, dtype: DType): Tensor {
    const t = this.t(x, 'cast');
    if (dtype === 'f16') {
      // no device f16 rounding kernel: f16 is a storage format of files, rare on the device
      return this.fromArray(this.read(t), t.shape, 'f16');
    }
    const target: Storage = storageOf(dtype);
    const out = this.alloc(t.shape, dtype);
    if (target === t.storage) this.addon.copy(out.ptr, t.ptr, t.size * t.elemBytes);
    else if (target === 'bf16') this.call('cast_f32_bf16', [out.ptr, t.ptr, t.size]);
    else this.call('cast_bf16_f32', [out.ptr, t.ptr, t.size]);
    return out;
  }

  // ---------- elementwise ----------

  private binary(op: string, name: string, a: Tensor, b: Tensor): Tensor {
    const x = this.t(a, name), y = this.t(b, name);
    if (x.size !== y.size) throw new Error(`${name}: shapes ${shapeString(a.shape)} and ${shapeString(b.shape)} differ`);
    return this.scoped((s) => this.produce(x.shape, (o) => this.call(op, [o, s.f32(x), s.f32(y), x.size])));
  }
  add(a: Tensor, b: Tensor): Tensor {
    return this.binary('add', 'add', a, b);
  }
  mul(a: Tensor, b: Tensor): Tensor {
    return this.binary('mul', 'mul', a, b);
  }
  addInPlace(dst: Tensor, src: Tensor, alpha = 1): void {
    const d = this.f32Tensor(dst, 'addInPlace: dst'), x = this.t(src, 'addInPlace: src');
    if (d.size !== x.size) throw new Error(`addInPlace: shapes ${shapeString(dst.shape)} and ${shapeString(src.shape)} differ`);
    this.scoped((s) => this.call('axpy', [d.ptr, s.f32(x), alpha, d.size]));
  }
  scaleInPlace(x: Tensor, sc: number): void {
    const t = this.f32Tensor(x, 'scaleInPlace');
    this.call('scale', [t.ptr, sc, t.size]);
  }
  fill(x: Tensor, value: number): void {
    const t = this.t(x, 'fill');
    if (t.storage === 'bf16') this.call('fill_bf16', [t.ptr, value, t.size]);
    else this.call('fill_f32', [t.ptr, t.dtype === 'f16' ? roundF16(value) : value, t.size]);
  }
  sumSquares(x: Tensor): number {
    this.t(x, 'sumSquares');
    return this.sumSquaresEach([x])[0]!;
  }
  sumSquaresEach(ts: readonly Tensor[]): Float64Array {
    const out = new Float64Array(ts.length);
    if (ts.length === 0) return out;
    return this.scoped((s) => {
      const args = ts.flatMap((x, i) => {
        const t = this.t(x, `sumSquaresEach: tensor ${i}`);
        return [t.ptr, t.size, t.storage === 'bf16' ? 1 : 0];
      });
      const dOut = s.temp(8 * ts.length), partials = s.temp(8 * ts.length * this.call('sum_squares_each_partials', []));
      this.call('sum_squares_each', [dOut, partials, ts.length, ...args]);
      this.addon.download(dOut, out);
      return out;
    });
  }
  negExp(x: Tensor): Tensor {
    const t = this.t(x, 'negExp');
    return this.scoped((s) => this.produce(t.shape, (o) => this.call('neg_exp', [o, s.f32(t), t.size])));
  }
  addBias(x: Tensor, bias: Tensor): Tensor {
    const t = this.t(x, 'addBias'), b = this.t(bias, 'addBias: bias');
    const C = lastDim(t);
    if (b.size !== C) throw new Error(`addBias: bias ${shapeString(bias.shape)} does not match last dim ${C} of ${shapeString(x.shape)}`);
    return this.scoped((s) => this.produce(t.shape, (o) => this.call('add_bias', [o, s.f32(t), s.f32(b), t.size / C, C])));
  }
  sumRows(x: Tensor): Tensor {
    const t = this.t(x, 'sumRows');
    const C = lastDim(t);
    return this.scoped((s) => this.produce([C], (o) => this.call('sum_rows', [o, s.f32(t), C > 0 ? t.size / C : 0, C])));
  }

  // ---------- layout ----------

  sliceLastDim(x: Tensor, start: number, end: number): Tensor {
    const t = this.t(x, 'sliceLastDim');
    const { rows, width } = sliceLastDimRange(t, start, end);
    const w = end - start;
    return this.produce([...t.shape.slice(0, -1), w], (o) => this.call('copy_cols', [o, w, 0, t.ptr, width, start, rows, w, t.elemBytes]), t.dtype);
  }
  splitLastDim(x: Tensor, sizes: readonly number[]): Tensor[] {
    const t = this.t(x, 'splitLastDim');
    const width = lastDim(t);
    const total = sizes.reduce((a, v) => a + v, 0);
    if (total !== width) throw new Error(`splitLastDim: sizes sum to ${total}, last dimension is ${width}`);
    const rows = width > 0 ? t.size / width : 0;
    const lead = t.shape.slice(0, -1);
    const outs: CudaTensor[] = [];
    let off = 0;
    for (const w of sizes) {
      const o = this.alloc([...lead, w], t.dtype);
      this.call('copy_cols', [o.ptr, w, 0, t.ptr, width, off, rows, w, t.elemBytes]);
      outs.push(o);
      off += w;
    }
    return outs;
  }
  concatLastDim(ts: readonly Tensor[], outDType?: DType): Tensor {
    if (ts.length === 0) throw new Error('concatLastDim: no tensors');
    const xs = ts.map((x) => this.t(x, 'concatLastDim'));
    const lead = xs[0]!.shape.slice(0, -1);
    const rows = shapeSize(lead);
    for (const x of xs) {
      if (shapeSize(x.shape.slice(0, -1)) !== rows) throw new Error(`concatLastDim: leading shapes differ (${xs.map((y) => shapeString(y.shape)).join(', ')})`);
    }
    const widths = xs.map((x) => lastDim(x));
    const width = widths.reduce((a, v) => a + v, 0);
    // all bf16 (a KV cache or a state pool the engine grows): copied as stored, the result bf16; bf16 asked
    // for: f32 parts rounded as they are copied; else f32
    if (outDType !== undefined) this.outStorage('concatLastDim', outDType);
    if (outDType === 'bf16' || (outDType === undefined && xs.every((x) => x.storage === 'bf16'))) {
      return this.scoped((s) => this.produce([...lead, width], (o) => {
        let off = 0;
        xs.forEach((x, i) => {
          if (x.storage === 'bf16') this.call('copy_cols', [o, width, off, x.ptr, widths[i]!, 0, rows, widths[i]!, 2]);
          else this.call('copy_cols_bf16', [o, width, off, s.f32(x), widths[i]!, 0, rows, widths[i]!]);
          off += widths[i]!;
        });
      }, 'bf16'));
    }
    return this.scoped((s) => this.produce([...lead, width], (o) => {
      let off = 0;
      xs.forEach((x, i) => {
        this.call('copy_cols', [o, width, off, s.f32(x), widths[i]!, 0, rows, widths[i]!, 4]);
        off += widths[i]!;
      });
    }));
  }
  repeatGroups(x: Tensor, width: number, repeat: number): Tensor {
    const t = this.t(x, 'repeatGroups');
    const d = lastDim(t);
    if (!(width > 0) || d % width !== 0) throw new Error(`repeatGroups: last dim ${d} is not a multiple of group width ${width}`);
    const rows = d > 0 ? t.size / d : 0;
    return this.scoped((s) => this.produce([...t.shape.slice(0, -1), d * repeat], (o) => this.call('repeat_groups', [o, s.f32(t), rows, d, width, repeat])));
  }
  repeatGroupsBackward(dy: Tensor, width: number, repeat: number): Tensor {
    const t = this.t(dy, 'repeatGroupsBackward');
    const d = lastDim(t);
    const inWidth = d / repeat;
    if (!Number.isInteger(inWidth) || !(width > 0) || inWidth % width !== 0) {
      throw new Error(`repeatGroupsBackward: last dim ${d} does not hold groups of ${width} × ${repeat}`);
    }
    const rows = d > 0 ? t.size / d : 0;
    return this.scoped((s) => this.produce([...t.shape.slice(0, -1), inWidth], (o) => this.call('repeat_groups_bwd', [o, s.f32(t), rows, d, width, repeat])));
  }

  // ---------- matmul ----------

  private f32Precision = 0; // index into MATMUL_PRECISIONS
  setFloat32MatmulPrecision(p: MatmulPrecision): void {
    const i = MATMUL_PRECISIONS.indexOf(p);
    if (i < 0) throw new Error(`setFloat32MatmulPrecision: precision must be one of ${MATMUL_PRECISIONS.join(', ')}, got "${String(p)}"`);
    this.f32Precision = i;
  }

  /**
   * cuBLASLt. f32 × f32 runs by setFloat32MatmulPrecision: 'highest' (default) plain fp32
   * (CUBLAS_COMPUTE_32F, TF32 off), equal to the CPU up to summation order (~1e-6 relative); 'high'
   * TF32; 'medium' both sides rounded to bf16. With a bf16 operand (weights) the f32 side is rounded to
   * bf16 and the product runs on the tensor cores with fp32 accumulation (~1e-2 relative vs the CPU).
   */
  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    const outDType = checkMatmulOut(opts);
    const A = this.t(a, 'matmul: a'), Bt = this.t(b, 'matmul: b');
    const aCols = lastDim(A), aRows = aCols > 0 ? A.size / aCols : 0;
    if (Bt.shape.length !== 2) throw new Error(`matmul: b must be 2-D, got ${shapeString(b.shape)}`);
    const [bRows, bCols] = Bt.shape as [number, number];
    const transA = opts.transA ?? false, transB = opts.transB ?? false;
    const M = transA ? aCols : aRows, N = transB ? bRows : bCols;
    const K = transA ? aRows : aCols, Kb = transB ? bCols : bRows;
    if (K !== Kb) {
      throw new Error(`matmul: inner dimensions differ: a ${shapeString(a.shape)}${transA ? 'ᵀ' : ''} · b ${shapeString(b.shape)}${transB ? 'ᵀ' : ''}`);
    }
    const outShape = transA ? [M, N] : [...A.shape.slice(0, -1), N];
    const outBf16 = this.outStorage('matmul', outDType) === 'bf16';
    const run = (c: number, acc: boolean): void => {
      this.call('matmul', [A.ptr, A.storage === 'bf16' ? 1 : 0, aRows, aCols, transA ? 1 : 0,
        Bt.ptr, Bt.storage === 'bf16' ? 1 : 0, bRows, bCols, transB ? 1 : 0, c, outBf16 ? 1 : 0, acc ? 1 : 0, this.f32Precision]);
    };
    const into = opts.accumulateInto ?? opts.writeInto;
    if (into) {
      const what = opts.accumulateInto ? 'accumulateInto' : 'writeInto';
      const C = this.f32Tensor(into, `matmul: ${what}`);
      if (C.size !== M * N) throw new Error(`matmul: ${what} has shape ${shapeString(C.shape)}, product is [${M}, ${N}]`);
      run(C.ptr, !!opts.accumulateInto);  // writeInto: beta 0, C is not read
      return C;
    }
    return this.produce(outShape, (o) => run(o, false), outDType);
  }

  matmulPair(a: Tensor, w1: Tensor, w2: Tensor, opts: { outDType?: DType } = {}): [Tensor, Tensor] {
    checkMatmulPair(a, w1, w2);
    const outDType = checkMatmulOut(opts);
    const A = this.t(a, 'matmulPair: a'), W1 = this.t(w1, 'matmulPair: w1'), W2 = this.t(w2, 'matmulPair: w2');
    const two = (): [Tensor, Tensor] => [this.matmul(a, w1, { transB: true, outDType }), this.matmul(a, w2, { transB: true, outDType })];
    if (W1.storage !== 'bf16') return two();
    const [n, k] = W1.shape as [number, number];
    const rows = k > 0 ? A.size / k : 0;
    const outShape = [...A.shape.slice(0, -1), n];
    let done = 0;
    const out = this.produce([2, ...outShape], (o) => {
      done = this.call('matmul_pair', [A.ptr, A.storage === 'bf16' ? 1 : 0, rows, k, W1.ptr, W2.ptr, 1, n, k, o, outDType === 'bf16' ? 1 : 0, this.f32Precision]);
    }, outDType);
    if (done === 0) {
      out.dispose();
      return two();
    }
    // the product with the lower-addressed weight is first
    const first = this.rowSlice(out, 0, 1), second = this.rowSlice(out, 1, 2);
    out.dispose();  // the views hold the buffer
    const y = [this.reshape(first, outShape), this.reshape(second, outShape)];
    first.dispose();
    second.dispose();
    return W1.ptr < W2.ptr ? [y[0]!, y[1]!] : [y[1]!, y[0]!];
  }

  // ---------- embedding / norms / MLP ----------

  embedding(table: Tensor, ids: Int32Array): Tensor {
    const t = this.t(table, 'embedding: table');
    if (t.shape.length !== 2) throw new Error(`embedding: table must be [V, D], got ${shapeString(t.shape)}`);
    const [V, D] = t.shape as [number, number];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id < 0 || id >= V) throw new Error(`embedding: token id ${id} at position ${i} is outside the vocabulary [0, ${V})`);
    }
    return this.scoped((s) => this.produce([ids.length, D], (o) => this.call('embedding', [o, t.ptr, t.storage === 'bf16' ? 1 : 0, s.ints(ids), ids.length, D])));
  }
  embeddingBackward(dTable: Tensor, ids: Int32Array, dy: Tensor): void {
    const t = this.f32Tensor(dTable, 'embeddingBackward: dTable');
    const [V, D] = t.shape as [number, number];
    const g = this.t(dy, 'embeddingBackward: dy');
    if (g.size !== ids.length * D) throw new Error(`embeddingBackward: dy ${shapeString(dy.shape)} must hold ${ids.length} rows of ${D}`);
    for (let i = 0; i < ids.length; i++) {
      if (ids[i]! < 0 || ids[i]! >= V) throw new Error(`embeddingBackward: token id ${ids[i]} at position ${i} is outside [0, ${V})`);
    }
    this.scoped((s) => this.call('embedding_bwd', [t.ptr, s.ints(ids), s.f32(g), ids.length, D]));
  }
  rmsNorm(x: Tensor, w: Tensor, eps: number, outDType: DType = 'f32'): { y: Tensor; rstd: Tensor } {
    const { y, rstd } = this.norm('rmsNorm', x, null, w, eps, outDType, true);
    return { y, rstd: rstd! };
  }
  rmsNormBackward(dy: Tensor, x: Tensor, w: Tensor, rstd: Tensor, residual?: Tensor): { dx: Tensor; dw: Tensor } {
    const X = this.t(x, 'rmsNormBackward: x'), W = this.t(w, 'rmsNormBackward: w');
    const G = this.t(dy, 'rmsNormBackward: dy'), R = this.t(rstd, 'rmsNormBackward: rstd');
    const E = residual ? this.t(residual, 'rmsNormBackward: residual') : null;
    if (E && E.size !== X.size) throw new Error(`rmsNormBackward: residual ${shapeString(residual!.shape)} does not match x ${shapeString(x.shape)}`);
    const D = lastDim(X);
    const rows = D > 0 ? X.size / D : 0;
    if (G.size !== X.size) throw new Error(`rmsNormBackward: dy ${shapeString(dy.shape)} does not match x ${shapeString(x.shape)}`);
    if (W.size !== D || R.size !== rows) throw new Error(`rmsNormBackward: w must be [${D}] and rstd [${rows}]`);
    return this.scoped((s) => {
      const dw = this.alloc([D]);
      const dx = this.produce(X.shape, (o) => this.call('rmsnorm_bwd', [o, dw.ptr, s.f32(G), s.f32(X), s.f32(W), s.f32(R), E ? s.f32(E) : 0, rows, D]));
      return { dx, dw };
    });
  }
  addRmsNorm(x: Tensor, r: Tensor | null, w: Tensor, eps: number, outDType: DType, opts: { rstd?: boolean } = {}): { h: Tensor; y: Tensor; rstd?: Tensor } {
    const o = this.norm('addRmsNorm', x, r, w, eps, outDType, opts.rstd ?? false);
    return o.rstd ? { h: o.h, y: o.y, rstd: o.rstd } : { h: o.h, y: o.y };
  }
  /** rmsNorm and addRmsNorm: one kernel, h = x + r (x when r is null), y in outDType, rstd when asked */
  private norm(op: string, x: Tensor, r: Tensor | null, w: Tensor, eps: number, outDType: DType, wantRstd: boolean): { h: Tensor; y: Tensor; rstd: Tensor | null } {
    const X = this.t(x, `${op}: x`), W = this.t(w, `${op}: w`), R = r ? this.t(r, `${op}: r`) : null;
    const D = lastDim(X);
    if (W.size !== D) throw new Error(`${op}: weight has ${W.size} elements, input last dim is ${D}`);
    if (R && R.size !== X.size) throw new Error(`${op}: r ${shapeString(R.shape)} does not match x ${shapeString(X.shape)}`);
    const rows = D > 0 ? X.size / D : 0;
    const outBf16 = this.outStorage(op, outDType) === 'bf16';
    return this.scoped((s) => {
      const made: CudaTensor[] = [];
      const make = (shape: readonly number[], dtype: DType = 'f32'): CudaTensor => {
        const t = this.alloc(shape, dtype);
        made.push(t);
        return t;
      };
      try {
        const h = R ? make(X.shape) : X;
        const y = make(X.shape, outDType);
        const rstd = wantRstd ? make([rows]) : null;
        this.call('add_rmsnorm', [R ? h.ptr : 0, y.ptr, outBf16 ? 1 : 0, rstd ? rstd.ptr : 0, s.f32(X), R ? s.f32(R) : 0, W.ptr,
          W.storage === 'bf16' ? 1 : 0, rows, D, eps]);
        return { h, y, rstd };
      } catch (e) {
        for (const t of made) t.dispose();
        throw e;
      }
    });
  }
  swiglu(gate: Tensor, up: Tensor, outDType: DType = 'f32'): Tensor {
    const g = this.t(gate, 'swiglu: gate'), u = this.t(up, 'swiglu: up');
    if (g.size !== u.size) throw new Error(`swiglu: gate ${shapeString(gate.shape)} and up ${shapeString(up.shape)} differ`);
    const bf16 = this.outStorage('swiglu', outDType) === 'bf16';
    // gate and up read in place when both are bf16 (a bf16 model's gate / up outputs), else both as f32
    const inBf16 = g.storage === 'bf16' && u.storage === 'bf16';
    return this.scoped((s) => this.produce(g.shape, (o) => this.call('swiglu', [o, bf16 ? 1 : 0, inBf16 ? g.ptr : s.f32(g), inBf16 ? u.ptr : s.f32(u),
      inBf16 ? 1 : 0, g.size]), outDType));
  }
  /** the storage of an op's output dtype; f16 (held as f32 on this backend) is not an activation dtype */
  private outStorage(op: string, dtype: DType): Storage {
    if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`${op}: output dtype must be f32 or bf16, got ${dtype}`);
    return storageOf(dtype);
  }
  swigluBackward(dh: Tensor, gate: Tensor, up: Tensor, outDType: DType = 'f32'): { dGate: Tensor; dUp: Tensor } {
    const d = this.t(dh, 'swigluBackward: dh'), g = this.t(gate, 'swigluBackward: gate'), u = this.t(up, 'swigluBackward: up');
    if (g.size !== u.size || d.size !== g.size) throw new Error(`swigluBackward: dh ${shapeString(dh.shape)}, gate ${shapeString(gate.shape)} and up ${shapeString(up.shape)} differ`);
    const bf16 = this.outStorage('swigluBackward', outDType) === 'bf16';
    return this.scoped((s) => {
      const dUp = this.alloc(u.shape, outDType);
      let dGate: CudaTensor;
      try {
        dGate = this.alloc(g.shape, outDType);
      } catch (e) {
        dUp.dispose();
        throw e;
      }
      try {
        this.call('swiglu_bwd', [dGate.ptr, dUp.ptr, bf16 ? 1 : 0, s.f32(d), s.f32(g), s.f32(u), g.size]);
      } catch (e) {
        dUp.dispose();
        dGate.dispose();
        throw e;
      }
      return { dGate, dUp };
    });
  }

  // ---------- attention ----------

  rope(x: Tensor, positions: Int32Array, invFreq: Float32Array, inverse = false): Tensor {
    const X = this.t(x, 'rope: x');
    const r = X.shape.length;
    if (r < 2) throw new Error(`rope: x: expected at least [H, Dh], got shape ${shapeString(X.shape)}`);
    const H = X.shape[r - 2]!, Dh = X.shape[r - 1]!;
    if (Dh % 2 !== 0) throw new Error(`rope: head dim ${Dh} of x ${shapeString(X.shape)} must be even`);
    if (invFreq.length !== Dh / 2) throw new Error(`rope: invFreq has ${invFreq.length} values, head dim ${Dh} needs ${Dh / 2}`);
    const n = H * Dh > 0 ? X.size / (H * Dh) : 0;
    if (positions.length !== n) throw new Error(`rope: positions has ${positions.length} entries, x ${shapeString(X.shape)} has ${n} tokens`);
    return this.scoped((s) => this.produce(X.shape, (o) => this.call('rope', [o, s.f32(X), s.ints(positions), this.constantF32(invFreq), n, H, Dh, inverse ? 1 : 0])));
  }

  private attnDims(q: CudaTensor, k: CudaTensor, v: CudaTensor, segments: Int32Array | undefined, op: string) {
    const four = (t: CudaTensor, w: string): [number, number, number, number] => {
      if (t.shape.length !== 4) throw new Error(`${op}: ${w}: expected shape [B, T, H, Dh], got ${shapeString(t.shape)}`);
      return t.shape as unknown as [number, number, number, number];
    };
    const [B, T, Hq, Dh] = four(q, 'q');
    const [kB, kT, Hkv, kDh] = four(k, 'k');
    if (kB !== B || kT !== T || kDh !== Dh) throw new Error(`${op}: k ${shapeString(k.shape)} does not match q ${shapeString(q.shape)}`);
    if (v.shape.length !== 4 || v.shape.some((d, i) => d !== k.shape[i])) throw new Error(`${op}: v ${shapeString(v.shape)} must have the shape of k ${shapeString(k.shape)}`);
    if (Hkv === 0 || Hq % Hkv !== 0) throw new Error(`${op}: ${Hq} q heads are not a multiple of ${Hkv} kv heads`);
    if (segments && segments.length !== B * T) throw new Error(`${op}: segments has ${segments.length} entries, expected B*T = ${B * T}`);
    if (Dh > 256) throw new Error(`${op}: head dim ${Dh} is above the cuda kernels' limit of 256`);
    return { B, T, Hq, Hkv, Dh };
  }
  attention(q: Tensor, k: Tensor, v: Tensor, opts: { scale: number; segments?: Int32Array }): { out: Tensor; lse: Tensor } {
    const Q = this.t(q, 'attention: q'), K = this.t(k, 'attention: k'), V = this.t(v, 'attention: v');
    const { B, T, Hq, Hkv, Dh } = this.attnDims(Q, K, V, opts.segments, 'attention');
    return this.scoped((s) => {
      const lse = this.alloc([B, Hq, T]);
      const seg = opts.segments ? s.ints(opts.segments) : 0;
      const out = this.produce(Q.shape, (o) => this.call('attention', [o, lse.ptr, s.f32(Q), s.f32(K), s.f32(V), seg, B, T, Hq, Hkv, Dh, opts.scale,
        this.f32Precision === 2 ? 1 : 0]));
      return { out, lse };
    });
  }
  attentionBackward(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, opts: { scale: number; segments?: Int32Array },
  ): { dq: Tensor; dk: Tensor; dv: Tensor } {
    const Q = this.t(q, 'attentionBackward: q'), K = this.t(k, 'attentionBackward: k'), V = this.t(v, 'attentionBackward: v');
    const dO = this.t(dout, 'attentionBackward: dout'), O = this.t(out, 'attentionBackward: out'), L = this.t(lse, 'attentionBackward: lse');
    const { B, T, Hq, Hkv, Dh } = this.attnDims(Q, K, V, opts.segments, 'attentionBackward');
    if (dO.size !== Q.size) throw new Error(`attentionBackward: dout ${shapeString(dout.shape)} must have the shape of q ${shapeString(q.shape)}`);
    if (O.size !== Q.size) throw new Error(`attentionBackward: out ${shapeString(out.shape)} must have the shape of q ${shapeString(q.shape)}`);
    if (L.size !== B * Hq * T) throw new Error(`attentionBackward: lse ${shapeString(lse.shape)} must be [${B}, ${Hq}, ${T}]`);
    return this.scoped((s) => {
      const dk = this.alloc(K.shape), dv = this.alloc(V.shape);
      const seg = opts.segments ? s.ints(opts.segments) : 0;
      const dq = this.produce(Q.shape, (o) => this.call('attention_bwd', [o, dk.ptr, dv.ptr, s.temp(B * T * Hq * 4), s.f32(dO), s.f32(Q), s.f32(K),
        s.f32(V), s.f32(O), s.f32(L), seg, B, T, Hq, Hkv, Dh, opts.scale, this.f32Precision === 2 ? 1 : 0]));
      return { dq, dk, dv };
    });
  }
  private cacheDims(kCache: CudaTensor, vCache: CudaTensor, op: string) {
    if (kCache.shape.length !== 4) throw new Error(`${op}: kCache must be [numBlocks, blockSize, Hkv, Dh], got ${shapeString(kCache.shape)}`);
    if (vCache.shape.length !== 4 || vCache.shape.some((d, i) => d !== kCache.shape[i])) {
      throw new Error(`${op}: vCache ${shapeString(vCache.shape)} must have the shape of kCache ${shapeString(kCache.shape)}`);
    }
    if (kCache.storage !== vCache.storage) throw new Error(`${op}: kCache (${kCache.dtype}) and vCache (${vCache.dtype}) must share a dtype`);
    const [numBlocks, blockSize, Hkv, Dh] = kCache.shape as unknown as [number, number, number, number];
    return { numBlocks, blockSize, Hkv, Dh };
  }
  kvCacheWrite(kCache: Tensor, vCache: Tensor, k: Tensor, v: Tensor, slotMapping: Int32Array): void {
    const KC = this.t(kCache, 'kvCacheWrite: kCache'), VC = this.t(vCache, 'kvCacheWrite: vCache');
    const K = this.t(k, 'kvCacheWrite: k'), V = this.t(v, 'kvCacheWrite: v');
    const { numBlocks, blockSize, Hkv, Dh } = this.cacheDims(KC, VC, 'kvCacheWrite');
    const r = K.shape.length;
    if (r < 2 || K.shape[r - 2] !== Hkv || K.shape[r - 1] !== Dh) throw new Error(`kvCacheWrite: k ${shapeString(k.shape)} does not match cache heads [${Hkv}, ${Dh}]`);
    if (V.size !== K.size) throw new Error(`kvCacheWrite: v ${shapeString(v.shape)} must have the shape of k ${shapeString(k.shape)}`);
    const row = Hkv * Dh;
    const n = row > 0 ? K.size / row : 0;
    if (slotMapping.length !== n) throw new Error(`kvCacheWrite: slotMapping has ${slotMapping.length} entries, k has ${n} tokens`);
    const numSlots = numBlocks * blockSize;
    for (let i = 0; i < n; i++) {
      if (slotMapping[i]! >= numSlots) {
        throw new Error(`kvCacheWrite: slotMapping[${i}] = ${slotMapping[i]} is outside the cache (${numBlocks} blocks × ${blockSize} = ${numSlots} slots)`);
      }
    }
    if (KC.dtype === 'f16') throw new Error('kvCacheWrite: f16 caches are not supported on the cuda backend (use f32 or bf16)');
    this.scoped((s) => this.call('kv_cache_write', [KC.ptr, VC.ptr, KC.storage === 'bf16' ? 1 : 0, s.f32(K), s.f32(V), s.ints(slotMapping), n, row]));
  }
  pagedAttentionDecode(
    q: Tensor, kCache: Tensor, vCache: Tensor, blockTables: Int32Array, maxBlocks: number, seqLens: Int32Array, scale: number,
  ): Tensor {
    const op = 'pagedAttentionDecode';
    const Q = this.t(q, `${op}: q`), KC = this.t(kCache, `${op}: kCache`), VC = this.t(vCache, `${op}: vCache`);
    const { numBlocks, blockSize, Hkv, Dh } = this.cacheDims(KC, VC, op);
    if (Q.shape.length !== 3) throw new Error(`${op}: q must be [n, Hq, Dh], got ${shapeString(Q.shape)}`);
    const [n, Hq, qDh] = Q.shape as unknown as [number, number, number];
    if (qDh !== Dh) throw new Error(`${op}: q head dim ${qDh} differs from the cache's ${Dh}`);
    if (Hq % Hkv !== 0) throw new Error(`${op}: ${Hq} q heads are not a multiple of ${Hkv} kv heads`);
    if (Dh > 256) throw new Error(`${op}: head dim ${Dh} is above the cuda kernels' limit of 256`);
    if (seqLens.length !== n) throw new Error(`${op}: seqLens has ${seqLens.length} entries, q has ${n} sequences`);
    if (!Number.isInteger(maxBlocks) || maxBlocks < 1) throw new Error(`${op}: maxBlocks must be a positive integer, got ${maxBlocks}`);
    if (blockTables.length < n * maxBlocks) throw new Error(`${op}: blockTables has ${blockTables.length} entries, need n*maxBlocks = ${n * maxBlocks}`);
    // O(blocks in use) and allocation-free: this runs on every attention layer of every decode step.
    // maxLen sizes the split-K grid (chunks of keys past it would only be skipped).
    let maxLen = 0;
    for (let i = 0; i < n; i++) {
      const L = seqLens[i]!;
      if (L < 0 || L > maxBlocks * blockSize) throw new Error(`${op}: seqLens[${i}] = ${L} is outside [0, maxBlocks*blockSize = ${maxBlocks * blockSize}]`);
      if (L > maxLen) maxLen = L;
      const row = i * maxBlocks, used = Math.ceil(L / blockSize);
      for (let j = 0; j < used; j++) {
        const blk = blockTables[row + j]!;
        if (blk < 0 || blk >= numBlocks) throw new Error(`${op}: blockTables[${row + j}] = ${blk} (sequence ${i}, block ${j}) is outside [0, ${numBlocks})`);
      }
    }
    if (KC.dtype === 'f16') throw new Error(`${op}: f16 caches are not supported on the cuda backend (use f32 or bf16)`);
    // a recorded graph replays at later contexts: plan the split-K grid for the whole table width
    if (this.resident !== null) maxLen = maxBlocks * blockSize;
    return this.scoped((s) => this.produce(Q.shape, (o) => this.call('paged_decode', [o, s.f32(Q), KC.ptr, VC.ptr, KC.storage === 'bf16' ? 1 : 0,
      s.ints(blockTables.subarray(0, n * maxBlocks)), maxBlocks, s.ints(seqLens), n, Hq, Hkv, Dh, blockSize, scale, maxLen])));
  }

  // ---------- Mamba ----------

  causalConv1d(
    x: Tensor, w: Tensor, bias: Tensor | null,
    opts: { silu: boolean; segments?: Int32Array; stateOut?: { convState: Tensor; slots: Int32Array } },
  ): Tensor {
    const X = this.t(x, 'causalConv1d: x'), W = this.t(w, 'causalConv1d: w'), Bi = bias ? this.t(bias, 'causalConv1d: bias') : null;
    const { B, T, C, K } = convDims('causalConv1d', X, W, Bi, opts.segments);
    if (K > 16) throw new Error(`causalConv1d: kernel width ${K} is above the CUDA kernel's 16 (it keeps the window in registers)`);
    let st: CudaTensor | null = null;
    if (opts.stateOut) {
      st = this.t(opts.stateOut.convState, 'causalConv1d: stateOut.convState');
      const Wd = K - 1;
      if (st.shape.length !== 3 || st.shape[1] !== C || st.shape[2] !== Wd) throw new Error(`causalConv1d: stateOut.convState must be [S, ${C}, ${Wd}], got ${shapeString(st.shape)}`);
      const slots = opts.stateOut.slots;
      if (slots.length !== B) throw new Error(`causalConv1d: stateOut.slots has ${slots.length} entries for B = ${B} rows`);
      for (let b = 0; b < B; b++) if (slots[b]! < 0 || slots[b]! >= st.shape[0]!) throw new Error(`causalConv1d: stateOut.slots[${b}] = ${slots[b]} is outside [0, ${st.shape[0]})`);
      if (st.storage === 'bf16') {  // the kernel writes f32 windows: a bf16 pool gets its rows through an f32 copy
        return this.viaF32StateRows(st, slots, false, (f32, rows) => this.causalConv1d(x, w, bias, { ...opts, stateOut: { convState: f32, slots: rows } }));
      }
    }
    return this.scoped((s) => {
      const seg = opts.segments ? s.ints(segmentStarts(opts.segments, B, T)) : 0;
      const xp = s.f32(X);
      const y = this.produce(X.shape, (o) => this.call('conv1d', [o, xp, s.f32(W), s.optF32(Bi), seg, B, T, C, K, opts.silu ? 1 : 0]));
      if (st) this.call('conv1d_state_out', [st.ptr, xp, seg, s.ints(opts.stateOut!.slots), B, T, C, K]);
      return y;
    });
  }
  causalConv1dBackward(
    dy: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, opts: { silu: boolean; segments?: Int32Array },
  ): { dx: Tensor; dw: Tensor; dbias: Tensor | null } {
    const X = this.t(x, 'causalConv1dBackward: x'), W = this.t(w, 'causalConv1dBackward: w'), G = this.t(dy, 'causalConv1dBackward: dy');
    const Bi = bias ? this.t(bias, 'causalConv1dBackward: bias') : null;
    const { B, T, C, K } = convDims('causalConv1dBackward', X, W, Bi, opts.segments);
    if (G.size !== X.size) throw new Error(`causalConv1dBackward: dy ${shapeString(dy.shape)} does not match x ${shapeString(x.shape)}`);
    if (K > 16) throw new Error(`causalConv1dBackward: kernel width ${K} is above the CUDA kernel's 16 (its weight gradient keeps the window in registers)`);
    return this.scoped((s) => {
      const seg = opts.segments ? s.ints(segmentStarts(opts.segments, B, T)) : 0;
      const dw = this.alloc([C, K]);
      const dbias = Bi ? this.alloc([C]) : null;
      const dx = this.produce(X.shape, (o) => this.call('conv1d_bwd', [o, dw.ptr, dbias ? dbias.ptr : 0,
        s.f32(G), s.f32(X), s.f32(W), s.optF32(Bi), seg, B, T, C, K, opts.silu ? 1 : 0]));
      return { dx, dw, dbias };
    });
  }
  causalConv1dStep(x: Tensor, convState: Tensor, slots: Int32Array, w: Tensor, bias: Tensor | null, silu: boolean): Tensor {
    const op = 'causalConv1dStep';
    const X = this.t(x, `${op}: x`), W = this.t(w, `${op}: w`), Bi = bias ? this.t(bias, `${op}: bias`) : null;
    if (X.shape.length !== 2) throw new Error(`${op}: x must be [n, C], got ${shapeString(X.shape)}`);
    const [n, C] = X.shape as [number, number];
    if (W.shape.length !== 2 || W.shape[0] !== C) throw new Error(`${op}: w must be [C=${C}, K], got ${shapeString(W.shape)}`);
    const K = W.shape[1]!;
    if (Bi && Bi.size !== C) throw new Error(`${op}: bias must be [${C}], got ${shapeString(Bi.shape)}`);
    const st = this.t(convState, `${op}: convState`);
    if (st.shape.length !== 3 || st.shape[1] !== C || st.shape[2] !== K - 1) throw new Error(`${op}: convState must be [S, ${C}, ${K - 1}], got ${shapeString(st.shape)}`);
    if (slots.length !== n) throw new Error(`${op}: slots has ${slots.length} entries for n = ${n} tokens`);
    for (let i = 0; i < n; i++) if (slots[i]! < 0 || slots[i]! >= st.shape[0]!) throw new Error(`${op}: slots[${i}] = ${slots[i]} is outside [0, ${st.shape[0]})`);
    if (st.storage === 'bf16') {  // the f32 kernel on an f32 copy of the rows; the rows go back rounded
      return this.viaF32StateRows(st, slots, true, (f32, rows) => this.causalConv1dStep(x, f32, rows, w, bias, silu));
    }
    return this.scoped((s) => this.produce(X.shape, (o) => this.call('conv1d_step', [o, s.f32(X), st.ptr, s.ints(slots), s.f32(W), s.optF32(Bi), n, C, K, silu ? 1 : 0])));
  }

  mamba1DecodeStep(args: Mamba1DecodeStepArgs): Tensor {
    const op = 'mamba1DecodeStep';
    const { dInner: Di, dXb, dState: N, dtRank: R } = args.dims;
    const P = 2 * Di + 2 * dXb + R;
    const proj = this.t(args.proj, `${op}: proj`), dl = this.t(args.deltaLow, `${op}: deltaLow`);
    if (proj.shape.length !== 2 || proj.shape[1] !== P) throw new Error(`${op}: proj must be [n, ${P}] (z | x | B | C | dt), got ${shapeString(proj.shape)}`);
    const n = proj.shape[0]!;
    if (dl.shape.length !== 2 || dl.shape[0] !== n || dl.shape[1] !== Di) throw new Error(`${op}: deltaLow must be [${n}, ${Di}], got ${shapeString(dl.shape)}`);
    const W = this.t(args.convWeight, `${op}: convWeight`);
    if (W.shape.length !== 2 || W.shape[0] !== Di) throw new Error(`${op}: convWeight must be [${Di}, K], got ${shapeString(W.shape)}`);
    const K = W.shape[1]!;
    const cs = this.t(args.convState, `${op}: convState`), ss = this.t(args.ssmState, `${op}: ssmState`);
    if (cs.dtype !== 'f32' && cs.dtype !== 'bf16') throw new Error(`${op}: convState must be stored as f32 or bf16, got ${cs.dtype}`);
    if (cs.shape.length !== 3 || cs.shape[1] !== Di || cs.shape[2] !== K - 1) throw new Error(`${op}: convState must be [S, ${Di}, ${K - 1}], got ${shapeString(cs.shape)}`);
    scanStateRows(op, ss, Di, N);
    this.checkSlots(op, cs, args.slots, n);
    this.checkSlots(op, ss, args.slots, n);
    for (const [what, t, size] of [['aLog', args.aLog, Di * N], ['D', args.D, Di], ['dtBias', args.dtBias, Di], ['convBias', args.convBias, Di]] as const) {
      if (t && t.size !== size) throw new Error(`${op}: ${what} has ${t.size} values, expected ${size}`);
    }
    return this.scoped((s) => {
      const aLog = s.f32(args.aLog);
      // the kernel takes both states in one storage (f32, or bf16: the reference's in a bf16 model)
      if (cs.storage !== ss.storage || !this.call('mamba1_decode_step_handles', [Di, dXb, N, P, proj.ptr, aLog, ss.ptr])) return mamba1DecodeStepComposite(this, args);
      const outDType = args.outDType ?? 'f32';
      const outBf16 = this.outStorage(op, outDType) === 'bf16';
      // the small per-channel weights are read in their own storage (bit k of the mask: bf16)
      const ws = [args.dtBias, W, args.convBias, args.D].map((t) => (t ? this.t(t, op) : null));
      const mask = ws.reduce((m, t, k) => m | (t?.storage === 'bf16' ? 1 << k : 0), 0);
      // proj read as stored: f32, or bf16 (a bf16 model's in_proj output)
      const projBf16 = proj.storage === 'bf16';
      return this.produce([n, Di], (o) => this.call('mamba1_decode_step', [o, outBf16 ? 1 : 0, projBf16 ? proj.ptr : s.f32(proj), projBf16 ? 1 : 0,
        s.f32(dl), ws[0]!.ptr, cs.ptr, ws[1]!.ptr, ws[2]?.ptr ?? 0, aLog, ws[3]!.ptr, mask, ss.ptr, ss.storage === 'bf16' ? 1 : 0, s.ints(args.slots), n,
        Di, dXb, N, P, K]), outDType);
    });
  }

  /** the shared shape checks plus the cuda kernels' limits */
  private scanDims(op: string, lead: 1 | 2, a: { x: Tensor; delta: Tensor; A: Tensor; Bm: Tensor; Cm: Tensor; D: Tensor | null; z: Tensor | null; deltaBias: Tensor | null }) {
    const d = scanDims(op, lead, a);
    if (d.N > 128) throw new Error(`${op}: d_state ${d.N} is above the cuda kernels' limit of 128`);
    for (const t of [a.x, a.delta, a.A, a.Bm, a.Cm, a.D, a.z, a.deltaBias]) if (t) this.t(t, op);
    return d;
  }
  private checkSlots(op: string, st: CudaTensor, slots: Int32Array, n: number, what = 'slots'): void {
    if (slots.length !== n) throw new Error(`${op}: ${what} has ${slots.length} entries for ${n} rows`);
    const S = st.shape[0]!;
    for (let i = 0; i < n; i++) if (!(slots[i]! >= 0 && slots[i]! < S)) throw new Error(`${op}: ${what}[${i}] = ${slots[i]} is outside [0, ${S})`);
  }
  selectiveScanCheckpointShape(B: number, T: number, Di: number, N: number, G: number): number[] | null {
    const floats = this.call('selective_scan_checkpoint_floats', [B, T, Di, N, G]);
    return floats > 0 ? [B, floats / (B * Di * N), Di, N] : null;
  }
  /** args.checkpoints as the kernels' pointer (0 when absent or when no checkpoints apply), its size checked */
  private scanCheckpoints(op: string, args: SelectiveScanArgs, B: number, T: number, Di: number, N: number, G: number): number {
    if (!args.checkpoints) return 0;
    const floats = this.call('selective_scan_checkpoint_floats', [B, T, Di, N, G]);
    if (floats === 0) return 0;
    const c = this.f32Tensor(args.checkpoints, `${op}: checkpoints`);
    if (c.size !== floats) throw new Error(`${op}: checkpoints has ${c.size} values, the scan's are [${this.selectiveScanCheckpointShape(B, T, Di, N, G)!.join(', ')}]`);
    return c.ptr;
  }
  selectiveScan(args: SelectiveScanArgs): Tensor {
    const op = 'selectiveScan';
    const { B, T, Di, N, G } = this.scanDims(op, 2, args);
    const ckpt = this.scanCheckpoints(op, args, B, T, Di, N, G);
    if (args.segments && args.segments.length !== B * T) throw new Error(`${op}: segments has ${args.segments.length} entries, x has B*T = ${B * T}`);
    if (args.stateOut) {
      const pool = this.t(args.stateOut.ssmState, `${op}: ssmState`);
      scanStateRows(op, pool, Di, N);
      this.checkSlots(op, pool, args.stateOut.slots, B, 'stateOut.slots');
      // the kernel writes f32 states: a bf16 pool gets its rows through an f32 copy, rounded once
      if (pool.storage === 'bf16') return this.viaF32StateRows(pool, args.stateOut.slots, false, (st, slots) => this.selectiveScan({ ...args, stateOut: { ssmState: st, slots } }));
    }
    const st = args.stateOut ? this.t(args.stateOut.ssmState, op) : null;
    const outDType = args.outDType ?? 'f32', yBf16 = this.outStorage(op, outDType) === 'bf16';
    return this.scoped((s) => {
      const scratchFloats = this.call('selective_scan_scratch_floats', [B, T, Di, N]);
      const scratch = scratchFloats > 0 ? s.temp(scratchFloats * 4) : 0;
      return this.produce(args.x.shape, (o) => this.call('selective_scan', [o, yBf16 ? 1 : 0, s.f32(args.x), s.f32(args.delta), s.f32(args.A),
        s.f32(args.Bm), s.f32(args.Cm), s.optF32(args.D), s.optF32(args.z), s.optF32(args.deltaBias),
        args.segments ? s.ints(segmentStarts(args.segments, B, T)) : 0, st ? st.ptr : 0, st ? s.ints(args.stateOut!.slots) : 0, scratch, ckpt, B, T, Di, N, G]), outDType);
    });
  }
  selectiveScanBackward(dy: Tensor, args: SelectiveScanArgs): SelectiveScanGrads {
    const op = 'selectiveScanBackward';
    const { B, T, Di, N, G } = this.scanDims(op, 2, args);
    const dY = this.t(dy, `${op}: dy`);
    if (dY.size !== args.x.size) throw new Error(`${op}: dy ${shapeString(dy.shape)} does not match x ${shapeString(args.x.shape)}`);
    if (args.segments && args.segments.length !== B * T) throw new Error(`${op}: segments has ${args.segments.length} entries, x has B*T = ${B * T}`);
    const ckpt = this.scanCheckpoints(op, args, B, T, Di, N, G);
    return this.scoped((s) => {
      const dx = this.alloc(args.x.shape), ddelta = this.alloc(args.delta.shape), dA = this.alloc(args.A.shape);
      const dBm = this.alloc(args.Bm.shape), dCm = this.alloc(args.Cm.shape);
      const dD = args.D ? this.alloc(args.D.shape) : null, dz = args.z ? this.alloc(args.x.shape) : null;
      const dDeltaBias = args.deltaBias ? this.alloc(args.deltaBias.shape) : null;
      const scratch = s.temp(this.call('selective_scan_bwd_scratch_floats', [B, T, Di, N, G]) * 4);
      this.call('selective_scan_bwd', [dx.ptr, ddelta.ptr, dA.ptr, dBm.ptr, dCm.ptr, dD ? dD.ptr : 0, dz ? dz.ptr : 0, dDeltaBias ? dDeltaBias.ptr : 0,
        scratch, s.f32(dY), s.f32(args.x), s.f32(args.delta), s.f32(args.A), s.f32(args.Bm), s.f32(args.Cm), s.optF32(args.D), s.optF32(args.z),
        s.optF32(args.deltaBias), args.segments ? s.ints(segmentStarts(args.segments, B, T)) : 0, ckpt, B, T, Di, N, G]);
      return { dx, ddelta, dA, dBm, dCm, dD, dz, dDeltaBias };
    });
  }
  selectiveScanStep(args: SelectiveScanStepArgs): Tensor {
    const op = 'selectiveScanStep';
    const { B: n, Di, N, G } = this.scanDims(op, 1, args);
    const st = this.t(args.ssmState, `${op}: ssmState`);
    scanStateRows(op, st, Di, N);
    this.checkSlots(op, st, args.slots, n);
    if (st.storage === 'bf16') {
      // the f32 kernel on an f32 copy of the rows; the rows go back rounded. y reads the unrounded update, as on the CPU
      return this.viaF32StateRows(st, args.slots, true, (f32, slots) => this.selectiveScanStep({ ...args, ssmState: f32, slots }));
    }
    return this.scoped((s) => this.produce(args.x.shape, (o) => this.call('selective_scan_step', [o, s.f32(args.x), s.f32(args.delta), s.f32(args.A),
      s.f32(args.Bm), s.f32(args.Cm), s.optF32(args.D), s.optF32(args.z), s.optF32(args.deltaBias), st.ptr, s.ints(args.slots), n, Di, N, G])));
  }

  /**
   * Runs `fn` on an f32 copy [rows, ...] of the bf16 `pool`'s rows at `slots` (row i of the copy is slot slots[i]; read:
   * filled from the pool, else zeros), then stores the copy's rows back into the pool rounded to bf16. For the kernels
   * that take f32 states only: the prefill's final-state and conv-window writes and the unfused decode step. Rows are copied one by one
   * (a slot list is short: a prefill's rows, or one decode step's).
   */
  private viaF32StateRows<T>(pool: CudaTensor, slots: Int32Array, read: boolean, fn: (st: Tensor, slots: Int32Array) => T): T {
    const rows = slots.length, rowSize = pool.size / pool.shape[0]!, rowBytes = rowSize * 2;
    const half = this.alloc([rows, ...pool.shape.slice(1)], 'bf16');
    let f32: CudaTensor | null = null;
    try {
      if (read) for (let i = 0; i < rows; i++) this.addon.copy(half.ptr + i * rowBytes, pool.ptr + slots[i]! * rowBytes, rowBytes);
      f32 = (read ? this.cast(half, 'f32') : this.zeros(half.shape)) as CudaTensor;
      const out = fn(f32, Int32Array.from({ length: rows }, (_, i) => i));
      this.call('cast_f32_bf16', [half.ptr, f32.ptr, f32.size]);
      for (let i = 0; i < rows; i++) this.addon.copy(pool.ptr + slots[i]! * rowBytes, half.ptr + i * rowBytes, rowBytes);
      return out;
    } finally {
      half.dispose();
      f32?.dispose();
    }
  }

  /** the shared shape checks (state pool included) plus the cuda kernels' limits */
  private ssdDims(op: string, args: SsdScanArgs | SsdScanStepArgs, step: boolean) {
    const d = step ? ssdStepDims(op, args as SsdScanStepArgs) : ssdDims(op, args as SsdScanArgs);
    if (d.N > 128) throw new Error(`${op}: d_state ${d.N} is above the cuda kernels' limit of 128`);
    for (const t of [args.x, args.dt, args.A, args.Bm, args.Cm, args.D, args.dtBias]) if (t) this.t(t, op);
    return d;
  }
  /**
   * The forward runs the SSD recurrence sequentially per (row, head, p) — the same function as the
   * CPU's chunked form (chunkSize only changes the CPU's evaluation order), equal to f32 rounding.
   */
  ssdScan(args: SsdScanArgs): Tensor {
    const op = 'ssdScan';
    const { B, T, H, P, G, N } = this.ssdDims(op, args, false);
    const st = args.stateOut ? this.f32Tensor(args.stateOut.ssmState, `${op}: ssmState`) : null;
    return this.scoped((s) => this.produce(args.x.shape, (o) => this.call('ssd_scan', [o, s.f32(args.x), s.f32(args.dt), s.f32(args.A), s.f32(args.Bm),
      s.f32(args.Cm), s.optF32(args.D), s.optF32(args.dtBias), args.segments ? s.ints(segmentStarts(args.segments, B, T)) : 0,
      st ? st.ptr : 0, st ? s.ints(args.stateOut!.slots) : 0, B, T, H, P, G, N])));
  }
  ssdScanBackward(dy: Tensor, args: SsdScanArgs): SsdScanGrads {
    const op = 'ssdScanBackward';
    const { B, T, H, P, G, N } = this.ssdDims(op, { ...args, stateOut: undefined }, false);
    const dY = this.t(dy, `${op}: dy`);
    assertShape(dY, [B, T, H, P], `${op}: dy`);
    return this.scoped((s) => {
      const dx = this.alloc(args.x.shape), ddt = this.alloc(args.dt.shape), dA = this.alloc([H]);
      const dBm = this.alloc(args.Bm.shape), dCm = this.alloc(args.Cm.shape);
      const dD = args.D ? this.alloc([H]) : null, dDtBias = args.dtBias ? this.alloc([H]) : null;
      const scratch = s.temp(this.call('scan_bwd_scratch_floats', [B * H * P, T, N]) * 4);
      this.call('ssd_scan_bwd', [dx.ptr, ddt.ptr, dA.ptr, dBm.ptr, dCm.ptr, dD ? dD.ptr : 0, dDtBias ? dDtBias.ptr : 0, scratch, s.f32(dY),
        s.f32(args.x), s.f32(args.dt), s.f32(args.A), s.f32(args.Bm), s.f32(args.Cm), s.optF32(args.D), s.optF32(args.dtBias),
        args.segments ? s.ints(segmentStarts(args.segments, B, T)) : 0, B, T, H, P, G, N]);
      return { dx, ddt, dA, dBm, dCm, dD, dDtBias };
    });
  }
  ssdScanStep(args: SsdScanStepArgs): Tensor {
    const op = 'ssdScanStep';
    const { B: n, H, P, G, N } = this.ssdDims(op, args, true);
    const st = this.f32Tensor(args.ssmState, `${op}: ssmState`);
    return this.scoped((s) => this.produce(args.x.shape, (o) => this.call('ssd_scan_step', [o, s.f32(args.x), s.f32(args.dt), s.f32(args.A),
      s.f32(args.Bm), s.f32(args.Cm), s.optF32(args.D), s.optF32(args.dtBias), st.ptr, s.ints(args.slots), n, H, P, G, N])));
  }
  gatedRmsNorm(y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number): Tensor {
    const D = gatedNormDim('gatedRmsNorm', y, z, w, groupSize);
    const Y = this.t(y, 'gatedRmsNorm: y'), Z = this.t(z, 'gatedRmsNorm: z'), W = this.t(w, 'gatedRmsNorm: w');
    return this.scoped((s) => this.produce(Y.shape, (o) => this.call('gated_rmsnorm', [o, s.f32(Y), s.f32(Z), s.f32(W), Y.size, D, groupSize, eps])));
  }
  gatedRmsNormBackward(dout: Tensor, y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number): { dy: Tensor; dz: Tensor; dw: Tensor } {
    const op = 'gatedRmsNormBackward';
    const D = gatedNormDim(op, y, z, w, groupSize);
    assertShape(dout, y.shape, `${op}: dout`);
    const dO = this.t(dout, op), Y = this.t(y, op), Z = this.t(z, op), W = this.t(w, op);
    return this.scoped((s) => {
      const dz = this.alloc(Z.shape), dw = this.alloc([D]);
      const dy = this.produce(Y.shape, (o) => this.call('gated_rmsnorm_bwd', [o, dz.ptr, dw.ptr, s.temp((Y.size / groupSize) * 4), s.f32(dO), s.f32(Y),
        s.f32(Z), s.f32(W), Y.size, D, groupSize, eps]));
      return { dy, dz, dw };
    });
  }

  // ---------- logits ----------

  logSoftmax(logits: Tensor): Tensor {
    const X = this.t(logits, 'logSoftmax');
    const V = lastDim(X);
    return this.scoped((s) => this.produce(X.shape, (o) => this.call('log_softmax', [o, s.f32(X), V > 0 ? X.size / V : 0, V])));
  }
  tidy<R>(fn: () => R): R {
    tidyScopes.push([]);
    let result: R;
    try {
      result = fn();
    } catch (e) {
      for (const t of tidyScopes.pop()!) if (!t.disposed) t.dispose();
      throw e;
    }
    const created = tidyScopes.pop()!;
    const keep = new Set<Tensor>();
    collectTensors(result, keep, 0);
    for (const t of created) if (!keep.has(t) && !t.disposed) t.dispose();
    // what survives belongs to the enclosing scope, if any
    for (const t of keep) if (t instanceof CudaTensor && created.includes(t)) tidyScopes[tidyScopes.length - 1]?.push(t);
    return result;
  }
  /**
   * Record fn's device work as a CUDA graph (Backend.captureStepGraph). The inputs get device copies
   * owned by the graph; while fn runs, any op handed one of them (or a subarray of one) reads that copy,
   * and any other host upload is refused by the addon, so nothing that changes between steps can be
   * baked in unnoticed. Paged decode attention is recorded for the full block table width
   * (maxBlocks · blockSize keys): its key chunks past a sequence's length do no work.
   */
  captureStepGraph(inputs: Int32Array[], fn: () => Tensor): StepGraph {
    if (this.resident !== null) throw new Error('captureStepGraph: a capture is already in progress');
    const bufs: number[] = [];
    const freeInputs = () => { for (const p of bufs) this.addon.free(p); };
    let id = 0;
    let output: Tensor;
    try {
      for (const a of inputs) bufs.push(this.addon.alloc(Math.max(4, a.byteLength)));
      inputs.forEach((a, i) => this.addon.upload(bufs[i]!, a));
      this.resident = inputs.map((a, i) => ({ buf: a.buffer, off: a.byteOffset, end: a.byteOffset + a.byteLength, ptr: bufs[i]! }));
      id = this.addon.graphBegin();
      try {
        output = this.t(fn(), 'captureStepGraph: the recorded function\'s result');
      } catch (e) {
        this.addon.graphEnd(true);
        id = 0;
        throw e;
      } finally {
        this.resident = null;
      }
      this.addon.graphEnd(false);
      // the graph owns its output: no enclosing tidy may dispose it
      for (const scope of tidyScopes) {
        const at = scope.indexOf(output! as CudaTensor);
        if (at >= 0) scope.splice(at, 1);
      }
    } catch (e) {
      this.resident = null; // (graphBegin itself may have failed)
      freeInputs();
      throw e;
    }
    const addon = this.addon, lengths = inputs.map((a) => a.length);
    let live = true;
    const graph: StepGraph = {
      output: output!,
      replay(next: Int32Array[]): Tensor {
        if (!live) throw new Error('StepGraph.replay: the graph was disposed');
        if (next.length !== lengths.length) throw new Error(`StepGraph.replay: ${next.length} inputs, the graph was recorded with ${lengths.length}`);
        next.forEach((a, i) => {
          if (a.length !== lengths[i]) throw new Error(`StepGraph.replay: input ${i} has ${a.length} entries, the graph was recorded with ${lengths[i]}`);
          addon.upload(bufs[i]!, a);
        });
        addon.graphLaunch(id);
        return output!;
      },
      dispose(): void {
        if (!live) return;
        live = false;
        addon.graphDestroy(id);
        (output! as CudaTensor).dispose();
        freeInputs();
      },
    };
    addon.graphLaunch(id);
    return graph;
  }
  /** give the caching allocator's free blocks back to the driver (between differently sized workloads) */
  emptyCache(): void {
    this.addon.emptyCache();
  }
  argmaxRows(logits: Tensor): { ids: Int32Array; logprobs: Float32Array } {
    const X = this.t(logits, 'argmaxRows');
    const V = lastDim(X);
    const rows = V > 0 ? X.size / V : 0;
    if (rows === 0) return { ids: new Int32Array(0), logprobs: new Float32Array(0) };
    return this.scoped((s) => {
      const ids = s.temp(rows * 4), lp = s.temp(rows * 4);
      this.call('argmax_rows', [ids, lp, s.f32(X), rows, V, s.temp(this.call('argmax_scratch_bytes', [rows, V]))]);
      const hostIds = new Int32Array(rows), hostLp = new Float32Array(rows);
      this.addon.download(ids, hostIds);
      this.addon.download(lp, hostLp);
      return { ids: hostIds, logprobs: hostLp };
    });
  }
  /** rows sampleRows has sampled on the host so far (rows its kernels declined; native/src/sampling.cu) */
  sampleFallbackRows = 0;
  /** candidates per row the device's sorted sampling path holds (known after the first sampleRows) */
  sampleCapacity = 0;
  private rowSampler: RowSampler | null = null;
  /**
   * On the device (native/src/sampling.cu): the f64 parameters go up as one [n, 6] array, two kernels
   * run one block per output row, and n ids + n logprobs come back. Rows the kernels decline (id −1:
   * more filtered candidates than they hold, ties at a threshold beyond it, a non-finite row) are then
   * sampled here by the definition, reading back only their logits rows.
   */
  sampleRows(logits: Tensor, rows: SampleRowsArgs): SampleRowsResult {
    const X = this.t(logits, 'sampleRows');
    const { n, V } = sampleRowsDims('sampleRows', X, rows);
    if (n === 0) return { ids: new Int32Array(0), logprobs: new Float32Array(0), fallbackRows: 0 };
    const params = new Float64Array(n * 6);
    for (let i = 0; i < n; i++) {
      params[i * 6] = rows.logitsRow[i]!;
      params[i * 6 + 1] = rows.temperature[i]!;
      params[i * 6 + 2] = rows.topP[i]!;
      params[i * 6 + 3] = rows.topK[i]!;
      params[i * 6 + 4] = rows.minP[i]!;
      params[i * 6 + 5] = rows.uniform[i]!;
    }
    const out = new Int32Array(2 * n); // ids, then the logprobs' f32 bits: one copy back
    this.scoped((s) => {
      const p = s.temp(params.byteLength), res = s.temp(n * 8);
      this.addon.upload(p, params);
      this.sampleCapacity = this.call('sample_rows', [res, res + n * 4, s.f32(X), p, n, V]);
      this.addon.download(res, out);
    });
    const ids = out.subarray(0, n), logprobs = new Float32Array(out.buffer, n * 4, n);
    const declined: number[] = [];
    for (let i = 0; i < n; i++) if (ids[i]! < 0) declined.push(i);
    if (declined.length > 0) {
      const sampler = this.rowSampler?.vocabSize === V ? this.rowSampler : (this.rowSampler = new RowSampler(V));
      const host = new Map<number, Float32Array>(); // a row shared by several samples is read once
      const rowOf = (r: number): Float32Array => {
        let h = host.get(r);
        if (!h) {
          const view = this.rowSlice(X, r, r + 1);
          try {
            h = this.read(view);
          } finally {
            view.dispose();
          }
          host.set(r, h);
        }
        return h;
      };
      sampleRowsByDefinition(sampler, rowOf, rows, ids, logprobs, declined);
      this.sampleFallbackRows += declined.length;
    }
    return { ids, logprobs, fallbackRows: declined.length };
  }
  gatherLogprobs(logits: Tensor, targets: Int32Array): Float32Array {
    const X = this.t(logits, 'gatherLogprobs');
    const V = lastDim(X);
    const rows = V > 0 ? X.size / V : 0;
    if (targets.length !== rows) throw new Error(`gatherLogprobs: ${targets.length} targets for ${rows} rows`);
    for (let r = 0; r < rows; r++) if (targets[r]! < 0 || targets[r]! >= V) throw new Error(`gatherLogprobs: target ${targets[r]} at row ${r} is outside [0, ${V})`);
    return this.scoped((s) => {
      const out = s.temp(rows * 4);
      this.call('gather_logprobs', [out, s.f32(X), s.ints(targets), rows, V]);
      const h = new Float32Array(rows);
      this.addon.download(out, h);
      return h;
    });
  }
  crossEntropy(logits: Tensor, targets: Int32Array, mask?: Uint8Array): { loss: number; dlogits: Tensor } {
    const X = this.t(logits, 'crossEntropy');
    const V = lastDim(X);
    const rows = V > 0 ? X.size / V : 0;
    if (targets.length !== rows) throw new Error(`crossEntropy: ${targets.length} targets for ${rows} rows`);
    if (mask && mask.length !== rows) throw new Error(`crossEntropy: mask has ${mask.length} entries for ${rows} rows`);
    let count = 0;
    for (let r = 0; r < rows; r++) {
      if (mask && !mask[r]) continue;
      count++;
      if (targets[r]! < 0 || targets[r]! >= V) throw new Error(`crossEntropy: target ${targets[r]} at row ${r} is outside [0, ${V})`);
    }
    if (count === 0) return { loss: 0, dlogits: this.zeros(X.shape) };
    return this.scoped((s) => {
      const rowLoss = s.temp(rows * 4);
      const m = mask ? s.ints(Int32Array.from(mask)) : 0;
      const dlogits = this.produce(X.shape, (o) => this.call('cross_entropy', [rowLoss, o, s.f32(X), s.ints(targets), m, rows, V, 1 / count]));
      const h = new Float32Array(rows);
      this.addon.download(rowLoss, h);
      let loss = 0;
      for (let r = 0; r < rows; r++) loss += h[r]!;
      return { loss: loss / count, dlogits };
    });
  }

  // ---------- training ----------

  /**
   * One block per row; elements in f32, row sums and the merge with the running stats in f64 (the
   * CPU is f64 throughout): agreement to a few f32 ulps of the logits (tests: 1e-5 of the scale).
   */
  softmaxChunkStats(logits: Tensor, stats: Tensor, opts: SoftmaxChunkOpts): void {
    const op = 'softmaxChunkStats';
    const { R, Vc } = softmaxChunkDims(op, logits, opts, stats, 'stats');
    const X = this.t(logits, `${op}: logits`), St = this.f32Tensor(stats, `${op}: stats`);
    const O = opts.other ? this.t(opts.other, `${op}: other`) : null;
    this.scoped((s) => this.call('softmax_chunk_stats', [St.ptr, s.f32(X), s.optF32(O), opts.targets ? s.ints(opts.targets) : 0, R, Vc,
      opts.scale, opts.vocabOffset]));
  }
  softmaxChunkGrad(logits: Tensor, coefs: Tensor, opts: SoftmaxChunkOpts): Tensor {
    const op = 'softmaxChunkGrad';
    const { R, Vc } = softmaxChunkDims(op, logits, opts, coefs, 'coefs');
    const X = this.t(logits, `${op}: logits`), C = this.t(coefs, `${op}: coefs`);
    const O = opts.other ? this.t(opts.other, `${op}: other`) : null;
    return this.scoped((s) => this.produce(X.shape, (o) => this.call('softmax_chunk_grad', [o, s.f32(X), s.f32(C), s.optF32(O),
      opts.targets ? s.ints(opts.targets) : 0, R, Vc, opts.scale, opts.vocabOffset])));
  }
  adamwStep(args: AdamWStepArgs): void {
    const op = 'adamwStep';
    const param = this.t(args.param, `${op}: param`);
    const grad = this.f32Tensor(args.grad, `${op}: grad`), m = this.f32Tensor(args.m, `${op}: m`), v = this.f32Tensor(args.v, `${op}: v`);
    const master = args.master ? this.f32Tensor(args.master, `${op}: master`) : null;
    const bad = args.nonFinite ? this.f32Tensor(args.nonFinite, `${op}: nonFinite`) : null;
    if (bad && bad.size !== 1) throw new Error(`${op}: nonFinite must hold 1 value, got ${shapeString(bad.shape)}`);
    const n = param.size;
    if (grad.size !== n || m.size !== n || v.size !== n || (master && master.size !== n)) {
      throw new Error(`${op}: sizes differ (param ${n}, grad ${grad.size}, m ${m.size}, v ${v.size}, master ${master ? master.size : '-'})`);
    }
    if (!(args.step >= 1)) throw new Error(`${op}: step must be ≥ 1 (1-based), got ${args.step}`);
    if (!master && param.storage !== 'f32') throw new Error(`${op}: a ${param.dtype} param needs an f32 master copy`);
    if (param.dtype === 'f16') throw new Error(`${op}: f16 params are not supported on the cuda backend`);
    const bc1 = 1 - Math.pow(args.beta1, args.step);
    const sqrtBc2 = Math.sqrt(1 - Math.pow(args.beta2, args.step));
    this.call('adamw', [master ? master.ptr : param.ptr, master ? param.ptr : 0, param.storage === 'bf16' ? 1 : 0, grad.ptr, m.ptr, v.ptr, n,
      args.beta1, args.beta2, args.eps, 1 - args.lr * args.weightDecay, args.lr / bc1, sqrtBc2, bad ? bad.ptr : 0]);
  }
}

function roundF16(v: number): number {
  const a = new Float32Array([v]);
  roundToDType(a, 'f16');
  return a[0]!;
}

/** whether the CUDA backend can run here, and why not */
export function cudaAvailability(): { available: true; device: DeviceInfo } | { available: false; reason: string } {
  const r = loadAddon();
  return r.ok ? { available: true, device: r.device } : { available: false, reason: r.reason };
}
