/**
 * Final-answer extraction from a model response (grading.md §2).
 *
 * Order: `</think>` handling → last `\boxed{…}` / `\fbox{…}` / `\boxed 5` → (GSM8K sets only) `#### N`,
 * then the last number. No other fallback: a response without a box is wrong, as in M1's reward.
 */

export interface ExtractOptions {
  /**
   * M1/DeepScaleR reward parity: a response without `</think>` has no answer, and the answer is
   * searched after the FIRST `</think>`. Off (default): text after the LAST `</think>` if there is one,
   * else the whole response.
   */
  requireThinkClose?: boolean;
  /** GSM8K only: without a box, take `#### N`, else the last number in the text. */
  gsm8kFallback?: boolean;
}

export interface Extraction {
  answer: string | null;
  /** how the answer was found, or why there is none */
  how: 'boxed' | 'fbox' | 'boxed-space' | 'gsm8k-hash' | 'last-number' | 'no-think-close' | 'unclosed-box' | 'no-answer';
}

const THINK_CLOSE = '</think>';

/** The final answer of `response`, or null when there is none. */
export function extractAnswer(response: string, opts: ExtractOptions = {}): string | null {
  return extractAnswerDetailed(response, opts).answer;
}

export function extractAnswerDetailed(response: string, opts: ExtractOptions = {}): Extraction {
  let text = response;
  const first = text.indexOf(THINK_CLOSE);
  if (opts.requireThinkClose) {
    if (first < 0) return { answer: null, how: 'no-think-close' };
    text = text.slice(first + THINK_CLOSE.length);
  } else if (first >= 0) {
    text = text.slice(text.lastIndexOf(THINK_CLOSE) + THINK_CLOSE.length);
  }

  const boxed = lastBox(text);
  if (boxed !== null) {
    if (boxed.content === null) return { answer: null, how: 'unclosed-box' };
    const answer = trimAnswer(boxed.content);
    return answer === '' ? { answer: null, how: 'no-answer' } : { answer, how: boxed.how };
  }

  if (opts.gsm8kFallback) {
    const hash = /####\s*(-?[\d,]*\.?\d+)/g;
    let m: RegExpExecArray | null;
    let lastHash: string | null = null;
    while ((m = hash.exec(text)) !== null) lastHash = m[1]!;
    if (lastHash !== null) return { answer: lastHash.replace(/,/g, ''), how: 'gsm8k-hash' };
    // Whole tokens only: "711" must never be read as "11" (grading.md §2.3 pitfall).
    const numbers = text.replace(/(\d),(\d{3})/g, '$1$2').match(/-?\d+(?:\.\d+)?/g);
    if (numbers && numbers.length > 0) return { answer: numbers[numbers.length - 1]!, how: 'last-number' };
  }
  return { answer: null, how: 'no-answer' };
}

interface BoxHit {
  /** null when the last box is never closed (a truncated response) */
  content: string | null;
  how: 'boxed' | 'fbox' | 'boxed-space';
}

/**
 * The last `\boxed`/`\fbox` in `text` (whichever occurs later wins). Braces are matched with a depth
 * counter; `\{` and `\}` are literal braces and do not count.
 */
export function lastBox(text: string): BoxHit | null {
  const re = /\\(boxed|fbox)(?![A-Za-z])/g;
  let last: RegExpExecArray | null = null;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) last = m;
  if (last === null) return null;
  const cmd = last[1] as 'boxed' | 'fbox';
  let i = last.index + last[0].length;
  while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++;
  if (text[i] === '{') {
    const end = matchBrace(text, i);
    if (end < 0) return { content: null, how: cmd };
    return { content: text.slice(i + 1, end), how: cmd };
  }
  // `\boxed 5`: the token runs to the next `$`, newline or end of text.
  if (i === last.index + last[0].length) return { content: null, how: cmd }; // `\boxed` glued to nothing
  const stop = text.slice(i).search(/[$\n]/);
  const token = stop < 0 ? text.slice(i) : text.slice(i, i + stop);
  return { content: token, how: 'boxed-space' };
}

/** index of the `}` that closes the `{` at `open`, or -1; `\{`/`\}` are skipped as escaped braces */
export function matchBrace(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') {
      i++; // skip the escaped character (`\{`, `\}`, `\\`)
      continue;
    }
    if (c === '{') depth++;
    else if (c === '}') {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

/** Qwen's post-extraction trim: newlines, a leading `:`, trailing `.` and `/`, surrounding `$`. */
function trimAnswer(s: string): string {
  let t = s.replace(/\n/g, ' ').trim();
  t = t.replace(/^:\s*/, '');
  t = t.replace(/[./\s]+$/, '');
  if (t.startsWith('$') && t.endsWith('$') && t.length >= 2) t = t.slice(1, -1).trim();
  return t;
}
