/**
 * An in-process decoder for small .xz files: a .deb's control.tar.xz (dpkg-deb's default) is a
 * few kilobytes, and starting the xz tool for it costs ten times its decoding. Written from the
 * .xz file format and LZMA specifications; it handles what xz and dpkg-deb write — one or more
 * streams of blocks with the LZMA2 filter alone, checked by CRC32, CRC64 or SHA-256 — and
 * answers `undefined` for anything else (other filters, no check), which then goes to the tool.
 * Every block's check is verified, so a decoding that went wrong cannot pass as data.
 */
import { createHash } from "node:crypto";
import zlib from "node:zlib";
import { debianError, decompressionLimitError } from "./debian-error.js";

/** Thrown inside; becomes ARCHIVE_INVALID with the reason. */
class XzCorrupt extends Error {}
/** Thrown inside; the input uses something this decoder leaves to the tool. */
class XzUnsupported extends Error {}
/** Thrown inside; the output passed the caller's limit. */
class XzTooLarge extends Error {}

const HEADER_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const FOOTER_MAGIC = [0x59, 0x5a];
const FILTER_LZMA2 = 0x21;
/** Check ids this decoder verifies, with the size of their field. */
const CHECK_SIZES: Readonly<Record<number, number>> = { 1: 4, 4: 8, 10: 32 };

const crc32 = (data: Uint8Array): number => zlib.crc32(data) >>> 0;

/**
 * The decompressed content of an .xz file held in memory, or undefined when it uses a feature
 * left to the xz tool. ARCHIVE_INVALID when it is corrupt, ARCHIVE_TOO_LARGE past `maxBytes`.
 */
export function xzDecompress(input: Uint8Array, maxBytes: number, name = "stream"): Buffer | undefined {
  if (typeof zlib.crc32 !== "function") return undefined; // Node before 20.15
  try {
    return decodeStreams(input, maxBytes);
  } catch (err) {
    if (err instanceof XzUnsupported) return undefined;
    if (err instanceof XzTooLarge) {
      throw decompressionLimitError(name, maxBytes);
    }
    if (err instanceof XzCorrupt) {
      throw debianError("ARCHIVE_INVALID", `${name}: corrupt xz data (${err.message})`);
    }
    throw err;
  }
}

/** A growable output buffer that is also the LZMA dictionary (all of it stays addressable). */
class Output {
  buf: Uint8Array;
  pos = 0;
  constructor(
    private readonly maxBytes: number,
    capacity: number,
  ) {
    this.buf = new Uint8Array(Math.max(64, Math.min(capacity, maxBytes)));
  }
  /** Room for `n` more bytes, within the limit. */
  reserve(n: number): void {
    const need = this.pos + n;
    if (need > this.maxBytes) throw new XzTooLarge();
    if (need <= this.buf.length) return;
    const grown = new Uint8Array(Math.min(this.maxBytes, Math.max(need, this.buf.length * 2)));
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
  }
}

class Reader {
  constructor(
    readonly data: Uint8Array,
    public pos: number,
  ) {}
  byte(): number {
    if (this.pos >= this.data.length) throw new XzCorrupt("unexpected end of input");
    return this.data[this.pos++] as number;
  }
  bytes(n: number): Uint8Array {
    if (this.pos + n > this.data.length) throw new XzCorrupt("unexpected end of input");
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  uint32le(): number {
    const b = this.bytes(4);
    return (
      ((b[0] as number) | ((b[1] as number) << 8) | ((b[2] as number) << 16) | ((b[3] as number) << 24)) >>> 0
    );
  }
  /** The format's variable-length integer: 7 bits a byte, least significant first, at most 9 bytes. */
  varint(): number {
    let value = 0;
    for (let i = 0; i < 9; i++) {
      const b = this.byte();
      if (i > 0 && b === 0) throw new XzCorrupt("a number is not in its shortest form");
      value += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(value)) throw new XzUnsupported();
        return value;
      }
    }
    throw new XzCorrupt("a number is too long");
  }
}

function expectBytes(r: Reader, magic: readonly number[], what: string): void {
  for (const m of magic) if (r.byte() !== m) throw new XzCorrupt(`bad ${what}`);
}

function decodeStreams(input: Uint8Array, maxBytes: number): Buffer {
  const out = new Output(maxBytes, input.length * 4);
  const r = new Reader(input, 0);
  let streams = 0;
  while (r.pos < input.length) {
    if (streams > 0) {
      // Stream padding: zero bytes, four at a time, before another stream or the end.
      const start = r.pos;
      while (r.pos < input.length && input[r.pos] === 0) r.pos++;
      if ((r.pos - start) % 4 !== 0) throw new XzCorrupt("stream padding is not a multiple of four bytes");
      if (r.pos === input.length) break;
    }
    decodeStream(r, out);
    streams++;
  }
  if (streams === 0) throw new XzCorrupt("empty input");
  return Buffer.from(out.buf.buffer, out.buf.byteOffset, out.pos);
}

function decodeStream(r: Reader, out: Output): void {
  expectBytes(r, HEADER_MAGIC, "magic bytes");
  const flags = r.bytes(2);
  if (crc32(flags) !== r.uint32le()) throw new XzCorrupt("stream header CRC mismatch");
  if (flags[0] !== 0 || ((flags[1] as number) & 0xf0) !== 0) throw new XzUnsupported();
  const checkId = (flags[1] as number) & 0x0f;
  const checkSize = CHECK_SIZES[checkId];
  if (checkSize === undefined) throw new XzUnsupported(); // none, or a check xz itself rarely writes
  const records: { unpadded: number; uncompressed: number }[] = [];
  for (;;) {
    const blockStart = r.pos;
    const sizeByte = r.byte();
    if (sizeByte === 0) break; // the index follows
    const headerSize = (sizeByte + 1) * 4;
    r.pos = blockStart;
    const header = r.bytes(headerSize);
    const hr = new Reader(header.subarray(0, headerSize - 4), 1);
    const stored = new Reader(header, headerSize - 4).uint32le();
    if (crc32(header.subarray(0, headerSize - 4)) !== stored)
      throw new XzCorrupt("block header CRC mismatch");
    const blockFlags = hr.byte();
    if ((blockFlags & 0x3c) !== 0) throw new XzUnsupported();
    if ((blockFlags & 0x03) !== 0) throw new XzUnsupported(); // more than one filter
    const compressedSize = blockFlags & 0x40 ? hr.varint() : undefined;
    const uncompressedSize = blockFlags & 0x80 ? hr.varint() : undefined;
    if (hr.varint() !== FILTER_LZMA2) throw new XzUnsupported();
    if (hr.varint() !== 1) throw new XzCorrupt("LZMA2 properties are not one byte");
    if (hr.byte() > 40) throw new XzCorrupt("LZMA2 dictionary size out of range");
    while (hr.pos < hr.data.length) if (hr.byte() !== 0) throw new XzCorrupt("block header padding");

    const dataStart = r.pos;
    const outStart = out.pos;
    decodeLzma2(r, out);
    const compressed = r.pos - dataStart;
    const uncompressed = out.pos - outStart;
    if (compressedSize !== undefined && compressedSize !== compressed)
      throw new XzCorrupt("block compressed size mismatch");
    if (uncompressedSize !== undefined && uncompressedSize !== uncompressed)
      throw new XzCorrupt("block uncompressed size mismatch");
    while ((r.pos - blockStart) % 4 !== 0) if (r.byte() !== 0) throw new XzCorrupt("block padding");
    verifyCheck(checkId, out.buf.subarray(outStart, out.pos), r.bytes(checkSize));
    records.push({ unpadded: headerSize + compressed + checkSize, uncompressed });
  }

  // The index: one record per block, as decoded.
  const indexStart = r.pos - 1;
  if (r.varint() !== records.length) throw new XzCorrupt("index record count mismatch");
  for (const rec of records) {
    if (r.varint() !== rec.unpadded || r.varint() !== rec.uncompressed)
      throw new XzCorrupt("index record mismatch");
  }
  while ((r.pos - indexStart) % 4 !== 0) if (r.byte() !== 0) throw new XzCorrupt("index padding");
  const indexEnd = r.pos;
  if (crc32(r.data.subarray(indexStart, indexEnd)) !== r.uint32le())
    throw new XzCorrupt("index CRC mismatch");

  const footerCrc = r.uint32le();
  const footer = r.bytes(6);
  if (crc32(footer) !== footerCrc) throw new XzCorrupt("stream footer CRC mismatch");
  const backward = new Reader(footer, 0).uint32le();
  if ((backward + 1) * 4 !== indexEnd + 4 - indexStart) throw new XzCorrupt("backward size mismatch");
  if (footer[4] !== flags[0] || footer[5] !== flags[1]) throw new XzCorrupt("stream flags differ");
  expectBytes(r, FOOTER_MAGIC, "footer magic");
}

function verifyCheck(checkId: number, data: Uint8Array, stored: Uint8Array): void {
  let ok: boolean;
  if (checkId === 1) ok = crc32(data) === new Reader(stored, 0).uint32le();
  else if (checkId === 4) {
    const [lo, hi] = crc64(data);
    const s = new Reader(stored, 0);
    ok = s.uint32le() === lo && s.uint32le() === hi;
  } else ok = Buffer.from(createHash("sha256").update(data).digest()).equals(stored);
  if (!ok) throw new XzCorrupt("the block's check does not match its content");
}

// CRC-64 as xz computes it (ECMA-182, reflected), in two 32-bit halves.
const CRC64_LO = new Uint32Array(256);
const CRC64_HI = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let lo = i;
  let hi = 0;
  for (let k = 0; k < 8; k++) {
    const odd = lo & 1;
    lo = ((lo >>> 1) | (hi << 31)) >>> 0;
    hi = hi >>> 1;
    if (odd) {
      lo = (lo ^ 0xd7870f42) >>> 0;
      hi = (hi ^ 0xc96c5795) >>> 0;
    }
  }
  CRC64_LO[i] = lo;
  CRC64_HI[i] = hi;
}

/** [low, high] 32-bit halves of the CRC-64 of `data`. */
export function crc64(data: Uint8Array): [number, number] {
  const tlo = CRC64_LO;
  const thi = CRC64_HI;
  let lo = -1;
  let hi = -1;
  for (let k = 0, n = data.length; k < n; k++) {
    const i = (lo ^ (data[k] as number)) & 0xff;
    lo = ((lo >>> 8) | (hi << 24)) ^ (tlo[i] as number);
    hi = (hi >>> 8) ^ (thi[i] as number);
  }
  return [~lo >>> 0, ~hi >>> 0];
}

// ---------------------------------------------------------------------------------------------
// LZMA2 and LZMA

const NUM_STATES = 12;
const POS_BITS_MAX = 4;
const LEN_TO_POS_STATES = 4;
const END_POS_MODEL_INDEX = 14;
const FULL_DISTANCES = 128;
const ALIGN_BITS = 4;
const MATCH_MIN_LEN = 2;
const PROB_INIT = 1024;

/** A length coder's probabilities: choice, choice 2, low[16][8], mid[16][8], high[256]. */
const LEN_CHOICE = 0;
const LEN_CHOICE2 = 1;
const LEN_LOW = 2;
const LEN_MID = LEN_LOW + (1 << POS_BITS_MAX) * 8;
const LEN_HIGH = LEN_MID + (1 << POS_BITS_MAX) * 8;
const LEN_SIZE = LEN_HIGH + 256;

/** The LZMA decoder's state that lives across LZMA2 chunks. */
class Lzma {
  lc = 0;
  lp = 0;
  pb = 0;
  state = 0;
  reps = [0, 0, 0, 0];
  /** Bytes of a match still to copy when a chunk ended in its middle. */
  pendingLen = 0;
  isMatch = new Uint16Array(NUM_STATES << POS_BITS_MAX);
  isRep = new Uint16Array(NUM_STATES);
  isRepG0 = new Uint16Array(NUM_STATES);
  isRepG1 = new Uint16Array(NUM_STATES);
  isRepG2 = new Uint16Array(NUM_STATES);
  isRep0Long = new Uint16Array(NUM_STATES << POS_BITS_MAX);
  posSlot = new Uint16Array(LEN_TO_POS_STATES << 6);
  posSpecial = new Uint16Array(1 + FULL_DISTANCES - END_POS_MODEL_INDEX);
  align = new Uint16Array(1 << ALIGN_BITS);
  len = new Uint16Array(LEN_SIZE);
  repLen = new Uint16Array(LEN_SIZE);
  literal = new Uint16Array(0x300);

  setProps(props: number): void {
    if (props > (4 * 5 + 4) * 9 + 8) throw new XzCorrupt("LZMA properties out of range");
    this.lc = props % 9;
    props = Math.floor(props / 9);
    this.lp = props % 5;
    this.pb = Math.floor(props / 5);
    if (this.lc + this.lp > 4) throw new XzCorrupt("LZMA2 allows lc + lp of at most 4");
    this.literal = new Uint16Array(0x300 << (this.lc + this.lp));
  }

  resetState(): void {
    this.state = 0;
    this.reps = [0, 0, 0, 0];
    this.pendingLen = 0;
    for (const probs of [
      this.isMatch,
      this.isRep,
      this.isRepG0,
      this.isRepG1,
      this.isRepG2,
      this.isRep0Long,
      this.posSlot,
      this.posSpecial,
      this.align,
      this.len,
      this.repLen,
      this.literal,
    ])
      probs.fill(PROB_INIT);
  }
}

/** The range decoder over one LZMA chunk's bytes. */
class RangeDecoder {
  range = 0xffffffff;
  code = 0;
  pos: number;
  constructor(
    private readonly data: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    if (end > data.length) throw new XzCorrupt("unexpected end of input");
    this.pos = start;
    if (this.next() !== 0) throw new XzCorrupt("LZMA chunk does not start with a zero byte");
    for (let i = 0; i < 4; i++) this.code = ((this.code << 8) | this.next()) >>> 0;
    if (this.code === this.range) throw new XzCorrupt("LZMA chunk starts badly");
  }
  private next(): number {
    if (this.pos >= this.end) throw new XzCorrupt("LZMA chunk runs past its size");
    return this.data[this.pos++] as number;
  }
  private normalize(): void {
    if (this.range < 0x1000000) {
      this.range = (this.range << 8) >>> 0;
      this.code = ((this.code << 8) | this.next()) >>> 0;
    }
  }
  bit(probs: Uint16Array, i: number): number {
    const p = probs[i] as number;
    const bound = (this.range >>> 11) * p;
    let bit: number;
    if (this.code < bound) {
      this.range = bound;
      probs[i] = p + ((2048 - p) >>> 5);
      bit = 0;
    } else {
      this.range -= bound;
      this.code -= bound;
      probs[i] = p - (p >>> 5);
      bit = 1;
    }
    this.normalize();
    return bit;
  }
  /** `bits` bits, most significant first, each from its node of a binary tree at `base`. */
  tree(probs: Uint16Array, base: number, bits: number): number {
    let m = 1;
    for (let i = 0; i < bits; i++) m = (m << 1) | this.bit(probs, base + m);
    return m - (1 << bits);
  }
  /** The same, least significant bit first. */
  reverseTree(probs: Uint16Array, base: number, bits: number): number {
    let m = 1;
    let symbol = 0;
    for (let i = 0; i < bits; i++) {
      const b = this.bit(probs, base + m);
      m = (m << 1) | b;
      symbol |= b << i;
    }
    return symbol;
  }
  /** `bits` bits at even odds, most significant first. */
  direct(bits: number): number {
    let result = 0;
    for (let i = 0; i < bits; i++) {
      this.range = this.range >>> 1;
      let b = 0;
      if (this.code >= this.range) {
        this.code -= this.range;
        b = 1;
      }
      this.normalize();
      result = result * 2 + b;
    }
    return result;
  }
}

function decodeLength(rc: RangeDecoder, probs: Uint16Array, posState: number): number {
  if (rc.bit(probs, LEN_CHOICE) === 0) return rc.tree(probs, LEN_LOW + posState * 8, 3);
  if (rc.bit(probs, LEN_CHOICE2) === 0) return 8 + rc.tree(probs, LEN_MID + posState * 8, 3);
  return 16 + rc.tree(probs, LEN_HIGH, 8);
}

function decodeDistance(rc: RangeDecoder, lz: Lzma, len: number): number {
  const lenState = Math.min(len, LEN_TO_POS_STATES - 1);
  const slot = rc.tree(lz.posSlot, lenState << 6, 6);
  if (slot < 4) return slot;
  const directBits = (slot >>> 1) - 1;
  let dist = (2 | (slot & 1)) * 2 ** directBits;
  if (slot < END_POS_MODEL_INDEX) return dist + rc.reverseTree(lz.posSpecial, dist - slot, directBits);
  dist += rc.direct(directBits - ALIGN_BITS) * 2 ** ALIGN_BITS;
  return dist + rc.reverseTree(lz.align, 0, ALIGN_BITS);
}

/** An LZMA2 block's chunks, appended to `out`, until its end marker. */
function decodeLzma2(r: Reader, out: Output): void {
  const lz = new Lzma();
  let dictStart = out.pos;
  let needDictReset = true;
  let needProps = true;
  for (;;) {
    const control = r.byte();
    if (control === 0x00) {
      if (lz.pendingLen > 0) throw new XzCorrupt("a match runs past the end of the data");
      return;
    }
    if (control === 0x01 || control === 0x02) {
      // An uncompressed chunk; 0x01 resets the dictionary first.
      if (control === 0x01) {
        dictStart = out.pos;
        needDictReset = false;
        needProps = true; // as after any dictionary reset: the next LZMA chunk brings properties
      } else if (needDictReset) throw new XzCorrupt("the first chunk does not reset the dictionary");
      const size = ((r.byte() << 8) | r.byte()) + 1;
      out.reserve(size);
      out.buf.set(r.bytes(size), out.pos);
      out.pos += size;
      continue;
    }
    if (control < 0x80) throw new XzCorrupt(`invalid LZMA2 control byte ${control}`);
    const unpacked = ((control & 0x1f) << 16) + ((r.byte() << 8) | r.byte()) + 1;
    const packed = ((r.byte() << 8) | r.byte()) + 1;
    const reset = (control >>> 5) & 3;
    if (reset === 3) {
      dictStart = out.pos;
      needDictReset = false;
    } else if (needDictReset) throw new XzCorrupt("the first chunk does not reset the dictionary");
    if (reset >= 2) {
      lz.setProps(r.byte());
      needProps = false;
    } else if (needProps) throw new XzCorrupt("an LZMA chunk comes before its properties");
    if (reset >= 1) lz.resetState();
    out.reserve(unpacked);
    const rc = new RangeDecoder(r.data, r.pos, r.pos + packed);
    decodeLzmaChunk(rc, lz, out, dictStart, out.pos + unpacked);
    if (rc.pos !== rc.end || rc.code !== 0)
      throw new XzCorrupt("an LZMA chunk does not end where its size says");
    r.pos = rc.end;
  }
}

/** Symbols into `out` until it reaches `limit` (the chunk's end). */
function decodeLzmaChunk(rc: RangeDecoder, lz: Lzma, out: Output, dictStart: number, limit: number): void {
  const buf = out.buf;
  let pos = out.pos;
  const copy = (dist: number, len: number): void => {
    if (dist >= pos - dictStart) throw new XzCorrupt("a match reaches before the dictionary");
    const n = Math.min(len, limit - pos);
    for (let i = 0; i < n; i++, pos++) buf[pos] = buf[pos - dist - 1] as number;
    lz.pendingLen = len - n;
  };
  if (lz.pendingLen > 0) copy(lz.reps[0] as number, lz.pendingLen);
  const pbMask = (1 << lz.pb) - 1;
  const lpMask = (1 << lz.lp) - 1;
  while (pos < limit) {
    const posState = (pos - dictStart) & pbMask;
    const state = lz.state;
    if (rc.bit(lz.isMatch, (state << POS_BITS_MAX) + posState) === 0) {
      // A literal, read against the byte at rep0 after a match.
      const prev = pos > dictStart ? (buf[pos - 1] as number) : 0;
      const base = 0x300 * ((((pos - dictStart) & lpMask) << lz.lc) + (prev >>> (8 - lz.lc)));
      let symbol = 1;
      if (state >= 7) {
        const rep0 = lz.reps[0] as number;
        if (rep0 >= pos - dictStart) throw new XzCorrupt("a match reaches before the dictionary");
        let matchByte = buf[pos - rep0 - 1] as number;
        while (symbol < 0x100) {
          const matchBit = (matchByte >>> 7) & 1;
          matchByte <<= 1;
          const b = rc.bit(lz.literal, base + ((1 + matchBit) << 8) + symbol);
          symbol = (symbol << 1) | b;
          if (matchBit !== b) break;
        }
      }
      while (symbol < 0x100) symbol = (symbol << 1) | rc.bit(lz.literal, base + symbol);
      buf[pos++] = symbol - 0x100;
      lz.state = state < 4 ? 0 : state < 10 ? state - 3 : state - 6;
      continue;
    }
    let len: number;
    const reps = lz.reps;
    if (rc.bit(lz.isRep, state) === 0) {
      // A match with a new distance.
      len = decodeLength(rc, lz.len, posState);
      lz.state = state < 7 ? 7 : 10;
      const dist = decodeDistance(rc, lz, len);
      if (dist === 0xffffffff) throw new XzCorrupt("an end marker inside LZMA2 data");
      lz.reps = [dist, reps[0] as number, reps[1] as number, reps[2] as number];
    } else {
      if (rc.bit(lz.isRepG0, state) === 0) {
        if (rc.bit(lz.isRep0Long, (state << POS_BITS_MAX) + posState) === 0) {
          // One byte from rep0.
          lz.state = state < 7 ? 9 : 11;
          copy(reps[0] as number, 1);
          continue;
        }
      } else {
        let dist: number;
        if (rc.bit(lz.isRepG1, state) === 0) {
          dist = reps[1] as number;
          reps[1] = reps[0] as number;
        } else {
          if (rc.bit(lz.isRepG2, state) === 0) {
            dist = reps[2] as number;
          } else {
            dist = reps[3] as number;
            reps[3] = reps[2] as number;
          }
          reps[2] = reps[1] as number;
          reps[1] = reps[0] as number;
        }
        reps[0] = dist;
      }
      len = decodeLength(rc, lz.repLen, posState);
      lz.state = state < 7 ? 8 : 11;
    }
    copy(lz.reps[0] as number, len + MATCH_MIN_LEN);
  }
  out.pos = pos;
}
