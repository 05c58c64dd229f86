import * as path from 'path';

/**
 * The repository root, found from this module's own location (src/paths.ts under vitest, dist/paths.js when
 * compiled: one level down either way), so CLIs and notebooks find notebooks/, outputs/ and the venvs from any cwd.
 */
export const repoRoot = path.resolve(__dirname, '..');
