/**
 * What a Worker learns of an owner's export at the handshake: its
 * properties as plain data (the export itself stays with the owner), the
 * handle that later requests name it by, and which optional methods it has.
 *
 * @module
 */

import type { NbdBlockSize, NbdExport } from "../export.ts";
import { fastPathOf } from "./fast_path.ts";

/** An export described for a Worker. */
export interface ExportInfo {
  /** Names the export in the Worker's later requests (per Worker, per connection). */
  handle: number;
  /** Export name. */
  name: string;
  /** Description. */
  description?: string;
  /** Size in bytes at the handshake. */
  sizeBytes: number;
  /** Read-only. */
  readOnly: boolean;
  /** Block size constraints. */
  blockSize?: NbdBlockSize;
  /** NBD_FLAG_CAN_MULTI_CONN. */
  canMultiConn: boolean;
  /** As NbdExport.reportsHoles at the handshake. */
  reportsHoles?: boolean;
  /** Which optional methods exist. */
  has: { trim: boolean; writeZeroes: boolean; metaContexts: boolean; blockStatus: boolean };
  /** True when the export offers a fast path (a view follows by message). */
  fast: boolean;
  /** True when the export can end (NbdExport.ended; an "ended" message follows then). */
  canEnd: boolean;
  /** True when it had ended already. */
  ended: boolean;
}

/** `exp` described under `handle`. */
export function describeExport(exp: NbdExport, handle: number): ExportInfo {
  return {
    handle,
    name: exp.name,
    description: exp.description,
    sizeBytes: exp.sizeBytes,
    readOnly: exp.readOnly,
    blockSize: exp.blockSize,
    canMultiConn: exp.canMultiConn,
    reportsHoles: exp.reportsHoles,
    has: {
      trim: exp.trim !== undefined,
      writeZeroes: exp.writeZeroes !== undefined,
      metaContexts: exp.metaContexts !== undefined,
      blockStatus: exp.blockStatus !== undefined,
    },
    fast: fastPathOf(exp) !== undefined,
    canEnd: exp.ended !== undefined,
    ended: exp.ended?.aborted ?? false,
  };
}
