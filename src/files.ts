/**
 * Writing files so that a crash or Ctrl-C never leaves a half-written one: every write goes to a hidden temporary
 * sibling first and is renamed into place (atomic on one file system). Plus JSON and CSV in the forms the run
 * folder uses. Run folders, the report and the dataset download all write through here.
 */
import * as fs from 'fs';
import * as path from 'path';

/** A hidden sibling of `target`, so the final rename stays on one file system (and so is atomic). */
export function tempSibling(target: string): string {
  const rand = Math.random().toString(36).slice(2, 8);
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${rand}`);
}

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempSibling(file);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export function readJson<T>(file: string): T {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`Cannot read ${file}: file is missing or unreadable.`);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`${file} is not valid JSON; delete it or re-run the step that writes it.`);
  }
}

function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  const s = typeof value === 'number' && !Number.isFinite(value) ? String(value) : String(value);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** CSV with a header row taken from `columns` (or the union of the rows' keys, in first-seen order). */
export function toCsv(rows: ReadonlyArray<Record<string, unknown>>, columns?: string[]): string {
  const cols = columns ?? [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const lines = [cols.map(csvCell).join(',')];
  for (const row of rows) lines.push(cols.map((c) => csvCell(row[c])).join(','));
  return lines.join('\n') + '\n';
}

export function writeCsvAtomic(file: string, rows: ReadonlyArray<Record<string, unknown>>, columns?: string[]): void {
  writeFileAtomic(file, toCsv(rows, columns));
}

/**
 * Replaces `dir` with a fully written directory: `fill` writes into a temp sibling, which is then renamed into
 * place. A reader sees either the old complete directory or the new complete one.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = tempSibling(dir);
  fs.mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
    if (fs.existsSync(dir)) {
      // rename() cannot replace a non-empty directory: move the old one aside first, then drop it.
      const old = tempSibling(dir);
      fs.renameSync(dir, old);
      fs.renameSync(tmp, dir);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, dir);
    }
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
