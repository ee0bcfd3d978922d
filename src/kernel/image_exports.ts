/**
 * NBD exports of the kernel backend's snapshot images, so a backup server
 * pulls from a kernel host with the same tools and URIs as from a userspace
 * one: each image device the module creates at take is served as
 * `<device>@<snapshot-id>` (read-only, or read-write for a snapshot created
 * writable), with the device's CBT as the `qemu:dirty-bitmap:cbt` and
 * `blksnap:change-number` contexts (src/cbt_contexts.ts, shared with the
 * userspace backend) read through CBTMAP, the image's change tokens as the
 * `blksnap:change-token:<T>` and `blksnap:previous-change-token:<P>` names
 * (while the device's CBT is still the one it was taken with, as for the
 * userspace backend), and `base:allocation` reporting everything allocated.
 *
 * The export list is computed from the driver at each handshake
 * ({@link KernelDriver.takenImages}): an image appears at take and is gone
 * from new handshakes at destroy. At destroy the export ends
 * (NbdExport.ended): requests still in flight complete or fail (with
 * ESHUTDOWN), later ones get ESHUTDOWN, and the server closes the
 * connection after its grace. Reads go through the driver (so a corrupted
 * snapshot answers EIO); writes go to the image device through a handle of
 * their own, opened on the first write and closed by {@link KernelImageExports.close}
 * or when the image is gone.
 *
 * @module
 */

import { type FileHandle, open } from "node:fs/promises";
import { cbtContextNames, cbtExtents, type CbtView } from "../cbt_contexts.ts";
import { ServiceError } from "../errors.ts";
import { imageExportName } from "../export_names.ts";
import type { ExportProvider, NbdExport, NbdExtent } from "../nbd/export.ts";
import { fsError } from "./image_reader.ts";
import type { KernelDriver, TakenImage } from "./kernel_driver.ts";

const BLOCK_SIZE = { minimum: 1, preferred: 4096, maximum: 32 << 20 };

/** The image exports of a {@link KernelDriver}. */
export class KernelImageExports implements ExportProvider {
  readonly #driver: KernelDriver;
  readonly #writers = new Map<string, Promise<FileHandle>>();

  /** Exports of `driver`'s taken images. */
  constructor(driver: KernelDriver) {
    this.#driver = driver;
  }

  /** Every taken image's export. */
  list(): NbdExport[] {
    const images = this.#driver.takenImages();
    this.#dropWritersExcept(images);
    return images.map((image) => this.#export(image));
  }

  /** The export `<device>@<snapshot-id>`, when that image exists. */
  get(name: string): NbdExport | undefined {
    const image = this.#driver.takenImages().find((i) =>
      imageExportName(i.deviceId, i.snapshotId) === name
    );
    return image ? this.#export(image) : undefined;
  }

  /** Closes the write handles. */
  async close(): Promise<void> {
    const handles = [...this.#writers.values()];
    this.#writers.clear();
    for (const handle of handles) await (await handle.catch(() => undefined))?.close();
  }

  #dropWritersExcept(images: TakenImage[]): void {
    const live = new Set(images.map((i) => i.path));
    for (const [path, handle] of this.#writers) {
      if (live.has(path)) continue;
      this.#writers.delete(path);
      handle.then((h) => h.close(), () => {});
    }
  }

  #writer(path: string): Promise<FileHandle> {
    let handle = this.#writers.get(path);
    if (!handle) {
      handle = open(path, "r+");
      this.#writers.set(path, handle);
      handle.catch(() => this.#writers.delete(path));
    }
    return handle;
  }

  #export(image: TakenImage): NbdExport {
    const driver = this.#driver;
    const { snapshotId, deviceId, path, sizeBytes, ended } = image;
    const name = imageExportName(deviceId, snapshotId);
    const refuseEnded = (what: string) => {
      if (ended.aborted) {
        throw new ServiceError("UNAVAILABLE", `${what}: snapshot ${snapshotId} was destroyed`, {
          errno: "ESHUTDOWN",
        });
      }
    };
    return {
      name,
      description:
        `${
          image.writable ? "writable" : "read-only"
        } image of ${deviceId} in snapshot ${snapshotId} (${path})` +
        (image.changeToken ? `; change token ${image.changeToken}` : "") +
        (image.previousChangeToken
          ? `; dirty bitmap since change token ${image.previousChangeToken}`
          : ""),
      sizeBytes,
      readOnly: !image.writable,
      blockSize: BLOCK_SIZE,
      canMultiConn: true,
      ended,
      read: async (offset, into) => {
        refuseEnded(`Cannot read export ${name}`);
        try {
          await driver.readImage(snapshotId, deviceId, offset, into);
        } catch (error) {
          refuseEnded(`Cannot read export ${name}`);
          throw error;
        }
      },
      write: async (offset, data, { fua }) => {
        const what = `Cannot write ${data.length} bytes at ${offset} of image ${path}`;
        refuseEnded(what);
        try {
          const handle = await this.#writer(path);
          for (let done = 0; done < data.length;) {
            done +=
              (await handle.write(data, done, data.length - done, offset + done)).bytesWritten;
          }
          if (fua) await handle.datasync();
        } catch (error) {
          throw fsError(error, what);
        }
      },
      flush: async () => {
        const handle = this.#writers.get(path);
        if (!handle) return;
        try {
          await (await handle).datasync();
        } catch (error) {
          throw fsError(error, `Cannot flush image ${path}`);
        }
      },
      metaContexts: () => cbtContextNames(image),
      blockStatus: async (context, offset, length): Promise<NbdExtent[]> => {
        refuseEnded(`Cannot read the block status of export ${name}`);
        if (context === "base:allocation") return [{ length, flags: 0 }];
        const info = await driver.cbtInfo(deviceId);
        const blockSize = info.blockSizeBytes;
        const first = Math.floor(offset / blockSize);
        const end = Math.min(offset + length, sizeBytes);
        const last = Math.min(Math.ceil(end / blockSize), info.blockCount);
        const count = Math.max(0, last - first);
        const map = count > 0
          ? await driver.readCbtMap(deviceId, { offset: first, length: count })
          : new Uint8Array();
        const view: CbtView = {
          blockSizeBytes: blockSize,
          blockCount: info.blockCount,
          previousNumber: info.changesNumber,
          read: (at, n) => map.subarray(at - first, at - first + n),
        };
        return cbtExtents(view, context, { offset, length, sizeBytes });
      },
    };
  }
}
