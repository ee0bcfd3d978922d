import assert from "node:assert/strict";
import { join } from "node:path";
import type { LoggedEvent, SnapshotEvent } from "../../src/driver.ts";
import type { BlksnapClient } from "../../src/client/client.ts";
import { readSse } from "../../src/client/sse.ts";
import { eventPage, snapshotEvent } from "../../src/api/models.ts";
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

/** Long-polls with `after` until a corrupted event; every page in the documented shape. */
async function pollUntilCorrupted(client: BlksnapClient, id: string): Promise<LoggedEvent[]> {
  const events: LoggedEvent[] = [];
  let after = 0;
  for (let round = 0; round < 20 && !events.some((e) => e.code === "corrupted"); round++) {
    const page = await client.snapshots.waitEvents(id, { after, timeoutMs: 5000 });
    assert.deepEqual(violations(eventPage.jsonSchema(), page), [], "the documented page shape");
    assert.equal(page.truncated, false);
    events.push(...page.events);
    after = page.lastId;
  }
  return events;
}

/** Reads an SSE stream until `count` events (not `end`) came; returns them and their id lines. */
async function readStream(body: ReadableStream<Uint8Array>, count: number) {
  const messages: { event: string; id?: string; data: string }[] = [];
  for await (const message of readSse(body)) {
    messages.push(message);
    if (messages.filter((m) => m.event !== "truncated").length >= count) break;
  }
  await body.cancel().catch(() => {});
  return messages;
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

Deno.test("GET .../events answers 200 with no events when none comes within timeoutMs", async () => {
  await withService({}, async (fixture) => {
    const id = await smallSnapshot(fixture);
    const started = performance.now();
    const response = await fixture.fetch(`/v1/snapshots/${id}/events?timeoutMs=200`);
    assert.equal(response.status, 200);
    const page = await response.json();
    assert.deepEqual(violations(eventPage.jsonSchema(), page), []);
    assert.deepEqual([page.events, page.truncated], [[], false]);
    assert.ok(performance.now() - started >= 190, "the poll waited for its timeout");
    const again = await fixture.client.snapshots.waitEvents(id, { timeoutMs: 0 });
    assert.deepEqual(again.events, []);
    assert.equal(again.lastId, page.lastId);
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
      const events = await pollUntilCorrupted(client, id);
      checkOverflowEvents(events);
      assert.deepEqual(events.map((e) => e.code), ["no_space", "corrupted"]);
      assert.equal(events[1].id, events[0].id + 1, "increasing ids");
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
  name: "two SSE consumers and a long poll with after each receive every event of an overflow",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const { client } = fixture;
      const id = await smallSnapshot(fixture);
      const streams = await Promise.all(
        [1, 2].map(() => fixture.fetch(`/v1/snapshots/${id}/events/stream`)),
      );
      const reading = streams.map((response) => readStream(response.body!, 2));
      const { lastId } = await client.snapshots.waitEvents(id, { timeoutMs: 0 });
      const polling = (async () => {
        const events: LoggedEvent[] = [];
        let after = lastId;
        while (events.length < 2) {
          const page = await client.snapshots.waitEvents(id, { after, timeoutMs: 10_000 });
          events.push(...page.events);
          after = page.lastId;
        }
        return events;
      })();
      await new Promise((resolve) => setTimeout(resolve, 100)); // every consumer is waiting
      await overflow(fixture);
      const polled = await polling;
      const streamed = await Promise.all(reading);
      checkOverflowEvents(polled);
      assert.deepEqual(polled.map((e) => e.code), ["no_space", "corrupted"]);
      for (const messages of streamed) {
        assert.deepEqual(messages.map((m) => m.event), ["no_space", "corrupted"]);
        assert.deepEqual(messages.map((m) => Number(m.id)), polled.map((e) => e.id), "id: lines");
        assert.deepEqual(messages.map((m) => JSON.parse(m.data)), polled);
      }
      const metrics = await client.metrics();
      assert.match(metrics, /^blksnap_events_total 2$/m, "two events raised");
      assert.match(metrics, /^blksnap_events_delivered_total 6$/m, "each delivered three times");
    });
  },
});

Deno.test({
  name: "a stream reconnecting with Last-Event-ID misses nothing and repeats nothing",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const id = await smallSnapshot(fixture);
      const first = await fixture.fetch(`/v1/snapshots/${id}/events/stream`);
      const reading = readStream(first.body!, 1);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await overflow(fixture);
      const [seen] = await reading; // the consumer goes away after one event
      assert.equal(seen.event, "no_space");
      const all = { events: await pollUntilCorrupted(fixture.client, id) };
      assert.equal(all.events.length, 2, "both events are raised meanwhile");
      const again = await fixture.fetch(`/v1/snapshots/${id}/events/stream`, {
        headers: { "last-event-id": seen.id! },
      });
      const resumed = await readStream(again.body!, 1);
      assert.deepEqual(resumed.map((m) => [m.event, Number(m.id)]), [[
        "corrupted",
        all.events[1].id,
      ]]);
      const fromStart = await fixture.fetch(`/v1/snapshots/${id}/events/stream?after=0`);
      assert.deepEqual((await readStream(fromStart.body!, 2)).map((m) => m.event), [
        "no_space",
        "corrupted",
      ]);
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
          assert.notEqual(event.code, "truncated");
          if (event.code === "truncated") continue;
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

Deno.test("a stream resuming after an id of an earlier life is told some events are gone", async () => {
  await withService({}, async (fixture) => {
    const id = await smallSnapshot(fixture);
    const response = await fixture.fetch(`/v1/snapshots/${id}/events/stream`, {
      headers: { "last-event-id": "17" },
    });
    const messages = [];
    for await (const message of readSse(response.body!)) {
      messages.push(message);
      break;
    }
    await response.body!.cancel().catch(() => {});
    assert.equal(messages[0].event, "truncated");
    assert.equal(messages[0].id, undefined, "a notice has no id: Last-Event-ID stays");
    assert.equal(JSON.parse(messages[0].data).after, 17);
    await responseProblem(
      await fixture.fetch(`/v1/snapshots/${id}/events/stream`, {
        headers: { "last-event-id": "x1" },
      }),
      { status: 400, code: "INVALID_ARGUMENT" },
    );
  });
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
  name: "streams and long polls whose clients went away leave every event to the others",
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
      const events = await pollUntilCorrupted(fixture.client, id);
      assert.deepEqual(events.map((e) => e.code), ["no_space", "corrupted"]);
    });
  },
});
