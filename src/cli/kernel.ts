#!/usr/bin/env node
/** `npm run kernel`: register the TypeScript (tslab) Jupyter kernel for this checkout. */
import { Command } from 'commander';
import { jupyterExecutable, registerKernel } from '../notebooks/jupyter';

const program = new Command()
  .name('kernel')
  .description(
    "Registers the tslab TypeScript kernel with the chosen Jupyter (the checkout's .venv-jupyter, else the first on PATH with JupyterLab, else with nbconvert; PNEUMO_JUPYTER overrides), pointing at this checkout's tslab (idempotent).",
  )
  .action(() => {
    try {
      const reg = registerKernel();
      if (reg.status === 'already-registered') {
        console.log(`Kernel '${reg.spec.name}' is already registered for this checkout (${reg.spec.dir}), nothing to do.`);
      } else {
        console.log(`Registered kernel '${reg.spec.name}' (TypeScript) in ${reg.spec.dir} using ${reg.python}.`);
      }
      console.log(`Jupyter: ${jupyterExecutable()}. The kernel starts: ${reg.spec.argv.join(' ')}`);
      console.log('Open the notebooks with `npm run lab` and pick the "TypeScript" kernel.');
    } catch (err) {
      console.error(`kernel: ${(err as Error).message}`);
      process.exitCode = 1;
    }
  });

program.parse();
