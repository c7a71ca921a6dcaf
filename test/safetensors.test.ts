import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { bf16BitsToF32, f16BitsToF32, roundToDType } from '../src/backend/dtype.js';
import { SafetensorsReader, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { CheckpointError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

// Count the bytes the code under test reads, so that "reading one tensor reads only its bytes" is
// measured rather than assumed.
const io = vi.hoisted(() => ({ bytesRead: 0 }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const readSync = ((...args: Parameters<typeof real.readSync>) => {
    const n = real.readSync(...args);
    io.bytesRead += n;
    return n;
  }) as typeof real.readSync;
  return { ...real, readSync, default: { ...real, readSync } };
});

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'm1ts-safetensors-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let dirCounter = 0;
function freshDir(): string {
  const dir = path.join(root, `case-${dirCounter++}`);
  fs.mkdirSync(dir);
  return dir;
}

function randomValues(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.uniform() * 2 - 1) * 3;
  return a;
}

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** bit-for-bit equality; a loop, because toEqual on a million-element array takes seconds */
function expectSameBits(actual: Float32Array, expected: Float32Array): void {
  expect(actual.length).toBe(expected.length);
  const a = bitsOf(actual);
  const e = bitsOf(expected);
  let mismatches = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== e[i]) mismatches++;
  expect(mismatches).toBe(0);
}

/** a file in safetensors layout from a literal header (object or raw string) and data bytes */
function rawFile(file: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

function expectCheckpointError(fn: () => unknown, ...needles: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a CheckpointError').toBeInstanceOf(CheckpointError);
  const message = (caught as Error).message;
  for (const needle of needles) expect(message).toContain(needle);
}

function listDir(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

describe('round trip', () => {
  it('F32, BF16 and F16 come back bit-exact, with shapes, dtypes and metadata', () => {
    const dir = freshDir();
    const f32 = randomValues(6, 1);
    f32[0] = -0;
    f32[1] = 1e-40; // f32 subnormal
    const bf16 = randomValues(8, 2);
    bf16[0] = -Infinity;
    bf16[1] = 3.3895313892515355e38; // largest finite bf16
    roundToDType(bf16, 'bf16');
    const f16 = randomValues(6, 3);
    f16[0] = 2 ** -24; // smallest f16 subnormal
    f16[1] = 65504; // largest finite f16
    roundToDType(f16, 'f16');
    const { files, totalBytes } = writeSafetensors(
      dir,
      [
        { name: 'model.layers.0.w', dtype: 'F32', shape: [2, 3], data: f32 },
        { name: 'model.layers.0.b', dtype: 'BF16', shape: [8], data: bf16 },
        { name: 'lm_head.weight', dtype: 'F16', shape: [3, 2], data: () => f16 },
        { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      ],
      { metadata: { producer: 'test' } },
    );
    expect(files).toEqual([path.join(dir, 'model.safetensors')]);
    expect(totalBytes).toBe(6 * 4 + 8 * 2 + 6 * 2);

    const r = SafetensorsReader.open(dir);
    expect(r.files).toEqual(files);
    expect(r.metadata).toEqual({ format: 'pt', producer: 'test' });
    expect(r.names().sort()).toEqual(['empty', 'lm_head.weight', 'model.layers.0.b', 'model.layers.0.w']);
    expectSameBits(r.read('model.layers.0.w'), f32);
    expectSameBits(r.read('model.layers.0.b'), bf16);
    expectSameBits(r.read('lm_head.weight'), f16);
    expect(r.read('empty').length).toBe(0);

    const info = r.info('model.layers.0.b');
    expect(info).toMatchObject({ name: 'model.layers.0.b', dtype: 'BF16', shape: [8], file: files[0], byteLength: 16 });
    // offset is absolute: the same bytes are found at it in the file
    const fileBytes = fs.readFileSync(files[0]!);
    expect(fileBytes.subarray(info.offset, info.offset + info.byteLength)).toEqual(r.readRaw('model.layers.0.b'));
    expect(r.info('lm_head.weight')).toMatchObject({ dtype: 'F16', shape: [3, 2] });
    expect(r.has('missing')).toBe(false);
    expectCheckpointError(() => r.info('missing'), dir, '"missing"');
    r.close();
    expectCheckpointError(() => r.read('empty'), 'empty', 'closed');
  });

  it('f32 → BF16 rounds to nearest, ties to even; 1.0 is stored as 0x3F80 little-endian', () => {
    const dir = freshDir();
    // bf16 keeps the top 16 bits of an f32; with 7 mantissa bits the step at 1.0 is 2^-7
    const input = Float32Array.from([
      1.0, // exact: 0x3F80
      1 + 2 ** -8, // halfway between 0x3F80 and 0x3F81 → even 0x3F80
      1 + 3 * 2 ** -8, // halfway between 0x3F81 and 0x3F82 → even 0x3F82
      1 + 2 ** -8 + 2 ** -20, // just above halfway → 0x3F81
      1 + 2 ** -8 - 2 ** -20, // just below halfway → 0x3F80
      -2.5, // exact: 0xC020
    ]);
    writeSafetensors(dir, [{ name: 'x', dtype: 'BF16', shape: [6], data: input }]);
    const r = SafetensorsReader.open(dir);
    const raw = r.readRaw('x');
    expect([...raw.subarray(0, 2)]).toEqual([0x80, 0x3f]);
    const bits = Array.from({ length: 6 }, (_, i) => raw.readUInt16LE(2 * i));
    expect(bits).toEqual([0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x3f80, 0xc020]);
    expect(Array.from(r.read('x'))).toEqual([1, 1, 1 + 2 ** -6, 1 + 2 ** -7, 1, -2.5]);
    expect(bits.map(bf16BitsToF32)).toEqual([1, 1, 1 + 2 ** -6, 1 + 2 ** -7, 1, -2.5]);
    r.close();
  });

  it('f32 → F16 rounds to nearest, ties to even, and overflows to infinity', () => {
    const dir = freshDir();
    // f16 has 10 mantissa bits: the step at 1.0 is 2^-10
    const input = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65519, 65520, 1.0]);
    writeSafetensors(dir, [{ name: 'h', dtype: 'F16', shape: [5], data: input }]);
    const r = SafetensorsReader.open(dir);
    const raw = r.readRaw('h');
    const bits = Array.from({ length: 5 }, (_, i) => raw.readUInt16LE(2 * i));
    // 65520 is halfway between 65504 (max) and 65536 (not representable) → even → inf
    expect(bits).toEqual([0x3c00, 0x3c02, 0x7bff, 0x7c00, 0x3c00]);
    expect(Array.from(r.read('h'))).toEqual([1, 1 + 2 ** -9, 65504, Infinity, 1]);
    expect(f16BitsToF32(0x3c02)).toBe(1 + 2 ** -9);
    r.close();
  });

  it('keeps the given tensor order in the header and data, even for integer-like names', () => {
    const dir = freshDir();
    const names = ['b', '10', '0', 'a'];
    writeSafetensors(
      dir,
      names.map((name, i) => ({ name, dtype: 'F32' as const, shape: [1], data: Float32Array.of(i) })),
    );
    const bytes = fs.readFileSync(path.join(dir, 'model.safetensors'));
    const header = bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8');
    const positions = names.map((n) => header.indexOf(`"${n}":{`));
    expect(positions.every((p, i) => p > 0 && (i === 0 || p > positions[i - 1]!))).toBe(true);
    const r = SafetensorsReader.open(dir);
    expect(names.map((n) => r.info(n).offset)).toEqual([0, 4, 8, 12].map((o) => o + r.info('b').offset));
    expect(names.map((n) => r.read(n)[0])).toEqual([0, 1, 2, 3]);
    r.close();
  });
});

describe('PyTorch layout', () => {
  it('writes exactly the bytes safetensors writes for save_file(..., metadata={"format": "pt"})', () => {
    const dir = freshDir();
    writeSafetensors(dir, [{ name: 'test', dtype: 'F32', shape: [2, 2], data: Float32Array.of(1, 2, -0.5, 0) }]);
    const bytes = fs.readFileSync(path.join(dir, 'model.safetensors'));
    const json = '{"__metadata__":{"format":"pt"},"test":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}';
    // 91 bytes of JSON padded with 5 spaces to 96 = 0x60, as the Rust serializer pads to 8
    const expected = Buffer.concat([
      Buffer.from([0x60, 0, 0, 0, 0, 0, 0, 0]),
      Buffer.from(json + '     ', 'utf8'),
      Buffer.from([0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0, 0xbf, 0, 0, 0, 0]),
    ]);
    expect(bytes).toEqual(expected);
  });

  it('reads the byte vector from the safetensors torch test suite (header padded to 64 = "@")', () => {
    const dir = freshDir();
    // test_serialization in bindings/python/tests: {"test": zeros((2, 2), int32)}, here as F32 values
    const header = '{"test":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}    ';
    const file = path.join(dir, 'torch.safetensors');
    fs.writeFileSync(
      file,
      Buffer.concat([Buffer.from('@\0\0\0\0\0\0\0', 'latin1'), Buffer.from(header), Buffer.from(Float32Array.of(0, 1, 2, 3).buffer)]),
    );
    const r = SafetensorsReader.open(file);
    expect(r.info('test')).toMatchObject({ offset: 72, byteLength: 16, shape: [2, 2] });
    expect(Array.from(r.read('test'))).toEqual([0, 1, 2, 3]);
    expect(r.metadata).toEqual({});
    r.close();
    // the original I32 vector is a valid file, but not a weight this reader accepts
    fs.writeFileSync(file, fs.readFileSync(file).toString('latin1').replace('F32', 'I32'), 'latin1');
    expectCheckpointError(() => SafetensorsReader.open(file), file, '"test"', 'I32');
  });

  it('starts the data section 8-aligned whatever the header length', () => {
    for (let len = 1; len <= 9; len++) {
      const dir = freshDir();
      writeSafetensors(dir, [{ name: 'w'.repeat(len), dtype: 'BF16', shape: [3], data: Float32Array.of(1, 2, 3) }]);
      const bytes = fs.readFileSync(path.join(dir, 'model.safetensors'));
      const n = Number(bytes.readBigUInt64LE(0));
      expect(n % 8).toBe(0);
      expect(bytes.length).toBe(8 + n + 6);
      const json = bytes.subarray(8, 8 + n).toString('utf8');
      expect(json.trimEnd().endsWith('}')).toBe(true);
      expect(json.length - json.trimEnd().length).toBeLessThan(8);
    }
  });
});

describe('sharding', () => {
  it('splits at maxShardBytes, writes an HF index, and reads all shards back', () => {
    const dir = freshDir();
    const sizes = [16, 16, 16, 64, 16, 8]; // f32 elements: 64, 64, 64, 256 (alone, over the limit), 64, 32 bytes
    const tensors = sizes.map((n, i) => ({ name: `t${i}`, dtype: 'F32' as const, shape: [n], data: randomValues(n, 10 + i) }));
    const { files, totalBytes } = writeSafetensors(dir, tensors, { maxShardBytes: 150, metadata: { step: '7' } });
    const shardNames = [1, 2, 3, 4].map((i) => `model-0000${i}-of-00004.safetensors`);
    expect(files).toEqual(shardNames.map((n) => path.join(dir, n)));
    expect(totalBytes).toBe(4 * sizes.reduce((a, b) => a + b, 0));
    expect(listDir(dir)).toEqual([...shardNames, 'model.safetensors.index.json']);

    const indexText = fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8');
    const index = JSON.parse(indexText) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(index.metadata.total_size).toBe(totalBytes);
    expect(index.weight_map).toEqual({
      t0: shardNames[0], t1: shardNames[0], t2: shardNames[1], t3: shardNames[2], t4: shardNames[3], t5: shardNames[3],
    });
    // transformers writes json.dumps(index, indent=2, sort_keys=True) + "\n"
    expect(indexText).toBe(JSON.stringify({ metadata: index.metadata, weight_map: index.weight_map }, null, 2) + '\n');

    const r = SafetensorsReader.open(dir);
    expect(r.files).toEqual(files);
    expect(r.metadata).toEqual({ format: 'pt', step: '7' });
    expect(r.names()).toEqual(tensors.map((t) => t.name));
    for (const t of tensors) expectSameBits(r.read(t.name), t.data);
    expect(r.info('t3').file).toBe(files[2]);
    r.close();
    // opening the index file itself works the same
    const viaIndex = SafetensorsReader.open(path.join(dir, 'model.safetensors.index.json'));
    expect(viaIndex.names().length).toBe(6);
    viaIndex.close();
  });

  it('calls every lazy producer exactly once, in order, one tensor at a time', () => {
    const dir = freshDir();
    const calls: string[] = [];
    const tensors: TensorToWrite[] = ['a', 'b', 'c', 'd', 'e'].map((name, i) => ({
      name,
      dtype: 'BF16',
      shape: [4, 4],
      data: () => {
        calls.push(name);
        return Float32Array.from({ length: 16 }, (_, k) => i * 16 + k);
      },
    }));
    const { files } = writeSafetensors(dir, tensors, { maxShardBytes: 64 });
    expect(calls).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(files.length).toBe(3);
    const r = SafetensorsReader.open(dir);
    expect(Array.from(r.read('e'))).toEqual(Array.from({ length: 16 }, (_, k) => 64 + k));
    r.close();
    expect(calls.length).toBe(5); // reading does not call producers
  });
});

describe('reads by offset', () => {
  beforeEach(() => {
    io.bytesRead = 0;
  });

  it('reading a small tensor next to a big one reads only the small one’s bytes', () => {
    const dir = freshDir();
    const big = randomValues(1 << 20, 5); // 4 MiB
    const small = Float32Array.of(7, 8, 9);
    writeSafetensors(dir, [
      { name: 'big', dtype: 'F32', shape: [1024, 1024], data: big },
      { name: 'small', dtype: 'F32', shape: [3], data: small },
      { name: 'small16', dtype: 'BF16', shape: [3], data: small },
    ]);
    const r = SafetensorsReader.open(dir);
    const headerBytes = r.info('big').offset;
    expect(io.bytesRead).toBe(headerBytes); // open reads the length and the header only
    io.bytesRead = 0;
    expect(Array.from(r.read('small'))).toEqual([7, 8, 9]);
    expect(Array.from(r.read('small16'))).toEqual([7, 8, 9]);
    expect(io.bytesRead).toBe(12 + 6);
    io.bytesRead = 0;
    expectSameBits(r.read('big'), big);
    expect(io.bytesRead).toBe(4 << 20);
    r.close();
  });
});

describe('atomic writes', () => {
  it('writeFileAtomic replaces the content and leaves no temporary file', () => {
    const dir = freshDir();
    const file = path.join(dir, 'config.json');
    writeFileAtomic(file, '{"a": 1}');
    writeFileAtomic(file, Uint8Array.from([0x7b, 0x7d]));
    expect(fs.readFileSync(file, 'utf8')).toBe('{}');
    expect(listDir(dir)).toEqual(['config.json']);
  });

  it('leaves no *.tmp-* files, and a failing write leaves the previous checkpoint intact', () => {
    const dir = freshDir();
    const old = Float32Array.of(1, 2, 3, 4);
    writeSafetensors(dir, [{ name: 'w', dtype: 'F32', shape: [4], data: old }]);
    writeSafetensors(dir, [{ name: 'w', dtype: 'F32', shape: [4], data: old }], { maxShardBytes: 8 });
    expect(listDir(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);

    // a crash half-way through (the third tensor's producer throws after two were written)
    const tensors: TensorToWrite[] = [0, 1, 2, 3].map((i) => ({
      name: `n${i}`,
      dtype: 'F32',
      shape: [2],
      data: () => {
        if (i === 2) throw new Error('producer failed');
        return Float32Array.of(i, i);
      },
    }));
    const before = listDir(dir);
    expect(() => writeSafetensors(dir, tensors, { maxShardBytes: 8 })).toThrow('producer failed');
    expect(listDir(dir)).toEqual(before);
    const r = SafetensorsReader.open(dir);
    expect(r.names()).toEqual(['w']);
    expect(Array.from(r.read('w'))).toEqual([1, 2, 3, 4]);
    r.close();

    // a producer returning the wrong length is caught the same way
    const wrong: TensorToWrite = { name: 'bad', dtype: 'F32', shape: [3], data: () => new Float32Array(2) };
    expectCheckpointError(() => writeSafetensors(dir, [wrong]), '"bad"', '2 values');
    expect(listDir(dir)).toEqual(before);
  });
});

describe('stale files', () => {
  it('a new write removes checkpoint files of the earlier one, and nothing else', () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, 'config.json'), '{}');
    fs.writeFileSync(path.join(dir, 'model_notes.txt'), 'keep');
    const tensor = (name: string, v: number): TensorToWrite => ({ name, dtype: 'F32', shape: [4], data: new Float32Array(4).fill(v) });
    const three = ['a', 'b', 'c'].map((n) => tensor(n, 1));

    writeSafetensors(dir, three, { maxShardBytes: 16 });
    expect(listDir(dir)).toEqual([
      'config.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors',
      'model.safetensors.index.json', 'model_notes.txt',
    ]);

    writeSafetensors(dir, [tensor('x', 2)]);
    expect(listDir(dir)).toEqual(['config.json', 'model.safetensors', 'model_notes.txt']);
    let r = SafetensorsReader.open(dir);
    expect(r.names()).toEqual(['x']);
    r.close();

    writeSafetensors(dir, [tensor('p', 3), tensor('q', 4)], { maxShardBytes: 16 });
    expect(listDir(dir)).toEqual([
      'config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json',
      'model_notes.txt',
    ]);
    r = SafetensorsReader.open(dir);
    expect(r.names()).toEqual(['p', 'q']);
    expect(Array.from(r.read('q'))).toEqual([4, 4, 4, 4]);
    r.close();
  });
});

describe('corrupt single files', () => {
  const f32x2 = new Uint8Array(Float32Array.of(1, 2).buffer);
  const entry = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    dtype: 'F32', shape: [2], data_offsets: [0, 8], ...extra,
  });

  it('rejects a file shorter than 8 bytes', () => {
    const file = path.join(freshDir(), 'short.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3, 4, 5]));
    expectCheckpointError(() => SafetensorsReader.open(file), file, 'too short');
  });

  it('rejects a header length beyond the file or absurd', () => {
    const dir = freshDir();
    const beyond = rawFile(path.join(dir, 'beyond.safetensors'), { w: entry() }, f32x2, 1000n);
    expectCheckpointError(() => SafetensorsReader.open(beyond), beyond, '1000', 'past the end');
    const absurd = rawFile(path.join(dir, 'absurd.safetensors'), { w: entry() }, f32x2, 1n << 40n);
    expectCheckpointError(() => SafetensorsReader.open(absurd), absurd, 'absurd');
  });

  it('rejects a header that is not JSON or not an object', () => {
    const dir = freshDir();
    const notJson = rawFile(path.join(dir, 'a.safetensors'), '{"w": {"dtype": ', f32x2);
    expectCheckpointError(() => SafetensorsReader.open(notJson), notJson, 'JSON');
    const badUtf8 = path.join(dir, 'b.safetensors');
    rawFile(badUtf8, '{"w\xff": 1}', f32x2);
    const bytes = fs.readFileSync(badUtf8);
    bytes[8 + 3] = 0xff; // invalid UTF-8 lead byte inside the name
    fs.writeFileSync(badUtf8, bytes);
    expectCheckpointError(() => SafetensorsReader.open(badUtf8), badUtf8, 'UTF-8');
    for (const [name, header] of [['array', '[1, 2]'], ['null', 'null'], ['number', '42']] as const) {
      const file = rawFile(path.join(dir, `${name}.safetensors`), header, f32x2);
      expectCheckpointError(() => SafetensorsReader.open(file), file, 'not a JSON object');
    }
    const badMeta = rawFile(path.join(dir, 'meta.safetensors'), { __metadata__: { step: 3 }, w: entry() }, f32x2);
    expectCheckpointError(() => SafetensorsReader.open(badMeta), badMeta, '__metadata__', 'step');
  });

  it('rejects entries with missing or mistyped fields, naming the tensor', () => {
    const dir = freshDir();
    const cases: [string, unknown, string][] = [
      ['no-dtype', { shape: [2], data_offsets: [0, 8] }, '"dtype"'],
      ['no-shape', { dtype: 'F32', data_offsets: [0, 8] }, '"shape"'],
      ['no-offsets', { dtype: 'F32', shape: [2] }, '"data_offsets"'],
      ['dtype-number', entry({ dtype: 5 }), '"dtype"'],
      ['shape-string', entry({ shape: '2' }), '"shape"'],
      ['shape-negative', entry({ shape: [-2] }), '"shape"'],
      ['shape-fraction', entry({ shape: [2.5] }), '"shape"'],
      ['offsets-short', entry({ data_offsets: [0] }), '"data_offsets"'],
      ['offsets-reversed', entry({ data_offsets: [8, 0] }), '"data_offsets"'],
      ['offsets-strings', entry({ data_offsets: ['0', '8'] }), '"data_offsets"'],
      ['not-object', [1, 2], 'not an object'],
    ];
    for (const [tensor, value, needle] of cases) {
      const file = rawFile(path.join(dir, `${tensor}.safetensors`), { ok: entry(), [tensor]: value }, f32x2);
      expectCheckpointError(() => SafetensorsReader.open(file), file, `"${tensor}"`, needle);
    }
  });

  it('rejects unsupported dtypes by name', () => {
    const file = rawFile(path.join(freshDir(), 'ids.safetensors'), { position_ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, f32x2);
    expectCheckpointError(() => SafetensorsReader.open(file), file, '"position_ids"', 'I64', 'not supported');
  });

  it('rejects a byte length that does not match shape × element size', () => {
    const file = rawFile(path.join(freshDir(), 'len.safetensors'), { w: entry({ dtype: 'BF16' }) }, f32x2);
    expectCheckpointError(() => SafetensorsReader.open(file), file, '"w"', '8 bytes', 'needs 4');
  });

  it('rejects offsets beyond the data section (truncated file)', () => {
    const file = rawFile(path.join(freshDir(), 'trunc.safetensors'), { w: entry({ shape: [4], data_offsets: [0, 16] }) }, f32x2);
    expectCheckpointError(() => SafetensorsReader.open(file), file, '"w"', 'truncated');
  });

  it('rejects overlapping tensors and accepts gaps', () => {
    const dir = freshDir();
    const data = new Uint8Array(Float32Array.of(1, 2, 3, 4, 5, 6).buffer);
    const overlap = rawFile(path.join(dir, 'overlap.safetensors'), { a: entry(), b: entry({ data_offsets: [4, 12] }) }, data);
    expectCheckpointError(() => SafetensorsReader.open(overlap), overlap, '"a"', '"b"', 'overlaps');
    const gap = rawFile(path.join(dir, 'gap.safetensors'), { a: entry(), b: entry({ data_offsets: [16, 24] }) }, data);
    const r = SafetensorsReader.open(gap);
    expect(Array.from(r.read('a'))).toEqual([1, 2]);
    expect(Array.from(r.read('b'))).toEqual([5, 6]);
    r.close();
  });

  it('rejects a path that is missing or a directory without a checkpoint', () => {
    const dir = freshDir();
    expectCheckpointError(() => SafetensorsReader.open(path.join(dir, 'nope')), path.join(dir, 'nope'));
    expectCheckpointError(() => SafetensorsReader.open(dir), dir, 'model.safetensors');
  });
});

describe('corrupt sharded checkpoints', () => {
  /** two good shards (a, b in shard 1; c in shard 2) and their index */
  function shardedDir(): { dir: string; index: string; shard: (i: 1 | 2) => string } {
    const dir = freshDir();
    const t = (name: string): TensorToWrite => ({ name, dtype: 'F32', shape: [2], data: Float32Array.of(1, 2) });
    writeSafetensors(dir, [t('a'), t('b'), t('c')], { maxShardBytes: 16 });
    return {
      dir,
      index: path.join(dir, 'model.safetensors.index.json'),
      shard: (i) => path.join(dir, `model-0000${i}-of-00002.safetensors`),
    };
  }
  function rewriteIndex(index: string, weightMap: Record<string, string>): void {
    fs.writeFileSync(index, JSON.stringify({ metadata: { total_size: 24 }, weight_map: weightMap }));
  }
  const S1 = 'model-00001-of-00002.safetensors';
  const S2 = 'model-00002-of-00002.safetensors';

  it('the fixture itself is valid', () => {
    const { dir } = shardedDir();
    const r = SafetensorsReader.open(dir);
    expect(r.names()).toEqual(['a', 'b', 'c']);
    r.close();
  });

  it('rejects a missing shard file', () => {
    const { dir, index, shard } = shardedDir();
    fs.rmSync(shard(2));
    expectCheckpointError(() => SafetensorsReader.open(dir), index, shard(2), '"c"', 'does not exist');
  });

  it('rejects a tensor listed in weight_map but absent from its shard', () => {
    const { dir, index, shard } = shardedDir();
    rewriteIndex(index, { a: S1, b: S1, c: S2, ghost: S2 });
    expectCheckpointError(() => SafetensorsReader.open(dir), index, shard(2), '"ghost"', 'does not contain');
  });

  it('rejects a tensor stored in one shard but claimed by another', () => {
    const { dir, index, shard } = shardedDir();
    rewriteIndex(index, { a: S1, b: S2, c: S2 });
    expectCheckpointError(() => SafetensorsReader.open(dir), shard(1), '"b"', S2, index);
  });

  it('rejects a tensor stored in a shard but not listed in the index', () => {
    const { dir, index, shard } = shardedDir();
    rewriteIndex(index, { a: S1, c: S2 });
    expectCheckpointError(() => SafetensorsReader.open(dir), shard(1), '"b"', 'not listed');
  });

  it('rejects the same tensor name in two shards', () => {
    const { dir, shard } = shardedDir();
    const twice = rawFile(shard(2), { c: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8));
    expectCheckpointError(() => SafetensorsReader.open(dir), shard(1), twice, '"a"', 'twice');
  });

  it('rejects a corrupt index and shard names that leave the directory', () => {
    const { dir, index } = shardedDir();
    fs.writeFileSync(index, '{"weight_map": ');
    expectCheckpointError(() => SafetensorsReader.open(dir), index, 'JSON');
    fs.writeFileSync(index, '{"metadata": {}}');
    expectCheckpointError(() => SafetensorsReader.open(dir), index, 'weight_map');
    rewriteIndex(index, { a: S1, b: S1, c: '../elsewhere.safetensors' });
    expectCheckpointError(() => SafetensorsReader.open(dir), index, '"c"', 'not a file name');
  });

  it('a corrupt shard is reported with its own path', () => {
    const { dir, shard } = shardedDir();
    fs.truncateSync(shard(2), fs.statSync(shard(2)).size - 4);
    expectCheckpointError(() => SafetensorsReader.open(dir), shard(2), '"c"', 'truncated');
  });
});

describe('writer input validation', () => {
  it('rejects duplicate names, bad shapes, wrong data lengths and unknown dtypes before writing anything', () => {
    const dir = freshDir();
    const ok: TensorToWrite = { name: 'w', dtype: 'F32', shape: [2], data: Float32Array.of(1, 2) };
    expectCheckpointError(() => writeSafetensors(dir, [ok, ok]), dir, '"w"', 'twice');
    expectCheckpointError(() => writeSafetensors(dir, [{ ...ok, shape: [3] }]), dir, '"w"', '2 values');
    expectCheckpointError(() => writeSafetensors(dir, [{ ...ok, shape: [-2] }]), dir, '"w"', 'shape');
    expectCheckpointError(() => writeSafetensors(dir, [{ ...ok, dtype: 'I64' as 'F32' }]), dir, '"w"', 'I64');
    expectCheckpointError(() => writeSafetensors(dir, [{ ...ok, name: '__metadata__' }]), dir, '__metadata__');
    expectCheckpointError(() => writeSafetensors(dir, [ok], { maxShardBytes: 0 }), dir, 'maxShardBytes');
    expect(listDir(dir)).toEqual([]);
  });
});
