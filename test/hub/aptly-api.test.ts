/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument,
   @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call --
   the answers are Aptly's untyped JSON, checked field by field as a client would read them */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeAptlyPrefix, encodeAptlyPrefix } from "../../src/hub/routes/aptly/aptly-prefix.js";
import { AptClient } from "../helpers/apt.js";
import { DIALECTS } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describe("Aptly prefix encoding", () => {
  it("decodes _ as /, __ as _, and :. (or . or nothing) as the root", () => {
    expect(decodeAptlyPrefix(":.")).toBe(".");
    expect(decodeAptlyPrefix(".")).toBe(".");
    expect(decodeAptlyPrefix("")).toBe(".");
    expect(decodeAptlyPrefix(":")).toBe(".");
    expect(decodeAptlyPrefix("a_b")).toBe("a/b");
    expect(decodeAptlyPrefix("a__b")).toBe("a_b");
    expect(decodeAptlyPrefix("a___b")).toBe("a_/b");
  });

  it("round-trips every Kiln prefix", () => {
    for (const prefix of [".", "a", "a/b", "a_b", "x/y_z/w", "debian__x"]) {
      expect(decodeAptlyPrefix(encodeAptlyPrefix(prefix))).toBe(prefix);
    }
    expect(encodeAptlyPrefix(".")).toBe(":.");
    expect(encodeAptlyPrefix("a/b_c")).toBe("a_b__c");
  });

  it("refuses storage prefixes and prefixes Kiln does not allow, with their own codes", () => {
    expect(() => decodeAptlyPrefix("s3:bucket:.")).toThrow(
      expect.objectContaining({ code: "PUBLISH_STORAGE_UNSUPPORTED" }),
    );
    expect(() => decodeAptlyPrefix("filesystem:www:a")).toThrow(
      expect.objectContaining({ code: "PUBLISH_STORAGE_UNSUPPORTED" }),
    );
    expect(() => decodeAptlyPrefix("dists")).toThrow(expect.objectContaining({ code: "INVALID_PREFIX" }));
    expect(() => decodeAptlyPrefix("a_")).toThrow(expect.objectContaining({ code: "INVALID_PREFIX" }));
    expect(() => decodeAptlyPrefix("..")).toThrow(expect.objectContaining({ code: "INVALID_PREFIX" }));
    expect(() => decodeAptlyPrefix("_a")).toThrow(expect.objectContaining({ code: "INVALID_PREFIX" }));
  });
});

interface Answer {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see the top of the file
  body: any;
}

for (const dialect of DIALECTS) {
  describe(`Aptly-compatible API (${dialect})`, () => {
    let t: TestHub;
    let work: string;
    let keyring: string;
    let token: string;

    /** A plain fetch, as an Aptly client would make it; `auth: null` sends no credentials. */
    async function call(
      method: string,
      url: string,
      opts: { json?: unknown; form?: FormData; auth?: string | null } = {},
    ): Promise<Answer> {
      const headers: Record<string, string> = {};
      const auth = opts.auth === undefined ? `Bearer ${token}` : opts.auth;
      if (auth !== null) headers.authorization = auth;
      let body: string | FormData | undefined;
      if (opts.json !== undefined) {
        headers["content-type"] = "application/json";
        body = JSON.stringify(opts.json);
      } else if (opts.form) body = opts.form;
      const res = await fetch(`${t.url}${url}`, { method, headers, body });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // plain text stays text
      }
      return { status: res.status, body: parsed };
    }

    function form(files: string[]): FormData {
      const f = new FormData();
      for (const file of files) f.append("file", new Blob([readFileSync(file)]), path.basename(file));
      return f;
    }

    beforeAll(async () => {
      t = await startTestHub(dialect);
      token = t.adminToken;
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-aptly-"));
      const armored = await (await fetch(`${t.url}/apt/kiln-archive-keyring.asc`)).text();
      keyring = path.join(work, "keyring.gpg");
      execFileSync("gpg", ["--dearmor", "-o", keyring], { input: armored });
    });
    afterAll(async () => {
      await t?.cleanup();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it("answers the version and takes the token as Bearer or as a Basic password", async () => {
      const v = await call("GET", "/api/version", { auth: null });
      expect(v.status).toBe(200);
      expect(v.body.Version).toBe("1.6.0");

      const none = await call("GET", "/api/repos", { auth: null });
      expect(none.status).toBe(401);
      expect(typeof none.body.error).toBe("string");
      const basic = `Basic ${Buffer.from(`anyone:${token}`).toString("base64")}`;
      expect((await call("GET", "/api/repos", { auth: basic })).status).toBe(200);
      const wrong = `Basic ${Buffer.from("anyone:not-a-token").toString("base64")}`;
      expect((await call("GET", "/api/repos", { auth: wrong })).status).toBe(401);
      expect((await call("GET", "/api/repos")).body).toEqual([]);
    });

    it("runs Aptly's whole flow: upload, add, list, snapshot, publish, switch, and apt reads it", async () => {
      const created = await call("POST", "/api/repos", {
        json: { Name: "r1", Comment: "tests", DefaultDistribution: "trixie", DefaultComponent: "main" },
      });
      expect(created.status).toBe(201);
      expect(created.body).toEqual({
        Name: "r1",
        Comment: "tests",
        DefaultDistribution: "trixie",
        DefaultComponent: "main",
      });
      expect((await call("GET", "/api/repos/r1")).body.Name).toBe("r1");
      const edited = await call("PUT", "/api/repos/r1", { json: { Comment: "edited" } });
      expect(edited.body).toMatchObject({ Name: "r1", Comment: "edited", DefaultDistribution: "trixie" });

      // Upload two packages into one directory, as `curl -F file=@…` does.
      const hello1 = buildDeb(work, { name: "hello", version: "1.0" });
      const doc = buildDeb(work, { name: "hello-doc", version: "1.0", arch: "all" });
      const up = await call("POST", "/api/files/up1", { form: form([hello1, doc]) });
      expect(up.status).toBe(200);
      expect(up.body).toEqual(["up1/hello_1.0_amd64.deb", "up1/hello-doc_1.0_all.deb"]);
      expect((await call("GET", "/api/files")).body).toContain("up1");
      expect((await call("GET", "/api/files/up1")).body).toEqual([
        "hello-doc_1.0_all.deb",
        "hello_1.0_amd64.deb",
      ]);

      const added = await call("POST", "/api/repos/r1/file/up1");
      expect(added.status).toBe(200);
      expect(added.body.FailedFiles).toEqual([]);
      expect([...added.body.Report.Added].sort()).toEqual([
        "hello-doc_1.0_all added",
        "hello_1.0_amd64 added",
      ]);
      expect(added.body.Report.Removed).toEqual([]);
      // Added files leave the upload directory (noRemove=1 keeps them).
      expect((await call("GET", "/api/files/up1")).body).toEqual([]);

      const keys = (await call("GET", "/api/repos/r1/packages")).body as string[];
      expect(keys).toHaveLength(2);
      const helloKey = keys.find((k) => k.startsWith("Pamd64 hello 1.0 "));
      expect(helloKey).toMatch(/^Pamd64 hello 1\.0 [0-9a-f]{16}$/);
      expect(keys.find((k) => k.startsWith("Pall hello-doc 1.0 "))).toBeDefined();
      const filtered = await call("GET", `/api/repos/r1/packages?q=${encodeURIComponent("Name (= hello)")}`);
      expect(filtered.body).toEqual([helloKey]);
      const details = await call("GET", `/api/repos/r1/packages?q=hello&format=details`);
      expect(details.body).toHaveLength(1);
      expect(details.body[0]).toMatchObject({
        Package: "hello",
        Version: "1.0",
        Architecture: "amd64",
        Key: helloKey,
        ShortKey: "Pamd64 hello 1.0",
        SHA256: sha256(readFileSync(hello1)),
      });

      // The same name/version/arch with other content: a failed file with Aptly's warning;
      // with forceReplace=1 it replaces the old one.
      const otherDir = path.join(work, "other");
      mkdirSync(otherDir, { recursive: true });
      const hello1b = buildDeb(otherDir, { name: "hello", version: "1.0", payload: "different" });
      await call("POST", "/api/files/up2", { form: form([hello1b]) });
      const conflict = await call("POST", "/api/repos/r1/file/up2/hello_1.0_amd64.deb?noRemove=1");
      expect(conflict.status).toBe(200);
      expect(conflict.body.FailedFiles).toEqual(["up2/hello_1.0_amd64.deb"]);
      expect(conflict.body.Report.Warnings[0]).toMatch(
        /^Unable to add package to repo hello_1.0_amd64: conflict/,
      );
      expect((await call("GET", "/api/files/up2")).body).toEqual(["hello_1.0_amd64.deb"]);
      const replaced = await call("POST", "/api/repos/r1/file/up2?forceReplace=1");
      expect(replaced.body.Report).toEqual({
        Warnings: [],
        Added: ["hello_1.0_amd64 added"],
        Removed: ["hello_1.0_amd64 removed due to conflict with package being added"],
      });
      const afterReplace = (await call("GET", "/api/repos/r1/packages?q=hello")).body as string[];
      expect(afterReplace).toHaveLength(1);
      expect(afterReplace[0]).not.toBe(helloKey);
      // …and back, by package reference.
      const del = await call("DELETE", "/api/repos/r1/packages", { json: { PackageRefs: afterReplace } });
      expect(del.status).toBe(200);
      expect(del.body.Name).toBe("r1");
      const back = await call("POST", "/api/repos/r1/packages", { json: { PackageRefs: [helloKey] } });
      expect(back.status).toBe(200);
      expect(((await call("GET", "/api/repos/r1/packages")).body as string[]).sort()).toEqual(
        [...keys].sort(),
      );

      // Snapshot the repo, publish it at the root, and the repo itself at a/b.
      const snap = await call("POST", "/api/repos/r1/snapshots", { json: { Name: "s1" } });
      expect(snap.status).toBe(201);
      expect(snap.body).toMatchObject({ Name: "s1", Description: "Snapshot from local repo [r1]" });
      expect(Date.parse(snap.body.CreatedAt)).toBeGreaterThan(0);
      expect(((await call("GET", "/api/snapshots/s1/packages")).body as string[]).sort()).toEqual(
        [...keys].sort(),
      );
      expect((await call("GET", "/api/snapshots")).body.map((s: { Name: string }) => s.Name)).toEqual(["s1"]);

      const pub = await call("POST", "/api/publish/:.", {
        json: {
          SourceKind: "snapshot",
          Sources: [{ Component: "main", Name: "s1" }],
          Distribution: "stable",
          Architectures: ["amd64", "all"],
          Origin: "Kiln tests",
          Label: "aptly-api",
        },
      });
      expect(pub.status).toBe(201);
      expect(pub.body).toMatchObject({
        Prefix: ".",
        Distribution: "stable",
        SourceKind: "snapshot",
        Sources: [{ Component: "main", Name: "s1" }],
        Origin: "Kiln tests",
        Label: "aptly-api",
        Storage: "",
      });
      const local = await call("POST", "/api/publish/a_b", {
        json: { SourceKind: "local", Sources: [{ Name: "r1" }], Signing: { Skip: true } },
      });
      expect(local.status).toBe(201);
      // Distribution and component come from the repo's defaults, as in Aptly.
      expect(local.body).toMatchObject({
        Prefix: "a/b",
        Distribution: "trixie",
        Sources: [{ Component: "main", Name: "r1" }],
      });
      expect((await fetch(`${t.url}/apt/a/b/dists/trixie/Release`)).status).toBe(200);
      const listed = (await call("GET", "/api/publish")).body as { Prefix: string; Distribution: string }[];
      expect(listed.map((p) => `${p.Prefix} ${p.Distribution}`)).toEqual([". stable", "a/b trixie"]);
      expect((await call("GET", "/api/publish/a_b/trixie")).body.Prefix).toBe("a/b");

      // Version 2 into the repo; a snapshot of exactly the new set by package refs; diff.
      const hello2 = buildDeb(work, { name: "hello", version: "2.0" });
      await call("POST", "/api/files/up3", { form: form([hello2]) });
      expect((await call("POST", "/api/repos/r1/file/up3")).body.Report.Added).toEqual([
        "hello_2.0_amd64 added",
      ]);
      const hello2Key = ((await call("GET", "/api/repos/r1/packages?q=hello (= 2.0)")).body as string[])[0];
      expect(hello2Key).toMatch(/^Pamd64 hello 2\.0 /);
      const docKey = keys.find((k) => k.startsWith("Pall "));
      const s2 = await call("POST", "/api/snapshots", {
        json: { Name: "s2", Description: "two", SourceSnapshots: ["s1"], PackageRefs: [hello2Key, docKey] },
      });
      expect(s2.status).toBe(201);
      expect(s2.body).toMatchObject({ Name: "s2", Description: "two" });
      const diff = await call("GET", "/api/snapshots/s1/diff/s2");
      expect(diff.status).toBe(200);
      expect(diff.body).toHaveLength(1);
      expect(diff.body[0].Left.Key).toBe(helloKey);
      expect(diff.body[0].Right.Key).toBe(hello2Key);

      // Switch the root publication to s2, asynchronously, and wait on the task.
      const sw = await call("PUT", "/api/publish/:./stable?_async=true", {
        json: { Snapshots: [{ Component: "main", Name: "s2" }] },
      });
      expect(sw.status).toBe(202);
      expect(Object.keys(sw.body).sort()).toEqual(["ID", "Name", "State"]);
      expect(typeof sw.body.ID).toBe("number");
      expect([0, 1, 2]).toContain(sw.body.State);
      const waited = await call("GET", `/api/tasks/${sw.body.ID}/wait`);
      expect(waited.status).toBe(200);
      expect(waited.body).toMatchObject({ ID: sw.body.ID, State: 2 });
      expect(waited.body.Name).toMatch(/stable/);
      expect((await call("GET", `/api/tasks/${sw.body.ID}`)).body.State).toBe(2);
      const rv = await call("GET", `/api/tasks/${sw.body.ID}/return_value`);
      expect(rv.body).toMatchObject({ Prefix: ".", Sources: [{ Component: "main", Name: "s2" }] });
      expect(typeof (await call("GET", `/api/tasks/${sw.body.ID}/output`)).body).toBe("string");
      const tasks = (await call("GET", "/api/tasks")).body as { ID: number; State: number }[];
      expect(tasks.find((x) => x.ID === sw.body.ID)?.State).toBe(2);
      expect(tasks.every((x) => x.State === 2)).toBe(true);
      // Kiln keeps task history: deleting a finished task answers it, clearing answers {}.
      expect((await call("DELETE", `/api/tasks/${sw.body.ID}`)).body.ID).toBe(sw.body.ID);
      expect((await call("POST", "/api/tasks-clear")).body).toEqual({});
      expect((await call("GET", "/api/tasks-wait")).status).toBe(200);

      // Update the local publication synchronously: it now carries hello 2.0 too.
      const upd = await call("PUT", "/api/publish/a_b/trixie", { json: {} });
      expect(upd.status).toBe(200);
      expect(upd.body.Prefix).toBe("a/b");

      // apt reads the root publication, signed by the served key, and gets version 2.0.
      const apt = new AptClient(`deb [signed-by=${keyring}] ${t.url}/apt stable main`);
      try {
        const res = await apt.update();
        expect(res.stderr).not.toMatch(/^(E|W):/m);
        expect(res.code).toBe(0);
        const dl = await apt.download("hello");
        expect(dl.code).toBe(0);
        expect(sha256(readFileSync(path.join(dl.dir, "hello_2.0_amd64.deb")))).toBe(
          sha256(readFileSync(hello2)),
        );
      } finally {
        apt.cleanup();
      }
      const unsigned = new AptClient(`deb [trusted=yes] ${t.url}/apt/a/b trixie main`);
      try {
        expect((await unsigned.update()).code).toBe(0);
        expect((await unsigned.run("download", "hello=2.0")).code).toBe(0);
      } finally {
        unsigned.cleanup();
      }
    });

    it("answers every documented error with Aptly's status and an {error} body", async () => {
      const expectError = async (p: Promise<Answer>, status: number, match?: RegExp) => {
        const r = await p;
        expect(r.status, JSON.stringify(r.body)).toBe(status);
        expect(Object.keys(r.body as object)).toEqual(["error"]);
        if (match) expect(r.body.error).toMatch(match);
      };
      // Repos.
      await expectError(call("POST", "/api/repos", { json: { Name: "r1" } }), 409, /already exists/);
      await expectError(call("POST", "/api/repos", { json: { Comment: "no name" } }), 400);
      await expectError(call("POST", "/api/repos", { json: { Name: "../evil" } }), 400);
      await expectError(call("GET", "/api/repos/nope"), 404, /local repo with name nope not found/);
      await expectError(call("PUT", "/api/repos/nope", { json: {} }), 404);
      await expectError(call("DELETE", "/api/repos/nope"), 404);
      await expectError(call("GET", "/api/repos/nope/packages"), 404);
      await expectError(call("GET", "/api/repos/r1/packages?q=Name%20(%3D"), 400);
      await expectError(
        call("POST", "/api/repos/r1/packages", { json: { PackageRefs: ["Pamd64 nope 1 0"] } }),
        404,
      );
      await expectError(
        call("DELETE", "/api/repos/r1/packages", { json: { PackageRefs: ["Pamd64 nope 1 0"] } }),
        404,
      );
      await expectError(call("POST", "/api/repos", { json: { Name: "r9", FromSnapshot: "nope" } }), 404);
      await expectError(call("DELETE", "/api/repos/r1?force=1"), 409, /published/);
      await expectError(call("POST", "/api/repos/r1/file/..%2Fetc"), 400);
      // Files.
      await expectError(call("GET", "/api/files/never-made"), 404);
      await expectError(call("POST", "/api/files/up9", { json: { not: "multipart" } }), 400);
      await expectError(call("POST", "/api/files/bad%20name", { form: form([]) }), 400);
      // Snapshots.
      await expectError(
        call("POST", "/api/repos/r1/snapshots", { json: { Name: "s1" } }),
        409,
        /already exists/,
      );
      await expectError(call("POST", "/api/repos/nope/snapshots", { json: { Name: "s9" } }), 404);
      await expectError(
        call("POST", "/api/snapshots", { json: { Name: "s9", SourceSnapshots: ["nope"] } }),
        404,
      );
      await expectError(call("GET", "/api/snapshots/nope"), 404, /snapshot with name nope not found/);
      await expectError(call("GET", "/api/snapshots/s1/diff/nope"), 404);
      await expectError(call("DELETE", "/api/snapshots/s2?force=1"), 409, /published/);
      // Publishing.
      const snapSrc = {
        SourceKind: "snapshot",
        Sources: [{ Component: "main", Name: "s1" }],
        Distribution: "x",
      };
      await expectError(
        call("POST", "/api/publish/:.", { json: { ...snapSrc, Distribution: "stable" } }),
        400,
        /already used/,
      );
      await expectError(call("POST", "/api/publish/s3:bucket:.", { json: snapSrc }), 400, /storage/);
      await expectError(call("POST", "/api/publish/dists", { json: snapSrc }), 400);
      await expectError(
        call("POST", "/api/publish/:.", { json: { ...snapSrc, SourceKind: "mirror" } }),
        400,
        /unknown SourceKind/,
      );
      await expectError(
        call("POST", "/api/publish/:.", { json: { ...snapSrc, Sources: [] } }),
        400,
        /sources are empty/,
      );
      await expectError(
        call("POST", "/api/publish/:.", {
          json: { ...snapSrc, Sources: [{ Component: "main", Name: "nope" }] },
        }),
        404,
        /unable to publish/,
      );
      await expectError(call("PUT", "/api/publish/:./nope", { json: {} }), 404);
      await expectError(
        call("PUT", "/api/publish/a_b/trixie", { json: { Snapshots: [{ Component: "main", Name: "s1" }] } }),
        400,
      );
      await expectError(
        call("PUT", "/api/publish/:./stable", {
          json: { Snapshots: [{ Component: "contrib", Name: "s1" }] },
        }),
        404,
      );
      await expectError(call("DELETE", "/api/publish/:./nope"), 404);
      // Tasks.
      await expectError(call("GET", "/api/tasks/999999"), 404);
      await expectError(call("GET", "/api/tasks/999999/wait"), 400);
      // A task that fails answers its error when waited on, and State 3 when asynchronous.
      // A missing upload directory is a failed file in Aptly's report, not an error…
      const missing = await call("POST", "/api/repos/r1/file/never-uploaded");
      expect(missing.status).toBe(200);
      expect(missing.body.FailedFiles).toEqual(["never-uploaded"]);
      // …but asynchronously the task fails, and says why.
      const failing = await call("POST", "/api/repos/r1/file/never-uploaded?_async=true");
      expect(failing.status).toBe(202);
      const done = await call("GET", `/api/tasks/${failing.body.ID}/wait`);
      expect(done.body.State).toBe(3);
      expect((await call("GET", `/api/tasks/${failing.body.ID}/output`)).body).toMatch(/UPLOAD_NOT_FOUND/);
      // Over the upload limit: 413, and nothing left behind.
      const limit = t.hub.deps.config.uploadLimitBytes;
      t.hub.deps.config.uploadLimitBytes = 100;
      try {
        const big = await call("POST", "/api/files/big", {
          form: form([path.join(work, "hello_2.0_amd64.deb")]),
        });
        expect(big.status).toBe(413);
        expect((await call("GET", "/api/files/big")).body).toEqual([]);
      } finally {
        t.hub.deps.config.uploadLimitBytes = limit;
      }
    });

    it("drops publications, snapshots, repos and files as Aptly does", async () => {
      const drop = await call("DELETE", "/api/publish/a_b/trixie");
      expect(drop.status).toBe(200);
      expect(drop.body).toEqual({});
      expect((await fetch(`${t.url}/apt/a/b/dists/trixie/Release`)).status).toBe(404);
      expect((await call("DELETE", "/api/snapshots/s1")).body).toEqual({});
      const repoDrop = await call("DELETE", "/api/repos/r1?_async=1");
      expect(repoDrop.status).toBe(202);
      expect((await call("GET", `/api/tasks/${repoDrop.body.ID}/wait`)).body.State).toBe(2);
      expect((await call("GET", "/api/repos/r1")).status).toBe(404);
      expect((await call("DELETE", "/api/files/up2/hello_1.0_amd64.deb")).body).toEqual({});
      expect((await call("DELETE", "/api/files/up2")).body).toEqual({});
      expect((await call("GET", "/api/files")).body).not.toContain("up2");
    });

    it("serves /api without a token in anonymous mode, as user aptly, and nothing else", async () => {
      t.hub.deps.config.aptlyAnonymous = true;
      try {
        expect((await call("GET", "/api/repos", { auth: null })).status).toBe(200);
        const made = await call("POST", "/api/repos", { json: { Name: "anon" }, auth: null });
        expect(made.status).toBe(201);
        const snap = await call("POST", "/api/repos/anon/snapshots?_async=true", {
          json: { Name: "anon-s" },
          auth: null,
        });
        expect(snap.status).toBe(202);
        const row = await t.hub.deps.db.kysely
          .selectFrom("tasks")
          .select("owner")
          .where("id", "=", snap.body.ID as number)
          .executeTakeFirstOrThrow();
        expect(row.owner).toBe("aptly");
        // The native API still wants a token; a wrong token is still refused.
        expect((await fetch(`${t.url}/api/v1/repos`)).status).toBe(401);
        expect((await call("GET", "/api/repos", { auth: "Bearer wrong" })).status).toBe(401);
      } finally {
        t.hub.deps.config.aptlyAnonymous = false;
      }
      expect((await call("GET", "/api/repos", { auth: null })).status).toBe(401);
    });
  });
}
