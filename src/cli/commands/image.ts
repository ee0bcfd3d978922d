/**
 * `blksnapctl image <verb>`: read an image's bytes (to a file or stdout),
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
import { deviceArgument, snapshotArgument } from "../ids.ts";
import { Progress } from "../progress.ts";
import { ProblemError } from "../../client/problem_error.ts";
import { isServiceError, ServiceError } from "../../errors.ts";
import { imageExportName } from "../../export_names.ts";
import { type ByteExtent, httpSource, type ImageSource, nbdSource } from "../pull/image_source.ts";
import {
  applyChanges,
  checkFullCopy,
  pullFull,
  type PullResult,
  pullToStream,
} from "../pull/pull.ts";

import { PROGRAM } from "../program.ts";

const HELP = `Usage: ${PROGRAM} image VERB SNAPSHOT DEVICE [options]

Verbs:
  read      copy the image to --output FILE (sparse: holes for zeros; written to
            a temporary file renamed at the end, so a failed read leaves
            nothing), or to standard output when it is not a terminal. With
            --since TOKEN --into FILE: apply only the extents changed since
            TOKEN to FILE, an existing full copy of the previous backup (a
            synthetic full). A progress bar is drawn on standard error when it
            is a terminal.
  changes   the extents changed since the snapshot of change token --since TOKEN
            (default: the previous snapshot), for incremental backup; exit 3 with
            FULL_BACKUP_REQUIRED and its reason when only a full backup is safe
  locate    where the image is (an nbd:// URI or a /dev path) and its change token

  -o, --output FILE   read: where to write (default standard output)
  --offset BYTES      read: first byte (default 0)
  --length BYTES      read: number of bytes (default: to the end)
  --since TOKEN       changes: the change token of an earlier snapshot of the device;
                      read: with --into, the change token of the previous backup
  --generation UUID   changes: with a bare change number in --since, its CBT generation
  --into FILE         read: the full copy to update with the changed extents
  --in-place          read --into: write into FILE directly (no copy of it first;
                      a failure leaves it partly updated)
  --nbd               read: pull the bytes from the image's NBD export instead of HTTP
  --nbd-server URI    read: the NBD server to pull from (nbd://HOST:PORT), for a kernel
                      backend whose locators are /dev paths (served without NBD) or
                      another address of the server; implies --nbd
${CLIENT_FLAGS_HELP}`;

type Client = Awaited<ReturnType<typeof clientFor>>;

/** The source the read pulls from: the NBD export with --nbd, else the HTTP data route. */
async function openSource(
  client: Client,
  image: { snapshotId: string; deviceId: string },
  nbd: { wanted: boolean; server?: string },
): Promise<ImageSource> {
  if (nbd.server) {
    const name = encodeURIComponent(imageExportName(image.deviceId, image.snapshotId));
    return await nbdSource(`${nbd.server.replace(/\/+$/, "")}/${name}`);
  }
  if (!nbd.wanted) return await httpSource(client, image);
  const { locator } = await client.images.locator(image.snapshotId, image.deviceId);
  if (!/^nbd(\+unix)?:/.test(locator)) {
    throw new UsageError(
      `--nbd: the image's locator is ${locator}; give --nbd-server nbd://HOST:PORT (kernel backend)`,
    );
  }
  return await nbdSource(locator);
}

/** The service cannot answer the changes since a token: only a full backup is safe. */
class FullBackupRequired extends ServiceError {
  /** `detail` is the line the CLI prints. */
  constructor(detail: string) {
    super("CONFLICT", detail);
  }
}

/** The changed extents since `token`; a 409 FULL_BACKUP_REQUIRED becomes a one-line refusal. */
async function changedExtents(
  client: Client,
  image: { snapshotId: string; deviceId: string },
  token: string,
): Promise<ByteExtent[]> {
  try {
    const changes = await client.images.changes(image.snapshotId, image.deviceId, {
      since: token,
    });
    return changes.extents;
  } catch (error) {
    if (error instanceof ProblemError && String(error.code) === "FULL_BACKUP_REQUIRED") {
      const reason = (error.problem as { reason?: string }).reason ?? error.problem.detail;
      throw new FullBackupRequired(`take a full backup: ${reason}`);
    }
    throw error;
  }
}

/** What --offset/--length ask for (before the image's size is known). */
function requestedPart(values: Record<string, unknown>): { offset?: number; length?: number } {
  const offset = values.offset ? integerArgument(values.offset as string, "--offset") : undefined;
  const length = values.length ? integerArgument(values.length as string, "--length") : undefined;
  if (length === 0) throw new UsageError("--length must be at least 1");
  return { offset, length };
}

/** The part of the image `part` names, checked against its size; undefined for all of it. */
function requestedExtent(
  part: { offset?: number; length?: number },
  sizeBytes: number,
): ByteExtent | undefined {
  if (part.offset === undefined && part.length === undefined) return undefined;
  const first = part.offset ?? 0;
  if (first >= sizeBytes) {
    throw new UsageError(`--offset ${first} is beyond the image of ${sizeBytes} bytes`);
  }
  return { offset: first, length: Math.min(part.length ?? sizeBytes - first, sizeBytes - first) };
}

/** What a read reports. */
interface ReadReport extends Partial<PullResult> {
  bytes: number;
  output: string;
  via: string;
}

async function read(
  image: { snapshotId: string; deviceId: string },
  values: Record<string, unknown>,
  io: CliIo,
  client: Client,
): Promise<ReadReport> {
  const output = values.output as string | undefined;
  const into = values.into as string | undefined;
  const since = values.since as string | undefined;
  if ((since === undefined) !== (into === undefined)) {
    throw new UsageError("--since and --into go together (a synthetic full from FILE)");
  }
  if (into && (output || values.offset || values.length)) {
    throw new UsageError("--into takes neither --output, --offset nor --length");
  }
  if (!output && !into && Deno.stdout.isTerminal()) {
    throw new UsageError(
      "refusing to write image data to a terminal; give -o FILE or redirect standard output",
    );
  }
  const part = requestedPart(values);
  const name = `${image.deviceId}@${image.snapshotId}`;
  const source = await openSource(client, image, {
    wanted: values.nbd === true,
    server: values["nbd-server"] as string | undefined,
  });
  try {
    if (into) await checkFullCopy(into, source.sizeBytes);
    const extents = since !== undefined ? await changedExtents(client, image, since) : undefined;
    const extent = into ? undefined : requestedExtent(part, source.sizeBytes);
    const total = extents
      ? extents.reduce((sum, e) => sum + e.length, 0)
      : extent?.length ?? source.sizeBytes;
    const progress = Progress.onStderr(total);
    try {
      if (into) {
        const result = await applyChanges(source, extents!, {
          into,
          inPlace: values["in-place"] === true,
          progress,
        });
        return { ...result, output: into, via: source.via };
      }
      if (output) {
        const result = await pullFull(source, { output, extent, progress });
        return { ...result, output, via: source.via };
      }
      const bytes = await pullToStream(source, Deno.stdout.writable, { extent, progress });
      io.err(`read ${bytes} bytes of ${name}\n`);
      return { bytes, output: "-", via: source.via };
    } finally {
      progress.finish();
    }
  } catch (error) {
    if (error instanceof UsageError || error instanceof FullBackupRequired) throw error;
    const reason = error instanceof ProblemError ? error.problem.detail : (error as Error).message;
    const left = output ? `; nothing was written to ${output}` : "";
    throw new ServiceError(
      isServiceError(error) ? error.code : error instanceof ProblemError ? error.code : "IO",
      `Cannot read ${name}: ${reason.replaceAll("\n", " ")}${left}`,
      { cause: error },
    );
  } finally {
    await source.close();
  }
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
      into: { type: "string" },
      "in-place": { type: "boolean", default: false },
      nbd: { type: "boolean", default: false },
      "nbd-server": { type: "string" },
      generation: { type: "string" },
    });
    const snapshotId = snapshotArgument(positional(parsed, 0, "SNAPSHOT"));
    const deviceText = positional(parsed, 1, "DEVICE");
    const client = await clientFor(parsed, io);
    const deviceId = await deviceArgument(client, deviceText);
    switch (name) {
      case "read": {
        const result = await read({ snapshotId, deviceId }, parsed.values, io, client);
        if (result.output !== "-") {
          print(
            parsed,
            io,
            result,
            () =>
              parsed.values.into
                ? `applied ${result.bytes} changed bytes to ${result.output} via ${result.via}\n`
                : `wrote ${result.bytes} bytes to ${result.output} via ${result.via} ` +
                  `(${result.writtenBytes} written, ${
                    result.bytes - result.writtenBytes!
                  } left as holes)\n`,
          );
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
            (locator.imageDevicePath ? `image device ${locator.imageDevicePath}\n` : "") +
            (locator.changeToken ? `change token ${locator.changeToken}\n` : ""),
        );
        return 0;
      }
      default:
        throw new UsageError(`unknown image verb "${name}"; see ${PROGRAM} image --help`);
    }
  },
};
