/**
 * The benchmark's tables: one column per contender, ratio columns against
 * nbdkit (the targets: sequential >= 1.0 of nbdkit file, 4 KiB
 * random at QD16 >= 0.8 of nbdkit file, first writes >= 1.0 of nbdkit's cow
 * filter).
 *
 * @module
 */

import type { Contender } from "./contenders.ts";

/** Everything a bench run measured. */
export interface Results {
  /** CPU, cores, kernel, Deno version. */
  machine: string;
  /** File size in MiB. */
  sizeMiB: number;
  /** fio runtime per measurement, in seconds. */
  runtimeSeconds: number;
  /** Measurements per point (the median is reported). */
  repeat: number;
  /** Measurements by contender key, by metric key. */
  rows: Record<string, Record<string, number>>;
}

const SUITE: [string, string][] = [
  ["seqRead", "seq read MiB/s"],
  ["seqWrite", "seq write MiB/s"],
  ["randReadQd1", "4K rand read QD1 IOPS"],
  ["randReadQd16", "4K rand read QD16 IOPS"],
  ["randWriteQd1", "4K rand write QD1 IOPS"],
  ["randWriteQd16", "4K rand write QD16 IOPS"],
];

const FIRST_WRITES: [string, string][] = [
  ["cowSeqWrite", "seq first writes MiB/s"],
  ["cowRandWriteQd16", "4K rand first writes QD16 IOPS"],
];

const SPARSE: [string, string][] = [
  ["sparseSeconds", "seconds"],
  ["sparseAllocatedMiB", "MiB allocated in the target"],
];

const MEMORY: [string, string][] = [
  ["chunks", "chunks"],
  ["bytesPerChunk", "bytes per chunk (target <= 16)"],
  ["peakRssMiB", "peak RSS MiB"],
  ["seconds", "seconds to copy all"],
];

/** The Markdown tables for `results`. */
export function formatTables(results: Results, contenders: Contender[]): string {
  const suite = contenders.filter((c) => c.suite && results.rows[c.key]);
  const base = results.rows["nbdkit-file"];
  const header = (first: string, columns: [string, string][]) => [
    `| ${first} | ${columns.map(([, title]) => title).join(" | ")} |`,
    `|---|${columns.map(() => "---:").join("|")}|`,
  ];
  const lines = [
    `Machine: ${results.machine}; ${results.sizeMiB} MiB file, fio ${results.runtimeSeconds} s ` +
    `per point, median of ${results.repeat}.`,
    "",
    ...header("server", SUITE),
    ...suite.map((c) =>
      `| ${c.label} | ${SUITE.map(([key]) => format(results.rows[c.key][key])).join(" | ")} |`
    ),
  ];
  if (base !== undefined) {
    lines.push("", ...header("ratio to nbdkit file", SUITE));
    for (const c of suite.filter((c) => c.ours)) {
      const cells = SUITE.map(([key]) => ratio(results.rows[c.key][key], base[key]));
      lines.push(`| ${c.label} | ${cells.join(" | ")} |`);
    }
  }
  const first = contenders.filter((c) => c.firstWrite && results.rows[c.key]?.cowSeqWrite);
  if (first.length > 0) {
    lines.push("", ...header("first writes after a take", FIRST_WRITES));
    for (const c of first) {
      const cells = FIRST_WRITES.map(([key]) => format(results.rows[c.key][key]));
      lines.push(`| ${c.label} | ${cells.join(" | ")} |`);
    }
    const cow = results.rows["nbdkit-cow"];
    for (const c of first.filter((c) => c.ours && cow !== undefined)) {
      const cells = FIRST_WRITES.map(([key]) => ratio(results.rows[c.key][key], cow[key]));
      lines.push(`| ratio ${c.label} / nbdkit cow | ${cells.join(" | ")} |`);
    }
  }
  const sparse = contenders.filter((c) => results.rows[c.key]?.sparseSeconds !== undefined);
  if (sparse.length > 0) {
    lines.push("", ...header("sparse copy (nbdcopy, 1 GiB, 100 MiB data)", SPARSE));
    for (const c of sparse) {
      const cells = SPARSE.map(([key]) => format(results.rows[c.key][key]));
      lines.push(`| ${c.label} | ${cells.join(" | ")} |`);
    }
  }
  const memory = results.rows["engine-memory"];
  if (memory !== undefined) {
    lines.push("", ...header("engine memory, 512 GiB device, every chunk copied", MEMORY));
    lines.push(`| blksnap engine | ${MEMORY.map(([key]) => format(memory[key])).join(" | ")} |`);
  }
  return lines.join("\n");
}

function format(value: number | undefined): string {
  return value === undefined
    ? "-"
    : value >= 100
    ? Math.round(value).toString()
    : value >= 1
    ? value.toFixed(1)
    : value.toFixed(2);
}

function ratio(value: number | undefined, base: number | undefined): string {
  return value === undefined || base === undefined || base === 0 ? "-" : (value / base).toFixed(2);
}
