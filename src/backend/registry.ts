import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/index.js';
import { UserError } from '../util/errors.js';

export const BACKEND_NAMES = ['cpu', 'cuda'] as const;

/** the backend named by a --backend flag; the CUDA one is an optional native addon */
export async function createBackend(name: string): Promise<Backend> {
  if (name === 'cpu') return new CpuBackend();
  if (name === 'cuda') {
    throw new UserError('--backend cuda: the CUDA backend is not built in this version (see `m1 doctor` once it lands); use --backend cpu');
  }
  throw new UserError(`--backend must be one of ${BACKEND_NAMES.join(', ')}; got "${name}"`);
}
