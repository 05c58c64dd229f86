/**
 * A pause for the event loop after a test, once 5 s have gone by since the last. A test worker handles vitest's RPC
 * replies (to its onTaskUpdate calls) only when its event loop turns, and tests that compute synchronously (wasm
 * kernels, child builds) can run back to back without a turn: a call unanswered for 60 s fails the run with
 * "Timeout calling onTaskUpdate" though every test passed (two 35-s busy tests in a row did). A bare setImmediate is
 * not enough: the runner's reply has to arrive, so the pause is a short timer.
 */
import { afterEach } from 'vitest';

const EVERY_MS = 5_000;
const PAUSE_MS = 100;
let lastPause = Date.now();

afterEach(async () => {
  if (Date.now() - lastPause < EVERY_MS) return;
  await new Promise<void>((resolve) => setTimeout(resolve, PAUSE_MS));
  lastPause = Date.now();
});
