// The M1 Mamba-1 mixer (m1-spec §1.4, §1.5), exactly as the released M1-3B computes it:
//   [z | x' | b' | c | δ] = in_proj(u)                     split order z, x, B, C, dt (not Mamba's x, z)
//   x = repeat(x'), B = repeat(b')                          d_state-wide groups, output group g ← ⌊g/r⌋
//   x̄ = SiLU(conv1d(x))                                    conv on the repeated x only; B, C unconvolved
//   delta = dt_proj(δ) = W_dt δ + b_dt                      a Linear with bias …
//   y = scan(x̄, delta, A = −exp(A_log), B, C, D, z, deltaBias = b_dt)   … and b_dt again inside the scan
//   out = out_proj(y)                                       no norm before out_proj
import type { Backend } from '../backend/backend.js';
import { shapeString, type Tensor } from '../backend/tensor.js';
import { uniformArray, type Rng } from '../util/rng.js';
import type { Mamba1Dims } from './config.js';
import {
  linearBackward, linearForward, linearGradInputDType, matmulInputDType, Param, savedInputDType,
  type DecodeInfo, type LayerState, type Mixer, type ParamList, type ParamSpec, type SeqInfo, type StatePoolSizes,
  type StateWrite, type WeightSource,
} from './module.js';

function checkDims(d: Mamba1Dims): void {
  const { dInner: Di, dXb, dState: N } = d;
  if (Di % N !== 0 || dXb % N !== 0) throw new Error(`Mamba1: d_inner ${Di} and d_xb ${dXb} must be multiples of d_state ${N}`);
  if (Di % dXb !== 0) throw new Error(`Mamba1: d_inner ${Di} must be a multiple of d_xb ${dXb}`);
  if (d.dConv < 1 || d.dtRank < 1) throw new Error(`Mamba1: d_conv ${d.dConv} and dt_rank ${d.dtRank} must be ≥ 1`);
}

/** widths of the in_proj output pieces, in checkpoint row order z | x | B | C | dt */
function inProjSplit(d: Mamba1Dims): number[] {
  return [d.dInner, d.dXb, d.dXb, d.dInner, d.dtRank];
}

/** Parameters of one M1 Mamba-1 mixer with the reference initialisation (mamba/hybrid_mamba_layer.py). */
export function mamba1ParamSpecs(dims: Mamba1Dims): ParamSpec[] {
  checkDims(dims);
  const { dModel: Dm, dInner: Di, dState: N, dConv: K, dtRank: R } = dims;
  const inRows = inProjSplit(dims).reduce((s, w) => s + w, 0);
  const specs: ParamSpec[] = [
    // nn.Linear default: kaiming_uniform(a=√5) = U(±1/√fan_in)
    { key: 'in_proj.weight', shape: [inRows, Dm], decay: true, init: (rng) => uniformArray(rng, inRows * Dm, 1 / Math.sqrt(Dm)) },
    // depthwise conv: fan_in = (in_channels / groups) · K = K
    { key: 'conv1d.weight', shape: [Di, 1, K], decay: true, init: (rng) => uniformArray(rng, Di * K, 1 / Math.sqrt(K)) },
  ];
  if (dims.convBias) {
    specs.push({ key: 'conv1d.bias', shape: [Di], decay: false, init: (rng) => uniformArray(rng, Di, 1 / Math.sqrt(K)) });
  }
  specs.push(
    // dt_init "random", dt_scale 1: U(±dt_rank^−0.5)
    { key: 'dt_proj.weight', shape: [Di, R], decay: true, init: (rng) => uniformArray(rng, Di * R, 1 / Math.sqrt(R)) },
    { key: 'dt_proj.bias', shape: [Di], decay: false, init: (rng) => dtBiasInit(rng, Di) },
    {
      key: 'A_log', shape: [Di, N], decay: false, keepF32: true,
      init: () => {
        // S4D-real: A[c, n] = −(n + 1)
        const a = new Float32Array(Di * N);
        for (let c = 0; c < Di; c++) for (let n = 0; n < N; n++) a[c * N + n] = Math.log(n + 1);
        return a;
      },
    },
    { key: 'D', shape: [Di], decay: false, keepF32: true, init: () => new Float32Array(Di).fill(1) },
    { key: 'out_proj.weight', shape: [Dm, Di], decay: true, init: (rng) => uniformArray(rng, Dm * Di, 1 / Math.sqrt(Di)) },
  );
  return specs;
}

/** softplus⁻¹ of dt ~ exp(U(ln 1e-3, ln 1e-1)) clamped ≥ 1e-4, so that softplus(bias) starts at dt */
function dtBiasInit(rng: Rng, Di: number, dtMin = 1e-3, dtMax = 1e-1, dtFloor = 1e-4): Float32Array {
  const out = new Float32Array(Di);
  for (let c = 0; c < Di; c++) {
    const dt = Math.max(Math.exp(rng.range(Math.log(dtMin), Math.log(dtMax))), dtFloor);
    out[c] = dt + Math.log(-Math.expm1(-dt));
  }
  return out;
}

interface Mamba1Saved {
  B: number;
  T: number;
  segments?: Int32Array;
  u: Tensor; // [B, T, Dm]
  z: Tensor; // [B, T, Di]
  x: Tensor; // [B, T, Di] repeated, pre-conv
  xConv: Tensor; // [B, T, Di] after conv + SiLU
  dtLow: Tensor; // [B, T, R]
  delta: Tensor; // [B, T, Di] = W_dt δ + b_dt
  A: Tensor; // [Di, N] = −exp(A_log)
  Bm: Tensor; // [B, T, G, N]
  Cm: Tensor; // [B, T, G, N]
  y: Tensor; // [B, T, Di] gated scan output
  checkpoints?: Tensor; // what the backend's scan backward would otherwise recompute (selectiveScanCheckpointShape)
}

export class Mamba1Mixer implements Mixer {
  readonly kind = 'mamba1' as const;
  readonly inProj: Param;
  readonly convWeight: Param; // [Di, 1, K] as in the checkpoint
  readonly convBias: Param | null;
  readonly dtProjWeight: Param;
  readonly dtProjBias: Param;
  readonly aLog: Param;
  readonly dSkip: Param;
  readonly outProj: Param;
  private readonly groups: number; // G = Di / N
  private readonly repeat: number; // r = Di / d_xb

  constructor(private readonly be: Backend, readonly dims: Mamba1Dims, weights: WeightSource) {
    checkDims(dims);
    const take = (spec: ParamSpec): Param => new Param(weights(spec.key, spec.shape), spec.decay);
    const byKey = new Map(mamba1ParamSpecs(dims).map((s) => [s.key, s]));
    const spec = (k: string): ParamSpec => byKey.get(k)!;
    this.inProj = take(spec('in_proj.weight'));
    this.convWeight = take(spec('conv1d.weight'));
    this.convBias = dims.convBias ? take(spec('conv1d.bias')) : null;
    this.dtProjWeight = take(spec('dt_proj.weight'));
    this.dtProjBias = take(spec('dt_proj.bias'));
    this.aLog = take(spec('A_log'));
    this.dSkip = take(spec('D'));
    this.outProj = take(spec('out_proj.weight'));
    this.groups = dims.dInner / dims.dState;
    this.repeat = dims.dInner / dims.dXb;
  }

  params(): ParamList {
    const list: ParamList = [['in_proj.weight', this.inProj], ['conv1d.weight', this.convWeight]];
    if (this.convBias) list.push(['conv1d.bias', this.convBias]);
    list.push(
      ['dt_proj.weight', this.dtProjWeight], ['dt_proj.bias', this.dtProjBias],
      ['A_log', this.aLog], ['D', this.dSkip], ['out_proj.weight', this.outProj],
    );
    return list;
  }

  /** conv weight viewed [Di, K] (the op's layout); a view, so it follows in-place updates */
  private convTaps(): Tensor {
    return this.be.reshape(this.convWeight.value, [this.dims.dInner, this.dims.dConv]);
  }

  /** A = −exp(A_log) [Di, N], recomputed each call because A_log changes during training */
  private negExpALog(): Tensor {
    return this.be.negExp(this.aLog.value);
  }

  /**
   * in_proj and the pieces derived from it, shared by forward and step. `lead` is [B, T] or [n].
   * delta = W_dt δ + b_dt (dt_proj is a Linear with bias; the scan adds b_dt a second time).
   */
  private project(u: Tensor, lead: number[]): { z: Tensor; x: Tensor; Bm: Tensor; Cm: Tensor; dtLow: Tensor; delta: Tensor } {
    const be = this.be, { dState: N } = this.dims;
    const proj = linearForward(be, u, this.inProj.value);
    const [z, xp, bp, c, dtLow] = be.splitLastDim(proj, inProjSplit(this.dims)) as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const x = be.repeatGroups(xp, N, this.repeat);
    const Bm = be.reshape(be.repeatGroups(bp, N, this.repeat), [...lead, this.groups, N]);
    const Cm = be.reshape(c, [...lead, this.groups, N]);
    const delta = be.addBias(linearForward(be, dtLow, this.dtProjWeight.value), this.dtProjBias.value);
    return { z, x, Bm, Cm, dtLow, delta };
  }

  forward(u: Tensor, seq: SeqInfo, opts: { needBackward: boolean; state?: LayerState; stateWrite?: StateWrite }): { y: Tensor; saved: unknown } {
    const be = this.be, { dModel: Dm } = this.dims;
    const { B, T, segments } = seq;
    if (u.shape.length !== 3 || u.shape[0] !== B || u.shape[1] !== T || u.shape[2] !== Dm) {
      throw new Error(`Mamba1Mixer.forward: u must be [B=${B}, T=${T}, D=${Dm}], got ${shapeString(u.shape)}`);
    }
    let convOut: { convState: Tensor; slots: Int32Array } | undefined;
    let scanOut: { ssmState: Tensor; slots: Int32Array } | undefined;
    if (opts.stateWrite) {
      const st = opts.state;
      if (!st || st.kind !== 'mamba1') throw new Error(`Mamba1Mixer.forward: stateWrite needs a 'mamba1' state, got ${st ? `'${st.kind}'` : 'none'}`);
      if (opts.stateWrite.slots.length !== B) throw new Error(`Mamba1Mixer.forward: stateWrite.slots has ${opts.stateWrite.slots.length} entries for B = ${B} rows`);
      convOut = { convState: st.convState, slots: opts.stateWrite.slots };
      scanOut = { ssmState: st.ssmState, slots: opts.stateWrite.slots };
    }

    const { z, x, Bm, Cm, dtLow, delta } = this.project(u, [B, T]);
    // the decode conv state holds pre-conv repeated x, which is what stateOut writes
    const xConv = be.causalConv1d(x, this.convTaps(), this.convBias?.value ?? null, { silu: true, segments, stateOut: convOut });
    const A = this.negExpALog();
    const { dInner: Di, dState: N } = this.dims;
    const ckShape = opts.needBackward ? be.selectiveScanCheckpointShape?.(B, T, Di, N, Bm.shape[2]!) ?? null : null;
    const checkpoints = ckShape ? be.zeros(ckShape) : undefined;
    // y feeds only out_proj (and, when kept, its weight gradient): stored as that product reads it
    const outDType = opts.needBackward ? savedInputDType(be, this.outProj.value) : matmulInputDType(be, this.outProj.value);
    const y = be.selectiveScan({
      x: xConv, delta, A, Bm, Cm, D: this.dSkip.value, z, deltaBias: this.dtProjBias.value, segments, stateOut: scanOut, checkpoints, outDType,
    });
    const out = linearForward(be, y, this.outProj.value);
    if (!opts.needBackward) return { y: out, saved: null };
    const saved: Mamba1Saved = { B, T, segments, u, z, x, xConv, dtLow, delta, A, Bm, Cm, y, checkpoints };
    return { y: out, saved };
  }

  backward(dy: Tensor, savedRaw: unknown): Tensor {
    const s = savedRaw as Mamba1Saved | null;
    if (!s || !(s.u && s.xConv)) throw new Error('Mamba1Mixer.backward: no saved activations (was forward called with needBackward: true?)');
    const be = this.be, { dInner: Di, dState: N } = this.dims;
    const { B, T } = s;

    const dyScan = linearBackward(be, dy, s.y, this.outProj);
    const g = be.selectiveScanBackward(dyScan, {
      x: s.xConv, delta: s.delta, A: s.A, Bm: s.Bm, Cm: s.Cm, D: this.dSkip.value, z: s.z,
      deltaBias: this.dtProjBias.value, segments: s.segments, checkpoints: s.checkpoints,
    });
    this.dSkip.accumulate(be, g.dD!);
    // A = −exp(A_log) ⇒ ∂A/∂A_log = A
    this.aLog.accumulate(be, be.mul(g.dA, s.A));

    // b_dt reaches Δ twice: as dt_proj's bias (sum of ddelta over rows) and as the scan's deltaBias
    this.dtProjBias.accumulate(be, g.dDeltaBias!);
    this.dtProjBias.accumulate(be, be.sumRows(g.ddelta));
    const dDtLow = linearBackward(be, g.ddelta, s.dtLow, this.dtProjWeight);

    const conv = be.causalConv1dBackward(g.dx, s.x, this.convTaps(), this.convBias?.value ?? null, { silu: true, segments: s.segments });
    this.convWeight.accumulate(be, be.reshape(conv.dw, this.convWeight.value.shape));
    if (this.convBias) this.convBias.accumulate(be, conv.dbias!);

    const dxp = be.repeatGroupsBackward(conv.dx, N, this.repeat);
    const dbp = be.repeatGroupsBackward(be.reshape(g.dBm, [B, T, Di]), N, this.repeat);
    const dc = be.reshape(g.dCm, [B, T, Di]);
    const dProj = be.concatLastDim([g.dz!, dxp, dbp, dc, dDtLow], linearGradInputDType(be, s.u, this.inProj.value));
    return linearBackward(be, dProj, s.u, this.inProj);
  }

  allocateState(sizes: StatePoolSizes): LayerState {
    const { dInner: Di, dState: N, dConv: K } = this.dims;
    if (!(Number.isInteger(sizes.slots) && sizes.slots >= 1)) throw new Error(`Mamba1Mixer.allocateState: slots must be a positive integer, got ${sizes.slots}`);
    return {
      kind: 'mamba1',
      convState: this.be.zeros([sizes.slots, Di, K - 1], sizes.ssmDType ?? 'f32'),
      ssmState: this.be.zeros([sizes.slots, Di, N], sizes.ssmDType ?? 'f32'),
    };
  }

  inputWeight(): Tensor {
    return this.inProj.value;
  }
  step(u: Tensor, state: LayerState, info: DecodeInfo): Tensor {
    const be = this.be, { dModel: Dm } = this.dims;
    if (state.kind !== 'mamba1') throw new Error(`Mamba1Mixer.step: expected a 'mamba1' state, got '${state.kind}'`);
    const n = info.n;
    if (u.shape.length !== 2 || u.shape[0] !== n || u.shape[1] !== Dm) {
      throw new Error(`Mamba1Mixer.step: u must be [n=${n}, D=${Dm}], got ${shapeString(u.shape)}`);
    }
    if (info.slots.length !== n) throw new Error(`Mamba1Mixer.step: info.slots has ${info.slots.length} entries for n = ${n}`);
    // in_proj and dt_proj as matmuls, everything between them one op (a fused kernel on CUDA). With bf16 products
    // in_proj's output is stored as bf16, as a bf16 model's Linear output is (the reference's): half its bytes written
    // and read back, and δ — its last R columns — goes to dt_proj as one column slice
    const R = this.dims.dtRank, P = this.inProj.value.shape[0]!;
    const proj = linearForward(be, u, this.inProj.value, matmulInputDType(be, this.dtProjWeight.value));
    const dtLow = be.sliceLastDim(proj, P - R, P);
    const y = be.mamba1DecodeStep({
      proj, deltaLow: linearForward(be, dtLow, this.dtProjWeight.value), dims: this.dims,
      convState: state.convState, convWeight: this.convTaps(), convBias: this.convBias?.value ?? null,
      aLog: this.aLog.value, D: this.dSkip.value, dtBias: this.dtProjBias.value, ssmState: state.ssmState, slots: info.slots,
      outDType: matmulInputDType(be, this.outProj.value),
    });
    return linearForward(be, y, this.outProj.value);
  }
}
