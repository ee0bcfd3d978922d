import assert from "node:assert/strict";
import { join } from "node:path";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { nbdsh, pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, withService } from "../_helpers/service_fixture.ts";
import { SERVICE_VERSION } from "../../src/version.ts";

const MIB = 1 << 20;
const noNbdsh = toolsMissing("nbdsh");

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Parses the Prometheus text format strictly enough to catch malformed
 * output: every sample belongs to a family declared by # HELP and # TYPE
 * before it, names and labels are well formed, values are numbers.
 */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  const types = new Map<string, string>();
  const helped = new Set<string>();
  const samples: Sample[] = [];
  for (const line of text.slice(0, -1).split("\n")) {
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line);
    if (help) {
      helped.add(help[1]);
      continue;
    }
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/
      .exec(line);
    if (type) {
      assert.ok(!types.has(type[1]), `${type[1]} declared twice`);
      types.set(type[1], type[2]);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(sample, `malformed line: ${line}`);
    const [, name, labelText, valueText] = sample;
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(types.has(family) && helped.has(family), `${name} has no HELP/TYPE before it`);
    const labels: Record<string, string> = {};
    for (const pair of (labelText ?? "").match(/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"/g) ?? []) {
      const at = pair.indexOf("=");
      labels[pair.slice(0, at)] = JSON.parse(pair.slice(at + 1));
    }
    const value = valueText === "+Inf" ? Infinity : Number(valueText);
    assert.ok(!Number.isNaN(value), `bad value in ${line}`);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0].value;
}

Deno.test("GET /metrics: device, snapshot and storage gauges in the Prometheus text format", async () => {
  await withService({}, async ({ client, fetch, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    await client.devices.attach({ path: await makeDisk("b.img", MIB), name: "b" });
    const taken = await client.snapshots.create({
      devices: ["a"],
      diffStorage: { path: join(allowed, "diff-a"), limitBytes: 2 * MIB },
    });
    await client.snapshots.take(taken.id);
    const created = await client.snapshots.create({
      devices: ["b"],
      diffStorage: { path: join(allowed, "diff-b"), limitBytes: MIB },
    });
    const response = await fetch("/metrics");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const { samples, types } = parseExposition(await response.text());
    assert.equal(types.get("blksnap_devices"), "gauge");
    assert.equal(valueOf(samples, "blksnap_devices"), 2);
    assert.equal(valueOf(samples, "blksnap_snapshots", { state: "taken" }), 1);
    assert.equal(valueOf(samples, "blksnap_snapshots", { state: "created" }), 1);
    assert.equal(valueOf(samples, "blksnap_snapshots", { state: "corrupted" }), 0);
    for (const snapshot of [taken, created]) {
      const info = await client.snapshots.get(snapshot.id);
      const labels = { snapshot: snapshot.id };
      assert.equal(
        valueOf(samples, "blksnap_diff_storage_limit_bytes", labels),
        info.storage!.limitBytes,
      );
      assert.equal(
        valueOf(samples, "blksnap_diff_storage_capacity_bytes", labels),
        info.storage!.capacityBytes,
      );
      assert.equal(valueOf(samples, "blksnap_diff_storage_used_bytes", labels), 0);
    }
    await client.snapshots.destroy(created.id);
    const after = parseExposition(await client.metrics()).samples;
    assert.equal(valueOf(after, "blksnap_snapshots", { state: "created" }), 0);
    assert.ok(!after.some((s) => s.labels.snapshot === created.id), "gone with its snapshot");
  });
});

Deno.test({
  name: "GET /metrics: the CoW and storage counters rise after a copy-on-write through NBD",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async ({ client, makeDisk, allowed, root }) => {
      const device = await client.devices.attach({
        path: await makeDisk("a.img", MIB),
        name: "a",
      });
      const snapshot = await client.snapshots.create({
        devices: ["a"],
        diffStorage: { path: join(allowed, "diff"), limitBytes: 2 * MIB },
      });
      await client.snapshots.take(snapshot.id);
      const before = parseExposition(await client.metrics());
      assert.equal(before.types.get("blksnap_cow_copies_total"), "counter");
      const copies = valueOf(before.samples, "blksnap_cow_copies_total");
      await nbdWrite(device.locator, [
        { offset: 0, data: pattern(100, 1) },
        { offset: 5 * API_BLOCK_BYTES, data: pattern(100, 2) },
        { offset: 5 * API_BLOCK_BYTES + 200, data: pattern(100, 3) }, // same chunk: no copy
      ], { scratchDir: root });
      let samples = parseExposition(await client.metrics()).samples;
      assert.equal(valueOf(samples, "blksnap_cow_copies_total"), copies + 2);
      // The chunks reach the storage in the background (the store queue's worker).
      for (let i = 0; i < 100; i++) {
        if (valueOf(samples, "blksnap_chunks_stored_total") >= 2) break;
        await new Promise((resolve) => setTimeout(resolve, 20));
        samples = parseExposition(await client.metrics()).samples;
      }
      assert.equal(valueOf(samples, "blksnap_chunks_stored_total"), 2);
      assert.equal(
        valueOf(samples, "blksnap_diff_storage_used_bytes", { snapshot: snapshot.id }),
        2 * API_BLOCK_BYTES,
      );
    });
  },
});

Deno.test("GET /metrics: request counters by route, method and status, and a latency histogram", async () => {
  await withService({}, async ({ client, makeDisk }) => {
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    await client.devices.attach({ path: await makeDisk("b.img", MIB), name: "b" });
    await client.devices.get("a");
    await client.devices.get("missing").catch(() => {});
    await client.version();
    const { samples, types } = parseExposition(await client.metrics());
    assert.equal(types.get("blksnap_http_requests_total"), "counter");
    assert.equal(types.get("blksnap_http_request_duration_seconds"), "histogram");
    const requests = (labels: Record<string, string>) =>
      valueOf(samples, "blksnap_http_requests_total", labels);
    assert.equal(requests({ route: "attachDevice", method: "post", status: "201" }), 2);
    assert.equal(requests({ route: "getDevice", method: "get", status: "200" }), 1);
    assert.equal(requests({ route: "getDevice", method: "get", status: "404" }), 1);
    assert.equal(requests({ route: "getVersion", method: "get", status: "200" }), 1);
    for (
      const [route, count] of [["attachDevice", 2], ["getDevice", 2], ["getVersion", 1]] as const
    ) {
      const buckets = samples.filter((s) =>
        s.name === "blksnap_http_request_duration_seconds_bucket" && s.labels.route === route
      );
      assert.ok(buckets.length >= 2, route);
      const values = buckets.map((b) => b.value);
      assert.deepEqual(values, [...values].sort((x, y) => x - y), `${route}: cumulative buckets`);
      assert.equal(buckets.at(-1)!.labels.le, "+Inf");
      assert.equal(buckets.at(-1)!.value, count);
      assert.equal(
        valueOf(samples, "blksnap_http_request_duration_seconds_count", { route }),
        count,
      );
      assert.ok(valueOf(samples, "blksnap_http_request_duration_seconds_sum", { route }) > 0);
    }
    assert.ok(!samples.some((s) => s.labels.route === "detachDevice"), "routes not called");
  });
});

Deno.test("GET /metrics: build info and the process's memory, open fds and event-loop lag", async () => {
  await withService({}, async ({ fetch }) => {
    const { samples, types } = parseExposition(await (await fetch("/metrics")).text());
    assert.equal(
      valueOf(samples, "blksnap_build_info", {
        version: SERVICE_VERSION,
        backend: "userspace",
        deno: Deno.version.deno,
      }),
      1,
    );
    const rss = valueOf(samples, "process_resident_memory_bytes");
    assert.ok(rss > MIB && rss < 64 * 1024 * MIB, `rss ${rss}`);
    // The fixture's service runs in this very process, beside other test modules that open and
    // close descriptors of their own: open 200 more, and the gauge must rise and fall by about that.
    const openFds = async () =>
      valueOf(parseExposition(await (await fetch("/metrics")).text()).samples, "process_open_fds");
    const extra = Array.from({ length: 200 }, () => Deno.openSync("/dev/null"));
    const withExtra = await openFds();
    for (const file of extra) file.close();
    const without = await openFds();
    assert.ok(withExtra >= 200, `open fds ${withExtra} with 200 extra open`);
    assert.ok(
      withExtra - without >= 150,
      `open fds ${withExtra} with 200 extra, ${without} without`,
    );
    const lag = valueOf(samples, "blksnap_event_loop_lag_seconds");
    assert.ok(lag >= 0 && lag < 30, `lag ${lag}`);
    assert.ok(valueOf(samples, "process_start_time_seconds") <= Date.now() / 1000);
    assert.equal(types.get("process_open_fds"), "gauge");
  });
});

Deno.test({
  name: "GET /metrics: NBD connections, requests and bytes by command, errors",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async ({ client, fetch, makeDisk, allowed, root }) => {
      const device = await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
      await nbdWrite(device.locator, [
        { offset: 0, data: pattern(4096, 1) },
        { offset: 65536, data: pattern(8192, 2) },
      ], { scratchDir: root });
      const snapshot = await client.snapshots.create({
        devices: ["a"],
        diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
      });
      const taken = await client.snapshots.take(snapshot.id);
      // A write to the read-only image, past libnbd's own checks: the server refuses it.
      const refused = await nbdsh(
        taken.devices[0].locator!,
        [
          "h.set_strict_mode(0)",
          "h.connect_uri(uri)",
          "try:\n    h.pwrite(b'x' * 512, 0)\nexcept nbd.Error:\n    print('refused')",
          "h.shutdown()",
        ].join("\n"),
      );
      assert.equal(refused.trim(), "refused");
      const { samples } = parseExposition(await (await fetch("/metrics")).text());
      assert.equal(valueOf(samples, "blksnap_nbd_connections_total"), 2);
      assert.equal(valueOf(samples, "blksnap_nbd_connections"), 0, "both closed again");
      assert.equal(valueOf(samples, "blksnap_nbd_requests_total", { command: "write" }), 3);
      assert.equal(
        valueOf(samples, "blksnap_nbd_request_bytes_total", { command: "write" }),
        4096 + 8192 + 512,
      );
      assert.equal(valueOf(samples, "blksnap_nbd_requests_total", { command: "flush" }), 1);
      assert.equal(valueOf(samples, "blksnap_nbd_errors_total", { command: "write" }), 1);
      assert.equal(valueOf(samples, "blksnap_nbd_errors_total", { command: "read" }), 0);
    });
  },
});

Deno.test("GET /metrics: a HEAD request counts as its GET route, not as unmatched", async () => {
  await withService({}, async ({ fetch }) => {
    const head = await fetch("/v1/devices", { method: "HEAD" });
    assert.equal(head.status, 200);
    await head.body?.cancel();
    const { samples } = parseExposition(await (await fetch("/metrics")).text());
    assert.equal(
      valueOf(samples, "blksnap_http_requests_total", {
        route: "listDevices",
        method: "head",
        status: "200",
      }),
      1,
    );
    assert.ok(!samples.some((s) => s.labels.route === "unmatched"));
  });
});

Deno.test("GET /metrics: the status page and its redirect count as their own routes", async () => {
  await withService({}, async ({ fetch }) => {
    for (const path of ["/ui/", "/ui"]) {
      const response = await fetch(path, { redirect: "manual" });
      await response.body?.cancel();
    }
    const { samples } = parseExposition(await (await fetch("/metrics")).text());
    const count = (route: string, status: string) =>
      valueOf(samples, "blksnap_http_requests_total", { route, method: "get", status });
    assert.equal(count("statusPage", "200"), 1);
    assert.equal(count("statusPageRedirect", "308"), 1);
    assert.ok(!samples.some((s) => s.labels.route === "unmatched"));
  });
});
