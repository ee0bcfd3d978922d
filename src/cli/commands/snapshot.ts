/**
 * `blksnapctl snapshot <verb>`: create, add, take, info, list, destroy,
 * waitevent and watch.
 *
 * @module
 */

import type { LoggedEvent, SnapshotInfo } from "../../driver.ts";
import type { TruncatedNotice } from "../../client/client.ts";
import type { Command } from "../command.ts";
import {
  absolutePath,
  CLIENT_FLAGS_HELP,
  clientFor,
  type CliIo,
  integerArgument,
  parseCommand,
  type Parsed,
  positional,
  print,
  sizeArgument,
} from "../context.ts";
import { UsageError } from "../exit_codes.ts";
import { deviceArgument, snapshotArgument } from "../ids.ts";

/** The storage limit of `snapshot create` without --limit: one 1 GiB growth step of the storage. */
export const DEFAULT_LIMIT = "1G";
import { PROGRAM } from "../program.ts";

const HELP = `Usage: ${PROGRAM} snapshot VERB [arguments] [options]

Verbs:
  create --device DEVICE [--device DEVICE ...] --storage PATH [--limit SIZE] [--writable]
         [--overwrite]
                        create a snapshot of attached devices; SIZE like 1073741824, 512M, 2G
                        (default ${DEFAULT_LIMIT}: one growth step of the difference storage);
                        --overwrite reuses an existing non-empty storage file (its data is lost)
  add SNAPSHOT DEVICE   add an attached device to a snapshot not yet taken
  take SNAPSHOT [--no-freeze]
                        take it, atomically across its devices, freezing the file systems
                        mounted on them (--no-freeze: crash-consistent, nothing frozen)
  info SNAPSHOT         state, images, errors, storage usage
  list                  all snapshots
  destroy SNAPSHOT      destroy it and its images (devices stay attached)
  waitevent SNAPSHOT [--after ID] [--timeout MS]
                        the events after event ID (default: all the snapshot's log holds),
                        waiting up to MS (default 30000) for one; exit 0 either way
  watch SNAPSHOT [--after ID]
                        print events (with their ids) as they come until the snapshot is
                        destroyed; every watcher sees every event, a broken connection resumes
                        after the last id seen

${CLIENT_FLAGS_HELP}`;

function describeSnapshot(snapshot: SnapshotInfo): string {
  const lines = [
    `snapshot ${snapshot.id}`,
    `  state     ${snapshot.state}${snapshot.writable ? " (writable)" : ""}`,
    `  created   ${snapshot.createdAt}`,
    ...(snapshot.takenAt ? [`  taken     ${snapshot.takenAt}`] : []),
    ...(snapshot.storage
      ? [
        `  storage   ${snapshot.storage.path}: ${snapshot.storage.usedBytes} used, ` +
        `${snapshot.storage.capacityBytes} allocated, limit ${snapshot.storage.limitBytes} bytes`,
      ]
      : []),
    ...snapshot.devices.map((d) =>
      `  device    ${d.deviceId}  image ${d.locator ?? "(not taken)"}` +
      (d.imageDevicePath && d.imageDevicePath !== d.locator ? ` (${d.imageDevicePath})` : "") +
      (d.errorCode ? `  error ${d.errorName ?? d.errorCode}` : "") +
      (d.changeToken ? `\n            change token ${d.changeToken}` : "")
    ),
    ...(snapshot.consistency?.devices ?? []).flatMap((d) =>
      d.filesystems.map((f) =>
        `  ${
          f.frozen ? "frozen  " : "unfrozen"
        }  ${f.mountPoint} (${f.fsType} on ${f.blockDevice} of ${d.deviceId})` +
        (f.frozenMs !== undefined ? ` ${f.frozenMs} ms` : "") + (f.error ? `: ${f.error}` : "")
      )
    ),
  ];
  return lines.join("\n") + "\n";
}

function describeEvent(event: LoggedEvent | TruncatedNotice): string {
  if (event.code === "truncated") {
    return `events after ${event.after} are no longer held; resuming at ${event.resumedAt}\n`;
  }
  const time = new Date(event.timeMs).toISOString();
  return event.code === "corrupted"
    ? `${event.id} ${time} corrupted${event.deviceId ? ` device ${event.deviceId}` : ""} error ${
      event.errorName ?? event.errorCode
    }\n`
    : `${event.id} ${time} no_space requested ${event.requestedSectors} sectors\n`;
}

async function verb(name: string, args: string[], io: CliIo): Promise<number> {
  const flags = {
    device: { type: "string", multiple: true },
    storage: { type: "string" },
    limit: { type: "string" },
    writable: { type: "boolean", default: false },
    overwrite: { type: "boolean", default: false },
    timeout: { type: "string" },
    "no-freeze": { type: "boolean", default: false },
    after: { type: "string" },
  } as const;
  const parsed: Parsed = parseCommand(args, flags);
  const client = await clientFor(parsed, io);
  const after = parsed.values.after
    ? integerArgument(parsed.values.after as string, "--after")
    : undefined;
  switch (name) {
    case "create": {
      const storage = parsed.values.storage as string | undefined;
      const limit = (parsed.values.limit as string | undefined) ?? DEFAULT_LIMIT;
      if (!storage) throw new UsageError("missing --storage PATH (the difference storage)");
      const limitBytes = sizeArgument(limit, "--limit");
      const devices = [];
      for (const device of (parsed.values.device as string[] | undefined) ?? []) {
        devices.push(await deviceArgument(client, device, "--device"));
      }
      const snapshot = await client.snapshots.create({
        devices,
        diffStorage: {
          path: absolutePath(storage),
          limitBytes,
          ...(parsed.values.overwrite ? { overwrite: true } : {}),
        },
        writable: parsed.values.writable as boolean,
      });
      print(parsed, io, snapshot, () => describeSnapshot(snapshot));
      return 0;
    }
    case "add": {
      const snapshot = await client.snapshots.addDevice(
        snapshotArgument(positional(parsed, 0, "SNAPSHOT")),
        await deviceArgument(client, positional(parsed, 1, "DEVICE")),
      );
      print(parsed, io, snapshot, () => describeSnapshot(snapshot));
      return 0;
    }
    case "take": {
      const snapshot = await client.snapshots.take(
        snapshotArgument(positional(parsed, 0, "SNAPSHOT")),
        parsed.values["no-freeze"] ? { freeze: false } : undefined,
      );
      print(parsed, io, snapshot, () => describeSnapshot(snapshot));
      return 0;
    }
    case "info": {
      const snapshot = await client.snapshots.get(
        snapshotArgument(positional(parsed, 0, "SNAPSHOT")),
      );
      print(parsed, io, snapshot, () => describeSnapshot(snapshot));
      return 0;
    }
    case "list": {
      const snapshots = await client.snapshots.list();
      print(
        parsed,
        io,
        snapshots,
        () => snapshots.length ? snapshots.map(describeSnapshot).join("") : "no snapshots\n",
      );
      return 0;
    }
    case "destroy": {
      const id = snapshotArgument(positional(parsed, 0, "SNAPSHOT"));
      await client.snapshots.destroy(id);
      print(parsed, io, { destroyed: id }, () => `destroyed ${id}\n`);
      return 0;
    }
    case "waitevent": {
      const id = snapshotArgument(positional(parsed, 0, "SNAPSHOT"));
      const timeout = parsed.values.timeout
        ? integerArgument(parsed.values.timeout as string, "--timeout")
        : 30_000;
      const page = await client.snapshots.waitEvents(id, { after, timeoutMs: timeout });
      print(
        parsed,
        io,
        page,
        () =>
          (page.truncated ? `some events after ${after ?? 0} are no longer held\n` : "") +
          (page.events.length
            ? page.events.map(describeEvent).join("")
            : `no event within ${timeout} ms (last id ${page.lastId})\n`),
      );
      return 0;
    }
    case "watch": {
      const id = snapshotArgument(positional(parsed, 0, "SNAPSHOT"));
      for await (const event of client.snapshots.watch(id, { after })) {
        if (parsed.values.json) io.out(JSON.stringify(event) + "\n");
        else io.out(describeEvent(event));
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown snapshot verb "${name}"; see ${PROGRAM} snapshot --help`);
  }
}

/** The snapshot command. */
export const command: Command = {
  help: HELP,
  run(args, io) {
    const [name, ...rest] = args;
    if (
      !name || name === "--help" || name === "-h" || rest.includes("--help") || rest.includes("-h")
    ) {
      io.out(HELP);
      return Promise.resolve(name ? 0 : 2);
    }
    return verb(name, rest, io);
  },
};
