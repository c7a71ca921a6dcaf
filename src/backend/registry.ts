import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/index.js';
import { UserError } from '../util/errors.js';

export const BACKEND_NAMES = ['cpu', 'cuda'] as const;

/** the backend named by a --backend flag; the CUDA one is an optional native addon */
export async function createBackend(name: string): Promise<Backend> {
  if (name === 'cpu') return new CpuBackend();
  if (name === 'cuda') {
    // loaded lazily: the addon is optional and the CPU path must not touch it
    const { CudaBackend, cudaAvailability } = await import('./cuda/index.js');
    const a = cudaAvailability();
    if (!a.available) throw new UserError(`--backend cuda: ${a.reason} (run \`m1 doctor\` for details; or use --backend cpu)`);
    return new CudaBackend();
  }
  throw new UserError(`--backend must be one of ${BACKEND_NAMES.join(', ')}; got "${name}"`);
}
