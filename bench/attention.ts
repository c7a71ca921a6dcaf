// Causal GQA attention at a training shape, forward and backward alone: the op behind a third of the
// distillation step's non-matmul time (34 forwards: 6 student + 28 teacher layers; 6 backwards). Default
// shape: one Llama-3.2-3B / M1-3B attention layer at sequence 8192 (B 1, T 8192, 24 query heads, 8 KV heads,
// head dim 128), products in bf16 (--matmul-precision medium, as training runs them).
//   node dist/bench/attention.js --backend cuda [--seq-len 8192 --heads 24 --kv-heads 8 --head-dim 128]
// FLOPs (causal half): forward 2·B·T²·Hq·Dh (QKᵀ and PV), backward 2.5× that (llm.c / FlashAttention's count:
// S recomputed, dV, dP, dQ, dK). Prints a table (ms per call, TFLOP/s) and writes JSON under bench/results/.
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import { floatFlag, intFlag } from '../src/cli/options.js';
import { normalArray, Rng } from '../src/util/rng.js';
import { sync, table, timeIt, writeResult } from './common.js';

const program = new Command()
  .option('--backend <name>', 'cpu | cuda', 'cuda')
  .option('--batch <n>', 'rows', intFlag('--batch', { min: 1 }), 1)
  .option('--seq-len <n>', 'tokens per row', intFlag('--seq-len', { min: 1 }), 8192)
  .option('--heads <n>', 'query heads', intFlag('--heads', { min: 1 }), 24)
  .option('--kv-heads <n>', 'key / value heads', intFlag('--kv-heads', { min: 1 }), 8)
  .option('--head-dim <n>', 'head dim', intFlag('--head-dim', { min: 1 }), 128)
  .option('--matmul-precision <p>', 'highest = f32 kernels | medium = bf16 tensor cores', 'medium')
  .option('--tflops <x>', 'peak for the fraction column (the H200 measured, dense bf16)', floatFlag('--tflops', { min: 0, minExclusive: true }), 790)
  .option('--repeats <n>', 'timed calls (median)', intFlag('--repeats', { min: 1 }), 5)
  .option('--no-backward', 'forward only')
  .option('--name <s>', 'results file name', 'attention')
  .parse(process.argv);
const o = program.opts<{ backend: string; batch: number; seqLen: number; heads: number; kvHeads: number; headDim: number; matmulPrecision: string;
  tflops: number; repeats: number; backward: boolean; name: string }>();

async function main() {
  const { batch: B, seqLen: T, heads: Hq, kvHeads: Hkv, headDim: Dh, repeats, tflops } = o;
  if (Hq % Hkv !== 0) throw new Error(`--kv-heads ${Hkv} must divide --heads ${Hq}`);
  const be = await createBackend(o.backend, { matmulPrecision: o.matmulPrecision });
  const rng = new Rng(11);
  const t = (shape: number[]) => be.fromArray(normalArray(rng, shape.reduce((a, b) => a * b, 1), 1), shape);
  const q = t([B, T, Hq, Dh]), k = t([B, T, Hkv, Dh]), v = t([B, T, Hkv, Dh]), dout = t([B, T, Hq, Dh]);
  const ao = { scale: 1 / Math.sqrt(Dh) };
  const fwd = timeIt(() => { be.tidy(() => be.attention(q, k, v, ao)); sync(be); }, { warmup: 1, repeats });
  const f = be.attention(q, k, v, ao);
  const bwd = o.backward ? timeIt(() => { be.tidy(() => be.attentionBackward(dout, q, k, v, f.out, f.lse, ao)); sync(be); }, { warmup: 1, repeats }) : null;
  const fwdFlops = 2 * B * T * T * Hq * Dh, bwdFlops = 2.5 * fwdFlops;
  const row = (op: string, s: number, flops: number) => [op, (s * 1000).toFixed(3), (flops / 1e12).toFixed(3), (flops / s / 1e12).toFixed(1), `${((100 * flops) / s / (tflops * 1e12)).toFixed(1)}%`];
  const rows = [row('attention', fwd, fwdFlops)];
  if (bwd !== null) rows.push(row('attentionBackward', bwd, bwdFlops));
  console.log(`causal attention (${o.backend}, --matmul-precision ${o.matmulPrecision}), B ${B}, T ${T}, Hq ${Hq}, Hkv ${Hkv}, Dh ${Dh}; median of ${repeats}`);
  console.log(`FLOPs: forward 2·B·T²·Hq·Dh (causal half of QKᵀ and PV), backward 2.5× the forward; peak ${tflops} TFLOP/s`);
  console.log(table(['op', 'ms', 'TFLOP', 'TFLOP/s', 'of peak'], rows));
  const path = writeResult(`${o.name}-${o.backend}`, { options: { B, T, Hq, Hkv, Dh, matmulPrecision: o.matmulPrecision, repeats, tflops },
    env: { M1_ATTN_WGMMA: process.env.M1_ATTN_WGMMA ?? null }, forwardMs: fwd * 1000, forwardFlops: fwdFlops,
    ...(bwd !== null ? { backwardMs: bwd * 1000, backwardFlops: bwdFlops } : {}) });
  console.log(`\nwrote ${path}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
