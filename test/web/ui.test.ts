import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import { DEFAULT_WEBHOOKS } from "../../src/events/webhook-config.js";
import { createTask } from "../../src/tasks/create-task.js";
import { Receiver } from "../events/receiver.js";
import { buildDeb } from "../helpers/debs.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";
import { seedBuild } from "../helpers/seed-build.js";

const execFileAsync = promisify(execFile);
const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = path.resolve("test-artifacts/ui");
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  if (process.env.CI === "true") throw new Error(`${CHROMIUM} is missing: CI must install Debian's chromium`);
  console.warn(`skipping the web UI browser tests: ${CHROMIUM} is missing (apt-get install chromium)`);
}

const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function upload(client: KilnClient, files: string[]): Promise<string> {
  const { id } = await client.createUpload();
  for (const f of files) await client.uploadFile(id, path.basename(f), readFileSync(f));
  return id;
}

// The browser test runs on SQLite only: the API calls it makes are tested on both dialects elsewhere.
describe.skipIf(!haveChromium)("the web UI in chromium", () => {
  let t: TestHub;
  let browser: Browser;
  let work: string;
  let receiver: Receiver;
  let hookUrl: string;
  const consoleErrors: string[] = [];
  const allowPrivate = DEFAULT_WEBHOOKS.allowPrivate;

  async function newPage(
    token: string,
    viewport = { width: 1280, height: 800 },
  ): Promise<{ ctx: BrowserContext; page: Page }> {
    const ctx = await browser.newContext({ viewport });
    const page = await ctx.newPage();
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(`${page.url()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
    page.on("dialog", (d) => void d.accept());
    await page.goto(`${t.url}/`);
    await page.getByLabel("Token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByTestId("whoami").waitFor();
    return { ctx, page };
  }

  const shot = (page: Page, name: string) =>
    page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    // The test hub takes the default webhook settings, which keep webhooks off loopback; the
    // receiver here is on loopback (this file runs in a process of its own).
    DEFAULT_WEBHOOKS.allowPrivate = true;
    receiver = new Receiver();
    hookUrl = await receiver.listen();
    t = await startTestHub("sqlite", { worker: true });
    work = mkdtempSync(path.join(os.tmpdir(), "kiln-ui-"));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      // A fresh profile: playwright gives launch() a new temporary user data dir of its own.
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await t?.cleanup();
    await receiver?.close();
    DEFAULT_WEBHOOKS.allowPrivate = allowPrivate;
    rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it("shows a running task on the dashboard, follows its log live and cancels it", async () => {
    const task = await t.admin.createTask({ method: "sleep", args: { seconds: 60 } });
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/`);
      // Live: the page is not reloaded while the task goes from queued to running.
      await page
        .locator("#running")
        .getByRole("link", { name: `#${task.id}`, exact: true })
        .waitFor({ timeout: 20_000 });
      await page.locator("#hosts").getByText(`test-worker-${process.pid}`).waitFor();
      await shot(page, "dashboard");

      await page.goto(`${t.url}/#/tasks/${task.id}`);
      const log = page.getByTestId("log");
      await log.getByText("sleep: 1/60").waitFor({ timeout: 15_000 });
      await log.getByText("sleep: 3/60").waitFor({ timeout: 15_000 });
      await page.getByTestId("gantt").waitFor();
      await shot(page, "task-running");

      await page.getByTestId("cancel").click();
      await page.getByTestId("task-state").getByText("canceled").waitFor({ timeout: 15_000 });
      expect((await t.admin.getTask(task.id)).state).toBe("canceled");
      await page.getByTestId("retry").waitFor();
      await shot(page, "task-canceled");

      await page.goto(`${t.url}/#/tasks`);
      await page.getByRole("link", { name: `#${task.id}` }).waitFor();
      await shot(page, "task-list");
    } finally {
      await ctx.close();
    }
  }, 90_000);

  it("shows the line a failed task failed on", async () => {
    const task = await t.admin.createTask({ method: "sleep", args: { seconds: 1, fail: true } });
    await until("the task to fail", async () => (await t.admin.getTask(task.id)).state === "failed");
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/tasks/${task.id}`);
      await page.getByTestId("task-error").getByText("sleep failed as asked").waitFor();
      await page.getByTestId("failing-line").getByText("sleep: 1/1").waitFor();
      await page.getByTestId("first-error").click();
      await shot(page, "task-failed");
    } finally {
      await ctx.close();
    }
  }, 60_000);

  it("shows the compiler's line a failed build failed on", async () => {
    const c = t.admin;
    await c.createTag({ name: "ui-build", arches: ["amd64"] });
    await c.createTag({ name: "ui-dest" });
    await c.createTarget({ name: "ui-target", buildTag: "ui-build", destTag: "ui-dest" });
    await c.changePackages("ui-dest", { action: "add", packages: ["broken-c"], owner: "admin" });
    const fixture = path.resolve("test/fixtures/packages/broken-c");
    const tarball = path.join(work, "broken-c.tar.gz");
    await execFileAsync("tar", ["-czf", tarball, "--exclude-vcs", "-C", fixture, "."]);
    const area = await upload(c, [tarball]);
    const { build } = await c.createBuild({
      target: "ui-target",
      upload: area,
      source: { type: "tarball", file: "broken-c.tar.gz" },
    });
    await until("the build to fail", async () => (await c.getBuild(build.id)).state === "failed", 180_000);
    const failedArch = (await c.getBuild(build.id)).arches.find((a) => a.state === "failed");
    expect(failedArch?.taskId).toBeTruthy();
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/tasks/${failedArch?.taskId}`);
      const line = page.getByTestId("failing-line");
      await line.waitFor();
      // The compiler's own message (hello.c does not compile), not just the last line of the log.
      expect(await line.textContent()).toMatch(/error/i);
      expect(await line.textContent()).toMatch(/hello\.c/);
      await shot(page, "build-failed");
    } finally {
      await ctx.close();
    }
  }, 240_000);

  it("draws the tag inheritance graph", async () => {
    const c = t.admin;
    await c.createTag({ name: "base", arches: ["amd64"] });
    await c.createTag({ name: "updates" });
    await c.createTag({ name: "extras" });
    await c.createTag({ name: "release" });
    await c.addTagParent("updates", { parent: "base", priority: 0 });
    await c.addTagParent("release", { parent: "updates", priority: 0 });
    await c.addTagParent("release", { parent: "extras", priority: 10 });
    await c.addTagParent("extras", { parent: "base", priority: 0 });
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/tags/release`);
      const graph = page.getByTestId("tag-graph");
      await graph.waitFor();
      for (const n of ["release", "updates", "extras", "base"])
        await graph.locator(`[data-node="${n}"]`).waitFor();
      for (const e of ["release->updates", "release->extras", "updates->base", "extras->base"]) {
        await graph.locator(`[data-edge="${e}"]`).waitFor();
      }
      // Children above parents.
      const y = async (n: string) => Number(await graph.locator(`[data-node="${n}"] rect`).getAttribute("y"));
      expect(await y("release")).toBeLessThan(await y("updates"));
      expect(await y("updates")).toBeLessThan(await y("base"));
      await shot(page, "tag");
    } finally {
      await ctx.close();
    }
  }, 60_000);

  it("lists a tag's history of changes, its own and no other tag's", async () => {
    const c = t.admin;
    await c.createTag({ name: "hist-base", arches: ["amd64"] });
    await c.createTag({ name: "hist-tag" });
    await c.addTagParent("hist-tag", { parent: "hist-base", priority: 5 });
    await c.changePackages("hist-tag", { action: "add", packages: ["hello-hist"], owner: "admin" });
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/tags/hist-tag`);
      const history = page.getByTestId("tag-history");
      await history.getByText("parent hist-base added (priority 5)").waitFor();
      await history.getByText("hello-hist added (owner admin)").waitFor();
      await history.getByText("created", { exact: true }).waitFor();
      // Newest first.
      const changes = await history.locator("[data-type]").allTextContents();
      expect(changes).toEqual([
        "hello-hist added (owner admin)",
        "parent hist-base added (priority 5)",
        "created",
      ]);
      await shot(page, "tag-history");
      // The parent's page does not list its child's link.
      await page.goto(`${t.url}/#/tags/hist-base`);
      await page.getByTestId("tag-history").getByText("created", { exact: true }).waitFor();
      expect(await page.getByTestId("tag-history").locator("[data-type]").count()).toBe(1);
    } finally {
      await ctx.close();
    }
  }, 60_000);

  it("lists webhooks with their deliveries and attempts, for admins alone", async () => {
    const hook = await t.admin.addWebhook({ url: hookUrl, events: ["build.*"], description: "ui test" });
    const { eventId } = await t.admin.testWebhook(hook.id);
    const [delivery] = await until("the test event to be delivered", async () => {
      const ds = await t.admin.webhookDeliveries(hook.id, { event: eventId });
      return ds[0]?.state === "delivered" ? ds : undefined;
    });
    expect(receiver.received.length).toBeGreaterThanOrEqual(1);
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.getByRole("link", { name: "Webhooks", exact: true }).click();
      const card = page.getByTestId(`webhook-${hook.id}`);
      await card.getByText(hookUrl).waitFor();
      await card.getByText("webhook.test").waitFor();
      await card.getByText("delivered", { exact: true }).waitFor();
      await card.getByTestId(`attempts-${delivery!.id}`).getByText("HTTP 200").waitFor();
      await shot(page, "webhooks");

      // Another test event from the page shows up as a second delivery.
      await card.getByTestId(`webhook-test-${hook.id}`).click();
      await until("a second delivery", async () => (await t.admin.webhookDeliveries(hook.id)).length >= 2);
      await until("the page to show it", async () => (await card.getByText("webhook.test").count()) >= 2);
    } finally {
      await ctx.close();
    }
    const phone = await newPage(t.adminToken, { width: 390, height: 844 });
    try {
      await phone.page.goto(`${t.url}/#/webhooks`);
      await phone.page.getByTestId(`webhook-${hook.id}`).getByText("HTTP 200").first().waitFor();
      const overflow = Number(
        await phone.page.evaluate("document.documentElement.scrollWidth - window.innerWidth"),
      );
      expect(overflow).toBeLessThanOrEqual(0);
      await shot(phone.page, "webhooks-phone");
    } finally {
      await phone.ctx.close();
    }
    const { token } = await t.admin.createToken({ user: "carol", role: "user" });
    const user = await newPage(token);
    try {
      expect(await user.page.getByRole("link", { name: "Webhooks", exact: true }).count()).toBe(0);
      await user.page.goto(`${t.url}/#/webhooks`);
      await user.page.getByText("Webhooks are for admins").waitFor();
      expect(await user.page.getByTestId(`webhook-${hook.id}`).count()).toBe(0);
    } finally {
      await user.ctx.close();
    }
  }, 60_000);

  it("draws the health charts as SVG, on a desktop and on a phone", async () => {
    const deb = buildDeb(work, { name: "hello-health", version: "1.0-1" });
    const deps = t.hub.deps;
    const buildId = await seedBuild(deps, {
      source: "hello-health",
      version: "1.0-1",
      files: [{ path: deb, kind: "deb", arch: "amd64" }],
    });
    // One of its build steps passed on a retry, which makes the package flaky.
    const db = deps.db.kysely;
    const build = await db
      .selectFrom("builds")
      .select("task_id")
      .where("id", "=", buildId)
      .executeTakeFirstOrThrow();
    const step = await createTask(deps, {
      method: "sleep",
      args: { seconds: 0 },
      owner: "admin",
      channel: "nowhere",
      parentId: build.task_id,
    });
    await db
      .updateTable("tasks")
      .set({ method: "buildArch", state: "closed", retries: 1, completed_at: deps.clock.now() })
      .where("id", "=", step.id)
      .execute();
    for (const viewport of [
      { width: 1280, height: 800 },
      { width: 390, height: 844 },
    ]) {
      const { ctx, page } = await newPage(t.adminToken, viewport);
      try {
        await page.goto(`${t.url}/#/health?since=1d`);
        for (const id of ["chart-success", "chart-wait", "chart-build"]) {
          await page.locator(`svg[data-testid="${id}"]`).waitFor();
        }
        // The seeded build completed just now: the last bucket has a success rate and a build time.
        expect(
          await page.locator('[data-testid="chart-success"] .chart-point').count(),
        ).toBeGreaterThanOrEqual(1);
        expect(await page.locator('[data-testid="chart-build"] .chart-point').count()).toBeGreaterThanOrEqual(
          1,
        );
        expect(
          await page.locator('[data-testid="chart-success"] path.chart-line').count(),
        ).toBeGreaterThanOrEqual(1);
        const overflow = Number(
          await page.evaluate("document.documentElement.scrollWidth - window.innerWidth"),
        );
        expect(overflow).toBeLessThanOrEqual(0);
        await shot(page, viewport.width < 640 ? "health-phone" : "health");
        // The window links are real links.
        await page.getByRole("link", { name: "last week" }).click();
        await page.getByText("Builds, last week").waitFor();
      } finally {
        await ctx.close();
      }
    }
  }, 60_000);

  it("rolls a publication back from its page, and the hub serves the old Release again", async () => {
    const c = t.admin;
    await c.createRepo({ name: "ui-repo", distribution: "stable" });
    await c.addToRepo("ui-repo", {
      upload: await upload(c, [buildDeb(work, { name: "hello-ui", version: "1.0-1" })]),
    });
    await c.publish({
      prefix: ".",
      distribution: "stable",
      sourceKind: "local",
      sources: [{ component: "main", name: "ui-repo" }],
      skipSigning: true,
    });
    const releaseUrl = `${t.url}/apt/dists/stable/Release`;
    const first = await (await fetch(releaseUrl)).text();
    await c.addToRepo("ui-repo", {
      upload: await upload(c, [buildDeb(work, { name: "hello-ui", version: "2.0-1" })]),
    });
    await c.publicationAction(".", "stable", "update");
    const second = await (await fetch(releaseUrl)).text();
    expect(sha256(second)).not.toBe(sha256(first));

    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/publish/./stable`);
      await page.getByTestId("sources-line").waitFor();
      expect(await page.getByTestId("sources-line").textContent()).toBe(
        `deb [trusted=yes] ${t.url}/apt stable main`,
      );
      await shot(page, "publication");
      await page.getByTestId("rollback-1").click();
      await until(
        "the old Release to be served",
        async () => sha256(await (await fetch(releaseUrl)).text()) === sha256(first),
      );
      await page.getByTestId("rollback-2").waitFor();
      await shot(page, "publication-rolled-back");

      await page.goto(`${t.url}/#/repos/ui-repo?q=${encodeURIComponent("Version (>= 2.0)")}`);
      await page.getByRole("cell", { name: "2.0-1" }).waitFor();
      expect(await page.getByRole("cell", { name: "1.0-1" }).count()).toBe(0);
      await shot(page, "repo");
      await page.goto(`${t.url}/#/repos`);
      await page.getByRole("link", { name: "./stable" }).waitFor();
      await shot(page, "repos");
    } finally {
      await ctx.close();
    }
  }, 90_000);

  it("shows a build with its artifacts, whose download has the listed hash", async () => {
    const deb = buildDeb(work, { name: "hello-build", version: "3.0-1" });
    const id = await seedBuild(t.hub.deps, {
      source: "hello-build",
      version: "3.0-1",
      files: [{ path: deb, kind: "deb", arch: "amd64" }],
    });
    const want = sha256(readFileSync(deb));
    // As a build in a buildroot records it: the base, the tag repo, what apt installed.
    const record = {
      name: "bookworm-base",
      sha256: "ab".repeat(32),
      tag: "ui-build",
      repoId: 7,
      arches: {
        amd64: {
          installed: [{ package: "libkilnfoo-dev", version: "2.0", arch: "amd64" }],
          setupSeconds: 1.6,
          base: "cached",
        },
      },
    };
    await t.hub.deps.db.kysely
      .updateTable("builds")
      .set({ buildroot: JSON.stringify(record) })
      .where("id", "=", id)
      .execute();
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/builds/${id}`);
      await page.getByRole("cell", { name: want }).waitFor();
      await page.getByRole("cell", { name: path.basename(deb) }).waitFor();
      await page.getByRole("heading", { name: "Buildroot" }).waitFor();
      await page.getByRole("cell", { name: "libkilnfoo-dev" }).waitFor();
      expect(await page.getByText("ui-build", { exact: true }).count()).toBeGreaterThan(0);
      const [download] = await Promise.all([
        page.waitForEvent("download"),
        page.getByRole("button", { name: "Download" }).click(),
      ]);
      expect(download.suggestedFilename()).toBe(path.basename(deb));
      expect(sha256(readFileSync(await download.path()))).toBe(want);
      await shot(page, "build");
      await page.goto(`${t.url}/#/builds`);
      await page.getByRole("link", { name: "hello-build/3.0-1" }).waitFor();
      await shot(page, "builds");
    } finally {
      await ctx.close();
    }
  }, 60_000);

  it("hides admin actions from a plain user, whom the API refuses anyway", async () => {
    const { token } = await t.admin.createToken({ user: "bob", role: "user" });
    const task = await t.admin.createTask({ method: "sleep", args: { seconds: 30 } });
    const { ctx, page } = await newPage(token);
    try {
      await page.goto(`${t.url}/#/hosts`);
      await page.getByRole("cell", { name: `test-worker-${process.pid}` }).waitFor();
      expect(await page.getByRole("button", { name: /disable|enable/i }).count()).toBe(0);
      await shot(page, "hosts-user");

      await page.goto(`${t.url}/#/tasks/${task.id}`);
      await page.getByTestId("task-state").waitFor();
      expect(await page.getByTestId("cancel").count()).toBe(0);

      const bob = t.client(token);
      await expect(bob.cancelTask(task.id)).rejects.toMatchObject({ status: 403 });
      const patch = await fetch(`${t.url}/api/v1/hosts/test-worker-${process.pid}`, {
        method: "PATCH",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ enabled: false }),
      });
      expect(patch.status).toBe(403);
    } finally {
      await ctx.close();
      await t.admin.cancelTask(task.id);
    }
    // An admin sees the switch.
    const admin = await newPage(t.adminToken);
    try {
      await admin.page.goto(`${t.url}/#/hosts`);
      await admin.page.getByTestId(`toggle-test-worker-${process.pid}`).waitFor();
      await shot(admin.page, "hosts-admin");
    } finally {
      await admin.ctx.close();
    }
  }, 60_000);

  it("is usable by keyboard", async () => {
    const { ctx, page } = await newPage(t.adminToken);
    try {
      await page.goto(`${t.url}/#/`);
      await page.locator("#hosts").waitFor();
      // On a fresh load, the first stop is the skip link.
      await page.reload();
      await page.locator("#hosts").waitFor();
      await page.keyboard.press("Tab");
      expect(await page.evaluate("document.activeElement.textContent")).toBe("Skip to content");
      await page.getByRole("link", { name: "Tags", exact: true }).focus();
      await page.keyboard.press("Enter");
      await page.getByRole("heading", { name: "Tags" }).waitFor();
      // The new page takes the focus, so the next Tab lands in it rather than back in the menu.
      expect(await page.evaluate("document.activeElement.id")).toBe("main");
      await page.keyboard.press("Tab");
      expect(await page.evaluate("document.getElementById('main').contains(document.activeElement)")).toBe(
        true,
      );
    } finally {
      await ctx.close();
    }
  }, 30_000);

  it("is readable on a phone-sized screen", async () => {
    const { ctx, page } = await newPage(t.adminToken, { width: 390, height: 844 });
    try {
      await page.goto(`${t.url}/#/`);
      await page.locator("#hosts").waitFor();
      // Nothing wider than the screen: no sideways scrolling of the page itself.
      const overflow = Number(
        await page.evaluate("document.documentElement.scrollWidth - window.innerWidth"),
      );
      expect(overflow).toBeLessThanOrEqual(0);
      await shot(page, "dashboard-phone");
    } finally {
      await ctx.close();
    }
  }, 30_000);

  it("logged no console errors on any page", () => {
    expect(consoleErrors).toEqual([]);
  });
});
