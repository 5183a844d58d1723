/**
 * Where tag repos are served and what apt is told about them: pure, so the CLI (and workers)
 * use it without loading the hub's database code.
 */
import type { TagRepoJson } from "../client/types.js";

/** Every tag repo is published as distribution `kiln`, component `main`. */
export const TAG_REPO_DIST = "kiln";
export const TAG_REPO_COMPONENT = "main";
/** The URL prefix /repos/ serves `<data>/repos/` under. */
export const TAG_REPOS_URL = "/repos/";

export function tagRepoPath(tag: string, id: number): string {
  return `${TAG_REPOS_URL}${tag}/${id}/`;
}

/**
 * The sources.list line of a repo on the hub at `hub`, the archive key being in `keyring`
 * (the CLI prints it with /usr/share/keyrings/kiln-archive-keyring.gpg).
 */
export function tagRepoSourcesLine(hub: string, repo: Pick<TagRepoJson, "path">, keyring: string): string {
  const url = `${hub.replace(/\/+$/, "")}${repo.path.replace(/\/+$/, "")}`;
  return `deb [signed-by=${keyring}] ${url} ${TAG_REPO_DIST} ${TAG_REPO_COMPONENT}`;
}

/** Does the repo hold every one of these builds (ids)? */
export function repoHasBuilds(repo: Pick<TagRepoJson, "builds">, buildIds: readonly number[]): boolean {
  const held = new Set(repo.builds.map((b) => b.buildId));
  return buildIds.every((id) => held.has(id));
}
