import { SafetensorsReader, type StDType } from '../io/safetensors.js';
import { loadModelConfig } from './checkpoint.js';
import { layerKinds } from './model.js';

export interface ModelInfo {
  dir: string;
  arch: string;
  layers: number;
  layout: string;
  attentionLayers: number[];
  mixer: string;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  tiedEmbeddings: boolean;
  rope: string;
  mamba: Record<string, number> | null;
  parameters: number;
  tensors: number;
  dtypes: Partial<Record<StDType, number>>;
  bytes: number;
  files: string[];
}

export function inspectModel(dir: string): ModelInfo {
  const cfg = loadModelConfig(dir);
  const reader = SafetensorsReader.open(dir);
  try {
    const kinds = layerKinds(cfg);
    const dtypes: Partial<Record<StDType, number>> = {};
    let parameters = 0, bytes = 0;
    for (const n of reader.names()) {
      const t = reader.info(n);
      parameters += t.shape.reduce((a, b) => a * b, 1);
      bytes += t.byteLength;
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    }
    const l = cfg.llama;
    const m = cfg.mamba;
    const scaled = cfg.arch === 'llama' && l.ropeScaling;
    return {
      dir,
      arch: cfg.arch === 'llama' ? 'llama (transformer)' : `m1 hybrid (Mamba-${m!.version})`,
      layers: l.numLayers,
      layout: kinds.map((k) => (k === 'attention' ? 'A' : 'M')).join(''),
      attentionLayers: kinds.flatMap((k, i) => (k === 'attention' ? [i] : [])),
      mixer: cfg.arch === 'llama' ? 'GQA attention' : m!.version === 1 ? 'M1 Mamba-1 (selective scan, grouped B/C)' : 'Mamba-2 (SSD)',
      hidden: l.hiddenSize, heads: l.numHeads, kvHeads: l.numKvHeads, headDim: l.headDim, vocab: l.vocabSize,
      tiedEmbeddings: l.tieWordEmbeddings,
      rope: `θ ${l.ropeTheta}${scaled ? `, llama3 scaling ×${l.ropeScaling!.factor}` : cfg.arch === 'm1' ? ' (unscaled in the hybrid)' : ''}`,
      mamba: m ? (m.version === 1
        ? { d_inner: m.mamba1.dInner, d_xb: m.mamba1.dXb, d_state: m.mamba1.dState, dt_rank: m.mamba1.dtRank, d_conv: m.mamba1.dConv }
        : { d_inner: m.mamba2.dInner, d_xb: m.mamba2.dXb, d_state: m.mamba2.dState, heads: m.mamba2.nHeads, head_dim: m.mamba2.headDim, groups: m.mamba2.nGroups }) : null,
      parameters, tensors: reader.names().length, dtypes, bytes, files: reader.files,
    };
  } finally {
    reader.close();
  }
}

export function formatInspect(i: ModelInfo): string {
  const lines = [
    `model        ${i.dir}`,
    `architecture ${i.arch}`,
    `layers       ${i.layers}  layout ${i.layout}  (A attention, M Mamba)`,
    `mixer        ${i.mixer}`,
    `attention    ${i.heads} heads / ${i.kvHeads} kv heads × ${i.headDim}, RoPE ${i.rope}, layers ${i.attentionLayers.join(',') || '-'}`,
    `hidden       ${i.hidden}, vocabulary ${i.vocab}, embeddings ${i.tiedEmbeddings ? 'tied' : 'untied'}`,
  ];
  if (i.mamba) lines.push(`mamba        ${Object.entries(i.mamba).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  lines.push(
    `parameters   ${i.parameters.toLocaleString('en-US')} (${(i.parameters / 1e9).toFixed(3)} B) in ${i.tensors} tensors`,
    `dtypes       ${Object.entries(i.dtypes).map(([k, v]) => `${k} ×${v}`).join(', ')}`,
    `bytes        ${i.bytes.toLocaleString('en-US')} (${(i.bytes / 2 ** 30).toFixed(2)} GiB) in ${i.files.length} file(s)`,
  );
  return lines.join('\n');
}
