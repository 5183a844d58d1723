/**
 * Random access to the bytes of a file or a buffer, so an archive can be read by its index
 * without loading it whole: a .deb's control member is read while its data member is skipped.
 * A small file is read whole at once: one read costs less than the several its index takes.
 */
import { open } from "node:fs/promises";

export interface ByteSource {
  readonly size: number;
  /** Up to `length` bytes at `offset` (fewer only at the end). */
  read(offset: number, length: number): Promise<Buffer>;
  /** The bytes in [offset, offset + length), in chunks. */
  stream(offset: number, length: number): AsyncIterable<Buffer>;
  close(): Promise<void>;
}

const CHUNK = 64 * 1024;
/** Files up to this size are read whole when opened. */
export const WHOLE_FILE_MAX = 256 * 1024;

export function bufferSource(buffer: Buffer): ByteSource {
  return {
    size: buffer.length,
    read: (offset, length) => Promise.resolve(buffer.subarray(offset, offset + length)),
    async *stream(offset, length) {
      const end = Math.min(buffer.length, offset + length);
      for (let at = offset; at < end; at += CHUNK) {
        await Promise.resolve();
        yield buffer.subarray(at, Math.min(end, at + CHUNK));
      }
    },
    close: () => Promise.resolve(),
  };
}

/** Opens `path` for reading; the caller closes it. The size is fixed when it opens. */
export async function openFileSource(path: string): Promise<ByteSource> {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    if (size <= WHOLE_FILE_MAX) {
      const whole = Buffer.allocUnsafe(size);
      let done = 0;
      while (done < size) {
        const { bytesRead } = await fh.read(whole, done, size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      await fh.close();
      return bufferSource(whole.subarray(0, done));
    }
    const read = async (offset: number, length: number): Promise<Buffer> => {
      const buf = Buffer.alloc(Math.max(0, Math.min(length, size - offset)));
      let done = 0;
      while (done < buf.length) {
        const { bytesRead } = await fh.read(buf, done, buf.length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    };
    return {
      size,
      read,
      async *stream(offset, length) {
        const end = Math.min(size, offset + length);
        for (let at = offset; at < end;) {
          const chunk = await read(at, Math.min(CHUNK, end - at));
          if (chunk.length === 0) return;
          at += chunk.length;
          yield chunk;
        }
      },
      close: () => fh.close(),
    };
  } catch (err) {
    await fh.close();
    throw err;
  }
}
