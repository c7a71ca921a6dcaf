import type { DType, Tensor } from './tensor.js';

/**
 * The backend interface: every op the model, the engine and the trainers use.
 *
 * The CPU backend (pure TypeScript) is the definition of each op; the CUDA backend must match it
 * within stated tolerances. Conventions:
 *  - shapes are row-major; `[B, T, ...]` is batch of rows × time;
 *  - host-side index data (token ids, positions, segment ids, slots, block tables) is passed as
 *    Int32Array; a backend uploads it if it needs to;
 *  - backward ops return fresh gradients for their inputs; gradients of parameters that a layer
 *    owns are added (accumulated) into the layer's grad tensors by the layer itself, except where an
 *    op says it accumulates (`embeddingBackward`, `matmul` with `accumulateInto`);
 *  - `segments` (optional, [B*T]) marks packed rows: position t only sees earlier positions of its
 *    row with the same segment id; conv and scan state reset where the id changes.
 */
export const MATMUL_PRECISIONS = ['highest', 'high', 'medium'] as const;
export type MatmulPrecision = (typeof MATMUL_PRECISIONS)[number];

/** a recorded step (Backend.captureStepGraph) */
export interface StepGraph {
  /** fn's result: refilled in place by every replay; owned by the graph (do not dispose it) */
  readonly output: Tensor;
  /** upload new contents of the inputs (same lengths as at capture) and run the recorded work */
  replay(inputs: Int32Array[]): Tensor;
  dispose(): void;
}

/** options of Backend.matmul (see there): at most one of accumulateInto / writeInto */
export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  accumulateInto?: Tensor;
  writeInto?: Tensor;
  outDType?: DType;
}

export interface Backend {
  readonly name: string;

  // ---------- memory ----------
  /** new tensor holding `data` (converted to f32 compute values, rounded to `dtype` storage) */
  fromArray(data: ArrayLike<number>, shape: readonly number[], dtype?: DType): Tensor;
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  /** copy out to the host as f32 */
  read(t: Tensor): Float32Array;
  /** overwrite the whole tensor from host f32 data (rounded to its dtype) */
  write(t: Tensor, data: ArrayLike<number>): void;
  /**
   * Run `fn` and dispose every tensor it created except those reachable from its result (a tensor, or
   * arrays / objects of them). Only for code that creates nothing it keeps elsewhere (a decode step:
   * state is written in place). The CPU backend, whose memory the GC reclaims, just calls `fn`.
   */
  tidy<R>(fn: () => R): R;
  /**
   * Optional (backends with a device): record `fn`'s device work once as a replayable graph. `inputs`
   * are the host index arrays the work reads (ids, positions, slots, block tables, …): they are
   * uploaded into device buffers owned by the graph, and every op given one of them (or a subarray of
   * one) reads that buffer. Everything else `fn` passes to ops is baked in, so `fn` must issue the
   * same ops on the same tensors every time (a decode step at a fixed batch size and block-table
   * width). The graph is run once before this returns; `output` holds `fn`'s result.
   */
  captureStepGraph?(inputs: Int32Array[], fn: () => Tensor): StepGraph;
  /**
   * Optional (backends with tensor cores): how a matmul of two f32 operands runs, with the names of
   * torch.set_float32_matmul_precision — 'highest' plain f32 (the default: equal to the CPU up to
   * summation order), 'high' TF32, 'medium' both operands rounded to bf16 (what autocast does for a
   * weight gradient dW = dyᵀ·x, and attention's forward on the tensor cores for head dims 64 / 128).
   * Products with a bf16 operand always run in bf16. Backends without it compute f32.
   */
  setFloat32MatmulPrecision?(p: MatmulPrecision): void;
  /**
   * True when a matmul of an f32 activation with a bf16 weight rounds the activation to bf16 first (the
   * tensor cores' input). The ops that feed such a matmul may then emit bf16 themselves (`outDType`),
   * which gives the same product without the matmul's own rounding pass. False or absent: products with
   * a bf16 weight read the f32 activation as is (the CPU), so producers keep f32.
   */
  readonly roundsMatmulInputsToBf16?: boolean;
  /**
   * True when a matmul of two f32 operands rounds both to bf16 first (setFloat32MatmulPrecision('medium')).
   * With roundsMatmulInputsToBf16, an activation that feeds only a bf16-weight product and that product's
   * weight gradient dyᵀ·x may then be stored as bf16 (savedInputDType): both products read the same values.
   */
  readonly roundsF32ProductsToBf16?: boolean;
  /** a view with another shape of the same size, sharing storage */
  reshape(t: Tensor, shape: readonly number[]): Tensor;
  /**
   * A view of rows [r0, r1) of t's first dimension, sharing storage (writes through): a vocabulary
   * chunk of an LM head, read as a matmul operand or accumulated into, without a copy.
   */
  rowSlice(t: Tensor, r0: number, r1: number): Tensor;
  copy(t: Tensor): Tensor;
  /** same values rounded to another storage dtype */
  cast(t: Tensor, dtype: DType): Tensor;
  /**
   * In place: t viewed as [R, rowSize] over its first dimension; row dstRows[i] ← row srcRows[i],
   * for i in order. The engine forks decode state with it (a Mamba state slot of [S, ...] pools,
   * a KV block of [numBlocks, ...] caches) without a round trip through the host.
   */
  copyRows(t: Tensor, srcRows: Int32Array, dstRows: Int32Array): void;

  // ---------- elementwise ----------
  /** a + b (same shape) */
  add(a: Tensor, b: Tensor): Tensor;
  /** dst += alpha * src (same size) */
  addInPlace(dst: Tensor, src: Tensor, alpha?: number): void;
  scaleInPlace(t: Tensor, s: number): void;
  fill(t: Tensor, value: number): void;
  /** sum of squares of all elements (for gradient norms) */
  sumSquares(t: Tensor): number;
  /** sumSquares of each tensor, with one wait for the device in all (a norm over many parameters) */
  sumSquaresEach(ts: readonly Tensor[]): Float64Array;
  /** a ⊙ b (same shape) */
  mul(a: Tensor, b: Tensor): Tensor;
  /** −exp(t) elementwise (A = −exp(A_log) of the Mamba mixers, kept on the device) */
  negExp(t: Tensor): Tensor;
  /** x + bias broadcast over the last dim: x [..., C], bias [C] */
  addBias(x: Tensor, bias: Tensor): Tensor;
  /** column sums: x [..., C] → [C] (the gradient of addBias) */
  sumRows(x: Tensor): Tensor;

  // ---------- layout ----------
  /** split the last dimension into pieces of the given widths (copies, in t's dtype) */
  splitLastDim(t: Tensor, sizes: readonly number[]): Tensor[];
  /** columns [start, end) of the last dimension (a copy, in t's dtype): one piece without copying the others */
  sliceLastDim(t: Tensor, start: number, end: number): Tensor;
  /**
   * concatenate along the last dimension (all leading dims equal). The result is in outDType when given (f32 parts
   * rounded as they are copied: a gradient that only feeds bf16 products, linearGradInputDType); else it keeps the
   * inputs' dtype when they all share one (a grown bf16 KV cache or state pool stays bf16), else it is f32.
   */
  concatLastDim(ts: readonly Tensor[], outDType?: DType): Tensor;
  /**
   * Repeat groups along the last dimension: input [..., S*width] → output [..., S*repeat*width],
   * output group g reads input group ⌊g/repeat⌋ (the M1 x/B expansion from d_xb to d_inner).
   */
  repeatGroups(x: Tensor, width: number, repeat: number): Tensor;
  /** gradient of repeatGroups: sums the `repeat` copies back into each source group */
  repeatGroupsBackward(dy: Tensor, width: number, repeat: number): Tensor;

  // ---------- matmul ----------
  /**
   * 2-D matmul over the flattened leading dims: a is viewed as [M, K] (or [K, M] with transA),
   * b as [K, N] (or [N, K] with transB). Result [M, N], reshaped to a's leading dims + [N] when
   * !transA. With `accumulateInto`, the product is added to that tensor and it is returned; with `writeInto`, the
   * product is written over that f32 tensor (its old values are not read: no zeroing pass, no read of C) and it is
   * returned — the first contribution to a gradient buffer.
   * A linear layer is y = matmul(x, W, {transB: true}); dx = matmul(dy, W); dW += matmul(dy, x, {transA: true}).
   * `outDType` bf16: the f32 sums rounded to bf16 (to nearest even) as the product is stored — a bf16 model's Linear
   * output, for consumers that read bf16; not with accumulateInto or writeInto.
   */
  matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor;
  /**
   * a·w1ᵀ and a·w2ᵀ for two weights of one shape (an MLP's gate and up): the values of matmul(a, w, { transB: true,
   * outDType }) for each, computed as one launch where the backend can (cuda: one batched cuBLASLt product over
   * both weights, twice the output tiles of one — a decode step's skinny products spread over twice the SMs).
   */
  matmulPair(a: Tensor, w1: Tensor, w2: Tensor, opts?: { outDType?: DType }): [Tensor, Tensor];

  // ---------- embedding / norms / MLP ----------
  /** rows of table [V, D] → [n, D] */
  embedding(table: Tensor, ids: Int32Array): Tensor;
  /** dTable[ids[i]] += dy[i] (accumulates) */
  embeddingBackward(dTable: Tensor, ids: Int32Array, dy: Tensor): void;
  /**
   * y = x / sqrt(mean(x²) + eps) * w over the last dim, rounded to outDType (default f32: bf16 where y only
   * feeds products that round it anyway, savedInputDType); rstd [rows] is kept for backward
   */
  rmsNorm(x: Tensor, w: Tensor, eps: number, outDType?: DType): { y: Tensor; rstd: Tensor };
  /**
   * Gradients of rmsNorm. `residual` (x's shape, optional): added to dx as it is stored — a residual layer's input
   * gradient (the norm's part + the gradient arriving on the skip path) in one pass, the same sums as an addInPlace after.
   */
  rmsNormBackward(dy: Tensor, x: Tensor, w: Tensor, rstd: Tensor, residual?: Tensor): { dx: Tensor; dw: Tensor };
  /**
   * h = x + r (x itself when r is null), y = h / sqrt(mean(h²) + eps) * w over the last dim, rounded to
   * outDType — a residual add and the next layer's norm in one op. `opts.rstd`: also return rstd [rows] (as
   * rmsNorm's, for rmsNormBackward with h as its x), for a forward that keeps its activations.
   */
  addRmsNorm(x: Tensor, r: Tensor | null, w: Tensor, eps: number, outDType: DType, opts?: { rstd?: boolean }): { h: Tensor; y: Tensor; rstd?: Tensor };
  /** silu(gate) * up, rounded to outDType (default f32) */
  swiglu(gate: Tensor, up: Tensor, outDType?: DType): Tensor;
  /** dGate, dUp rounded to outDType (default f32): bf16 when they only feed bf16 products (matmulInputDType) */
  swigluBackward(dh: Tensor, gate: Tensor, up: Tensor, outDType?: DType): { dGate: Tensor; dUp: Tensor };

  // ---------- attention ----------
  /**
   * Rotate-half RoPE on x [n, H, Dh] with positions [n]: pairs (i, i+Dh/2) rotated by
   * positions[t] * invFreq[i]. `inverse` rotates by the negative angle (the backward).
   */
  rope(x: Tensor, positions: Int32Array, invFreq: Float32Array, inverse?: boolean): Tensor;
  /**
   * Causal GQA attention. q [B, T, Hq, Dh], k/v [B, T, Hkv, Dh]; q head h uses kv head ⌊h/(Hq/Hkv)⌋.
   * Returns out [B, T, Hq, Dh] and lse [B, Hq, T] (log-sum-exp of the scaled scores, for backward).
   */
  attention(q: Tensor, k: Tensor, v: Tensor, opts: { scale: number; segments?: Int32Array }): { out: Tensor; lse: Tensor };
  attentionBackward(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    opts: { scale: number; segments?: Int32Array },
  ): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * Write k/v [n, Hkv, Dh] into paged caches [numBlocks, blockSize, Hkv, Dh] at flat slots
   * slotMapping[i] = block * blockSize + offset.
   */
  kvCacheWrite(kCache: Tensor, vCache: Tensor, k: Tensor, v: Tensor, slotMapping: Int32Array): void;
  /**
   * One query token per sequence against its paged cache: q [n, Hq, Dh]; sequence i holds
   * seqLens[i] tokens in blocks blockTables[i*maxBlocks ...]. Returns [n, Hq, Dh].
   */
  pagedAttentionDecode(
    q: Tensor, kCache: Tensor, vCache: Tensor,
    blockTables: Int32Array, maxBlocks: number, seqLens: Int32Array, scale: number,
  ): Tensor;

  // ---------- Mamba ----------
  /**
   * Causal depthwise conv over time, zero left padding per row (and per segment): x [B, T, C],
   * w [C, K], bias [C] → [B, T, C], SiLU applied when `silu`.
   * With `stateOut`, the last K-1 inputs of row b (zero-padded when T < K-1) are written to
   * convState [S, C, K-1] at slot slots[b] (prefill → decode hand-over).
   */
  causalConv1d(
    x: Tensor, w: Tensor, bias: Tensor | null,
    opts: { silu: boolean; segments?: Int32Array; stateOut?: { convState: Tensor; slots: Int32Array } },
  ): Tensor;
  causalConv1dBackward(
    dy: Tensor, x: Tensor, w: Tensor, bias: Tensor | null,
    opts: { silu: boolean; segments?: Int32Array },
  ): { dx: Tensor; dw: Tensor; dbias: Tensor | null };
  /**
   * One token per sequence: x [n, C]; convState [S, C, K-1] rows slots[i] hold the previous K-1
   * inputs (oldest first) and are shifted in place. Returns [n, C].
   */
  causalConv1dStep(x: Tensor, convState: Tensor, slots: Int32Array, w: Tensor, bias: Tensor | null, silu: boolean): Tensor;

  /**
   * M1 Mamba-1 selective scan (grouped B/C). Shapes: x, delta, z [B, T, Di]; A [Di, N];
   * Bm, Cm [B, T, G, N] with channel c using group ⌊c/(Di/G)⌋; D, deltaBias [Di].
   *   Δ = softplus(delta + deltaBias)   (threshold 20; `delta` already holds W_dt·δ + b_dt)
   *   h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t ;  y_t = C_t·h_t + D x_t ;  y_t *= silu(z_t) when z
   * State resets at row start and segment changes. With `stateOut`, the final state of row b is
   * written to ssmState [S, Di, N] at slot slots[b].
   */
  selectiveScan(args: SelectiveScanArgs): Tensor;
  selectiveScanBackward(dy: Tensor, args: SelectiveScanArgs): SelectiveScanGrads;
  /**
   * Optional: the shape of `SelectiveScanArgs.checkpoints` for a scan of these sizes, or null when the backend's
   * backward would not read any. A forward given such a zeroed f32 tensor fills it with what its backward would
   * otherwise recompute (the cuda backend: the state entering each of the backward's time chunks); the backward
   * given the same tensor (and the same inputs) skips that recomputation. Same results to f32 rounding.
   */
  selectiveScanCheckpointShape?(B: number, T: number, Di: number, N: number, G: number): number[] | null;
  /** one token: x, delta, z [n, Di], Bm, Cm [n, G, N]; ssmState [S, Di, N] updated in place at slots */
  selectiveScanStep(args: SelectiveScanStepArgs): Tensor;
  /**
   * One decode step of the M1 Mamba-1 mixer between its projections, as one op (one kernel on a
   * device): `proj` [n, 2·Di + 2·dXb + R] is in_proj's output in checkpoint order z | x' | B' | C | δ
   * (δ is not read here), `deltaLow` [n, Di] = W_dt·δ without its bias. Defined as (mamba1DecodeStepComposite):
   *   x = repeatGroups(x', N, Di/dXb); B = repeatGroups(B', N, Di/dXb) and C viewed [n, Di/N, N];
   *   xc = causalConv1dStep(x, convState, slots, convWeight [Di, K], convBias, silu);
   *   y = selectiveScanStep({ x: xc, delta: addBias(deltaLow, dtBias), A: negExp(aLog), B, C, D, z, deltaBias: dtBias, ssmState, slots })
   * (b_dt reaches Δ twice, m1-spec). A_log is taken as stored, so the step needs no separate −exp(A_log) op. Both
   * states are updated in place at `slots`; returns y [n, Di].
   */
  mamba1DecodeStep(args: Mamba1DecodeStepArgs): Tensor;

  /**
   * Mamba-2 SSD scan (scalar decay per head), computed in chunks of `chunkSize`.
   * x [B, T, H, P]; dt [B, T, H] (pre-softplus); A [H] (negative); Bm, Cm [B, T, G, N], head h uses
   * group ⌊h/(H/G)⌋; D, dtBias [H].
   *   Δ = softplus(dt + dtBias); H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t B_tᵀ ; y_t = H_t C_t + D x_t
   * Returns y [B, T, H, P] (ungated). `stateOut` writes the final [H, P, N] state per row.
   */
  ssdScan(args: SsdScanArgs): Tensor;
  ssdScanBackward(dy: Tensor, args: SsdScanArgs): SsdScanGrads;
  /** one token: x [n, H, P], dt [n, H], Bm, Cm [n, G, N]; ssmState [S, H, P, N] updated at slots */
  ssdScanStep(args: SsdScanStepArgs): Tensor;
  /**
   * Gated RMSNorm (norm_before_gate = false): g = y ⊙ silu(z); out = g / rms_group(g) ⊙ w, where the
   * RMS is taken over groups of `groupSize` along the last dim.
   */
  gatedRmsNorm(y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number): Tensor;
  gatedRmsNormBackward(dout: Tensor, y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number): { dy: Tensor; dz: Tensor; dw: Tensor };

  // ---------- logits ----------
  /** log-softmax over the last dim */
  logSoftmax(logits: Tensor): Tensor;
  /**
   * Greedy decoding on the device: the first maximum of each row of logits [n, V] and its log-probability
   * under the unmodified distribution; only these 2·n numbers come back to the host.
   */
  argmaxRows(logits: Tensor): { ids: Int32Array; logprobs: Float32Array };
  /**
   * Optional: token sampling on the backend. Output row i samples logits row rows.logitsRow[i] of
   * logits [R, V] with its temperature / top-p / top-k / min-p and uniform, giving exactly the token of
   * RowSampler.sample (src/backend/cpu/sampling.ts, the definition; greedy rows: the first maximum), and
   * its logprob under log-softmax of the unmodified row. A device backend may compute some rows on the
   * host (its kernels' limits); `fallbackRows` says how many, the result is the same either way.
   */
  sampleRows?(logits: Tensor, rows: SampleRowsArgs): SampleRowsResult;
  /** log p(targets[i]) under row i of logits [n, V] (f32 on the host) */
  gatherLogprobs(logits: Tensor, targets: Int32Array): Float32Array;
  /**
   * Mean cross-entropy over rows with mask[i] != 0 (all rows when no mask) and its gradient
   * dlogits = (softmax − onehot) / count on those rows.
   */
  crossEntropy(logits: Tensor, targets: Int32Array, mask?: Uint8Array): { loss: number; dlogits: Tensor };

  // ---------- training: fused LM-head losses over vocabulary chunks ----------
  /**
   * Online-softmax pass 1 over one vocabulary chunk (the fused LM-head losses never hold [rows × V]
   * logits). logits [R, Vc] are columns [vocabOffset, vocabOffset + Vc) of the full row; z = scale·logits
   * (scale = 1/temperature). stats [R, 4] is updated in place, row by row, as (m, s, w, zt):
   *   m ← running max of z;  s ← Σ exp(z − m);  w ← Σ exp(z − m)·(z − other)  (other = 0 when absent);
   *   zt ← z[targets[i] − vocabOffset] when that column lies in this chunk (unchanged otherwise).
   * Start every row at (−inf, 0, 0, 0). After the last chunk: lse = m + log s; Σ_v p_v (z_v − other_v) = w / s.
   * `other` [R, Vc] is a second logits block (the teacher's, unscaled) for the reverse-KL head.
   */
  softmaxChunkStats(logits: Tensor, stats: Tensor, opts: SoftmaxChunkOpts): void;
  /**
   * Pass 2: the gradient w.r.t. the raw logits chunk [R, Vc] of a loss that is any per-row combination
   * of cross-entropy, log p(target), entropy and reverse KL. With z = scale·logits, p = exp(z − lse),
   * and coefs [R, 4] = (lse, c0, c2, ct) per row:
   *   dlogits[i, v] = scale · ( p[i,v]·(c0[i] + c2[i]·(z[i,v] − other[i,v])) + ct[i]·[v == targets[i]] )
   * (other = 0 when absent). CE: c0 = w, ct = −w; log p(target): c0 = −g, ct = g; entropy H:
   * dH/dz = −p(z − lse + H) → c2 = −w, c0 = w(lse − H); KL(p‖q): c2 = w, c0 = −w·Σp(z − other).
   */
  softmaxChunkGrad(logits: Tensor, coefs: Tensor, opts: SoftmaxChunkOpts): Tensor;

  // ---------- training: optimizer ----------
  /**
   * One AdamW step on one parameter, in place (PyTorch semantics, decoupled weight decay):
   *   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  w ← w·(1 − lr·wd);
   *   w ← w − lr · (m / (1−β1^step)) / (sqrt(v / (1−β2^step)) + eps)
   * w is `master` (f32) when given, and `param` then receives w rounded to its storage dtype (the
   * mixed-precision policy: bf16 weights on the device, f32 master weights and moments). Without a
   * master, w is `param` itself. grad, m, v, master are f32 and have param's size.
   */
  adamwStep(args: AdamWStepArgs): void;
}

/** Backend.sampleRows' parameters: one entry per output row (f64 where the definition computes in f64) */
export interface SampleRowsArgs {
  /** the logits row each output row samples (the n samples of one prompt share the prefill's row) */
  logitsRow: Int32Array;
  /** 0 = greedy (argmax, lowest id on ties; the other fields are ignored); else finite > 0 */
  temperature: Float64Array;
  /** in (0, 1]; 1 = off */
  topP: Float64Array;
  /** ≥ -1; -1, 0 and ≥ V = off */
  topK: Int32Array;
  /** in [0, 1]; 0 = off */
  minP: Float64Array;
  /** in [0, 1), drawn from each sequence's own Rng */
  uniform: Float64Array;
}

export interface SampleRowsResult {
  ids: Int32Array;
  /** log p(ids[i]) under the unmodified logits row */
  logprobs: Float32Array;
  /** rows the backend computed on the host (the row read back, RowSampler) instead of on the device */
  fallbackRows: number;
}

export interface SoftmaxChunkOpts {
  /** multiplies the logits before the softmax: 1/temperature (1 for CE and distillation) */
  scale: number;
  /** first vocabulary id of the chunk */
  vocabOffset: number;
  /** [R] target ids (full-vocabulary ids); rows whose target is outside the chunk are unaffected */
  targets?: Int32Array | null;
  /** [R, Vc] second logits block (teacher), used as `z − other` */
  other?: Tensor | null;
}

export interface AdamWStepArgs {
  param: Tensor; grad: Tensor; m: Tensor; v: Tensor; master: Tensor | null;
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
  /** 1-based step count, for the bias corrections */
  step: number;
  /**
   * f32 [1] on this backend, optional: something ≥ 1 is added to it when an updated weight, as stored in param (bf16
   * rounding included), is not finite — the trainer's divergence check, counted as the weights are written instead of
   * in a pass of its own over them afterwards. Never reset here.
   */
  nonFinite?: Tensor;
}

export interface SelectiveScanArgs {
  x: Tensor; delta: Tensor; A: Tensor; Bm: Tensor; Cm: Tensor; D: Tensor | null; z: Tensor | null;
  deltaBias: Tensor | null;
  segments?: Int32Array;
  stateOut?: { ssmState: Tensor; slots: Int32Array };
  /** forward: filled; backward: read — see Backend.selectiveScanCheckpointShape (backends without it ignore this) */
  checkpoints?: Tensor;
  /** forward: y's dtype (default f32): bf16 when y only feeds out_proj's bf16 product (savedInputDType / matmulInputDType) */
  outDType?: DType;
}
export interface SelectiveScanGrads {
  dx: Tensor; ddelta: Tensor; dA: Tensor; dBm: Tensor; dCm: Tensor;
  dD: Tensor | null; dz: Tensor | null; dDeltaBias: Tensor | null;
}
export interface SelectiveScanStepArgs {
  x: Tensor; delta: Tensor; A: Tensor; Bm: Tensor; Cm: Tensor; D: Tensor | null; z: Tensor | null;
  deltaBias: Tensor | null; ssmState: Tensor; slots: Int32Array;
}
export interface Mamba1DecodeStepArgs {
  proj: Tensor; deltaLow: Tensor; dims: { dInner: number; dXb: number; dState: number; dtRank: number };
  convState: Tensor; convWeight: Tensor; convBias: Tensor | null;
  /** A_log [Di, N] as stored (A = −exp(A_log)) */
  aLog: Tensor; D: Tensor; dtBias: Tensor; ssmState: Tensor; slots: Int32Array;
  /** y's dtype (default f32): bf16 when it feeds a bf16 out_proj on a backend that rounds matmul inputs */
  outDType?: DType;
}

/** mamba1DecodeStep from the unfused ops: the op's definition, and a backend's path for shapes its kernel does not take */
export function mamba1DecodeStepComposite(be: Backend, a: Mamba1DecodeStepArgs): Tensor {
  const { dInner: Di, dXb, dState: N, dtRank: R } = a.dims;
  const n = a.proj.shape[0]!;
  if (a.proj.shape.length !== 2 || a.proj.shape[1] !== 2 * Di + 2 * dXb + R) {
    throw new Error(`mamba1DecodeStep: proj must be [n, ${2 * Di + 2 * dXb + R}] (z | x | B | C | dt), got [${a.proj.shape.join(', ')}]`);
  }
  if (a.deltaLow.shape.length !== 2 || a.deltaLow.shape[0] !== n || a.deltaLow.shape[1] !== Di) {
    throw new Error(`mamba1DecodeStep: deltaLow must be [${n}, ${Di}], got [${a.deltaLow.shape.join(', ')}]`);
  }
  if (a.aLog.shape.length !== 2 || a.aLog.shape[0] !== Di || a.aLog.shape[1] !== N) {
    throw new Error(`mamba1DecodeStep: aLog (A_log) must be [${Di}, ${N}], got [${a.aLog.shape.join(', ')}]`);
  }
  const r = Di / dXb, G = Di / N;
  const [z, xp, bp, c] = be.splitLastDim(a.proj, [Di, dXb, dXb, Di, R]) as [Tensor, Tensor, Tensor, Tensor, Tensor];
  const x = be.repeatGroups(xp, N, r);
  const Bm = be.reshape(be.repeatGroups(bp, N, r), [n, G, N]);
  const Cm = be.reshape(c, [n, G, N]);
  const xc = be.causalConv1dStep(x, a.convState, a.slots, a.convWeight, a.convBias, true);
  const y = be.selectiveScanStep({
    x: xc, delta: be.addBias(a.deltaLow, a.dtBias), A: be.negExp(a.aLog), Bm, Cm, D: a.D, z, deltaBias: a.dtBias, ssmState: a.ssmState, slots: a.slots,
  });
  return (a.outDType ?? 'f32') === 'f32' ? y : be.cast(y, a.outDType!);
}

export interface SsdScanArgs {
  x: Tensor; dt: Tensor; A: Tensor; Bm: Tensor; Cm: Tensor; D: Tensor | null; dtBias: Tensor | null;
  chunkSize: number;
  segments?: Int32Array;
  stateOut?: { ssmState: Tensor; slots: Int32Array };
}
export interface SsdScanGrads {
  dx: Tensor; ddt: Tensor; dA: Tensor; dBm: Tensor; dCm: Tensor; dD: Tensor | null; dDtBias: Tensor | null;
}
export interface SsdScanStepArgs {
  x: Tensor; dt: Tensor; A: Tensor; Bm: Tensor; Cm: Tensor; D: Tensor | null; dtBias: Tensor | null;
  ssmState: Tensor; slots: Int32Array;
}
