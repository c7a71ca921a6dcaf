/**
 * Which library should do the grader's symbolic check? Runs each candidate on the symbolic part of
 * the golden table (test/golden/grader.jsonl): the rows whose two answers are single expressions that
 * neither the string nor the exact-rational fast path decides. Records correctness and time per
 * library; each library runs in its own worker with a 3 s limit per pair, so a hang is recorded as
 * "timeout" instead of stopping the benchmark.
 *
 *   npm run build && node dist/bench/grader-libs.js [test/golden/grader.jsonl]
 *
 * Prints a table and writes bench/results/grader-libs.json. LIBRARY-CHOICE.md has the result.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { extractAnswer } from '../src/eval/grader/extract.js';
import { normalizeAnswer, parseAnswer } from '../src/eval/grader/normalize.js';
import { parseRational } from '../src/eval/grader/rational.js';
import { casReady } from '../src/eval/grader/grade.js';
import { casEqual, shutdownCas } from '../src/eval/grader/cas.js';

interface Pair {
  a: string;
  b: string;
  expected: boolean;
  note: string;
}

type Verdict = 'equal' | 'different' | 'error' | 'timeout';

const LIBS = ['compute-engine', 'kas', 'algebrite', 'fraction.js', 'grader (compute-engine + identity test)'] as const;
type Lib = (typeof LIBS)[number];

/** LaTeX → Algebrite's infix syntax (Algebrite reads no LaTeX) */
function latexToInfix(s: string): string {
  let t = s;
  for (let guard = 0; guard < 20; guard++) {
    const before = t;
    t = t.replace(/\\frac\{([^{}]*)\}\{([^{}]*)\}/g, '(($1)/($2))');
    t = t.replace(/\\sqrt\[([^\]]*)\]\{([^{}]*)\}/g, '(($2)^(1/($1)))');
    t = t.replace(/\\sqrt\{([^{}]*)\}/g, 'sqrt($1)');
    t = t.replace(/\^\{([^{}]*)\}/g, '^($1)');
    if (t === before) break;
  }
  t = t.replace(/\\(cdot|times)/g, '*').replace(/\\pi/g, 'pi').replace(/\\infty/g, 'infinity');
  t = t.replace(/\\(sin|cos|tan|cot|log|ln)\s*([a-z0-9])/g, '$1($2)').replace(/\\(sin|cos|tan|cot|log|ln)/g, '$1');
  t = t.replace(/\\left|\\right/g, '').replace(/[{}]/g, (c) => (c === '{' ? '(' : ')'));
  // implicit multiplication: 2x, 2(, )(, )x, x(
  t = t.replace(/(\d)\s*([a-zA-Z(])/g, '$1*$2').replace(/\)\s*([a-zA-Z0-9(])/g, ')*$1');
  t = t.replace(/\b([a-z])\s+([a-z(])/g, '$1*$2');
  return t;
}

const WORKER = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
let check;
(async () => {
  if (workerData.lib === 'compute-engine') {
    const { ComputeEngine } = await import(workerData.url);
    const ce = new ComputeEngine();
    ce.tolerance = 0;
    check = (a, b) => { const A = ce.parse(a), B = ce.parse(b); if (!A.isValid || !B.isValid) return 'error'; return A.isEqual(B) === true ? 'equal' : 'different'; };
  } else if (workerData.lib === 'kas') {
    const KAS = require(workerData.path);
    check = (a, b) => { const A = KAS.parse(a), B = KAS.parse(b); if (!A.parsed || !B.parsed) return 'error'; return KAS.compare(A.expr, B.expr).equal ? 'equal' : 'different'; };
  } else {
    const Algebrite = require(workerData.path);
    check = (a, b) => { const r = Algebrite.run('simplify((' + a + ')-(' + b + '))'); if (/error|Stop/i.test(r)) return 'error'; return r.trim() === '0' ? 'equal' : 'different'; };
  }
  parentPort.on('message', (m) => { let v; try { v = check(m.a, m.b); } catch (e) { v = 'error'; } parentPort.postMessage({ id: m.id, v }); });
  parentPort.postMessage({ id: 0, v: 'ready' });
})();
`;

class LibWorker {
  private w: Worker | null = null;
  constructor(private readonly data: Record<string, string>) {}
  private async start(): Promise<Worker> {
    const w = new Worker(WORKER, { eval: true, workerData: this.data });
    await new Promise<void>((res) => w.once('message', () => res()));
    this.w = w;
    return w;
  }
  async ask(id: number, a: string, b: string, ms: number): Promise<Verdict> {
    const w = this.w ?? (await this.start());
    return new Promise<Verdict>((res) => {
      const timer = setTimeout(() => {
        w.removeAllListeners('message');
        void w.terminate();
        this.w = null;
        res('timeout');
      }, ms);
      const onMsg = (m: { id: number; v: Verdict }) => {
        if (m.id !== id) return;
        clearTimeout(timer);
        w.off('message', onMsg);
        res(m.v);
      };
      w.on('message', onMsg);
      w.postMessage({ id, a, b });
    });
  }
  async close(): Promise<void> {
    if (this.w) await this.w.terminate();
  }
}

function symbolicPairs(file: string): Pair[] {
  const rows = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { response: string; reference: string; expected: boolean; note: string; options?: object });
  const out: Pair[] = [];
  for (const r of rows) {
    if (r.options !== undefined) continue;
    const ex = extractAnswer(r.response);
    if (ex === null) continue;
    const na = normalizeAnswer(ex);
    const nb = normalizeAnswer(r.reference);
    const pa = parseAnswer(na);
    const pb = parseAnswer(nb);
    if (pa.kind !== 'scalar' || pb.kind !== 'scalar') continue;
    const la = pa.latex;
    const lb = pb.latex;
    if (la.replace(/\s+/g, '') === lb.replace(/\s+/g, '')) continue;
    if (parseRational(la) !== null && parseRational(lb) !== null) continue;
    if (/^[A-Za-z]{2,}$/.test(la.replace(/\s/g, '')) || /_/.test(la + lb)) continue; // words, base numbers
    // the text the CAS would see: a short `x =` left side is already stripped by parseAnswer
    out.push({ a: casReady(pa.latex), b: casReady(pb.latex), expected: r.expected, note: r.note });
  }
  return out;
}

async function main(): Promise<void> {
  const file = process.argv[2] ?? 'test/golden/grader.jsonl';
  const pairs = symbolicPairs(file);
  const req = createRequire(import.meta.url);
  const ceMain = req.resolve('@cortex-js/compute-engine');
  const data: Record<'compute-engine' | 'kas' | 'algebrite', Record<string, string>> = {
    'compute-engine': { lib: 'compute-engine', url: pathToFileURL(path.join(path.dirname(ceMain), 'compute-engine.min.esm.js')).href },
    kas: { lib: 'kas', path: req.resolve('@khanacademy/kas') },
    algebrite: { lib: 'algebrite', path: req.resolve('algebrite') },
  };
  const results: Record<string, { correct: number; wrong: number; errors: number; timeouts: number; ms: number; failures: string[] }> = {};
  for (const lib of LIBS) {
    const res = { correct: 0, wrong: 0, errors: 0, timeouts: 0, ms: 0, failures: [] as string[] };
    const worker = lib === 'fraction.js' || lib.startsWith('grader') ? null : new LibWorker(data[lib as keyof typeof data]);
    let id = 1;
    for (const p of pairs) {
      const t0 = performance.now();
      let v: Verdict;
      if (lib.startsWith('grader')) {
        const r = casEqual(p.a, p.b, 3000);
        v = r.verdict === 'equal' ? 'equal' : r.verdict === 'timeout' ? 'timeout' : r.verdict === 'invalid' ? 'error' : 'different';
      } else if (worker === null) {
        const ra = parseRational(p.a);
        const rb = parseRational(p.b);
        v = ra === null || rb === null ? 'error' : ra.equals(rb) ? 'equal' : 'different';
      } else {
        const a = lib === 'algebrite' ? latexToInfix(p.a) : p.a;
        const b = lib === 'algebrite' ? latexToInfix(p.b) : p.b;
        v = await worker.ask(id++, a, b, 3000);
      }
      res.ms += performance.now() - t0;
      if (v === 'timeout') res.timeouts++;
      if (v === 'error') res.errors++;
      if ((v === 'equal') === p.expected) res.correct++;
      else {
        res.wrong++;
        res.failures.push(`${p.note}: ${p.a} vs ${p.b} → ${v} (expected ${p.expected})`);
      }
    }
    await worker?.close();
    results[lib] = res;
  }
  const n = pairs.length;
  console.log(`symbolic golden pairs: ${n} (${pairs.filter((p) => p.expected).length} equal, ${pairs.filter((p) => !p.expected).length} different)`);
  console.log('| library | correct | wrong | parse errors | timeouts | mean ms/pair |');
  console.log('|---|---|---|---|---|---|');
  for (const lib of LIBS) {
    const r = results[lib]!;
    console.log(`| ${lib} | ${r.correct}/${n} | ${r.wrong} | ${r.errors} | ${r.timeouts} | ${(r.ms / n).toFixed(2)} |`);
  }
  for (const lib of LIBS) {
    console.log(`\n${lib} failures:`);
    for (const f of results[lib]!.failures) console.log('  ' + f);
  }
  shutdownCas();
  fs.mkdirSync('bench/results', { recursive: true });
  fs.writeFileSync('bench/results/grader-libs.json', JSON.stringify({ pairs: n, results }, null, 2) + '\n');
}

void main();
