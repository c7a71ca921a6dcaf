import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { gradeAnswer, shutdownCas, type GradeOptions } from '../src/eval/grader/index.js';
import { benchmarkSpec } from '../src/eval/datasets.js';

interface GoldenRow {
  response: string;
  reference: string;
  expected: boolean;
  benchmark?: string;
  options?: GradeOptions;
  note: string;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const rows: GoldenRow[] = fs
  .readFileSync(path.join(here, 'golden', 'grader.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l) => JSON.parse(l) as GoldenRow);

afterAll(() => shutdownCas());

describe('golden grading table', () => {
  it('has ≥ 300 rows, ≥ 30 % of them expected false', () => {
    expect(rows.length).toBeGreaterThanOrEqual(300);
    expect(rows.filter((r) => !r.expected).length / rows.length).toBeGreaterThanOrEqual(0.3);
  });

  it('grades every row as expected', () => {
    const failures: string[] = [];
    let slowest = 0;
    for (const [i, row] of rows.entries()) {
      const opts: GradeOptions = { ...(row.benchmark ? benchmarkSpec(row.benchmark).grade : {}), ...(row.options ?? {}) };
      const t0 = performance.now();
      const r = gradeAnswer(row.response, row.reference, opts);
      slowest = Math.max(slowest, performance.now() - t0);
      if (r.correct !== row.expected) {
        failures.push(
          `#${i + 1} [${row.note}] expected ${row.expected}, got ${r.correct} (${r.reason}); ` +
            `extracted=${JSON.stringify(r.extracted)} reference=${JSON.stringify(row.reference)}`,
        );
      }
    }
    if (failures.length > 0) console.log(`${failures.length} golden failures:\n` + failures.join('\n'));
    expect(failures).toEqual([]);
    // every row finished inside the per-answer budget (5 s default) plus worker start-up
    expect(slowest).toBeLessThan(15_000);
  });
});

describe('time limit', () => {
  it('a CAS comparison that runs past its budget is cut off and counts as not equal', () => {
    // compute-engine sums this term by term: 38 s when measured without a budget
    const t0 = performance.now();
    const r = gradeAnswer('\\boxed{\\sum_{k=1}^{10^7} k^2}', '5', { casBudgetMs: 300 });
    const ms = performance.now() - t0;
    expect(r.correct).toBe(false);
    expect(r.reason).toContain('timeout');
    expect(ms).toBeLessThan(3_000);
    // the grader still works after a timeout (a fresh worker is started)
    expect(gradeAnswer('\\boxed{\\sqrt{117}}', '3\\sqrt{13}').correct).toBe(true);
  });

  it('refuses oversized inputs before calling the CAS', () => {
    const long = Array.from({ length: 200 }, (_, i) => `x^{${i}}`).join('+');
    const r = gradeAnswer(`\\boxed{${long}}`, `${long}+1`);
    expect(r.correct).toBe(false);
    expect(r.reason).toContain('cas-refused');
  });
});

describe('reasons', () => {
  it('says why', () => {
    expect(gradeAnswer('no box here', '5').reason).toBe('no answer: no-answer');
    expect(gradeAnswer('\\boxed{025}', '25').reason).toBe('equal: rational');
    expect(gradeAnswer('\\boxed{(1,2)}', '(2,1)').reason).toMatch(/^not equal: tuple/);
  });
  it('rejects non-string input with a clear message', () => {
    expect(() => gradeAnswer(5 as unknown as string, '5')).toThrow(/response must be a string/);
  });
});
