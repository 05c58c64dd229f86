#!/usr/bin/env node
// Builds the optional native JPEG decoder (jpeg_gray.node). Never fails the caller: without a C++ compiler or
// libjpeg headers, decoding simply stays on the portable sharp path (slower), and we say so.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const args = ['rebuild', '-C', __dirname];
// Use the headers that ship with this Node (Debian/nodesource install them) instead of downloading them.
const prefix = path.dirname(path.dirname(process.execPath));
if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

let gyp;
try {
  gyp = require.resolve('node-gyp/bin/node-gyp.js');
} catch {
  gyp = null;
}
const result = gyp ? spawnSync(process.execPath, [gyp, ...args], { stdio: ['ignore', 'ignore', 'pipe'] }) : null;
if (result && result.status === 0) {
  console.log(`native JPEG decoder built: ${path.join(__dirname, 'build', 'Release', 'jpeg_gray.node')}`);
} else {
  const why = result ? String(result.stderr).split('\n').filter((l) => /error/i.test(l)).slice(0, 3).join(' | ') : 'node-gyp not installed';
  console.warn(
    `native JPEG decoder not built (${why || 'node-gyp failed'}). Decoding uses sharp instead (slower, same pixels ` +
      'within one grey level). To build it: apt-get install g++ make libjpeg62-turbo-dev, then run npm run build:jpeg.',
  );
}
