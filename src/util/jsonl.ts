import { UserError } from './errors.js';

/**
 * Parse JSONL text into records: blank lines are skipped, a malformed line is reported as
 * `file:line`, and `fromJson` gets each object with that same `file:line` to name in its own errors.
 */
export function parseJsonl<T>(text: string, file: string, fromJson: (obj: unknown, where: string) => T, what = 'records'): T[] {
  const out: T[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new UserError(`${file}:${i + 1}: invalid JSON (${(e as Error).message})`);
    }
    out.push(fromJson(obj, `${file}:${i + 1}`));
  });
  if (out.length === 0) throw new UserError(`${file}: no ${what}`);
  return out;
}
