/**
 * Counters of an NBD server for metrics: connections (open now, accepted
 * since start), and per command the requests served, the bytes they carried
 * (the request length: data read or written, or the range trimmed, zeroed
 * or queried) and the requests answered with an error (refusals included).
 * Plain numbers in typed arrays indexed by command, so counting costs the
 * hot path three additions.
 *
 * @module
 */

import { Command as NbdCommand, nameOf } from "./constants.ts";

const COMMANDS: number[] = Object.values(NbdCommand).filter((type) =>
  type !== NbdCommand.NBD_CMD_DISC
);
const SLOTS = Math.max(...COMMANDS) + 2;

/** Per-command counts, keyed by the command's short name ("read", "write_zeroes"). */
export type CountsByCommand = Record<string, number>;

function slot(type: number): number {
  return type >= 0 && type < SLOTS - 1 ? type : SLOTS - 1;
}

/** The counters; one per server. */
export class NbdStats {
  /** Connections open now. */
  connectionsOpen = 0;
  /** Connections accepted since start. */
  connectionsTotal = 0;
  readonly #requests = new Float64Array(SLOTS);
  readonly #bytes = new Float64Array(SLOTS);
  readonly #errors = new Float64Array(SLOTS);

  /** Counts an accepted connection. */
  opened(): void {
    this.connectionsOpen++;
    this.connectionsTotal++;
  }

  /** Counts a closed connection. */
  closed(): void {
    this.connectionsOpen--;
  }

  /** Counts a request of command `type` for `lengthBytes`, failed or not. */
  request(type: number, lengthBytes: number, failed: boolean): void {
    const i = slot(type);
    this.#requests[i]++;
    this.#bytes[i] += lengthBytes;
    if (failed) this.#errors[i]++;
  }

  #byCommand(counts: Float64Array): CountsByCommand {
    const result: CountsByCommand = {};
    for (const type of COMMANDS) result[shortName(type)] = counts[type];
    if (counts[SLOTS - 1] > 0) result.unknown = counts[SLOTS - 1];
    return result;
  }

  /** Requests by command. */
  requests(): CountsByCommand {
    return this.#byCommand(this.#requests);
  }

  /** Bytes by command. */
  bytes(): CountsByCommand {
    return this.#byCommand(this.#bytes);
  }

  /** Failed or refused requests by command. */
  errors(): CountsByCommand {
    return this.#byCommand(this.#errors);
  }
}

function shortName(type: number): string {
  return nameOf("command", type).replace(/^NBD_CMD_/, "").toLowerCase();
}
