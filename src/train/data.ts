// Training data: JSONL records → chat template → token ids with an assistant-only loss mask → packed
// fixed-length rows with per-sample segments and positions → batches, walked by a resumable cursor.
import { parseJsonl } from '../util/jsonl.js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SeqInfo } from '../model/module.js';
import type { ChatMessage, Tokenizer } from '../model/tokenizer.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

/** the instruction M1 appends to every question, in training and evaluation (m1-spec §4) */
export const M1_PROMPT_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}";

export function withM1Suffix(problem: string): string {
  return `${problem.trim()} ${M1_PROMPT_SUFFIX}`;
}

export interface TrainingRecord {
  messages: ChatMessage[];
}

export interface RecordOptions {
  /** append M1_PROMPT_SUFFIX to problems of problem/solution and GSM8K records (default true) */
  suffix?: boolean;
}

/** a problem/solution pair as a user/assistant conversation */
export function problemToRecord(problem: string, solution: string, opts: RecordOptions = {}): TrainingRecord {
  const user = opts.suffix === false ? problem.trim() : withM1Suffix(problem);
  return { messages: [{ role: 'user', content: user }, { role: 'assistant', content: solution.trim() }] };
}

/**
 * A GSM8K worked answer as a solution: calculator annotations `<<48/2=24>>` dropped, the final
 * `#### N` line turned into `\boxed{N}` (thousands separators removed).
 */
export function gsm8kSolution(answer: string, where = 'GSM8K answer'): string {
  const m = /\n?####\s*(.+?)\s*$/.exec(answer);
  if (!m) throw new UserError(`${where}: "answer" has no final "#### N" line`);
  const body = answer.slice(0, m.index).replace(/<<[^>]*>>/g, '').trim();
  const boxed = `\\boxed{${m[1]!.replace(/,/g, '')}}`;
  return body ? `${body}\n${boxed}` : boxed;
}

const ROLES = new Set(['system', 'user', 'assistant']);

/**
 * One JSON record: `{"messages": [{role, content}, ...]}`, `{"problem", "solution"}` (MATH style) or
 * `{"question", "answer"}` with a `#### N` answer (GSM8K).
 */
export function recordFromJson(obj: unknown, where: string, opts: RecordOptions = {}): TrainingRecord {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new UserError(`${where}: expected a JSON object`);
  const o = obj as Record<string, unknown>;
  if ('messages' in o) {
    const ms = o['messages'];
    if (!Array.isArray(ms) || ms.length === 0) throw new UserError(`${where}: "messages" must be a non-empty array`);
    const messages = ms.map((m, i): ChatMessage => {
      const mm = m as Record<string, unknown> | null;
      if (typeof mm !== 'object' || mm === null || typeof mm['role'] !== 'string' || typeof mm['content'] !== 'string') {
        throw new UserError(`${where}: messages[${i}] must be {"role": string, "content": string}`);
      }
      if (!ROLES.has(mm['role'])) throw new UserError(`${where}: messages[${i}].role "${mm['role']}" is not system, user or assistant`);
      return { role: mm['role'], content: mm['content'] };
    });
    if (!messages.some((m) => m.role === 'assistant')) throw new UserError(`${where}: no assistant message to train on`);
    return { messages };
  }
  if ('problem' in o || 'solution' in o) {
    if (typeof o['problem'] !== 'string' || typeof o['solution'] !== 'string') throw new UserError(`${where}: "problem" and "solution" must both be strings`);
    return problemToRecord(o['problem'], o['solution'], opts);
  }
  if ('question' in o && 'answer' in o) {
    if (typeof o['question'] !== 'string' || typeof o['answer'] !== 'string') throw new UserError(`${where}: "question" and "answer" must both be strings`);
    return problemToRecord(o['question'], gsm8kSolution(o['answer'], where), opts);
  }
  throw new UserError(`${where}: a record needs "messages", "problem"+"solution", or "question"+"answer" (GSM8K); got keys ${Object.keys(o).join(', ') || '(none)'}`);
}

/** parse JSONL text; a malformed line is reported as `file:line` */
export function parseJsonlRecords(text: string, file: string, opts: RecordOptions = {}): TrainingRecord[] {
  return parseJsonl(text, file, (obj, where) => recordFromJson(obj, where, opts), 'records');
}

/** the package's data/ folder (GSM8K, MATH-style files) */
export function packageDataDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'data'))) return join(dir, 'data');
    const up = dirname(dir);
    if (up === dir) throw new UserError('no data/ folder found next to package.json');
    dir = up;
  }
}

/** `--data` value → file: a path, or `gsm8k` / `gsm8k-test` for the bundled GSM8K splits */
export function resolveDataFile(spec: string): string {
  if (spec === 'gsm8k' || spec === 'gsm8k-train') return join(packageDataDir(), 'gsm8k_train.jsonl');
  if (spec === 'gsm8k-test') return join(packageDataDir(), 'gsm8k_test.jsonl');
  if (!existsSync(spec) || !statSync(spec).isFile()) throw new UserError(`--data ${spec}: no such file (give a JSONL file, or gsm8k)`);
  return spec;
}

export function loadTrainingFile(spec: string, opts: RecordOptions = {}): TrainingRecord[] {
  const file = resolveDataFile(spec);
  return parseJsonlRecords(readFileSync(file, 'utf8'), file, opts);
}

// ---------------------------------------------------------------------------------------------
// Tokenization with the loss mask

export interface TokenizedSample {
  /** the whole conversation rendered with the chat template */
  ids: Int32Array;
  /** 1 where the token is a training label (predicted from the tokens before it) */
  labels: Uint8Array;
}

export type LossOn = 'assistant' | 'all';

/**
 * M1's assistant-only mask (sft/tokenized_dataset.py): labels are the tokens after each
 * `<|start_header_id|>assistant<|end_header_id|>\n\n` up to and including the next `<|eot_id|>`.
 */
export function assistantLabels(ids: ArrayLike<number>, startPattern: readonly number[], endId: number): Uint8Array {
  const labels = new Uint8Array(ids.length);
  const P = startPattern.length;
  let i = 0;
  while (i < ids.length) {
    let match = P > 0 && i + P <= ids.length;
    for (let k = 0; match && k < P; k++) if (ids[i + k] !== startPattern[k]) match = false;
    if (!match) {
      i++;
      continue;
    }
    let j = i + P;
    for (; j < ids.length; j++) {
      labels[j] = 1;
      if (ids[j] === endId) break;
    }
    i = j + 1;
  }
  return labels;
}

export class SampleTokenizer {
  readonly startPattern: number[];
  readonly endId: number;
  readonly padId: number;

  constructor(readonly tok: Tokenizer, readonly lossOn: LossOn = 'assistant') {
    const end = tok.tokenToId('<|eot_id|>') ?? tok.eosTokenId;
    if (end === null) throw new UserError('tokenizer has neither <|eot_id|> nor an eos token: cannot mark the end of an assistant turn');
    this.endId = end;
    this.padId = tok.tokenToId('<|finetune_right_pad_id|>') ?? tok.padTokenId ?? end;
    this.startPattern = tok.encode('<|start_header_id|>assistant<|end_header_id|>\n\n');
  }

  encode(rec: TrainingRecord, where = 'record'): TokenizedSample {
    const ids = Int32Array.from(this.tok.encodeChat(rec.messages));
    let labels: Uint8Array;
    if (this.lossOn === 'all') labels = new Uint8Array(ids.length).fill(1);
    else {
      labels = assistantLabels(ids, this.startPattern, this.endId);
      if (!labels.includes(1)) throw new UserError(`${where}: the rendered conversation has no assistant turn (header pattern ${this.startPattern.join(',')} not found)`);
    }
    labels[0] = 0; // nothing predicts the first token of a sample
    return { ids, labels };
  }
}

// ---------------------------------------------------------------------------------------------
// Packing

export interface PackOptions {
  /** tokens per row */
  seqLen: number;
  /**
   * reset attention, conv/scan state and positions at sample boundaries (default true). false = M1's
   * SFT: positions run on across the row and samples see each other.
   */
  boundaries: boolean;
  padId: number;
}

export interface PackedRow {
  /** [T] input ids */
  ids: Int32Array;
  /** [T] next-token targets (the pad id where there is none) */
  targets: Int32Array;
  /** [T] 1 where targets[t] is a label */
  mask: Uint8Array;
  positions: Int32Array;
  segments: Int32Array;
  /** tokens that are not padding */
  tokens: number;
}

/**
 * Greedy in-order packing: samples go into the current row while they fit, else start the next row;
 * a sample longer than seqLen is cut to seqLen. Position t predicts token t+1 of the row; the mask
 * comes from that token's label, so a target is never a token of the next sample (whose first token
 * is never a label).
 */
export function packSamples(samples: readonly TokenizedSample[], o: PackOptions): { rows: PackedRow[]; truncated: number } {
  if (!Number.isInteger(o.seqLen) || o.seqLen < 2) throw new UserError(`--seq-len must be an integer ≥ 2, got ${o.seqLen}`);
  const T = o.seqLen;
  const rows: PackedRow[] = [];
  let truncated = 0;
  let cur: TokenizedSample[] = [];
  let used = 0;
  const flush = (): void => {
    if (cur.length === 0) return;
    const ids = new Int32Array(T).fill(o.padId), labels = new Uint8Array(T);
    const positions = new Int32Array(T), segments = new Int32Array(T);
    let at = 0;
    cur.forEach((s, seg) => {
      ids.set(s.ids, at);
      labels.set(s.labels, at);
      for (let k = 0; k < s.ids.length; k++) {
        positions[at + k] = o.boundaries ? k : at + k;
        segments[at + k] = o.boundaries ? seg : 0;
      }
      at += s.ids.length;
    });
    for (let k = at; k < T; k++) {
      // padding: its own segment with fresh positions, or running on without boundaries
      positions[k] = o.boundaries ? k - at : k;
      segments[k] = o.boundaries ? cur.length : 0;
    }
    const targets = new Int32Array(T).fill(o.padId), mask = new Uint8Array(T);
    for (let t = 0; t + 1 < T; t++) {
      targets[t] = ids[t + 1]!;
      mask[t] = labels[t + 1]!;
    }
    rows.push({ ids, targets, mask, positions, segments, tokens: at });
    cur = [];
    used = 0;
  };
  for (let s of samples) {
    if (s.ids.length > T) {
      s = { ids: s.ids.subarray(0, T), labels: s.labels.subarray(0, T) };
      truncated++;
    }
    if (used + s.ids.length > T) flush();
    cur.push(s);
    used += s.ids.length;
  }
  flush();
  return { rows, truncated };
}

// ---------------------------------------------------------------------------------------------
// Batches and the data cursor

/** where the next row is read from: row `index` of epoch `epoch`'s order */
export interface DataCursor {
  epoch: number;
  index: number;
}

export interface Batch {
  B: number;
  T: number;
  /** [B*T] */
  ids: Int32Array;
  targets: Int32Array;
  mask: Uint8Array;
  seq: SeqInfo;
  /** non-padding tokens */
  tokens: number;
  /** tokens with mask ≠ 0 */
  labelTokens: number;
}

export interface DatasetOptions extends PackOptions {
  seed: number;
  /** shuffle samples each epoch (default true) */
  shuffle?: boolean;
}

/** deterministic Fisher–Yates permutation of 0..n-1 for (seed, epoch) */
export function epochPermutation(n: number, seed: number, epoch: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = new Rng((seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/**
 * Samples, shuffled per epoch with the seed and packed into rows; batches of B rows run across epoch
 * ends. The rows of an epoch depend only on (samples, options, epoch), so a cursor is all a
 * checkpoint needs to continue exactly where it stopped.
 */
export class PackedDataset {
  private cache: { epoch: number; rows: PackedRow[] } | null = null;
  readonly truncated: number;

  constructor(readonly samples: readonly TokenizedSample[], readonly opts: DatasetOptions) {
    if (samples.length === 0) throw new UserError('training data has no samples');
    const { rows, truncated } = packSamples(samples, opts);
    this.truncated = truncated;
    if (!rows.some((r) => r.mask.includes(1))) {
      throw new UserError(`no token carries a loss after packing into rows of ${opts.seqLen}${truncated ? ` (${truncated} samples were cut to --seq-len: raise it)` : ''}`);
    }
  }

  rowsOf(epoch: number): PackedRow[] {
    if (this.cache?.epoch === epoch) return this.cache.rows;
    const order = this.opts.shuffle === false ? null : epochPermutation(this.samples.length, this.opts.seed, epoch);
    const ordered = order ? Array.from(order, (i) => this.samples[i]!) : this.samples;
    const rows = packSamples(ordered, this.opts).rows;
    this.cache = { epoch, rows };
    return rows;
  }

  /** rows in one epoch (of epoch 0; shuffling may change it by a row or so) */
  get rowsPerEpoch(): number {
    return this.rowsOf(0).length;
  }

  /** the next B rows from `cursor`, and the cursor after them */
  nextBatch(cursor: DataCursor, B: number): { batch: Batch; next: DataCursor } {
    const T = this.opts.seqLen;
    const ids = new Int32Array(B * T), targets = new Int32Array(B * T), mask = new Uint8Array(B * T);
    const positions = new Int32Array(B * T), segments = new Int32Array(B * T);
    let { epoch, index } = cursor;
    let tokens = 0, labelTokens = 0;
    for (let b = 0; b < B; b++) {
      let rows = this.rowsOf(epoch);
      if (index >= rows.length) {
        epoch++;
        index = 0;
        rows = this.rowsOf(epoch);
      }
      const r = rows[index++]!;
      ids.set(r.ids, b * T);
      targets.set(r.targets, b * T);
      mask.set(r.mask, b * T);
      positions.set(r.positions, b * T);
      // segment ids only need to differ within a row; offset per row keeps them distinct anyway
      for (let t = 0; t < T; t++) segments[b * T + t] = r.segments[t]! + b * T;
      tokens += r.tokens;
      for (let t = 0; t < T; t++) labelTokens += r.mask[t]!;
    }
    const seq: SeqInfo = this.opts.boundaries ? { B, T, positions, segments } : { B, T, positions };
    return { batch: { B, T, ids, targets, mask, seq, tokens, labelTokens }, next: { epoch, index } };
  }
}
