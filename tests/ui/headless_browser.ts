/**
 * Debian's Chromium, headless, driven over the DevTools protocol by
 * puppeteer-core, for the status page's browser test: a fresh browser per
 * test, whose page errors, console errors and Content-Security-Policy
 * violations are collected so the test can assert there were none.
 *
 * @module
 */

import puppeteer, { type Browser, type Page } from "puppeteer-core";

/** Where Debian's `chromium` package puts the browser. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/** Why the browser test cannot run here (printed), or undefined when Chromium is installed. */
export function chromiumMissing(): string | undefined {
  try {
    if (Deno.statSync(CHROMIUM_PATH).isFile) return undefined;
  } catch {
    // Reported below.
  }
  const reason = `skipping: ${CHROMIUM_PATH} is not installed (apt-get install chromium)`;
  console.log(reason);
  return reason;
}

/** A page of a headless browser and what went wrong in it so far. */
export interface BrowserPage {
  /** The page. */
  page: Page;
  /** Uncaught exceptions, console errors and failed requests of the page, as text. */
  problems: string[];
}

/**
 * Launches headless Chromium with a 1280×900 window in a temp profile, runs
 * `body` with a new page, then closes the browser and removes the profile
 * whatever `body` did.
 */
export async function withBrowserPage(
  body: (browser: BrowserPage) => Promise<void>,
): Promise<void> {
  const profile = await Deno.makeTempDir({ prefix: "blksnap-chromium-" });
  let browser: Browser | undefined;
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      userDataDir: profile,
      defaultViewport: { width: 1280, height: 900 },
      // Root in a container has no user namespaces for Chromium's sandbox.
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"],
      // Generous: CI runs the suite in parallel on two shared cores.
      timeout: 120_000,
      protocolTimeout: 120_000,
    });
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${String(error)}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console error: ${message.text()}`);
    });
    await body({ page, problems });
  } finally {
    await browser?.close();
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}
