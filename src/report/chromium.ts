/**
 * Headless Chromium for the report's screenshots and the browser tests: Debian's `chromium` driven by playwright-core,
 * which cannot download a browser of its own here.
 */
import * as fs from 'fs';
import type { Browser } from 'playwright-core';

export const CHROMIUM_CANDIDATES = [
  process.env.PNEUMO_CHROMIUM,
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
].filter((p): p is string => Boolean(p));

export function chromiumPath(): string | null {
  return CHROMIUM_CANDIDATES.find((p) => fs.existsSync(p)) ?? null;
}

/** Launches headless Chromium with nothing that reaches out to the network; errors name the package to install. */
export async function launchChromium(): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!executablePath) {
    throw new Error(`No Chromium found (tried ${CHROMIUM_CANDIDATES.join(', ')}; or set PNEUMO_CHROMIUM): apt-get install chromium`);
  }
  let playwright: typeof import('playwright-core');
  try {
    playwright = await import('playwright-core');
  } catch {
    throw new Error('playwright-core is not installed (it is a dev dependency): run `npm install` without --omit=dev.');
  }
  return playwright.chromium.launch({
    executablePath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
