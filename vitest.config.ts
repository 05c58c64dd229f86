import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    setupFiles: ['tests/setup-yield.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // tfjs keeps one global engine per process; isolated forks keep backends and memory counts per file.
    pool: 'forks',
    // Convolution timings taken while other test files run must not become a later run's choices
    // (src/accel/onednn/conv-choices.ts); its own test turns it on for a file of its own.
    env: { PNEUMO_NATIVE_CHOICES: 'off' },
  },
});
