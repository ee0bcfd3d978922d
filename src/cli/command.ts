/**
 * The shape of a CLI command module.
 *
 * @module
 */

import type { CliIo } from "./context.ts";

/** A command: its help text and what it does; returns the exit status. */
export interface Command {
  /** Full help text (usage, arguments, options). */
  help: string;
  /** Runs the command with the arguments after its name. */
  run(args: string[], io: CliIo): Promise<number>;
}
