/**
 * Answer normalisation (grading.md §5) and parsing of an answer string into a small structure
 * (tuple / interval / set / list / matrix / union / text / choice / equation / scalar) so that the
 * comparison can respect bracket types and element order.
 *
 * Rules that differ from the Python graders on purpose (grading.md §3–§5):
 * - unit words are stripped only from a whitelist and only at the end of the answer (inside
 *   `\text{}`/`\mbox{}`/`\mathrm{}` or bare after a number): never single letters, `pm`, `and`, or
 *   words such as `east`/`west`/`even` (Qwen's bug judged `\text{east}` equal to `\text{west}`);
 * - thousands separators are removed only when the whole answer is one number (`1,3,5` stays a list);
 * - degrees are dropped, never converted to radians; `50\%` = `50` (percent is dropped).
 */
import { lastBox, matchBrace } from './extract.js';

const UNIT_WORDS = new Set(
  (
    'cm centimeter centimeters centimetre centimetres mm millimeter millimeters m meter meters metre metres ' +
    'km kilometer kilometers kilometre kilometres mile miles ft foot feet inch inches in yard yards ' +
    'second seconds sec secs s minute minutes min mins hour hours hr hrs h day days week weeks month months ' +
    'year years degree degrees deg cent cents dollar dollars unit units square sq cubic mph kmh km/h m/s ' +
    'kg gram grams g pound pounds lb lbs ounce ounces oz liter liters litre litres ml people students ' +
    'points ways percent'
  ).split(' '),
);
/** units that may be stripped when they follow a number bare (no \text); single letters excluded */
const BARE_UNIT_WORDS = new Set([...UNIT_WORDS].filter((w) => w.length > 1 && w !== 'in'));

export interface NormalizeOptions {
  /** a unit the benchmark attaches to the gold (OlympiadBench `unit`); stripped when trailing */
  unit?: string;
}

/** canonical LaTeX text of an answer: the string the structure parser and the fast paths see */
export function normalizeAnswer(raw: string, opts: NormalizeOptions = {}): string {
  let s = raw;
  if (s.includes('\\boxed') || s.includes('\\fbox')) {
    const box = lastBox(s);
    if (box !== null && box.content !== null) s = box.content;
  }
  s = s.replace(/\r?\n/g, ' ').trim();
  s = s.replace(/\\\(|\\\)|\\\[|\\\]/g, ' ');
  s = s.replace(/\\\$/g, '').replace(/\$/g, '');
  s = s.replace(/\\[dt]frac(?![a-zA-Z])/g, '\\frac');
  s = s.replace(/\\left(?![a-zA-Z])\.?/g, '').replace(/\\right(?![a-zA-Z])\.?/g, '');
  s = s.replace(/\\displaystyle/g, '');
  // thousands separators written as `,\!`, `{,}` or `\,` between digit groups
  s = s.replace(/(\d)\s*(?:,\\!|\{,\}|\\,)\s*(?=\d{3}(?!\d))/g, '$1');
  s = s.replace(/\\!/g, '');
  s = s.replace(/\\[,;:]|\\q?quad|~/g, ' ');
  s = s.replace(/\\(?:mbox|textrm|textnormal|textbf|textit|mathrm|mathbf|mathit)\s*\{/g, '\\text{');
  s = s.replace(/\\text\s+\{/g, '\\text{');
  // degrees (kept as plain numbers: 90^\circ = 90)
  s = s.replace(/\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°/g, '');
  s = s.replace(/\\%|%/g, '');
  // "1 and 2", "x = 1 or x = 2" are lists
  s = s.replace(/\\text\{\s*(?:and|or)\s*\}/g, ',').replace(/\s+(?:and|or)\s+/g, ',');
  s = s.replace(/\s+/g, ' ').trim();
  s = stripTrailingUnits(s, opts.unit);
  s = s.replace(/[.\s]+$/, '').replace(/^[:\s]+/, '');
  // \text{13} → 13: a number in \text is a number
  s = s.replace(/\\text\{\s*(-?[\d.]+)\s*\}/g, '$1');
  // whole-answer number with plain thousands commas: 58,500 → 58500 (but 1,3,5 is a list)
  if (/^-?\d{1,3}(,\d{3})+(\.\d+)?$/.test(s)) s = s.replace(/,/g, '');
  s = s.replace(/\+\s*\\infty/g, '\\infty').replace(/\\inf(?![a-z])|\binfinity\b/g, '\\infty');
  return s;
}

function stripTrailingUnits(input: string, unit?: string): string {
  let s = input;
  if (unit) {
    const u = unit.replace(/\$/g, '').trim();
    if (u !== '') {
      const at = s.lastIndexOf(u);
      if (at > 0 && at + u.length === s.length) s = s.slice(0, at).trim();
    }
  }
  for (let guard = 0; guard < 4; guard++) {
    // \text{ cm}^2, \text{ square units}, \text{ degrees}
    const m = /\\text\{([^{}]*)\}\s*(?:\^\s*\{?\s*[23]\s*\}?)?$/.exec(s);
    if (m && m.index > 0) {
      const words = m[1]!.trim().toLowerCase().split(/[\s]+/).filter((w) => w !== '');
      if (words.length > 0 && words.every((w) => UNIT_WORDS.has(w))) {
        s = s.slice(0, m.index).trim();
        continue;
      }
    }
    // bare unit after a number or a closing brace: "5 cm", "\frac{41}{12} km", "10 km/h"
    const b = /([\d}])\s*([a-zA-Z/]+)(?:\s*\^\s*\{?\s*[23]\s*\}?)?$/.exec(s);
    if (b && BARE_UNIT_WORDS.has(b[2]!.toLowerCase()) && b[2]!.length > 1) {
      s = s.slice(0, b.index + 1).trim();
      continue;
    }
    break;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// structure

export type AnswerNode =
  | { kind: 'scalar'; latex: string }
  | { kind: 'text'; value: string }
  | { kind: 'choice'; letter: string }
  /** `(…)`/`[…]` with top-level commas: ordered tuples and intervals; brackets must match */
  | { kind: 'tuple'; open: '(' | '['; close: ')' | ']'; items: AnswerNode[] }
  /** `\{…\}`: order-insensitive */
  | { kind: 'set'; items: AnswerNode[] }
  /** bare comma list; `unordered` when it came from `\pm` */
  | { kind: 'list'; items: AnswerNode[]; unordered: boolean }
  | { kind: 'union'; parts: AnswerNode[] }
  | { kind: 'matrix'; rows: AnswerNode[][] }
  | { kind: 'equation'; lhs: string; rhs: string };

const OPENERS = new Set(['(', '[', '{']);
const CLOSERS = new Set([')', ']', '}']);

/**
 * Split `s` at top-level occurrences of `sep` (`,`, `=`, `\cup`, `\pm`, `&`, `\\`). Brackets of
 * any type nest (`(3,4]` is one group); `\{`/`\}` count as brackets; other commands are skipped
 * whole so that `\cup` is never found inside `\cupcake`.
 */
export function splitTopLevel(s: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; ) {
    if (depth === 0 && s.startsWith(sep, i) && !(sep.startsWith('\\') && /[a-zA-Z]/.test(s[i + sep.length] ?? ''))) {
      parts.push(s.slice(start, i));
      i += sep.length;
      start = i;
      continue;
    }
    const c = s[i]!;
    if (c === '\\') {
      const next = s[i + 1] ?? '';
      if (next === '{') depth++;
      else if (next === '}') depth--;
      if (/[a-zA-Z]/.test(next)) {
        let j = i + 1;
        while (j < s.length && /[a-zA-Z]/.test(s[j]!)) j++;
        i = j;
      } else i += 2;
      continue;
    }
    if (OPENERS.has(c)) depth++;
    else if (CLOSERS.has(c)) depth--;
    i++;
  }
  parts.push(s.slice(start));
  return parts;
}

/** index of the bracket closing the one at `open` (any bracket type), or -1 */
function matchAnyBracket(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\') {
      const next = s[i + 1];
      if (next === '{') depth++;
      else if (next === '}') {
        depth--;
        if (depth === 0) return i;
      }
      i++;
      continue;
    }
    if (OPENERS.has(c)) depth++;
    else if (CLOSERS.has(c)) {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

/** `x`, `y_1`, `m_{\max}`, `f(x)`, `\theta`, `AB`: a short name on the left of `=` */
function isShortLhs(lhs: string): boolean {
  const t = lhs.replace(/\s+/g, '');
  return (
    /^[a-zA-Z]{1,2}('|_\{?[a-zA-Z0-9\\]+\}?)?$/.test(t) ||
    /^[a-zA-Z]\([a-zA-Z]\)$/.test(t) ||
    /^\\[a-zA-Z]+(_\{?[a-zA-Z0-9]+\}?)?$/.test(t)
  );
}

const MAX_DEPTH = 8;

/** parse a normalised answer into its structure */
export function parseAnswer(normalized: string, depth = 0): AnswerNode {
  const s = normalized.trim();
  if (depth > MAX_DEPTH) return { kind: 'scalar', latex: s };

  // matrices: pmatrix, bmatrix, array, matrix — rows split at \\, cells at &
  const mat = /^\\begin\{([pbBvV]?matrix|array)\}(\{[^{}]*\})?(.*)\\end\{\1\}$/s.exec(s);
  if (mat) {
    const body = mat[3]!;
    const rows = splitTopLevel(body, '\\\\')
      .map((r) => r.trim())
      .filter((r) => r !== '')
      .map((r) => splitTopLevel(r, '&').map((c) => parseAnswer(c, depth + 1)));
    return { kind: 'matrix', rows };
  }

  // `x \in [-2,7]`
  const inMatch = /^[a-zA-Z](?:_\{?\w+\}?)?\s*\\in\s*(.+)$/s.exec(s);
  if (inMatch) return parseAnswer(inMatch[1]!, depth + 1);

  const commaParts = splitTopLevel(s, ',');
  if (commaParts.length > 1) {
    const items = commaParts.map((p) => p.trim()).filter((p) => p !== '');
    return flattenList(items.map((p) => parseAnswer(p, depth + 1)), false);
  }

  const unionParts = splitTopLevel(s, '\\cup');
  if (unionParts.length > 1) return { kind: 'union', parts: unionParts.map((p) => parseAnswer(p, depth + 1)) };

  if (s === '\\mathbb{R}' || s === '\\mathbb R' || s === '\\R') {
    return {
      kind: 'tuple',
      open: '(',
      close: ')',
      items: [
        { kind: 'scalar', latex: '-\\infty' },
        { kind: 'scalar', latex: '\\infty' },
      ],
    };
  }
  if (s === '\\emptyset' || s === '\\varnothing' || s === '\\{\\}') return { kind: 'set', items: [] };

  // an equation: strip a short left side (`x = 5`, `f(x) = 2x`), else keep both sides
  const eqParts = splitTopLevel(s, '=');
  if (eqParts.length >= 2 && eqParts.every((p) => p.trim() !== '')) {
    const lhs = eqParts[0]!.trim();
    const rhs = eqParts[eqParts.length - 1]!.trim();
    if (isShortLhs(lhs)) return parseAnswer(eqParts.slice(1).join('='), depth + 1);
    if (eqParts.length === 2) return { kind: 'equation', lhs, rhs };
    return { kind: 'scalar', latex: s };
  }

  // \pm: a ± b is the two answers a + b and a − b, in either order
  const pmParts = splitTopLevel(s, '\\pm');
  if (pmParts.length === 2) {
    const a = pmParts[0]!.trim();
    const b = pmParts[1]!.trim();
    const plus = a === '' ? `${b}` : `${a}+${b}`;
    const minus = a === '' ? `-(${b})` : `${a}-(${b})`;
    return { kind: 'list', items: [parseAnswer(plus, depth + 1), parseAnswer(minus, depth + 1)], unordered: true };
  }

  // \{ … \}: a set
  if (s.startsWith('\\{') && matchAnyBracket(s, 0) === s.length - 2 && s.endsWith('\\}')) {
    const inner = s.slice(2, -2).trim();
    if (inner === '') return { kind: 'set', items: [] };
    const items = splitTopLevel(inner, ',').map((p) => parseAnswer(p.trim(), depth + 1));
    return { kind: 'set', items: flattenItems(items) };
  }

  // ( … ) / [ … ]: tuple or interval if it has a top-level comma; (C) is a choice; else unwrap
  if ((s[0] === '(' || s[0] === '[') && matchAnyBracket(s, 0) === s.length - 1) {
    const close = s[s.length - 1]!;
    const inner = s.slice(1, -1).trim();
    const items = splitTopLevel(inner, ',');
    if (items.length > 1 && (close === ')' || close === ']')) {
      return {
        kind: 'tuple',
        open: s[0] as '(' | '[',
        close: close as ')' | ']',
        items: items.map((p) => parseAnswer(p.trim(), depth + 1)),
      };
    }
    if (/^[A-E]$/.test(inner)) return { kind: 'choice', letter: inner };
    if (s[0] === '(' && close === ')') return parseAnswer(inner, depth + 1);
  }

  // \text{…}
  const text = /^\\text\{([^{}]*)\}$/.exec(s);
  if (text) {
    const inner = text[1]!.trim();
    const choice = /^\(?([A-E])\)?$/.exec(inner);
    if (choice) return { kind: 'choice', letter: choice[1]! };
    return { kind: 'text', value: inner.toLowerCase().replace(/\s+/g, ' ') };
  }
  return { kind: 'scalar', latex: s };
}

/** a list of one item is that item; nested unordered ± lists inside a list become its elements */
function flattenList(items: AnswerNode[], unordered: boolean): AnswerNode {
  const flat = flattenItems(items);
  const anyPm = items.some((i) => i.kind === 'list' && i.unordered);
  if (flat.length === 1) return flat[0]!;
  return { kind: 'list', items: flat, unordered: unordered || anyPm };
}

function flattenItems(items: AnswerNode[]): AnswerNode[] {
  const out: AnswerNode[] = [];
  for (const it of items) {
    if (it.kind === 'list' && it.unordered) out.push(...it.items);
    else out.push(it);
  }
  return out;
}

/** `\frac{270}7` → `\frac{270}{7}`, `\frac12` → `\frac{1}{2}`, `\sqrt2` → `\sqrt{2}` (CAS-ready text) */
export function braceMacroArgs(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; ) {
    const frac = s.startsWith('\\frac', i) && !/[a-zA-Z]/.test(s[i + 5] ?? '');
    const sqrt = s.startsWith('\\sqrt', i) && !/[a-zA-Z]/.test(s[i + 5] ?? '');
    if (!frac && !sqrt) {
      out += s[i];
      i++;
      continue;
    }
    let j = i + 5;
    out += frac ? '\\frac' : '\\sqrt';
    if (sqrt && s[j] === '[') {
      const end = s.indexOf(']', j);
      if (end < 0) return out + s.slice(j);
      out += s.slice(j, end + 1);
      j = end + 1;
    }
    for (let arg = 0; arg < (frac ? 2 : 1); arg++) {
      while (s[j] === ' ') j++;
      if (j >= s.length) break;
      if (s[j] === '{') {
        const end = matchBrace(s, j);
        if (end < 0) return out + s.slice(j);
        out += '{' + braceMacroArgs(s.slice(j + 1, end)) + '}';
        j = end + 1;
      } else if (s[j] === '\\') {
        const m = /^\\[a-zA-Z]+/.exec(s.slice(j));
        const cmd = m ? m[0] : s.slice(j, j + 2);
        out += '{' + cmd + '}';
        j += cmd.length;
      } else {
        out += '{' + s[j] + '}';
        j++;
      }
    }
    i = j;
  }
  return out;
}
