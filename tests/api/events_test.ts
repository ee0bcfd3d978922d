import assert from "node:assert/strict";
import { join } from "node:path";
import type { SnapshotEvent } from "../../src/driver.ts";
import { readSse } from "../../src/client/sse.ts";
import { snapshotEvent } from "../../src/api/models.ts";
import { violations } from "../_helpers/api_json_schema.ts";
import { rejectsWithProblem, responseProblem } from "../_helpers/api_problem.ts";
import { nbdRead, nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, type ServiceFixture, withService } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
/** Two chunks' worth: the storage step is larger, so it is set up at the limit at once. */
const SMALL_LIMIT = 2 * API_BLOCK_BYTES;
const noNbdsh = toolsMissing("nbdsh");

/** A taken snapshot of a 1 MiB disk "vda" whose storage holds two chunks. */
async function smallSnapshot(fixture: ServiceFixture): Promise<string> {
  const { client, makeDisk, allowed } = fixture;
  await client.devices.attach({ path: await makeDisk("disk.img", MIB, 7), name: "vda" });
  const snapshot = await client.snapshots.create({
    devices: ["vda"],
    diffStorage: { path: join(allowed, "diff"), limitBytes: SMALL_LIMIT },
  });
  await client.snapshots.take(snapshot.id);
  return snapshot.id;
}

/** Overwrites the first byte of chunks 0..3 of vda through NBD: two more than the storage holds. */
async function overflow(fixture: ServiceFixture): Promise<void> {
  const device = await fixture.client.devices.get("vda");
  const writes = [0, 1, 2, 3].map((chunk) => ({
    offset: chunk * API_BLOCK_BYTES,
    data: pattern(512, 100 + chunk),
  }));
  await nbdWrite(device.locator, writes, { scratchDir: fixture.root });
}

function checkOverflowEvents(events: SnapshotEvent[]): void {
  const codes = events.map((e) => e.code);
  assert.ok(codes.includes("corrupted"), JSON.stringify(events));
  for (const event of events) {
    assert.deepEqual(violations(snapshotEvent.jsonSchema(), event), [], "the documented shape");
    assert.ok(event.timeMs > 0);
    if (event.code === "corrupted") {
      assert.equal(event.errorCode, 28);
      assert.equal(event.errorName, "ENOSPC");
      assert.equal(event.deviceId, "vda");
    } else {
      assert.equal(event.code, "no_space");
      assert.ok(event.requestedSectors > 0);
    }
  }
}

Deno.test("GET .../events answers 204 when no event comes within timeoutMs", async () => {
  await withService({}, async (fixture) => {
    const id = await smallSnapshot(fixture);
    const started = performance.now();
    const response = await fixture.fetch(`/v1/snapshots/${id}/events?timeoutMs=200`);
    assert.equal(response.status, 204);
    assert.equal(await response.text(), "");
    assert.ok(performance.now() - started >= 190, "the poll waited for its timeout");
    assert.equal(await fixture.client.snapshots.waitEvent(id, 0), undefined);
  });
});

Deno.test({
  name:
    "overflowing a small storage raises no_space and corrupted (ENOSPC); reads of the image then fail",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const { client } = fixture;
      const id = await smallSnapshot(fixture);
      await overflow(fixture);
      const events: SnapshotEvent[] = [];
      for (let event; (event = await client.snapshots.waitEvent(id, 5000));) {
        events.push(event);
        if (event.code === "corrupted") break;
      }
      checkOverflowEvents(events);
      assert.deepEqual(events.map((e) => e.code), ["no_space", "corrupted"]);
      const metrics = await client.metrics();
      assert.match(metrics, /^blksnap_events_total 2$/m);
      assert.match(metrics, /^blksnap_events_delivered_total 2$/m);
      assert.match(metrics, /^blksnap_snapshots\{state="corrupted"\} 1$/m);

      const snapshot = await client.snapshots.get(id);
      assert.equal(snapshot.state, "corrupted");
      assert.deepEqual(snapshot.devices.map((d) => [d.errorCode, d.errorName]), [[28, "ENOSPC"]]);
      assert.equal(snapshot.storage!.usedBytes, SMALL_LIMIT);
      const problem = await responseProblem(
        await fixture.fetch(`/v1/snapshots/${id}/images/vda/data`),
        { status: 409, code: "SNAPSHOT_CORRUPTED", errno: "EIO" },
      );
      assert.match(problem.detail, /corrupted/);
      await rejectsWithProblem(client.images.read(id, "vda", { offset: 0, length: 512 }), {
        status: 409,
        code: "SNAPSHOT_CORRUPTED",
        errno: "EIO",
      });
      // The original device lost nothing.
      const device = await client.devices.get("vda");
      for (const chunk of [0, 3]) {
        assert.deepEqual(
          await nbdRead(device.locator, {
            offset: chunk * API_BLOCK_BYTES,
            length: 512,
            scratchDir: fixture.root,
          }),
          pattern(512, 100 + chunk),
        );
      }
    });
  },
});

Deno.test({
  name: "client.snapshots.watch() receives the events over SSE; the stream ends with the snapshot",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const { client } = fixture;
      const id = await smallSnapshot(fixture);
      const received: SnapshotEvent[] = [];
      const gotCorrupted = Promise.withResolvers<void>();
      const watching = (async () => {
        for await (const event of client.snapshots.watch(id)) {
          received.push(event);
          if (event.code === "corrupted") gotCorrupted.resolve();
        }
      })();
      await overflow(fixture);
      await gotCorrupted.promise;
      await client.snapshots.destroy(id);
      await watching;
      checkOverflowEvents(received);
      assert.deepEqual(received.map((e) => e.code), ["no_space", "corrupted"]);
    });
  },
});

Deno.test("GET .../events/stream is text/event-stream and ends with an `end` event on destroy", async () => {
  await withService({}, async (fixture) => {
    const id = await smallSnapshot(fixture);
    const response = await fixture.fetch(`/v1/snapshots/${id}/events/stream`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type")!, /^text\/event-stream/);
    const destroyed = fixture.client.snapshots.destroy(id);
    const messages = [];
    for await (const message of readSse(response.body!)) messages.push(message);
    await destroyed;
    assert.equal(messages.length, 1, JSON.stringify(messages));
    assert.equal(messages[0].event, "end");
    assert.equal(JSON.parse(messages[0].data).code, "NOT_FOUND");
    await responseProblem(await fixture.fetch(`/v1/snapshots/${id}/events/stream`), {
      status: 404,
      code: "NOT_FOUND",
    });
  });
});

Deno.test("client.snapshots.watch() stops when its signal aborts", async () => {
  await withService({}, async (fixture) => {
    const id = await smallSnapshot(fixture);
    const controller = new AbortController();
    const events = fixture.client.snapshots.watch(id, { signal: controller.signal });
    const next = events.next();
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(next, (error: Error) => error.name === "AbortError");
    assert.equal((await fixture.client.snapshots.get(id)).state, "taken");
  });
});

Deno.test({
  name: "an event stream or long poll whose client went away does not swallow the next event",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const id = await smallSnapshot(fixture);
      for (const path of [`events/stream`, `events?timeoutMs=60000`]) {
        // A client of its own that goes away, as a process that ends does: its connection closes.
        const leaving = Deno.createHttpClient({});
        const controller = new AbortController();
        const response = fetch(`${fixture.baseUrl}/v1/snapshots/${id}/${path}`, {
          client: leaving,
          signal: controller.signal,
        });
        if (path.includes("stream")) await response; // headers are back: the stream waits
        await new Promise((resolve) => setTimeout(resolve, 100)); // the service waits for an event
        controller.abort();
        await response.then((r) => r.body?.cancel()).catch(() => {});
        leaving.close();
      }
      await overflow(fixture);
      const events: SnapshotEvent[] = [];
      for (let event; (event = await fixture.client.snapshots.waitEvent(id, 5000));) {
        events.push(event);
        if (event.code === "corrupted") break;
      }
      assert.deepEqual(events.map((e) => e.code), ["no_space", "corrupted"]);
    });
  },
});

Deno.test({
  name: "an event taken for a client that went away goes to a client already waiting, in order",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const id = await smallSnapshot(fixture);
      const leaving = Deno.createHttpClient({});
      const controller = new AbortController();
      const abandoned = fetch(`${fixture.baseUrl}/v1/snapshots/${id}/events?timeoutMs=60000`, {
        client: leaving,
        signal: controller.signal,
      });
      await new Promise((resolve) => setTimeout(resolve, 100)); // the service waits for an event
      controller.abort();
      await abandoned.catch(() => {});
      leaving.close();
      const waiting = fixture.client.snapshots.waitEvent(id, 20_000);
      await new Promise((resolve) => setTimeout(resolve, 100)); // and now for this client too
      await overflow(fixture);
      const first = await waiting;
      assert.equal(first?.code, "no_space", "the waiting client gets the first event");
      const second = await fixture.client.snapshots.waitEvent(id, 5000);
      assert.equal(second?.code, "corrupted");
    });
  },
});
