/**
 * The status page served at /ui/: one self-contained HTML document with its
 * style and script inline (no external resources, works offline), and the
 * headers it is served with. Its Content-Security-Policy allows exactly the
 * inline style and script below (by SHA-256 digest), fetches to the page's
 * own origin and nothing else: no other script, no frames, no form posts.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { STATUS_PAGE_SCRIPT } from "./page_script.ts";
import { STATUS_PAGE_STYLE } from "./page_style.ts";

function cspDigest(text: string): string {
  return `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;
}

const BODY = `
<header>
  <h1>blksnap service</h1>
  <span class="service" id="service">connecting…</span>
  <span class="spacer"></span>
  <span class="service" id="refreshed"></span>
  <button id="forget-token" type="button" hidden>Forget token</button>
</header>
<form id="token-form" hidden>
  <label for="token-input">This service needs its API token:</label>
  <input id="token-input" type="password" autocomplete="off" spellcheck="false">
  <button type="submit">Use token</button>
  <span id="token-message"></span>
</form>
<div id="banner" role="alert" hidden></div>
<main>
  <section id="devices">
    <h2>Devices <span class="count" id="device-count"></span></h2>
    <table id="devices-table" hidden>
      <thead><tr><th>Id</th><th>Path</th><th>Capacity</th><th>Tracked I/O</th><th>Snapshot</th></tr></thead>
      <tbody id="device-rows"></tbody>
    </table>
    <p class="empty" hidden id="devices-empty">No devices attached.</p>
  </section>
  <section id="snapshots">
    <h2>Snapshots <span class="count" id="snapshot-count"></span></h2>
    <table id="snapshots-table" hidden>
      <thead><tr><th>Id</th><th>State</th><th>Devices</th><th>Difference storage</th><th>Created</th><th>Taken</th></tr></thead>
      <tbody id="snapshot-rows"></tbody>
    </table>
    <p class="empty" hidden id="snapshots-empty">No snapshots.</p>
  </section>
  <section id="cbt">
    <h2>Change block tracking</h2>
    <div class="cbt-controls">
      <label>Device <select id="cbt-device"></select></label>
      <span id="cbt-info"></span>
    </div>
    <div id="cbt-scroll"><canvas id="cbt-canvas" role="img" aria-label="CBT heat map" width="0" height="0" data-blocks="0"></canvas></div>
    <div class="legend">
      <span><canvas id="swatch-zero" class="swatch" width="12" height="12"></canvas>0: unchanged</span>
      <span>change number: 1 <canvas id="cbt-ramp" width="120" height="12"></canvas> <span id="ramp-max">latest</span></span>
      <span>one cell per tracking block, in block order</span>
    </div>
    <div id="cbt-hover"></div>
  </section>
  <section id="events">
    <h2>Events <span class="count" id="event-count"></span></h2>
    <p id="streams">No event streams open.</p>
    <ol id="event-list"></ol>
    <p class="empty" id="events-empty">No events yet.</p>
  </section>
</main>
<footer>Devices, snapshots and the CBT map refresh every 2 s; events appear as the service sends them.</footer>
`;

/** The status page's HTML document. */
export const STATUS_PAGE_HTML: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>blksnap service status</title>
<style>${STATUS_PAGE_STYLE}</style>
</head>
<body>${BODY}<script>${STATUS_PAGE_SCRIPT}</script>
</body>
</html>
`;

/** The Content-Security-Policy of the status page: its own inline style and script, same-origin fetches. */
export const STATUS_PAGE_CSP: string = [
  "default-src 'none'",
  `script-src ${cspDigest(STATUS_PAGE_SCRIPT)}`,
  `style-src ${cspDigest(STATUS_PAGE_STYLE)}`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Response headers of the status page. */
export const STATUS_PAGE_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/html; charset=utf-8",
  "content-security-policy": STATUS_PAGE_CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
};
