/**
 * What the real module does with small difference storages, which README's semantics tell API
 * users (through the service's HTTP API on partition 1 of the scratch disk, a file on tmpfs as
 * storage, 256 KiB chunks):
 *
 * - both profiles keep 2 MiB of every storage for themselves (the fill count starts at 4096
 *   sectors), so a 3 MiB limit holds 1 MiB of chunks (4 chunks: the image reads as at take),
 *   and more chunks corrupt the snapshot with ENOSPC; a 2 MiB limit corrupts it at the first
 *   copy-on-write, with no `no_space` event before the `corrupted` one;
 * - upstream: a limit under diff_storage_minimum (1 GiB) sends `no_space`, asking for the limit,
 *   at the first copy-on-write (the storage is then "half full" of its minimum step);
 * - outoftree (VAL-7.0): a file storage is grown to the limit at create and never sends
 *   `no_space`; running out shows only as `corrupted`. Its copied chunks wait in memory until
 *   more than 16 are queued (chunk_maximum_in_queue), so the storage fills, and overflows, only
 *   from the 17th copied chunk on; upstream stores each chunk at once.
 */

import assert from "node:assert/strict";
import type { BlksnapClient } from "../../src/client/mod.ts";
import type { SnapshotEvent } from "../../src/driver.ts";
import { assertSameBytes, randomBytes, readAt, writeAt } from "./_helpers/block_io.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labTest } from "./_helpers/guest.ts";
import { kernelService } from "./_helpers/kernel_service.ts";
import { presentProfile } from "./_helpers/module.ts";
import { scratchPartitions } from "./_helpers/scratch.ts";
import { mountTmpfs } from "./_helpers/tmpfs.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 256 * KiB;

/** A snapshot's event log, read from its start a page at a time. */
interface EventCursor {
  /** The events after those already read, waiting up to `timeoutMs` for one (none: empty). */
  next(timeoutMs: number): Promise<SnapshotEvent[]>;
  /** The events after those already read, until a `corrupted` one or a quiet `timeoutMs`. */
  untilCorrupted(timeoutMs: number): Promise<SnapshotEvent[]>;
}

function eventCursor(client: BlksnapClient, snapshotId: string): EventCursor {
  let after = 0;
  const next = async (timeoutMs: number) => {
    const page = await client.snapshots.waitEvents(snapshotId, { after, timeoutMs });
    after = page.lastId;
    return page.events;
  };
  return {
    next,
    async untilCorrupted(timeoutMs) {
      const events: SnapshotEvent[] = [];
      for (let i = 0; i < 64 && !events.some((e) => e.code === "corrupted"); i++) {
        const page = await next(timeoutMs);
        if (page.length === 0) break;
        events.push(...page);
      }
      return events;
    },
  };
}

/** Writes 4 KiB into chunk `chunk` of `origin` (a copy-on-write of that chunk). */
async function touchChunk(origin: string, chunk: number): Promise<void> {
  await writeAt(origin, chunk * CHUNK + 4 * KiB, randomBytes(4 * KiB));
}

labTest({
  name:
    "kernel: 2 MiB of every storage is the module's; under 1 GiB upstream sends no_space at the first copy-on-write, outoftree never",
  requires: ["service", "module"],
  async fn(t) {
    await withCleanup(async (stack) => {
      const { client } = await kernelService(stack);
      const { origin } = await scratchPartitions();
      const tmpfs = await mountTmpfs(stack, { sizeBytes: 64 * MiB });
      const device = await client.devices.attach({ path: origin, name: "limits" });
      const snapshotWith = async (name: string, limitBytes: number) => {
        const created = await client.snapshots.create({
          devices: [device.id],
          diffStorage: { path: `${tmpfs.dir}/${name}.diff`, limitBytes },
        });
        await client.snapshots.take(created.id);
        return created.id;
      };

      /** Runs `step` on a snapshot with `limitBytes`, destroying it afterwards whatever happens. */
      const withSnapshot = async (
        name: string,
        limitBytes: number,
        step: (id: string) => Promise<void>,
      ) => {
        const id = await snapshotWith(name, limitBytes);
        try {
          await step(id);
        } finally {
          await client.snapshots.destroy(id);
        }
      };
      const upstream = presentProfile() === "upstream";
      /** Chunks to copy before the module writes to the storage at all. */
      const storing = upstream ? 1 : 17;

      await t.step(
        `3 MiB: ${upstream ? "no_space asking for the limit" : "no no_space"}, 1 MiB of chunks fit`,
        () =>
          withSnapshot("three", 3 * MiB, async (id) => {
            const atTake = await readAt(origin, 0, 4 * CHUNK);
            await touchChunk(origin, 0);
            const log = eventCursor(client, id);
            const first = (await log.next(upstream ? 30_000 : 5000))[0];
            if (upstream) {
              assert.ok(
                first?.code === "no_space",
                `no_space first (got ${JSON.stringify(first)})`,
              );
              assert.equal(first.requestedSectors, (3 * MiB) / 512, "it asks for the limit");
            } else {
              assert.equal(first, undefined, "no event at the first copy-on-write");
            }
            for (let chunk = 1; chunk < 4; chunk++) await touchChunk(origin, chunk);
            const quiet = await log.untilCorrupted(3000);
            assert.ok(
              quiet.every((event) => event.code === "no_space"),
              `1 MiB of chunks fit (got ${JSON.stringify(quiet)})`,
            );
            const info = await client.snapshots.get(id);
            assert.equal(info.state, "taken");
            const image = info.devices[0].imageDevicePath!;
            assertSameBytes(await readAt(image, 0, 4 * CHUNK), atTake, image);
            for (let chunk = 4; chunk < 4 + 8 + storing; chunk++) await touchChunk(origin, chunk);
            const events = await log.untilCorrupted(30_000);
            const corrupted = events.at(-1);
            assert.ok(
              corrupted?.code === "corrupted" && corrupted.errorName === "ENOSPC",
              `corrupted with ENOSPC past 1 MiB of chunks (got ${JSON.stringify(events)})`,
            );
            if (!upstream) assert.equal(events.length, 1, "and no no_space before it");
          }),
      );

      await t.step(
        "2 MiB: corrupted once the module stores a chunk, no no_space before",
        () =>
          withSnapshot("two", 2 * MiB, async (id) => {
            for (let chunk = 40; chunk < 40 + storing; chunk++) await touchChunk(origin, chunk);
            const events = await eventCursor(client, id).untilCorrupted(30_000);
            assert.deepEqual(
              events.map((event) => event.code),
              ["corrupted"],
              `only a corrupted event (got ${JSON.stringify(events)})`,
            );
            assert.equal((await client.snapshots.get(id)).state, "corrupted");
          }),
      );

      await client.devices.detach(device.id);
      await tmpfs.unmount({ timeoutMs: 5000 });
    });
  },
});
