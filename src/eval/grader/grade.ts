/**
 * gradeAnswer: extraction → normalisation → structure → equivalence (grading.md §5 ladder).
 *
 * Scalars go through: identical text → base-subscript numbers → exact rationals (fraction.js;
 * 2/4 == 1/2, "007" == 7, 0.5 == \frac12, 4.5e33 == 4.5\times10^{33}) → plain words (case-
 * insensitive) → compute-engine in a worker (cas.ts) with a per-call budget. The whole answer has a
 * budget too (`answerBudgetMs`), so a long list of expressions cannot add up to a hang.
 *
 * Policy (strict by default, each choice is a rule from grading.md §5):
 * - tuples `(…)` and intervals are ordered and their bracket types must match: `(3,4]` ≠ `(3,4)`;
 * - `\{…\}` sets and `a \pm b` are order-insensitive; bare comma lists are ordered unless the
 *   benchmark says the answer is a set of answers (`orderInsensitive`, e.g. OlympiadBench
 *   `is_multiple_answer`, MATH "separated by commas"); counts must match;
 * - a column vector is not a tuple; a decimal approximation of an irrational answer is not equal
 *   (the CAS compares exactly), unless the benchmark gives a tolerance (`absTolerance`);
 * - percent is dropped (50\% = 50; 0.5 ≠ 50\%); degrees are dropped (90^\circ = 90).
 */
import { extractAnswerDetailed, type ExtractOptions } from './extract.js';
import { normalizeAnswer, parseAnswer, braceMacroArgs, type AnswerNode } from './normalize.js';
import { parseRational, rationalKey } from './rational.js';
import { casEqual, DEFAULT_CAS_BUDGET_MS } from './cas.js';

export interface GradeOptions extends ExtractOptions {
  /** bare comma lists are sets of answers (any order, same count) */
  orderInsensitive?: boolean;
  /** numeric answers within this absolute difference are equal (OlympiadBench `error`) */
  absTolerance?: number;
  /** unit attached to the gold answer, stripped from both sides when trailing */
  unit?: string;
  /** budget of one symbolic comparison (ms); default 2000 */
  casBudgetMs?: number;
  /** budget of one whole answer (ms); default 5000 */
  answerBudgetMs?: number;
}

export interface GradeResult {
  correct: boolean;
  /** the extracted final answer (before normalisation), null when none was found */
  extracted: string | null;
  /** how the verdict was reached: "equal: rational", "not equal: structure", "no answer: …" */
  reason: string;
}

interface Ctx {
  opts: GradeOptions;
  deadline: number;
  methods: Set<string>;
  timedOut: boolean;
}

/** Grade one response against one reference answer. Never throws on odd text; never hangs. */
export function gradeAnswer(response: string, reference: string, opts: GradeOptions = {}): GradeResult {
  if (typeof response !== 'string') throw new Error('gradeAnswer: response must be a string');
  if (typeof reference !== 'string') throw new Error('gradeAnswer: reference must be a string');
  const ex = extractAnswerDetailed(response, opts);
  if (ex.answer === null) return { correct: false, extracted: null, reason: `no answer: ${ex.how}` };
  const eq = answersEquivalent(ex.answer, reference, opts);
  return { correct: eq.equal, extracted: ex.answer, reason: eq.reason };
}

/** Are two answers (already extracted) equivalent? `b` is the reference when it matters (units). */
export function answersEquivalent(a: string, b: string, opts: GradeOptions = {}): { equal: boolean; reason: string } {
  const ctx: Ctx = {
    opts,
    deadline: performance.now() + (opts.answerBudgetMs ?? 5000),
    methods: new Set(),
    timedOut: false,
  };
  const na = normalizeAnswer(a, { unit: opts.unit });
  const nb = normalizeAnswer(b, { unit: opts.unit });
  if (nb === '') return { equal: false, reason: 'not equal: empty reference' };
  if (na === '') return { equal: false, reason: 'not equal: empty answer' };
  let equal: boolean;
  if (na.replace(/\s+/g, '') === nb.replace(/\s+/g, '')) {
    equal = true;
    ctx.methods.add('string');
  } else {
    equal = nodesEqual(parseAnswer(na), parseAnswer(nb), ctx);
  }
  const how = [...ctx.methods].join('+') || 'structure';
  if (!equal && ctx.timedOut) return { equal, reason: `not equal: timeout (${how})` };
  return { equal, reason: `${equal ? 'equal' : 'not equal'}: ${how}` };
}

function nodesEqual(p: AnswerNode, g: AnswerNode, ctx: Ctx): boolean {
  if (p.kind === 'choice' || g.kind === 'choice') {
    ctx.methods.add('choice');
    return letterOf(p) !== null && letterOf(p) === letterOf(g);
  }
  if (p.kind === 'text' || g.kind === 'text') {
    ctx.methods.add('text');
    const tp = wordsOf(p);
    const tg = wordsOf(g);
    return tp !== null && tp === tg;
  }
  if (p.kind === 'scalar' && g.kind === 'scalar') return scalarEqual(p.latex, g.latex, ctx);
  if (p.kind === 'tuple' && g.kind === 'tuple') {
    ctx.methods.add('tuple');
    if (p.open !== g.open || p.close !== g.close || p.items.length !== g.items.length) return false;
    return p.items.every((it, i) => nodesEqual(it, g.items[i]!, ctx));
  }
  const pList = p.kind === 'set' || p.kind === 'list';
  const gList = g.kind === 'set' || g.kind === 'list';
  if (pList && gList) {
    ctx.methods.add('list');
    const unordered =
      p.kind === 'set' || g.kind === 'set' || (p.kind === 'list' && p.unordered) || (g.kind === 'list' && g.unordered) ||
      ctx.opts.orderInsensitive === true;
    if (p.items.length !== g.items.length) return false;
    return unordered ? matchAll(p.items, g.items, ctx) : p.items.every((it, i) => nodesEqual(it, g.items[i]!, ctx));
  }
  if (p.kind === 'union' && g.kind === 'union') {
    ctx.methods.add('union');
    return p.parts.length === g.parts.length && matchAll(p.parts, g.parts, ctx);
  }
  if (p.kind === 'matrix' && g.kind === 'matrix') {
    ctx.methods.add('matrix');
    if (p.rows.length !== g.rows.length) return false;
    return p.rows.every((row, i) => {
      const grow = g.rows[i]!;
      return row.length === grow.length && row.every((cell, j) => nodesEqual(cell, grow[j]!, ctx));
    });
  }
  if (p.kind === 'equation' && g.kind === 'equation') {
    ctx.methods.add('equation');
    // lhs − rhs equal up to sign: `5x-7y+11z+4=0` vs `-5x+7y-11z=4`
    const dp = `(${p.lhs})-(${p.rhs})`;
    const dg = `(${g.lhs})-(${g.rhs})`;
    return casScalar(dp, dg, ctx) || casScalar(dp, `-(${dg})`, ctx);
  }
  ctx.methods.add('structure');
  return false;
}

function letterOf(n: AnswerNode): string | null {
  if (n.kind === 'choice') return n.letter;
  if (n.kind === 'scalar' && /^[A-E]$/.test(n.latex.trim())) return n.latex.trim();
  if (n.kind === 'text' && /^[a-e]$/.test(n.value)) return n.value.toUpperCase();
  return null;
}

function wordsOf(n: AnswerNode): string | null {
  if (n.kind === 'text') return n.value;
  if (n.kind === 'scalar' && /^[A-Za-z][A-Za-z ]*$/.test(n.latex.trim())) return n.latex.trim().toLowerCase().replace(/\s+/g, ' ');
  return null;
}

/** every item of `ps` paired with a distinct equal item of `gs` (bipartite matching, augmenting paths) */
function matchAll(ps: AnswerNode[], gs: AnswerNode[], ctx: Ctx): boolean {
  const n = ps.length;
  const cache = new Map<number, boolean>();
  const eq = (i: number, j: number): boolean => {
    const key = i * n + j;
    let v = cache.get(key);
    if (v === undefined) {
      v = nodesEqual(ps[i]!, gs[j]!, ctx);
      cache.set(key, v);
    }
    return v;
  };
  const owner = new Array<number>(n).fill(-1); // owner[j] = index of the p item matched to g item j
  const tryAssign = (i: number, seen: boolean[]): boolean => {
    for (let j = 0; j < n; j++) {
      if (seen[j] || !eq(i, j)) continue;
      seen[j] = true;
      if (owner[j] === -1 || tryAssign(owner[j]!, seen)) {
        owner[j] = i;
        return true;
      }
    }
    return false;
  };
  for (let i = 0; i < n; i++) if (!tryAssign(i, new Array<boolean>(n).fill(false))) return false;
  return true;
}

const BASE_NUMBER = /^([0-9A-Fa-f]+)_\{?(\d+)\}?$/;

function scalarEqual(a: string, b: string, ctx: Ctx): boolean {
  const ka = a.replace(/\s+/g, '');
  const kb = b.replace(/\s+/g, '');
  if (ka === kb) {
    ctx.methods.add('string');
    return true;
  }
  // base-b numbers are compared as digit strings, never evaluated; `52` is accepted for `52_8`
  const ba = BASE_NUMBER.exec(ka);
  const bb = BASE_NUMBER.exec(kb);
  if (ba || bb) {
    ctx.methods.add('base');
    const da = ba ? ba[1]! : ka;
    const db = bb ? bb[1]! : kb;
    if (ba && bb && ba[2] !== bb[2]) return false;
    return da.toLowerCase() === db.toLowerCase();
  }
  const ra = parseRational(ka);
  const rb = parseRational(kb);
  if (ra !== null && rb !== null) {
    ctx.methods.add('rational');
    const tol = ctx.opts.absTolerance;
    if (tol !== undefined) return Math.abs(ra.sub(rb).valueOf()) <= tol * 1.01;
    return ra.equals(rb);
  }
  const wa = /^[A-Za-z]{2,}$/.test(ka);
  const wb = /^[A-Za-z]{2,}$/.test(kb);
  if (wa && wb) {
    // plain words (`Evelyn`, `even`): never sent to the CAS, which would read them as products
    ctx.methods.add('text');
    return ka.toLowerCase() === kb.toLowerCase();
  }
  // the CAS needs the spaces: `\cot x` is not `\cotx`
  return casScalar(a.trim(), b.trim(), ctx);
}

/** LaTeX the CAS parses: braced \frac/\sqrt arguments, \binom as factorials, `*` as \cdot */
export function casReady(s: string): string {
  let t = braceMacroArgs(s);
  t = t.replace(/\\binom\{([^{}]*)\}\{([^{}]*)\}/g, '\\frac{($1)!}{($2)!(($1)-($2))!}');
  t = t.replace(/\*/g, '\\cdot ');
  t = t.replace(/\\text\{([^{}]*)\}/g, '$1');
  t = t.replace(/\\operatorname\{([a-z]+)\}/g, '\\$1');
  return t;
}

function casScalar(a: string, b: string, ctx: Ctx): boolean {
  const left = ctx.deadline - performance.now();
  if (left <= 0) {
    ctx.timedOut = true;
    ctx.methods.add('cas');
    return false;
  }
  const budget = Math.min(ctx.opts.casBudgetMs ?? DEFAULT_CAS_BUDGET_MS, left);
  const r = casEqual(casReady(a), casReady(b), budget, ctx.opts.absTolerance);
  ctx.methods.add(r.verdict === 'equal' || r.verdict === 'different' ? 'cas' : `cas-${r.verdict}`);
  if (r.verdict === 'timeout') ctx.timedOut = true;
  return r.verdict === 'equal';
}

/**
 * Canonical key of an answer for majority voting: equal keys ⇒ equivalent answers. Integers and
 * rationals reduce ("025", "25.0" → "25"; "2/4" → "1/2"), sets and ± lists sort their items;
 * anything else is its normalised text. Voting merges groups with answersEquivalent on top.
 */
export function canonicalKey(answer: string, opts: GradeOptions = {}): string {
  return nodeKey(parseAnswer(normalizeAnswer(answer, { unit: opts.unit })), opts);
}

function nodeKey(n: AnswerNode, opts: GradeOptions): string {
  switch (n.kind) {
    case 'scalar': {
      const k = n.latex.replace(/\s+/g, '');
      const r = parseRational(k);
      return r !== null ? rationalKey(r) : k;
    }
    case 'text':
      return `text:${n.value}`;
    case 'choice':
      return `choice:${n.letter}`;
    case 'tuple':
      return n.open + n.items.map((i) => nodeKey(i, opts)).join(',') + n.close;
    case 'set':
      return '{' + n.items.map((i) => nodeKey(i, opts)).sort().join(',') + '}';
    case 'list': {
      const keys = n.items.map((i) => nodeKey(i, opts));
      return n.unordered || opts.orderInsensitive ? '{' + keys.sort().join(',') + '}' : keys.join(',');
    }
    case 'union':
      return n.parts.map((p) => nodeKey(p, opts)).sort().join('∪');
    case 'matrix':
      return '[' + n.rows.map((r) => r.map((c) => nodeKey(c, opts)).join('&')).join(';') + ']';
    case 'equation':
      return `${n.lhs.replace(/\s+/g, '')}=${n.rhs.replace(/\s+/g, '')}`;
  }
}
