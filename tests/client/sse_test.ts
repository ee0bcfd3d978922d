import assert from "node:assert/strict";
import { readSse, type SseMessage } from "../../src/client/sse.ts";

function streamOf(pieces: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const piece of pieces) controller.enqueue(encoder.encode(piece));
      controller.close();
    },
  });
}

async function collect(pieces: string[]): Promise<SseMessage[]> {
  const messages: SseMessage[] = [];
  for await (const message of readSse(streamOf(pieces))) messages.push(message);
  return messages;
}

const text = ": keep-alive\n\n" +
  'event: no_space\nid: 1\ndata: {"a":1}\n\n' +
  "data: line one\r\ndata: line two\r\n\r\n" +
  "event: corrupted\ndata:no-space-after-colon\nid: 2\n\n" +
  "event: ignored-without-data\n\n" +
  "data: unterminated";

const expected: SseMessage[] = [
  { event: "no_space", data: '{"a":1}', id: "1" },
  { event: "message", data: "line one\nline two", id: "1" },
  { event: "corrupted", data: "no-space-after-colon", id: "2" },
];

Deno.test("readSse() yields events, joins data lines, skips comments and data-less events", async () => {
  assert.deepEqual(await collect([text]), expected);
});

Deno.test("readSse() gives the same messages however the body is split", async () => {
  for (const size of [1, 2, 3, 7, 16]) {
    const pieces = [];
    for (let at = 0; at < text.length; at += size) pieces.push(text.slice(at, at + size));
    assert.deepEqual(await collect(pieces), expected, `pieces of ${size}`);
  }
});

Deno.test("readSse() releases the body when the consumer stops early", async () => {
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new TextEncoder().encode("data: x\n\n"));
    },
    cancel() {
      cancelled = true;
    },
  });
  for await (const message of readSse(body)) {
    assert.equal(message.data, "x");
    break;
  }
  assert.equal(cancelled, true);
});
