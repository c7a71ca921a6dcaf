// GRPO-only trials for tuning the demo's GRPO stage: start from a saved SFT model (a demo run's
// sft/final), run GRPO with the given settings on training-split prompts, and compare the model
// before and after on held-out problems drawn with a *different* seed from the demo's own test set,
// so that choosing settings here does not tune them on the problems the demo reports.
//   node dist/bench/grpo-trial.js --sft runs/demo/sft/final --out /tmp/t1 --set steps=24 --set temperature=0.7
// Prints one JSON line: the settings, accuracy before / after, the paired gain, its SE and z.
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import { loadModel } from '../src/model/checkpoint.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { SampleTokenizer } from '../src/train/data.js';
import { evaluateModel, pairedGain, type EvalProblem } from '../src/train/demo-eval.js';
import { M1_GRPO, runGrpo, type GrpoConfig } from '../src/train/grpo.js';
import { modelFilesWriter } from '../src/train/stages.js';
import { syntheticProblems } from '../src/train/synthetic.js';

const sets: Record<string, number> = {};
const program = new Command()
  .requiredOption('--sft <dir>', 'the SFT model folder to start from')
  .requiredOption('--out <dir>', 'GRPO run folder')
  .option('--backend <name>', 'cpu | cuda', 'cpu')
  .option('--set <k=v>', 'a GrpoConfig field (numbers), repeatable: steps, batch, miniBatch, group, lr, temperature, entropyCoef, seed, …', (v: string) => {
    const [k, x] = v.split('=');
    if (!k || x === undefined || !Number.isFinite(Number(x))) throw new Error(`--set ${v}: expected field=number`);
    sets[k] = Number(x);
    return v;
  })
  .option('--difficulty <n>', 'synthetic difficulty', Number, 3)
  .option('--prompt-seed <n>', 'seed of the training prompts (the demo uses its seed + 3)', Number, 3)
  .option('--val-seed <n>', 'seed of the held-out problems (not a demo seed)', Number, 1000)
  .option('--val-problems <n>', 'held-out problems', Number, 400)
  .option('--samples <n>', 'samples per held-out problem (T 0.7, as the demo)', Number, 4)
  .parse(process.argv);
const o = program.opts<{ sft: string; out: string; backend: string; difficulty: number; promptSeed: number; valSeed: number; valProblems: number; samples: number }>();

const be = await createBackend(o.backend);
const tok = Tokenizer.fromDir(o.sft);
const { model } = loadModel(o.sft, be);
const stop = [...new Set([...model.cfg.llama.eosTokenIds, tok.eosTokenId, tok.tokenToId('<|eot_id|>')].filter((x): x is number => x !== null))];
const prompt = (p: string) => tok.encodeChat([{ role: 'user', content: p.trim() }], { addGenerationPrompt: true });
const grade = { casBudgetMs: 50, answerBudgetMs: 200 };
const ev = { n: o.samples, temperature: 0.7, maxTokens: 48, seed: o.valSeed, stopTokenIds: stop, grade };
const trainSet = syntheticProblems({ split: 'train', difficulty: o.difficulty, count: 4000, seed: o.promptSeed })
  .map((p) => ({ id: p.id, promptIds: prompt(p.problem), answer: p.answer }));
const valSet: EvalProblem[] = syntheticProblems({ split: 'test', difficulty: o.difficulty, count: o.valProblems, seed: o.valSeed })
  .map((p) => ({ id: p.id, promptIds: prompt(p.problem), answer: p.answer }));
const before = evaluateModel(model, tok, valSet, ev);
const st = new SampleTokenizer(tok, 'assistant');
const config: GrpoConfig = {
  ...M1_GRPO, group: 8, batch: 32, miniBatch: 32, lr: 5e-5, temperature: 1.0, entropyCoef: 0, clip: 0.2, maxTokens: 48, steps: 12, seed: 4,
  microRows: 32, saveEvery: 0, saveTotalLimit: 1, weightDecay: 0, ...sets,
};
const t0 = performance.now();
const rewards: number[] = [];
await runGrpo({
  be, model, tokenizer: tok, prompts: trainSet, runDir: o.out, stopTokenIds: stop, padId: st.padId, gradeOptions: grade,
  writeModelFiles: modelFilesWriter(model, { dir: o.sft }), progress: false, log: () => {}, handleSigint: false, config,
  onStep: (l) => void rewards.push(l['reward_mean']!),
});
const seconds = (performance.now() - t0) / 1000;
const after = evaluateModel(model, tok, valSet, ev);
const g = pairedGain(before.perProblem, after.perProblem);
const half = Math.floor(rewards.length / 2);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
console.log(JSON.stringify({
  sft: o.sft, set: sets, before: before.accuracy, after: after.accuracy, gain: g.gain, se: g.se, z: g.z,
  rewardFirstHalf: mean(rewards.slice(0, half)), rewardSecondHalf: mean(rewards.slice(half)), grpoSeconds: seconds,
}));
