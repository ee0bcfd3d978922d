/**
 * The status page's style sheet, inlined into the page (no external
 * resources) and allowed by the page's Content-Security-Policy through its
 * SHA-256 digest.
 *
 * @module
 */

/** CSS of the status page. */
export const STATUS_PAGE_STYLE = String.raw`
:root {
  color-scheme: light;
  --ink: #1f2933;
  --muted: #616e7c;
  --line: #d9e2ec;
  --panel: #ffffff;
  --ground: #f0f4f8;
  --accent: #1f6feb;
  --ok: #1b7f3b;
  --warn: #b7791f;
  --bad: #c53030;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink);
  background: var(--ground);
}
body { margin: 0; }
header {
  display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px;
  padding: 10px 20px; background: #102a43; color: #f0f4f8;
}
header h1 { font-size: 17px; margin: 0; font-weight: 600; }
header .service { color: #bcccdc; }
header .spacer { flex: 1; }
header button, #token-form button {
  font: inherit; padding: 3px 10px; border-radius: 4px; border: 1px solid #829ab1;
  background: #243b53; color: #f0f4f8; cursor: pointer;
}
#token-form {
  display: flex; gap: 8px; align-items: center; flex-wrap: wrap;
  margin: 12px 20px 0; padding: 10px 14px; border: 1px solid var(--warn);
  border-radius: 6px; background: #fffaf0;
}
#token-form input { font: inherit; padding: 3px 6px; min-width: 22em; }
#token-form button { background: var(--accent); border-color: var(--accent); }
#banner {
  margin: 12px 20px 0; padding: 8px 14px; border-radius: 6px;
  background: #fff5f5; border: 1px solid var(--bad); color: var(--bad);
}
[hidden] { display: none !important; }
main { display: grid; gap: 16px; padding: 16px 20px 24px; max-width: 1400px; }
section {
  background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 16px; min-width: 0; overflow-x: auto;
}
h2 { font-size: 15px; margin: 0 0 8px; }
h2 .count { color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; }
td.mono, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
td.path { word-break: break-all; }
tr.device { cursor: pointer; }
tr.device:hover, tr.device.selected { background: #e6f0ff; }
.empty { color: var(--muted); margin: 4px 0; }
.badge {
  display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; border: 1px solid currentColor;
}
.state-created { color: var(--muted); }
.state-taken { color: var(--ok); }
.state-corrupted, .code-corrupted { color: var(--bad); }
.code-no_space { color: var(--warn); }
.code-end { color: var(--muted); }
.code-truncated { color: var(--warn); }
.usage { min-width: 160px; }
.bar { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; margin-top: 3px; }
.bar > div { height: 100%; background: var(--accent); }
.bar.full > div { background: var(--bad); }
.cbt-controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; }
.cbt-controls select { font: inherit; padding: 2px 4px; }
#cbt-info { color: var(--muted); }
#cbt-scroll { max-height: 420px; overflow: auto; border: 1px solid var(--line); background: #f8fafc; }
#cbt-canvas { display: block; image-rendering: pixelated; }
.legend { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin-top: 8px; color: var(--muted); }
.legend .swatch { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: 4px; border: 1px solid #9aa5b1; }
#cbt-ramp { width: 120px; height: 12px; vertical-align: -2px; border: 1px solid #9aa5b1; }
#cbt-hover { min-height: 1.45em; margin-top: 4px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
#event-list { list-style: none; margin: 0; padding: 0; max-height: 360px; overflow: auto; }
#event-list li { display: flex; gap: 10px; padding: 5px 0; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
#event-list time { color: var(--muted); font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
#event-list .detail { flex: 1 1 100%; padding-left: 2px; color: var(--ink); }
#streams { color: var(--muted); margin: 0 0 6px; }
footer { padding: 0 20px 16px; color: var(--muted); font-size: 12px; }
`;
