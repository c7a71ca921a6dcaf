/**
 * `m1 grade`: grade (response, reference) pairs without a model.
 *
 *   m1 grade --input FILE.jsonl [--output FILE]   one JSON line out per line in, in order
 *   m1 grade --response R --reference A [--benchmark B]
 *
 * Input lines: {"response": "...", "reference": "...", "benchmark"?: "..."}. A malformed line is
 * reported on stderr with its line number and gets {"correct": false, "extracted": null,
 * "reason": "error: ..."}; the other lines are still graded and the exit code is 1 at the end.
 * An output file is written to a temporary name and renamed, so a crash never leaves half a file.
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { gradeAnswer, type GradeOptions, type GradeResult } from '../../eval/grader/grade.js';
import { benchmarkSpec } from '../../eval/datasets.js';

export interface GradeFileSummary {
  lines: number;
  correct: number;
  errors: number;
}

/** grading options for an optional benchmark name (throws on an unknown name) */
export function optionsForBenchmark(name: string | undefined): GradeOptions {
  if (name === undefined) return {};
  const spec = benchmarkSpec(name);
  // without the problem we cannot know OlympiadBench's per-row is_multiple_answer; its official
  // judge pairs top-level list items in any order, so do the same
  return spec.name === 'olympiadbench' ? { ...spec.grade, orderInsensitive: true } : { ...spec.grade };
}

/** grade one input line; throws Error with a message naming the field on bad input */
export function gradeLine(line: string): GradeResult {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    throw new Error(`invalid JSON (${(e as Error).message})`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error('expected a JSON object');
  const rec = obj as Record<string, unknown>;
  if (typeof rec.response !== 'string') throw new Error('field "response" missing or not a string');
  let reference = rec.reference;
  if (typeof reference === 'number') reference = String(reference);
  if (typeof reference !== 'string') throw new Error('field "reference" missing or not a string');
  if (rec.benchmark !== undefined && typeof rec.benchmark !== 'string') throw new Error('field "benchmark" must be a string');
  return gradeAnswer(rec.response, reference, optionsForBenchmark(rec.benchmark as string | undefined));
}

/**
 * Grade every line of `inPath`; write JSONL to `outPath` (temp file + rename) or to `out`
 * (stdout by default). Errors for bad lines go to `err` (stderr by default).
 */
export function gradeFile(
  inPath: string,
  outPath?: string,
  io: { out?: (s: string) => void; err?: (s: string) => void } = {},
): GradeFileSummary {
  const err = io.err ?? ((s: string) => process.stderr.write(s));
  const text = fs.readFileSync(inPath, 'utf8');
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop(); // trailing newline
  const results: string[] = [];
  const summary: GradeFileSummary = { lines: 0, correct: 0, errors: 0 };
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return; // blank lines carry no pair
    summary.lines++;
    let r: GradeResult;
    try {
      r = gradeLine(line);
    } catch (e) {
      summary.errors++;
      const msg = (e as Error).message;
      err(`${inPath}:${i + 1}: ${msg}\n`);
      r = { correct: false, extracted: null, reason: `error: ${msg}` };
    }
    if (r.correct) summary.correct++;
    results.push(JSON.stringify(r));
  });
  const body = results.map((l) => l + '\n').join('');
  if (outPath !== undefined) {
    const tmp = `${outPath}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, body);
    fs.renameSync(tmp, outPath);
  } else {
    (io.out ?? ((s: string) => process.stdout.write(s)))(body);
  }
  return summary;
}

interface GradeFlags {
  input?: string;
  output?: string;
  response?: string;
  reference?: string;
  benchmark?: string;
}

export function registerGrade(program: Command): void {
  program
    .command('grade')
    .description('grade model responses against reference answers (JSONL in, JSONL out)')
    .option('--input <file>', 'JSONL with {"response", "reference", "benchmark"?} per line')
    .option('--output <file>', 'write results here instead of stdout')
    .option('--response <text>', 'grade one response (with --reference)')
    .option('--reference <text>', 'the reference answer for --response')
    .option('--benchmark <name>', 'benchmark whose answer style to use (e.g. gsm8k, olympiadbench)')
    .action((flags: GradeFlags) => {
      if (flags.input !== undefined) {
        if (flags.response !== undefined || flags.reference !== undefined) {
          throw new Error('m1 grade: use either --input or --response/--reference, not both');
        }
        if (!fs.existsSync(flags.input)) throw new Error(`m1 grade: --input file not found: ${flags.input}`);
        const s = gradeFile(flags.input, flags.output);
        process.stderr.write(`graded ${s.lines} lines: ${s.correct} correct, ${s.errors} malformed\n`);
        if (s.errors > 0) process.exitCode = 1;
        return;
      }
      if (flags.response === undefined || flags.reference === undefined) {
        throw new Error('m1 grade: give --input FILE.jsonl, or both --response and --reference');
      }
      const r = gradeAnswer(flags.response, flags.reference, optionsForBenchmark(flags.benchmark));
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
