/**
 * What a client connected to an image export sees across its snapshot's
 * destroy, the same on both backends: requests in flight complete or fail
 * with ESHUTDOWN, every later request gets ESHUTDOWN, and then the server
 * closes the connection by itself (after its grace), so the client never
 * hangs on a destroyed image.
 *
 * @module
 */

import assert from "node:assert/strict";
import { NbdClient, NbdRequestError } from "./nbd_client.ts";

/** NBD_ESHUTDOWN. */
export const ESHUTDOWN = 108;

/** How the connection went: ESHUTDOWN answers after destroy, then the server's close. */
export interface EndAcrossDestroy {
  /** Requests in flight at destroy that completed with data. */
  completed: number;
  /** Requests in flight at destroy that failed with ESHUTDOWN. */
  failed: number;
  /** Requests after destroy answered ESHUTDOWN before the server closed the connection. */
  refusedAfter: number;
  /** The client's error once the server had closed the connection. */
  closedWith: string;
}

async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return await promise.then(() => undefined, (error) => error);
}

/**
 * Connects to `uri`, reads, then runs `destroy` while 8 reads of 4 KiB are
 * in flight; asserts each of those completed or failed with ESHUTDOWN, that
 * later reads get ESHUTDOWN, and that the server closes the connection
 * within `timeoutMs` (default 20 s).
 */
export async function checkEndAcrossDestroy(
  uri: string,
  destroy: () => Promise<void>,
  options: { timeoutMs?: number } = {},
): Promise<EndAcrossDestroy> {
  const client = await NbdClient.connect(uri);
  try {
    assert.equal((await client.pread(0, 4096)).length, 4096);
    const inFlight = Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => client.pread(i * 4096, 4096)),
    );
    await destroy();
    let completed = 0;
    let failed = 0;
    for (const outcome of await inFlight) {
      if (outcome.status === "fulfilled") {
        assert.equal(outcome.value.length, 4096);
        completed++;
        continue;
      }
      assert.ok(outcome.reason instanceof NbdRequestError, `${outcome.reason}`);
      assert.equal(outcome.reason.errno, ESHUTDOWN, `${outcome.reason}`);
      failed++;
    }
    let refusedAfter = 0;
    const deadline = Date.now() + (options.timeoutMs ?? 20_000);
    for (;;) {
      const error = await errorOf(client.pread(0, 4096));
      if (error instanceof NbdRequestError) {
        assert.equal(error.errno, ESHUTDOWN, `${error}`);
        refusedAfter++;
      } else {
        assert.ok(error instanceof Error, "a read of a destroyed image must not return data");
        return { completed, failed, refusedAfter, closedWith: error.message };
      }
      assert.ok(Date.now() < deadline, "the server did not close the connection in time");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    await client.close();
  }
}
