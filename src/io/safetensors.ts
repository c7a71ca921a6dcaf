import * as fs from 'node:fs';
import * as path from 'node:path';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../backend/dtype.js';
import { CheckpointError } from '../util/errors.js';
import { type AtomicFile, fsyncDirectory, openAtomic, writeFileAtomic } from './atomic.js';

// safetensors, as the Hugging Face ecosystem writes it:
//   [u64 LE: N] [N bytes of UTF-8 JSON header, space-padded] [data section]
// The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]}, offsets relative
// to the start of the data section; an optional "__metadata__" entry maps strings to strings.
// Large checkpoints are split into shards `model-0000i-of-0000N.safetensors` tied together by
// `model.safetensors.index.json` = {"metadata": {"total_size": bytes}, "weight_map": {name: shard}}.
//
// The reader keeps one fd per file and reads a tensor's bytes by offset, so loading a 7 GB model
// never holds more than one tensor (plus a small conversion buffer) in memory.

export type StDType = 'F32' | 'BF16' | 'F16';

export interface TensorInfo {
  name: string;
  dtype: StDType;
  shape: number[];
  /** absolute path of the file holding the tensor */
  file: string;
  /** absolute byte offset of the first element in `file` */
  offset: number;
  byteLength: number;
}

export interface TensorToWrite {
  name: string;
  dtype: StDType;
  shape: number[];
  /** values in row-major order; a function is called exactly once, when the tensor is written */
  data: Float32Array | (() => Float32Array);
}

export interface WriteOptions {
  /** start a new shard before a file would exceed this many tensor bytes (default 5 GB, as HF) */
  maxShardBytes?: number;
  /** merged over {"format": "pt"} into every file's __metadata__ */
  metadata?: Record<string, string>;
}

export interface WriteResult {
  /** absolute paths of the .safetensors files written, in shard order (the index is not listed) */
  files: string[];
  /** sum of all tensors' data bytes (= the index's metadata.total_size) */
  totalBytes: number;
}

export const SINGLE_FILE_NAME = 'model.safetensors';
export const INDEX_FILE_NAME = 'model.safetensors.index.json';
/** HF's default max_shard_size "5GB" is decimal */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;
/** the Rust library's limit; a larger "header length" means the file is not safetensors at all */
const MAX_HEADER_BYTES = 100_000_000;
const ELEMENT_BYTES: Readonly<Record<StDType, number>> = { F32: 4, BF16: 2, F16: 2 };
/** 16-bit tensors are converted through a scratch buffer of this many elements (8 MiB) */
const CONVERT_CHUNK_ELEMENTS = 1 << 22;
/** one read/write syscall moves at most 2 GiB - 1 bytes on Linux; stay well inside */
const IO_PIECE_BYTES = 1 << 30;

// F32 data is read straight into a Float32Array's bytes and 16-bit data through a Uint16Array, which
// reinterpret the little-endian file bytes correctly only on a little-endian host (all Node targets
// that matter: x86-64, arm64).
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
function assertLittleEndianHost(): void {
  if (!HOST_IS_LITTLE_ENDIAN) throw new Error('safetensors I/O needs a little-endian host');
}

function isStDType(s: string): s is StDType {
  return s === 'F32' || s === 'BF16' || s === 'F16';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reading

interface ParsedFile {
  file: string;
  fd: number;
  metadata: Record<string, string>;
  /** in data-section order */
  tensors: TensorInfo[];
}

/** read exactly `length` bytes at `position` into `into[at..]`, or fail naming the tensor */
function readExactly(fd: number, into: Uint8Array, at: number, length: number, position: number, what: string): void {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, into, at + done, Math.min(length - done, IO_PIECE_BYTES), position + done);
    if (n === 0) throw new CheckpointError(`${what}: file ended ${length - done} bytes early (truncated?)`);
    done += n;
  }
}

function parseEntry(file: string, name: string, entry: unknown, dataBytes: number, dataStart: number): TensorInfo {
  const where = `${file}: tensor "${name}"`;
  if (!isPlainObject(entry)) throw new CheckpointError(`${where}: header entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (dtype === undefined) throw new CheckpointError(`${where}: header entry has no "dtype"`);
  if (shape === undefined) throw new CheckpointError(`${where}: header entry has no "shape"`);
  if (offsets === undefined) throw new CheckpointError(`${where}: header entry has no "data_offsets"`);
  if (typeof dtype !== 'string') throw new CheckpointError(`${where}: "dtype" must be a string, got ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new CheckpointError(`${where}: "shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
    throw new CheckpointError(`${where}: "data_offsets" must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`);
  }
  if (!isStDType(dtype)) {
    throw new CheckpointError(`${where}: dtype ${dtype} is not supported as a weight (only F32, BF16 and F16 are)`);
  }
  const [begin, end] = offsets as [number, number];
  const needed = elementCount(shape) * ELEMENT_BYTES[dtype];
  if (end - begin !== needed) {
    throw new CheckpointError(
      `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype} [${shape.join(', ')}] needs ${needed}`,
    );
  }
  if (end > dataBytes) {
    throw new CheckpointError(
      `${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataBytes} bytes): file truncated?`,
    );
  }
  return { name, dtype, shape: shape.slice(), file, offset: dataStart + begin, byteLength: needed };
}

/** open and validate one .safetensors file; the returned fd stays open */
function parseFile(file: string): ParsedFile {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new CheckpointError(`${file}: cannot open: ${(e as Error).message}`);
  }
  try {
    const fileBytes = fs.fstatSync(fd).size;
    if (fileBytes < 8) throw new CheckpointError(`${file}: ${fileBytes} bytes is too short for a safetensors file (8-byte header length missing)`);
    const lengthBytes = Buffer.alloc(8);
    readExactly(fd, lengthBytes, 0, 8, 0, file);
    const headerLength = lengthBytes.readBigUInt64LE(0);
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw new CheckpointError(`${file}: header length ${headerLength} is absurd (limit ${MAX_HEADER_BYTES}): not a safetensors file?`);
    }
    const headerBytes = Number(headerLength);
    if (8 + headerBytes > fileBytes) {
      throw new CheckpointError(`${file}: header length ${headerBytes} runs past the end of the file (${fileBytes} bytes): truncated?`);
    }
    const headerBuf = Buffer.alloc(headerBytes);
    readExactly(fd, headerBuf, 0, headerBytes, 8, file);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBuf));
    } catch (e) {
      throw new CheckpointError(`${file}: header is not valid UTF-8 JSON: ${(e as Error).message}`);
    }
    if (!isPlainObject(header)) throw new CheckpointError(`${file}: header is not a JSON object`);

    const dataStart = 8 + headerBytes;
    const dataBytes = fileBytes - dataStart;
    const metadata: Record<string, string> = {};
    const tensors: TensorInfo[] = [];
    for (const [name, entry] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (!isPlainObject(entry)) throw new CheckpointError(`${file}: "__metadata__" is not an object`);
        for (const [k, v] of Object.entries(entry)) {
          if (typeof v !== 'string') throw new CheckpointError(`${file}: "__metadata__" value of "${k}" is not a string`);
          metadata[k] = v;
        }
        continue;
      }
      tensors.push(parseEntry(file, name, entry, dataBytes, dataStart));
    }

    // Gaps between tensors are tolerated (some writers align), overlaps never are: two names sharing
    // bytes means the header was corrupted or hand-edited.
    tensors.sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
    let previous: TensorInfo | undefined;
    for (const t of tensors) {
      if (t.byteLength === 0) continue;
      if (previous !== undefined && t.offset < previous.offset + previous.byteLength) {
        const span = (x: TensorInfo): string => `[${x.offset - dataStart}, ${x.offset - dataStart + x.byteLength}]`;
        throw new CheckpointError(
          `${file}: tensor "${t.name}" ${span(t)} overlaps tensor "${previous.name}" ${span(previous)}`,
        );
      }
      previous = t;
    }
    return { file, fd, metadata, tensors };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

// All 65536 values of a 16-bit format, built once from dtype.ts: a table lookup widens several times
// faster than calling the bit-twiddling converter per element (f16 by ~10x), and is exact by construction.
const widenTables = new Map<StDType, Float32Array>();
function widenTable(dtype: 'BF16' | 'F16'): Float32Array {
  let table = widenTables.get(dtype);
  if (table === undefined) {
    const widen = dtype === 'BF16' ? bf16BitsToF32 : f16BitsToF32;
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = widen(h);
    widenTables.set(dtype, table);
  }
  return table;
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${file}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

/** parse and cross-check an index and its shards; every shard fd is closed again on failure */
function parseIndexed(indexFile: string): ParsedFile[] {
  const dir = path.dirname(indexFile);
  const index = readJson(indexFile);
  if (!isPlainObject(index) || !isPlainObject(index['weight_map'])) {
    throw new CheckpointError(`${indexFile}: expected an object with a "weight_map" object`);
  }
  // Map, not object: a tensor may legally be called "__proto__" or "0"
  const weightMap = new Map<string, string>();
  const firstTensorOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(index['weight_map'])) {
    if (typeof shard !== 'string' || shard === '' || shard === '.' || shard === '..' || /[/\\]/.test(shard)) {
      throw new CheckpointError(`${indexFile}: tensor "${name}" maps to ${JSON.stringify(shard)}, which is not a file name in ${dir}`);
    }
    weightMap.set(name, shard);
    if (!firstTensorOf.has(shard)) firstTensorOf.set(shard, name);
  }

  const parsed: ParsedFile[] = [];
  try {
    for (const shard of [...firstTensorOf.keys()].sort()) {
      const shardPath = path.join(dir, shard);
      if (!fs.existsSync(shardPath)) {
        throw new CheckpointError(`${indexFile}: shard ${shardPath} (holding tensor "${firstTensorOf.get(shard)}") does not exist`);
      }
      parsed.push(parseFile(shardPath));
    }
    const foundIn = new Map<string, string>();
    for (const p of parsed) {
      for (const t of p.tensors) {
        const other = foundIn.get(t.name);
        if (other !== undefined) throw new CheckpointError(`tensor "${t.name}" is stored twice: in ${other} and in ${p.file}`);
        foundIn.set(t.name, p.file);
      }
    }
    for (const p of parsed) {
      const base = path.basename(p.file);
      for (const t of p.tensors) {
        const claimed = weightMap.get(t.name);
        if (claimed === undefined) throw new CheckpointError(`${p.file}: tensor "${t.name}" is not listed in ${indexFile}`);
        if (claimed !== base) {
          throw new CheckpointError(`${p.file}: tensor "${t.name}" is stored here but ${indexFile} maps it to ${claimed}`);
        }
      }
    }
    for (const [name, shard] of weightMap) {
      if (!foundIn.has(name)) {
        throw new CheckpointError(`${indexFile}: tensor "${name}" is mapped to ${path.join(dir, shard)}, which does not contain it`);
      }
    }
  } catch (e) {
    for (const p of parsed) fs.closeSync(p.fd);
    throw e;
  }
  return parsed;
}

export class SafetensorsReader {
  /** absolute paths of the .safetensors files, in shard order */
  readonly files: string[];
  /** `__metadata__` of the file; for a sharded checkpoint, the shards' merged in shard order */
  readonly metadata: Record<string, string>;
  private readonly source: string;
  private readonly tensors: Map<string, TensorInfo>;
  private readonly fds: Map<string, number>;
  private closed = false;

  private constructor(source: string, parsed: ParsedFile[]) {
    this.source = source;
    this.files = parsed.map((p) => p.file);
    this.metadata = Object.assign({}, ...parsed.map((p) => p.metadata)) as Record<string, string>;
    this.tensors = new Map();
    this.fds = new Map();
    for (const p of parsed) {
      this.fds.set(p.file, p.fd);
      for (const t of p.tensors) this.tensors.set(t.name, t);
    }
  }

  /**
   * `p` is a directory (holding model.safetensors.index.json + shards, or model.safetensors; the index
   * wins when both exist, as in transformers), a .safetensors file, or an index file.
   */
  static open(p: string): SafetensorsReader {
    assertLittleEndianHost();
    const abs = path.resolve(p);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(abs);
    } catch {
      throw new CheckpointError(`${abs}: no such file or directory`);
    }
    if (stat.isDirectory()) {
      const indexFile = path.join(abs, INDEX_FILE_NAME);
      if (fs.existsSync(indexFile)) return new SafetensorsReader(abs, parseIndexed(indexFile));
      const single = path.join(abs, SINGLE_FILE_NAME);
      if (fs.existsSync(single)) return new SafetensorsReader(abs, [parseFile(single)]);
      throw new CheckpointError(`${abs}: neither ${SINGLE_FILE_NAME} nor ${INDEX_FILE_NAME} is in this directory`);
    }
    if (abs.endsWith('.index.json')) return new SafetensorsReader(abs, parseIndexed(abs));
    return new SafetensorsReader(abs, [parseFile(abs)]);
  }

  /** all tensor names, in storage order (file, then offset) so that reading them in turn is sequential */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) throw new CheckpointError(`${this.source}: no tensor named "${name}"`);
    return { ...t, shape: t.shape.slice() };
  }

  /** the tensor's values as f32 (bf16/f16 widened exactly); reads only this tensor's bytes */
  read(name: string): Float32Array {
    const t = this.info(name);
    const fd = this.fdOf(t);
    const where = `${t.file}: tensor "${name}"`;
    const n = t.byteLength / ELEMENT_BYTES[t.dtype];
    const out = new Float32Array(n);
    if (t.dtype === 'F32') {
      readExactly(fd, new Uint8Array(out.buffer), 0, t.byteLength, t.offset, where);
      return out;
    }
    // 16-bit: widen piece by piece so that the raw bytes never need a second whole-tensor buffer
    const widen = widenTable(t.dtype);
    const bits = new Uint16Array(Math.min(n, CONVERT_CHUNK_ELEMENTS));
    const bitsBytes = new Uint8Array(bits.buffer);
    for (let start = 0; start < n; start += bits.length) {
      const count = Math.min(bits.length, n - start);
      readExactly(fd, bitsBytes, 0, count * 2, t.offset + start * 2, where);
      for (let i = 0; i < count; i++) out[start + i] = widen[bits[i]!]!;
    }
    return out;
  }

  /** the tensor's bytes as stored (little-endian, row-major) */
  readRaw(name: string): Buffer {
    const t = this.info(name);
    const out = Buffer.alloc(t.byteLength);
    readExactly(this.fdOf(t), out, 0, t.byteLength, t.offset, `${t.file}: tensor "${name}"`);
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }

  private fdOf(t: TensorInfo): number {
    const fd = this.fds.get(t.file);
    if (this.closed || fd === undefined) throw new CheckpointError(`${t.file}: tensor "${t.name}": reader is closed`);
    return fd;
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

export function shardFileName(index1: number, count: number): string {
  const pad = (k: number): string => String(k).padStart(5, '0');
  return `model-${pad(index1)}-of-${pad(count)}.safetensors`;
}

/**
 * Greedy in-order packing, as huggingface_hub does: a tensor that would tip the current shard over
 * the limit starts a new one; a tensor larger than the limit gets a shard to itself.
 */
function planShards(sizes: readonly number[], maxShardBytes: number): number[][] {
  const shards: number[][] = [];
  let current: number[] = [];
  let currentBytes = 0;
  sizes.forEach((size, i) => {
    if (current.length > 0 && currentBytes + size > maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(i);
    currentBytes += size;
  });
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

/**
 * The header as the Rust library lays it out: compact JSON, "__metadata__" first, then the tensors in
 * data order with fields dtype, shape, data_offsets; space-padded so the data section starts 8-aligned.
 * Built by hand because JSON.stringify of an object would move integer-like tensor names ("0") first.
 */
function encodeHeader(tensors: readonly TensorToWrite[], sizes: readonly number[], metadata: Record<string, string>): Buffer {
  const parts = [`"__metadata__":${JSON.stringify(metadata)}`];
  let offset = 0;
  tensors.forEach((t, i) => {
    const end = offset + sizes[i]!;
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  });
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

/** append `values` to `file` encoded as `dtype` (f32 → 16-bit rounds to nearest even) */
function encodeData(file: AtomicFile, values: Float32Array, dtype: StDType): void {
  if (dtype === 'F32') {
    file.write(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return;
  }
  const narrow = dtype === 'BF16' ? f32ToBf16Bits : f32ToF16Bits;
  const bits = new Uint16Array(Math.min(values.length, CONVERT_CHUNK_ELEMENTS));
  const bitsBytes = new Uint8Array(bits.buffer);
  for (let start = 0; start < values.length; start += bits.length) {
    const count = Math.min(bits.length, values.length - start);
    for (let i = 0; i < count; i++) bits[i] = narrow(values[start + i]!);
    file.write(bitsBytes, 0, count * 2);
  }
}

function validateForWrite(dir: string, tensors: readonly TensorToWrite[], opts: WriteOptions): void {
  const seen = new Set<string>();
  for (const t of tensors) {
    const where = `${dir}: tensor "${t.name}"`;
    if (typeof t.name !== 'string' || t.name === '' || t.name === '__metadata__') {
      throw new CheckpointError(`${dir}: invalid tensor name ${JSON.stringify(t.name)}`);
    }
    if (seen.has(t.name)) throw new CheckpointError(`${where}: given twice`);
    seen.add(t.name);
    if (!isStDType(t.dtype)) throw new CheckpointError(`${where}: dtype ${String(t.dtype)} cannot be written (F32, BF16, F16 can)`);
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) {
      throw new CheckpointError(`${where}: shape must be non-negative integers, got ${JSON.stringify(t.shape)}`);
    }
    if (typeof t.data !== 'function' && t.data.length !== elementCount(t.shape)) {
      throw new CheckpointError(`${where}: ${t.data.length} values given for shape [${t.shape.join(', ')}]`);
    }
  }
  const max = opts.maxShardBytes;
  if (max !== undefined && !(Number.isFinite(max) && max > 0)) {
    throw new CheckpointError(`${dir}: maxShardBytes must be a positive number, got ${max}`);
  }
  for (const [k, v] of Object.entries(opts.metadata ?? {})) {
    if (typeof v !== 'string') throw new CheckpointError(`${dir}: metadata value of "${k}" must be a string`);
  }
}

/** HF writes the index with json.dumps(indent=2, sort_keys=True) plus a newline; match it */
function encodeIndex(totalBytes: number, weightMap: ReadonlyArray<readonly [string, string]>): string {
  const entries = [...weightMap].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const lines = entries.map(([name, file]) => `    ${JSON.stringify(name)}: ${JSON.stringify(file)}`);
  return `{\n  "metadata": {\n    "total_size": ${totalBytes}\n  },\n  "weight_map": {\n${lines.join(',\n')}\n  }\n}\n`;
}

const CHECKPOINT_FILE = /^model(-\d+-of-\d+)?\.safetensors$/;

/** delete checkpoint files of an earlier write that this write did not produce; the index goes first */
function removeStaleFiles(dir: string, produced: ReadonlySet<string>): void {
  const stale = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && (CHECKPOINT_FILE.test(e.name) || e.name === INDEX_FILE_NAME) && !produced.has(e.name))
    .map((e) => e.name);
  // Deleting the old index before its shards keeps every intermediate state loadable: the reader
  // falls back to the new model.safetensors instead of meeting an index whose shards are gone.
  stale.sort((a, b) => Number(b === INDEX_FILE_NAME) - Number(a === INDEX_FILE_NAME));
  for (const name of stale) fs.rmSync(path.join(dir, name), { force: true });
  if (stale.length > 0) fsyncDirectory(dir);
}

/**
 * Write `tensors` to `dir` as model.safetensors, or as HF-style shards + index when they exceed
 * `maxShardBytes`. Lazy tensors are produced, encoded and dropped one at a time, so a multi-GB model
 * streams through memory one tensor at a time.
 *
 * Crash safety: all shards are written under temporary names and renamed only once every one is
 * complete; the index is renamed last; files of an earlier checkpoint in `dir` are removed only
 * after that. Overwriting a sharded checkpoint that uses the same shard names leaves a window of
 * a few renames in which old and new shards coexist; callers that need more write into a fresh
 * directory and rename it.
 */
export function writeSafetensors(dir: string, tensors: TensorToWrite[], opts: WriteOptions = {}): WriteResult {
  assertLittleEndianHost();
  const absDir = path.resolve(dir);
  validateForWrite(absDir, tensors, opts);
  const sizes = tensors.map((t) => elementCount(t.shape) * ELEMENT_BYTES[t.dtype]);
  const totalBytes = sizes.reduce((a, b) => a + b, 0);
  const plan = planShards(sizes, opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  const fileNames = plan.length === 1 ? [SINGLE_FILE_NAME] : plan.map((_, i) => shardFileName(i + 1, plan.length));
  const metadata = { format: 'pt', ...opts.metadata };
  fs.mkdirSync(absDir, { recursive: true });

  const pending: AtomicFile[] = [];
  try {
    plan.forEach((members, s) => {
      const file = openAtomic(path.join(absDir, fileNames[s]!));
      pending.push(file);
      const group = members.map((i) => tensors[i]!);
      file.write(encodeHeader(group, members.map((i) => sizes[i]!), metadata));
      for (const t of group) {
        const values = typeof t.data === 'function' ? t.data() : t.data;
        if (!(values instanceof Float32Array) || values.length !== elementCount(t.shape)) {
          const got = values instanceof Float32Array ? `${values.length} values` : 'not a Float32Array';
          throw new CheckpointError(`${file.finalPath}: tensor "${t.name}": producer returned ${got} for shape [${t.shape.join(', ')}]`);
        }
        encodeData(file, values, t.dtype);
      }
      file.finish();
    });
    for (const file of pending) file.commit();
  } catch (e) {
    for (const file of pending) file.abort();
    throw e;
  }

  const produced = new Set(fileNames);
  if (plan.length > 1) {
    const weightMap = plan.flatMap((members, s) => members.map((i) => [tensors[i]!.name, fileNames[s]!] as const));
    writeFileAtomic(path.join(absDir, INDEX_FILE_NAME), encodeIndex(totalBytes, weightMap));
    produced.add(INDEX_FILE_NAME);
  } else {
    fsyncDirectory(absDir);
  }
  removeStaleFiles(absDir, produced);
  return { files: fileNames.map((n) => path.join(absDir, n)), totalBytes };
}
