/**
 * Benchmark loaders. Files live in `data/` at the package root (provenance: data/SOURCES.md).
 * Every benchmark becomes `BenchProblem[]`; its `BenchmarkSpec` says how answers are graded.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lastBox } from './grader/extract.js';
import type { GradeOptions } from './grader/grade.js';

export type BenchmarkName = 'math500' | 'aime24' | 'aime25' | 'amc23' | 'amc23-83' | 'olympiadbench' | 'minerva' | 'gsm8k';

export interface BenchProblem {
  /** stable id within the benchmark (AIME24 ids are not problem order: see `metadata.url`) */
  id: string;
  problem: string;
  /** gold answer as LaTeX text (AIME24 keeps its zero padding: "025") */
  answer: string;
  metadata: Record<string, string | number | boolean | null>;
}

export interface BenchmarkSpec {
  name: BenchmarkName;
  /** file under data/ */
  file: string;
  /**
   * `integer`: every gold is an integer (AIME 0–999, AMC); `math`: free-form LaTeX;
   * `gsm8k`: integer, with the `#### N` / last-number fallback when there is no box.
   */
  answerStyle: 'integer' | 'math' | 'gsm8k';
  /** grading options for every problem of this benchmark */
  grade: GradeOptions;
  description: string;
}

export const BENCHMARKS: Readonly<Record<BenchmarkName, BenchmarkSpec>> = {
  math500: {
    name: 'math500',
    file: 'math500.jsonl',
    answerStyle: 'math',
    grade: {},
    description: 'MATH500 (PRM800K test split of MATH); lists are sets where the problem asks for answers "separated by commas"',
  },
  aime24: { name: 'aime24', file: 'aime24.jsonl', answerStyle: 'integer', grade: {}, description: 'AIME 2024 I+II (30)' },
  aime25: { name: 'aime25', file: 'aime25.jsonl', answerStyle: 'integer', grade: {}, description: 'AIME 2025 I+II (30, MathArena text)' },
  amc23: { name: 'amc23', file: 'amc23.jsonl', answerStyle: 'integer', grade: {}, description: 'AMC 12 2023 A+B (40)' },
  'amc23-83': {
    name: 'amc23-83',
    file: 'amc22-23_83.json',
    answerStyle: 'integer',
    grade: {},
    description: 'AMC 12 2022+2023 (83): the set the M1 paper and DeepScaleR report as "AMC23"',
  },
  olympiadbench: {
    name: 'olympiadbench',
    file: 'olympiadbench.jsonl',
    answerStyle: 'math',
    grade: {},
    description: 'OlympiadBench OE_TO_maths_en_COMP (675); is_multiple_answer rows are order-insensitive',
  },
  minerva: { name: 'minerva', file: 'minerva_math.jsonl', answerStyle: 'math', grade: {}, description: 'Minerva Math (272); gold = last \\boxed{} of the solution' },
  gsm8k: { name: 'gsm8k', file: 'gsm8k_test.jsonl', answerStyle: 'gsm8k', grade: { gsm8kFallback: true }, description: 'GSM8K test (1319)' },
};

export const BENCHMARK_NAMES = Object.keys(BENCHMARKS) as BenchmarkName[];

/** the package root: the nearest folder above this file that holds package.json (src/ or dist/src/) */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'data'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`datasets: no package root with data/ above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export function dataDir(): string {
  return path.join(packageRoot(), 'data');
}

export function benchmarkSpec(name: string): BenchmarkSpec {
  const spec = (BENCHMARKS as Record<string, BenchmarkSpec | undefined>)[name];
  if (spec === undefined) throw new Error(`unknown benchmark "${name}"; valid names: ${BENCHMARK_NAMES.join(', ')}`);
  return spec;
}

/** grading options for one problem: the benchmark's, plus per-problem facts (sets, tolerance, unit) */
export function gradeOptionsFor(spec: BenchmarkSpec, problem: BenchProblem): GradeOptions {
  const opts: GradeOptions = { ...spec.grade };
  const m = problem.metadata;
  if (m.orderInsensitive === true) opts.orderInsensitive = true;
  if (typeof m.tolerance === 'number') opts.absTolerance = m.tolerance;
  if (typeof m.unit === 'string' && m.unit !== '') opts.unit = m.unit;
  return opts;
}

type Row = Record<string, unknown>;

function readRows(file: string): Row[] {
  const full = path.join(dataDir(), file);
  const text = fs.readFileSync(full, 'utf8');
  if (file.endsWith('.json')) {
    const parsed: unknown = JSON.parse(text);
    if (!Array.isArray(parsed)) throw new Error(`${full}: expected a JSON array`);
    return parsed as Row[];
  }
  return text
    .split('\n')
    .map((line, i) => ({ line: line.trim(), i }))
    .filter(({ line }) => line !== '')
    .map(({ line, i }) => {
      try {
        return JSON.parse(line) as Row;
      } catch (e) {
        throw new Error(`${full}:${i + 1}: invalid JSON (${(e as Error).message})`);
      }
    });
}

function str(row: Row, field: string, where: string): string {
  const v = row[field];
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  throw new Error(`${where}: field "${field}" missing or not a string`);
}

/** JSON floats that are integers (AMC `27.0`) become "27" */
function numberAnswer(v: unknown, where: string): string {
  if (typeof v === 'number') return String(v); // String(27.0) === '27'
  if (typeof v === 'string') return /^-?\d+\.0+$/.test(v) ? v.replace(/\.0+$/, '') : v;
  throw new Error(`${where}: field "answer" missing`);
}

const SEPARATED_BY_COMMAS = /separated by commas|separate (?:them|your answers) (?:with|by) commas|unordered set/i;

/** Load one benchmark by name (see BENCHMARK_NAMES). */
export function loadBenchmark(name: string): BenchProblem[] {
  const spec = benchmarkSpec(name);
  const rows = readRows(spec.file);
  const where = (i: number) => `${spec.file} row ${i + 1}`;
  switch (spec.name) {
    case 'math500':
      return rows.map((r, i) => {
        const problem = str(r, 'problem', where(i));
        return {
          id: str(r, 'unique_id', where(i)),
          problem,
          answer: str(r, 'answer', where(i)),
          metadata: {
            subject: str(r, 'subject', where(i)),
            level: Number(r.level),
            // MATH asks for several answers as "Enter all …, separated by commas": a set
            orderInsensitive: SEPARATED_BY_COMMAS.test(problem),
          },
        };
      });
    case 'aime24':
      return rows.map((r, i) => ({
        id: str(r, 'id', where(i)),
        problem: str(r, 'problem', where(i)),
        answer: str(r, 'answer', where(i)),
        metadata: { url: str(r, 'url', where(i)) },
      }));
    case 'aime25':
      return rows.map((r, i) => ({
        id: str(r, 'id', where(i)),
        problem: str(r, 'problem', where(i)),
        answer: numberAnswer(r.answer, where(i)),
        metadata: {},
      }));
    case 'amc23':
    case 'amc23-83':
      return rows.map((r, i) => {
        const url = str(r, 'url', where(i));
        const m = /(\d{4})_AMC_12([AB])_Problems\/Problem_(\d+)/.exec(url);
        return {
          id: m ? `${m[1]}-12${m[2]}-${m[3]}` : String(r.id ?? i),
          problem: str(r, 'problem', where(i)),
          answer: numberAnswer(r.answer, where(i)),
          metadata: { url },
        };
      });
    case 'olympiadbench':
      return rows.map((r, i) => {
        const fa = r.final_answer;
        if (!Array.isArray(fa) || fa.length !== 1 || typeof fa[0] !== 'string') {
          throw new Error(`${where(i)}: "final_answer" must be a list of one string`);
        }
        const err = r.error;
        const tolerance = typeof err === 'string' && err !== '' ? Number(err) : null;
        return {
          id: str(r, 'id', where(i)),
          problem: str(r, 'question', where(i)),
          answer: fa[0],
          metadata: {
            subfield: typeof r.subfield === 'string' ? r.subfield : null,
            answerType: typeof r.answer_type === 'string' ? r.answer_type : null,
            orderInsensitive: r.is_multiple_answer === true,
            unit: typeof r.unit === 'string' ? r.unit : null,
            tolerance: tolerance !== null && Number.isFinite(tolerance) ? tolerance : null,
          },
        };
      });
    case 'minerva':
      return rows.map((r, i) => {
        const solution = str(r, 'solution', where(i));
        const box = lastBox(solution);
        if (box === null || box.content === null) throw new Error(`${where(i)}: solution has no \\boxed{} answer`);
        return {
          id: str(r, 'idx', where(i)),
          problem: str(r, 'problem', where(i)),
          answer: box.content.trim(),
          metadata: { type: typeof r.type === 'string' ? r.type : null },
        };
      });
    case 'gsm8k':
      return rows.map((r, i) => gsm8kProblem(r, `gsm8k-test-${i}`, where(i)));
  }
}

function gsm8kProblem(r: Row, id: string, where: string): BenchProblem {
  const full = str(r, 'answer', where);
  const m = /####\s*(.+?)\s*$/.exec(full);
  if (!m) throw new Error(`${where}: "answer" has no "#### N" line`);
  return { id, problem: str(r, 'question', where), answer: m[1]!.replace(/,/g, ''), metadata: { solution: full } };
}

/** GSM8K train split (7473 problems), for SFT; `metadata.solution` is the worked solution */
export function loadGsm8kTrain(): BenchProblem[] {
  return readRows('gsm8k_train.jsonl').map((r, i) => gsm8kProblem(r, `gsm8k-train-${i}`, `gsm8k_train.jsonl row ${i + 1}`));
}
