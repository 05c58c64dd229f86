/**
 * One tiny end-to-end report per test run, shared by tests/notebooks.test.ts and tests/browser-report.test.ts:
 * executing every notebook takes about a minute, so the first test file to ask builds it (under a lock) and the
 * other waits for it. Keyed by the vitest main process, so every `vitest run` executes the notebooks afresh.
 */
import * as fs from 'fs';
import * as path from 'path';
import { generateDemoDataset } from '../src/data/demo';
import { hasJupyterCommand, jupyterExecutable } from '../src/notebooks/jupyter';
import { repoRoot } from '../src/paths';
import { buildReport, type NotebookSettings, type ReportResult } from '../src/report';

export { repoRoot };
const fixtureRoot = path.join(repoRoot, 'outputs', 'test-report');
const lockDir = `${fixtureRoot}.lock`;

/** Tiny settings: the whole notebook series in about a minute on 2 cores. */
export function tinySettings(dataDir: string, workDir: string): NotebookSettings {
  return { data: dataDir, out: workDir, epochs: 1, imageSize: 32, batchSize: 16, model: 'small', augment: 'seed', seed: 7 };
}

/** Why the notebook tests cannot run here, or null. CI sets PNEUMO_REQUIRE_JUPYTER=1 so a missing piece fails instead. */
export function jupyterUnavailable(): string | null {
  if (!jupyterExecutable()) return 'jupyter is not installed (apt-get install jupyter-nbconvert jupyter-client python3-ipykernel)';
  if (!hasJupyterCommand('nbconvert')) return 'jupyter nbconvert is not installed (apt-get install jupyter-nbconvert)';
  if (!fs.existsSync(path.join(repoRoot, 'dist', 'notebooks', 'params.js')))
    return 'dist/ is not built: run `npm run build` (npm test does)';
  return null;
}

export function jupyterRequired(): boolean {
  return process.env.PNEUMO_REQUIRE_JUPYTER === '1';
}

export interface DemoReport extends ReportResult {
  dataDir: string;
  workDir: string;
  /** stdout/stderr lines of the build, for failure messages. */
  log: string[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function build(runDir: string): Promise<DemoReport> {
  const dataDir = path.join(runDir, 'data');
  const workDir = path.join(runDir, 'work');
  const log: string[] = [];
  // 12 train + 4 test films per class at 64 px: enough for two classes in every split, tiny to decode.
  await generateDemoDataset({ outDir: dataDir, perClass: 12, testPerClass: 4, size: 64, seed: 3 });
  const result = await buildReport({
    settings: tinySettings(dataDir, workDir),
    outDir: path.join(runDir, 'report'),
    cellTimeoutS: 300,
    onDone: (e) => log.push(`${e.name}: ${e.seconds.toFixed(1)} s`),
  });
  return { ...result, dataDir, workDir, log };
}

/** Builds (or waits for) this test run's demo report; rejects with the failing notebook's cell error. */
export async function demoReport(): Promise<DemoReport> {
  const key = String(process.ppid);
  const runDir = path.join(fixtureRoot, key);
  const doneFile = path.join(runDir, 'done.json');
  const errorFile = path.join(runDir, 'error.txt');
  fs.mkdirSync(path.dirname(lockDir), { recursive: true });
  for (;;) {
    if (fs.existsSync(doneFile)) return JSON.parse(fs.readFileSync(doneFile, 'utf8')) as DemoReport;
    if (fs.existsSync(errorFile)) throw new Error(fs.readFileSync(errorFile, 'utf8'));
    try {
      fs.mkdirSync(lockDir);
      fs.writeFileSync(path.join(lockDir, 'pid'), String(process.pid));
      break;
    } catch {
      const owner = Number(fs.readFileSync(path.join(lockDir, 'pid'), { encoding: 'utf8', flag: 'a+' }) || 0);
      if (owner && !alive(owner)) fs.rmSync(lockDir, { recursive: true, force: true });
      await sleep(500);
    }
  }
  try {
    if (fs.existsSync(doneFile)) return JSON.parse(fs.readFileSync(doneFile, 'utf8')) as DemoReport;
    // Earlier runs' fixtures are stale: keep only this one.
    fs.rmSync(fixtureRoot, { recursive: true, force: true });
    fs.mkdirSync(runDir, { recursive: true });
    try {
      const report = await build(runDir);
      fs.writeFileSync(doneFile, JSON.stringify(report));
      return report;
    } catch (err) {
      fs.writeFileSync(errorFile, (err as Error).message);
      throw err;
    }
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true });
  }
}
