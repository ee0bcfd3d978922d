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
 * The text is plain JavaScript held in a String.raw literal: it uses no
 * template literals and no backquotes.
 *
 * @module
 */

/** JavaScript of the status page. */
export const STATUS_PAGE_SCRIPT = String.raw`
"use strict";
(() => {
  const REFRESH_MS = 2000;
  const MAX_STREAMS = 3;
  const MAX_EVENTS_SHOWN = 200;
  const MAP_PAGE_BLOCKS = 1 << 20;
  /** Query parameter names of GET /v1/devices/{id}/cbt/map: the one place they are named. */
  const CBT_MAP_PARAMS = { offset: "offset", count: "length" };
  const TOKEN_KEY = "blksnap.token";
  const API = new URL("../v1/", location.href);
  const UNCHANGED_RGB = [223, 227, 232];
  const RAMP_STOPS = [[49, 130, 206], [236, 201, 75], [214, 48, 49]];

  const state = {
    token: readToken(),
    needsToken: false,
    refreshing: false,
    selectedDevice: "",
    map: null,
    streams: new Map(),
    seenEvents: new Set(),
  };

  const byId = (id) => document.getElementById(id);

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage disabled: the token lives as long as the page.
    }
  }

  /** An element whose children are nodes or strings (strings become text nodes). */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== undefined && child !== null) node.append(child);
    }
    return node;
  }

  function formatBytes(bytes) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = Number(bytes);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    const text = unit === 0 ? String(value) : value.toFixed(1).replace(/\.0$/, "");
    return text + " " + units[unit];
  }

  /** Local time as YYYY-MM-DD HH:MM:SS. */
  function formatTime(value) {
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    const two = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + two(date.getMonth() + 1) + "-" + two(date.getDate()) + " " +
      two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds());
  }

  function shortId(id) {
    return String(id).slice(0, 8);
  }

  function messageOf(error) {
    return error instanceof Error ? error.message : String(error);
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail);
      this.status = status;
      this.problem = problem;
    }
  }

  async function problemOf(response) {
    try {
      const document = await response.json();
      if (document && typeof document.detail === "string") return document;
    } catch {
      // Not problem+json: described by its status below.
    }
    return { detail: "HTTP " + response.status + " " + response.statusText, code: "HTTP" };
  }

  /** Fetches an API path (relative to /v1/) with the token; throws ApiError when not 2xx. */
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.token) headers.set("authorization", "Bearer " + state.token);
    const response = await fetch(new URL(path, API), {
      headers,
      signal: options.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (response.ok) return response;
    const problem = await problemOf(response);
    if (response.status === 401) askForToken(problem.detail);
    throw new ApiError(response.status, problem);
  }

  async function apiJson(path) {
    return await (await api(path)).json();
  }

  function showBanner(text) {
    const banner = byId("banner");
    banner.textContent = text;
    banner.hidden = !text;
  }

  // Token handling.

  function askForToken(detail) {
    if (!state.needsToken) stopStreams();
    state.needsToken = true;
    byId("token-form").hidden = false;
    byId("token-message").textContent = state.token ? "The token was refused: " + detail : "";
    byId("forget-token").hidden = !state.token;
    byId("service").textContent = "token needed";
    byId("token-input").focus();
  }

  function useToken(token) {
    state.token = token;
    storeToken(token);
    state.needsToken = false;
    byId("token-form").hidden = true;
    byId("forget-token").hidden = !token;
    stopStreams();
    loadVersion();
    refresh();
  }

  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token-input");
    const token = input.value.trim();
    input.value = "";
    if (token) useToken(token);
  });
  byId("forget-token").addEventListener("click", () => useToken(""));

  // Devices and snapshots.

  function renderDevices(devices) {
    byId("device-count").textContent = "(" + devices.length + ")";
    byId("devices-table").hidden = devices.length === 0;
    byId("devices-empty").hidden = devices.length > 0;
    if (!devices.some((d) => d.id === state.selectedDevice)) {
      state.selectedDevice = devices.length ? devices[0].id : "";
    }
    byId("device-rows").replaceChildren(...devices.map((device) => {
      const row = el(
        "tr",
        {
          class: "device" + (device.id === state.selectedDevice ? " selected" : ""),
          "data-device-id": device.id,
          title: "Show the CBT of " + device.id,
        },
        el("td", { class: "mono" }, device.id),
        el("td", { class: "path mono" }, device.path),
        el("td", { title: device.capacityBytes + " bytes" }, formatBytes(device.capacityBytes)),
        el("td", { class: "path mono" }, device.locator),
        el("td", { class: "mono", title: device.snapshotId }, device.snapshotId ? shortId(device.snapshotId) : "—"),
      );
      row.addEventListener("click", () => selectDevice(device.id));
      return row;
    }));
    const select = byId("cbt-device");
    select.replaceChildren(...devices.map((d) => el("option", { value: d.id }, d.id)));
    select.value = state.selectedDevice;
  }

  function storageCell(storage) {
    if (!storage) return el("td", {}, "—");
    const share = storage.limitBytes > 0 ? Math.min(1, storage.usedBytes / storage.limitBytes) : 0;
    const fill = el("div", {});
    fill.style.width = (share * 100).toFixed(1) + "%";
    return el(
      "td",
      { class: "usage", title: storage.path + ": " + storage.usedBytes + " of " + storage.limitBytes + " bytes" },
      el("span", { class: "used" }, formatBytes(storage.usedBytes) + " / " + formatBytes(storage.limitBytes)),
      el("div", { class: "bar" + (share >= 1 ? " full" : "") }, fill),
    );
  }

  function snapshotDevices(devices) {
    return devices.map((d) => d.errorCode ? d.deviceId + " (" + (d.errorName || "error " + d.errorCode) + ")" : d.deviceId).join(", ");
  }

  function renderSnapshots(snapshots) {
    byId("snapshot-count").textContent = "(" + snapshots.length + ")";
    byId("snapshots-table").hidden = snapshots.length === 0;
    byId("snapshots-empty").hidden = snapshots.length > 0;
    byId("snapshot-rows").replaceChildren(...snapshots.map((snapshot) =>
      el(
        "tr",
        { "data-snapshot-id": snapshot.id, "data-state": snapshot.state },
        el("td", { class: "mono", title: snapshot.id }, snapshot.id),
        el(
          "td",
          {},
          el("span", { class: "badge state-" + snapshot.state }, snapshot.state),
          snapshot.writable ? " writable" : "",
        ),
        el("td", { class: "mono" }, snapshotDevices(snapshot.devices || [])),
        storageCell(snapshot.storage),
        el("td", {}, formatTime(snapshot.createdAt)),
        el("td", {}, snapshot.takenAt ? formatTime(snapshot.takenAt) : "—"),
      )
    ));
  }

  // The CBT heat map.

  function rampColour(value, latest) {
    if (value === 0) return UNCHANGED_RGB;
    const t = latest <= 1 ? 1 : Math.min(1, (value - 1) / (latest - 1));
    const scaled = t * (RAMP_STOPS.length - 1);
    const low = Math.min(RAMP_STOPS.length - 2, Math.floor(scaled));
    const f = scaled - low;
    return RAMP_STOPS[low].map((c, i) => Math.round(c + (RAMP_STOPS[low + 1][i] - c) * f));
  }

  function drawLegend(latest) {
    const ramp = byId("cbt-ramp");
    const context = ramp.getContext("2d");
    for (let x = 0; x < ramp.width; x++) {
      const value = 1 + Math.round((x / (ramp.width - 1)) * Math.max(0, latest - 1));
      context.fillStyle = "rgb(" + rampColour(value, latest).join(",") + ")";
      context.fillRect(x, 0, 1, ramp.height);
    }
    const zero = byId("swatch-zero").getContext("2d");
    zero.fillStyle = "rgb(" + UNCHANGED_RGB.join(",") + ")";
    zero.fillRect(0, 0, 12, 12);
    byId("ramp-max").textContent = latest > 0 ? String(latest) + " (latest)" : "latest";
  }

  function drawMap(map, info) {
    const canvas = byId("cbt-canvas");
    const blocks = map.length;
    const width = Math.max(240, byId("cbt-scroll").clientWidth - 2);
    const cell = Math.max(1, Math.min(24, Math.floor(Math.sqrt((width * 240) / Math.max(1, blocks)))));
    const columns = Math.max(1, Math.min(blocks, Math.floor(width / cell)));
    const rows = Math.ceil(blocks / columns);
    const gap = cell >= 6 ? 1 : 0;
    canvas.width = Math.max(1, columns * cell);
    canvas.height = Math.max(1, rows * cell);
    canvas.setAttribute("data-blocks", String(blocks));
    canvas.setAttribute("data-columns", String(columns));
    canvas.setAttribute("data-cell", String(cell));
    const palette = [];
    for (let value = 0; value < 256; value++) palette.push(rampColour(value, info.changesNumber));
    const context = canvas.getContext("2d");
    const image = context.createImageData(canvas.width, canvas.height);
    const pixels = image.data;
    for (let block = 0; block < blocks; block++) {
      const colour = palette[map[block]];
      const left = (block % columns) * cell;
      const top = Math.floor(block / columns) * cell;
      for (let y = top; y < top + cell - gap; y++) {
        for (let x = left; x < left + cell - gap; x++) {
          const at = (y * canvas.width + x) * 4;
          pixels[at] = colour[0];
          pixels[at + 1] = colour[1];
          pixels[at + 2] = colour[2];
          pixels[at + 3] = 255;
        }
      }
    }
    context.putImageData(image, 0, 0);
    drawLegend(info.changesNumber);
  }

  /** The whole read map: in one request, or in pages of MAP_PAGE_BLOCKS when it is larger. */
  async function readMap(deviceId, blockCount) {
    const path = "devices/" + encodeURIComponent(deviceId) + "/cbt/map";
    const map = new Uint8Array(blockCount);
    if (blockCount <= MAP_PAGE_BLOCKS) {
      map.set(new Uint8Array(await (await api(path)).arrayBuffer()).subarray(0, blockCount));
      return map;
    }
    for (let offset = 0; offset < blockCount; offset += MAP_PAGE_BLOCKS) {
      const count = Math.min(MAP_PAGE_BLOCKS, blockCount - offset);
      const query = new URLSearchParams();
      query.set(CBT_MAP_PARAMS.offset, String(offset));
      query.set(CBT_MAP_PARAMS.count, String(count));
      const bytes = new Uint8Array(await (await api(path + "?" + query)).arrayBuffer());
      map.set(bytes.subarray(0, count), offset);
    }
    return map;
  }

  function describeMap(map, info) {
    let changed = 0;
    let latest = 0;
    for (const value of map) {
      if (value > 0) changed += 1;
      if (value > 0 && value === info.changesNumber) latest += 1;
    }
    const parts = [
      info.blockCount + " blocks of " + formatBytes(info.blockSize),
      "changes number " + info.changesNumber,
      changed + " blocks changed, " + latest + " at the latest change number",
      "generation " + info.generationId,
    ];
    if (info.changesNumber === 0) parts.push("no snapshot taken yet: the read map is all 0");
    return parts.join(" · ");
  }

  async function refreshCbt() {
    const deviceId = state.selectedDevice;
    const canvas = byId("cbt-canvas");
    if (!deviceId) {
      state.map = null;
      canvas.width = 0;
      canvas.height = 0;
      canvas.setAttribute("data-blocks", "0");
      byId("cbt-info").textContent = "No device attached.";
      return;
    }
    const info = await apiJson("devices/" + encodeURIComponent(deviceId) + "/cbt");
    const map = await readMap(deviceId, info.blockCount);
    if (deviceId !== state.selectedDevice) return;
    state.map = { deviceId, info, map };
    canvas.setAttribute("data-device-id", deviceId);
    canvas.setAttribute("data-changes-number", String(info.changesNumber));
    const summary = describeMap(map, info);
    byId("cbt-info").textContent = summary;
    canvas.setAttribute("aria-label", "CBT heat map of " + deviceId + ": " + summary);
    drawMap(map, info);
  }

  function selectDevice(deviceId) {
    state.selectedDevice = deviceId;
    byId("cbt-device").value = deviceId;
    for (const row of byId("device-rows").children) {
      row.classList.toggle("selected", row.getAttribute("data-device-id") === deviceId);
    }
    refreshCbt().catch((error) => showBanner("Cannot read the CBT of " + deviceId + ": " + messageOf(error)));
  }

  byId("cbt-device").addEventListener("change", (event) => selectDevice(event.target.value));

  byId("cbt-canvas").addEventListener("mousemove", (event) => {
    const canvas = event.currentTarget;
    const shown = state.map;
    if (!shown) return;
    const cell = Number(canvas.getAttribute("data-cell"));
    const columns = Number(canvas.getAttribute("data-columns"));
    const column = Math.floor(event.offsetX / cell);
    const block = Math.floor(event.offsetY / cell) * columns + column;
    if (column >= columns || block >= shown.map.length) return;
    const size = shown.info.blockSize;
    byId("cbt-hover").textContent = "block " + block + " · bytes " + block * size + "–" +
      ((block + 1) * size - 1) + " · change number " + shown.map[block];
  });

  // Events.

  function eventDetail(event) {
    const parts = [];
    if (event.deviceId) parts.push("device " + event.deviceId);
    if (event.errorName || event.errorCode) parts.push((event.errorName || "error") + " (" + event.errorCode + ")");
    if (event.requestedSectors) {
      parts.push("asked for " + event.requestedSectors + " more sectors (" + formatBytes(event.requestedSectors * 512) + ") of storage");
    }
    if (event.detail) parts.push(event.detail);
    return parts.join(" · ");
  }

  function addEvent(snapshotId, event) {
    const key = snapshotId + " " + JSON.stringify(event);
    if (state.seenEvents.has(key)) return;
    state.seenEvents.add(key);
    const list = byId("event-list");
    const when = event.timeMs ? new Date(event.timeMs) : new Date();
    list.prepend(el(
      "li",
      { "data-code": event.code, "data-snapshot-id": snapshotId },
      el("time", { datetime: when.toISOString() }, when.toLocaleTimeString()),
      el("span", { class: "badge code-" + event.code }, event.code),
      el("span", { class: "mono", title: snapshotId }, "snapshot " + shortId(snapshotId)),
      el("span", { class: "detail" }, eventDetail(event)),
    ));
    while (list.children.length > MAX_EVENTS_SHOWN) list.lastElementChild.remove();
    byId("event-count").textContent = "(" + list.children.length + ")";
    byId("events-empty").hidden = true;
  }

  /** Reads an SSE body, calling onMessage({ event, data, id }); true when an "end" event came. */
  async function readSse(body, onMessage) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let message = { event: "", data: [], id: undefined };
    while (true) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (message.data.length) {
            const event = message.event || "message";
            onMessage({ event, data: message.data.join("\n"), id: message.id });
            if (event === "end") {
              await reader.cancel().catch(() => {});
              return true;
            }
          }
          message = { event: "", data: [], id: undefined };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") message.event = text;
        else if (field === "data") message.data.push(text);
        else if (field === "id") message.id = text;
      }
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  }

  function setStreamStatus(stream, status) {
    stream.status = status;
    renderStreams();
  }

  async function follow(snapshotId, stream) {
    const signal = stream.controller.signal;
    let failures = 0;
    while (!signal.aborted) {
      try {
        const headers = { accept: "text/event-stream" };
        if (stream.lastEventId) headers["last-event-id"] = stream.lastEventId;
        const path = "snapshots/" + encodeURIComponent(snapshotId) + "/events/stream";
        const response = await api(path, { headers, signal });
        setStreamStatus(stream, "live");
        failures = 0;
        const ended = await readSse(response.body, (message) => {
          if (message.id) stream.lastEventId = message.id;
          let event;
          try {
            event = JSON.parse(message.data);
          } catch {
            return;
          }
          if (message.event === "end") addEvent(snapshotId, { code: "end", detail: "stream ended: " + event.detail });
          else addEvent(snapshotId, event);
          refresh();
        });
        if (ended) return setStreamStatus(stream, "ended");
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 404)) {
          return setStreamStatus(stream, error.status === 404 ? "ended" : "token needed");
        }
        failures += 1;
      }
      setStreamStatus(stream, "reconnecting");
      await sleep(Math.min(10_000, 500 * 2 ** failures), signal);
    }
  }

  function stopStreams() {
    for (const stream of state.streams.values()) stream.controller.abort();
    state.streams.clear();
    renderStreams();
  }

  function syncStreams(snapshots) {
    const wanted = snapshots
      .slice()
      .sort((a, b) => String(b.createdAt).localeCompare(String(a.createdAt)))
      .slice(0, MAX_STREAMS)
      .map((s) => s.id);
    for (const [id, stream] of state.streams) {
      if (!wanted.includes(id)) {
        stream.controller.abort();
        state.streams.delete(id);
      }
    }
    for (const id of wanted) {
      if (state.streams.has(id)) continue;
      const stream = { controller: new AbortController(), status: "connecting", lastEventId: "" };
      state.streams.set(id, stream);
      follow(id, stream);
    }
    state.snapshotTotal = snapshots.length;
    renderStreams();
  }

  function renderStreams() {
    const parts = [];
    for (const [id, stream] of state.streams) {
      if (parts.length) parts.push(" · ");
      parts.push(el("span", { "data-snapshot-id": id, "data-status": stream.status, title: id }, shortId(id) + " " + stream.status));
    }
    const total = state.snapshotTotal || 0;
    const note = total > state.streams.size ? " (the newest " + MAX_STREAMS + " of " + total + " snapshots are watched)" : "";
    if (parts.length) byId("streams").replaceChildren("Event streams: ", ...parts, note);
    else byId("streams").replaceChildren("No event streams open.");
  }

  // Polling.

  async function loadVersion() {
    try {
      const version = await apiJson("version");
      const parts = ["service " + version.service, version.backend + " backend"];
      if (version.profile) parts.push(version.profile + " profile");
      if (version.moduleVersion) parts.push("module " + version.moduleVersion);
      byId("service").textContent = parts.join(" · ");
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) byId("service").textContent = "unreachable";
    }
  }

  async function refresh() {
    if (state.refreshing || state.needsToken || document.hidden) return;
    state.refreshing = true;
    try {
      const [devices, snapshots] = await Promise.all([apiJson("devices"), apiJson("snapshots")]);
      renderDevices(devices);
      renderSnapshots(snapshots);
      syncStreams(snapshots);
      await refreshCbt();
      showBanner("");
      byId("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        showBanner("Cannot read the service's state: " + messageOf(error));
      }
    } finally {
      state.refreshing = false;
    }
  }

  async function poll() {
    await refresh();
    setTimeout(poll, REFRESH_MS);
  }

  document.addEventListener("visibilitychange", () => refresh());
  byId("forget-token").hidden = !state.token;
  loadVersion();
  poll();
})();
`;
