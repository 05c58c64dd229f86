/** The run folder: layout and atomic writes, naming, one writer at a time, metrics.json, reading runs back. */
export * from './layout';
export * from './model-files';
export * from './naming';
export * from './lock';
export * from './metrics-file';
export * from './read';
