// Shared helpers for benchmarks: percentiles and the BENCH line format.

export function percentile(sortedAsc: readonly number[], p: number): number {
  if (sortedAsc.length === 0) return Number.NaN;
  const i = Math.min(sortedAsc.length - 1, Math.max(0, Math.ceil((p / 100) * sortedAsc.length) - 1));
  return sortedAsc[i]!;
}

/** Prints one figure: `BENCH <name> <value> <unit>`; names are lower-case and dashed. */
export function bench(name: string, value: number, unit: string): void {
  if (!/^[a-z0-9]+(-[a-z0-9]+)*$/.test(name)) throw new Error(`bad bench name ${name}`);
  const v = Number.isInteger(value) ? String(value) : value.toPrecision(4);
  console.log(`BENCH ${name} ${v} ${unit}`);
}
