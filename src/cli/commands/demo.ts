// m1 demo — the whole M1 recipe at toy scale on the CPU (train/demo.ts): teacher → hybrid → distill →
// SFT → GRPO, every stage evaluated on held-out problems, plus teacher-vs-hybrid generation speed.
import { InvalidArgumentError, type Command } from 'commander';
import { BACKEND_NAMES, createBackend } from '../../backend/registry.js';
import { FULL_BUDGET, QUICK_BUDGET, formatDemoTable, runDemo, type DemoBudget } from '../../train/demo.js';
import { floatFlag, intFlag } from '../options.js';
import { UserError } from '../../util/errors.js';

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
  set: string[];
}

/**
 * `--set path=value`: any field of the demo budget (train/demo.ts DemoBudget), e.g.
 * `--set distill.lossOn=assistant --set grpo.temperature=0.8`. The value must have the type of the
 * field it replaces (number, string, boolean, or a JSON array for lists).
 */
export function applyBudgetOverrides(budget: DemoBudget, sets: readonly string[]): DemoBudget {
  const out = JSON.parse(JSON.stringify(budget)) as DemoBudget;
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new UserError(`--set "${s}": expected path=value, e.g. grpo.lr=0.001`);
    const path = s.slice(0, eq).trim().split('.'), raw = s.slice(eq + 1).trim();
    let node = out as unknown as Record<string, unknown>;
    for (const k of path.slice(0, -1)) {
      const next = node[k];
      if (typeof next !== 'object' || next === null || Array.isArray(next)) throw new UserError(`--set "${s}": "${k}" is not a section of the demo budget (sections: ${Object.keys(node).filter((x) => typeof node[x] === 'object' && node[x] !== null && !Array.isArray(node[x])).join(', ')})`);
      node = next as Record<string, unknown>;
    }
    const key = path[path.length - 1]!;
    if (!(key in node)) throw new UserError(`--set "${s}": no field "${key}" here (fields: ${Object.keys(node).join(', ')})`);
    const old = node[key];
    let value: unknown;
    if (typeof old === 'number') {
      value = Number(raw);
      if (raw === '' || !Number.isFinite(value)) throw new UserError(`--set "${s}": ${path.join('.')} needs a number, got "${raw}"`);
    } else if (typeof old === 'boolean') {
      if (raw !== 'true' && raw !== 'false') throw new UserError(`--set "${s}": ${path.join('.')} needs true or false, got "${raw}"`);
      value = raw === 'true';
    } else if (typeof old === 'string') value = raw;
    else {
      try {
        value = JSON.parse(raw);
      } catch {
        throw new UserError(`--set "${s}": ${path.join('.')} needs a JSON value (e.g. [0,2] or null), got "${raw}"`);
      }
      if (value !== null && !Array.isArray(value)) throw new UserError(`--set "${s}": ${path.join('.')} needs a JSON array or null`);
    }
    node[key] = value;
  }
  if (out.distill.lossOn !== 'all' && out.distill.lossOn !== 'assistant') throw new UserError(`--set: distill.lossOn must be "all" or "assistant", got "${String(out.distill.lossOn)}"`);
  return out;
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
    .option('--attn-layers <list>', 'teacher layers kept as attention in the hybrid (default: 1,3)', (v: string) => v.split(',').map((x) => {
      if (!/^\d+$/.test(x.trim())) throw new InvalidArgumentError(`--attn-layers: "${x}" is not a layer index`);
      return Number(x);
    }))
    .option('--eval-problems <n>', 'held-out problems per evaluation', intFlag('--eval-problems', { min: 2 }))
    .option('--eval-n <n>', 'samples per held-out problem', intFlag('--eval-n', { min: 1 }))
    .option('--eval-temperature <x>', 'sampling temperature of the evaluation', floatFlag('--eval-temperature', { min: 0 }))
    .option('--set <path=value>', 'override any field of the demo budget, e.g. --set distill.lossOn=assistant (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
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
      const final = applyBudgetOverrides(budget, o.set);
      if (final.grpo.batch % final.grpo.miniBatch !== 0) throw new UserError(`--set: grpo.batch ${final.grpo.batch} is not a multiple of grpo.miniBatch ${final.grpo.miniBatch}`);
      const be = await createBackend(o.backend);
      const summary = await runDemo({ be, out: o.out, seed: o.seed, budget: final, teacherDir: o.teacher });
      console.log(formatDemoTable(summary));
      console.log(`\nsummary: ${o.out}/summary.json; report: ${o.out}/report.html`);
    });
}
