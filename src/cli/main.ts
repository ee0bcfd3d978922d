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
import { hoistGlobalFlags } from "./global_flags.ts";
import { ProblemError } from "../client/problem_error.ts";
import { SERVICE_VERSION } from "../version.ts";
import { PROGRAM } from "./program.ts";

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
  return `Usage: ${PROGRAM} [options] COMMAND [arguments] [options]

Block-device snapshots with change block tracking: runs the blksnap service
(serve) and drives a running one over HTTP (every other command).

Commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`).join("\n")}

Options (anywhere on the line):
  --url URL, --token-file FILE, --json   see "${PROGRAM} COMMAND --help"
  -V, --version                          print ${PROGRAM}'s own version (no service needed)
  -h, --help                             show this help

Run "${PROGRAM} COMMAND --help" for a command's options.
Exit status: 0 ok, 1 failure, 2 usage error, 3 refused by the service, 4 service unreachable.
`;
}

/** The one-line message for `error`, the way the user should read it. */
function describeError(error: unknown): string {
  if (error instanceof ProblemError) {
    const codes = [error.code, error.problem.errno, error.problem.reason].filter(Boolean)
      .join(", ");
    return `${error.problem.detail} (${codes})`;
  }
  if (error instanceof Error) {
    const message = error.message.split("\n")[0].trim() || error.name;
    // Deno's file errors already say what failed ("No such file or directory
    // (os error 2): open '/x'"); anything else unexpected says its kind.
    return error.name === "Error" || error.name in Deno.errors || isKnownName(error.name)
      ? message
      : `${message} (${error.name})`;
  }
  return String(error).split("\n")[0];
}

function isKnownName(name: string): boolean {
  return ["UsageError", "ServiceError", "ConnectionError", "CliFailure"].includes(name);
}

/** Runs the command line `args` and returns the exit status; never throws. */
export async function main(args: string[], io: CliIo = processIo): Promise<number> {
  let name: string | undefined;
  let entry: CommandEntry | undefined;
  try {
    const line = hoistGlobalFlags(args);
    if (line.version) {
      io.out(`${PROGRAM} ${SERVICE_VERSION} (deno ${Deno.version.deno})\n`);
      return ExitCode.OK;
    }
    name = line.command;
    if (!name || name === "help") {
      io.out(usage());
      return name || line.help ? ExitCode.OK : ExitCode.USAGE;
    }
    entry = commands[name];
    if (!entry) throw new UsageError(`unknown command "${name}"`);
    return await (await entry.load()).run(line.rest, io);
  } catch (error) {
    const status = exitCodeFor(error);
    if (error instanceof UsageError) {
      io.err(
        `${PROGRAM}: ${error.message.split("\n")[0]}\n` +
          `Run "${PROGRAM} ${entry ? `${name} ` : ""}--help" for usage.\n`,
      );
    } else {
      io.err(`${PROGRAM}: ${describeError(error)}\n`);
    }
    return status;
  }
}

/** The last word on a failure nothing else caught (a stray rejection): one line, exit 1. */
function failOnStray(event: PromiseRejectionEvent | ErrorEvent): void {
  event.preventDefault();
  const error = "reason" in event ? event.reason : event.error;
  processIo.err(`${PROGRAM}: ${describeError(error)}\n`);
  Deno.exit(ExitCode.FAILURE);
}

if (import.meta.main) {
  globalThis.addEventListener("unhandledrejection", failOnStray);
  globalThis.addEventListener("error", failOnStray);
  Deno.exit(await main(Deno.args));
}
