// The selective scan at a training shape, forward and backward alone: where the training step's largest
// op stands against the bytes it must move. Default shape: one M1-3B Mamba layer at sequence 8192
// (B 1, T 8192, Di 3072, N 16, 192 groups, z gate, D skip, Δ bias). The layer's causal conv (width 4, bias,
// SiLU) at the same shape, forward and backward, for the same comparison.
//   node dist/bench/scan.js --backend cuda [--batch 1 --seq-len 8192 --d-inner 3072 --d-state 16]
// Prints a table (ms per call, GB/s on the minimum bytes: every input read once, every output written
// once) and writes JSON under bench/results/.
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import { normalArray, Rng } from '../src/util/rng.js';
import { sync, table, timeIt, writeResult } from './common.js';

const program = new Command()
  .option('--backend <name>', 'cpu | cuda', 'cuda')
  .option('--batch <n>', 'rows', Number, 1)
  .option('--seq-len <n>', 'tokens per row', Number, 8192)
  .option('--d-inner <n>', 'channels', Number, 3072)
  .option('--d-state <n>', 'state size N', Number, 16)
  .option('--groups <n>', 'B / C groups', Number, 192)
  .option('--repeats <n>', 'timed calls (median)', Number, 5)
  .option('--name <s>', 'results file name', 'scan')
  .parse(process.argv);
const o = program.opts<{ backend: string; batch: number; seqLen: number; dInner: number; dState: number; groups: number; repeats: number; name: string }>();

async function main() {
  const be = await createBackend(o.backend);
  const { batch: B, seqLen: T, dInner: Di, dState: N, groups: G } = o;
  if (Di % G !== 0) throw new Error(`--groups ${G} must divide --d-inner ${Di}`);
  const rng = new Rng(7);
  const t = (shape: number[], scale: number, shift = 0) =>
    be.fromArray(normalArray(rng, shape.reduce((a, b) => a * b, 1), scale).map((v) => v + shift), shape);
  const args = {
    x: t([B, T, Di], 1), delta: t([B, T, Di], 0.5, -2), A: be.negExp(t([Di, N], 0.5)), Bm: t([B, T, G, N], 1), Cm: t([B, T, G, N], 1),
    D: t([Di], 1), z: t([B, T, Di], 1), deltaBias: t([Di], 0.1),
  };
  const dy = t([B, T, Di], 1);
  const fwd = timeIt(() => { be.tidy(() => be.selectiveScan(args)); sync(be); }, { warmup: 1, repeats: o.repeats });
  const bwd = timeIt(() => { be.tidy(() => be.selectiveScanBackward(dy, args)); sync(be); }, { warmup: 1, repeats: o.repeats });
  // as training runs them (Mamba1Mixer): the forward saves the backend's checkpoints, the backward reads them
  const ckShape = be.selectiveScanCheckpointShape?.(B, T, Di, N, G) ?? null;
  const ck = ckShape ? { ...args, checkpoints: be.zeros(ckShape) } : null;
  const fwdCk = ck ? timeIt(() => { be.tidy(() => be.selectiveScan(ck)); sync(be); }, { warmup: 1, repeats: o.repeats }) : null;
  const bwdCk = ck ? timeIt(() => { be.tidy(() => be.selectiveScanBackward(dy, ck)); sync(be); }, { warmup: 1, repeats: o.repeats }) : null;
  // minimum traffic (f32): forward reads x, Δ, z, B, C and writes y; backward also reads dy and writes dx, dΔ, dz, dB, dC
  const cw = t([Di, 4], 0.5), cb = t([Di], 0.1);
  const convFwd = timeIt(() => { be.tidy(() => be.causalConv1d(args.x, cw, cb, { silu: true })); sync(be); }, { warmup: 1, repeats: o.repeats });
  const convBwd = timeIt(() => { be.tidy(() => be.causalConv1dBackward(dy, args.x, cw, cb, { silu: true })); sync(be); }, { warmup: 1, repeats: o.repeats });
  const act = 4 * B * T * Di, bc = 4 * B * T * G * N;
  const fwdBytes = 4 * act + 2 * bc, bwdBytes = 4 * act + 2 * bc + 3 * act + 2 * bc;
  const rows = [
    ['selectiveScan', (fwd * 1000).toFixed(3), (fwdBytes / 1e9).toFixed(2), (fwdBytes / fwd / 1e9).toFixed(0)],
    ['selectiveScanBackward', (bwd * 1000).toFixed(3), (bwdBytes / 1e9).toFixed(2), (bwdBytes / bwd / 1e9).toFixed(0)],
  ];
  if (fwdCk !== null && bwdCk !== null) {
    rows.push(['selectiveScan, writing checkpoints', (fwdCk * 1000).toFixed(3), (fwdBytes / 1e9).toFixed(2), (fwdBytes / fwdCk / 1e9).toFixed(0)]);
    rows.push(['selectiveScanBackward, from checkpoints', (bwdCk * 1000).toFixed(3), (bwdBytes / 1e9).toFixed(2), (bwdBytes / bwdCk / 1e9).toFixed(0)]);
  }
  rows.push(['causalConv1d (width 4, SiLU)', (convFwd * 1000).toFixed(3), (2 * act / 1e9).toFixed(2), (2 * act / convFwd / 1e9).toFixed(0)]);
  rows.push(['causalConv1dBackward', (convBwd * 1000).toFixed(3), (3 * act / 1e9).toFixed(2), (3 * act / convBwd / 1e9).toFixed(0)]);
  console.log(`selective scan (${o.backend}), B ${B}, T ${T}, Di ${Di}, N ${N}, G ${G}; median of ${o.repeats}`);
  console.log(table(['op', 'ms', 'min GB', 'GB/s on min bytes'], rows));
  const path = writeResult(`${o.name}-${o.backend}`, { options: o, forwardMs: fwd * 1000, backwardMs: bwd * 1000, forwardMinBytes: fwdBytes, backwardMinBytes: bwdBytes,
    ...(fwdCk !== null && bwdCk !== null ? { checkpointShape: ckShape, forwardWithCheckpointsMs: fwdCk * 1000, backwardFromCheckpointsMs: bwdCk * 1000 } : {}),
    convForwardMs: convFwd * 1000, convBackwardMs: convBwd * 1000 });
  console.log(`\nwrote ${path}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
