import assert from "node:assert/strict";
import { join } from "node:path";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, type ServiceFixture, withService } from "../_helpers/service_fixture.ts";
import { chromiumMissing, withBrowserPage } from "./headless_browser.ts";
import { withPrefixProxy } from "./prefix_proxy.ts";

const WAIT = { timeout: 60_000 };
const noBrowser = chromiumMissing() !== undefined || toolsMissing("nbdsh");

/** Waits, polling every 100 ms for at most 60 s, until `check` is true. */
async function eventually(what: string, check: () => boolean): Promise<void> {
  for (let tries = 0; tries < 600 && !check(); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(check(), what);
}

/** A taken snapshot of a 1 MiB disk "vda" whose storage holds two chunks; returns its id. */
async function smallSnapshot({ client, makeDisk, allowed }: ServiceFixture): Promise<string> {
  await client.devices.attach({ path: await makeDisk("disk.img", 1 << 20), name: "vda" });
  const snapshot = await client.snapshots.create({
    devices: ["vda"],
    diffStorage: { path: join(allowed, "diff"), limitBytes: 2 * API_BLOCK_BYTES },
  });
  await client.snapshots.take(snapshot.id);
  return snapshot.id;
}

/** Overwrites chunks 0..3 of vda through NBD: two more than the storage holds. */
async function overflow(fixture: ServiceFixture): Promise<void> {
  const device = await fixture.client.devices.get("vda");
  const writes = [0, 1, 2, 3].map((chunk) => ({
    offset: chunk * API_BLOCK_BYTES,
    data: pattern(512, 40 + chunk),
  }));
  await nbdWrite(device.locator, writes, { scratchDir: fixture.root });
}

/** The selector of the events the page lists for snapshot `id`. */
function eventItems(id: string): string {
  return `#event-list li[data-snapshot-id="${id}"]`;
}

Deno.test({
  name: "behind a proxy that adds a path prefix the page works, and a cut event stream resumes " +
    "with Last-Event-ID and no event twice",
  ignore: noBrowser,
  async fn() {
    await withService({}, async (fixture) => {
      const id = await smallSnapshot(fixture);
      await withPrefixProxy(fixture.baseUrl, { prefix: "blksnap" }, async (proxy) => {
        await withBrowserPage(async ({ page, problems }) => {
          await page.goto(`${proxy.baseUrl}/ui`, WAIT);
          assert.equal(new URL(page.url()).pathname, "/blksnap/ui/", "redirected under the prefix");
          const live = `#streams [data-snapshot-id="${id}"][data-status="live"]`;
          await page.waitForSelector(live, WAIT);
          await page.waitForSelector(`tr[data-snapshot-id="${id}"]`, WAIT);

          await overflow(fixture);
          const events = eventItems(id);
          await page.waitForSelector(`${events}[data-code="corrupted"]`, WAIT);
          assert.deepEqual(
            await page.$$eval(events, (items) => items.map((li) => li.getAttribute("data-code"))),
            ["corrupted", "no_space"],
          );
          const lastId = await page.$eval(
            `${events}[data-code="corrupted"]`,
            (li) => li.getAttribute("data-event-id"),
          );
          assert.ok(lastId, "the event came with an SSE id");

          assert.equal(proxy.cutStreams(), 1, "one stream was open");
          await eventually(
            `a reconnect: ${JSON.stringify(proxy.streamLastEventIds)}`,
            () => proxy.streamLastEventIds.length >= 2,
          );
          assert.deepEqual(proxy.streamLastEventIds.slice(0, 2), ["", lastId], "Last-Event-ID");
          await page.waitForSelector(live, WAIT);
          assert.equal((await page.$$(events)).length, 2, "no event shown twice");

          const outside = proxy.paths.filter((path) => !path.startsWith("/blksnap/"));
          assert.deepEqual(outside, [], "every request stayed under the prefix");
          assert.ok(proxy.paths.includes("/blksnap/v1/devices"));
          assert.deepEqual(problems, []);
        });
      });
    });
  },
});

Deno.test({
  name: "a page opened after an overflow lists the events the log holds and takes none from others",
  ignore: noBrowser,
  async fn() {
    await withService({}, async (fixture) => {
      const { client } = fixture;
      const id = await smallSnapshot(fixture);
      await overflow(fixture);
      for (let tries = 0; tries < 10; tries++) {
        const held = await client.snapshots.waitEvents(id, { timeoutMs: 5000 });
        if (held.events.some((e) => e.code === "corrupted")) break;
      }
      await withBrowserPage(async ({ page, problems }) => {
        await page.goto(`${fixture.baseUrl}/ui/`, WAIT);
        const events = eventItems(id);
        await page.waitForSelector(`${events}[data-code="corrupted"]`, WAIT);
        assert.deepEqual(
          await page.$$eval(events, (items) => items.map((li) => li.getAttribute("data-code"))),
          ["corrupted", "no_space"],
        );
        assert.deepEqual(problems, []);
      });
      const after = await client.snapshots.waitEvents(id, { timeoutMs: 0 });
      assert.deepEqual(after.events.map((e) => e.code), ["no_space", "corrupted"], "still held");
    });
  },
});
