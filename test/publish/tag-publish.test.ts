import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../helpers/db.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { waitFor } from "../helpers/procs.js";
import { seedBuild } from "../helpers/seed-build.js";
import { waitUntilServed } from "../../src/cli/build-watch.js";

const quiet = { write: () => true, isTTY: false };

for (const dialect of DIALECTS) {
  describe(`publishing a tag (${dialect})`, () => {
    let t: TestHub;
    let work: string;

    beforeAll(async () => {
      t = await startTestHub(dialect);
      work = mkdtempSync(path.join(os.tmpdir(), "kiln-tagpub-"));
    });
    afterAll(async () => {
      await t?.cleanup();
      rmSync(work, { recursive: true, force: true });
    });

    const packagesText = async () =>
      (await fetch(`${t.url}/apt/tracked/dists/release/main/binary-amd64/Packages`)).text();

    it("tracks the tag: tagging, untagging and blocking republish, one generation per change set", async () => {
      const c = t.admin;
      const deps = t.hub.deps;
      await c.createTag({ name: "base", arches: ["amd64"] });
      await c.createTag({ name: "release" });
      await c.addTagParent("release", { parent: "base", priority: 10 });
      await c.changePackages("base", { action: "add", packages: ["alpha", "beta"], owner: "admin" });

      const alpha1 = await seedBuild(deps, {
        source: "alpha",
        version: "1.0",
        files: [{ path: buildDeb(work, { name: "alpha", version: "1.0" }), kind: "deb", arch: "amd64" }],
      });
      expect(alpha1).toBeGreaterThan(0);
      await c.tagBuild("base", "alpha/1.0");

      const pub = await c.publish({
        prefix: "tracked",
        distribution: "release",
        sourceKind: "tag",
        sources: [{ component: "main", name: "release" }],
      });
      expect(pub.result).toMatchObject({ generation: 1, packageCount: 1 });
      expect(await packagesText()).toMatch(/^Package: alpha\n(?:.+\n)*?Version: 1\.0$/m);

      // A new build tagged into the parent: the publication follows by itself.
      await seedBuild(deps, {
        source: "beta",
        version: "2.0",
        files: [{ path: buildDeb(work, { name: "beta", version: "2.0" }), kind: "deb", arch: "amd64" }],
      });
      await c.tagBuild("base", "beta/2.0");
      await waitFor("beta published", async () => /^Package: beta$/m.test(await packagesText()), 15_000);

      // Blocking the package in the child removes it from what is published.
      await c.changePackages("release", { action: "block", packages: ["alpha"] });
      await waitFor("alpha gone", async () => !/^Package: alpha$/m.test(await packagesText()), 15_000);
      const shown = await c.showPublication("tracked", "release");
      expect(shown.liveGeneration).toBe(3);

      // Nothing that matters changed (a tag edit): no new generation.
      await c.editTag("release", { extra: { note: "x" } });
      await new Promise((r) => setTimeout(r, 1500));
      expect((await c.showPublication("tracked", "release")).liveGeneration).toBe(3);

      // What `kiln build` does after a build: wait until apt can see it.
      await c.changePackages("base", { action: "add", packages: ["gamma"], owner: "admin" });
      const gamma = await seedBuild(deps, {
        source: "gamma",
        version: "3.0",
        files: [{ path: buildDeb(work, { name: "gamma", version: "3.0" }), kind: "deb", arch: "amd64" }],
      });
      const gammaJson = await c.getBuild(gamma);
      expect(await waitUntilServed(c, gammaJson, { out: quiet })).toEqual([]); // not tagged: nothing to wait for
      await c.tagBuild("base", "gamma/3.0");
      const served = await waitUntilServed(c, gammaJson, { out: quiet });
      expect(served).toMatchObject([{ prefix: "tracked", distribution: "release", ready: true }]);
      expect(await packagesText()).toMatch(/^Package: gamma$/m);

      // Snapshot of the tag as of the first publication's event: alpha only.
      const events = (shown.history ?? []).map(
        (h) => (h.sources as { sources: { event: number }[] }).sources[0]?.event,
      );
      const firstEvent = events[events.length - 1];
      const snap = await c.createSnapshot({
        name: "rel-1",
        from: { kind: "tag", tag: "release", event: firstEvent },
      });
      expect(snap.result?.packageCount).toBe(1);
      const detail = await c.showSnapshot("rel-1", { withPackages: true });
      expect(detail.packages?.map((p) => `${p.name}/${p.version}`)).toEqual(["alpha/1.0"]);
      // and dpkg agrees with the served file
      const deb = path.join(work, "served.deb");
      const filename = /^Filename: (.*)$/m.exec(await packagesText())?.[1] ?? "";
      // (fetch, not a child process run synchronously: the hub answers from this very process)
      writeFileSync(deb, Buffer.from(await (await fetch(`${t.url}/apt/tracked/${filename}`)).arrayBuffer()));
      expect(execFileSync("dpkg-deb", ["-f", deb, "Package"]).toString().trim()).toBe("beta");
      expect(readFileSync(deb).length).toBeGreaterThan(0);
    });
  });
}
