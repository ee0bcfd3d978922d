import assert from "node:assert/strict";
import { join } from "node:path";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, withService } from "../_helpers/service_fixture.ts";
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

Deno.test({
  name: "behind a proxy that adds a path prefix the page works, and a cut event stream resumes " +
    "with Last-Event-ID and no event twice",
  ignore: noBrowser,
  async fn() {
    await withService({}, async (fixture) => {
      const { client } = fixture;
      await client.devices.attach({
        path: await fixture.makeDisk("disk.img", 1 << 20),
        name: "vda",
      });
      const snapshot = await client.snapshots.create({
        devices: ["vda"],
        diffStorage: { path: join(fixture.allowed, "diff"), limitBytes: 2 * API_BLOCK_BYTES },
      });
      await client.snapshots.take(snapshot.id);

      await withPrefixProxy(fixture.baseUrl, { prefix: "blksnap" }, async (proxy) => {
        await withBrowserPage(async ({ page, problems }) => {
          await page.goto(`${proxy.baseUrl}/ui`, WAIT);
          assert.equal(new URL(page.url()).pathname, "/blksnap/ui/", "redirected under the prefix");
          const live = `#streams [data-snapshot-id="${snapshot.id}"][data-status="live"]`;
          await page.waitForSelector(live, WAIT);
          await page.waitForSelector(`tr[data-snapshot-id="${snapshot.id}"]`, WAIT);

          const device = await client.devices.get("vda");
          await nbdWrite(
            device.locator,
            [0, 1, 2, 3].map((chunk) => ({
              offset: chunk * API_BLOCK_BYTES,
              data: pattern(512, 40 + chunk),
            })),
            { scratchDir: fixture.root },
          );
          const events = `#event-list li[data-snapshot-id="${snapshot.id}"]`;
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
