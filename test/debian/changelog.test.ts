import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseChangelog, parseLatestChangelogEntry } from "../../src/debian/changelog.js";
import { getField, parseDeb822 } from "../../src/debian/deb822.js";
import { expectDebianErrorSync, haveTool, makeTempDir, run } from "./helpers.js";

const CHANGELOG = `hello (2:2.10-3ubuntu1~bpo12+1) unstable experimental; urgency=high, binary-only=yes

  [ Jane Doe ]
  * New upstream release.
    - Fixes the greeting. (Closes: #123456)

  * Second item.

 -- Jane Doe <jane@example.org>  Mon, 04 Mar 2024 10:11:12 +0100

hello (2.10-2) unstable; urgency=medium (really)
  * No blank line after the header.
 -- John Smith <john@example.org>  Sun, 31 Dec 2023 23:59:59 -0500
hello (2.10-1) unstable; XS-Testing=yes
  * No urgency at all, and no blank line between entries.

 -- A. N. Other <other@example.org> Fri, 1 Dec 2023 01:02:03 +0000

Local variables:
mode: debian-changelog
End:
`;

const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

describe("parseChangelog", () => {
  it("reads every entry with its header, changes and trailer", () => {
    const entries = parseChangelog(CHANGELOG);
    expect(entries).toHaveLength(3);
    const [first, second, third] = entries;
    expect(first).toEqual({
      source: "hello",
      version: "2:2.10-3ubuntu1~bpo12+1",
      distributions: ["unstable", "experimental"],
      urgency: "high",
      options: { Urgency: "high", "Binary-Only": "yes" },
      changes: [
        "  [ Jane Doe ]",
        "  * New upstream release.",
        "    - Fixes the greeting. (Closes: #123456)",
        "",
        "  * Second item.",
      ].join("\n"),
      maintainer: "Jane Doe <jane@example.org>",
      maintainerName: "Jane Doe",
      maintainerEmail: "jane@example.org",
      date: "Mon, 04 Mar 2024 10:11:12 +0100",
      timestamp: Date.UTC(2024, 2, 4, 9, 11, 12) / 1000,
      line: 1,
    });
    expect(second).toMatchObject({ version: "2.10-2", urgency: "medium", line: 11 });
    expect(second?.timestamp).toBe(Date.UTC(2024, 0, 1, 4, 59, 59) / 1000);
    expect(third).toMatchObject({
      version: "2.10-1",
      urgency: undefined,
      options: { "Xs-Testing": "yes" },
      line: 14,
    });
    expect(third?.date).toBe("Fri, 1 Dec 2023 01:02:03 +0000");
  });

  it("stops after maxEntries without reading further", () => {
    const broken = CHANGELOG.replace("hello (2.10-1)", "garbage line\nhello (2.10-1)");
    expect(() => parseChangelog(broken)).toThrow(/line 14/);
    expect(parseChangelog(broken, { maxEntries: 2 }).map((e) => e.version)).toEqual([
      "2:2.10-3ubuntu1~bpo12+1",
      "2.10-2",
    ]);
    expect(parseLatestChangelogEntry(broken).version).toBe("2:2.10-3ubuntu1~bpo12+1");
  });

  it.runIf(haveTool("dpkg-parsechangelog"))("agrees with dpkg-parsechangelog", () => {
    const file = path.join(tmp.dir, "changelog");
    writeFileSync(file, CHANGELOG);
    const out = run("dpkg-parsechangelog", ["-l", file, "--all"]);
    const dpkg = parseDeb822(out)[0]!;
    const latest = parseLatestChangelogEntry(CHANGELOG);
    expect(getField(dpkg, "Source")).toBe(latest.source);
    expect(getField(dpkg, "Version")).toBe(latest.version);
    expect(getField(dpkg, "Distribution")).toBe(latest.distributions.join(" "));
    expect(getField(dpkg, "Maintainer")).toBe(latest.maintainer);
    expect(getField(dpkg, "Date")).toBe(latest.date);
    expect(Number(getField(dpkg, "Timestamp"))).toBe(latest.timestamp);
    expect(getField(dpkg, "Urgency")).toBe(latest.urgency);
    // --all lists every version in its Changes field.
    const changes = getField(dpkg, "Changes") ?? "";
    for (const e of parseChangelog(CHANGELOG)) expect(changes).toContain(`hello (${e.version})`);
    for (const [i, e] of parseChangelog(CHANGELOG).entries()) {
      const one = parseDeb822(
        run("dpkg-parsechangelog", ["-l", file, "--offset", String(i), "--count", "1"]),
      )[0]!;
      expect(getField(one, "Version")).toBe(e.version);
      expect(getField(one, "Maintainer")).toBe(e.maintainer);
      expect(Number(getField(one, "Timestamp")), e.version).toBe(e.timestamp);
    }
  });

  const entry = (
    header: string,
    trailer = " -- Jane Doe <jane@example.org>  Mon, 04 Mar 2024 10:11:12 +0100",
  ) => `${header}\n\n  * Change.\n\n${trailer}\n`;

  it.each([
    ["", 1, "end of the file where expected first heading"],
    ["\n\n", 3, "end of the file where expected first heading"],
    [
      "hello (1.0-1) unstable; urgency=low\n\n  * Change.\n",
      4,
      "end of the file where expected more change data or trailer",
    ],
    [
      "hello (1.0-1) unstable; urgency=low\n\n -- J <j@x.org>  Mon, 04 Mar 2024 10:11:12 +0100\n",
      3,
      "found a trailer where expected start of change data",
    ],
    [entry("hello 1.0-1 unstable; urgency=low"), 1, "badly formatted heading line"],
    [entry("hello (1.0-1) unstable urgency=low"), 1, "badly formatted heading line"],
    [entry("Hello (1.0-1) unstable; urgency=low"), 1, "invalid source package name"],
    [entry("hello (a1.0-1) unstable; urgency=low"), 1, "must start with a digit"],
    [entry("hello (1.0-1) unstable; urgency"), 1, "bad key=value"],
    [entry("hello (1.0-1) unstable; urgency=low, urgency=high"), 1, "repeated key Urgency"],
    [entry("hello (1.0-1) unstable; urgency=(low)"), 1, "badly formatted urgency value"],
    [entry("hello (1.0-1) unstable; binary-only=no"), 1, "binary-only must be 'yes'"],
    [
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe <jane@example.org>Mon, 04 Mar 2024 10:11:12 +0100",
      ),
      5,
      "badly formatted trailer",
    ],
    [
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe jane@example.org  Mon, 04 Mar 2024 10:11:12 +0100",
      ),
      5,
      "badly formatted trailer",
    ],
    [
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe <jane@example.org>  Mon, 04 Mar 2024 10:11:12",
      ),
      5,
      "badly formatted trailer",
    ],
    [
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe <jane@example.org>  Mon, 04 March 2024 10:11:12 +0100",
      ),
      5,
      "invalid month",
    ],
    [
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe <jane@example.org>  Xyz, 04 Mar 2024 10:11:12 +0100",
      ),
      5,
      "invalid week day",
    ],
    [
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe <jane@example.org>  Fri, 30 Feb 2024 10:11:12 +0100",
      ),
      5,
      "invalid date",
    ],
    [
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe <jane@example.org>  Fri, 01 Feb 2024 25:11:12 +0100",
      ),
      5,
      "invalid date",
    ],
    [
      entry("hello (1.0-1) unstable; urgency=low", " -- <jane@example.org>  Mon, 04 Mar 2024 10:11:12 +0100"),
      5,
      "badly formatted trailer",
    ],
    ["hello (1.0-1) unstable; urgency=low\n\n * One space only.\n", 3, "unrecognized line"],
    ["hello (1.0-1) unstable; urgency=low\n\n  * Change.\nnot indented\n", 4, "badly formatted heading line"],
    [
      entry("hello (1.0-1) unstable; urgency=low") + "  * stray change after the trailer\n",
      6,
      "found change data where expected next heading",
    ],
    [
      entry("hello (1.0-1) unstable; urgency=low") +
        "hello (0.9-1) unstable; urgency=low\nhello (0.8-1) unstable; urgency=low\n",
      7,
      "found a heading where expected start of change data",
    ],
  ])("refuses broken changelog %#, naming line %i", (text, line, message) => {
    const err = expectDebianErrorSync(() => parseChangelog(text), "CHANGELOG_INVALID");
    expect(err.message).toContain(`debian/changelog, line ${line}:`);
    expect(err.message).toContain(message);
  });

  it("accepts one blank before the date (dpkg only warns) and skips RCS keywords and comments", () => {
    const text =
      "# comment\n$Id: x $\n" +
      entry(
        "hello (1.0-1) unstable; urgency=low",
        " -- Jane Doe <jane@example.org> Mon, 04 Mar 2024 10:11:12 +0100",
      );
    expect(parseChangelog(text)[0]?.maintainerEmail).toBe("jane@example.org");
  });

  it("refuses an oversized changelog", () => {
    const err = expectDebianErrorSync(
      () => parseChangelog("x".repeat(2000), { maxBytes: 1000, source: "big/changelog" }),
      "CHANGELOG_INVALID",
    );
    expect(err.message).toBe("big/changelog is 2000 bytes, over the limit of 1000");
  });
});
