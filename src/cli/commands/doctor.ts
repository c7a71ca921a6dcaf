// m1 doctor: which backends work here and, where one does not, why.
import type { Command } from 'commander';
import { CpuBackend } from '../../backend/cpu/index.js';
import { ADDON_PATH } from '../../backend/cuda/addon.js';

function cudaVersion(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

/** a line per backend: "ok" with details, or the reason it cannot run */
export async function doctorReport(): Promise<{ lines: string[]; cudaOk: boolean }> {
  const lines: string[] = [];
  // cpu: a tiny matmul proves the reference backend runs
  const cpu = new CpuBackend();
  const p = cpu.matmul(cpu.fromArray([1, 2, 3, 4], [2, 2]), cpu.fromArray([1, 0, 0, 1], [2, 2]));
  lines.push(`cpu   ok (pure TypeScript, f32; self-check ${cpu.read(p).join(',') === '1,2,3,4' ? 'passed' : 'FAILED'})`);

  const { cudaAvailability, CudaBackend } = await import('../../backend/cuda/index.js');
  const a = cudaAvailability();
  if (!a.available) {
    lines.push(`cuda  unavailable: ${a.reason}`);
    return { lines, cudaOk: false };
  }
  const d = a.device;
  lines.push(`cuda  ok: ${d.name} (compute capability ${d.computeCapability}, ${d.multiprocessors} SMs), ` +
    `${(d.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB (${(d.freeMemoryBytes / 2 ** 30).toFixed(1)} GiB free), ` +
    `driver CUDA ${cudaVersion(d.driverVersion)}, runtime CUDA ${cudaVersion(d.runtimeVersion)}` +
    (d.deviceCount > 1 ? `, ${d.deviceCount} GPUs (using GPU 0)` : ''));
  lines.push(`      addon ${ADDON_PATH}`);
  try {
    const be = new CudaBackend();
    const x = be.matmul(be.fromArray([1, 2, 3, 4], [2, 2]), be.fromArray([1, 0, 0, 1], [2, 2]));
    const ok = be.read(x).join(',') === '1,2,3,4';
    lines.push(`      self-check (cuBLASLt matmul) ${ok ? 'passed' : 'FAILED'}`);
    return { lines, cudaOk: ok };
  } catch (e) {
    lines.push(`      self-check failed: ${(e as Error).message}`);
    return { lines, cudaOk: false };
  }
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('report which compute backends work on this machine (and why not)')
    .action(async () => {
      const r = await doctorReport();
      for (const l of r.lines) console.log(l);
    });
}
