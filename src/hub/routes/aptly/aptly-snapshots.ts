import type { FastifyInstance } from "fastify";
import { KilnError } from "../../../errors/catalogue.js";
import { snapshotLock } from "../../../publish/methods.js";
import { publicationsServing } from "../../../publish/repo-store.js";
import { diffPackages, listSnapshots, snapshotPackages } from "../../../publish/snapshot-store.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";
import { toAptlyPackageDetails, toAptlySnapshot } from "./aptly-json.js";
import {
  assertNewSnapshotName,
  assertPackageKeys,
  bodyObject,
  findAptlySnapshot,
  stringField,
  stringListField,
} from "./aptly-lookups.js";
import { aptlyPackageList } from "./aptly-repos.js";
import { runAptlyTask } from "./run-aptly-task.js";

export function registerAptlySnapshotRoutes(api: FastifyInstance, deps: HubDeps): void {
  const db = deps.db.kysely;

  api.get<{ Querystring: { sort?: string } }>("/api/snapshots", async (req) => {
    requireAuth(req);
    const rows = await listSnapshots(db); // oldest first: Aptly's sort=time
    if (req.query.sort === "name") rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return rows.map(toAptlySnapshot);
  });

  api.post("/api/snapshots", async (req, reply) => {
    requireUser(req);
    const body = bodyObject(req.body);
    const name = stringField(body, "Name", true) ?? "";
    const sources = stringListField(body, "SourceSnapshots");
    const keys = stringListField(body, "PackageRefs");
    await assertNewSnapshotName(db, name);
    for (const s of sources) await findAptlySnapshot(db, s);
    await assertPackageKeys(db, keys);
    const description =
      stringField(body, "Description") || (sources.length + keys.length === 0 ? "Created as empty" : "");
    return runAptlyTask(deps, req, reply, {
      method: "snapshotCreate",
      args: { name, description, from: { kind: "keys", keys } },
      locks: [snapshotLock(name), ...sources.map((s) => snapshotLock(s, false))],
    });
  });

  api.get<{ Params: { name: string } }>("/api/snapshots/:name", async (req) => {
    requireAuth(req);
    return toAptlySnapshot(await findAptlySnapshot(db, req.params.name));
  });

  api.delete<{ Params: { name: string } }>("/api/snapshots/:name", async (req, reply) => {
    requireUser(req);
    const snap = await findAptlySnapshot(db, req.params.name);
    // As in Aptly, a published snapshot is never dropped, force or not.
    if ((await publicationsServing(db, "snapshot", snap.name)).length > 0) {
      throw new KilnError("SNAPSHOT_PUBLISHED", "unable to drop: snapshot is published", { name: snap.name });
    }
    return runAptlyTask(deps, req, reply, {
      method: "snapshotDrop",
      args: { name: snap.name, force: false },
      locks: [snapshotLock(snap.name)],
    });
  });

  api.get<{ Params: { name: string } }>("/api/snapshots/:name/packages", async (req) => {
    requireAuth(req);
    const snap = await findAptlySnapshot(db, req.params.name);
    return aptlyPackageList(await snapshotPackages(db, snap.id), req.query);
  });

  api.get<{ Params: { name: string; withSnapshot: string }; Querystring: { onlyMatching?: string } }>(
    "/api/snapshots/:name/diff/:withSnapshot",
    async (req) => {
      requireAuth(req);
      const left = await snapshotPackages(db, (await findAptlySnapshot(db, req.params.name)).id);
      const right = await snapshotPackages(db, (await findAptlySnapshot(db, req.params.withSnapshot)).id);
      const byKey = new Map([...left, ...right].map((p) => [p.key, p]));
      const detail = (key: string | null) => {
        const p = key === null ? undefined : byKey.get(key);
        return p ? toAptlyPackageDetails(p) : null;
      };
      const onlyMatching = req.query.onlyMatching === "1";
      return diffPackages(left, right)
        .filter((d) => !onlyMatching || (d.left !== null && d.right !== null))
        .map((d) => ({ Left: detail(d.left), Right: detail(d.right) }));
    },
  );
}
