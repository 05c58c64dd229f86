/** Kept so existing imports work: the run layout now lives in src/runs/. */
export * from './runs/layout';
export { findLatestRun } from './runs/read';
