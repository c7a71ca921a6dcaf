import { describe, expect, it } from 'vitest';
import { BENCHMARK_NAMES, benchmarkSpec, gradeOptionsFor, loadBenchmark, loadGsm8kTrain } from '../src/eval/datasets.js';

describe('benchmark loaders', () => {
  it('load every benchmark with the expected sizes', () => {
    const sizes: Record<string, number> = {
      math500: 500, aime24: 30, aime25: 30, amc23: 40, 'amc23-83': 83, olympiadbench: 675, minerva: 272, gsm8k: 1319,
    };
    for (const name of BENCHMARK_NAMES) {
      const ps = loadBenchmark(name);
      expect(ps.length, name).toBe(sizes[name]);
      for (const p of ps) {
        expect(p.problem.length, `${name} ${p.id}`).toBeGreaterThan(10);
        expect(p.answer.trim(), `${name} ${p.id}`).not.toBe('');
      }
      expect(new Set(ps.map((p) => p.id)).size, `${name} ids unique`).toBe(ps.length);
    }
  });
  it('keeps the answers exact', () => {
    const aime24 = loadBenchmark('aime24');
    expect(aime24.filter((p) => p.answer.startsWith('0')).map((p) => p.answer).sort()).toEqual(
      ['023', '025', '033', '045', '055', '073', '080'],
    );
    expect(loadBenchmark('aime25').map((p) => p.answer).slice(0, 3)).toEqual(['70', '588', '16']);
    expect(loadBenchmark('amc23')[0]!.answer).toBe('27');
    const amc83 = loadBenchmark('amc23-83');
    const amc40 = loadBenchmark('amc23');
    // the 40-set is the 2023 subset of the 83-set
    const by = new Map(amc83.map((p) => [p.id, p.answer]));
    for (const p of amc40) expect(by.get(p.id), p.id).toBe(p.answer);
    expect(amc83.filter((p) => p.id.startsWith('2022')).length).toBe(43);
    expect(loadBenchmark('minerva')[0]!.answer).toBe('1.6');
    expect(loadBenchmark('gsm8k')[0]!.answer).toBe('18');
  });
  it('carries per-problem grading facts', () => {
    const ob = loadBenchmark('olympiadbench');
    expect(ob.filter((p) => p.metadata.orderInsensitive === true).length).toBe(94);
    const tol = ob.filter((p) => p.metadata.tolerance !== null);
    expect(tol.length).toBe(1);
    expect(gradeOptionsFor(benchmarkSpec('olympiadbench'), tol[0]!).absTolerance).toBe(0.1);
    const math = loadBenchmark('math500');
    const sets = math.filter((p) => p.metadata.orderInsensitive === true).map((p) => p.answer);
    expect(sets).toContain('1,-2');
    expect(gradeOptionsFor(benchmarkSpec('gsm8k'), loadBenchmark('gsm8k')[0]!).gsm8kFallback).toBe(true);
  });
  it('loads GSM8K train for SFT', () => {
    const train = loadGsm8kTrain();
    expect(train.length).toBe(7473);
    expect(train.every((p) => /^-?\d+(\.\d+)?$/.test(p.answer))).toBe(true);
  });
  it('rejects an unknown name listing the valid ones', () => {
    expect(() => loadBenchmark('aime26')).toThrow(/unknown benchmark "aime26"; valid names: math500, aime24/);
  });
});
