/** The library surface, for scripts that import the package rather than one module (notebooks import modules). */
export * from './types';
export * from './data/discover';
export * from './data/split';
export * from './data/decode';
export * from './data/batches';
export * from './data/demo';
export * from './augment';
export * from './model';
export * from './accel';
export * from './train/train';
export * from './train/callbacks';
export * from './metrics';
export * from './evaluate';
export * from './gradcam';
export * from './pipeline';
export * from './run-dir';
