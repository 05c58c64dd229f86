#!/usr/bin/env node
// Empties dist/ before tsc writes it: tsc never deletes, so a module moved into a folder (src/pipeline.ts ->
// src/pipeline/index.ts) would leave dist/pipeline.js behind, and require('../dist/pipeline') would load the stale file.
'use strict';
require('fs').rmSync(require('path').join(__dirname, '..', 'dist'), { recursive: true, force: true });
