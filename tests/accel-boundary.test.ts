/**
 * src/accel/ is one bounded part: the rest of src/ reaches it only through its entry points, so the backends, the
 * addons' loaders and the kernels can change inside it without touching callers. Entry points: index.ts (backend
 * selection), jpeg.ts (the JPEG decoder for src/data/decode.ts: no tfjs) and browser.ts (the web page: no Node).
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as path from 'path';

const SRC = path.join(__dirname, '..', 'src');
const ACCEL = path.join(SRC, 'accel');
const ENTRY_POINTS = ['index.ts', 'jpeg.ts', 'browser.ts'].map((f) => path.join(ACCEL, f));

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Module specifiers a file imports, re-exports or requires (import type included). */
function specifiers(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const found = [
    ...text.matchAll(/\bfrom\s+'([^']+)'/g),
    ...text.matchAll(/^\s*import\s+'([^']+)'/gm),
    ...text.matchAll(/\b(?:require|import)\(\s*'([^']+)'\s*\)/g),
  ];
  return found.map((m) => m[1]);
}

/** The .ts file a relative specifier names, or undefined for a package. */
function resolve(from: string, spec: string): string | undefined {
  if (!spec.startsWith('.')) return undefined;
  const base = path.resolve(path.dirname(from), spec);
  return [`${base}.ts`, path.join(base, 'index.ts')].find((f) => fs.existsSync(f));
}

/** Every file of src/accel a file reaches through relative imports, and every package on the way. */
function closure(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of specifiers(file)) {
      const target = resolve(file, spec);
      if (target) visit(target);
      else if (!spec.startsWith('.')) packages.add(spec);
    }
  };
  visit(entry);
  return { files, packages };
}

describe('src/accel boundary', () => {
  it('the rest of src/ imports src/accel only through index.ts, jpeg.ts and browser.ts', () => {
    const outside = tsFiles(SRC).filter((f) => !f.startsWith(ACCEL + path.sep));
    const crossings = outside.flatMap((file) =>
      specifiers(file)
        .map((spec) => ({ file, target: resolve(file, spec) }))
        .filter(({ target }) => target?.startsWith(ACCEL + path.sep) && !ENTRY_POINTS.includes(target)),
    );
    expect(crossings.map(({ file, target }) => `${path.relative(SRC, file)} -> ${path.relative(SRC, target!)}`)).toEqual([]);
    // And they are used: the boundary is real, not a folder nobody enters.
    expect(outside.some((f) => specifiers(f).some((s) => resolve(f, s) === ENTRY_POINTS[0]))).toBe(true);
  });

  it('jpeg.ts loads no tfjs, and browser.ts no Node module', () => {
    expect([...closure(path.join(ACCEL, 'jpeg.ts')).packages].filter((p) => p.startsWith('@tensorflow/'))).toEqual([]);
    const nodeOnly = /^(node:|fs$|path$|os$|child_process$|worker_threads$|crypto$)/;
    expect([...closure(path.join(ACCEL, 'browser.ts')).packages].filter((p) => nodeOnly.test(p))).toEqual([]);
  });
});
