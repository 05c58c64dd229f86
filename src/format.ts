/** How numbers read wherever a person sees them: logs, summary.md, the comparison table, the report. */

/** A fraction as a percentage with one decimal, '-' when undefined (e.g. precision with no positive calls). */
export const formatPercent = (x: number): string => (Number.isFinite(x) ? (100 * x).toFixed(1) : '-');

/** An AUC with three decimals, '-' when undefined (a one-class split). */
export const formatAuc = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : '-');

/** Decimal units (1 MB = 1000 KB), as download sizes are quoted. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
