import { execFile } from 'child_process';
import { promises as fs } from 'fs';
import * as path from 'path';
import { promisify } from 'util';

const repoRoot = path.resolve(__dirname, '..');

/**
 * The path of a compiled command (`dist/cli/<name>.js`) for tests that run it as a real program.
 * `npm test` builds dist/ first, so reuse it when it is newer than `sources`; otherwise compile just this command
 * and what it imports (other modules may be mid-edit) into `buildRoot`.
 */
export async function compiledCli(name: string, sources: string[], buildRoot: string): Promise<string> {
  const built = path.join(repoRoot, 'dist', 'cli', `${name}.js`);
  const builtAt = await fs.stat(built).then(
    (s) => s.mtimeMs,
    () => -1,
  );
  const sourceTimes = await Promise.all(sources.map((f) => fs.stat(path.join(repoRoot, f)).then((s) => s.mtimeMs)));
  if (builtAt > Math.max(...sourceTimes)) return built;
  const buildDir = path.join(buildRoot, 'build');
  const tsc = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const flags = ['--outDir', buildDir, '--rootDir', 'src', '--module', 'commonjs', '--target', 'ES2022'];
  const entry = path.join('src', 'cli', `${name}.ts`);
  await promisify(execFile)(process.execPath, [tsc, ...flags, '--esModuleInterop', '--strict', '--skipLibCheck', entry], {
    cwd: repoRoot,
  });
  return path.join(buildDir, 'cli', `${name}.js`);
}
