// The M1 Mamba-1 selective scan with grouped B/C (forward, backward, one-token step).
import type { SelectiveScanArgs, SelectiveScanGrads, SelectiveScanStepArgs } from '../backend.js';
import type { Tensor } from '../tensor.js';
import type { CpuBackend } from './index.js';

export function selectiveScan(be: CpuBackend, args: SelectiveScanArgs): Tensor {
  throw new Error('selectiveScan: not implemented yet');
}

export function selectiveScanBackward(be: CpuBackend, dy: Tensor, args: SelectiveScanArgs): SelectiveScanGrads {
  throw new Error('selectiveScanBackward: not implemented yet');
}

export function selectiveScanStep(be: CpuBackend, args: SelectiveScanStepArgs): Tensor {
  throw new Error('selectiveScanStep: not implemented yet');
}
