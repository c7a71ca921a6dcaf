// What one kernel costs in a CUDA graph beyond its own work: a graph of --kernels dependent in-place adds on a
// [rows, cols] f32 tensor (one launch each, each reading what the one before wrote), replayed --replays times, for a
// few tensor sizes — from a single row (almost no work: the launch-to-launch time alone) to a decode step's activation
// (64 × 3072). The decode step is ~315 kernels; this says how much of its time is kernel boundaries.
//   node dist/bench/graph-overhead.js [--kernels 300] [--replays 50] [--shapes 1x32,64x3072,64x8192]
// Prints a table and writes JSON under bench/results/.
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';
import { machine, sync, table, writeResult } from './common.js';

const program = new Command()
  .option('--kernels <n>', 'dependent kernels a graph', Number, 300)
  .option('--replays <n>', 'timed replays', Number, 50)
  .option('--shapes <list>', 'rows x cols of the tensor', '1x32,64x3072,64x8192')
  .option('--name <s>', 'results file name', 'graph-overhead')
  .parse(process.argv);
const o = program.opts<{ kernels: number; replays: number; shapes: string; name: string }>();
for (const [k, v] of [['kernels', o.kernels], ['replays', o.replays]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k}: "${v}" is not a positive integer`);
}

async function main() {
  const be = (await createBackend('cuda')) as CudaBackend;
  const rows: (string | number)[][] = [];
  const points: Record<string, unknown>[] = [];
  for (const s of o.shapes.split(',')) {
    const m = /^(\d+)x(\d+)$/.exec(s);
    if (!m) throw new Error(`--shapes: "${s}" is not ROWSxCOLS`);
    const shape = [Number(m[1]), Number(m[2])];
    const x = be.zeros(shape), d = be.zeros(shape);
    be.fill(d, 1e-3);
    const graph = be.captureStepGraph([], () => {
      for (let i = 0; i < o.kernels; i++) be.addInPlace(x, d);
      return be.copy(d);
    });
    try {
      graph.replay([]);
      sync(be);
      const t0 = performance.now();
      for (let r = 0; r < o.replays; r++) graph.replay([]);
      sync(be);
      const us = ((performance.now() - t0) * 1000) / (o.replays * o.kernels);
      const bytes = shape[0]! * shape[1]! * 4 * 3;  // x read and written, d read
      rows.push([s, o.kernels, us.toFixed(2), (bytes / (us * 1e3)).toFixed(0)]);
      points.push({ shape, kernels: o.kernels, usPerKernel: us, bytesPerKernel: bytes });
    } finally {
      graph.dispose();
      x.dispose();
      d.dispose();
    }
  }
  console.log(`\ngraph of ${o.kernels} dependent in-place adds, ${o.replays} replays (cuda)`);
  console.log(table(['rows x cols', 'kernels', 'µs a kernel', 'GB/s'], rows));
  console.log(`\nwrote ${writeResult(`${o.name}-cuda`, { machine: machine(), options: o, points })}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
