// npm run bench:generate — decode speed of the hybrid against the transformer of the same size, as in
// the M1 paper (Fig. 1: batch sweep at prompt 256 + fixed generation length; Fig. 2: generation-length
// sweep at a fixed batch). Every request generates exactly N tokens (eos ignored), greedy unless --temperature /
// --top-p (then sampled by the engine's default sampler: on the device with the cuda backend).
//
// Latency = total generation time of the batch (prefill + decode), as the paper reports it; decode tokens/s
// counts the tokens after the first (which the prefill produces) over the decode time.
// M1 speedup = transformer latency / hybrid latency.
//
// The default sweeps are small enough for the CPU backend to finish in a few minutes; --full runs the
// paper's grid (meant for --backend cuda). Writes bench/results/generate-<backend>-<date>.json.
import { Command, InvalidArgumentError } from 'commander';
import { createBackend, BACKEND_NAMES } from '../src/backend/registry.js';
import type { Backend } from '../src/backend/backend.js';
import { Engine } from '../src/infer/engine.js';
import { initModel, validateConfigs } from '../src/model/checkpoint.js';
import type { CausalLM } from '../src/model/model.js';
import { findPreset } from '../src/model/presets.js';
import { Rng } from '../src/util/rng.js';
import { randomModel, table, writeResult, zeroModel } from './common.js';
import { OpProfiler } from './op-profile.js';
import { choiceFlag, intFlag } from '../src/cli/options.js';

const list = (v: string): number[] => v.split(',').map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a comma-separated list of positive integers, got "${v}"`);
  return n;
});

const program = new Command()
  .description('decode tokens/s and latency of a hybrid (m1) vs a transformer (llama) preset of the same size')
  .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
  .option('--preset <name>', 'preset name of both architectures (llama/<name> vs m1/<name>)', 'small')
  .option('--presets <llama,m1>', 'two preset names instead of --preset, transformer first (e.g. llama-3.2-3b,m1-3b)')
  .option('--zero-weights', 'zero bf16 weights made on the device (bench/common zeroModel): every activation, K/V and state is 0, for comparing with bench:decode\'s --zero-weights')
  .option('--random-weights', 'bf16 weights drawn on the device (bench/common randomModel) instead of initModel\'s host init: for the 3B presets')
  .option('--temperature <t>', 'sample at this temperature (0 = greedy)', Number, 0)
  .option('--top-p <p>', 'nucleus of the sampling', Number, 1)
  .option('--graphs', 'replay decode steps as CUDA graphs (the engine\'s graphs option)')
  .option('--prompt-len <n>', 'prompt tokens per request', (v) => list(v)[0]!, 256)
  .option('--batches <list>', 'batch sweep (default CPU: 1,4,16; --full: 8..512)', list)
  .option('--batch-gen <n>', 'tokens generated per request in the batch sweep (default CPU: 32; --full: 4096)', (v) => list(v)[0]!)
  .option('--lengths <list>', 'generation-length sweep (default CPU: 16,64,128; --full: 4096,8192,16384)', list)
  .option('--length-batch <n>', 'batch of the length sweep (default CPU: 4; --full: 128)', (v) => list(v)[0]!)
  .option('--block-size <n>', 'KV block size', (v) => list(v)[0]!, 16)
  .option('--repeats <n>', 'timed runs per point (the median is reported)', (v) => list(v)[0]!, 1)
  .option('--warmup <tokens>', 'before each point, an untimed run of this many tokens at its batch, so that one-time costs (the matmul timing of the batch\'s shapes on cuda) stay out of the timed runs; 0: none', intFlag('--warmup', { min: 0 }), 0)
  .option('--ssm-dtype <dtype>', 'storage of the Mamba-1 decode states (SSM and conv), bf16 or f32 (default: the engine\'s — bf16 for bf16 weights)', choiceFlag('--ssm-dtype', ['bf16', 'f32'] as const))
  .option('--time-decode', 'sync after each decode step\'s model step and print how the step splits: host preparation, model step on the device, sampling + accepting (EngineOptions.timeDecode)')
  .option('--profile-ops', 'time every backend op of the decode steps (a sync around each: bench/op-profile.ts) and print the largest per step; eager steps only (not with --graphs)')
  .option('--full', 'the paper\'s grid (GPU)')
  .parse(process.argv);

interface Flags {
  backend: string; preset: string; promptLen: number; batches?: number[]; batchGen?: number; lengths?: number[];
  lengthBatch?: number; blockSize: number; repeats: number; warmup: number; full?: boolean;
  presets?: string; randomWeights?: boolean; zeroWeights?: boolean; temperature: number; topP: number; graphs?: boolean; ssmDtype?: 'bf16' | 'f32'; timeDecode?: boolean; profileOps?: boolean;
}
const o = program.opts<Flags>();
const full = !!o.full;
const batches = o.batches ?? (full ? [8, 16, 32, 64, 128, 256, 512] : [1, 4, 16]);
const batchGen = o.batchGen ?? (full ? 4096 : 32);
const lengths = o.lengths ?? (full ? [4096, 8192, 16384] : [16, 64, 128]);
const lengthBatch = o.lengthBatch ?? (full ? 128 : 4);

interface Point {
  model: string; batch: number; promptLen: number; genLen: number;
  latencyS: number; prefillS: number; decodeS: number; decodeTokensPerS: number; totalTokensPerS: number;
  peakKvBlocks: number;
}

function buildModel(be: Backend, arch: 'llama' | 'm1', preset: string, context: number): CausalLM {
  const p = findPreset(arch, preset);
  // the context must hold prompt + generation; RoPE needs nothing else to go longer
  const maxPos = Math.max(Number(p.config['max_position_embeddings']), context);
  const cfg = validateConfigs({ ...p.config, max_position_embeddings: maxPos }, p.mambaConfig);
  return o.zeroWeights ? zeroModel(be, cfg) : o.randomWeights ? randomModel(be, cfg, 0) : initModel(be, cfg, 0);
}

/** one batch: `batch` random prompts, `genLen` tokens each (greedy or sampled); times the prefill step and the rest */
function measure(model: CausalLM, name: string, batch: number, genLen: number): Point {
  const rng = new Rng(batch * 7919 + genLen);
  const V = model.vocabSize;
  const times: Point[] = [];
  for (let r = 0; r < o.repeats; r++) {
    const engine = new Engine(model, { maxBatch: batch, blockSize: o.blockSize, maxContext: o.promptLen + genLen, graphs: !!o.graphs, ssmDType: o.ssmDtype, timeDecode: !!o.timeDecode });
    try {
      for (let b = 0; b < batch; b++) {
        const promptIds = Array.from({ length: o.promptLen }, () => rng.int(V));
        engine.addRequest({ promptIds, sampling: { temperature: o.temperature, topP: o.topP }, maxTokens: genLen, ignoreEos: true, seed: b });
      }
      let peak = 0;
      const t0 = performance.now();
      engine.step(); // admits and prefills every prompt (one forward: equal lengths) → first tokens
      const t1 = performance.now();
      if (profiler) {
        profiler.reset();
        profiler.enabled = true;
      }
      let steps = 0;
      while (engine.hasWork()) {
        engine.step();
        steps++;
        peak = Math.max(peak, engine.memory().kvBlocksUsed);
      }
      const t2 = performance.now();
      if (profiler) {
        profiler.enabled = false;
        process.stderr.write(`  ${name} batch ${batch} × ${genLen}: ops per decode step (${steps} steps; each op synced)\n`);
        for (const e of profiler.top().slice(0, 25)) process.stderr.write(`    ${((1000 * e.seconds) / steps).toFixed(3).padStart(8)} ms  ${(e.calls / steps).toFixed(1).padStart(6)}×  ${e.op}\n`);
      }
      const tm = engine.decodeTiming();
      if (tm && tm.steps > 0) {
        const per = (x: number) => (x / tm.steps).toFixed(2);
        process.stderr.write(`  ${name} batch ${batch} × ${genLen}: ${tm.steps} decode steps, per step ${per(tm.prepareMs)} ms preparing, ${per(tm.deviceMs)} ms model step (device), ${per(tm.sampleMs)} ms sampling + accepting\n`);
      }
      const mem = (model.be as { memoryStats?: () => { liveBytes: number } }).memoryStats?.();
      if (mem) process.stderr.write(`  ${name} batch ${batch} × ${genLen}: ${(mem.liveBytes / 2 ** 30).toFixed(1)} GiB live on the device after the run\n`);
      const prefillS = (t1 - t0) / 1000, decodeS = (t2 - t1) / 1000, latencyS = (t2 - t0) / 1000;
      times.push({
        model: name, batch, promptLen: o.promptLen, genLen, latencyS, prefillS, decodeS,
        decodeTokensPerS: decodeS > 0 ? (batch * (genLen - 1)) / decodeS : 0, totalTokensPerS: (batch * genLen) / latencyS, peakKvBlocks: peak,
      });
    } finally {
      engine.dispose(); // its pools and graphs: the next point starts from the weights alone
    }
  }
  times.sort((a, b) => a.latencyS - b.latencyS);
  return times[Math.floor(times.length / 2)]!;
}

let lastBackend: Backend | null = null;

let profiler: OpProfiler | null = null;

async function main(): Promise<void> {
  if (o.profileOps && o.graphs) throw new Error('--profile-ops times ops one by one: it cannot be combined with --graphs');
  if (o.zeroWeights && o.randomWeights) throw new Error('--zero-weights and --random-weights exclude each other');
  const inner = await createBackend(o.backend);
  if (o.profileOps) {
    profiler = new OpProfiler(inner);
    profiler.enabled = false;
  }
  const be = profiler ? profiler.be : inner;
  lastBackend = be;
  const context = o.promptLen + Math.max(batchGen, ...lengths);
  const names = o.presets ? o.presets.split(',').map((x) => x.trim()) : [o.preset, o.preset];
  if (names.length !== 2) throw new Error(`--presets must be two names, transformer first, got "${o.presets}"`);
  const models = (['llama', 'm1'] as const).map((arch, i) => ({ name: `${arch}/${names[i]}`, model: buildModel(be, arch, names[i]!, context) }));
  for (const m of models) {
    console.log(`${m.name}: ${(m.model.parameterCount() / 1e6).toFixed(2)} M parameters, layers ${m.model.kinds.map((k) => (k === 'attention' ? 'A' : 'M')).join('')}`);
    measure(m.model, m.name, 1, 4); // warm-up (JIT, allocation)
  }
  const stats = (be as { memoryStats?: () => { liveBytes: number; cachedBytes: number } }).memoryStats?.();
  if (stats) console.log(`device memory after the warm-up: ${(stats.liveBytes / 2 ** 30).toFixed(1)} GiB live, ${(stats.cachedBytes / 2 ** 30).toFixed(1)} GiB cached`);
  const how = o.temperature > 0 || o.topP < 1 ? `sampled (temperature ${o.temperature}, top-p ${o.topP})` : 'greedy';
  console.log(`backend ${be.name}${o.graphs ? ' (decode graphs)' : ''}, prompt ${o.promptLen} tokens, ${how}, eos ignored\n`);

  const sweep = (kind: string, points: [number, number][]) => {
    const rows: (string | number)[][] = [];
    const json: Record<string, unknown>[] = [];
    for (const [batch, genLen] of points) {
      if (o.warmup > 0) for (const m of models) measure(m.model, m.name, batch, o.warmup);
      const [tr, hy] = models.map((m) => measure(m.model, m.name, batch, genLen)) as [Point, Point];
      const speedup = tr.latencyS / hy.latencyS;
      rows.push([batch, genLen, tr.latencyS, hy.latencyS, tr.decodeTokensPerS, hy.decodeTokensPerS, `×${speedup.toFixed(2)}`]);
      json.push({ batch, genLen, transformer: tr, hybrid: hy, m1Speedup: speedup });
      process.stderr.write(`  ${kind}: batch ${batch}, ${genLen} tokens done\n`);
    }
    return { rows, json };
  };
  const headers = (first: string) => [first, 'gen', 'llama latency s', 'm1 latency s', 'llama decode tok/s', 'm1 decode tok/s', 'M1 speedup'];

  const bs = sweep('batch sweep', batches.map((b) => [b, batchGen]));
  console.log(`batch sweep (prompt ${o.promptLen}, generate ${batchGen}); M1 speedup = transformer latency / hybrid latency`);
  console.log(table(headers('batch'), bs.rows));
  const ls = sweep('length sweep', lengths.map((l) => [lengthBatch, l]));
  console.log(`\nlength sweep (batch ${lengthBatch}, prompt ${o.promptLen})`);
  console.log(table(headers('batch'), ls.rows));

  const path = writeResult(`generate-${be.name}`, {
    backend: be.name, presets: names, promptLen: o.promptLen, blockSize: o.blockSize, repeats: o.repeats, warmup: o.warmup, full,
    temperature: o.temperature, topP: o.topP, graphs: !!o.graphs, randomWeights: !!o.randomWeights, zeroWeights: !!o.zeroWeights,
    models: models.map((m) => ({ name: m.name, params: m.model.parameterCount(), layers: m.model.kinds })),
    batchSweep: bs.json, lengthSweep: ls.json,
  });
  console.log(`\nwrote ${path}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:generate: ${(e as Error).message}\n`);
  // where device memory stood when it failed (cuda): live tensors vs the allocator's cache
  const be = lastBackend as { memoryStats?: () => Record<string, number> } | null;
  if (be?.memoryStats) process.stderr.write(`device memory: ${JSON.stringify(be.memoryStats())}\n`);
  process.exit(1);
});
