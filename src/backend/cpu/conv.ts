// Causal depthwise conv1d over time (forward, backward, one-token step).
import type { Tensor } from '../tensor.js';
import type { CpuBackend } from './index.js';

export function causalConv1d(
  be: CpuBackend, x: Tensor, w: Tensor, bias: Tensor | null,
  opts: { silu: boolean; segments?: Int32Array; stateOut?: { convState: Tensor; slots: Int32Array } },
): Tensor {
  throw new Error('causalConv1d: not implemented yet');
}

export function causalConv1dBackward(
  be: CpuBackend, dy: Tensor, x: Tensor, w: Tensor, bias: Tensor | null,
  opts: { silu: boolean; segments?: Int32Array },
): { dx: Tensor; dw: Tensor; dbias: Tensor | null } {
  throw new Error('causalConv1dBackward: not implemented yet');
}

export function causalConv1dStep(
  be: CpuBackend, x: Tensor, convState: Tensor, slots: Int32Array, w: Tensor, bias: Tensor | null, silu: boolean,
): Tensor {
  throw new Error('causalConv1dStep: not implemented yet');
}
