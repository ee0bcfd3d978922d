/**
 * Metrics of the process itself, read at scrape time: resident memory and
 * heap, open file descriptors (Linux: the entries of /proc/self/fd), start
 * time, and the event loop's lag: how late a timer due now fires, measured
 * by the scrape itself (one `setTimeout(0)`), so a service whose one
 * JavaScript thread is kept busy (long synchronous work, a flood of NBD
 * requests) shows it without a sampler running in the background. Plus the
 * build info: a constant 1 labelled with the versions.
 *
 * @module
 */

/** Versions for the build-info metric. */
export interface BuildInfo {
  /** The service's version. */
  version: string;
  /** The backend in use. */
  backend: string;
}

const startedAtSeconds = Date.now() / 1000 - performance.now() / 1000;

function openFileDescriptors(): number | undefined {
  try {
    let count = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) count++;
    return count - 1; // the directory handle this very count holds open
  } catch {
    return undefined;
  }
}

/** How many seconds late a timer due now fires. */
export async function eventLoopLagSeconds(): Promise<number> {
  const due = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 0));
  return (performance.now() - due) / 1000;
}

function escape(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** The process and build-info metrics, as exposition lines. */
export async function processMetricLines(build: BuildInfo): Promise<string[]> {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, value: number, labels = "") => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}${labels} ${value}`);
  };
  const labels = `{version="${escape(build.version)}",backend="${escape(build.backend)}",deno="${
    escape(Deno.version.deno)
  }",v8="${escape(Deno.version.v8)}"}`;
  metric("blksnap_build_info", "gauge", "Build and runtime versions (always 1).", 1, labels);
  const memory = Deno.memoryUsage();
  metric("process_resident_memory_bytes", "gauge", "Resident set size.", memory.rss);
  metric("process_heap_used_bytes", "gauge", "JavaScript heap in use.", memory.heapUsed);
  const fds = openFileDescriptors();
  if (fds !== undefined) {
    metric("process_open_fds", "gauge", "Open file descriptors.", fds);
  }
  metric(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process since the epoch.",
    Math.round(startedAtSeconds * 1000) / 1000,
  );
  metric(
    "blksnap_event_loop_lag_seconds",
    "gauge",
    "How late a timer due at scrape time fired.",
    await eventLoopLagSeconds(),
  );
  return lines;
}
