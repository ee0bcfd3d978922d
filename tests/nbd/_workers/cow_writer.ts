/**
 * Plays the engine's owner for image_reader_test.ts: for each chunk in turn,
 * copy-on-write (the original chunk into the storage, its offset, then
 * STORED with Atomics), then the device write over the original (0xee),
 * then the progress counter. Posts a message when every chunk is done.
 */

interface CowWriterJob {
  dir: string;
  table: SharedArrayBuffer;
  count: number;
  chunk: number;
  progress: SharedArrayBuffer;
}

self.onmessage = (event: MessageEvent<CowWriterJob>) => {
  const { dir, table, count, chunk } = event.data;
  const states = new Uint8Array(table, count * 8, count);
  const offsets = new Float64Array(table, 0, count);
  const progress = new Int32Array(event.data.progress);
  const origin = Deno.openSync(`${dir}/origin.img`, { read: true, write: true });
  const storage = Deno.openSync(`${dir}/storage.img`, { write: true });
  const data = new Uint8Array(chunk);
  const overwrite = new Uint8Array(chunk).fill(0xee);
  for (let k = 0; k < count; k++) {
    origin.seekSync(k * chunk, Deno.SeekMode.Start);
    for (let done = 0; done < chunk;) done += origin.readSync(data.subarray(done))!;
    storage.seekSync(k * chunk, Deno.SeekMode.Start);
    for (let done = 0; done < chunk;) done += storage.writeSync(data.subarray(done));
    offsets[k] = k * chunk;
    Atomics.store(states, k, 2);
    origin.seekSync(k * chunk, Deno.SeekMode.Start);
    for (let done = 0; done < chunk;) done += origin.writeSync(overwrite.subarray(done));
    Atomics.store(progress, 0, k + 1);
  }
  origin.close();
  storage.close();
  self.postMessage("done");
};
