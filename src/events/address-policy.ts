import { lookup } from "node:dns/promises";
import net from "node:net";
import { KilnError } from "../errors/catalogue.js";

/**
 * Where a webhook may not point unless the config allows it: a webhook must not become a way to
 * reach the hub's own machine, its private network or a cloud metadata service.
 */
const V4_FORBIDDEN: [string, number, string][] = [
  ["0.0.0.0", 8, "this-network"],
  ["10.0.0.0", 8, "private"],
  ["100.64.0.0", 10, "shared (CGNAT)"],
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local / metadata"],
  ["172.16.0.0", 12, "private"],
  ["192.0.0.0", 24, "IETF protocol assignments"],
  ["192.168.0.0", 16, "private"],
  ["198.18.0.0", 15, "benchmarking"],
  ["224.0.0.0", 4, "multicast"],
  ["240.0.0.0", 4, "reserved"],
];

const V6_FORBIDDEN: [string, number, string][] = [
  ["::", 128, "unspecified"],
  ["::1", 128, "loopback"],
  ["fc00::", 7, "unique-local"],
  ["fe80::", 10, "link-local"],
  ["fec0::", 10, "site-local"],
  ["ff00::", 8, "multicast"],
  ["100::", 64, "discard"],
  ["2001:db8::", 32, "documentation"],
];

function blockList(rules: [string, number, string][], type: "ipv4" | "ipv6") {
  return rules.map(([address, prefix, reason]) => {
    const list = new net.BlockList();
    list.addSubnet(address, prefix, type);
    return { list, reason };
  });
}
const V4 = blockList(V4_FORBIDDEN, "ipv4");
const V6 = blockList(V6_FORBIDDEN, "ipv6");

/** The 8 groups of an IPv6 address as numbers (dotted v4 tails included), or undefined. */
function ipv6Groups(address: string): number[] | undefined {
  let text = address.replace(/%.*$/, "");
  const v4Tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (v4Tail !== undefined) {
    if (net.isIPv4(v4Tail) === false) return undefined;
    const b = v4Tail.split(".").map(Number);
    text = `${text.slice(0, -v4Tail.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  const groups = [...head, ...Array<string>(Math.max(0, fill)).fill("0"), ...tail].map((g) =>
    parseInt(g, 16),
  );
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : undefined;
}

function v4FromGroups(hi: number, lo: number): string {
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/**
 * Why a webhook may not reach this address (loopback, private, link-local, unique-local,
 * metadata…), or undefined when it is a public address. IPv4 inside IPv6 (mapped `::ffff:a.b.c.d`,
 * compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged as the IPv4 it carries.
 */
export function forbiddenAddressReason(address: string): string | undefined {
  if (net.isIPv4(address)) {
    if (address === "255.255.255.255") return "broadcast";
    return V4.find((r) => r.list.check(address, "ipv4"))?.reason;
  }
  if (!net.isIPv6(address)) return "not an IP address";
  const g = ipv6Groups(address);
  if (!g) return "not an IP address";
  const zeros = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zeros(5) && g[5] === 0xffff) return forbiddenAddressReason(v4FromGroups(g[6]!, g[7]!));
  if (zeros(6) && (g[6] !== 0 || g[7]! > 1)) return forbiddenAddressReason(v4FromGroups(g[6]!, g[7]!));
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) {
    return forbiddenAddressReason(v4FromGroups(g[6]!, g[7]!));
  }
  if (g[0] === 0x2002) return forbiddenAddressReason(v4FromGroups(g[1]!, g[2]!));
  const canonical = g.map((x) => x.toString(16)).join(":");
  return V6.find((r) => r.list.check(canonical, "ipv6"))?.reason;
}

/** Parses a webhook URL: absolute http(s), no credentials in it. */
export function parseWebhookUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new KilnError("WEBHOOK_URL_INVALID", `"${text}" is not an absolute URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new KilnError("WEBHOOK_URL_INVALID", `"${text}" is not an http:// or https:// URL`);
  }
  if (url.username || url.password) {
    throw new KilnError("WEBHOOK_URL_INVALID", "put no credentials in the webhook URL; use --secret to sign");
  }
  if (!url.hostname) throw new KilnError("WEBHOOK_URL_INVALID", `"${text}" names no host`);
  return url;
}

/** The addresses a host name resolves to (an IP literal is its own address). */
export async function resolveHost(hostname: string): Promise<string[]> {
  const bare = hostname.replace(/^\[|\]$/g, "");
  if (net.isIP(bare)) return [bare];
  try {
    return (await lookup(bare, { all: true, verbatim: true })).map((a) => a.address);
  } catch (err) {
    throw new KilnError("WEBHOOK_URL_INVALID", `cannot resolve "${bare}": ${(err as Error).message}`, {
      host: bare,
    });
  }
}

/**
 * Resolves the URL's host and refuses it when any of its addresses is forbidden (unless
 * `allowPrivate`). Run when a webhook is added or edited and again before every delivery, since
 * DNS can change; the delivery's connection is checked once more as it is made (see
 * guardedLookup), so an answer that changes in between does not get through either.
 */
export async function checkWebhookAddress(url: URL, allowPrivate: boolean): Promise<string[]> {
  const addresses = await resolveHost(url.hostname);
  if (!allowPrivate) {
    for (const address of addresses) {
      const reason = forbiddenAddressReason(address);
      if (reason !== undefined) {
        throw new KilnError(
          "WEBHOOK_ADDRESS_FORBIDDEN",
          `${url.hostname} resolves to ${address} (${reason}); webhooks may not reach it unless [webhooks] allow_private = true`,
          { host: url.hostname, address, reason },
        );
      }
    }
  }
  return addresses;
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | { address: string; family: number }[],
  family?: number,
) => void;

/** A `lookup` for sockets that refuses forbidden addresses at connect time. */
export function guardedLookup(allowPrivate: boolean) {
  return (hostname: string, options: { all?: boolean }, callback: LookupCallback): void => {
    resolveHost(hostname)
      .then((addresses) => {
        const bad = allowPrivate ? undefined : addresses.find((a) => forbiddenAddressReason(a) !== undefined);
        if (bad !== undefined) {
          const err: NodeJS.ErrnoException = new Error(`${hostname} resolves to a forbidden address ${bad}`);
          err.code = "WEBHOOK_ADDRESS_FORBIDDEN";
          callback(err, "", 4);
          return;
        }
        const all = addresses.map((address) => ({ address, family: net.isIPv6(address) ? 6 : 4 }));
        if (options.all) callback(null, all);
        else callback(null, all[0]?.address ?? "", all[0]?.family ?? 4);
      })
      .catch((err: unknown) => callback(err as NodeJS.ErrnoException, "", 4));
  };
}
