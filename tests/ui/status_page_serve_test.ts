import assert from "node:assert/strict";
import { join } from "node:path";
import { createClient } from "../../src/client/client.ts";
import { RunningCli } from "../_helpers/api_cli.ts";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { writeDisk } from "../_helpers/service_fixture.ts";
import { chromiumMissing, withBrowserPage } from "./headless_browser.ts";

const TOKEN = "serve-status-page-token";
/** The default engine's chunk size (256 KiB). */
const CHUNK_BYTES = 256 << 10;
const WAIT = { timeout: 60_000 };
const noBrowser = chromiumMissing() !== undefined || toolsMissing("nbdsh");

Deno.test({
  name: "the status page from `serve` (its own HTTP listener, a token): the device, the snapshot " +
    "and an overflow's events arrive in the browser",
  ignore: noBrowser,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-ui-serve-" }));
    try {
      const disk = join(root, "vm.img");
      await writeDisk(disk, 32 * CHUNK_BYTES, { seed: 9 });
      await using serve = new RunningCli(["serve"], {
        BLKSNAP_LISTEN: "127.0.0.1:0",
        BLKSNAP_NBD_LISTEN: "127.0.0.1:0",
        BLKSNAP_STATE_DIR: join(root, "state"),
        BLKSNAP_ALLOW_PATH: root,
        BLKSNAP_TOKEN: TOKEN,
        BLKSNAP_BACKEND: "userspace",
      });
      const [, port] = await serve.waitForStderr(/HTTP API on http:\/\/127\.0\.0\.1:(\d+)\//);
      const baseUrl = `http://127.0.0.1:${port}`;
      const client = createClient({ baseUrl, token: TOKEN });
      const device = await client.devices.attach({ path: disk, name: "vm" });
      const snapshot = await client.snapshots.create({
        devices: ["vm"],
        diffStorage: { path: join(root, "diff"), limitBytes: CHUNK_BYTES },
      });
      await client.snapshots.take(snapshot.id);

      await withBrowserPage(async ({ page, problems }) => {
        await page.goto(`${baseUrl}/ui/`, WAIT);
        await page.waitForSelector("#token-form:not([hidden])", WAIT);
        await page.type("#token-input", TOKEN);
        await page.keyboard.press("Enter");
        await page.waitForSelector('tr[data-device-id="vm"]', WAIT);
        await page.waitForSelector(
          `tr[data-snapshot-id="${snapshot.id}"][data-state="taken"]`,
          WAIT,
        );
        await page.waitForSelector(
          `#streams [data-snapshot-id="${snapshot.id}"][data-status="live"]`,
          WAIT,
        );
        // The default engine keeps 16 copied chunks in memory before storing any: touch 32.
        await nbdWrite(
          device.locator,
          Array.from(
            { length: 32 },
            (_, n) => ({ offset: n * CHUNK_BYTES, data: pattern(512, n) }),
          ),
          { scratchDir: root },
        );
        await page.waitForSelector(`#event-list li[data-code="corrupted"]`, WAIT);
        await page.waitForSelector(
          `tr[data-snapshot-id="${snapshot.id}"][data-state="corrupted"]`,
          WAIT,
        );
        assert.deepEqual(problems.filter((p) => !/status of 401/.test(p)), []);
      });
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
