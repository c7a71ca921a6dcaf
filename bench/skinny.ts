// The decode step's weight products alone: Y [M, N] = X [M, K] · Wᵀ with bf16 X and W at M1-3B's shapes and decode row
// counts — cuBLASLt (its timed choice among the heuristic's algorithms and their K splits) against each launch of our
// skinny kernel (native/src/skinny_matmul.cu: tile width × K split), and what the matmul timing picks between them
// ("auto", the default). Each point is a CUDA graph of --calls products that rotate over copies of W larger than L2
// together (every call streams W from memory, as in a model step), replayed --replays times: µs per product without
// the host's launch cost, and W's bytes per second.
//   node dist/bench/skinny.js [--rows 8,64] [--shapes 16384x3072,3072x8192,...] [--calls 40] [--replays 20]
// Prints a table and writes JSON under bench/results/.
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';
import type { Tensor } from '../src/backend/tensor.js';
import { machine, table, writeResult } from './common.js';

const program = new Command()
  .option('--rows <list>', 'activation rows M (1–64)', '8,32,64')
  .option('--shapes <list>', 'N x K of W (M1-3B: gate + up as one, in_proj, down, out_proj / o_proj, lm_head)', '16384x3072,8384x3072,3072x8192,3072x3072,128256x3072')
  .option('--calls <n>', 'products per graph', Number, 40)
  .option('--replays <n>', 'timed replays of each graph', Number, 20)
  .option('--name <s>', 'results file name', 'skinny')
  .parse(process.argv);
const o = program.opts<{ rows: string; shapes: string; calls: number; replays: number; name: string }>();
const list = (s: string, what: string) =>
  s.split(',').map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${what}: "${v}" is not a positive integer`);
    return n;
  });
for (const [k, v] of [['calls', o.calls], ['replays', o.replays]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k}: "${v}" is not a positive integer`);
}

type Mode = Parameters<CudaBackend['setSkinnyMatmul']>[0];

async function main() {
  const be = (await createBackend('cuda')) as CudaBackend;
  if (!be.setSkinnyMatmul('auto')) throw new Error('the skinny kernel needs a Hopper GPU (compute capability 9.x)');
  const rowsList = list(o.rows, 'rows');
  if (rowsList.some((m) => m > 64)) throw new Error('--rows: the skinny kernel takes at most 64 rows');
  const shapes = o.shapes.split(',').map((s) => {
    const m = /^(\d+)x(\d+)$/.exec(s);
    if (!m) throw new Error(`--shapes: "${s}" is not NxK`);
    return [Number(m[1]), Number(m[2])] as const;
  });
  const sms = be.device.multiprocessors;
  const out: Record<string, unknown>[] = [];
  const rowsTable: (string | number)[][] = [];
  try {
    for (const [N, K] of shapes) {
      const wBytes = N * K * 2, copies = Math.max(2, Math.ceil(256e6 / wBytes));
      const ws: Tensor[] = [];
      for (let i = 0; i < copies; i++) ws.push(be.tidy(() => { const f = be.zeros([N, K]); be.fill(f, 0.01 * (i + 1)); return be.cast(f, 'bf16'); }));
      for (const M of rowsList) {
        const x = be.tidy(() => { const f = be.zeros([M, K]); be.fill(f, 0.5); return be.cast(f, 'bf16'); });
        const y = be.zeros([M, N]);
        const time = (mode: Mode): number => {
          be.setSkinnyMatmul(mode);
          for (let i = 0; i < copies; i++) be.matmul(x, ws[i]!, { transB: true, writeInto: y });  // first calls: the timing
          const graph = be.captureStepGraph([], () => {
            for (let i = 0; i < o.calls; i++) be.matmul(x, ws[i % copies]!, { transB: true, writeInto: y });
            return be.copy(x);
          });
          try {
            graph.replay([]);
            be.read(be.rowSlice(graph.output, 0, 1));
            const t0 = performance.now();
            for (let r = 0; r < o.replays; r++) graph.replay([]);
            be.read(be.rowSlice(graph.output, 0, 1));
            return ((performance.now() - t0) * 1000) / (o.replays * o.calls);
          } finally {
            graph.dispose();
          }
        };
        const lt = time('off');
        const ours: Record<string, number> = {};
        let best = { us: Infinity, tile: 0, parts: 0 };
        for (const tile of [128, 256] as const) {
          const tiles = Math.ceil(N / tile);
          for (const parts of [1, 2, 3, 4, 6, 8]) {
            if (parts > Math.ceil(K / 64) || tiles * parts > 4 * sms) continue;
            const us = time({ tile, parts });
            ours[`tile${tile}-split${parts}`] = us;
            if (us < best.us) best = { us, tile, parts };
          }
        }
        const auto = time('auto');
        const gbs = (us: number) => (wBytes / (us * 1e3)).toFixed(0);
        rowsTable.push([`${N}x${K}`, M, lt.toFixed(1), gbs(lt), best.us.toFixed(1), gbs(best.us), `tile ${best.tile}, K in ${best.parts}`,
          (lt / best.us).toFixed(2), auto.toFixed(1)]);
        out.push({ N, K, M, cublasLtUs: lt, ours, best, autoUs: auto });
        console.log(rowsTable.at(-1)!.join('  '));
        x.dispose();
        y.dispose();
      }
      for (const w of ws) w.dispose();
    }
  } finally {
    be.setSkinnyMatmul('auto');
  }
  console.log(`\nskinny products (cuda, f32 out), graphs of ${o.calls} products over copies of W larger than L2, ${o.replays} replays; GB/s of W`);
  console.log(table(['N x K', 'M', 'cuBLASLt µs', 'GB/s', 'ours µs', 'GB/s', 'our best launch', 'speed-up', 'auto µs'], rowsTable));
  const path = writeResult(`${o.name}-cuda`, { machine: machine(), options: o, points: out });
  console.log(`\nwrote ${path}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
