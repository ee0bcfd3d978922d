/**
 * A fake kernel behind the kernel backend's {@link Libc} seam: it decodes the
 * real ioctl arguments with the same layouts (including the addresses inside
 * them, through a small fake address space) and models what the blksnap
 * module does with them, following the module's source (bdevfilter.c,
 * tracker.c, snapshot.c, cbt_map.c of veeam/blksnap VAL-7.0, and the v7
 * upstream blk-filter):
 *
 * - control device per profile (`blksnap-control` or `veeamblksnap`, plus
 *   `bdevfilter` for outoftree) under `devDir`; filter requests on the
 *   device's own fd (upstream) or on bdevfilter with the path (outoftree);
 * - trackers with two CBT tables, change numbers and a generation id; take
 *   switches them (previous = active, active + 1, read = copy of write);
 * - snapshots with their trackers, take, destroy, collect with -ENODATA,
 *   per-device error codes, event queues with blocking waits;
 * - images appear at take as real files in `devDir` holding the device's
 *   backing file as it was at take time, so node:fs reads work on them;
 * - the errno of every refusal as the module returns it, plus one-shot
 *   injected failures;
 * - the upstream v7 CBTDIRTY bug (it reads only the first range of the array);
 * - either numbering of the upstream filter requests (`numbering`): lk6.15's 142–144 or the
 *   older v6/v7 140–142, whose CTL number is lk6.15's ATTACH; a request a kernel does not know
 *   goes to the disk driver, which answers ENOTTY (or the device's `unknownIoctlErrno`, as loop
 *   answers EINVAL).
 *
 * @module
 */

import { copyFileSync, writeFileSync } from "node:fs";
import {
  BDEVFILTER_ATTACH,
  BDEVFILTER_CTL,
  BDEVFILTER_DETACH,
  BdevfilterCtl,
  BdevfilterName,
  BLKFILTER_ATTACH,
  BLKFILTER_CTL,
  BLKFILTER_DETACH,
  BLKFILTER_V7_ATTACH,
  BLKFILTER_V7_DETACH,
  BlkfilterAttach,
  BlkfilterCtl,
  BlkfilterCtlBlksnap as Cmd,
  BlkfilterName,
  BLKGETSIZE64,
  BlksnapCbtdirty,
  BlksnapCbtinfo,
  BlksnapCbtmap,
  BlksnapEventCorrupted,
  BlksnapEventNoSpace,
  BlksnapSectors,
  BlksnapSnapshotadd,
  BlksnapSnapshotCollect,
  BlksnapSnapshotCreate,
  BlksnapSnapshotEvent,
  BlksnapSnapshotinfo,
  BlksnapUuid,
  BlksnapVersion,
  BlockDeviceSize,
  formatUuid,
  IOCTL_BLKSNAP_SNAPSHOT_COLLECT,
  IOCTL_BLKSNAP_SNAPSHOT_CREATE,
  IOCTL_BLKSNAP_SNAPSHOT_DESTROY,
  IOCTL_BLKSNAP_SNAPSHOT_TAKE,
  IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
  IOCTL_BLKSNAP_VERSION,
} from "../../src/kernel/abi.ts";
import type { BlockingIoctl } from "../../src/kernel/blocking_ioctl.ts";
import type { DeviceNumber, Libc, SyscallResult } from "../../src/kernel/libc.ts";

/** errno values the fake returns. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EBADF: 9,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  ENOSPC: 28,
  ENODATA: 61,
  EALREADY: 114,
} as const;

/** Options of {@link FakeKernel}. */
export interface FakeKernelOptions {
  /** Which module is loaded; "none" for a machine without it. */
  profile: "upstream" | "outoftree" | "none";
  /** Directory standing in for /dev (a temp dir: images are written there). */
  devDir: string;
  /** VERSION's answer (7.0.0.0 by default). */
  version?: [number, number, number, number];
  /** Leave /dev/bdevfilter out (outoftree). */
  withoutBdevfilter?: boolean;
  /** Multiply wait timeouts, like a module that takes `timeout_ms` as jiffies (default 1). */
  waitTimeoutScale?: number;
  /** Numbering of the upstream filter requests (default lk6.15; "none": no blk-filter). */
  numbering?: "lk6.15" | "v6/v7" | "none";
}

/** A block device the fake kernel knows. */
export interface FakeDeviceOptions {
  /** Device number. */
  major: number;
  /** Device number. */
  minor: number;
  /** Capacity in bytes (default: the backing file's size). */
  capacityBytes?: number;
  /** What the disk driver answers to a request the block layer does not know (ENOTTY). */
  unknownIoctlErrno?: number;
}

interface BlockDevice extends DeviceNumber {
  path: string;
  capacityBytes: number;
  /** Another filter owns the device (attach answers EBUSY). */
  foreignFilter?: boolean;
  tracker?: Tracker;
  /** True for snapshot images. */
  image?: boolean;
  /** The disk driver's answer to unknown requests. */
  unknownIoctlErrno?: number;
}

interface Tracker {
  /** The path given at attach (out-of-tree profile), which the module opens again at take. */
  attachPath?: string;
  device: BlockDevice;
  blockSize: number;
  blockCount: number;
  read: Uint8Array;
  write: Uint8Array;
  previous: number;
  active: number;
  generation: Uint8Array;
  corrupted?: boolean;
  snapshot?: Snapshot;
  imageName?: string;
  errorCode: number;
}

interface Snapshot {
  id: string;
  uuid: Uint8Array;
  storagePath: string;
  limitSectors: number;
  trackers: Tracker[];
  taken: boolean;
  events: { code: number; time: bigint; data: Uint8Array }[];
  waiters: ((event: Snapshot["events"][number] | undefined) => void)[];
}

type FdKind = "control" | "bdevfilter" | "device" | "file";

interface OpenFile {
  path: string;
  kind: FdKind;
}

interface Injection {
  request: number;
  cmd?: number;
  errno: number;
}

/** One ioctl the fake received: its request and, for filter commands, cmd and option length. */
export interface CallRecord {
  /** Request number. */
  request: number;
  /** Filter command, for *_CTL. */
  cmd?: number;
  /** Device path of a filter request. */
  device?: string;
  /** `count` of a CBTDIRTY option. */
  dirtyCount?: number;
  /** `length` of a CBTMAP option. */
  mapLength?: number;
}

const decoder = new TextDecoder();

function ok(): SyscallResult {
  return { result: 0, errno: 0 };
}

function fail(errno: number): SyscallResult {
  return { result: -1, errno };
}

/** The fake kernel: a {@link Libc} plus helpers that play the role of writers and of the module. */
export class FakeKernel implements Libc {
  readonly profile: FakeKernelOptions["profile"];
  readonly devDir: string;
  /** Every ioctl received, in order. */
  readonly calls: CallRecord[] = [];
  /** The fake's blocking-call runner (waits with timers, never blocks the thread). */
  readonly blocking: BlockingIoctl;
  #options: FakeKernelOptions;
  #devices = new Map<string, BlockDevice>();
  #snapshots = new Map<string, Snapshot>();
  #fds = new Map<number, OpenFile>();
  // Far above any real descriptor: the process's own (the storage the driver hands over as
  // /proc/self/fd/N) must never share a number with a fake one, however many the test
  // modules running on this process's threads have open.
  #nextFd = 1 << 30;
  #memory = new Map<number, Uint8Array>();
  #nextAddress = 0x10000;
  #injections: Injection[] = [];
  #timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(options: FakeKernelOptions) {
    this.profile = options.profile;
    this.devDir = options.devDir;
    this.#options = options;
    this.blocking = {
      call: (fd, request, arg) => this.#blockingCall(fd, request, arg),
      close: () => {
        for (const timer of this.#timers) clearTimeout(timer);
        this.#timers.clear();
        for (const snapshot of this.#snapshots.values()) {
          for (const wake of snapshot.waiters.splice(0)) wake(undefined);
        }
      },
    };
  }

  // ---- the test's side ----

  /** Registers a block device at `path` (a real file holds its content, if it exists). */
  addBlockDevice(path: string, options: FakeDeviceOptions): void {
    let capacityBytes = options.capacityBytes;
    if (capacityBytes === undefined) capacityBytes = Deno.statSync(path).size;
    this.#devices.set(path, {
      path,
      major: options.major,
      minor: options.minor,
      capacityBytes,
      unknownIoctlErrno: options.unknownIoctlErrno,
    });
  }

  /** Makes another filter own the device at `path` (attach answers EBUSY, detach EINVAL). */
  setForeignFilter(path: string): void {
    this.#devices.get(path)!.foreignFilter = true;
  }

  /** The next ioctl with `request` (and filter command `cmd`) fails with `errno`. */
  failNext(request: number, errno: number, cmd?: number): void {
    this.#injections.push({ request, errno, cmd });
  }

  /** A writer writes `data` to the device at byte `offset`: the backing file changes and CBT marks it. */
  writeDevice(path: string, offset: number, data: Uint8Array): void {
    const device = this.#devices.get(path)!;
    const file = Deno.openSync(path, { write: true });
    try {
      file.seekSync(offset, Deno.SeekMode.Start);
      file.writeSync(data);
    } finally {
      file.close();
    }
    const tracker = device.tracker;
    if (!tracker) return;
    const first = Math.floor(offset / tracker.blockSize);
    const last = Math.floor((offset + data.length - 1) / tracker.blockSize);
    for (let block = first; block <= last; block++) {
      tracker.write[block] = Math.max(tracker.write[block], tracker.active);
    }
  }

  /** The difference storage overflows: every device gets ENOSPC and a corrupted event is queued. */
  overflow(snapshotId: string): void {
    const snapshot = this.#snapshots.get(snapshotId)!;
    for (const tracker of snapshot.trackers) tracker.errorCode = -E.ENOSPC;
    const first = snapshot.trackers[0].device;
    const data = BlksnapEventCorrupted.encode({
      dev_id_mj: first.major,
      dev_id_mn: first.minor,
      err_code: -E.ENOSPC,
    });
    this.emit(snapshotId, 0, data);
  }

  /** Queues a no_space event asking for `sectors`. */
  noSpace(snapshotId: string, sectors: number): void {
    this.emit(snapshotId, 1, BlksnapEventNoSpace.encode({ requested_nr_sect: sectors }));
  }

  /** Queues an event of any code. */
  emit(snapshotId: string, code: number, data: Uint8Array): void {
    const snapshot = this.#snapshots.get(snapshotId)!;
    const event = { code, time: this.monotonicNs(), data };
    const wake = snapshot.waiters.shift();
    if (wake) wake(event);
    else snapshot.events.push(event);
  }

  /** Ids of the snapshots the module holds. */
  snapshotIds(): string[] {
    return [...this.#snapshots.keys()];
  }

  /** Whether the module tracks the device at `path`. */
  isTracked(path: string): boolean {
    return this.#devices.get(path)?.tracker !== undefined;
  }

  /** The CBT map of the device at `path` is corrupted (a marking failed): CBTMAP fails with EFAULT until the next take resets it. */
  corruptCbt(path: string): void {
    const tracker = this.#devices.get(path)?.tracker;
    if (tracker) tracker.corrupted = true;
  }

  /** The module forgets everything (module reload): trackers and snapshots are gone. */
  reload(): void {
    for (const device of this.#devices.values()) device.tracker = undefined;
    this.#snapshots.clear();
  }

  /** The fds open on `path`. */
  fdsOn(path: string): number[] {
    return [...this.#fds].filter(([, file]) => file.path === path).map(([fd]) => fd);
  }

  /** Number of open fds (0 after the driver closed). */
  get openFds(): number {
    return this.#fds.size;
  }

  // ---- Libc ----

  /**
   * The path a `/proc/self/fd/N` name stands for, as the kernel resolves it:
   * the path of a fake fd, or the real link of a real one; other paths as they are.
   */
  #unproc(path: string): string {
    const match = /^\/proc\/self\/fd\/(\d+)$/.exec(path);
    if (!match) return path;
    const fake = this.#fds.get(Number(match[1]));
    if (fake) return fake.path;
    try {
      return Deno.readLinkSync(path);
    } catch {
      return path;
    }
  }

  realPathOf(fd: number): string | undefined {
    return this.#fds.get(fd)?.path;
  }

  open(name: string, _flags: number): SyscallResult {
    const path = this.#unproc(name);
    const kind = this.#kindOf(path);
    if (!kind) return fail(E.ENOENT);
    const fd = this.#nextFd++;
    this.#fds.set(fd, { path, kind });
    return { result: fd, errno: 0 };
  }

  close(fd: number): SyscallResult {
    return this.#fds.delete(fd) ? ok() : fail(E.EBADF);
  }

  pointerOf(buffer: Uint8Array): number {
    if (buffer.length === 0) return 0;
    const address = this.#nextAddress;
    this.#memory.set(address, buffer);
    this.#nextAddress += Math.ceil((buffer.length + 1) / 4096) * 4096 + 4096;
    return address;
  }

  monotonicNs(): bigint {
    return BigInt(Math.round(performance.now() * 1e6));
  }

  blockDeviceNumber(path: string): DeviceNumber | undefined {
    const device = this.#devices.get(this.#unproc(path));
    return device ? { major: device.major, minor: device.minor } : undefined;
  }

  ioctl(fd: number, request: number, arg: Uint8Array): SyscallResult {
    try {
      return this.#ioctl(fd, request, arg);
    } finally {
      // Addresses are valid only for the duration of one call.
      this.#memory.clear();
    }
  }

  // ---- the model ----

  #kindOf(path: string): FdKind | undefined {
    const dev = (name: string) => `${this.devDir}/${name}`;
    if (this.profile === "upstream" && path === dev("blksnap-control")) return "control";
    if (this.profile === "outoftree" && path === dev("veeamblksnap")) return "control";
    if (this.profile === "outoftree" && path === dev("bdevfilter")) {
      return this.#options.withoutBdevfilter ? undefined : "bdevfilter";
    }
    if (this.#devices.has(path)) return "device";
    try {
      Deno.statSync(path);
      return "file";
    } catch {
      return undefined;
    }
  }

  #resolve(address: number, length: number): Uint8Array | undefined {
    for (const [base, buffer] of this.#memory) {
      if (address >= base && address + length <= base + buffer.length) {
        return buffer.subarray(address - base, address - base + length);
      }
    }
    return undefined;
  }

  #string(address: number): string | undefined {
    const raw = this.#rawString(address);
    return raw === undefined ? undefined : this.#unproc(raw);
  }

  /** The NUL-terminated string at `address` as the caller wrote it (no `/proc/self/fd` lookup). */
  #rawString(address: number): string | undefined {
    if (!this.#resolve(address, 1)) return undefined;
    for (const [base, buffer] of this.#memory) {
      if (address >= base && address < base + buffer.length) {
        const tail = buffer.subarray(address - base);
        const end = tail.indexOf(0);
        return end < 0 ? undefined : decoder.decode(tail.subarray(0, end));
      }
    }
    return undefined;
  }

  #injected(request: number, cmd?: number): number | undefined {
    const index = this.#injections.findIndex((i) =>
      i.request === request && (i.cmd === undefined || i.cmd === cmd)
    );
    if (index < 0) return undefined;
    return this.#injections.splice(index, 1)[0].errno;
  }

  #ioctl(fd: number, request: number, arg: Uint8Array): SyscallResult {
    const file = this.#fds.get(fd);
    if (!file) return fail(E.EBADF);
    const record: CallRecord = { request };
    this.calls.push(record);
    if (file.kind === "control") return this.#control(request, arg);
    if (file.kind === "bdevfilter") return this.#bdevfilter(request, arg, record);
    if (file.kind === "device") {
      const device = this.#devices.get(file.path)!;
      if (request === BLKGETSIZE64) {
        const injected = this.#injected(request);
        if (injected) return fail(injected);
        BlockDeviceSize.encode({ bytes: device.capacityBytes }, arg);
        return ok();
      }
      if (this.profile === "upstream") return this.#blkfilter(device, request, arg, record);
    }
    return fail(E.ENOTTY);
  }

  #blkfilter(device: BlockDevice, request: number, arg: Uint8Array, record: CallRecord) {
    record.device = device.path;
    if (this.#options.numbering === "v6/v7") return this.#blkfilterV7(device, request, arg, record);
    if (this.#options.numbering === "none") return fail(device.unknownIoctlErrno ?? E.ENOTTY);
    if (request === BLKFILTER_ATTACH || request === BLKFILTER_DETACH) {
      const injected = this.#injected(request);
      if (injected) return fail(injected);
      if (request === BLKFILTER_DETACH) return this.#detach(device);
      // blkfilter_ioctl_attach looks the name up among the registered filters first.
      if (BlkfilterAttach.decode(arg).name !== "blksnap") return fail(E.ENOENT);
      return this.#attach(device);
    }
    if (request === BLKFILTER_CTL) return this.#namedCtl(device, BlkfilterCtl.decode(arg), record);
    return fail(device.unknownIoctlErrno ?? E.ENOTTY);
  }

  /** The v6/v7 numbering: ATTACH 140 and DETACH 141 with a bare name, CTL 142. */
  #blkfilterV7(device: BlockDevice, request: number, arg: Uint8Array, record: CallRecord) {
    if (request === BLKFILTER_V7_ATTACH) {
      const injected = this.#injected(request);
      if (injected) return fail(injected);
      if (BlkfilterName.decode(arg).name !== "blksnap") return fail(E.ENOENT);
      return this.#attach(device);
    }
    if (request === BLKFILTER_V7_DETACH) {
      if (!device.tracker && !device.foreignFilter) return fail(E.ENOENT);
      if (BlkfilterName.decode(arg).name !== "blksnap") return fail(E.EINVAL);
      return this.#detach(device);
    }
    // 142: lk6.15's ATTACH number, the v7 CTL.
    if (request === BLKFILTER_ATTACH) {
      return this.#namedCtl(device, BlkfilterCtl.decode(arg), record);
    }
    return fail(device.unknownIoctlErrno ?? E.ENOTTY);
  }

  /** blkfilter_ioctl_ctl: no filter ENOENT, a filter of another name EINVAL, else the command. */
  #namedCtl(
    device: BlockDevice,
    ctl: { name: string; cmd: number; opt: number; optlen: number },
    record: CallRecord,
  ): SyscallResult {
    if (ctl.name !== "blksnap") {
      return fail(device.tracker || device.foreignFilter ? E.EINVAL : E.ENOENT);
    }
    return this.#ctl(device, ctl.cmd, ctl.opt, ctl.optlen, record);
  }

  #bdevfilter(request: number, arg: Uint8Array, record: CallRecord): SyscallResult {
    if (request === BDEVFILTER_ATTACH || request === BDEVFILTER_DETACH) {
      const { devpath, name } = BdevfilterName.decode(arg);
      const path = this.#string(devpath);
      if (path === undefined) return fail(E.EFAULT);
      record.device = path;
      const injected = this.#injected(request);
      if (injected) return fail(injected);
      const device = this.#devices.get(path);
      if (!device) return fail(this.#kindOf(path) ? E.ENOTBLK : E.ENOENT);
      if (name !== "blksnap") return fail(E.ENOENT);
      if (request === BDEVFILTER_DETACH) return this.#detach(device);
      const attached = this.#attach(device);
      // The out-of-tree module keeps the path as given and opens it again at every take.
      if (attached.result === 0) device.tracker!.attachPath = this.#rawString(devpath);
      return attached;
    }
    if (request === BDEVFILTER_CTL) {
      const ctl = BdevfilterCtl.decode(arg);
      const path = this.#string(ctl.devpath);
      if (path === undefined) return fail(E.EFAULT);
      record.device = path;
      const device = this.#devices.get(path);
      if (!device) return fail(E.ENOENT);
      if (ctl.name !== "blksnap") return fail(E.ENOENT);
      return this.#ctl(device, ctl.cmd, ctl.opt, ctl.optlen, record);
    }
    return fail(E.ENOTTY);
  }

  #attach(device: BlockDevice): SyscallResult {
    if (device.foreignFilter) return fail(E.EBUSY);
    if (device.tracker) return fail(E.EALREADY);
    let shift = 16;
    while (Math.ceil(device.capacityBytes / 2 ** shift) > 2097152 && shift < 26) shift++;
    const blockCount = Math.ceil(device.capacityBytes / 2 ** shift);
    device.tracker = {
      device,
      blockSize: 2 ** shift,
      blockCount,
      read: new Uint8Array(blockCount),
      write: new Uint8Array(blockCount),
      previous: 0,
      active: 1,
      generation: crypto.getRandomValues(new Uint8Array(16)),
      errorCode: 0,
    };
    return ok();
  }

  #detach(device: BlockDevice): SyscallResult {
    if (device.foreignFilter) return fail(E.EINVAL);
    if (!device.tracker) return fail(E.ENOENT);
    device.tracker = undefined;
    return ok();
  }

  #ctl(device: BlockDevice, cmd: number, opt: number, optlen: number, record: CallRecord) {
    record.cmd = cmd;
    const tracker = device.tracker;
    if (!tracker) return fail(E.ENOENT);
    const injected = this.#injected(record.request, cmd);
    if (injected) return fail(injected);
    const option = (size: number) => (optlen < size ? undefined : this.#resolve(opt, size));
    switch (cmd) {
      case Cmd.BLKFILTER_CTL_BLKSNAP_CBTINFO: {
        const out = option(BlksnapCbtinfo.size);
        if (!out) return fail(optlen < BlksnapCbtinfo.size ? E.EINVAL : E.ENODATA);
        BlksnapCbtinfo.encode({
          device_capacity: device.capacityBytes,
          block_size: tracker.blockSize,
          block_count: tracker.blockCount,
          generation_id: { b: tracker.generation },
          changes_number: tracker.previous,
        }, out);
        return ok();
      }
      case Cmd.BLKFILTER_CTL_BLKSNAP_CBTMAP: {
        const raw = option(BlksnapCbtmap.size);
        if (!raw) return fail(E.EINVAL);
        const map = BlksnapCbtmap.decode(raw);
        record.mapLength = map.length;
        if (tracker.corrupted) return fail(E.EFAULT);
        if (map.length > tracker.blockCount - map.offset) return fail(E.ENODATA);
        const target = this.#resolve(map.buffer, map.length);
        if (!target) return fail(E.EINVAL);
        target.set(tracker.read.subarray(map.offset, map.offset + map.length));
        return ok();
      }
      case Cmd.BLKFILTER_CTL_BLKSNAP_CBTDIRTY: {
        const raw = option(BlksnapCbtdirty.size);
        if (!raw) return fail(E.EINVAL);
        const dirty = BlksnapCbtdirty.decode(raw);
        record.dirtyCount = dirty.count;
        for (let i = 0; i < dirty.count; i++) {
          // The upstream v7 patch copies the array's first element every time.
          const index = this.profile === "upstream" ? 0 : i;
          const element = this.#resolve(
            dirty.dirty_sectors + index * BlksnapSectors.size,
            BlksnapSectors.size,
          );
          if (!element) return fail(E.ENODATA);
          const range = BlksnapSectors.decode(element);
          const first = Math.floor((range.offset * 512) / tracker.blockSize);
          const last = Math.floor(((range.offset + range.count) * 512 - 1) / tracker.blockSize);
          for (let block = first; block <= last; block++) {
            if (block >= tracker.blockCount) return fail(E.EINVAL);
            tracker.write[block] = Math.max(tracker.write[block], tracker.active);
            tracker.read[block] = Math.max(tracker.read[block], tracker.previous);
          }
        }
        return ok();
      }
      case Cmd.BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD: {
        const raw = option(BlksnapSnapshotadd.size);
        if (!raw) return fail(E.EINVAL);
        const snapshot = this.#snapshots.get(formatUuid(BlksnapSnapshotadd.decode(raw).id.b));
        if (!snapshot) return fail(E.ESRCH);
        if (snapshot.trackers.includes(tracker)) return fail(E.EALREADY);
        if (tracker.snapshot) return fail(E.EBUSY);
        tracker.snapshot = snapshot;
        tracker.errorCode = 0;
        snapshot.trackers.push(tracker);
        return ok();
      }
      case Cmd.BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO: {
        const out = option(BlksnapSnapshotinfo.size);
        if (!out) return fail(E.EINVAL);
        BlksnapSnapshotinfo.encode({
          error_code: tracker.errorCode,
          image: tracker.imageName ?? "",
        }, out);
        return ok();
      }
      default:
        return fail(E.ENOTTY);
    }
  }

  #control(request: number, arg: Uint8Array): SyscallResult {
    const injected = this.#injected(request);
    if (injected) return fail(injected);
    switch (request) {
      case IOCTL_BLKSNAP_VERSION: {
        const [major, minor, revision, build] = this.#options.version ?? [7, 0, 0, 0];
        BlksnapVersion.encode({ major, minor, revision, build }, arg);
        return ok();
      }
      case IOCTL_BLKSNAP_SNAPSHOT_CREATE:
        return this.#create(arg);
      case IOCTL_BLKSNAP_SNAPSHOT_DESTROY: {
        const snapshot = this.#snapshots.get(formatUuid(BlksnapUuid.decode(arg).b));
        if (!snapshot) return fail(E.ENODEV);
        this.#destroy(snapshot);
        return ok();
      }
      case IOCTL_BLKSNAP_SNAPSHOT_TAKE: {
        const snapshot = this.#snapshots.get(formatUuid(BlksnapUuid.decode(arg).b));
        if (!snapshot) return fail(E.ESRCH);
        if (snapshot.taken) return fail(E.EALREADY);
        if (snapshot.trackers.length === 0) return fail(E.ENODEV);
        const reopenFailed = this.#reopenAttachPaths(snapshot);
        if (reopenFailed) return reopenFailed;
        this.#take(snapshot);
        return ok();
      }
      case IOCTL_BLKSNAP_SNAPSHOT_COLLECT:
        return this.#collect(arg);
      case IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT: {
        const { id } = BlksnapSnapshotEvent.decode(arg);
        const snapshot = this.#snapshots.get(formatUuid(id.b));
        if (!snapshot) return fail(E.ESRCH);
        const event = snapshot.events.shift();
        return event ? this.#fillEvent(arg, event) : fail(E.ENOENT);
      }
      default:
        return fail(E.ENOTTY);
    }
  }

  #create(arg: Uint8Array): SyscallResult {
    const request = BlksnapSnapshotCreate.decode(arg);
    const path = this.#string(request.diff_storage_filename);
    if (path === undefined) return fail(E.EFAULT);
    if (!this.#devices.has(path)) {
      let info: Deno.FileInfo;
      try {
        info = Deno.statSync(path);
      } catch {
        return fail(E.ENOENT);
      }
      if (!info.isFile && !info.isDirectory) return fail(E.EINVAL);
      if (info.isFile && info.size / 512 > request.diff_storage_limit_sect) return fail(E.ENOSPC);
    }
    const uuid = crypto.getRandomValues(new Uint8Array(16));
    const id = formatUuid(uuid);
    this.#snapshots.set(id, {
      id,
      uuid,
      storagePath: path,
      limitSectors: request.diff_storage_limit_sect,
      trackers: [],
      taken: false,
      events: [],
      waiters: [],
    });
    BlksnapSnapshotCreate.encode({ ...request, id: { b: uuid } }, arg);
    return ok();
  }

  /**
   * ENOTBLK when a tracker's attach path (out-of-tree module) no longer
   * names its device, as bdev_open(orig_bdevpath) at take finds.
   */
  #reopenAttachPaths(snapshot: Snapshot): SyscallResult | undefined {
    for (const tracker of snapshot.trackers) {
      if (tracker.attachPath === undefined) continue;
      if (this.#devices.get(this.#unproc(tracker.attachPath)) !== tracker.device) {
        return fail(E.ENOTBLK);
      }
    }
    return undefined;
  }

  #take(snapshot: Snapshot): void {
    snapshot.taken = true;
    for (const tracker of snapshot.trackers) {
      if (tracker.corrupted) {
        // cbt_map_reset: cleared tables, numbers from the start, a new generation.
        tracker.corrupted = false;
        tracker.read.fill(0);
        tracker.write.fill(0);
        tracker.previous = 0;
        tracker.active = 1;
        tracker.generation = crypto.getRandomValues(new Uint8Array(16));
      }
      tracker.previous = tracker.active;
      tracker.active += 1;
      if (tracker.active === 256) {
        tracker.active = 1;
        tracker.write.fill(0);
        tracker.generation = crypto.getRandomValues(new Uint8Array(16));
      } else {
        tracker.read.set(tracker.write);
      }
      const { major, minor } = tracker.device;
      tracker.imageName = this.profile === "upstream"
        ? `blksnap-${major}-${minor}`
        : `veeamblksnapimg_${major}:${minor}`;
      const imagePath = `${this.devDir}/${tracker.imageName}`;
      try {
        copyFileSync(tracker.device.path, imagePath);
      } catch {
        writeFileSync(imagePath, new Uint8Array(tracker.device.capacityBytes));
      }
      this.#devices.set(imagePath, {
        path: imagePath,
        major: 251,
        minor,
        capacityBytes: tracker.device.capacityBytes,
        image: true,
      });
    }
  }

  #destroy(snapshot: Snapshot): void {
    this.#snapshots.delete(snapshot.id);
    for (const tracker of snapshot.trackers) {
      if (tracker.imageName) {
        const imagePath = `${this.devDir}/${tracker.imageName}`;
        this.#devices.delete(imagePath);
        try {
          Deno.removeSync(imagePath);
        } catch {
          // Already gone.
        }
      }
      tracker.snapshot = undefined;
      tracker.imageName = undefined;
    }
  }

  #collect(arg: Uint8Array): SyscallResult {
    const request = BlksnapSnapshotCollect.decode(arg);
    const ids = [...this.#snapshots.values()];
    if (request.ids === 0) {
      BlksnapSnapshotCollect.encode({ ...request, count: ids.length }, arg);
      return ok();
    }
    let written = 0;
    for (const snapshot of ids) {
      if (written >= request.count) {
        BlksnapSnapshotCollect.encode({ ...request, count: written }, arg);
        return fail(E.ENODATA);
      }
      const slot = this.#resolve(request.ids + written * 16, 16);
      if (!slot) return fail(E.ENODATA);
      slot.set(snapshot.uuid);
      written++;
    }
    BlksnapSnapshotCollect.encode({ ...request, count: written }, arg);
    return ok();
  }

  #fillEvent(arg: Uint8Array, event: Snapshot["events"][number]): SyscallResult {
    const current = BlksnapSnapshotEvent.decode(arg);
    const data = new Uint8Array(4064);
    data.set(event.data);
    BlksnapSnapshotEvent.encode({
      ...current,
      code: event.code,
      time_label: Number(event.time),
      data,
    }, arg);
    return ok();
  }

  #blockingCall(fd: number, request: number, arg: Uint8Array): Promise<SyscallResult> {
    const file = this.#fds.get(fd);
    if (request !== IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT || file?.kind !== "control") {
      return Promise.resolve(this.ioctl(fd, request, arg));
    }
    this.calls.push({ request });
    const injected = this.#injected(request);
    if (injected) return Promise.resolve(fail(injected));
    const { id, timeout_ms } = BlksnapSnapshotEvent.decode(arg);
    const snapshot = this.#snapshots.get(formatUuid(id.b));
    if (!snapshot) return Promise.resolve(fail(E.ESRCH));
    const queued = snapshot.events.shift();
    if (queued) return Promise.resolve(this.#fillEvent(arg, queued));
    return new Promise((resolve) => {
      const wake = (event: Snapshot["events"][number] | undefined) => {
        clearTimeout(timer);
        this.#timers.delete(timer);
        resolve(event ? this.#fillEvent(arg, event) : fail(E.ENOENT));
      };
      const timer = setTimeout(() => {
        const index = snapshot.waiters.indexOf(wake);
        if (index >= 0) snapshot.waiters.splice(index, 1);
        wake(undefined);
      }, timeout_ms * (this.#options.waitTimeoutScale ?? 1));
      this.#timers.add(timer);
      snapshot.waiters.push(wake);
    });
  }
}
