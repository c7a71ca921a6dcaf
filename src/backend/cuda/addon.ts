// Loading the optional native addon (native/build/Release/m1cuda.node, built by `npm run build:cuda`).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface DeviceInfo {
  name: string;
  deviceCount: number;
  computeCapability: string;
  totalMemoryBytes: number;
  freeMemoryBytes: number;
  multiprocessors: number;
  /** CUDA versions as 1000·major + 10·minor */
  driverVersion: number;
  runtimeVersion: number;
}

export interface AllocatorStats {
  liveBytes: number;
  cachedBytes: number;
  cudaMallocCalls: number;
  /** most bytes live at once since the last resetPeak (allocator buckets, so ≥ the tensors' bytes) */
  peakLiveBytes: number;
  /** most bytes held from the driver (live + cached) since the last resetPeak */
  peakReservedBytes: number;
}

/** The addon's functions (native/src/addon.cpp). Device pointers travel as numbers. */
export interface M1Cuda {
  deviceInfo(): DeviceInfo;
  alloc(bytes: number): number;
  free(ptr: number): void;
  upload(ptr: number, data: ArrayBufferView): void;
  download(ptr: number, into: ArrayBufferView): void;
  copy(dst: number, src: number, bytes: number): void;
  zero(ptr: number, bytes: number): void;
  sync(): void;
  /** run op `name` with its arguments packed as documented in addon.cpp; returns the op's scalar (or 0) */
  call(name: string, args: Float64Array): number;
  stats(): AllocatorStats;
  /** restart the peak counters of stats() from the current holdings */
  resetPeak(): void;
  emptyCache(): void;
  /** a new block holding these bytes, copied synchronously (allowed during a graph capture); free() it */
  constant(data: ArrayBufferView): number;
  /** start recording the stream into a new graph (with its own allocator pool); returns its id */
  graphBegin(): number;
  /** stop recording and instantiate (abort = true discards it); returns the id */
  graphEnd(abort?: boolean): number;
  graphLaunch(id: number): void;
  /** waits for queued replays, then frees the graph and hands its pool back */
  graphDestroy(id: number): void;
}

/** the project root: this file is src/backend/cuda/addon.ts, or dist/src/backend/cuda/addon.js once built */
function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = resolve(dir, '..');
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
}

export const ADDON_PATH = join(projectRoot(), 'native', 'build', 'Release', 'm1cuda.node');
export const BUILD_HINT = 'build it with `npm run build:cuda` on a machine with the CUDA toolkit (nvcc, cuBLAS)';

export type AddonLoad = { ok: true; addon: M1Cuda; device: DeviceInfo } | { ok: false; reason: string };

let cached: AddonLoad | undefined;

/**
 * Load the addon and open the GPU once. Never throws: the reason says what is missing (the addon
 * file, the driver, a GPU), so `m1 doctor` and the tests can print it.
 */
export function loadAddon(): AddonLoad {
  if (cached) return cached;
  if (!existsSync(ADDON_PATH)) {
    cached = { ok: false, reason: `the CUDA addon is not built (${ADDON_PATH} is missing): ${BUILD_HINT}` };
    return cached;
  }
  let addon: M1Cuda;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as M1Cuda;
  } catch (e) {
    cached = { ok: false, reason: `the CUDA addon failed to load (${(e as Error).message.split('\n')[0]}); is the CUDA runtime installed?` };
    return cached;
  }
  try {
    cached = { ok: true, addon, device: addon.deviceInfo() };
  } catch (e) {
    const msg = (e as Error).message;
    const why = /InsufficientDriver|NoDevice|cudaErrorNoDevice|driver/i.test(msg) ? 'no usable NVIDIA driver or GPU' : 'the GPU could not be opened';
    cached = { ok: false, reason: `${why}: ${msg}` };
  }
  return cached;
}
