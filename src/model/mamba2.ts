// The MambaInLlama Mamba-2 mixer (m1-spec §1.9): in_proj → conv+SiLU on [x|B|C] → GQA-style repeat of
// x and B → SSD scan → gated RMSNorm → out_proj. Kept as the reference for the Mamba-2 variant; M1 itself
// uses the Mamba-1 mixer.
import type { Backend } from '../backend/backend.js';
import { shapeString, type Tensor } from '../backend/tensor.js';
import { type Rng, uniformArray } from '../util/rng.js';
import type { Mamba2Dims } from './config.js';
import {
  linearBackward, linearForward, Param,
  type DecodeInfo, type LayerState, type Mixer, type ParamList, type ParamSpec, type SeqInfo, type StatePoolSizes,
  type StateWrite, type WeightSource,
} from './module.js';

/** Sizes derived from Mamba2Dims, checked once. */
interface Mamba2Shape {
  D: number; // d_model
  Di: number; // d_inner = H·P
  Dxb: number; // width of x' and b' before the repeat
  N: number; // d_state
  P: number; // head dim
  H: number; // heads
  G: number; // B/C groups after the repeat
  K: number; // conv width
  Cw: number; // width of C = G·N
  Cxbc: number; // conv channels = Dxb + Dxb + Cw
  xRepeat: number; // x heads: Dxb/P → H
  bRepeat: number; // B groups: Dxb/N → G
  projOut: number; // in_proj rows
}

function mamba2Shape(d: Mamba2Dims): Mamba2Shape {
  const bad = (msg: string): never => {
    throw new Error(`Mamba2 dims: ${msg}`);
  };
  for (const [k, v] of Object.entries({ dModel: d.dModel, dInner: d.dInner, dXb: d.dXb, dState: d.dState, headDim: d.headDim, nHeads: d.nHeads, nGroups: d.nGroups, dConv: d.dConv, chunkSize: d.chunkSize })) {
    if (!Number.isInteger(v) || v < 1) bad(`${k} must be a positive integer, got ${v}`);
  }
  const { dInner: Di, dXb: Dxb, dState: N, headDim: P, nHeads: H, nGroups: G } = d;
  if (H * P !== Di) bad(`nHeads ${H} × headDim ${P} ≠ dInner ${Di}`);
  if (Dxb % P !== 0 || H % (Dxb / P) !== 0) bad(`dXb ${Dxb} must hold whole heads of ${P} whose count divides nHeads ${H}`);
  if (Dxb % N !== 0 || G % (Dxb / N) !== 0) bad(`dXb ${Dxb} must hold whole groups of dState ${N} whose count divides nGroups ${G}`);
  if (H % G !== 0) bad(`nHeads ${H} is not a multiple of nGroups ${G}`);
  const Cw = G * N;
  return {
    D: d.dModel, Di, Dxb, N, P, H, G, K: d.dConv, Cw, Cxbc: 2 * Dxb + Cw,
    xRepeat: H / (Dxb / P), bRepeat: G / (Dxb / N), projOut: Di + 2 * Dxb + Cw + H,
  };
}

/** Parameter specs with the reference (mamba_ssm Mamba2) initialisation. Keys are relative to `model.layers.N.mamba.`. */
export function mamba2ParamSpecs(dims: Mamba2Dims): ParamSpec[] {
  const s = mamba2Shape(dims);
  const specs: ParamSpec[] = [
    { key: 'in_proj.weight', shape: [s.projOut, s.D], decay: true, init: (rng) => uniformArray(rng, s.projOut * s.D, 1 / Math.sqrt(s.D)) },
    { key: 'conv1d.weight', shape: [s.Cxbc, 1, s.K], decay: true, init: (rng) => uniformArray(rng, s.Cxbc * s.K, 1 / Math.sqrt(s.K)) },
  ];
  if (dims.convBias) {
    specs.push({ key: 'conv1d.bias', shape: [s.Cxbc], decay: false, init: (rng) => uniformArray(rng, s.Cxbc, 1 / Math.sqrt(s.K)) });
  }
  specs.push(
    { key: 'dt_bias', shape: [s.H], decay: false, init: (rng) => dtBiasInit(rng, s.H) },
    {
      key: 'A_log', shape: [s.H], decay: false, keepF32: true,
      init: (rng) => Float32Array.from({ length: s.H }, () => Math.log(rng.range(1, 16))),
    },
    { key: 'D', shape: [s.H], decay: false, keepF32: true, init: () => new Float32Array(s.H).fill(1) },
    { key: 'norm.weight', shape: [s.Di], decay: false, init: () => new Float32Array(s.Di).fill(1) },
    { key: 'out_proj.weight', shape: [s.D, s.Di], decay: true, init: (rng) => uniformArray(rng, s.D * s.Di, 1 / Math.sqrt(s.Di)) },
  );
  return specs;
}

/** dt ~ exp(U(ln 1e-3, ln 1e-1)) clamped ≥ 1e-4, stored as softplus⁻¹(dt) so that softplus(dt_bias) = dt */
function dtBiasInit(rng: Rng, H: number): Float32Array {
  const out = new Float32Array(H);
  for (let h = 0; h < H; h++) {
    const dt = Math.max(1e-4, Math.exp(rng.range(Math.log(1e-3), Math.log(1e-1))));
    out[h] = dt + Math.log(-Math.expm1(-dt));
  }
  return out;
}

interface Mamba2Saved {
  u: Tensor; // [B, T, D]
  z: Tensor; // [B, T, Di]
  xBC: Tensor; // [B, T, Cxbc] conv input
  x: Tensor; // [B, T, H, P] scan input (post-conv, repeated)
  dt: Tensor; // [B, T, H]
  Bm: Tensor; // [B, T, G, N]
  Cm: Tensor; // [B, T, G, N]
  A: Tensor; // [H]
  y: Tensor; // [B, T, Di] scan output
  yn: Tensor; // [B, T, Di] normalised, gated
  seq: SeqInfo;
}

export class Mamba2Mixer implements Mixer {
  readonly kind = 'mamba2' as const;
  private readonly s: Mamba2Shape;
  readonly inProj: Param;
  readonly convWeight: Param;
  readonly convBias: Param | null;
  readonly dtBias: Param;
  readonly aLog: Param;
  readonly dSkip: Param;
  readonly normWeight: Param;
  readonly outProj: Param;

  constructor(private readonly be: Backend, readonly dims: Mamba2Dims, weights: WeightSource) {
    this.s = mamba2Shape(dims);
    const s = this.s;
    this.inProj = new Param(weights('in_proj.weight', [s.projOut, s.D]), true);
    this.convWeight = new Param(weights('conv1d.weight', [s.Cxbc, 1, s.K]), true);
    this.convBias = dims.convBias ? new Param(weights('conv1d.bias', [s.Cxbc]), false) : null;
    this.dtBias = new Param(weights('dt_bias', [s.H]), false);
    this.aLog = new Param(weights('A_log', [s.H]), false);
    this.dSkip = new Param(weights('D', [s.H]), false);
    this.normWeight = new Param(weights('norm.weight', [s.Di]), false);
    this.outProj = new Param(weights('out_proj.weight', [s.D, s.Di]), true);
  }

  params(): ParamList {
    const list: ParamList = [
      ['in_proj.weight', this.inProj],
      ['conv1d.weight', this.convWeight],
    ];
    if (this.convBias) list.push(['conv1d.bias', this.convBias]);
    list.push(
      ['dt_bias', this.dtBias],
      ['A_log', this.aLog],
      ['D', this.dSkip],
      ['norm.weight', this.normWeight],
      ['out_proj.weight', this.outProj],
    );
    return list;
  }

  /** conv1d.weight [C, 1, K] seen as the [C, K] the conv ops take */
  private convW(): Tensor {
    return this.be.reshape(this.convWeight.value, [this.s.Cxbc, this.s.K]);
  }

  /** A = −exp(A_log) [H]; H numbers, computed on the host */
  private negExpA(): Tensor {
    return this.be.negExp(this.aLog.value);
  }

  /** post-conv [.., Cxbc] → scan inputs x [.., H, P], Bm, Cm [.., G, N] (lead = leading dims) */
  private expand(xc: Tensor, lead: number[]): { x: Tensor; Bm: Tensor; Cm: Tensor } {
    const { be, s } = this;
    const [xs, bs, cs] = be.splitLastDim(xc, [s.Dxb, s.Dxb, s.Cw]) as [Tensor, Tensor, Tensor];
    const x = be.reshape(be.repeatGroups(xs, s.P, s.xRepeat), [...lead, s.H, s.P]);
    const Bm = be.reshape(be.repeatGroups(bs, s.N, s.bRepeat), [...lead, s.G, s.N]);
    const Cm = be.reshape(cs, [...lead, s.G, s.N]);
    return { x, Bm, Cm };
  }

  private checkState(state: LayerState | undefined, what: string): { convState: Tensor; ssmState: Tensor } {
    if (!state || state.kind !== 'mamba2') throw new Error(`Mamba2Mixer.${what}: needs a 'mamba2' layer state, got ${state ? `'${state.kind}'` : 'none'}`);
    return state;
  }

  forward(u: Tensor, seq: SeqInfo, opts: { needBackward: boolean; state?: LayerState; stateWrite?: StateWrite }): { y: Tensor; saved: unknown } {
    const { be, s } = this;
    const { B, T } = seq;
    if (u.shape.length !== 3 || u.shape[0] !== B || u.shape[1] !== T || u.shape[2] !== s.D) {
      throw new Error(`Mamba2Mixer.forward: input must be [${B}, ${T}, ${s.D}], got ${shapeString(u.shape)}`);
    }
    let conv: { convState: Tensor; slots: Int32Array } | undefined;
    let ssm: { ssmState: Tensor; slots: Int32Array } | undefined;
    if (opts.stateWrite) {
      const st = this.checkState(opts.state, 'forward');
      conv = { convState: st.convState, slots: opts.stateWrite.slots };
      ssm = { ssmState: st.ssmState, slots: opts.stateWrite.slots };
    }

    const proj = linearForward(be, u, this.inProj.value); // [B, T, projOut]
    const [z, xBC, dt] = be.splitLastDim(proj, [s.Di, s.Cxbc, s.H]) as [Tensor, Tensor, Tensor];
    // repeat_kv_before_conv = False: the conv runs on the narrow x'|b'|c and the repeat comes after
    const xc = be.causalConv1d(xBC, this.convW(), this.convBias?.value ?? null, { silu: true, segments: seq.segments, stateOut: conv });
    const { x, Bm, Cm } = this.expand(xc, [B, T]);
    const A = this.negExpA();
    const yScan = be.ssdScan({
      x, dt, A, Bm, Cm, D: this.dSkip.value, dtBias: this.dtBias.value,
      chunkSize: this.dims.chunkSize, segments: seq.segments, stateOut: ssm,
    });
    const y = be.reshape(yScan, [B, T, s.Di]);
    const yn = be.gatedRmsNorm(y, z, this.normWeight.value, s.P, this.dims.normEps);
    const out = linearForward(be, yn, this.outProj.value);
    const saved: Mamba2Saved | null = opts.needBackward ? { u, z, xBC, x, dt, Bm, Cm, A, y, yn, seq } : null;
    return { y: out, saved };
  }

  backward(dout: Tensor, savedAny: unknown): Tensor {
    const { be, s } = this;
    const sv = savedAny as Mamba2Saved | null;
    if (!sv) throw new Error('Mamba2Mixer.backward: forward was run without needBackward');
    const { B, T } = sv.seq;

    const dyn = linearBackward(be, dout, sv.yn, this.outProj);
    const gn = be.gatedRmsNormBackward(dyn, sv.y, sv.z, this.normWeight.value, s.P, this.dims.normEps);
    this.normWeight.accumulate(be, gn.dw);

    const g = be.ssdScanBackward(be.reshape(gn.dy, [B, T, s.H, s.P]), {
      x: sv.x, dt: sv.dt, A: sv.A, Bm: sv.Bm, Cm: sv.Cm, D: this.dSkip.value, dtBias: this.dtBias.value,
      chunkSize: this.dims.chunkSize, segments: sv.seq.segments,
    });
    // A = −exp(A_log) ⇒ dA_log = dA ⊙ A
    this.aLog.accumulate(be, be.mul(g.dA, sv.A));
    if (g.dD) this.dSkip.accumulate(be, g.dD);
    if (g.dDtBias) this.dtBias.accumulate(be, g.dDtBias);

    const dxs = be.repeatGroupsBackward(be.reshape(g.dx, [B, T, s.Di]), s.P, s.xRepeat);
    const dbs = be.repeatGroupsBackward(be.reshape(g.dBm, [B, T, s.G * s.N]), s.N, s.bRepeat);
    const dcs = be.reshape(g.dCm, [B, T, s.Cw]);
    const dxc = be.concatLastDim([dxs, dbs, dcs]);
    const cg = be.causalConv1dBackward(dxc, sv.xBC, this.convW(), this.convBias?.value ?? null, { silu: true, segments: sv.seq.segments });
    this.convWeight.accumulate(be, be.reshape(cg.dw, [s.Cxbc, 1, s.K]));
    if (this.convBias && cg.dbias) this.convBias.accumulate(be, cg.dbias);

    const dproj = be.concatLastDim([gn.dz, cg.dx, g.ddt]);
    return linearBackward(be, dproj, sv.u, this.inProj);
  }

  allocateState(sizes: StatePoolSizes): LayerState {
    const { be, s } = this;
    if ((sizes.ssmDType ?? 'f32') !== 'f32') throw new Error(`Mamba2Mixer.allocateState: ssmDType ${sizes.ssmDType} is not supported for Mamba-2 layers (their SSD state is kept in f32)`);
    return {
      kind: 'mamba2',
      convState: be.zeros([sizes.slots, s.Cxbc, s.K - 1]),
      ssmState: be.zeros([sizes.slots, s.H, s.P, s.N]),
    };
  }

  inputWeight(): Tensor {
    return this.inProj.value;
  }
  step(u: Tensor, state: LayerState, info: DecodeInfo): Tensor {
    const { be, s } = this;
    const st = this.checkState(state, 'step');
    const n = info.n;
    if (u.shape.length !== 2 || u.shape[0] !== n || u.shape[1] !== s.D) {
      throw new Error(`Mamba2Mixer.step: input must be [${n}, ${s.D}], got ${shapeString(u.shape)}`);
    }
    const proj = linearForward(be, u, this.inProj.value); // [n, projOut]
    const [z, xBC, dt] = be.splitLastDim(proj, [s.Di, s.Cxbc, s.H]) as [Tensor, Tensor, Tensor];
    const xc = be.causalConv1dStep(xBC, st.convState, info.slots, this.convW(), this.convBias?.value ?? null, true);
    const { x, Bm, Cm } = this.expand(xc, [n]);
    const yScan = be.ssdScanStep({
      x, dt, A: this.negExpA(), Bm, Cm, D: this.dSkip.value, dtBias: this.dtBias.value,
      ssmState: st.ssmState, slots: info.slots,
    });
    const yn = be.gatedRmsNorm(be.reshape(yScan, [n, s.Di]), z, this.normWeight.value, s.P, this.dims.normEps);
    return linearForward(be, yn, this.outProj.value);
  }
}
