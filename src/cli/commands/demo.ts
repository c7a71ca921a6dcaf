// m1 demo — the whole M1 recipe at toy scale on the CPU (train/demo.ts): teacher → hybrid → distill →
// SFT → GRPO, every stage evaluated on held-out problems, plus teacher-vs-hybrid generation speed.
import { InvalidArgumentError, type Command } from 'commander';
import { BACKEND_NAMES, createBackend } from '../../backend/registry.js';
import { FULL_BUDGET, QUICK_BUDGET, formatDemoTable, runDemo, type DemoBudget } from '../../train/demo.js';
import { floatFlag, intFlag } from '../options.js';

interface DemoFlags {
  out: string;
  seed: number;
  quick?: boolean;
  teacher?: string;
  backend: string;
  distillSteps?: number;
  sftSteps?: number;
  grpoSteps?: number;
  attnLayers?: number[];
  grpoLr?: number;
  group?: number;
  grpoBatch?: number;
  evalProblems?: number;
  evalN?: number;
  evalTemperature?: number;
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('the M1 recipe end to end on the CPU in minutes: teacher → hybrid → distill → SFT → GRPO, evaluated and timed')
    .option('--out <dir>', 'output folder: stage models, run folders, summary.json, report.html', 'm1-demo')
    .option('--seed <n>', 'seed of every stage and of the held-out problem draw', intFlag('--seed', { min: 0 }), 0)
    .option('--quick', 'tiny budgets: a smoke run of every stage in seconds (numbers are meaningless)')
    .option('--teacher <dir>', 'teacher model folder (default: the shipped assets/teacher)')
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
    .option('--distill-steps <n>', 'distillation steps', intFlag('--distill-steps', { min: 1 }))
    .option('--sft-steps <n>', 'SFT steps', intFlag('--sft-steps', { min: 1 }))
    .option('--grpo-steps <n>', 'GRPO steps', intFlag('--grpo-steps', { min: 1 }))
    .option('--grpo-lr <x>', 'GRPO learning rate', floatFlag('--grpo-lr', { min: 0 }))
    .option('--group <n>', 'GRPO samples per prompt', intFlag('--group', { min: 2 }))
    .option('--grpo-batch <n>', 'GRPO prompts per step', intFlag('--grpo-batch', { min: 1 }))
    .option('--attn-layers <list>', 'teacher layers kept as attention in the hybrid (default: 0)', (v: string) => v.split(',').map((x) => {
      if (!/^\d+$/.test(x.trim())) throw new InvalidArgumentError(`--attn-layers: "${x}" is not a layer index`);
      return Number(x);
    }))
    .option('--eval-problems <n>', 'held-out problems per evaluation', intFlag('--eval-problems', { min: 2 }))
    .option('--eval-n <n>', 'samples per held-out problem', intFlag('--eval-n', { min: 1 }))
    .option('--eval-temperature <x>', 'sampling temperature of the evaluation', floatFlag('--eval-temperature', { min: 0 }))
    .action(async (o: DemoFlags) => {
      const base = o.quick ? QUICK_BUDGET : FULL_BUDGET;
      const grpoBatch = o.grpoBatch ?? base.grpo.batch;
      const budget: DemoBudget = {
        ...base,
        attnLayers: o.attnLayers ?? base.attnLayers,
        distill: { ...base.distill, steps: o.distillSteps ?? base.distill.steps },
        sft: { ...base.sft, steps: o.sftSteps ?? base.sft.steps },
        grpo: {
          ...base.grpo, steps: o.grpoSteps ?? base.grpo.steps, lr: o.grpoLr ?? base.grpo.lr, group: o.group ?? base.grpo.group,
          batch: grpoBatch, miniBatch: o.grpoBatch !== undefined ? Math.max(1, grpoBatch / 2) : base.grpo.miniBatch,
        },
        eval: { ...base.eval, problems: o.evalProblems ?? base.eval.problems, n: o.evalN ?? base.eval.n, temperature: o.evalTemperature ?? base.eval.temperature },
      };
      if (budget.grpo.batch % budget.grpo.miniBatch !== 0) budget.grpo.miniBatch = budget.grpo.batch;
      const be = await createBackend(o.backend);
      const summary = await runDemo({ be, out: o.out, seed: o.seed, budget, teacherDir: o.teacher });
      console.log(formatDemoTable(summary));
      console.log(`\nsummary: ${o.out}/summary.json; report: ${o.out}/report.html`);
    });
}
