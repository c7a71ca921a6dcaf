// The causal LM stack shared by both families: the Llama transformer (teacher) and the M1 hybrid (student).
//   x = embed(ids); per layer: h = x + Mixer(RMSNorm_in(x)); x = h + MLP(RMSNorm_post(h)); logits = lm_head(RMSNorm(x))
import type { Backend } from '../backend/backend.js';
import type { Tensor } from '../backend/tensor.js';
import { AttentionMixer, attentionParamSpecs, type AttentionDims } from './attention.js';
import { ropeInvFreq, type LlamaConfig, type MambaConfig } from './config.js';
import { normalInit, RMSNorm, SwiGluMlp } from './layers.js';
import { Mamba1Mixer, mamba1ParamSpecs } from './mamba1.js';
import { Mamba2Mixer, mamba2ParamSpecs } from './mamba2.js';
import {
  matmulInputDType, Param, prefixed, savedInputDType, type DecodeInfo, type LayerState, type Mixer, type ParamList, type ParamSpec, type SeqInfo,
  type StatePoolSizes, type StateWrite, type WeightSource,
} from './module.js';

export type Arch = 'llama' | 'm1';
export type LayerKind = 'attention' | 'mamba1' | 'mamba2';

export interface ModelConfig {
  arch: Arch;
  llama: LlamaConfig;
  /** present for the hybrid (`mamba_config.json`) */
  mamba: MambaConfig | null;
}

export function layerKinds(cfg: ModelConfig): LayerKind[] {
  const n = cfg.llama.numLayers;
  if (cfg.arch === 'llama' || !cfg.mamba) return Array(n).fill('attention');
  const attn = new Set(cfg.mamba.attnLayers);
  const ssm: LayerKind = cfg.mamba.version === 2 ? 'mamba2' : 'mamba1';
  return Array.from({ length: n }, (_, i) => (attn.has(i) ? 'attention' : ssm));
}

/** checkpoint key prefix of layer i's mixer */
export function mixerPrefix(cfg: ModelConfig, i: number): string {
  const kind = layerKinds(cfg)[i]!;
  if (kind !== 'attention') return `model.layers.${i}.mamba.`;
  return cfg.arch === 'llama' ? `model.layers.${i}.self_attn.` : `model.layers.${i}.mha.`;
}

/**
 * The hybrid's attention layers use plain RoPE even when config.json carries llama3 scaling: the released
 * M1 uses flash-attn's RotaryEmbedding with base θ only, and was fine-tuned that way (m1-spec §1.6).
 */
export function attentionDims(cfg: ModelConfig): AttentionDims {
  const l = cfg.llama;
  const scaling = cfg.arch === 'llama' ? l.ropeScaling : null;
  return {
    hidden: l.hiddenSize, numHeads: l.numHeads, numKvHeads: l.numKvHeads, headDim: l.headDim,
    invFreq: ropeInvFreq(l.headDim, l.ropeTheta, scaling), layout: cfg.arch === 'llama' ? 'llama' : 'm1',
  };
}

/** every parameter of the model with its full checkpoint key, in checkpoint order */
export function modelParamSpecs(cfg: ModelConfig): ParamSpec[] {
  const l = cfg.llama;
  const std = typeof l.raw['initializer_range'] === 'number' ? (l.raw['initializer_range'] as number) : 0.02;
  const specs: ParamSpec[] = [
    { key: 'model.embed_tokens.weight', shape: [l.vocabSize, l.hiddenSize], decay: true, init: (r) => normalInit(r, l.vocabSize * l.hiddenSize, std) },
  ];
  const kinds = layerKinds(cfg);
  for (let i = 0; i < l.numLayers; i++) {
    const p = `model.layers.${i}.`;
    specs.push(...withPrefix(p, RMSNorm.specs(l.hiddenSize, 'input_layernorm.weight')));
    const mp = mixerPrefix(cfg, i);
    const kind = kinds[i]!;
    const mixer = kind === 'attention' ? attentionParamSpecs(attentionDims(cfg))
      : kind === 'mamba1' ? mamba1ParamSpecs(cfg.mamba!.mamba1) : mamba2ParamSpecs(cfg.mamba!.mamba2);
    specs.push(...withPrefix(mp, mixer));
    specs.push(...withPrefix(p, RMSNorm.specs(l.hiddenSize, 'post_attention_layernorm.weight')));
    specs.push(...withPrefix(`${p}mlp.`, SwiGluMlp.specs(l.hiddenSize, l.intermediateSize, std)));
  }
  specs.push({ key: 'model.norm.weight', shape: [l.hiddenSize], decay: false, init: () => new Float32Array(l.hiddenSize).fill(1) });
  if (!l.tieWordEmbeddings) {
    specs.push({ key: 'lm_head.weight', shape: [l.vocabSize, l.hiddenSize], decay: true, init: (r) => normalInit(r, l.vocabSize * l.hiddenSize, std) });
  }
  return specs;
}

function withPrefix(prefix: string, specs: ParamSpec[]): ParamSpec[] {
  return specs.map((s) => ({ ...s, key: prefix + s.key }));
}

function sub(weights: WeightSource, prefix: string): WeightSource {
  return (key, shape) => weights(prefix + key, shape);
}

interface LayerSaved {
  x: Tensor; n1: Tensor; rstd1: Tensor; mixer: unknown; h: Tensor; n2: Tensor; rstd2: Tensor; mlp: unknown;
}

class DecoderLayer {
  readonly inNorm: RMSNorm;
  readonly postNorm: RMSNorm;
  readonly mlp: SwiGluMlp;
  constructor(private be: Backend, readonly index: number, readonly mixer: Mixer, readonly mixerPrefix: string, l: LlamaConfig, weights: WeightSource) {
    const p = `model.layers.${index}.`;
    this.inNorm = new RMSNorm(be, l.hiddenSize, l.rmsNormEps, sub(weights, p), 'input_layernorm.weight');
    this.postNorm = new RMSNorm(be, l.hiddenSize, l.rmsNormEps, sub(weights, p), 'post_attention_layernorm.weight');
    this.mlp = new SwiGluMlp(be, l.hiddenSize, l.intermediateSize, sub(weights, `${p}mlp.`));
  }
  params(): ParamList {
    const p = `model.layers.${this.index}.`;
    return [
      ...prefixed(p, this.inNorm.params('input_layernorm.weight')),
      ...prefixed(this.mixerPrefix, this.mixer.params()),
      ...prefixed(p, this.postNorm.params('post_attention_layernorm.weight')),
      ...prefixed(`${p}mlp.`, this.mlp.params()),
    ];
  }
  forward(x: Tensor, seq: SeqInfo, needBackward: boolean, state?: LayerState, stateWrite?: StateWrite): { out: Tensor; saved: LayerSaved | null } {
    const be = this.be;
    if (!needBackward) {
      // inference with the layer's output materialized (a recomputed layer's input): its pending residual added
      const o = this.forwardPending(x, null, seq, state, stateWrite);
      return { out: be.add(o.x, o.r), saved: null };
    }
    // the norms' outputs feed only products: stored as those products read them (savedInputDType)
    const { y: n1, rstd: rstd1 } = this.inNorm.forward(x, savedInputDType(be, this.mixer.inputWeight()));
    const mix = this.mixer.forward(n1, seq, { needBackward, state, stateWrite });
    // h = x + mixer(·) and the post-mixer norm in one op
    const post = be.addRmsNorm(x, mix.y, this.postNorm.weight.value, this.postNorm.eps, this.mlp.inputDType(savedInputDType), { rstd: true });
    const { h, y: n2 } = post, rstd2 = post.rstd!;
    const mlp = this.mlp.forward(n2, needBackward);
    const out = be.add(h, mlp.y);
    return { out, saved: needBackward ? { x, n1, rstd1, mixer: mix.saved, h, n2, rstd2, mlp: mlp.saved } : null };
  }
  backward(dOut: Tensor, s: LayerSaved): Tensor {
    // out = h + mlp(norm(h)) → dh = dOut + norm'ᵀ mlp'ᵀ dOut
    const dn2 = this.mlp.backward(dOut, s.mlp as Parameters<SwiGluMlp['backward']>[1]);
    const dh = this.postNorm.backward(dn2, s.h, s.rstd2, dOut);  // + dOut: the skip path, added as dh is stored
    const dn1 = this.mixer.backward(dh, s.mixer);
    return this.inNorm.backward(dn1, s.x, s.rstd1, dh);
  }
  /**
   * Inference over a sequence (prefill, a frozen teacher) in step's form: the layer's input is x + r (x when r is
   * null), its output the returned x + r, added by the next layer's norm (or the final one).
   */
  forwardPending(x: Tensor, r: Tensor | null, seq: SeqInfo, state?: LayerState, stateWrite?: StateWrite): { x: Tensor; r: Tensor } {
    return this.infer(x, r, (u) => this.mixer.forward(u, seq, { needBackward: false, state, stateWrite }).y);
  }
  /**
   * One decode step with the residual adds inside the norms: the layer's input is x + r (x alone when r
   * is null) and its output is the returned x + r, which the next layer's norm (or the final one) adds.
   * The same sums as forward's h = x + mixer(norm(x)), out = h + mlp(norm(h)).
   */
  step(x: Tensor, r: Tensor | null, state: LayerState, info: DecodeInfo): { x: Tensor; r: Tensor } {
    return this.infer(x, r, (u) => this.mixer.step(u, state, info));
  }
  /**
   * The inference layer shared by step and the no-backward forward: the residual adds inside the norms, and
   * the norms and SwiGLU emitting the dtype their products read (matmulInputDType); `mix` runs the mixer
   */
  private infer(x: Tensor, r: Tensor | null, mix: (u: Tensor) => Tensor): { x: Tensor; r: Tensor } {
    const be = this.be;
    const a = be.addRmsNorm(x, r, this.inNorm.weight.value, this.inNorm.eps, matmulInputDType(be, this.mixer.inputWeight()));
    const b = be.addRmsNorm(a.h, mix(a.y), this.postNorm.weight.value, this.postNorm.eps, this.mlp.inputDType(matmulInputDType));
    return { x: b.h, r: this.mlp.step(b.y) };
  }
}

export interface ModelSaved {
  ids: Int32Array;
  /** per layer, what its backward reads (null for a recomputed layer) */
  layers: (LayerSaved | null)[];
  /**
   * per layer, for a recomputed layer its input [B, T, D] (the checkpoint; null for a layer that saved
   * its activations); backward reruns the layer's forward from it, saving, just before its backward
   */
  inputs: (Tensor | null)[];
  seq: SeqInfo;
  last: Tensor;
  rstdFinal: Tensor;
  hidden: Tensor;
}

export class CausalLM {
  readonly embed: Param;
  readonly lmHead: Param;
  readonly finalNorm: RMSNorm;
  readonly layers: DecoderLayer[];
  readonly kinds: LayerKind[];

  constructor(readonly be: Backend, readonly cfg: ModelConfig, weights: WeightSource) {
    const l = cfg.llama;
    this.embed = new Param(weights('model.embed_tokens.weight', [l.vocabSize, l.hiddenSize]), true);
    this.kinds = layerKinds(cfg);
    this.layers = this.kinds.map((kind, i) => {
      const mp = mixerPrefix(cfg, i);
      const w = sub(weights, mp);
      const mixer: Mixer = kind === 'attention' ? new AttentionMixer(be, attentionDims(cfg), w)
        : kind === 'mamba1' ? new Mamba1Mixer(be, cfg.mamba!.mamba1, w) : new Mamba2Mixer(be, cfg.mamba!.mamba2, w);
      return new DecoderLayer(be, i, mixer, mp, l, weights);
    });
    this.finalNorm = new RMSNorm(be, l.hiddenSize, l.rmsNormEps, weights, 'model.norm.weight');
    this.lmHead = l.tieWordEmbeddings ? this.embed : new Param(weights('lm_head.weight', [l.vocabSize, l.hiddenSize]), true);
  }

  get vocabSize(): number {
    return this.cfg.llama.vocabSize;
  }
  get hiddenSize(): number {
    return this.cfg.llama.hiddenSize;
  }

  /** all parameters with full checkpoint keys; a tied LM head is listed once, as the embedding */
  params(): ParamList {
    const list: ParamList = [['model.embed_tokens.weight', this.embed]];
    for (const layer of this.layers) list.push(...layer.params());
    list.push(...this.finalNorm.params('model.norm.weight'));
    if (this.lmHead !== this.embed) list.push(['lm_head.weight', this.lmHead]);
    return list;
  }

  parameterCount(): number {
    return this.params().reduce((s, [, p]) => s + p.value.size, 0);
  }

  /** every gradient = 0, lazily (Param.clearGrad: the next weight-gradient product is written over its buffer) */
  zeroGrads(): void {
    for (const [, p] of this.params()) p.clearGrad(this.be);
  }

  /**
   * Parallel forward of ids [B*T] laid out by `seq`, up to the final norm: hidden [B, T, D].
   * With `states` + `stateWrite`, each layer leaves its decode state behind (prefill).
   *
   * A layer that saves nothing runs inside `be.tidy`, so only the residual stream [B, T, D] outlives
   * it: its temporaries (projections, MLP hidden, ...) go back to the device allocator at once
   * instead of piling up for all layers until the caller's tidy ends. That is every layer without
   * needBackward, and every recomputed layer (activation checkpointing): the forward keeps only that
   * layer's input, and backward reruns the layer's forward, saving, right before its backward. Same ops
   * on the same inputs, so the gradients are identical; the cost is one more forward of those layers.
   * `recompute`: true = every layer, false = none, a number k = the first k layers (selective
   * checkpointing: the other layers keep their activations, which is faster when memory allows).
   * A layer that saves runs in a tidy too, which keeps what its backward reads and frees the rest.
   */
  forward(
    ids: Int32Array, seq: SeqInfo,
    opts: { needBackward?: boolean; recompute?: boolean | number; states?: LayerState[]; stateWrite?: StateWrite } = {},
  ): { hidden: Tensor; saved: ModelSaved | null } {
    const be = this.be;
    const { B, T } = seq;
    if (ids.length !== B * T) throw new Error(`forward: ${ids.length} token ids for B=${B} × T=${T}`);
    if (seq.positions.length !== B * T) throw new Error(`forward: ${seq.positions.length} positions for B=${B} × T=${T}`);
    const needBackward = opts.needBackward ?? false;
    const L = this.layers.length, r = opts.recompute ?? false;
    if (typeof r === 'number' && !(Number.isInteger(r) && r >= 0 && r <= L)) throw new Error(`forward: recompute must be a boolean or a layer count in [0, ${L}], got ${r}`);
    const recomputed = !needBackward ? 0 : r === true ? L : r === false ? 0 : r;
    let x = be.reshape(be.embedding(this.embed.value, ids), [B, T, this.hiddenSize]);
    if (!needBackward) {
      // each layer's residual add is left to the next layer's norm (the final norm for the last): the stream
      // holds x and r, and no layer writes x + r only to read it back
      let r: Tensor | null = null;
      this.layers.forEach((layer, i) => {
        const xi = x, ri = r;
        ({ x, r } = be.tidy(() => layer.forwardPending(xi, ri, seq, opts.states?.[i], opts.stateWrite)));
        xi.dispose();  // nothing reads them again
        ri?.dispose();
      });
      const f = this.finalNorm;
      const out = be.tidy(() => be.addRmsNorm(x, r, f.weight.value, f.eps, 'f32'));
      if (out.h !== x) out.h.dispose();
      x.dispose();
      (r as Tensor | null)?.dispose();
      return { hidden: out.y, saved: null };
    }
    const saved: (LayerSaved | null)[] = [];
    const inputs: (Tensor | null)[] = [];
    this.layers.forEach((layer, i) => {
      const input = x;
      if (i >= recomputed) {
        const f = be.tidy(() => layer.forward(input, seq, true, opts.states?.[i], opts.stateWrite));
        saved.push(f.saved!);
        inputs.push(null);
        x = f.out;
        return;
      }
      saved.push(null);  // recomputed in backward from its input
      inputs.push(input);
      x = be.tidy(() => layer.forward(input, seq, false, opts.states?.[i], opts.stateWrite).out);
    });
    const { y: hidden, rstd } = this.finalNorm.forward(x);
    return { hidden, saved: { ids, layers: saved, inputs, seq, last: x, rstdFinal: rstd, hidden } };
  }

  /** logits [rows, V] for hidden rows [rows, D] (pass a slice of rows to bound memory) */
  logits(hidden: Tensor): Tensor {
    const rows = hidden.size / this.hiddenSize;
    const h = this.be.reshape(hidden, [rows, this.hiddenSize]);
    try {
      return this.be.matmul(h, this.lmHead.value, { transB: true });
    } finally {
      h.dispose(); // the view only: on a device it would hold hidden's block until the garbage collector runs
    }
  }

  /**
   * Backward from the gradient of the logits [B*T, V] (the loss heads make it). Accumulates every
   * parameter's gradient.
   */
  backwardFromLogits(dlogits: Tensor, saved: ModelSaved): void {
    const be = this.be;
    const D = this.hiddenSize;
    const rows = saved.hidden.size / D;
    const hidden2 = be.reshape(saved.hidden, [rows, D]);
    be.matmul(dlogits, hidden2, { transA: true, accumulateInto: this.lmHead.ensureGrad(be) });
    const dHidden = be.matmul(dlogits, this.lmHead.value);
    this.backwardFromHidden(be.reshape(dHidden, saved.hidden.shape), saved);
  }

  /** backward from the gradient of the final-norm output [B, T, D] */
  backwardFromHidden(dHidden: Tensor, saved: ModelSaved): void {
    const be = this.be;
    let dx = this.finalNorm.backward(dHidden, saved.last, saved.rstdFinal);
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const layer = this.layers[i]!, input = saved.inputs[i], kept = saved.layers[i], dOut = dx;
      // gradients live across steps: allocate them out here, or the tidy below would free them
      for (const [, p] of layer.params()) p.allocateGrad(be);
      // the backward's temporaries (and a rerun forward's activations) die with this layer
      dx = be.tidy(() => layer.backward(dOut, kept ?? layer.forward(input!, saved.seq, true).saved!));
      dOut.dispose();
    }
    be.embeddingBackward(this.embed.ensureGrad(be), saved.ids, be.reshape(dx, [saved.ids.length, this.hiddenSize]));
  }

  /** decode state pools for every layer */
  allocateState(sizes: StatePoolSizes): LayerState[] {
    return this.layers.map((l) => l.mixer.allocateState(sizes));
  }

  /** one token for each of info.n sequences: ids [n] → logits [n, V] */
  step(ids: Int32Array, states: LayerState[], info: DecodeInfo): Tensor {
    const be = this.be;
    if (ids.length !== info.n) throw new Error(`step: ${ids.length} ids for ${info.n} sequences`);
    let x = be.embedding(this.embed.value, ids);
    let r: Tensor | null = null;
    this.layers.forEach((layer, i) => {
      ({ x, r } = layer.step(x, r, states[i]!, info));
    });
    const f = this.finalNorm;
    return this.logits(be.addRmsNorm(x, r, f.weight.value, f.eps, matmulInputDType(be, this.lmHead.value)).y);
  }
}
