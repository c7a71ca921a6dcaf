import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { initModel, validateConfigs } from '../src/model/checkpoint.js';
import { plainSeqInfo } from '../src/model/module.js';
import { findPreset } from '../src/model/presets.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { tinyTokenizerFiles } from '../src/model/tiny-tokenizer.js';
import {
  assistantLabels, epochPermutation, gsm8kSolution, loadTrainingFile, M1_PROMPT_SUFFIX, packSamples, PackedDataset,
  parseJsonlRecords, SampleTokenizer, type TokenizedSample,
} from '../src/train/data.js';
import { maxAbsDiff } from './util/gradcheck.js';

const files = tinyTokenizerFiles();
const tok = Tokenizer.fromObjects(files.tokenizerJson, files.tokenizerConfig);
const EOT = 260, PAD = 261;

function sample(n: number, start: number): TokenizedSample {
  const ids = Int32Array.from({ length: n }, (_, i) => start + i);
  const labels = new Uint8Array(n);
  for (let i = Math.floor(n / 2); i < n; i++) labels[i] = 1;
  return { ids, labels };
}

describe('records', () => {
  it('GSM8K: annotations dropped, #### N → \\boxed{N}', () => {
    expect(gsm8kSolution('Natalia sold 48/2 = <<48/2=24>>24 clips.\nSo 48+24 = <<48+24=72>>72.\n#### 1,072'))
      .toBe('Natalia sold 48/2 = 24 clips.\nSo 48+24 = 72.\n\\boxed{1072}');
    expect(() => gsm8kSolution('no final line', 'f.jsonl:3')).toThrow(/f\.jsonl:3: "answer" has no final "#### N" line/);
  });

  it('loads the bundled GSM8K train split as user/assistant pairs with the M1 suffix', () => {
    const recs = loadTrainingFile('gsm8k');
    expect(recs.length).toBe(7473);
    const [user, assistant] = recs[0]!.messages;
    expect(user!.content.startsWith('Natalia sold clips')).toBe(true);
    expect(user!.content.endsWith(` ${M1_PROMPT_SUFFIX}`)).toBe(true);
    expect(assistant!.content.endsWith('\\boxed{72}')).toBe(true);
    expect(assistant!.content).not.toContain('<<');
  });

  it('parses messages and problem/solution lines; a bad line is named with its number', () => {
    const text = [
      JSON.stringify({ messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] }),
      '',
      JSON.stringify({ problem: 'What is 1+1?', solution: '\\boxed{2}' }),
    ].join('\n');
    const recs = parseJsonlRecords(text, 'x.jsonl', { suffix: false });
    expect(recs.length).toBe(2);
    expect(recs[1]!.messages).toEqual([{ role: 'user', content: 'What is 1+1?' }, { role: 'assistant', content: '\\boxed{2}' }]);
    expect(() => parseJsonlRecords(`${text}\n{"problem": 1`, 'x.jsonl')).toThrow(/^x\.jsonl:4: invalid JSON/);
    expect(() => parseJsonlRecords('{"messages": [{"role": "bot", "content": "x"}]}', 'y.jsonl')).toThrow(/y\.jsonl:1: messages\[0\]\.role "bot"/);
    expect(() => parseJsonlRecords('{"messages": [{"role": "user", "content": "x"}]}', 'y.jsonl')).toThrow(/y\.jsonl:1: no assistant message/);
    expect(() => parseJsonlRecords('{"problem": "p"}', 'z.jsonl')).toThrow(/z\.jsonl:1: "problem" and "solution" must both be strings/);
    expect(() => parseJsonlRecords('\n\n', 'e.jsonl')).toThrow(/e\.jsonl: no records/);
  });
});

describe('assistant-only loss mask', () => {
  it('labels the assistant turns through <|eot_id|>, nothing else', () => {
    const st = new SampleTokenizer(tok);
    const s = st.encode({
      messages: [
        { role: 'user', content: 'Hi 3+4' }, { role: 'assistant', content: '7. \\boxed{7}' },
        { role: 'user', content: 'and 1+1' }, { role: 'assistant', content: '\\boxed{2}' },
      ],
    });
    const labelled: number[][] = [];
    let cur: number[] = [];
    s.labels.forEach((l, i) => {
      if (l) cur.push(s.ids[i]!);
      else if (cur.length) { labelled.push(cur); cur = []; }
    });
    if (cur.length) labelled.push(cur);
    expect(labelled.map((ids) => tok.decode(ids))).toEqual(['7. \\boxed{7}<|eot_id|>', '\\boxed{2}<|eot_id|>']);
    expect(s.ids[0]).toBe(256); // <|begin_of_text|>
    const all = new SampleTokenizer(tok, 'all').encode({ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] });
    expect(all.labels[0]).toBe(0);
    expect(all.labels.subarray(1).every((l) => l === 1)).toBe(true);
  });

  it('assistantLabels: pattern at the very end and a turn without eot', () => {
    expect([...assistantLabels([1, 2, 9, 9, 5, 1, 2], [1, 2], 5)]).toEqual([0, 0, 1, 1, 1, 0, 0]);
    expect([...assistantLabels([7, 1, 2, 3], [1, 2], 5)]).toEqual([0, 0, 0, 1]);
  });
});

describe('packing', () => {
  const samples = [sample(4, 10), sample(3, 20), sample(6, 30), sample(12, 40)];

  it('with boundaries: positions restart, segments change, targets shift within the row', () => {
    const { rows, truncated } = packSamples(samples, { seqLen: 8, boundaries: true, padId: PAD });
    expect(truncated).toBe(1);
    expect(rows.length).toBe(3);
    const r0 = rows[0]!;
    expect([...r0.ids]).toEqual([10, 11, 12, 13, 20, 21, 22, PAD]);
    expect([...r0.positions]).toEqual([0, 1, 2, 3, 0, 1, 2, 0]);
    expect([...r0.segments]).toEqual([0, 0, 0, 0, 1, 1, 1, 2]);
    expect([...r0.targets]).toEqual([11, 12, 13, 20, 21, 22, PAD, PAD]);
    // labels of sample 1 are its tokens 2,3 (predicted at 1,2); sample 2's token 1,2 (predicted at 4,5)
    expect([...r0.mask]).toEqual([0, 1, 1, 0, 1, 1, 0, 0]);
    expect(r0.tokens).toBe(7);
    expect([...rows[2]!.ids]).toEqual([40, 41, 42, 43, 44, 45, 46, 47]); // cut to seqLen
  });

  it('without boundaries (M1 SFT): positions run on and segments are one id', () => {
    const { rows } = packSamples(samples, { seqLen: 8, boundaries: false, padId: PAD });
    expect([...rows[0]!.positions]).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect([...rows[0]!.segments]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    const ds = new PackedDataset(samples, { seqLen: 8, boundaries: false, padId: PAD, seed: 0 });
    expect(ds.nextBatch({ epoch: 0, index: 0 }, 2).batch.seq.segments).toBeUndefined();
  });

  it('a packed second sample sees exactly what it sees alone (Mamba, conv and attention reset)', () => {
    const be = new CpuBackend();
    const p = findPreset('m1', 'tiny');
    const model = initModel(be, validateConfigs({ ...p.config, num_hidden_layers: 2 }, { ...p.mambaConfig, n_layer: 2, attn_layers: [1] }), 3);
    const a = sample(5, 65), b = sample(6, 97);
    const { rows } = packSamples([a, b], { seqLen: 12, boundaries: true, padId: PAD });
    const ds = new PackedDataset([a, b], { seqLen: 12, boundaries: true, padId: PAD, seed: 0, shuffle: false });
    const { batch } = ds.nextBatch({ epoch: 0, index: 0 }, 1);
    expect([...batch.ids]).toEqual([...rows[0]!.ids]);
    const packed = be.read(model.forward(batch.ids, batch.seq).hidden);
    const alone = be.read(model.forward(b.ids, plainSeqInfo(1, 6)).hidden);
    const D = model.hiddenSize;
    expect(maxAbsDiff(packed.subarray(5 * D, 11 * D), alone)).toBeLessThan(1e-5);
    // and without boundaries it does not
    const { batch: nb } = new PackedDataset([a, b], { seqLen: 12, boundaries: false, padId: PAD, seed: 0, shuffle: false }).nextBatch({ epoch: 0, index: 0 }, 1);
    const mixed = be.read(model.forward(nb.ids, nb.seq).hidden);
    expect(maxAbsDiff(mixed.subarray(5 * D, 11 * D), alone)).toBeGreaterThan(1e-3);
  });

  it('refuses data where no token carries a loss', () => {
    const noLabels = [{ ids: Int32Array.from([1, 2, 3, 4]), labels: Uint8Array.from([0, 0, 0, 1]) }];
    expect(() => new PackedDataset(noLabels, { seqLen: 3, boundaries: true, padId: PAD, seed: 0 })).toThrow(/no token carries a loss .*1 samples were cut/);
  });
});

describe('shuffling and the data cursor', () => {
  const samples = Array.from({ length: 9 }, (_, i) => sample(3 + (i % 3), 10 * i));
  const opts = { seqLen: 8, boundaries: true, padId: PAD };

  it('permutations are deterministic in (seed, epoch) and differ across them', () => {
    expect([...epochPermutation(50, 1, 0)]).toEqual([...epochPermutation(50, 1, 0)]);
    expect([...epochPermutation(50, 1, 0)]).not.toEqual([...epochPermutation(50, 2, 0)]);
    expect([...epochPermutation(50, 1, 0)]).not.toEqual([...epochPermutation(50, 1, 1)]);
    expect([...epochPermutation(50, 1, 3)].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('batches run across epoch ends, and a saved cursor continues exactly', () => {
    const ds = new PackedDataset(samples, { ...opts, seed: 7 });
    const perEpoch = ds.rowsPerEpoch;
    let cursor = { epoch: 0, index: 0 };
    const seen: Int32Array[] = [];
    const cursors = [];
    for (let i = 0; i < 6; i++) {
      cursors.push(cursor);
      const r = ds.nextBatch(cursor, 2);
      seen.push(r.batch.ids);
      cursor = r.next;
    }
    expect(cursor.epoch).toBeGreaterThanOrEqual(Math.floor(12 / perEpoch) - 1);
    expect(cursor.epoch).toBeGreaterThan(0);
    // a fresh dataset object (a resumed process) from the 4th cursor gives the same batches
    const again = new PackedDataset(samples, { ...opts, seed: 7 });
    let c = cursors[3]!;
    for (let i = 3; i < 6; i++) {
      const r = again.nextBatch(c, 2);
      expect([...r.batch.ids]).toEqual([...seen[i]!]);
      c = r.next;
    }
    // every sample appears once per epoch
    const epoch0 = ds.rowsOf(0).flatMap((r) => [...r.ids].filter((x) => x !== PAD && x % 10 === 0));
    expect(epoch0.sort((x, y) => x - y)).toEqual(samples.map((s) => s.ids[0]!).sort((x, y) => x - y));
  });
});
