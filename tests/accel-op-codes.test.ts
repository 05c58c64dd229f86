/**
 * The native addons take their op codes as plain numbers: the TypeScript names (src/accel/onednn/ops.ts,
 * src/accel/jpeg.ts) and the C++ enums (accel/onednn/src/common.h, accel/jpeg/jpeg_gray.cc) must agree by hand.
 * This reads the C++ and fails on any difference, so a code added, renamed or renumbered on one side only cannot
 * silently run the wrong loop. Needs no built addon.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as path from 'path';
import { OP_CODES } from '../src/accel/onednn/ops';
import { JpegFit } from '../src/accel/jpeg';

const COMMON_H = path.join(__dirname, '..', 'accel', 'onednn', 'src', 'common.h');
const JPEG_CC = path.join(__dirname, '..', 'accel', 'jpeg', 'jpeg_gray.cc');

/** Every enum in a C++ header: name -> { entry name without its k prefix -> value }, with C++'s implicit numbering. */
function cppEnums(source: string): Record<string, Record<string, number>> {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  const enums: Record<string, Record<string, number>> = {};
  for (const m of code.matchAll(/\benum\s+(?:class\s+|struct\s+)?(\w+)\s*(?::\s*[\w:]+\s*)?\{([^}]*)\}/g)) {
    const entries: Record<string, number> = {};
    let next = 0;
    for (const raw of m[2].split(',')) {
      const entry = raw.trim();
      if (!entry) continue;
      const e = /^(\w+)\s*(?:=\s*(-?\d+))?$/.exec(entry);
      if (!e) throw new Error(`common.h: cannot read enum ${m[1]}'s entry '${entry}' (only NAME or NAME = integer)`);
      const value = e[2] !== undefined ? Number(e[2]) : next;
      entries[e[1].replace(/^k(?=[A-Z])/, '')] = value;
      next = value + 1;
    }
    enums[m[1]] = entries;
  }
  return enums;
}

describe('oneDNN addon op codes', () => {
  const cpp = cppEnums(fs.readFileSync(COMMON_H, 'utf8'));

  it('reads the enums of common.h', () => {
    expect(Object.keys(cpp).length).toBeGreaterThan(0);
    expect(cpp.BinaryOp).toMatchObject({ Add: 0 });
    expect(cppEnums('enum class E : int { kA = 2, kB, kC = 7 }; enum F { kX };')).toEqual({ E: { A: 2, B: 3, C: 7 }, F: { X: 0 } });
  });

  it('ops.ts mirrors every enum in common.h, name for name and value for value', () => {
    const ts = Object.fromEntries(Object.entries(OP_CODES).map(([name, codes]) => [name, { ...codes }]));
    expect(ts).toEqual(cpp);
  });

  it('has no two names for one code', () => {
    for (const [name, codes] of Object.entries(OP_CODES)) {
      const values = Object.values(codes);
      expect(new Set(values).size, name).toBe(values.length);
    }
  });
});

describe('JPEG addon fit codes', () => {
  it('src/accel/jpeg.ts mirrors the enums of jpeg_gray.cc', () => {
    expect({ Fit: { ...JpegFit } }).toEqual(cppEnums(fs.readFileSync(JPEG_CC, 'utf8')));
  });
});
