// The Mamba-2 SSD chunked scan (forward, backward, one-token step) and the gated RMSNorm.
import type { SsdScanArgs, SsdScanGrads, SsdScanStepArgs } from '../backend.js';
import type { Tensor } from '../tensor.js';
import type { CpuBackend } from './index.js';

export function ssdScan(be: CpuBackend, args: SsdScanArgs): Tensor {
  throw new Error('ssdScan: not implemented yet');
}

export function ssdScanBackward(be: CpuBackend, dy: Tensor, args: SsdScanArgs): SsdScanGrads {
  throw new Error('ssdScanBackward: not implemented yet');
}

export function ssdScanStep(be: CpuBackend, args: SsdScanStepArgs): Tensor {
  throw new Error('ssdScanStep: not implemented yet');
}

export function gatedRmsNorm(be: CpuBackend, y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number): Tensor {
  throw new Error('gatedRmsNorm: not implemented yet');
}

export function gatedRmsNormBackward(
  be: CpuBackend, dout: Tensor, y: Tensor, z: Tensor, w: Tensor, groupSize: number, eps: number,
): { dy: Tensor; dz: Tensor; dw: Tensor } {
  throw new Error('gatedRmsNormBackward: not implemented yet');
}
