// The pieces every decoder layer shares: RMSNorm and the SwiGLU MLP.
import type { Backend } from '../backend/backend.js';
import type { DType, Tensor } from '../backend/tensor.js';
import { Rng, uniformArray } from '../util/rng.js';
import { linearBackward, linearForward, matmulInputDType, Param, savedInputDType, type ParamList, type ParamSpec, type WeightSource } from './module.js';

export function onesInit(n: number): (rng: Rng) => Float32Array {
  return () => new Float32Array(n).fill(1);
}

/** PyTorch nn.Linear default init: U(±1/√fan_in) */
export function linearInit(out: number, inp: number): (rng: Rng) => Float32Array {
  return (rng) => uniformArray(rng, out * inp, 1 / Math.sqrt(inp));
}

export class RMSNorm {
  readonly weight: Param;
  constructor(private be: Backend, readonly dim: number, readonly eps: number, weights: WeightSource, key = 'weight') {
    this.weight = new Param(weights(key, [dim]), false);
  }
  static specs(dim: number, key = 'weight'): ParamSpec[] {
    return [{ key, shape: [dim], decay: false, init: onesInit(dim) }];
  }
  params(key = 'weight'): ParamList {
    return [[key, this.weight]];
  }
  /** y in outDType (default f32: savedInputDType of the products y feeds) */
  forward(x: Tensor, outDType?: DType): { y: Tensor; rstd: Tensor } {
    return this.be.rmsNorm(x, this.weight.value, this.eps, outDType);
  }
  /** dx (+ residual: the skip path's gradient, added as dx is stored) */
  backward(dy: Tensor, x: Tensor, rstd: Tensor, residual?: Tensor): Tensor {
    const { dx, dw } = this.be.rmsNormBackward(dy, x, this.weight.value, rstd, residual);
    this.weight.accumulate(this.be, dw);
    return dx;
  }
}

interface MlpSaved { x: Tensor; gate: Tensor; up: Tensor; h: Tensor }

/** down(silu(gate(x)) ⊙ up(x)), no biases (Llama). Keys relative to `mlp.`. */
export class SwiGluMlp {
  readonly gate: Param;
  readonly up: Param;
  readonly down: Param;
  constructor(private be: Backend, readonly hidden: number, readonly inner: number, weights: WeightSource) {
    this.gate = new Param(weights('gate_proj.weight', [inner, hidden]), true);
    this.up = new Param(weights('up_proj.weight', [inner, hidden]), true);
    this.down = new Param(weights('down_proj.weight', [hidden, inner]), true);
  }
  static specs(hidden: number, inner: number, std: number | null): ParamSpec[] {
    const init = (o: number, i: number) => (std === null ? linearInit(o, i) : (rng: Rng) => normalInit(rng, o * i, std));
    return [
      { key: 'gate_proj.weight', shape: [inner, hidden], decay: true, init: init(inner, hidden) },
      { key: 'up_proj.weight', shape: [inner, hidden], decay: true, init: init(inner, hidden) },
      { key: 'down_proj.weight', shape: [hidden, inner], decay: true, init: init(hidden, inner) },
    ];
  }
  params(): ParamList {
    return [['gate_proj.weight', this.gate], ['up_proj.weight', this.up], ['down_proj.weight', this.down]];
  }
  /**
   * The dtype of what feeds gate and up together (their input, their outputs' gradients) by `rule` (matmulInputDType or
   * savedInputDType): bf16 only when it is bf16 for both weights.
   */
  inputDType(rule: (be: Backend, w: Tensor) => DType): DType {
    return rule(this.be, this.gate.value) === 'bf16' && rule(this.be, this.up.value) === 'bf16' ? 'bf16' : 'f32';
  }
  forward(x: Tensor, needBackward: boolean): { y: Tensor; saved: MlpSaved | null } {
    const be = this.be;
    // gate and up as one launch where the backend can (matmulPair), as step does; f32 outputs kept for swigluBackward
    const [gate, up] = be.matmulPair(x, this.gate.value, this.up.value);
    const h = be.swiglu(gate, up, savedInputDType(be, this.down.value));  // kept for down's weight gradient
    const y = linearForward(be, h, this.down.value);
    return { y, saved: needBackward ? { x, gate, up, h } : null };
  }
  /**
   * inference: x [..., D] already in the products' input dtype; silu(gate)·up emitted in down's. With bf16 products
   * (matmulInputDType bf16) gate and up are stored as bf16, as a bf16 model's Linear outputs are (the reference's
   * numerics), which halves their bytes written and read back by swiglu.
   */
  step(x: Tensor): Tensor {
    const be = this.be;
    // gate and up as one launch where the backend can (matmulPair: twice the tiles of one skinny product)
    const [gate, up] = be.matmulPair(x, this.gate.value, this.up.value, { outDType: this.inputDType(matmulInputDType) });
    const h = be.swiglu(gate, up, matmulInputDType(be, this.down.value));
    return linearForward(be, h, this.down.value);
  }
  backward(dy: Tensor, s: MlpSaved): Tensor {
    const be = this.be;
    const dh = linearBackward(be, dy, s.h, this.down);
    // dGate / dUp feed only the gate / up products: emitted in the dtype those read (no rounding pass of their own)
    const { dGate, dUp } = be.swigluBackward(dh, s.gate, s.up, this.inputDType(matmulInputDType));
    const dx = linearBackward(be, dGate, s.x, this.gate);
    return linearBackward(be, dUp, s.x, this.up, dx);
  }
}

export function normalInit(rng: Rng, n: number, std: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * std;
  return a;
}
