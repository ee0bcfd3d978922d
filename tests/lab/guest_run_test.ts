import assert from "node:assert/strict";
import { followProgress } from "../../lab/guest_run.ts";
import type { ProgressEvent } from "../../lab/progress.ts";

Deno.test("followProgress reads the file as it grows and stops at the agent's done", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/progress.log`;
    const events: ProgressEvent[] = [];
    const reading = (async () => {
      const stream = followProgress(path, {
        exited: new Promise(() => {}),
        deadline: Date.now() + 20_000,
      });
      for await (const event of stream) events.push(event);
    })();
    await new Promise((resolve) => setTimeout(resolve, 300)); // the file does not exist yet
    await Deno.writeTextFile(path, "lab-agent: booted 6.1 in 30 s\r\nrunning 1 test from ./t.js\n");
    await new Promise((resolve) => setTimeout(resolve, 400));
    await Deno.writeTextFile(path, "a case ... o", { append: true });
    await Deno.writeTextFile(path, "k (5ms)\nlab-agent: done rc=0\nafter the end\n", {
      append: true,
    });
    await reading;
    assert.deepEqual(events.map((e) => e.kind), ["agent", "file", "case", "done"]);
    assert.deepEqual(events[3], { kind: "done", exitCode: 0 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("followProgress ends when the guest exits, delivering the last unfinished line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/progress.log`;
    await Deno.writeTextFile(path, "lab-agent: booted\nKernel panic - not syncing");
    const events: ProgressEvent[] = [];
    for await (
      const event of followProgress(path, { exited: Promise.resolve(0), deadline: Infinity })
    ) events.push(event);
    assert.deepEqual(events.map((e) => e.kind), ["agent", "output"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("followProgress gives up at the deadline", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const started = Date.now();
    const events: ProgressEvent[] = [];
    for await (
      const event of followProgress(`${dir}/never.log`, {
        exited: new Promise(() => {}),
        deadline: Date.now() + 300,
      })
    ) events.push(event);
    assert.deepEqual(events, []);
    assert.ok(Date.now() - started < 5_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
