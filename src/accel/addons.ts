/**
 * Where the optional native addons lie once built: accel/<addon>/build/Release/<file> in the checkout that holds
 * this code. Found by walking up from this file's real location, so it is the same from src/accel/ (vitest,
 * vite-node), from dist/accel/ (the compiled commands, the notebooks) and through a linked dist/ (the live notebook
 * test links one, and a runtime may keep the link in __dirname).
 */
import * as fs from 'fs';
import * as path from 'path';

export type AddonName = 'onednn' | 'jpeg';

/** The built addon's path (which may not exist yet), or undefined when no folder above holds accel/<addon>/. */
export function addonFile(addon: AddonName, file: string): string | undefined {
  let dir = fs.realpathSync(__dirname);
  for (;;) {
    const source = path.join(dir, 'accel', addon);
    if (fs.existsSync(path.join(source, 'binding.gyp'))) return path.join(source, 'build', 'Release', file);
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}
