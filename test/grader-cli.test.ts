import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Command } from 'commander';
import { gradeFile, gradeLine, registerGrade } from '../src/cli/commands/grade.js';
import { shutdownCas } from '../src/eval/grader/index.js';

afterAll(() => shutdownCas());

describe('m1 grade', () => {
  it('grades a JSONL file in order, reports malformed lines and keeps going', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm1grade-'));
    const input = path.join(dir, 'in.jsonl');
    const output = path.join(dir, 'out.jsonl');
    fs.writeFileSync(
      input,
      [
        JSON.stringify({ response: '\\boxed{\\dfrac{1}{2}}', reference: '0.5' }),
        '{not json',
        JSON.stringify({ response: '\\boxed{\\text{west}}', reference: '\\text{east}' }),
        JSON.stringify({ reference: '1' }),
        JSON.stringify({ response: 'so #### 18', reference: '18', benchmark: 'gsm8k' }),
        JSON.stringify({ response: 'x', reference: '1', benchmark: 'nope' }),
        JSON.stringify({ response: '\\boxed{27}', reference: 27 }),
      ].join('\n') + '\n',
    );
    const errs: string[] = [];
    const s = gradeFile(input, output, { err: (m) => errs.push(m) });
    const out = fs.readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(out.length).toBe(7);
    expect(out.map((r) => r.correct)).toEqual([true, false, false, false, true, false, true]);
    expect(out[0]!.extracted).toBe('\\dfrac{1}{2}');
    expect(out[1]!.extracted).toBeNull();
    expect(String(out[1]!.reason)).toMatch(/^error: invalid JSON/);
    expect(String(out[3]!.reason)).toBe('error: field "response" missing or not a string');
    expect(String(out[5]!.reason)).toMatch(/unknown benchmark "nope"/);
    expect(s).toEqual({ lines: 7, correct: 3, errors: 3 });
    expect(errs.map((e) => e.split(': ')[0])).toEqual([`${input}:2`, `${input}:4`, `${input}:6`]);
    // written via a temp name: nothing else is left in the folder
    expect(fs.readdirSync(dir).sort()).toEqual(['in.jsonl', 'out.jsonl']);
  });

  it('writes to stdout when no output is given', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm1grade-'));
    const input = path.join(dir, 'in.jsonl');
    fs.writeFileSync(input, JSON.stringify({ response: '\\boxed{7}', reference: '007' }));
    let text = '';
    gradeFile(input, undefined, { out: (m) => (text += m) });
    expect(JSON.parse(text)).toEqual({ correct: true, extracted: '7', reason: 'equal: rational' });
  });

  it('grades one pair', () => {
    expect(gradeLine(JSON.stringify({ response: '\\boxed{(2,1)}', reference: '(1,2)' })).correct).toBe(false);
  });

  it('registers a grade command on a commander program', async () => {
    const program = new Command();
    program.exitOverride();
    registerGrade(program);
    const cmd = program.commands.find((c) => c.name() === 'grade');
    expect(cmd).toBeDefined();
    const writes: string[] = [];
    const orig = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((s: string) => (writes.push(s), true)) as typeof process.stdout.write;
    try {
      await program.parseAsync(['node', 'm1', 'grade', '--response', '\\boxed{\\frac{14}{3}}', '--reference', '14/3']);
    } finally {
      process.stdout.write = orig;
    }
    expect(JSON.parse(writes.join(''))).toEqual({ correct: true, extracted: '\\frac{14}{3}', reason: 'equal: rational' });
    await expect(program.parseAsync(['node', 'm1', 'grade', '--response', 'x'])).rejects.toThrow(/--reference/);
  });
});
