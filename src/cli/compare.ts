/**
 * `npm run runs` lists every run under outputs/runs as one ranked table; `npm run compare -- RUN...` compares the
 * runs named (paths, folder names or a unique part of one). Ranking is on validation only.
 */
import { type CliIo, defaultIo, parseCommand, cliProgram, runAsScript } from './common';
import { DEFAULT_PIPELINE } from '../pipeline';
import { DEFAULT_RUNS_DIR } from '../runs/layout';
import { compareRuns, filterRows, formatComparison, frameRows, groupByHyperparameter, selectRuns, textTable } from '../runs/compare';

export type { CliIo };

interface Flags {
  out: string;
  where?: string;
  groupBy?: string;
}

/** `--where lr=0.001`: one column and the value its rows must have. */
function parseWhere(spec: string): { column: string; value: string } {
  const at = spec.indexOf('=');
  if (at <= 0) throw new Error(`--where ${spec}: expected COLUMN=VALUE, e.g. --where status=evaluated or --where lr=0.001.`);
  return { column: spec.slice(0, at).trim(), value: spec.slice(at + 1).trim() };
}

export async function main(
  argv: string[] = process.argv.slice(2),
  io: CliIo = defaultIo,
  mode: 'runs' | 'compare' = 'compare',
): Promise<number> {
  const program = cliProgram(mode === 'runs' ? 'npm run runs --' : 'npm run compare --', io)
    .description(
      mode === 'runs'
        ? 'List the runs under --out, ranked on validation.'
        : 'Compare runs: hyperparameters that differ, validation (ranked) and test (shown) metrics.',
    )
    .option('--out <dir>', 'folder holding the run folders', DEFAULT_RUNS_DIR)
    .option('--where <column=value>', 'keep the rows where a column has this value (e.g. status=evaluated, lr=0.001)')
    .option('--group-by <hyperparameter>', 'also show mean validation numbers per value of a hyperparameter (e.g. lr)');
  if (mode === 'compare') program.argument('<runs...>', 'run folders, run names under --out, or unique parts of names');
  const usageExit = parseCommand(program, argv);
  if (usageExit !== undefined) return usageExit;
  const flags = program.opts<Flags>();
  try {
    const { runs, problems } = selectRuns(mode === 'compare' ? program.args : [], flags.out);
    for (const p of problems) io.err(`skipped ${p.dir}: ${p.message}`);
    if (!runs.length) {
      io.out(`No runs under ${flags.out} yet; train one with 'npm start' or notebook 04.`);
      return 0;
    }
    const comparison = compareRuns(runs, DEFAULT_PIPELINE);
    if (flags.where) {
      const { column, value } = parseWhere(flags.where);
      comparison.frame = filterRows(comparison.frame, column, value);
    }
    io.out(formatComparison(comparison));
    if (flags.groupBy) {
      io.out('');
      io.out(`Mean validation numbers per ${flags.groupBy}:`);
      io.out(textTable(frameRows(groupByHyperparameter(comparison.frame, flags.groupBy))));
    }
    return 0;
  } catch (err) {
    io.err(`${mode}: ${(err as Error)?.message ?? String(err)}`);
    return 1;
  }
}

runAsScript(module, () => main(process.argv.slice(2), defaultIo, 'compare'));
