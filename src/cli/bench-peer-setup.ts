#!/usr/bin/env node
/** `npm run bench:peer-setup`: PyTorch 2.x for the benchmark's peer, offline, in `.venv-peer/`. */
import * as path from 'path';
import { setupPeerVenv } from '../bench/peer';

try {
  const peer = setupPeerVenv(path.resolve(__dirname, '..', '..'));
  console.log(`PyTorch ${peer.torch} ready in ${peer.python}; 'npm run bench:train -- --peer' uses it.`);
} catch (err) {
  console.error(`bench:peer-setup: ${(err as Error).message}`);
  process.exitCode = 1;
}
