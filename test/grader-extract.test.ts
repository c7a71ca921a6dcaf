import { describe, expect, it } from 'vitest';
import { extractAnswer, extractAnswerDetailed, normalizeAnswer, parseRational } from '../src/eval/grader/index.js';

describe('extractAnswer', () => {
  it('matches nested braces', () => {
    expect(extractAnswer('so $\\boxed{\\frac{1}{\\sqrt{2}}}$.')).toBe('\\frac{1}{\\sqrt{2}}');
    expect(extractAnswer('\\boxed{\\left\\{1, \\{2\\}\\right\\}}')).toBe('\\left\\{1, \\{2\\}\\right\\}');
  });
  it('takes the last of several boxes, \\boxed or \\fbox', () => {
    expect(extractAnswer('\\boxed{1} then \\boxed{2}')).toBe('2');
    expect(extractAnswer('\\boxed{1} then \\fbox{3}')).toBe('3');
    expect(extractAnswer('\\fbox{3} then \\boxed{4}')).toBe('4');
  });
  it('reads \\fbox and the space form \\boxed 5', () => {
    expect(extractAnswer('\\fbox{12}')).toBe('12');
    expect(extractAnswer('answer: $\\boxed 5$ done')).toBe('5');
    expect(extractAnswerDetailed('\\boxed 5').how).toBe('boxed-space');
  });
  it('returns null without a box, for an unclosed box and for \\boxedfoo', () => {
    expect(extractAnswer('the answer is 42')).toBeNull();
    expect(extractAnswerDetailed('\\boxed{42').how).toBe('unclosed-box');
    expect(extractAnswer('\\boxedfoo{3}')).toBeNull();
  });
  it('requires </think> when asked and reads after the first one', () => {
    expect(extractAnswer('\\boxed{5}', { requireThinkClose: true })).toBeNull();
    expect(extractAnswerDetailed('\\boxed{5}', { requireThinkClose: true }).how).toBe('no-think-close');
    expect(extractAnswer('<think>\\boxed{1}</think>\\boxed{2}', { requireThinkClose: true })).toBe('2');
    expect(extractAnswer('<think>\\boxed{1}</think>x', { requireThinkClose: true })).toBeNull();
    // lenient default: after the last </think>; whole text when absent
    expect(extractAnswer('<think>\\boxed{1}</think>\\boxed{2}</think>\\boxed{3}')).toBe('3');
    expect(extractAnswer('no think \\boxed{9}')).toBe('9');
  });
  it('uses the GSM8K fallback only when enabled, with whole numbers', () => {
    expect(extractAnswer('so #### 1,234')).toBeNull();
    expect(extractAnswer('so #### 1,234', { gsm8kFallback: true })).toBe('1234');
    expect(extractAnswer('she has 711 apples', { gsm8kFallback: true })).toBe('711');
    expect(extractAnswer('x = -3.5 in the end', { gsm8kFallback: true })).toBe('-3.5');
    expect(extractAnswer('\\boxed{7} and then 8', { gsm8kFallback: true })).toBe('7');
  });
  it('trims $, trailing dots and a leading colon', () => {
    expect(extractAnswer('\\boxed{: 5.}')).toBe('5');
    expect(extractAnswer('\\boxed{$x$}')).toBe('x');
  });
});

describe('normalizeAnswer', () => {
  it('applies the whitelisted rules only', () => {
    expect(normalizeAnswer('\\dfrac{1}{2}')).toBe('\\frac{1}{2}');
    expect(normalizeAnswer('10,\\!080')).toBe('10080');
    expect(normalizeAnswer('1,3,5')).toBe('1,3,5');
    expect(normalizeAnswer('\\$18.90')).toBe('18.90');
    expect(normalizeAnswer('90^\\circ')).toBe('90');
    expect(normalizeAnswer('5.4 \\text{ cents}')).toBe('5.4');
    expect(normalizeAnswer('\\text{east}')).toBe('\\text{east}');
    expect(normalizeAnswer('(a+5)(b+2)')).toBe('(a+5)(b+2)');
    expect(normalizeAnswer('\\left( 3, \\frac{\\pi}{2} \\right)')).toBe('( 3, \\frac{\\pi}{2} )');
  });
});

describe('parseRational', () => {
  it('reads integers, decimals, fractions, scientific notation and mixed numbers exactly', () => {
    expect(parseRational('007')!.toFraction()).toBe('7');
    expect(parseRational('2/4')!.toFraction()).toBe('1/2');
    expect(parseRational('\\frac{-1}{1997}')!.toFraction()).toBe('-1/1997');
    expect(parseRational('.0000672')!.equals(parseRational('6.72\\times10^{-5}')!)).toBe(true);
    expect(parseRational('1\\frac{4}{5}')!.toFraction()).toBe('9/5');
    expect(parseRational('4.5e33')!.toFraction()).toBe('4500000000000000000000000000000000');
    expect(parseRational('x')).toBeNull();
    expect(parseRational('1/0')).toBeNull();
  });
});
