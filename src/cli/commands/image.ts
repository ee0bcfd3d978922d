/**
 * `blksnap image <verb>`: read an image's bytes (to a file or stdout),
 * list its changed extents, or show where it is.
 *
 * @module
 */

import type { Command } from "../command.ts";
import {
  CLIENT_FLAGS_HELP,
  clientFor,
  type CliIo,
  integerArgument,
  parseCommand,
  positional,
  print,
} from "../context.ts";
import { UsageError } from "../exit_codes.ts";
import { Progress } from "../progress.ts";

const HELP = `Usage: blksnap image VERB SNAPSHOT DEVICE [options]

Verbs:
  read      write the image's bytes to --output FILE, or to standard output
            (--offset BYTES and --length BYTES read a part; a progress bar is
            drawn on standard error when it is a terminal)
  changes   the extents changed since the snapshot of change token --since TOKEN
            (default: the previous snapshot), for incremental backup; exit 3 with
            FULL_BACKUP_REQUIRED and its reason when only a full backup is safe
  locate    where the image is (an nbd:// URI or a /dev path) and its change token

  -o, --output FILE   read: where to write (default standard output)
  --offset BYTES      read: first byte (default 0)
  --length BYTES      read: number of bytes (default: to the end)
  --since TOKEN       changes: the change token of an earlier snapshot of the device
  --generation UUID   changes: with a bare change number in --since, its CBT generation
${CLIENT_FLAGS_HELP}`;

async function read(
  snapshotId: string,
  deviceId: string,
  values: Record<string, unknown>,
  io: CliIo,
  client: Awaited<ReturnType<typeof clientFor>>,
): Promise<{ bytes: number; output: string }> {
  const offset = values.offset ? integerArgument(values.offset as string, "--offset") : undefined;
  const length = values.length ? integerArgument(values.length as string, "--length") : undefined;
  if (length === 0) throw new UsageError("--length must be at least 1");
  const output = values.output as string | undefined;
  const response = await client.images.read(snapshotId, deviceId, { offset, length });
  const total = Number(response.headers.get("content-length") ?? 0);
  const progress = Progress.onStderr(total);
  const target = output
    ? await Deno.open(output, { write: true, create: true, truncate: true })
    : undefined;
  let bytes = 0;
  try {
    const writer = target ? target.writable.getWriter() : Deno.stdout.writable.getWriter();
    for await (const piece of response.body!) {
      await writer.write(piece);
      bytes += piece.length;
      progress.advance(piece.length);
    }
    if (target) await writer.close();
    else writer.releaseLock();
  } finally {
    progress.finish();
  }
  if (bytes !== total) {
    throw new Error(`The image stream ended after ${bytes} of ${total} bytes`);
  }
  if (!output) io.err(`read ${bytes} bytes of ${deviceId}@${snapshotId}\n`);
  return { bytes, output: output ?? "-" };
}

/** The image command. */
export const command: Command = {
  help: HELP,
  async run(args, io) {
    const [name, ...rest] = args;
    if (
      !name || name === "--help" || name === "-h" || rest.includes("--help") || rest.includes("-h")
    ) {
      io.out(HELP);
      return name ? 0 : 2;
    }
    const parsed = parseCommand(rest, {
      output: { type: "string", short: "o" },
      offset: { type: "string" },
      length: { type: "string" },
      since: { type: "string" },
      generation: { type: "string" },
    });
    const snapshotId = positional(parsed, 0, "SNAPSHOT");
    const deviceId = positional(parsed, 1, "DEVICE");
    const client = await clientFor(parsed, io);
    switch (name) {
      case "read": {
        const result = await read(snapshotId, deviceId, parsed.values, io, client);
        if (result.output !== "-") {
          print(parsed, io, result, () => `wrote ${result.bytes} bytes to ${result.output}\n`);
        }
        return 0;
      }
      case "changes": {
        const since = parsed.values.since as string | undefined;
        const generation = parsed.values.generation as string | undefined;
        const changes = await client.images.changes(snapshotId, deviceId, { since, generation });
        print(
          parsed,
          io,
          changes,
          () =>
            `change token ${changes.changeToken}\n` +
            `since token  ${changes.sinceToken ?? `(change number ${changes.since})`}\n` +
            `generation ${changes.generationId}, changes number ${changes.changesNumber}, ` +
            `blocks above ${changes.since}: ${changes.changedBytes} bytes in ${changes.extents.length} extents\n` +
            changes.extents.map((e) => `${e.offset}\t${e.length}\n`).join(""),
        );
        return 0;
      }
      case "locate": {
        const locator = await client.images.locator(snapshotId, deviceId);
        print(
          parsed,
          io,
          locator,
          () =>
            `${locator.locator}\t${locator.sizeBytes} bytes\n` +
            (locator.changeToken ? `change token ${locator.changeToken}\n` : ""),
        );
        return 0;
      }
      default:
        throw new UsageError(`unknown image verb "${name}"; see blksnap image --help`);
    }
  },
};
