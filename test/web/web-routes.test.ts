import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

for (const dialect of DIALECTS) {
  describe(`serving the web UI (${dialect})`, () => {
    let t: TestHub;
    beforeAll(async () => {
      t = await startTestHub(dialect);
    });
    afterAll(async () => {
      await t?.cleanup();
    });

    it("serves index.html at / with validators, a CSP, and an import map to content-hashed modules", async () => {
      const res = await fetch(`${t.url}/`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/html/);
      expect(res.headers.get("cache-control")).toBe("no-cache");
      expect(res.headers.get("content-security-policy")).toMatch(/script-src 'self' 'sha256-/);
      const etag = res.headers.get("etag");
      expect(etag).toMatch(/^"/);
      const html = await res.text();
      const map = /<script type="importmap">(.*?)<\/script>/.exec(html)?.[1];
      const imports = (JSON.parse(map ?? "{}") as { imports: Record<string, string> }).imports;
      expect(imports["/ui/assets/app.js"]).toMatch(/^\/ui\/assets\/app\.[0-9a-f]{12}\.js$/);
      expect(html).toMatch(/href="\/ui\/assets\/style\.[0-9a-f]{12}\.css"/);

      const again = await fetch(`${t.url}/`, { headers: { "if-none-match": etag ?? "" } });
      expect(again.status).toBe(304);
      expect((await fetch(`${t.url}/ui/`)).status).toBe(200);
    });

    it("caches hashed assets forever and revalidates plain names", async () => {
      const html = await (await fetch(`${t.url}/`)).text();
      const hashed = /"(\/ui\/assets\/app\.[0-9a-f]{12}\.js)"/.exec(html)?.[1] ?? "";
      const res = await fetch(`${t.url}${hashed}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/javascript/);
      expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
      const body = await res.text();

      const plain = await fetch(`${t.url}/ui/assets/app.js`);
      expect(plain.headers.get("cache-control")).toBe("no-cache");
      expect(await plain.text()).toBe(body);
      const etag = plain.headers.get("etag") ?? "";
      expect((await fetch(`${t.url}/ui/assets/app.js`, { headers: { "if-none-match": etag } })).status).toBe(
        304,
      );

      const missing = await fetch(`${t.url}/ui/assets/nope.js`);
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
      expect((await fetch(`${t.url}/ui/assets/..%2Fpackage.json`)).status).toBe(404);
    });

    it("opens reads to tokenless callers only when ui_public_reads is on, and never writes", async () => {
      expect(await (await fetch(`${t.url}/ui/config.json`)).json()).toEqual({ publicReads: false });
      expect((await fetch(`${t.url}/api/v1/hosts`)).status).toBe(401);

      t.hub.deps.config.uiPublicReads = true;
      try {
        expect(await (await fetch(`${t.url}/ui/config.json`)).json()).toEqual({ publicReads: true });
        expect((await fetch(`${t.url}/api/v1/hosts`)).status).toBe(200);
        expect(await (await fetch(`${t.url}/api/v1/whoami`)).json()).toEqual({
          role: "user",
          user: null,
          host: null,
        });
        // Admin reads stay closed, and nothing that changes state opens.
        expect((await fetch(`${t.url}/api/v1/tokens`)).status).toBe(403);
        const create = await fetch(`${t.url}/api/v1/tasks`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ method: "sleep", args: { seconds: 0 } }),
        });
        expect(create.status).toBe(401);
      } finally {
        t.hub.deps.config.uiPublicReads = false;
      }
    });
  });
}
