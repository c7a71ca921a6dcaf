// The decode step's weight products alone: Y [M, N] = X [M, K] · Wᵀ with bf16 X, W at M1-3B's shapes and decode
// row counts, cuBLASLt (M1_MATMUL_TUNE=cublas: its timed choice among cuBLASLt's algorithms) against each launch
// of our skinny kernel (native/src/skinny_matmul.cu: warps a CTA × K splits). Calls rotate over copies of W that
// together exceed L2 (each call streams W from memory, as in a model step) and are timed back to back.
//   node dist/bench/skinny.js [--rows 8,16,32,64] [--shapes 8192x3072,3072x8192,...] [--calls 200]
// Prints µs per call and W's bytes per second, and writes JSON under bench/results/.
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';
import type { Tensor } from '../src/backend/tensor.js';
import { sync, table, writeResult } from './common.js';

const program = new Command()
  .option('--rows <list>', 'activation rows M', '8,16,32,64')
  .option('--shapes <list>', 'N x K of W (M1-3B: gate/up, in_proj, down, out_proj, lm_head)', '8192x3072,8384x3072,3072x8192,3072x3072,128256x3072')
  .option('--splits <list>', 'K splits offered to our kernel', '1,2,3,4,6,8,12')
  .option('--calls <n>', 'timed calls per point', Number, 200)
  .option('--name <s>', 'results file name', 'skinny')
  .parse(process.argv);
const o = program.opts<{ rows: string; shapes: string; splits: string; calls: number; name: string }>();
const list = (s: string, what: string) =>
  s.split(',').map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${what}: "${v}" is not a positive integer`);
    return n;
  });

async function main() {
  process.env.M1_MATMUL_TUNE = 'cublas';  // g.matmul: cuBLASLt's algorithms only (timed), the baseline
  const be = (await createBackend('cuda')) as CudaBackend;
  const rowsList = list(o.rows, 'rows'), splitsList = list(o.splits, 'splits');
  const shapes = o.shapes.split(',').map((s) => {
    const m = /^(\d+)x(\d+)$/.exec(s);
    if (!m) throw new Error(`--shapes: "${s}" is not NxK`);
    return [Number(m[1]), Number(m[2])] as const;
  });
  const out: Record<string, unknown>[] = [];
  const rowsTable: (string | number)[][] = [];
  for (const [N, K] of shapes) {
    const wBytes = N * K * 2, copies = Math.max(2, Math.ceil(256e6 / wBytes));
    const ws: Tensor[] = [];
    for (let i = 0; i < copies; i++) ws.push(be.tidy(() => { const f = be.zeros([N, K]); be.fill(f, 0.01 * (i + 1)); return be.cast(f, 'bf16'); }));
    for (const M of rowsList) {
      const x = be.tidy(() => { const f = be.zeros([M, K]); be.fill(f, 0.5); return be.cast(f, 'bf16'); }), y = be.zeros([M, N]);
      const time = (call: (w: Tensor) => void): number => {
        for (let i = 0; i < 3; i++) call(ws[i % copies]!);
        sync(be);
        const t0 = performance.now();
        for (let i = 0; i < o.calls; i++) call(ws[i % copies]!);
        sync(be);
        return ((performance.now() - t0) * 1000) / o.calls;
      };
      const lt = time((w) => { be.matmul(x, w, { transB: true, accumulateInto: y }); });
      let best = { us: Infinity, rt: 0, splits: 0, depth: 0 };
      const ours: Record<string, number> = {};
      for (const rt of [4, 8] as const) {
        for (const depth of [4, 8] as const) {
          for (const splits of splitsList) {
            if (splits > 1 && splits * M * N * 4 > 32 << 20) continue;  // the partials must fit the 32 MB workspace
            const us = time((w) => { be.skinnyMatmul(x, w, { rt, splits, depth, accumulateInto: y }); });
            ours[`rt${rt}-d${depth}-s${splits}`] = us;
            if (us < best.us) best = { us, rt, splits, depth };
          }
        }
      }
      const gbs = (us: number) => (wBytes / (us * 1e3)).toFixed(0);
      rowsTable.push([`${N}x${K}`, M, lt.toFixed(1), gbs(lt), best.us.toFixed(1), gbs(best.us), `rt ${best.rt}, K in ${best.splits}, depth ${best.depth}`, (lt / best.us).toFixed(2)]);
      out.push({ N, K, M, cublasLtUs: lt, ours, best });
      console.log(rowsTable.at(-1)!.join('  '));
      x.dispose();
      y.dispose();
    }
    for (const w of ws) w.dispose();
  }
  console.log(`\nskinny products (cuda), ${o.calls} calls back to back over copies of W larger than L2; GB/s of W`);
  console.log(table(['N x K', 'M', 'cuBLASLt µs', 'GB/s', 'ours µs', 'GB/s', 'our launch', 'speed-up'], rowsTable));
  const path = writeResult(`${o.name}-cuda`, { options: o, points: out });
  console.log(`\nwrote ${path}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
