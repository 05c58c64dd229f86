#!/usr/bin/env node
// Builds the optional native addons: `node accel/build.js` builds both (npm's postinstall), `node accel/build.js
// onednn` or `node accel/build.js jpeg` one (`npm run build:native`, `npm run build:jpeg`). See accel/README.md.
//
// Each addon is a speed-up, never a requirement, so building both may never fail `npm ci`: a missing compiler or
// library is reported in one line and the project falls back to the wasm backend and to sharp. Building the oneDNN
// addon on its own exits non-zero on a real compile error (log in accel/onednn/build.log); the JPEG decoder's build
// only ever warns.
'use strict';
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

/** Commands on PATH, as `command -v` finds them. */
function onPath(cmd) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, cmd)));
}

/** node-gyp, from this checkout's devDependencies; undefined when it is not installed. */
function nodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  } catch {
    return undefined;
  }
}

/**
 * --nodedir for node-gyp: the headers that ship with this Node (Debian/nodesource install them), so nothing is
 * downloaded offline. None when npm already says where they are.
 */
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  for (const prefix of [path.dirname(path.dirname(process.execPath)), '/usr']) {
    if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return [`--nodedir=${prefix}`];
  }
  return [];
}

/** `node-gyp rebuild` of dir, as arguments to node. */
const gypCommand = (gyp, dir) => [gyp, 'rebuild', '-C', dir, ...nodedirArgs()];

/**
 * Runs `node-gyp rebuild` in dir, with its output in dir/build.log; true on success. env: the build's environment
 * (PNEUMO_NATIVE_MARCH picks the oneDNN addon's -march, default native).
 */
function gypRebuild(gyp, dir, env = process.env) {
  const fd = fs.openSync(path.join(dir, 'build.log'), 'w');
  try {
    return spawnSync(process.execPath, gypCommand(gyp, dir), { cwd: dir, env, stdio: ['ignore', fd, fd] }).status === 0;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * gypRebuild without blocking the event loop, resolving to the same: a vitest worker must keep answering its runner
 * while a build runs (one blocked for over 60 s fails the whole run with "Timeout calling onTaskUpdate").
 */
function gypRebuildAsync(gyp, dir, env = process.env) {
  const fd = fs.openSync(path.join(dir, 'build.log'), 'w');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, gypCommand(gyp, dir), { cwd: dir, env, stdio: ['ignore', fd, fd] });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  }).finally(() => fs.closeSync(fd));
}

function logLines(dir) {
  try {
    return fs.readFileSync(path.join(dir, 'build.log'), 'utf8').trimEnd().split('\n');
  } catch {
    return [];
  }
}

const DNNL_HEADERS = ['/usr/include', '/usr/local/include'].flatMap((d) => [
  path.join(d, 'dnnl.hpp'),
  path.join(d, 'oneapi', 'dnnl', 'dnnl.hpp'),
]);

/** The oneDNN backend (accel/onednn): 'ok', 'skipped' (a prerequisite is missing) or 'failed' (compile error). */
function buildOnednn() {
  const dir = path.join(__dirname, 'onednn');
  const missing = [];
  if (!onPath('c++')) missing.push('g++');
  if (!onPath('make')) missing.push('make');
  if (!onPath('python3')) missing.push('python3');
  if (!DNNL_HEADERS.some((f) => fs.existsSync(f))) missing.push('libdnnl-dev');
  const gyp = nodeGyp();
  if (missing.length > 0 || !gyp) {
    const what =
      missing.length > 0
        ? `missing ${missing.join(' ')} (install with: apt-get install -y ${missing.join(' ')})`
        : 'node-gyp not installed';
    console.log(`build:native skipped: ${what}; the native backend stays off.`);
    return 'skipped';
  }
  if (gypRebuild(gyp, dir)) {
    console.log(`build:native ok: ${path.join(dir, 'build', 'Release', 'pneumo_native.node')}`);
    return 'ok';
  }
  console.log(logLines(dir).slice(-30).join('\n'));
  console.log(`build:native FAILED (full log: ${path.relative(root, path.join(dir, 'build.log'))})`);
  return 'failed';
}

/** The libjpeg-turbo decoder (accel/jpeg): 'ok' or 'skipped'; it never fails the caller. */
function buildJpeg() {
  const dir = path.join(__dirname, 'jpeg');
  const gyp = nodeGyp();
  if (gyp && gypRebuild(gyp, dir)) {
    console.log(`native JPEG decoder built: ${path.join(dir, 'build', 'Release', 'jpeg_gray.node')}`);
    return 'ok';
  }
  const why = gyp
    ? logLines(dir)
        .filter((l) => /error/i.test(l))
        .slice(0, 3)
        .join(' | ')
    : 'node-gyp not installed';
  console.warn(
    `native JPEG decoder not built (${why || 'node-gyp failed'}). Decoding uses sharp instead (slower, same pixels ` +
      'within one grey level). To build it: apt-get install g++ make libjpeg62-turbo-dev, then run npm run build:jpeg.',
  );
  return 'skipped';
}

const ADDONS = {
  jpeg: { name: 'JPEG decoder', build: buildJpeg },
  onednn: { name: 'oneDNN backend', build: buildOnednn },
};

function main() {
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((w) => !(w in ADDONS));
  if (unknown.length > 0) {
    console.error(`accel/build.js: unknown addon '${unknown.join("', '")}'; use one of: ${Object.keys(ADDONS).join(', ')} (none: all).`);
    return 2;
  }
  if (wanted.length === 0) {
    // All of them: npm's postinstall, which nothing here may fail.
    if (process.env.PNEUMO_SKIP_ADDONS === '1') {
      console.log('optional native addons: skipped (PNEUMO_SKIP_ADDONS=1)');
      return 0;
    }
    for (const addon of Object.values(ADDONS)) {
      if (addon.build() === 'failed') console.warn(`optional ${addon.name} was not built; the project works without it (slower).`);
    }
    return 0;
  }
  return wanted.map((w) => ADDONS[w].build()).includes('failed') ? 1 : 0;
}

// tests/native-isa-builds.test.ts builds the addon for other vector widths with these.
module.exports = { gypRebuild, gypRebuildAsync, nodeGyp };

if (require.main === module) process.exitCode = main();
