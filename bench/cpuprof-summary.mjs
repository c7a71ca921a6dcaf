// Summarise a V8 CPU profile (node --cpu-prof) by self time per function: where the host thread of a run spent
// its time, including the time it sat in native calls that wait for the device (they show as the addon's
// functions or "(program)").
//   node bench/cpuprof-summary.mjs FILE.cpuprofile [--top 30]
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args[topAt + 1]) : 30;
if (!file || !Number.isInteger(top) || top < 1) {
  console.error('usage: node bench/cpuprof-summary.mjs FILE.cpuprofile [--top N]');
  process.exit(2);
}
let prof;
try {
  prof = JSON.parse(readFileSync(file, 'utf8'));
} catch (e) {
  console.error(`${file}: not a readable CPU profile (${e instanceof Error ? e.message : e})`);
  process.exit(1);
}
if (!Array.isArray(prof.nodes) || !Array.isArray(prof.samples) || !Array.isArray(prof.timeDeltas)) {
  console.error(`${file}: no nodes / samples / timeDeltas: not a V8 CPU profile`);
  process.exit(1);
}
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const selfUs = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const node = byId.get(prof.samples[i]);
  if (!node) continue;
  const f = node.callFrame;
  const where = f.url ? `${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}` : '';
  const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
  selfUs.set(key, (selfUs.get(key) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled; self time by function`);
for (const [k, us] of [...selfUs.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`${(us / 1e3).toFixed(1).padStart(10)} ms  ${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}`);
}
