/**
 * Waiting until the hub really serves a publication's new Release, and what apt users need then.
 * A task ending is not the same as apt seeing the result (a proxy, a second hub on a shared disk,
 * a lagging mount): `kiln publish … && apt-get update` must get the new indexes.
 */
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { KilnError } from "../errors/catalogue.js";
import type { Spinner } from "./output.js";

/** Where apt users put the archive key (the sources line names it in `signed-by`). */
export const KEYRING_PATH = "/usr/share/keyrings/kiln-archive-keyring.gpg";

/** The URL apt uses for a prefix: `<hub>/apt` for `.`, `<hub>/apt/<prefix>` otherwise. */
export function aptBaseUrl(hub: string, prefix: string): string {
  const base = `${hub.replace(/\/+$/, "")}/apt`;
  return prefix === "." || prefix === "" ? base : `${base}/${prefix}`;
}

/** `<hub>/apt/<path>/Release`, `path` being a publication's (`dists/stable`, `ppa/dists/stable`). */
export function releaseUrl(hub: string, path: string): string {
  return `${hub.replace(/\/+$/, "")}/apt/${path}/Release`;
}

/** The sources.list line of a publication. Unsigned ones need `trusted=yes`, and no key. */
export function sourcesLine(
  hub: string,
  pub: { prefix: string; distribution: string; components: readonly string[]; signed: boolean },
): string {
  const option = pub.signed ? `signed-by=${KEYRING_PATH}` : "trusted=yes";
  return `deb [${option}] ${aptBaseUrl(hub, pub.prefix)} ${pub.distribution} ${pub.components.join(" ")}`;
}

/** The command that installs the archive key where the sources line expects it. */
export function keyringCommand(hub: string): string {
  return `curl -fsSL ${aptBaseUrl(hub, ".")}/kiln-archive-keyring.asc | sudo gpg --dearmor -o ${KEYRING_PATH}`;
}

export interface WaitForReleaseOptions {
  spinner?: Spinner;
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** Time between two fetches (default 100 ms). */
  intervalMs?: number;
}

type Seen = { status: "served"; sha256: string } | { status: "missing" } | { status: "error"; why: string };

async function fetchRelease(url: string, timeoutMs: number): Promise<Seen> {
  try {
    // no-cache: a cache between us and the hub must revalidate, or we would wait on its copy.
    const res = await fetch(url, {
      headers: { "cache-control": "no-cache" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (res.status === 404) {
      await res.body?.cancel();
      return { status: "missing" };
    }
    if (!res.ok) {
      await res.body?.cancel();
      return { status: "error", why: `HTTP ${res.status}` };
    }
    const body = Buffer.from(await res.arrayBuffer());
    return { status: "served", sha256: createHash("sha256").update(body).digest("hex") };
  } catch (err) {
    // fetch's own message is only "fetch failed": the reason is in its cause.
    const e = err as {
      cause?: { code?: string; message?: string; errors?: { code?: string }[] };
      message?: string;
    };
    const why = e.cause?.code ?? e.cause?.errors?.[0]?.code ?? e.cause?.message ?? e.message;
    return { status: "error", why: why ?? String(err) };
  }
}

/**
 * Polls `<hub>/apt/<path>/Release` until its SHA-256 is `releaseSha256` (or, for null, until no
 * Release is served: a dropped publication). Throws PUBLISH_NOT_SERVED when it does not happen
 * within the timeout, saying what was served instead.
 */
export async function waitForRelease(
  hub: string,
  target: { path: string; releaseSha256: string | null },
  opts: WaitForReleaseOptions = {},
): Promise<void> {
  const url = releaseUrl(hub, target.path);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const interval = opts.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  const want = target.releaseSha256;
  opts.spinner?.update(
    want === null ? `waiting until ${url} is gone` : `waiting until the hub serves the new ${url}`,
  );
  let last: Seen = { status: "missing" };
  for (;;) {
    last = await fetchRelease(url, Math.max(1000, Math.min(10_000, deadline - Date.now())));
    if (want === null ? last.status === "missing" : last.status === "served" && last.sha256 === want) return;
    if (Date.now() >= deadline) break;
    await sleep(interval);
  }
  const secs = Number((timeoutMs / 1000).toFixed(1));
  const seen =
    last.status === "served"
      ? `it serves one with SHA-256 ${last.sha256}`
      : last.status === "missing"
        ? "it serves none"
        : `fetching it fails (${last.why})`;
  throw new KilnError(
    "PUBLISH_NOT_SERVED",
    want === null
      ? `the publication was dropped, but after ${secs}s ${url} is still served`
      : `the publication is made, but after ${secs}s ${seen} at ${url}, ` +
          `not the new one (SHA-256 ${want})`,
    { url, expected: want, ...(last.status === "served" ? { served: last.sha256 } : {}) },
  );
}
