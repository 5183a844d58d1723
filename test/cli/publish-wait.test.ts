import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { aptBaseUrl, releaseUrl, sourcesLine, waitForRelease } from "../../src/cli/publish-wait.js";
import { KilnError } from "../../src/errors/catalogue.js";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

describe("apt URLs", () => {
  it("puts the prefix after /apt, none for the root", () => {
    expect(aptBaseUrl("http://h:1/", ".")).toBe("http://h:1/apt");
    expect(aptBaseUrl("http://h:1/kiln", "ppa/x")).toBe("http://h:1/kiln/apt/ppa/x");
    expect(releaseUrl("http://h:1", "ppa/dists/stable")).toBe("http://h:1/apt/ppa/dists/stable/Release");
    expect(
      sourcesLine("http://h", { prefix: ".", distribution: "d", components: ["main"], signed: true }),
    ).toBe("deb [signed-by=/usr/share/keyrings/kiln-archive-keyring.gpg] http://h/apt d main");
  });
});

describe("waitForRelease", () => {
  /** A stand-in for a lagging server in front of the hub: serves whatever `served` holds. */
  let served: string | undefined;
  let requests = 0;
  let server: http.Server;
  let hub: string;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      requests++;
      if (req.url !== "/apt/dists/stable/Release" || served === undefined) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/plain" }).end(served);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    hub = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("returns once the Release served has the expected hash, not before", async () => {
    served = "Origin: old\n";
    requests = 0;
    const later = setTimeout(() => (served = "Origin: new\n"), 300);
    const start = Date.now();
    await waitForRelease(
      hub,
      { path: "dists/stable", releaseSha256: sha256("Origin: new\n") },
      { intervalMs: 20 },
    );
    clearTimeout(later);
    expect(served).toBe("Origin: new\n");
    expect(Date.now() - start).toBeGreaterThanOrEqual(250);
    expect(requests).toBeGreaterThan(2);
  });

  it("waits for a dropped publication's Release to go", async () => {
    served = "Origin: x\n";
    const later = setTimeout(() => (served = undefined), 200);
    await waitForRelease(hub, { path: "dists/stable", releaseSha256: null }, { intervalMs: 20 });
    clearTimeout(later);
    expect(served).toBeUndefined();
  });

  it("gives up with PUBLISH_NOT_SERVED, saying what is served instead", async () => {
    served = "Origin: stale\n";
    const err = await waitForRelease(
      hub,
      { path: "dists/stable", releaseSha256: sha256("Origin: new\n") },
      { intervalMs: 20, timeoutMs: 200 },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toBe("PUBLISH_NOT_SERVED");
    expect((err as KilnError).message).toContain(sha256("Origin: stale\n"));
    expect((err as KilnError).message).toContain(`${hub}/apt/dists/stable/Release`);
  });

  it("keeps trying while nothing listens, then says so", async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = http.createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const err = await waitForRelease(
      `http://127.0.0.1:${port}`,
      { path: "dists/stable", releaseSha256: "x" },
      { intervalMs: 20, timeoutMs: 150 },
    ).catch((e: unknown) => e);
    expect((err as KilnError).code).toBe("PUBLISH_NOT_SERVED");
    expect((err as KilnError).message).toMatch(/fetching it fails \(ECONNREFUSED\)/);
  });
});
