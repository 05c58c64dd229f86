/** `npm run runs`: every run under outputs/runs in one table, ranked on validation (see cli/compare). */
import { defaultIo, runAsScript } from './common';
import { main as compareMain } from './compare';

export function main(argv: string[] = process.argv.slice(2), io = defaultIo): Promise<number> {
  return compareMain(argv, io, 'runs');
}

runAsScript(module, main);
