/**
 * Part of the status page's script: the snapshots' event streams, read with
 * fetch() and a small Server-Sent Events parser, resumed with Last-Event-ID.
 * See page_script.ts.
 *
 * @module
 */

/** The status page script's event streams and event list. */
export const SCRIPT_EVENTS = String.raw`
  const MAX_STREAMS = 3;
  const MAX_EVENTS_SHOWN = 200;

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

  /** Shows an event of a snapshot (with its SSE id, if any) at the top of the list, once. */
  function addEvent(snapshotId, event, id) {
    const key = snapshotId + " " + JSON.stringify(event);
    if (state.seenEvents.has(key)) return;
    state.seenEvents.add(key);
    const list = byId("event-list");
    const when = event.timeMs ? new Date(event.timeMs) : new Date();
    list.prepend(el(
      "li",
      { "data-code": event.code, "data-snapshot-id": snapshotId, "data-event-id": id },
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
          if (message.event === "end") {
            addEvent(snapshotId, { code: "end", detail: "stream ended: " + event.detail });
          } else if (message.event === "truncated") {
            addEvent(snapshotId, {
              code: "truncated",
              detail: "events after id " + event.after + " are no longer held; resumed at id " + event.resumedAt,
            });
          } else addEvent(snapshotId, { code: message.event, ...event }, message.id);
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
`;
