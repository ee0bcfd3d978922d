/**
 * Part of the status page's script: the CBT heat map of the selected
 * device, read from GET /v1/devices/{id}/cbt/map and drawn on one canvas.
 * See page_script.ts.
 *
 * @module
 */

/** The status page script's CBT heat map. */
export const SCRIPT_HEAT_MAP = String.raw`
  const MAP_PAGE_BLOCKS = 1 << 20;
  /** Query parameter names of GET /v1/devices/{id}/cbt/map: the one place they are named. */
  const CBT_MAP_PARAMS = { offset: "blockOffset", count: "blockCount" };
  const UNCHANGED_RGB = [223, 227, 232];
  const RAMP_STOPS = [[49, 130, 206], [236, 201, 75], [214, 48, 49]];

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
      info.blockCount + " blocks of " + formatBytes(info.blockSizeBytes),
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
    const size = shown.info.blockSizeBytes;
    byId("cbt-hover").textContent = "block " + block + " · bytes " + block * size + "–" +
      ((block + 1) * size - 1) + " · change number " + shown.map[block];
  });
`;
