// The stages as Trainer stages: how a micro-batch becomes gradients.
//   pretrain / SFT: cross-entropy head;  distill: reverse KL to a frozen teacher (+ optional CE mix).
// M1's recipe: distill (kl_weight 1) → SFT (kl_weight 0 = plain CE) → GRPO (see heads.ts grpoLoss).
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { configsOf, writeConfigs } from '../model/checkpoint.js';
import type { CausalLM } from '../model/model.js';
import { saveTokenizer } from '../model/tokenizer.js';
import { distillLoss, sftLoss, type ChunkOptions } from './heads.js';
import type { Batch } from './data.js';
import type { MicroResult, Stage } from './trainer.js';

/** where a checkpoint's tokenizer files come from: a model folder, or in-memory files (presets) */
export type TokenizerSource = { dir: string } | { files: { tokenizerJson: object; tokenizerConfig: object } };

/** writes config.json (+ mamba_config.json), generation_config.json and the tokenizer files */
export function modelFilesWriter(model: CausalLM, tokenizer: TokenizerSource): (dir: string) => void {
  return (dir) => {
    writeConfigs(dir, configsOf(model.cfg), model.embed.value.dtype);
    if ('dir' in tokenizer) {
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
        if (existsSync(join(tokenizer.dir, f))) copyFileSync(join(tokenizer.dir, f), join(dir, f));
      }
    } else saveTokenizer(dir, tokenizer.files.tokenizerJson, tokenizer.files.tokenizerConfig);
  };
}

/**
 * Activation recomputation of the trained model's forward (CausalLM.forward `recompute`): false = keep every
 * layer's activations, true = recompute every layer in backward, k = the first k layers
 */
export type Recompute = boolean | number;

/** pretraining and SFT: mean cross-entropy over the masked tokens of the step */
export function crossEntropyStage(
  name: string, model: CausalLM, writeModelFiles: (dir: string) => void, chunks: ChunkOptions = {}, recompute: Recompute = false,
): Stage {
  return {
    name, model, writeModelFiles,
    microStep(b: Batch, normalizer: number): MicroResult {
      const { hidden, saved } = model.forward(b.ids, b.seq, { needBackward: true, recompute });
      const r = sftLoss(model.be, { hidden, weight: model.lmHead, targets: b.targets, mask: b.mask }, { ...chunks, normalizer });
      model.backwardFromHidden(r.dHidden!, saved!);
      return { loss: r.loss, sums: r.sums, tokens: r.tokens };
    },
  };
}

/**
 * Distillation: the frozen teacher runs forward only (its hidden states feed the fused head, where
 * its logits are made chunk by chunk next to the student's); the student trains on
 * (1 − klWeight)·CE + klWeight·KL(p_student ‖ p_teacher).
 */
export function distillStage(
  student: CausalLM, teacher: CausalLM, klWeight: number, writeModelFiles: (dir: string) => void, chunks: ChunkOptions = {}, recompute: Recompute = false,
): Stage {
  if (teacher.vocabSize !== student.vocabSize) {
    throw new Error(`distill: teacher vocabulary ${teacher.vocabSize} differs from the student's ${student.vocabSize}`);
  }
  return {
    name: 'distill', model: student, writeModelFiles,
    microStep(b: Batch, normalizer: number): MicroResult {
      const t = teacher.forward(b.ids, b.seq, { needBackward: false });
      const { hidden, saved } = student.forward(b.ids, b.seq, { needBackward: true, recompute });
      const r = distillLoss(student.be, { hidden, weight: student.lmHead, targets: b.targets, mask: b.mask }, {
        ...chunks, normalizer, teacherHidden: t.hidden, teacherWeight: teacher.lmHead.value, klWeight,
      });
      t.hidden.dispose();
      student.backwardFromHidden(r.dHidden!, saved!);
      return { loss: r.loss, sums: r.sums, tokens: r.tokens };
    },
  };
}
