import { describe, expect, it } from 'vitest';
import {
  loadSyntheticBenchmark, parseSyntheticName, splitOf, syntheticProblems,
} from '../src/train/synthetic.js';

/** re-run the chain in the problem text */
function solve(problem: string): number {
  let v = Number(/has (\d+) /.exec(problem)![1]);
  for (const m of problem.matchAll(/(gets|gives) (\d+) (more|away)/g)) v += (m[1] === 'gets' ? 1 : -1) * Number(m[2]);
  return v;
}

describe('synthetic arithmetic problems', () => {
  it('problems are well-formed: answer = the chain, solution = its steps ending in \\boxed{answer}', () => {
    for (const d of [1, 3, 6]) {
      for (const p of syntheticProblems({ split: 'train', difficulty: d, count: 50, seed: 1 })) {
        expect(String(solve(p.problem))).toBe(p.answer);
        const steps = p.solution.split('. ').filter((s) => /=/.test(s));
        expect(steps.length).toBe(d); // difficulty = number of steps
        expect(p.solution.endsWith(`\\boxed{${p.answer}}`)).toBe(true);
        for (const s of steps) {
          const m = /^(\d+)([+-])(\d+)=(\d+)\.?$/.exec(s)!;
          expect(m, s).not.toBeNull();
          expect(Number(m[4])).toBe(m[2] === '+' ? Number(m[1]) + Number(m[3]) : Number(m[1]) - Number(m[3]));
          expect(Number(m[4])).toBeGreaterThanOrEqual(0);
          expect(Number(m[4])).toBeLessThanOrEqual(20);
        }
      }
    }
    const p = syntheticProblems({ split: 'test', difficulty: 2, count: 1, seed: 0 })[0]!;
    expect(p.problem).toMatch(/^[A-Z][a-z]+ has \d+ \w+\. (He|She) (gets \d+ more|gives \d+ away)\. (He|She) (gets \d+ more|gives \d+ away)\. How many \w+ now\?$/);
    expect(p.problem.length).toBeLessThan(90);
  });

  it('harder problems have longer chains', () => {
    const len = (d: number) => syntheticProblems({ split: 'train', difficulty: d, count: 40, seed: 2 }).reduce((s, p) => s + p.solution.length, 0) / 40;
    expect(len(4)).toBeGreaterThan(len(2) + 10);
    expect(len(2)).toBeGreaterThan(len(1) + 5);
  });

  it('deterministic from the seed; distinct within a split; train and test never overlap', () => {
    const a = syntheticProblems({ split: 'train', difficulty: 2, count: 300, seed: 5 });
    expect(syntheticProblems({ split: 'train', difficulty: 2, count: 300, seed: 5 })).toEqual(a);
    expect(syntheticProblems({ split: 'train', difficulty: 2, count: 300, seed: 6 })).not.toEqual(a);
    expect(new Set(a.map((p) => p.problem)).size).toBe(300);
    expect(new Set(a.map((p) => p.id)).size).toBe(300);
    const trainTexts = new Set<string>();
    for (const seed of [0, 1, 2]) for (const p of syntheticProblems({ split: 'train', difficulty: 1, count: 1500, seed })) trainTexts.add(p.problem);
    const test = syntheticProblems({ split: 'test', difficulty: 1, count: 400, seed: 0 });
    for (const p of test) {
      expect(trainTexts.has(p.problem)).toBe(false);
      expect(splitOf(p.problem)).toBe('test');
    }
    expect(trainTexts.size).toBeGreaterThan(3000);
  });

  it('benchmark names synthetic-<d>', () => {
    expect(parseSyntheticName('synthetic-3')).toBe(3);
    expect(parseSyntheticName('synthetic-0')).toBeNull();
    expect(parseSyntheticName('gsm8k')).toBeNull();
    const bench = loadSyntheticBenchmark('synthetic-2', { count: 20 });
    expect(bench.length).toBe(20);
    expect(bench[0]!.metadata['difficulty']).toBe(2);
    expect(bench).toEqual(loadSyntheticBenchmark('synthetic-2', { count: 20 }));
    expect(() => loadSyntheticBenchmark('synthetic-x')).toThrow(/not a synthetic benchmark/);
    expect(() => syntheticProblems({ split: 'train', difficulty: 0, count: 1, seed: 0 })).toThrow(/difficulty must be an integer in \[1, 8\]/);
  });
});
