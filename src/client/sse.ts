/**
 * A minimal Server-Sent Events reader for the client: turns a response body
 * into `{ event, data, id }` messages (comments and keep-alives skipped).
 *
 * @module
 */

/** One SSE message. */
export interface SseMessage {
  /** Event name ("message" when the server gave none). */
  event: string;
  /** The data lines joined with "\n". */
  data: string;
  /** The id field, if any. */
  id?: string;
}

/** Yields the messages of an SSE body until it ends. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const lines = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  let id: string | undefined;
  try {
    while (true) {
      const { value, done } = await lines.read();
      if (done) return;
      buffer += value;
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length) yield { event, data: data.join("\n"), ...(id ? { id } : {}) };
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
    }
  } finally {
    await lines.cancel().catch(() => {});
  }
}
