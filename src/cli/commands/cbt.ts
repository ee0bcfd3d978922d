/**
 * `blksnapctl cbtinfo`, `readcbtmap` and `markdirty`: a device's change block
 * tracking.
 *
 * @module
 */

import type { Command } from "../command.ts";
import {
  CLIENT_FLAGS_HELP,
  clientFor,
  integerArgument,
  parseCommand,
  positional,
  print,
  writeLocalFile,
} from "../context.ts";
import { UsageError } from "../exit_codes.ts";
import { deviceArgument } from "../ids.ts";
import { PROGRAM } from "../program.ts";

/** The cbtinfo command. */
export const cbtinfo: Command = {
  help: `Usage: ${PROGRAM} cbtinfo DEVICE [options]

Shows DEVICE's CBT: capacity, tracking block size and count, generation id and
the changes number of the latest snapshot.

${CLIENT_FLAGS_HELP}`,
  async run(args, io) {
    const parsed = parseCommand(args, {});
    if (parsed.values.help) return io.out(cbtinfo.help), 0;
    const client = await clientFor(parsed, io);
    const id = await deviceArgument(client, positional(parsed, 0, "DEVICE"));
    const info = await client.cbt.info(id);
    print(parsed, io, info, () =>
      [
        `capacity       ${info.capacityBytes} bytes`,
        `block size     ${info.blockSizeBytes} bytes`,
        `block count    ${info.blockCount}`,
        `generation     ${info.generationId}`,
        `changes number ${info.changesNumber}`,
      ].join("\n") + "\n");
    return 0;
  },
};

/** The readcbtmap command. */
export const readcbtmap: Command = {
  help:
    `Usage: ${PROGRAM} readcbtmap DEVICE --file FILE [--offset BLOCK] [--length BLOCKS] [options]

Writes DEVICE's CBT read map (one byte per tracking block: the change number
that last touched it) to FILE.

  --file FILE       where to write the map (required)
  --offset BLOCK    first block (default 0)
  --length BLOCKS   number of blocks (default: to the end)
${CLIENT_FLAGS_HELP}`,
  async run(args, io) {
    const parsed = parseCommand(args, {
      file: { type: "string" },
      offset: { type: "string" },
      length: { type: "string" },
    });
    if (parsed.values.help) return io.out(readcbtmap.help), 0;
    const file = parsed.values.file as string | undefined;
    if (!file) throw new UsageError("missing --file FILE (where to write the map)");
    const range = {
      ...(parsed.values.offset
        ? { blockOffset: integerArgument(parsed.values.offset as string, "--offset") }
        : {}),
      ...(parsed.values.length
        ? { blockCount: integerArgument(parsed.values.length as string, "--length") }
        : {}),
    };
    const client = await clientFor(parsed, io);
    const id = await deviceArgument(client, positional(parsed, 0, "DEVICE"));
    const map = await client.cbt.map(id, range);
    await writeLocalFile(file, map);
    const changed = map.reduce((count, value) => count + (value ? 1 : 0), 0);
    print(
      parsed,
      io,
      { device: id, file, blocks: map.length, nonZeroBlocks: changed },
      () => `wrote ${map.length} blocks of ${id}'s CBT map to ${file} (${changed} non-zero)\n`,
    );
    return 0;
  },
};

/** The markdirty command. */
export const markdirty: Command = {
  help: `Usage: ${PROGRAM} markdirty DEVICE --range SECTOR:COUNT [--range ...] [options]

Marks sector ranges of DEVICE dirty in both CBT tables (for example after
writing to it behind the tracker's back).

  --range SECTOR:COUNT   first 512-byte sector and number of sectors (repeatable)
${CLIENT_FLAGS_HELP}`,
  async run(args, io) {
    const parsed = parseCommand(args, { range: { type: "string", multiple: true } });
    if (parsed.values.help) return io.out(markdirty.help), 0;
    const texts = (parsed.values.range as string[] | undefined) ?? [];
    if (texts.length === 0) throw new UsageError("missing --range SECTOR:COUNT");
    const ranges = texts.map((text) => {
      const [offset, count, extra] = text.split(":");
      if (count === undefined || extra !== undefined) {
        throw new UsageError(`--range must be SECTOR:COUNT, got "${text}"`);
      }
      return {
        sectorOffset: integerArgument(offset, "--range SECTOR"),
        sectorCount: integerArgument(count, "--range COUNT"),
      };
    });
    const client = await clientFor(parsed, io);
    const id = await deviceArgument(client, positional(parsed, 0, "DEVICE"));
    await client.cbt.markDirty(id, ranges);
    print(
      parsed,
      io,
      { device: id, ranges },
      () => `marked ${ranges.length} range(s) of ${id} dirty\n`,
    );
    return 0;
  },
};
