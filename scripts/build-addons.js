#!/usr/bin/env node
// postinstall: builds the two optional native addons (the libjpeg-turbo decoder and the oneDNN backend).
// Each is a speed-up, never a requirement, so nothing here may fail `npm ci`: a missing compiler or library
// is reported in one line and the project falls back to sharp and the wasm backend.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

if (process.env.PNEUMO_SKIP_ADDONS === '1') {
  console.log('optional native addons: skipped (PNEUMO_SKIP_ADDONS=1)');
  process.exit(0);
}

const root = path.resolve(__dirname, '..');
const builds = [
  { name: 'JPEG decoder', cmd: process.execPath, args: [path.join(root, 'src/data/native/build-addon.js')] },
  { name: 'oneDNN backend', cmd: 'sh', args: [path.join(root, 'native/build.sh')] },
];
for (const b of builds) {
  const r = spawnSync(b.cmd, b.args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) console.warn(`optional ${b.name} was not built; the project works without it (slower).`);
}
