// GQA self-attention with RoPE as a sequence mixer, in two weight layouts:
//  - 'llama': HF LlamaAttention (`self_attn.{q,k,v,o}_proj.weight`), the teacher's layers;
//  - 'm1': the M1 hybrid's MHA (`mha.in_proj.weight` = rows [q | k | v], `mha.out_proj.weight`).
// Keys here are relative to the mixer; the decoder layer adds the `self_attn.` / `mha.` prefix.
import type { Backend } from '../backend/backend.js';
import { shapeString, type Tensor } from '../backend/tensor.js';
import { normalArray, type Rng } from '../util/rng.js';
import {
  Param, linearBackward, linearForward, linearGradInputDType,
  type DecodeInfo, type LayerState, type Mixer, type ParamList, type ParamSpec, type SeqInfo, type StatePoolSizes,
  type StateWrite, type WeightSource,
} from './module.js';

export interface AttentionDims {
  hidden: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** RoPE inverse frequencies [headDim/2] (from ropeInvFreq; unscaled for M1) */
  invFreq: Float32Array;
  layout: 'llama' | 'm1';
}

/** HF `initializer_range` */
const INIT_STD = 0.02;

function checkDims(d: AttentionDims): void {
  const ok = (x: number) => Number.isInteger(x) && x > 0;
  if (!ok(d.hidden) || !ok(d.numHeads) || !ok(d.numKvHeads) || !ok(d.headDim)) {
    throw new Error(`attention: hidden/numHeads/numKvHeads/headDim must be positive integers, got ${d.hidden}/${d.numHeads}/${d.numKvHeads}/${d.headDim}`);
  }
  if (d.numHeads % d.numKvHeads !== 0) throw new Error(`attention: numHeads ${d.numHeads} is not a multiple of numKvHeads ${d.numKvHeads}`);
  if (d.headDim % 2 !== 0) throw new Error(`attention: headDim ${d.headDim} must be even for RoPE`);
  if (d.invFreq.length !== d.headDim / 2) throw new Error(`attention: invFreq has ${d.invFreq.length} values, headDim ${d.headDim} needs ${d.headDim / 2}`);
}

export function attentionParamSpecs(dims: AttentionDims): ParamSpec[] {
  checkDims(dims);
  const D = dims.hidden, qDim = dims.numHeads * dims.headDim, kvDim = dims.numKvHeads * dims.headDim;
  const spec = (key: string, shape: number[]): ParamSpec => ({
    key, shape, decay: true, init: (rng: Rng) => normalArray(rng, shape[0]! * shape[1]!, INIT_STD),
  });
  if (dims.layout === 'm1') {
    return [spec('in_proj.weight', [qDim + 2 * kvDim, D]), spec('out_proj.weight', [D, qDim])];
  }
  return [
    spec('q_proj.weight', [qDim, D]),
    spec('k_proj.weight', [kvDim, D]),
    spec('v_proj.weight', [kvDim, D]),
    spec('o_proj.weight', [D, qDim]),
  ];
}

/** what backward needs from a forward */
interface AttentionSaved {
  u: Tensor; // [B, T, D]
  q: Tensor; // [B, T, Hq, Dh] rotated
  k: Tensor; // [B, T, Hkv, Dh] rotated
  v: Tensor; // [B, T, Hkv, Dh]
  out: Tensor; // [B, T, Hq, Dh] attention output before o_proj
  lse: Tensor; // [B, Hq, T]
  positions: Int32Array;
  segments?: Int32Array;
}

export class AttentionMixer implements Mixer {
  readonly kind = 'attention' as const;
  private readonly list: ParamList;
  private readonly scale: number;
  // 'llama' layout
  private readonly qProj: Param | null = null;
  private readonly kProj: Param | null = null;
  private readonly vProj: Param | null = null;
  // 'm1' layout
  private readonly inProj: Param | null = null;
  private readonly outProj: Param;

  constructor(private readonly be: Backend, readonly dims: AttentionDims, weights: WeightSource) {
    const specs = attentionParamSpecs(dims);
    this.list = specs.map((s) => [s.key, new Param(weights(s.key, s.shape), true)]);
    const get = (key: string): Param => this.list.find(([k]) => k === key)![1];
    if (dims.layout === 'm1') {
      this.inProj = get('in_proj.weight');
      this.outProj = get('out_proj.weight');
    } else {
      this.qProj = get('q_proj.weight');
      this.kProj = get('k_proj.weight');
      this.vProj = get('v_proj.weight');
      this.outProj = get('o_proj.weight');
    }
    this.scale = 1 / Math.sqrt(dims.headDim);
  }

  params(): ParamList {
    return this.list;
  }
  inputWeight(): Tensor {
    return (this.inProj ?? this.qProj)!.value;
  }

  /** x [..., D] → q [..., Hq·Dh], k, v [..., Hkv·Dh] (not yet rotated) */
  private project(x: Tensor): [Tensor, Tensor, Tensor] {
    const be = this.be, { numHeads: Hq, numKvHeads: Hkv, headDim: Dh } = this.dims;
    if (this.inProj) {
      const [q, k, v] = be.splitLastDim(linearForward(be, x, this.inProj.value), [Hq * Dh, Hkv * Dh, Hkv * Dh]);
      return [q!, k!, v!];
    }
    // k and v (one shape under GQA and MHA alike) as one launch where the backend can (matmulPair)
    const [k, v] = be.matmulPair(x, this.kProj!.value, this.vProj!.value);
    return [linearForward(be, x, this.qProj!.value), k, v];
  }

  forward(u: Tensor, seq: SeqInfo, opts: { needBackward: boolean; state?: LayerState; stateWrite?: StateWrite }): { y: Tensor; saved: unknown } {
    const be = this.be, { hidden: D, numHeads: Hq, numKvHeads: Hkv, headDim: Dh, invFreq } = this.dims;
    const { B, T } = seq;
    if (u.shape.length !== 3 || u.shape[0] !== B || u.shape[1] !== T || u.shape[2] !== D) {
      throw new Error(`attention forward: u is ${shapeString(u.shape)}, expected [B, T, D] = [${B}, ${T}, ${D}]`);
    }
    if (seq.positions.length !== B * T) throw new Error(`attention forward: seq.positions has ${seq.positions.length} entries, expected B*T = ${B * T}`);
    const [q0, k0, v0] = this.project(u);
    const q = be.rope(be.reshape(q0, [B, T, Hq, Dh]), seq.positions, invFreq);
    const k = be.rope(be.reshape(k0, [B, T, Hkv, Dh]), seq.positions, invFreq);
    const v = be.reshape(v0, [B, T, Hkv, Dh]);
    const { out, lse } = be.attention(q, k, v, { scale: this.scale, segments: seq.segments });
    const y = linearForward(be, be.reshape(out, [B, T, Hq * Dh]), this.outProj.value);
    if (opts.stateWrite) {
      const state = this.checkState(opts.state, 'attention forward');
      be.kvCacheWrite(state.kCache, state.vCache, be.reshape(k, [B * T, Hkv, Dh]), be.reshape(v, [B * T, Hkv, Dh]), opts.stateWrite.slotMapping);
    }
    if (!opts.needBackward) return { y, saved: null };
    const saved: AttentionSaved = { u, q, k, v, out, lse, positions: seq.positions, segments: seq.segments };
    return { y, saved };
  }

  backward(dy: Tensor, saved: unknown): Tensor {
    if (saved === null || typeof saved !== 'object' || !('lse' in saved)) {
      throw new Error('attention backward: no saved activations (was forward run with needBackward: true?)');
    }
    const s = saved as AttentionSaved;
    const be = this.be, { numHeads: Hq, headDim: Dh, invFreq } = this.dims;
    const [B, T] = s.u.shape as unknown as [number, number];
    const dOut = linearBackward(be, dy, be.reshape(s.out, [B, T, Hq * Dh]), this.outProj);
    const g = be.attentionBackward(be.reshape(dOut, s.out.shape), s.q, s.k, s.v, s.out, s.lse, { scale: this.scale, segments: s.segments });
    // RoPE is a rotation: its transpose is the rotation by the negative angle
    const dq = be.rope(g.dq, s.positions, invFreq, true);
    const dk = be.rope(g.dk, s.positions, invFreq, true);
    const flat = (t: Tensor) => be.reshape(t, [B, T, t.size / (B * T)]);
    if (this.inProj) {
      return linearBackward(be, be.concatLastDim([flat(dq), flat(dk), flat(g.dv)], linearGradInputDType(be, s.u, this.inProj.value)), s.u, this.inProj);
    }
    const du = linearBackward(be, flat(dq), s.u, this.qProj!);
    linearBackward(be, flat(dk), s.u, this.kProj!, du);
    return linearBackward(be, flat(g.dv), s.u, this.vProj!, du);
  }

  allocateState(sizes: StatePoolSizes): LayerState {
    const shape = [sizes.kvBlocks, sizes.blockSize, this.dims.numKvHeads, this.dims.headDim];
    const dtype = sizes.kvDType ?? 'f32';
    return { kind: 'attention', kCache: this.be.zeros(shape, dtype), vCache: this.be.zeros(shape, dtype) };
  }

  step(u: Tensor, state: LayerState, info: DecodeInfo): Tensor {
    const be = this.be, { hidden: D, numHeads: Hq, numKvHeads: Hkv, headDim: Dh, invFreq } = this.dims;
    const n = info.n;
    if (u.shape.length !== 2 || u.shape[0] !== n || u.shape[1] !== D) {
      throw new Error(`attention step: u is ${shapeString(u.shape)}, expected [n, D] = [${n}, ${D}]`);
    }
    const cache = this.checkState(state, 'attention step');
    const [q0, k0, v0] = this.project(u);
    const q = be.rope(be.reshape(q0, [n, Hq, Dh]), info.positions, invFreq);
    const k = be.rope(be.reshape(k0, [n, Hkv, Dh]), info.positions, invFreq);
    be.kvCacheWrite(cache.kCache, cache.vCache, k, be.reshape(v0, [n, Hkv, Dh]), info.slotMapping);
    const out = be.pagedAttentionDecode(q, cache.kCache, cache.vCache, info.blockTables, info.maxBlocks, info.seqLens, this.scale);
    return linearForward(be, be.reshape(out, [n, Hq * Dh]), this.outProj.value);
  }

  private checkState(state: LayerState | undefined, op: string): Extract<LayerState, { kind: 'attention' }> {
    if (!state) throw new Error(`${op}: no attention state given (needed to write the KV cache)`);
    if (state.kind !== 'attention') throw new Error(`${op}: expected an attention state, got '${state.kind}'`);
    return state;
  }
}
