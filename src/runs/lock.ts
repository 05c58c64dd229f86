/**
 * One writer per run folder. A second process writing the same run (say `npm start -- --resume RUN` while the
 * first still trains) would interleave checkpoints and history; the lock file makes it stop with a message naming
 * the process that holds the run. A lock whose process is gone (killed, machine rebooted) is stale and taken over.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { RUN_FILES } from './layout';

export interface LockInfo {
  pid: number;
  host: string;
  startedAt: string;
  /** What holds it, for the message: the command line or the notebook. */
  command: string;
}

export interface RunLock {
  file: string;
  info: LockInfo;
  /** A note when a stale lock was taken over, for the caller to show. */
  tookOver?: string;
  release(): void;
}

export class RunLockedError extends Error {
  constructor(
    readonly runDir: string,
    readonly holder: LockInfo,
  ) {
    super(
      `${runDir} is being written by process ${holder.pid} on ${holder.host} (${holder.command}, since ${holder.startedAt}). ` +
        `Wait for it to finish or stop it; if that process is gone, delete ${path.join(runDir, RUN_FILES.lock)}.`,
    );
    this.name = 'RunLockedError';
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The current holder of a run's lock, or undefined; an unreadable lock file reads as held by nobody known. */
export function readLock(runDir: string): LockInfo | undefined {
  const file = path.join(runDir, RUN_FILES.lock);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const info = JSON.parse(text) as LockInfo;
    if (Number.isInteger(info.pid) && typeof info.host === 'string') return info;
  } catch {
    // fall through: a lock cut short by a crash while being written
  }
  return { pid: -1, host: os.hostname(), startedAt: 'unknown', command: `unreadable lock file ${file}` };
}

/** Stale: on this machine and its process is gone. A lock from another host cannot be checked, so it stays held. */
export function isStale(info: LockInfo, host = os.hostname()): boolean {
  return info.host === host && (info.pid <= 0 || !pidAlive(info.pid));
}

const held = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A process that ends normally (or on Ctrl-C through the CLI's handler) leaves no lock behind.
  process.on('exit', () => {
    for (const file of held) fs.rmSync(file, { force: true });
  });
}

function tryCreate(file: string, info: LockInfo): boolean {
  try {
    fs.writeFileSync(file, JSON.stringify(info, null, 2) + '\n', { flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/**
 * Takes the run's lock or throws RunLockedError naming the holder. The same process may take it again (a notebook
 * kernel re-running a cell): the lock is per process, not per call.
 */
export function acquireRunLock(runDir: string, command = process.argv.slice(1).join(' ') || 'node'): RunLock {
  fs.mkdirSync(runDir, { recursive: true });
  const file = path.join(runDir, RUN_FILES.lock);
  const info: LockInfo = { pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString(), command };
  let tookOver: string | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (tryCreate(file, info)) {
      held.add(file);
      installExitHook();
      const release = () => {
        // Only remove our own lock: a stale-takeover by another process must not be undone by us.
        const now = readLock(runDir);
        if (now && now.pid === info.pid && now.host === info.host) fs.rmSync(file, { force: true });
        held.delete(file);
      };
      return { file, info, tookOver, release };
    }
    const holder = readLock(runDir);
    if (!holder) continue; // released between our two looks
    if (holder.pid === process.pid && holder.host === info.host) {
      fs.writeFileSync(file, JSON.stringify(info, null, 2) + '\n');
      held.add(file);
      return { file, info, release: () => (fs.rmSync(file, { force: true }), held.delete(file)) };
    }
    if (!isStale(holder)) throw new RunLockedError(runDir, holder);
    tookOver = `note: took over a stale lock on ${runDir} left by process ${holder.pid} on ${holder.host} (${holder.command}, since ${holder.startedAt}), which is no longer running.`;
    // Rename, not unlink: of two processes taking over at once, only one rename succeeds.
    try {
      fs.renameSync(file, `${file}.stale-${process.pid}`);
      fs.rmSync(`${file}.stale-${process.pid}`, { force: true });
    } catch {
      // another process took it over first; the next attempt sees its lock
    }
  }
  const holder = readLock(runDir);
  throw new RunLockedError(runDir, holder ?? { pid: -1, host: '?', startedAt: '?', command: 'unknown' });
}

/** Runs `fn` holding the run's lock, and releases it however `fn` ends. */
export async function withRunLock<T>(
  runDir: string,
  fn: (lock: RunLock) => Promise<T>,
  opts: { command?: string; log?: (line: string) => void } = {},
): Promise<T> {
  const lock = acquireRunLock(runDir, opts.command);
  if (lock.tookOver) (opts.log ?? console.log)(lock.tookOver);
  try {
    return await fn(lock);
  } finally {
    lock.release();
  }
}
