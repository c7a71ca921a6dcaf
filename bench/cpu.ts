// npm run bench:cpu — forward tokens/s of the tiny and small presets of both architectures on the
// CPU backend, and the blocked matmul's GFLOP/s. Prints tables, writes bench/results/cpu-<date>.json.
import { Command } from 'commander';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { cpuThreads } from '../src/backend/cpu/parallel.js';
import { wasmMatmul } from '../src/backend/cpu/wasm/matmul-wasm.js';
import { initModel, validateConfigs } from '../src/model/checkpoint.js';
import { plainSeqInfo } from '../src/model/module.js';
import { findPreset } from '../src/model/presets.js';
import { table, timeIt, writeResult } from './common.js';

const program = new Command()
  .option('--quick', 'fewer and smaller points (for a smoke run)')
  .parse(process.argv);
const quick = !!program.opts()['quick'];

const be = new CpuBackend();

const matmulRows: (string | number)[][] = [];
const matmulJson: Record<string, unknown>[] = [];
const sizes: [number, number, number, string][] = quick
  ? [[64, 256, 256, 'x·Wᵀ']]
  : [[1, 3072, 3072, 'x·Wᵀ (decode row)'], [8, 3072, 3072, 'x·Wᵀ'], [64, 3072, 3072, 'x·Wᵀ'], [128, 3072, 3072, 'x·Wᵀ'], [128, 1024, 1024, 'x·Wᵀ'], [256, 2048, 2048, 'x·Wᵀ'], [512, 768, 256, 'x·Wᵀ'], [256, 1024, 1024, 'dyᵀ·x (weight grad)'], [256, 1024, 1024, 'dy·W (input grad)']];
for (const [M, N, K, what] of sizes) {
  const a = be.fromArray(Float32Array.from({ length: M * K }, (_, i) => Math.sin(i)), [M, K]);
  const w = be.fromArray(Float32Array.from({ length: N * K }, (_, i) => Math.cos(i)), [N, K]);
  const run = what.startsWith('dyᵀ')
    ? () => be.matmul(be.fromArray(new Float32Array(K * M), [K, M]), be.fromArray(new Float32Array(K * N), [K, N]), { transA: true })
    : what.startsWith('dy·W') ? () => be.matmul(a, be.fromArray(new Float32Array(K * N), [K, N])) : () => be.matmul(a, w, { transB: true });
  const secs = timeIt(run, { warmup: 1, repeats: 3, minSeconds: quick ? 0.1 : 0.5 });
  const gflops = (2 * M * N * K) / secs / 1e9;
  matmulRows.push([what, M, N, K, secs * 1000, gflops]);
  matmulJson.push({ op: what, M, N, K, ms: secs * 1000, gflops });
}
console.log(`matmul (f32; WebAssembly SIMD 4×8 tiles${wasmMatmul() ? '' : ' unavailable'}, JavaScript 4×4 tiles for x·Wᵀ below 128 rows through weights of 2^18+ elements; ${cpuThreads()} thread(s); M1_THREADS=1 for one)`);
console.log(table(['op', 'M', 'N', 'K', 'ms', 'GFLOP/s'], matmulRows));

const fwdRows: (string | number)[][] = [];
const fwdJson: Record<string, unknown>[] = [];
const models: [string, string, number, number][] = quick
  ? [['llama', 'tiny', 1, 64], ['m1', 'tiny', 1, 64]]
  : [['llama', 'tiny', 4, 128], ['m1', 'tiny', 4, 128], ['m1', 'mamba2-tiny', 4, 128], ['llama', 'small', 1, 256], ['m1', 'small', 1, 256]];
for (const [arch, name, B, T] of models) {
  const p = findPreset(arch, name);
  const cfg = validateConfigs(p.config, p.mambaConfig);
  const model = initModel(be, cfg, 0);
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % cfg.llama.vocabSize);
  const seq = plainSeqInfo(B, T);
  const secs = timeIt(() => model.logits(model.forward(ids, seq).hidden), { warmup: 1, repeats: quick ? 1 : 3 });
  const params = model.parameterCount();
  fwdRows.push([`${arch}/${name}`, (params / 1e6).toFixed(2), B, T, secs * 1000, (B * T) / secs]);
  fwdJson.push({ model: `${arch}/${name}`, params, B, T, ms: secs * 1000, tokensPerSecond: (B * T) / secs });
}
console.log('\nforward (prefill) incl. LM head');
console.log(table(['model', 'M params', 'B', 'T', 'ms', 'tokens/s'], fwdRows));
const path = writeResult(quick ? 'cpu-quick' : 'cpu', { backend: 'cpu', threads: cpuThreads(), matmul: matmulJson, forward: fwdJson });
console.log(`\nwrote ${path}`);
