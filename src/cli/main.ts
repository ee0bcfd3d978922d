/**
 * The command line: `serve` runs the service; the other commands drive a
 * running service over HTTP. Commands are declared here and loaded lazily;
 * one top-level catch turns any error into a message and an exit status.
 *
 * @module
 */

import type { Command } from "./command.ts";
import { type CliIo, processIo } from "./context.ts";
import { ExitCode, exitCodeFor, UsageError } from "./exit_codes.ts";
import { ProblemError } from "../client/problem_error.ts";

interface CommandEntry {
  summary: string;
  load(): Promise<Command>;
}

const commands: Record<string, CommandEntry> = {
  serve: {
    summary: "run the service (HTTP API, and NBD exports for the userspace backend)",
    load: async () => (await import("./commands/serve.ts")).command,
  },
  version: {
    summary: "service version, backend, kernel profile, capabilities",
    load: async () => (await import("./commands/version.ts")).command,
  },
  attach: {
    summary: "attach a device (start tracking)",
    load: async () => (await import("./commands/attach.ts")).attach,
  },
  detach: {
    summary: "detach a device (stop tracking)",
    load: async () => (await import("./commands/attach.ts")).detach,
  },
  devices: {
    summary: "list attached devices",
    load: async () => (await import("./commands/attach.ts")).devices,
  },
  cbtinfo: {
    summary: "a device's CBT info",
    load: async () => (await import("./commands/cbt.ts")).cbtinfo,
  },
  readcbtmap: {
    summary: "write a device's CBT map to a file",
    load: async () => (await import("./commands/cbt.ts")).readcbtmap,
  },
  markdirty: {
    summary: "mark sector ranges dirty in a device's CBT",
    load: async () => (await import("./commands/cbt.ts")).markdirty,
  },
  snapshot: {
    summary: "create, add, take, info, list, destroy, waitevent, watch",
    load: async () => (await import("./commands/snapshot.ts")).command,
  },
  image: {
    summary: "read an image, list its changes, locate it",
    load: async () => (await import("./commands/image.ts")).command,
  },
};

/** The top-level help text. */
export function usage(): string {
  const width = Math.max(...Object.keys(commands).map((name) => name.length));
  return `Usage: blksnap COMMAND [arguments] [options]

Block-device snapshots with change block tracking.

Commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`).join("\n")}

Run "blksnap COMMAND --help" for a command's options.
Exit status: 0 ok, 1 failure, 2 usage error, 3 refused by the service, 4 service unreachable.
`;
}

/** Runs the command line `args` and returns the exit status. */
export async function main(args: string[], io: CliIo = processIo): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    io.out(usage());
    return name ? ExitCode.OK : ExitCode.USAGE;
  }
  const entry = commands[name];
  try {
    if (!entry) throw new UsageError(`unknown command "${name}"`);
    return await (await entry.load()).run(rest, io);
  } catch (error) {
    const status = exitCodeFor(error);
    if (error instanceof UsageError) {
      io.err(
        `blksnap: ${error.message}\nRun "blksnap ${entry ? `${name} ` : ""}--help" for usage.\n`,
      );
    } else if (error instanceof ProblemError) {
      io.err(
        `blksnap: ${error.problem.detail} (${error.code}${
          error.problem.errno ? `, ${error.problem.errno}` : ""
        }${error.problem.reason ? `, ${error.problem.reason}` : ""})\n`,
      );
    } else if (
      status === ExitCode.FAILURE && !(error instanceof Error && error.name === "ServiceError")
    ) {
      io.err(`blksnap: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    } else {
      io.err(`blksnap: ${(error as Error).message}\n`);
    }
    return status;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
