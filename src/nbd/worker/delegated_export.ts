/**
 * A Worker's stand-in for an owner's export: every method is a request
 * through the Worker's slot (owner_slot.ts), run by the owner on the real
 * export, so the answer, data or error, is the one the single-threaded
 * server would give. READ and WRITE payloads cross the slot's data area in
 * pieces of at most {@link SLOT_DATA_BYTES}.
 *
 * @module
 */

import type { NbdExport, NbdExtent } from "../export.ts";
import type { ExportInfo } from "./export_info.ts";
import { Op, SLOT_DATA_BYTES, type SlotClient } from "./owner_slot.ts";

/** Flags of a delegated WRITE_ZEROES or WRITE. */
export const DelegatedFlag = { FUA: 1, NO_HOLE: 2, FAST_ZERO: 4 } as const;

const encoder = new TextEncoder();

/**
 * The export `info` describes, served through `slot`; `ended` is aborted
 * when the owner says the export ended.
 */
export function delegatedExport(
  slot: SlotClient,
  info: ExportInfo,
  ended?: AbortSignal,
): NbdExport {
  const handle = info.handle;
  const exp: NbdExport = {
    name: info.name,
    description: info.description,
    sizeBytes: info.sizeBytes,
    readOnly: info.readOnly,
    blockSize: info.blockSize,
    canMultiConn: info.canMultiConn,
    reportsHoles: info.reportsHoles,
    ended,
    read(offset, into) {
      for (let done = 0; done < into.length;) {
        const length = Math.min(SLOT_DATA_BYTES, into.length - done);
        slot.call(Op.READ, { handle, offset: offset + done, length });
        into.set(slot.data.subarray(0, length), done);
        done += length;
      }
      return Promise.resolve();
    },
    write(offset, data, { fua }) {
      for (let done = 0; done < data.length;) {
        const length = Math.min(SLOT_DATA_BYTES, data.length - done);
        slot.data.set(data.subarray(done, done + length));
        slot.call(Op.WRITE, {
          handle,
          offset: offset + done,
          length,
          dataLength: length,
          flags: fua ? DelegatedFlag.FUA : 0,
        });
        done += length;
      }
      return Promise.resolve();
    },
    flush() {
      slot.call(Op.FLUSH, { handle });
      return Promise.resolve();
    },
  };
  if (info.has.trim) {
    exp.trim = (offset, length) => {
      slot.call(Op.TRIM, { handle, offset, length });
      return Promise.resolve();
    };
  }
  if (info.has.writeZeroes) {
    exp.writeZeroes = (offset, length, { noHole, fastZero, fua }) => {
      const flags = (fua ? DelegatedFlag.FUA : 0) | (noHole ? DelegatedFlag.NO_HOLE : 0) |
        (fastZero ? DelegatedFlag.FAST_ZERO : 0);
      slot.call(Op.WRITE_ZEROES, { handle, offset, length, flags });
      return Promise.resolve();
    };
  }
  if (info.has.metaContexts) {
    exp.metaContexts = () => slot.callJson<string[]>(Op.META_CONTEXTS, { handle });
  }
  if (info.has.blockStatus) {
    exp.blockStatus = (context, offset, length) => {
      const dataLength = encoder.encodeInto(context, slot.data).written;
      const answer = slot.call(Op.BLOCK_STATUS, { handle, offset, length, dataLength });
      const text = new TextDecoder().decode(slot.data.subarray(0, answer));
      return Promise.resolve(JSON.parse(text) as NbdExtent[]);
    };
  }
  return guarded(exp);
}

/** `exp` with every method's synchronous throw turned into a rejection, as the contract expects. */
function guarded(exp: NbdExport): NbdExport {
  const wrap = <A extends unknown[], R>(method: ((...args: A) => Promise<R>) | undefined) =>
    method && ((...args: A): Promise<R> => {
      try {
        return method(...args);
      } catch (error) {
        return Promise.reject(error);
      }
    });
  return {
    ...exp,
    read: wrap(exp.read)!,
    write: wrap(exp.write)!,
    flush: wrap(exp.flush)!,
    trim: wrap(exp.trim),
    writeZeroes: wrap(exp.writeZeroes),
    blockStatus: wrap(exp.blockStatus),
  };
}
