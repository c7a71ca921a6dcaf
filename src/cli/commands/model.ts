// m1 init | convert | logprobs | inspect
import type { Command } from 'commander';
import { createBackend, BACKEND_NAMES } from '../../backend/registry.js';
import { initWeights, loadModel, loadModelConfig, parseDType, validateConfigs, writeConfigs } from '../../model/checkpoint.js';
import { convertToHybrid, parseLayerList } from '../../model/convert.js';
import { inspectModel, formatInspect } from '../../model/inspect.js';
import { scoreLogprobs } from '../../model/logprobs.js';
import { findPreset, PRESETS } from '../../model/presets.js';
import { writeTokenizerFor } from '../../model/tokenizer-files.js';
import { Tokenizer } from '../../model/tokenizer.js';
import { UserError } from '../../util/errors.js';
import { idsFlag, intFlag } from '../options.js';
import { Progress } from '../progress.js';

export function registerModelCommands(program: Command): void {
  program
    .command('init')
    .description('write a model folder with random weights in the real Hugging Face / M1 layout')
    .requiredOption('--arch <arch>', 'llama (transformer) or m1 (hybrid)')
    .requiredOption('--preset <name>', `model shape: ${[...new Set(PRESETS.map((p) => `${p.arch}/${p.name}`))].join(', ')}`)
    .option('--seed <n>', 'random seed', intFlag('--seed', { min: 0 }), 0)
    .requiredOption('--out <dir>', 'output folder')
    .option('--dtype <dtype>', 'storage dtype f32 | bf16 | f16 (default: the preset\'s)')
    .option('--max-shard-bytes <n>', 'split weights into shards of at most this many bytes', intFlag('--max-shard-bytes', { min: 1 }))
    .action((o: { arch: string; preset: string; seed: number; out: string; dtype?: string; maxShardBytes?: number }) => {
      const preset = findPreset(o.arch, o.preset);
      const dtype = o.dtype ? parseDType(o.dtype) : preset.defaultDType;
      const cfg = validateConfigs(preset.config, preset.mambaConfig);
      writeConfigs(o.out, preset, dtype);
      writeTokenizerFor(o.out, preset.tokenizer);
      const n = cfg.llama.numLayers;
      const bar = new Progress(n + 2, 'init', 'tensors');
      let count = 0;
      const r = initWeights(o.out, cfg, o.seed, dtype, { maxShardBytes: o.maxShardBytes, onTensor: (k) => bar.update(++count, k) });
      bar.stop();
      console.log(`wrote ${o.out}: ${preset.arch}/${preset.name}, ${(r.params / 1e6).toFixed(2)} M parameters, ${dtype}, ${(r.totalBytes / 1e6).toFixed(1)} MB in ${r.files.length} file(s)`);
    });

  program
    .command('convert')
    .description('turn a Llama-family transformer into an M1 hybrid (x←v, B←k, C←q, out←o; kept attention layers as M1 MHA)')
    .requiredOption('--teacher <dir>', 'the transformer model folder')
    .requiredOption('--attn-layers <list>', 'comma-separated layers that stay attention, e.g. 3,8,13,18,23,27')
    .requiredOption('--out <dir>', 'output folder for the hybrid')
    .option('--mamba <version>', 'mixer kind: 1 (M1, Mamba-1, d_state 16) or 2 (MambaInLlama Mamba-2)', intFlag('--mamba', { min: 1, max: 2 }), 1)
    .option('--seed <n>', 'seed for the newly initialised parameters', intFlag('--seed', { min: 0 }), 0)
    .option('--max-shard-bytes <n>', 'split weights into shards of at most this many bytes', intFlag('--max-shard-bytes', { min: 1 }))
    .action((o: { teacher: string; attnLayers: string; out: string; mamba: number; seed: number; maxShardBytes?: number }) => {
      const teacher = loadModelConfig(o.teacher);
      const attnLayers = parseLayerList(o.attnLayers, teacher.llama.numLayers);
      const bar = new Progress(0, 'convert', 'tensors');
      let count = 0;
      const s = convertToHybrid(o.teacher, o.out, {
        attnLayers, version: o.mamba as 1 | 2, seed: o.seed, maxShardBytes: o.maxShardBytes, onTensor: (k) => bar.update(++count, k),
      });
      bar.stop();
      const layout = Array.from({ length: s.layers }, (_, i) => (s.attentionLayers.includes(i) ? 'A' : 'M')).join('');
      console.log(`converted ${o.teacher} → ${o.out} (Mamba-${s.version})`);
      console.log(`  layers       ${s.layers}  layout ${layout}  (A attention, M Mamba)`);
      console.log(`  attention    ${s.attentionLayers.join(',') || '-'}`);
      console.log(`  mamba        ${s.mambaLayers.join(',') || '-'}`);
      console.log(`  tensors      ${s.copied} copied, ${s.fromAttention} from attention weights, ${s.initialised} newly initialised`);
      console.log(`  parameters   ${(s.params / 1e6).toFixed(2)} M, ${(s.bytes / 1e6).toFixed(1)} MB in ${s.files.length} file(s)`);
    });

  program
    .command('logprobs')
    .description('log p(token i | tokens before i) for every token; prints one JSON object')
    .requiredOption('--model <dir>', 'model folder')
    .option('--ids <list>', 'comma-separated token ids', idsFlag('--ids'))
    .option('--text <text>', 'text to tokenize with the model\'s tokenizer (no BOS is added)')
    .option('--bos', 'prepend the BOS token to --text')
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
    .option('--json', 'print JSON (the default and only format)')
    .action(async (o: { model: string; ids?: number[]; text?: string; bos?: boolean; backend: string }) => {
      if ((o.ids === undefined) === (o.text === undefined)) throw new UserError('give exactly one of --ids or --text');
      const be = await createBackend(o.backend);
      const { model } = loadModel(o.model, be);
      let ids: number[];
      if (o.text !== undefined) {
        const tok = Tokenizer.fromDir(o.model);
        ids = tok.encode(o.text);
        if (o.bos) {
          if (tok.bosTokenId === null) throw new UserError(`--bos: the tokenizer of ${o.model} has no BOS token`);
          ids = [tok.bosTokenId, ...ids];
        }
      } else ids = o.ids!;
      const logprobs = scoreLogprobs(model, ids);
      process.stdout.write(JSON.stringify({ tokens: ids, logprobs: [null, ...Array.from(logprobs)] }) + '\n');
    });

  program
    .command('inspect')
    .description('architecture, layer layout, parameter count, dtypes and bytes of a model folder')
    .argument('<dir>', 'model folder')
    .option('--json', 'print JSON')
    .action((dir: string, o: { json?: boolean }) => {
      const info = inspectModel(dir);
      console.log(o.json ? JSON.stringify(info, null, 2) : formatInspect(info));
    });
}
