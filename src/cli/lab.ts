#!/usr/bin/env node
/** `npm run lab`: open the notebooks in JupyterLab if installed, else in the classic notebook. */
import { spawn } from 'child_process';
import { Command } from 'commander';
import * as path from 'path';
import { APT_HINT, jupyterExecutable, jupyterHas, labInstallHint, registerKernel } from '../notebooks/jupyter';
import { repoRoot } from '../paths';

const program = new Command()
  .name('lab')
  .description('Registers the tslab kernel, then starts JupyterLab (or the classic notebook) on notebooks/.')
  .option('--port <port>', 'port for the Jupyter server')
  .option('--no-browser', 'do not open a browser')
  .action((opts: { port?: string; browser: boolean }) => {
    let jupyter: string | null;
    try {
      jupyter = jupyterExecutable();
    } catch (err) {
      console.error(`lab: ${(err as Error).message}`);
      process.exitCode = 1;
      return;
    }
    const install = `  JupyterLab: ${labInstallHint()}\n  or the classic notebook: ${APT_HINT.notebook}`;
    if (!jupyter) {
      console.error(`lab: Jupyter is not installed. Install one of:\n${install}\nthen run \`npm run lab\` again.`);
      process.exitCode = 1;
      return;
    }
    const app = jupyterHas(jupyter, 'lab') ? 'lab' : jupyterHas(jupyter, 'notebook') ? 'notebook' : null;
    if (!app) {
      console.error(`lab: ${jupyter} has neither JupyterLab nor the classic notebook. Install one of:\n${install}`);
      process.exitCode = 1;
      return;
    }
    try {
      const reg = registerKernel();
      console.log(reg.status === 'registered' ? `Registered the tslab kernel (${reg.spec.dir}).` : 'tslab kernel already registered.');
    } catch (err) {
      console.error(`lab: ${(err as Error).message}`);
      process.exitCode = 1;
      return;
    }
    const notebookDir = path.join(repoRoot, 'notebooks');
    const args = [app, `--notebook-dir=${notebookDir}`];
    if (opts.port) args.push(`--port=${opts.port}`);
    if (!opts.browser) args.push('--no-browser');
    // Jupyter refuses to start as root without this (containers, CI).
    if (process.getuid?.() === 0) args.push('--allow-root');
    console.log(`Starting: ${jupyter} ${args.join(' ')}`);
    if (app === 'notebook') console.log(`JupyterLab is not installed; using the classic notebook. For JupyterLab:\n  ${labInstallHint()}`);
    console.log('Pick the "TypeScript" kernel; run the notebooks in order (00 .. 05). Ctrl-C stops the server.');
    const child = spawn(jupyter, args, { stdio: 'inherit', cwd: repoRoot });
    // Forward Ctrl-C (Jupyter asks for confirmation on its own) and termination, so the server never outlives us.
    process.on('SIGINT', () => child.kill('SIGINT'));
    process.on('SIGTERM', () => child.kill('SIGTERM'));
    child.on('exit', (code) => {
      process.exitCode = code ?? 0;
    });
  });

program.parse();
