// AdamW with f32 master weights and moments, global-norm gradient clipping, and exact state save/load.
//
// Mixed-precision policy: a parameter stored in bf16/f16 gets an f32 master copy; the update runs on
// the master and the parameter receives the rounded value (Backend.adamwStep). f32 parameters are
// updated in place. Moments are always f32. Gradients are f32 (Param.ensureGrad allocates f32).
import type { Backend } from '../backend/backend.js';
import type { Tensor } from '../backend/tensor.js';
import type { Param, ParamList } from '../model/module.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  /** decoupled weight decay, applied only to params with `decay: true` */
  weightDecay: number;
}

/**
 * M1's distillation/SFT optimiser: AdamW, β = (0.9, 0.95) as in the paper (the released yaml falls back
 * to HF's 0.999, m1-spec §2), eps 1e-8, weight decay 0.1.
 */
export const M1_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

interface Slot {
  key: string;
  param: Param;
  m: Tensor;
  v: Tensor;
  master: Tensor | null;
}

/** host copy of the optimizer: what a checkpoint stores */
export interface AdamWState {
  /** number of steps taken */
  step: number;
  /** `m.<key>`, `v.<key>`, `master.<key>` → f32 values */
  tensors: Map<string, Float32Array>;
}

export class AdamW {
  private readonly slots: Slot[];
  private steps = 0;
  /** f32 [1]: non-finite weights stored by step() since the last weightsFinite() (AdamWStepArgs.nonFinite) */
  private readonly nonFinite: Tensor;
  private readonly updated = new Set<Param>();

  readonly opts: AdamWOptions;

  constructor(private readonly be: Backend, params: ParamList, opts: AdamWOptions) {
    this.opts = { beta1: opts.beta1, beta2: opts.beta2, eps: opts.eps, weightDecay: opts.weightDecay };
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isFinite(v)) throw new Error(`AdamW: option ${k} must be a finite number, got ${v}`);
    }
    if (!(opts.beta1 >= 0 && opts.beta1 < 1) || !(opts.beta2 >= 0 && opts.beta2 < 1)) {
      throw new Error(`AdamW: betas must lie in [0, 1), got (${opts.beta1}, ${opts.beta2})`);
    }
    this.nonFinite = be.zeros([1]);
    const seen = new Set<Param>();
    this.slots = [];
    for (const [key, param] of params) {
      if (seen.has(param)) continue; // a tied weight is one parameter
      seen.add(param);
      const shape = param.value.shape;
      this.slots.push({
        key, param,
        m: be.zeros(shape), v: be.zeros(shape),
        master: param.value.dtype === 'f32' ? null : be.cast(param.value, 'f32'),
      });
    }
  }

  get stepCount(): number {
    return this.steps;
  }

  /** sqrt(Σ‖g‖²) over every parameter that has a gradient */
  gradNorm(): number {
    let s = 0;
    for (const v of this.be.sumSquaresEach(this.slots.flatMap(({ param }) => (param.grad ? [param.grad] : [])))) s += v;
    return Math.sqrt(s);
  }

  /**
   * Scale all gradients so that their global norm is at most `maxNorm` (PyTorch clip_grad_norm_:
   * coefficient maxNorm / (norm + 1e-6), never above 1). Returns the norm before clipping; a
   * non-finite norm is returned unchanged and nothing is scaled (the caller stops the run).
   */
  clipGradNorm(maxNorm: number): number {
    const norm = this.gradNorm();
    if (!Number.isFinite(norm) || !(maxNorm > 0)) return norm;
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1) for (const { param } of this.slots) if (param.grad) this.be.scaleInPlace(param.grad, coef);
    return norm;
  }

  /** one update of every parameter with a gradient, at learning rate `lr` */
  step(lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new Error(`AdamW.step: learning rate must be a finite number ≥ 0, got ${lr}`);
    this.steps++;
    for (const s of this.slots) {
      if (!s.param.grad) continue;
      this.be.adamwStep({
        param: s.param.value, grad: s.param.grad, m: s.m, v: s.v, master: s.master,
        lr, beta1: this.opts.beta1, beta2: this.opts.beta2, eps: this.opts.eps,
        weightDecay: s.param.decay ? this.opts.weightDecay : 0,
        step: this.steps, nonFinite: this.nonFinite,
      });
      this.updated.add(s.param);
    }
  }

  /**
   * Whether every weight of `params` is finite (the trainers' divergence check after an update): those step() stored
   * since the last call were counted as they were written; any other (no gradient, not in the optimizer) is read. One
   * wait for the device.
   */
  weightsFinite(params: ParamList): boolean {
    const counted = this.be.read(this.nonFinite)[0] === 0;
    this.be.fill(this.nonFinite, 0);
    const others = [...new Set(params.map(([, p]) => p))].filter((p) => !this.updated.has(p));
    this.updated.clear();
    return counted && (others.length === 0 || this.be.sumSquaresEach(others.map((p) => p.value)).every(Number.isFinite));
  }

  state(): AdamWState {
    const tensors = new Map<string, Float32Array>();
    for (const s of this.slots) {
      tensors.set(`m.${s.key}`, this.be.read(s.m));
      tensors.set(`v.${s.key}`, this.be.read(s.v));
      if (s.master) tensors.set(`master.${s.key}`, this.be.read(s.master));
    }
    return { step: this.steps, tensors };
  }

  /** restore a state() (from a checkpoint); every tensor must be present with the right size */
  load(state: AdamWState): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`AdamW.load: step must be an integer ≥ 0, got ${state.step}`);
    const get = (name: string, size: number): Float32Array => {
      const a = state.tensors.get(name);
      if (!a) throw new Error(`AdamW.load: optimizer state has no tensor "${name}"`);
      if (a.length !== size) throw new Error(`AdamW.load: optimizer tensor "${name}" has ${a.length} values, the parameter has ${size}`);
      return a;
    };
    for (const s of this.slots) {
      this.be.write(s.m, get(`m.${s.key}`, s.m.size));
      this.be.write(s.v, get(`v.${s.key}`, s.v.size));
      if (s.master) this.be.write(s.master, get(`master.${s.key}`, s.master.size));
    }
    this.steps = state.step;
  }

  /** parameter keys with their decay flag (for reports and tests) */
  groups(): { key: string; decay: boolean; size: number }[] {
    return this.slots.map((s) => ({ key: s.key, decay: s.param.decay, size: s.param.value.size }));
  }
}
