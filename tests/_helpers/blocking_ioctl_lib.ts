/**
 * A tiny C shared library that stands in for libc in the event worker: it
 * exports its own `ioctl`, which for SNAPSHOT_WAIT_EVENT sleeps and then
 * answers as the test configured it (timeout with ENOENT, a no_space or a
 * corrupted event, or ESRCH), and ENOTTY for any other request. errno is set
 * in libc's thread-local errno of the calling thread, and the worker reads it
 * through libc's `__errno_location`, found through the library's
 * dependencies. The test configures the library from the main thread: the
 * worker's dlopen gets the same loaded copy, so its globals are shared.
 *
 * @module
 */

const SOURCE = `
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static volatile int mode = 0;
static volatile int delay_ms = 0;
static volatile uint64_t value = 0;
static volatile int calls = 0;
static volatile int last_fd = -1;

void fake_configure(int new_mode, int new_delay_ms, uint64_t new_value) {
  mode = new_mode;
  delay_ms = new_delay_ms;
  value = new_value;
}

int fake_calls(void) { return calls; }
int fake_last_fd(void) { return last_fd; }

int ioctl(int fd, unsigned long request, void *arg) {
  uint8_t *event = arg;
  uint32_t timeout_ms;
  calls++;
  last_fd = fd;
  if (request != 0x90005605UL) { errno = ENOTTY; return -1; }
  memcpy(&timeout_ms, event + 16, 4);
  int sleep_ms = mode == 0 ? (int)timeout_ms : delay_ms;
  struct timespec pause = { sleep_ms / 1000, (long)(sleep_ms % 1000) * 1000000L };
  nanosleep(&pause, NULL);
  if (mode == 2) { errno = ESRCH; return -1; }
  if (mode == 0) { errno = ENOENT; return -1; }
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t label = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
  uint32_t code = mode == 1 ? 1 : 0;
  memcpy(event + 20, &code, 4);
  memcpy(event + 24, &label, 8);
  if (mode == 1) {
    uint64_t sectors = value;
    memcpy(event + 32, &sectors, 8);
  } else {
    uint32_t major = (uint32_t)(value >> 32), minor = (uint32_t)value;
    int32_t err = -28;
    memcpy(event + 32, &major, 4);
    memcpy(event + 36, &minor, 4);
    memcpy(event + 40, &err, 4);
  }
  return 0;
}
`;

/** Answers of the fake `ioctl` for SNAPSHOT_WAIT_EVENT. */
export const WaitMode = { timeout: 0, noSpace: 1, error: 2, corrupted: 3 } as const;

const controlSymbols = {
  fake_configure: { parameters: ["i32", "i32", "u64"], result: "void" },
  fake_calls: { parameters: [], result: "i32" },
  fake_last_fd: { parameters: [], result: "i32" },
} as const;

/** The built library and its controls. */
export interface BlockingIoctlLib {
  /** Path of the .so, for `WorkerIoctl({ libraryPath })`. */
  path: string;
  /** Sets the answer: `mode`, the sleep for modes other than timeout, and the payload value. */
  configure(mode: number, delayMs: number, value: bigint): void;
  /** Number of ioctl calls the library received. */
  calls(): number;
  /** The fd of the last call. */
  lastFd(): number;
  /** Unloads the main thread's handle. */
  close(): void;
}

/** Whether gcc is available. */
export function hasGcc(): boolean {
  try {
    return new Deno.Command("gcc", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Compiles the library into `dir` and loads it for control. */
export async function buildBlockingIoctlLib(dir: string): Promise<BlockingIoctlLib> {
  const source = `${dir}/fake_ioctl.c`;
  const path = `${dir}/libfake_ioctl.so`;
  await Deno.writeTextFile(source, SOURCE);
  const built = await new Deno.Command("gcc", {
    args: ["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", path, source],
  }).output();
  if (!built.success) throw new Error(new TextDecoder().decode(built.stderr));
  const library = Deno.dlopen(path, controlSymbols);
  return {
    path,
    configure: (mode, delayMs, value) => library.symbols.fake_configure(mode, delayMs, value),
    calls: () => library.symbols.fake_calls(),
    lastFd: () => library.symbols.fake_last_fd(),
    close: () => library.close(),
  };
}
