/**
 * Exact rational fast path: integers (zero-padded "007"), decimals (".0000672", "0.10"), scientific
 * notation ("4.5e33", "6.72\times10^{-5}"), `\frac{a}{b}`, `a/b`, mixed numbers (`1\frac{4}{5}`).
 * Values are fraction.js BigInt fractions, so 2/4 == 1/2 and 1/2004! never rounds to 0.
 * Anything else returns null and goes to the structural or symbolic comparison.
 */
import Fraction from 'fraction.js';

const DECIMAL = /^(\d+)?(?:\.(\d*))?$/;

/** exact value of a non-negative decimal literal such as "12", "007", ".5", "3.", "0.10" */
function parseDecimal(s: string): Fraction | null {
  const m = DECIMAL.exec(s);
  if (!m || (m[1] === undefined && (m[2] === undefined || m[2] === ''))) return null;
  const intPart = m[1] ?? '0';
  const frac = m[2] ?? '';
  const num = BigInt(intPart + frac);
  const den = 10n ** BigInt(frac.length);
  return new Fraction(num, den);
}

function pow10(exp: number): Fraction {
  // Exponents beyond ±400 are not answers to these benchmarks; refusing them keeps BigInt cheap.
  if (!Number.isInteger(exp) || Math.abs(exp) > 400) throw new RangeError('exponent out of range');
  return exp >= 0 ? new Fraction(10n ** BigInt(exp), 1n) : new Fraction(1n, 10n ** BigInt(-exp));
}

/**
 * Exact value of `s` (already normalised: no spaces, `\dfrac` → `\frac`) or null if it is not a
 * plain rational number.
 */
export function parseRational(input: string): Fraction | null {
  const s = input.replace(/\s+/g, '');
  if (s === '' || s.length > 200) return null;
  try {
    return parseSigned(s);
  } catch {
    return null;
  }
}

function parseSigned(s: string): Fraction | null {
  let sign = 1;
  let t = s;
  while (t.startsWith('-') || t.startsWith('+')) {
    if (t[0] === '-') sign = -sign;
    t = t.slice(1);
  }
  if (t.startsWith('(') && t.endsWith(')')) {
    const inner = parseSigned(t.slice(1, -1));
    return inner === null ? null : inner.mul(sign);
  }
  const v = parseUnsigned(t);
  return v === null ? null : v.mul(sign);
}

function parseUnsigned(t: string): Fraction | null {
  const dec = parseDecimal(t);
  if (dec !== null) return dec;

  // scientific: 4.5e33, 4.5E-3, 6.72\times10^{-5}, 6.72\cdot10^-5, 10^{5}
  let m = /^(\d*\.?\d*)(?:[eE]([+-]?\d+)|(?:\\times|\\cdot|\*)?10\^\{?([+-]?\d+)\}?)$/.exec(t);
  if (m) {
    const mant = m[1] === '' ? new Fraction(1) : parseDecimal(m[1]!);
    if (mant === null) return null;
    const exp = Number(m[2] ?? m[3]);
    return mant.mul(pow10(exp));
  }

  // mixed number: 1\frac{4}{5}, 137\frac12 (only a whole-answer integer followed by a fraction)
  m = /^(\d+)(\\frac.*)$/.exec(t);
  if (m) {
    const f = parseFrac(m[2]!);
    if (f === null) return null;
    return f.add(new Fraction(BigInt(m[1]!), 1n));
  }
  const f = parseFrac(t);
  if (f !== null) return f;

  // a/b of two signed decimals
  m = /^([^/]+)\/([^/]+)$/.exec(t);
  if (m) {
    const a = parseSigned(m[1]!);
    const b = parseSigned(m[2]!);
    if (a === null || b === null || b.equals(0)) return null;
    return a.div(b);
  }
  return null;
}

/** `\frac{A}{B}` with A, B themselves rational (`\frac{-1}{1997}`, `\frac{\frac12}{3}`); `\frac12` too */
function parseFrac(t: string): Fraction | null {
  if (!t.startsWith('\\frac')) return null;
  const rest = t.slice(5);
  const a = takeArg(rest);
  if (a === null) return null;
  const b = takeArg(a.rest);
  if (b === null || b.rest !== '') return null;
  const num = parseSigned(a.arg);
  const den = parseSigned(b.arg);
  if (num === null || den === null || den.equals(0)) return null;
  return num.div(den);
}

/** one TeX macro argument: `{…}` with matched braces, or a single character */
function takeArg(s: string): { arg: string; rest: string } | null {
  if (s === '') return null;
  if (s[0] !== '{') return { arg: s[0]!, rest: s.slice(1) };
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '{') depth++;
    else if (s[i] === '}' && --depth === 0) return { arg: s.slice(1, i), rest: s.slice(i + 1) };
  }
  return null;
}

/** canonical string of a rational: "7", "-1/2" (reduced) */
export function rationalKey(f: Fraction): string {
  return f.toFraction(false);
}
