import { MATMUL_PRECISIONS, type Backend, type MatmulPrecision } from './backend.js';
import { CpuBackend } from './cpu/index.js';
import { UserError } from '../util/errors.js';

export const BACKEND_NAMES = ['cpu', 'cuda'] as const;

/**
 * The backend named by a --backend flag; the CUDA one is an optional native addon. `matmulPrecision`
 * (a --matmul-precision flag) sets how its f32 × f32 products run where the backend has a choice.
 */
export async function createBackend(name: string, opts: { matmulPrecision?: string } = {}): Promise<Backend> {
  const p = opts.matmulPrecision;
  if (p !== undefined && !(MATMUL_PRECISIONS as readonly string[]).includes(p)) {
    throw new UserError(`--matmul-precision must be one of ${MATMUL_PRECISIONS.join(', ')}; got "${p}"`);
  }
  const be = await makeBackend(name);
  if (p !== undefined) be.setFloat32MatmulPrecision?.(p as MatmulPrecision);
  return be;
}

async function makeBackend(name: string): Promise<Backend> {
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
