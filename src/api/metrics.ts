/**
 * Prometheus metrics in the text exposition format (version 0.0.4): request
 * counts and latency histograms recorded by the API, plus gauges and
 * counters read from the driver at scrape time (devices, snapshots, storage,
 * copy-on-write copies, events), the NBD server's connections, requests,
 * bytes and errors by command (userspace backend), and the process's own
 * (build info, memory, open fds, event-loop lag).
 *
 * @module
 */

import type { SnapshotDriver } from "../driver.ts";
import type { NbdStats } from "../nbd/stats.ts";
import { processMetricLines } from "./process_metrics.ts";
import { SERVICE_VERSION } from "../version.ts";

/** Options of {@link Metrics}. */
export interface MetricsOptions {
  /** The NBD server's counters (userspace backend), when there is one. */
  nbdStats?: NbdStats;
}

/** Media type of the exposition format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const LATENCY_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30];

interface Histogram {
  buckets: number[];
  sum: number;
  count: number;
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function labels(entries: Record<string, string | number>): string {
  const parts = Object.entries(entries).map(([k, v]) => `${k}="${escapeLabel(String(v))}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** Collects API metrics and renders them with the driver's. */
export class Metrics {
  readonly #requests = new Map<string, number>();
  readonly #latency = new Map<string, Histogram>();
  #eventsDelivered = 0;
  readonly #nbdStats: NbdStats | undefined;

  /** A registry; `options.nbdStats` adds the NBD metrics. */
  constructor(options: MetricsOptions = {}) {
    this.#nbdStats = options.nbdStats;
  }

  /** Records one finished request of `route` (the operation id) with its status and duration. */
  recordRequest(route: string, method: string, status: number, seconds: number): void {
    const key = JSON.stringify([route, method, status]);
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    let histogram = this.#latency.get(route);
    if (!histogram) {
      histogram = { buckets: LATENCY_BUCKETS_SECONDS.map(() => 0), sum: 0, count: 0 };
      this.#latency.set(route, histogram);
    }
    LATENCY_BUCKETS_SECONDS.forEach((bound, i) => {
      if (seconds <= bound) histogram.buckets[i]++;
    });
    histogram.sum += seconds;
    histogram.count++;
  }

  /** Counts a snapshot event handed to a client. */
  recordEventDelivered(): void {
    this.#eventsDelivered++;
  }

  /** Renders every metric, reading current state from `driver`. */
  async render(driver: SnapshotDriver): Promise<string> {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    const [devices, snapshots, stats, version] = await Promise.all([
      driver.listDevices(),
      driver.listSnapshots(),
      driver.stats?.(),
      driver.version(),
    ]);
    lines.push(...await processMetricLines({ version: SERVICE_VERSION, backend: version.backend }));

    metric("blksnap_devices", "gauge", "Attached (tracked) devices.");
    lines.push(`blksnap_devices ${devices.length}`);
    metric("blksnap_snapshots", "gauge", "Snapshots by state.");
    for (const state of ["created", "taken", "corrupted"] as const) {
      const count = snapshots.filter((s) => s.state === state).length;
      lines.push(`blksnap_snapshots${labels({ state })} ${count}`);
    }
    metric("blksnap_diff_storage_used_bytes", "gauge", "Difference storage handed out to chunks.");
    for (const s of snapshots) {
      if (s.storage) {
        lines.push(
          `blksnap_diff_storage_used_bytes${labels({ snapshot: s.id })} ${s.storage.usedBytes}`,
        );
      }
    }
    metric(
      "blksnap_diff_storage_capacity_bytes",
      "gauge",
      "Current size of the difference storage.",
    );
    for (const s of snapshots) {
      if (s.storage) {
        lines.push(
          `blksnap_diff_storage_capacity_bytes${
            labels({ snapshot: s.id })
          } ${s.storage.capacityBytes}`,
        );
      }
    }
    metric("blksnap_diff_storage_limit_bytes", "gauge", "Limit of the difference storage.");
    for (const s of snapshots) {
      if (s.storage) {
        lines.push(
          `blksnap_diff_storage_limit_bytes${labels({ snapshot: s.id })} ${s.storage.limitBytes}`,
        );
      }
    }
    if (stats?.cowCopies !== undefined) {
      metric(
        "blksnap_cow_copies_total",
        "counter",
        "Chunks copied to memory before their first overwrite.",
      );
      lines.push(`blksnap_cow_copies_total ${stats.cowCopies}`);
    }
    if (stats?.chunksStored !== undefined) {
      metric("blksnap_chunks_stored_total", "counter", "Chunks written to difference storage.");
      lines.push(`blksnap_chunks_stored_total ${stats.chunksStored}`);
    }
    if (stats?.events !== undefined) {
      metric("blksnap_events_total", "counter", "Snapshot events raised by the backend.");
      lines.push(`blksnap_events_total ${stats.events}`);
    }
    metric("blksnap_events_delivered_total", "counter", "Snapshot events handed to API clients.");
    lines.push(`blksnap_events_delivered_total ${this.#eventsDelivered}`);

    if (this.#nbdStats) this.#renderNbd(this.#nbdStats, metric, lines);

    metric("blksnap_http_requests_total", "counter", "HTTP requests by route, method and status.");
    for (const [key, count] of this.#requests) {
      const [route, method, status] = JSON.parse(key) as [string, string, number];
      lines.push(`blksnap_http_requests_total${labels({ route, method, status })} ${count}`);
    }
    metric("blksnap_http_request_duration_seconds", "histogram", "HTTP request latency by route.");
    for (const [route, histogram] of this.#latency) {
      LATENCY_BUCKETS_SECONDS.forEach((bound, i) => {
        lines.push(
          `blksnap_http_request_duration_seconds_bucket${labels({ route, le: bound })} ${
            histogram.buckets[i]
          }`,
        );
      });
      lines.push(
        `blksnap_http_request_duration_seconds_bucket${
          labels({ route, le: "+Inf" })
        } ${histogram.count}`,
        `blksnap_http_request_duration_seconds_sum${labels({ route })} ${histogram.sum}`,
        `blksnap_http_request_duration_seconds_count${labels({ route })} ${histogram.count}`,
      );
    }
    return lines.join("\n") + "\n";
  }

  #renderNbd(
    nbd: NbdStats,
    metric: (name: string, type: string, help: string) => void,
    lines: string[],
  ): void {
    metric("blksnap_nbd_connections", "gauge", "NBD connections open.");
    lines.push(`blksnap_nbd_connections ${nbd.connectionsOpen}`);
    metric("blksnap_nbd_connections_total", "counter", "NBD connections accepted.");
    lines.push(`blksnap_nbd_connections_total ${nbd.connectionsTotal}`);
    const byCommand = (name: string, help: string, counts: Record<string, number>) => {
      metric(name, "counter", help);
      for (const [command, count] of Object.entries(counts)) {
        lines.push(`${name}${labels({ command })} ${count}`);
      }
    };
    byCommand("blksnap_nbd_requests_total", "NBD requests by command.", nbd.requests());
    byCommand(
      "blksnap_nbd_request_bytes_total",
      "Bytes NBD requests covered (read, written, trimmed, zeroed, queried) by command.",
      nbd.bytes(),
    );
    byCommand(
      "blksnap_nbd_errors_total",
      "NBD requests answered with an error (refusals included) by command.",
      nbd.errors(),
    );
  }
}
