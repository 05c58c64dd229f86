/**
 * Where the optional native addons lie once built: accel/<addon>/build/Release/<file> in the checkout that holds
 * this code. Found by walking up from this file's real location, so it is the same from src/accel/ (vitest,
 * vite-node), from dist/accel/ (the compiled commands, the notebooks) and through a linked dist/ (the live notebook
 * test links one, and a runtime may keep the link in __dirname).
 */
import * as fs from 'fs';
import * as path from 'path';

export type AddonName = 'onednn' | 'jpeg';

/** The checkout holding this code: the nearest folder above it with accel/<addon>/; undefined where there is none. */
function checkoutWith(addon: AddonName): string | undefined {
  let dir = fs.realpathSync(__dirname);
  for (;;) {
    if (fs.existsSync(path.join(dir, 'accel', addon, 'binding.gyp'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** The built addon's path (which may not exist yet), or undefined when no folder above holds accel/<addon>/. */
export function addonFile(addon: AddonName, file: string): string | undefined {
  const root = checkoutWith(addon);
  return root && path.join(root, 'accel', addon, 'build', 'Release', file);
}

/** A file in that checkout's outputs/cache/ (git ignores outputs/), whatever the working folder. */
export function checkoutCacheFile(file: string): string | undefined {
  const root = checkoutWith('onednn');
  return root && path.join(root, 'outputs', 'cache', file);
}
