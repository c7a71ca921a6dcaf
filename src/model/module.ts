import type { Backend } from '../backend/backend.js';
import type { DType, Tensor } from '../backend/tensor.js';

/**
 * A trainable tensor. `grad` is allocated lazily by `ensureGrad` and accumulated into by backward.
 * `decay` says whether AdamW's weight decay applies (not on norms, A_log, D, biases).
 *
 * `clearGrad` zeroes the gradient lazily: the buffer is kept, marked as holding nothing of this step, and the
 * next product into it (`gradProduct`, the weight gradients of linearBackward) is written over it instead of
 * added — no zeroing pass over the buffer, and no read of it in the product (3.45 B f32 values a distillation
 * step of M1-3B, each zeroed, then read back by its product's epilogue). Anything else that reads the gradient
 * (`grad`, `ensureGrad`, `accumulate`) first sees it zeroed, so a reader can never see the last step's values.
 */
export class Param {
  private g: Tensor | null = null;
  private stale = false;
  private staleBe: Backend | null = null;
  constructor(public value: Tensor, readonly decay: boolean) {}

  /** the gradient (f32, value's shape), null before the first backward; zeros after clearGrad until something lands */
  get grad(): Tensor | null {
    if (this.g !== null && this.stale) {
      this.staleBe!.fill(this.g, 0);
      this.stale = false;
    }
    return this.g;
  }
  set grad(t: Tensor | null) {
    this.g = t;
    this.stale = false;
  }
  /** the gradient, allocated (zeros) on first use, and zeroed now if it was cleared */
  ensureGrad(be: Backend): Tensor {
    this.allocateGrad(be);
    return this.grad!;
  }
  /** allocates the buffer (zeros) if there is none yet; a cleared one stays cleared (a tidy-free allocation point) */
  allocateGrad(be: Backend): void {
    if (this.g === null) this.g = be.zeros(this.value.shape);
  }
  /** gradient = 0, lazily (see the class) */
  clearGrad(be: Backend): void {
    if (this.g === null) return;
    this.stale = true;
    this.staleBe = be;
  }
  /** matmul options that put a product into the gradient: written over a cleared buffer, else added to it */
  gradProduct(be: Backend): { writeInto: Tensor } | { accumulateInto: Tensor } {
    if (this.g !== null && this.stale) {
      this.stale = false;
      return { writeInto: this.g };
    }
    return { accumulateInto: this.ensureGrad(be) };
  }
  /** grad += g */
  accumulate(be: Backend, g: Tensor): void {
    be.addInPlace(this.ensureGrad(be), g);
  }
}

/** Named parameters, keyed by the suffix of their checkpoint key (e.g. `in_proj.weight`). */
export type ParamList = Array<[string, Param]>;

export function prefixed(prefix: string, list: ParamList): ParamList {
  return list.map(([k, p]) => [`${prefix}${k}`, p]);
}

/**
 * How the tokens of a forward call are laid out: B rows of T tokens each, row-major.
 * `positions` [B*T] feed RoPE; `segments` [B*T] (optional) mark packed sequences inside a row:
 * attention, conv and scan state do not cross a change of segment id.
 */
export interface SeqInfo {
  B: number;
  T: number;
  positions: Int32Array;
  segments?: Int32Array;
}

/** positions 0..T-1 for every row, no segments */
export function plainSeqInfo(B: number, T: number): SeqInfo {
  const positions = new Int32Array(B * T);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) positions[b * T + t] = t;
  return { B, T, positions };
}

/**
 * Per-layer decode state, in pools shared by all sequences: a sequence owns state slot `s` (rows s of
 * the Mamba state tensors) and a list of KV blocks (for attention layers).
 */
export type LayerState =
  | { kind: 'attention'; kCache: Tensor; vCache: Tensor } // [numBlocks, blockSize, Hkv, Dh] each
  | { kind: 'mamba1'; convState: Tensor; ssmState: Tensor } // [S, Di, K-1], [S, Di, N]
  | { kind: 'mamba2'; convState: Tensor; ssmState: Tensor }; // [S, Cxbc, K-1], [S, H, P, N]

export interface StatePoolSizes {
  slots: number;
  kvBlocks: number;
  blockSize: number;
  /** storage of the KV cache (default f32; bf16 halves its memory, as serving engines keep it) */
  kvDType?: import('../backend/tensor.js').DType;
  /**
   * storage of the Mamba-1 decode states, the SSM state and the conv window (default f32). bf16 is the reference's:
   * mamba_ssm keeps ssm_state in dt_proj's dtype and conv_state in the conv weight's, bf16 in a bf16 model, re-quantised
   * every step (m1-spec §1.5); it halves the states' memory and decode traffic.
   */
  ssmDType?: import('../backend/tensor.js').DType;
}

/**
 * Where a prefill writes the state it leaves behind: row b of the forward goes to state slot
 * `slots[b]`; token i (row-major over [B, T]) has its K/V written to flat KV slot `slotMapping[i]`
 * (= block * blockSize + offset).
 */
export interface StateWrite {
  slots: Int32Array;
  slotMapping: Int32Array;
}

/**
 * One decode step for n sequences: sequence i uses state slot slots[i], its new token sits at
 * positions[i] and its K/V go to KV slot slotMapping[i]; after the write it holds seqLens[i] tokens in
 * blocks blockTables[i*maxBlocks ... i*maxBlocks + maxBlocks).
 */
export interface DecodeInfo {
  n: number;
  slots: Int32Array;
  positions: Int32Array;
  slotMapping: Int32Array;
  blockTables: Int32Array;
  maxBlocks: number;
  seqLens: Int32Array;
}

/**
 * A sequence mixer (attention, M1 Mamba-1, Mamba-2). Input and output [B, T, D] in the parallel form,
 * [n, D] in the step form. `saved` is whatever backward needs; it is opaque to callers.
 */
export interface Mixer {
  readonly kind: 'attention' | 'mamba1' | 'mamba2';
  params(): ParamList;
  forward(u: Tensor, seq: SeqInfo, opts: { needBackward: boolean; state?: LayerState; stateWrite?: StateWrite }): { y: Tensor; saved: unknown };
  backward(dy: Tensor, saved: unknown): Tensor;
  allocateState(sizes: StatePoolSizes): LayerState;
  step(u: Tensor, state: LayerState, info: DecodeInfo): Tensor;
  /** the weight of the step's first projection: the step's input is rounded to what its product reads */
  inputWeight(): Tensor;
}

/**
 * The dtype an op feeding a product with weight w may emit: bf16 when the backend rounds the activation
 * of a bf16-weight product to bf16 anyway (the same product, without the matmul's own rounding pass),
 * else f32.
 */
export function matmulInputDType(be: Backend, w: Tensor): DType {
  return be.roundsMatmulInputsToBf16 && w.dtype === 'bf16' ? 'bf16' : 'f32';
}

/**
 * The dtype a forward that keeps its activations may store one in when it feeds only products with weight w
 * (the forward product and, in backward, w's gradient dyᵀ·x): bf16 when both products round it to bf16 anyway
 * (a bf16 weight, and f32 × f32 products in bf16: precision 'medium') — the same numbers, half the bytes and no
 * rounding pass inside either product; else f32.
 */
export function savedInputDType(be: Backend, w: Tensor): DType {
  return matmulInputDType(be, w) === 'bf16' && be.roundsF32ProductsToBf16 ? 'bf16' : 'f32';
}

/**
 * The dtype linearBackward(dy, x, w) reads dy in, in both of its products: bf16 when each would round an f32 dy to
 * bf16 anyway (a bf16-weight product, and x bf16), so the op producing dy may emit bf16 itself; else f32.
 */
export function linearGradInputDType(be: Backend, x: Tensor, w: Tensor): DType {
  return x.dtype === 'bf16' && matmulInputDType(be, w) === 'bf16' ? 'bf16' : 'f32';
}

/** Linear y = x Wᵀ (no bias); W [out, in] as in PyTorch. `outDType` bf16: y rounded to bf16 as it is stored (inference). */
export function linearForward(be: Backend, x: Tensor, w: Tensor, outDType?: DType): Tensor {
  return be.matmul(x, w, { transB: true, outDType });
}

/**
 * backward of y = x Wᵀ: accumulates dW into the param's grad and returns dx — or adds dx into `dxInto`
 * (an f32 tensor of x's size) and returns that. On a backend that rounds a bf16-weight product's
 * activation to bf16 (matmulInputDType), an f32 dy is rounded once here for both products: the same
 * numbers as each product rounding it itself, one rounding pass less. (The dW product reads the rounded
 * dy only when x is bf16 too, i.e. when that product is a bf16 one anyway.)
 */
export function linearBackward(be: Backend, dy: Tensor, x: Tensor, w: Param, dxInto?: Tensor): Tensor {
  const dOut = dy.shape[dy.shape.length - 1]!;
  const dIn = x.shape[x.shape.length - 1]!;
  const dyB = dy.dtype === 'f32' && matmulInputDType(be, w.value) === 'bf16' ? be.cast(dy, 'bf16') : null;
  const x2 = be.reshape(x, [x.size / dIn, dIn]);
  const dyW = dyB && x.dtype === 'bf16' ? dyB : dy;
  be.matmul(be.reshape(dyW, [dyW.size / dOut, dOut]), x2, { transA: true, ...w.gradProduct(be) });
  const dx = dxInto ? be.matmul(be.reshape(dyB ?? dy, [dy.size / dOut, dOut]), w.value, { accumulateInto: dxInto }) : be.matmul(dyB ?? dy, w.value);
  dyB?.dispose();
  return dxInto ?? dx;
}

/**
 * What a parameter is before it has a value: its checkpoint key (relative to the layer), shape,
 * whether weight decay applies, and how the reference implementation initialises it. Model
 * initialisation goes spec by spec, so an `m1 init` of a 3B shape streams tensors to disk without
 * ever building the model.
 */
export interface ParamSpec {
  key: string;
  shape: number[];
  decay: boolean;
  /** storage dtype the reference keeps it in when the model is bf16 (A_log/D stay f32) */
  keepF32?: boolean;
  init: (rng: import('../util/rng.js').Rng) => Float32Array;
}

/**
 * Where a layer gets its weights: the tensor for a key relative to the layer. Implementations check
 * the shape and throw a CheckpointError naming the full key when it is missing or wrong.
 */
export type WeightSource = (key: string, shape: readonly number[]) => Tensor;
