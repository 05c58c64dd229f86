/**
 * Where the optional native addons lie once built: accel/<addon>/build/Release/<file> in the checkout that holds
 * this code. Found by walking up from this file, so it is the same from src/accel/ (vitest, vite-node) and from
 * dist/accel/ (the compiled commands, the notebooks).
 */
import * as fs from 'fs';
import * as path from 'path';

export type AddonName = 'onednn' | 'jpeg';

/** The built addon's path (which may not exist yet), or undefined when no folder above holds accel/<addon>/. */
export function addonFile(addon: AddonName, file: string): string | undefined {
  let dir = __dirname;
  for (;;) {
    const source = path.join(dir, 'accel', addon);
    if (fs.existsSync(path.join(source, 'binding.gyp'))) return path.join(source, 'build', 'Release', file);
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}
