/**
 * The status page's script, inlined into the page and allowed by the page's
 * Content-Security-Policy through its SHA-256 digest.
 *
 * Design note:
 * - every value from the API reaches the document as text (`textContent`,
 *   `append(string)`, `setAttribute` of data-* and title); nothing is ever
 *   parsed as HTML, and the CSP forbids any other script anyway;
 * - the API is reached relative to the page (`../v1/`), so the page works
 *   behind a reverse proxy that adds a path prefix;
 * - when the API answers 401 the page asks for the token, keeps it in
 *   sessionStorage (this tab only) and sends it as `Authorization: Bearer`
 *   on every request, the event streams included: they are read with
 *   fetch() and a small SSE parser instead of EventSource (which cannot send
 *   headers), so the API needs no cookie and no token in a URL. The page
 *   keeps each stream's last `id:` and sends it as `Last-Event-ID` when it
 *   reconnects, as EventSource would;
 * - devices, snapshots and the CBT map of the selected device are polled
 *   every REFRESH_MS; event streams are held open for the newest
 *   MAX_STREAMS snapshots, leaving the browser's six HTTP/1.1 connections
 *   per origin room for the polls;
 * - the heat map is one canvas: one cell per tracking block in block order,
 *   coloured by its change number (0 grey; 1 .. changesNumber from blue,
 *   oldest, through yellow to red, the latest). The canvas carries its
 *   geometry in data-* attributes (data-blocks, data-columns, data-cell,
 *   data-device-id, data-changes-number) so a test can find a block's cell.
 *
 * Each part (script_*.ts) is plain JavaScript held in a String.raw
 * literal: it uses no template literals and no backquotes.
 *
 * @module
 */

import { SCRIPT_API } from "./script_api.ts";
import { SCRIPT_EVENTS } from "./script_events.ts";
import { SCRIPT_HEAT_MAP } from "./script_heat_map.ts";
import { SCRIPT_LISTS } from "./script_lists.ts";
import { SCRIPT_POLLING } from "./script_polling.ts";

/**
 * JavaScript of the status page: its parts in one function scope, in this
 * order (each part's top-level statements run as it comes; its functions
 * are visible to every part).
 */
export const STATUS_PAGE_SCRIPT: string = [
  '"use strict";\n(() => {',
  SCRIPT_API,
  SCRIPT_LISTS,
  SCRIPT_HEAT_MAP,
  SCRIPT_EVENTS,
  SCRIPT_POLLING,
  "})();\n",
].join("\n");
