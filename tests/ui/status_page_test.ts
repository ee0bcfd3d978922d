import assert from "node:assert/strict";
import { join } from "node:path";
import type { Page } from "puppeteer-core";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { responseProblem } from "../_helpers/api_problem.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import {
  API_BLOCK_BYTES,
  API_ENGINE_PARAMS,
  type ServiceFixture,
  withService,
} from "../_helpers/service_fixture.ts";
import { chromiumMissing, withBrowserPage } from "./headless_browser.ts";

const TOKEN = "status-page-test-token";
const MIB = 1 << 20;
/** 64 tracking blocks of 64 KiB. */
const DISK_BYTES = 4 * MIB;
/** Two chunks: the fourth chunk copied before a write overflows it. */
const SMALL_LIMIT = 2 * API_BLOCK_BYTES;
/** A file name that would run script if the page rendered the device path as HTML. */
const HOSTILE_NAME = `<img src=x onerror="window.injected=1">.img`;
/** Where the browser test leaves its screenshot (gitignored). */
const SCREENSHOT = new URL("../../test-artifacts/status-page.png", import.meta.url).pathname;
const WAIT = { timeout: 60_000 };
const noChromium = chromiumMissing() !== undefined;
const noBrowser = noChromium || toolsMissing("nbdsh");

/** Blocks written through NBD before the first take: change number 1. */
const FIRST_BLOCKS = [1, 5, 6, 40];
/** Blocks written between the first and the second take: change number 2. */
const SECOND_BLOCKS = [6, 20, 21];
/** Chunks overwritten after the second take: more than its storage holds. */
const OVERFLOW_CHUNKS = [50, 51, 52, 53];
/** Heat-map colours: unchanged, the oldest change number and the latest one. */
const UNCHANGED_RGB = [223, 227, 232];
const OLDEST_RGB = [49, 130, 206];
const LATEST_RGB = [214, 48, 49];

async function writeBlocks(
  fixture: ServiceFixture,
  blocks: number[],
  { seed, device: id = "vda", blockBytes = API_BLOCK_BYTES }: {
    seed: number;
    device?: string;
    blockBytes?: number;
  },
): Promise<void> {
  const device = await fixture.client.devices.get(id);
  const writes = blocks.map((block) => ({
    offset: block * blockBytes,
    data: pattern(512, seed + block),
  }));
  await nbdWrite(device.locator, writes, { scratchDir: fixture.root });
}

/** The canvas members the colour probe uses (the type check has no DOM library). */
interface CanvasLike {
  dataset: Record<string, string | undefined>;
  getContext(kind: "2d"): {
    getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
  };
}

/** The colour (r, g, b) of the heat-map cell of each block, read back from the canvas. */
async function cellColours(page: Page, blocks: number[]): Promise<number[][]> {
  return await page.$eval("#cbt-canvas", (node, wanted) => {
    const canvas = node as unknown as CanvasLike;
    const cell = Number(canvas.dataset.cell);
    const columns = Number(canvas.dataset.columns);
    const context = canvas.getContext("2d");
    return wanted.map((block) => {
      const x = (block % columns) * cell + Math.floor(cell / 2);
      const y = Math.floor(block / columns) * cell + Math.floor(cell / 2);
      return Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3));
    });
  }, blocks);
}

/** Waits until the heat map shows `blocks` blocks of `device` (vda's 64) at `changesNumber`. */
async function waitForMap(
  page: Page,
  changesNumber: number,
  { device = "vda", blocks = 64 }: { device?: string; blocks?: number } = {},
): Promise<void> {
  await page.waitForSelector(
    `#cbt-canvas[data-device-id="${device}"][data-blocks="${blocks}"]` +
      `[data-changes-number="${changesNumber}"]`,
    WAIT,
  );
}

/** The text of each cell of the table row matching `selector`, waiting for the row. */
async function rowCells(page: Page, selector: string): Promise<(string | null)[]> {
  const row = await page.waitForSelector(selector, WAIT);
  return await row!.$$eval("td", (tds) => tds.map((td) => td.textContent));
}

/** Problems of the page other than the 401 answers that make it ask for the token. */
function unexpected(problems: string[]): string[] {
  return problems.filter((p) => !/status of 401/.test(p));
}

Deno.test("GET /ui/ serves one self-contained page without a token; /v1 still needs the token", async () => {
  await withService({ token: TOKEN }, async (fixture) => {
    const response = await fixture.fetch("/ui/");
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type")!, /^text\/html; charset=utf-8/);
    const csp = response.headers.get("content-security-policy")!;
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/, "only the page's own script");
    assert.match(csp, /connect-src 'self'/);
    assert.equal(response.headers.get("x-frame-options"), "DENY");
    const html = await response.text();
    assert.match(html, /^<!doctype html>/);
    assert.equal(html.match(/<script\b/g)?.length, 1, "one inline script");
    assert.doesNotMatch(
      html,
      /<script[^>]*\bsrc=|<link\b|<iframe\b|@import|url\(/,
      "nothing loaded",
    );
    assert.doesNotMatch(html, /https?:\/\//, "no absolute URL: works offline and behind a prefix");
    assert.doesNotMatch(html, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);

    const redirect = await fixture.fetch("/ui", { redirect: "manual" });
    await redirect.body?.cancel();
    assert.equal(redirect.status, 308);
    assert.equal(
      new URL(redirect.headers.get("location")!, `${fixture.baseUrl}/ui`).pathname,
      "/ui/",
    );

    await responseProblem(await fixture.fetch("/v1/devices"), {
      status: 401,
      code: "UNAUTHORIZED",
    });
    await responseProblem(await fixture.fetch("/v1/devices?access_token=" + TOKEN), {
      status: 401,
      code: "UNAUTHORIZED",
    });
    await responseProblem(
      await fixture.fetch("/v1/devices", { headers: { cookie: `token=${TOKEN}` } }),
      { status: 401, code: "UNAUTHORIZED" },
    );
  });
});

Deno.test({
  name: "the status page in headless Chromium: asks for the token, shows the device, the " +
    "snapshots, the CBT heat map by change number and an overflow's events as they arrive, as text",
  ignore: noBrowser,
  async fn() {
    await withService({ token: TOKEN }, async (fixture) => {
      const { client } = fixture;
      const diskPath = await fixture.makeDisk(HOSTILE_NAME, DISK_BYTES, 3);
      await client.devices.attach({ path: diskPath, name: "vda" });
      await writeBlocks(fixture, FIRST_BLOCKS, { seed: 50 });

      await withBrowserPage(async ({ page, problems }) => {
        await page.goto(`${fixture.baseUrl}/ui/`, WAIT);
        await page.evaluate(() => Object.assign(globalThis, { sameDocument: true }));
        // The API wants a token: the page asks for it.
        await page.waitForSelector("#token-form:not([hidden])", WAIT);
        assert.equal(await page.$eval("#devices-empty", (p) => p.hidden), true, "nothing read yet");
        await page.type("#token-input", "not-the-token");
        await page.keyboard.press("Enter");
        await page.waitForFunction(
          (form) => !form.hidden && /refused: The bearer token is not valid/.test(form.textContent),
          WAIT,
          await page.$("#token-form"),
        );
        await page.type("#token-input", TOKEN);
        await page.keyboard.press("Enter");
        await page.waitForSelector("#token-form[hidden]", WAIT);

        const device = await rowCells(page, 'tr[data-device-id="vda"]');
        assert.deepEqual(
          device.slice(0, 3),
          ["vda", diskPath, "4 MiB"],
          "the path shows literally",
        );
        assert.equal(await page.$$eval("main img", (images) => images.length), 0);

        // Before any take the read map is all 0.
        await waitForMap(page, 0);
        const before = await cellColours(page, [0, ...FIRST_BLOCKS]);
        assert.deepEqual(before, Array(before.length).fill(UNCHANGED_RGB));

        // A first snapshot: the blocks written before its take get change number 1.
        const first = await client.snapshots.create({
          devices: ["vda"],
          diffStorage: { path: join(fixture.allowed, "diff1"), limitBytes: MIB },
        });
        await client.snapshots.take(first.id);
        const firstRow = await rowCells(
          page,
          `tr[data-snapshot-id="${first.id}"][data-state="taken"]`,
        );
        assert.deepEqual(firstRow.slice(0, 3), [first.id, "taken", "vda"]);
        assert.match(firstRow[3]!, /^(0 B|\d+(\.\d)? KiB) \/ 1 MiB$/, "used / limit");
        await waitForMap(page, 1);
        assert.deepEqual(
          await cellColours(page, FIRST_BLOCKS),
          Array(FIRST_BLOCKS.length).fill(LATEST_RGB),
        );
        assert.deepEqual(await cellColours(page, [0, 2, 7, 63]), Array(4).fill(UNCHANGED_RGB));

        // More writes, the first snapshot destroyed, a second one with a tiny storage taken:
        // the older blocks turn blue (1), the newer red (2).
        await writeBlocks(fixture, SECOND_BLOCKS, { seed: 70 });
        await client.snapshots.destroy(first.id);
        await page.waitForSelector(
          `#event-list li[data-code="end"][data-snapshot-id="${first.id}"]`,
          WAIT,
        );
        const second = await client.snapshots.create({
          devices: ["vda"],
          diffStorage: { path: join(fixture.allowed, "diff2"), limitBytes: SMALL_LIMIT },
        });
        await client.snapshots.take(second.id);
        await waitForMap(page, 2);
        assert.equal(await page.$(`tr[data-snapshot-id="${first.id}"]`), null, "the first is gone");
        assert.deepEqual(await cellColours(page, [1, 5, 40]), Array(3).fill(OLDEST_RGB));
        assert.deepEqual(await cellColours(page, SECOND_BLOCKS), Array(3).fill(LATEST_RGB));
        assert.deepEqual(await cellColours(page, [0, 2, 63]), Array(3).fill(UNCHANGED_RGB));
        assert.match(
          await page.$eval("#cbt-info", (node) => node.textContent ?? ""),
          /^64 blocks of 64 KiB · changes number 2 · 6 blocks changed, 3 at the latest change number/,
        );

        // An overflow: its events appear without a reload, and the snapshot turns corrupted.
        await page.waitForSelector(
          `#streams [data-snapshot-id="${second.id}"][data-status="live"]`,
          WAIT,
        );
        await writeBlocks(fixture, OVERFLOW_CHUNKS, { seed: 90 });
        const corrupted = await page.waitForSelector(
          `#event-list li[data-code="corrupted"][data-snapshot-id="${second.id}"]`,
          WAIT,
        );
        assert.match(
          await corrupted!.evaluate((node) => node.textContent ?? ""),
          /corrupted.*device vda · ENOSPC \(28\)/,
        );
        await page.waitForSelector(
          `#event-list li[data-code="no_space"][data-snapshot-id="${second.id}"]`,
          WAIT,
        );
        const corruptedRow = await rowCells(
          page,
          `tr[data-snapshot-id="${second.id}"][data-state="corrupted"]`,
        );
        assert.deepEqual(corruptedRow.slice(1, 4), [
          "corrupted",
          "vda (ENOSPC)",
          "128 KiB / 128 KiB",
        ]);
        assert.equal(await page.$$eval(".usage .bar.full", (bars) => bars.length), 1);
        assert.equal(await page.evaluate(() => "sameDocument" in globalThis), true, "no reload");
        assert.equal(await page.evaluate(() => "injected" in globalThis), false, "no script ran");

        await Deno.mkdir(join(SCREENSHOT, ".."), { recursive: true });
        await page.screenshot({ path: SCREENSHOT, fullPage: true });
        console.log(`screenshot: ${SCREENSHOT}`);
        assert.deepEqual(unexpected(problems), []);
      });
    });
  },
});

Deno.test({
  name: "the status page without a token on the service: no token form, the empty lists say so",
  ignore: noChromium,
  async fn() {
    await withService({}, async (fixture) => {
      await withBrowserPage(async ({ page, problems }) => {
        await page.goto(`${fixture.baseUrl}/ui`, WAIT);
        assert.equal(new URL(page.url()).pathname, "/ui/", "redirected to the page");
        await page.waitForFunction(
          (service) => /userspace backend/.test(service.textContent),
          WAIT,
          await page.$("#service"),
        );
        // The empty lists say so once they were read (and not before).
        await page.waitForSelector("#snapshots-empty:not([hidden])", WAIT);
        assert.equal(await page.$eval("#devices-empty", (p) => p.hidden), false);
        assert.equal(await page.$eval("#cbt-info", (p) => p.textContent), "No device attached.");
        assert.equal(await page.$eval("#token-form", (form) => form.hidden), true);
        assert.deepEqual(problems, []);
      });
    });
  },
});

/** 512-byte tracking blocks, so that a 640 MiB sparse disk has more blocks than one map page. */
const TINY_BLOCK_PARAMS = { ...API_ENGINE_PARAMS, trackingBlockMinimumShift: 9 };
const BIG_BLOCKS = 1_310_720;

Deno.test({
  name: "the heat map of a device with more than a million blocks is read in pages and drawn whole",
  ignore: noBrowser,
  async fn() {
    await withService({ engineParams: TINY_BLOCK_PARAMS }, async (fixture) => {
      const { client } = fixture;
      const path = join(fixture.allowed, "big.img");
      using file = await Deno.open(path, { write: true, create: true });
      await file.truncate(BIG_BLOCKS * 512);
      await client.devices.attach({ path, name: "big" });
      const written = [3, 1_048_575, 1_048_576, BIG_BLOCKS - 1];
      await writeBlocks(fixture, written, { seed: 5, device: "big", blockBytes: 512 });
      const snapshot = await client.snapshots.create({
        devices: ["big"],
        diffStorage: { path: join(fixture.allowed, "diff"), limitBytes: MIB },
      });
      await client.snapshots.take(snapshot.id);

      await withBrowserPage(async ({ page, problems }) => {
        await page.goto(`${fixture.baseUrl}/ui/`, WAIT);
        await waitForMap(page, 1, { device: "big", blocks: BIG_BLOCKS });
        assert.deepEqual(await cellColours(page, written), Array(written.length).fill(LATEST_RGB));
        assert.deepEqual(
          await cellColours(page, [0, 1_048_574, BIG_BLOCKS - 2]),
          Array(3).fill(UNCHANGED_RGB),
        );
        assert.match(
          await page.$eval("#cbt-info", (node) => node.textContent ?? ""),
          /^1310720 blocks of 512 B · changes number 1 · 4 blocks changed/,
        );
        assert.deepEqual(problems, []);
      });
    });
  },
});
