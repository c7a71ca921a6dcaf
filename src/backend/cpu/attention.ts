// RoPE, causal GQA attention (forward/backward), paged KV cache write and decode attention.
import type { Tensor } from '../tensor.js';
import type { CpuBackend } from './index.js';

export function rope(be: CpuBackend, x: Tensor, positions: Int32Array, invFreq: Float32Array, inverse: boolean): Tensor {
  throw new Error('rope: not implemented yet');
}

export function attention(be: CpuBackend, q: Tensor, k: Tensor, v: Tensor, opts: { scale: number; segments?: Int32Array }): { out: Tensor; lse: Tensor } {
  throw new Error('attention: not implemented yet');
}

export function attentionBackward(
  be: CpuBackend, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
  opts: { scale: number; segments?: Int32Array },
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  throw new Error('attentionBackward: not implemented yet');
}

export function kvCacheWrite(be: CpuBackend, kCache: Tensor, vCache: Tensor, k: Tensor, v: Tensor, slotMapping: Int32Array): void {
  throw new Error('kvCacheWrite: not implemented yet');
}

export function pagedAttentionDecode(
  be: CpuBackend, q: Tensor, kCache: Tensor, vCache: Tensor,
  blockTables: Int32Array, maxBlocks: number, seqLens: Int32Array, scale: number,
): Tensor {
  throw new Error('pagedAttentionDecode: not implemented yet');
}
