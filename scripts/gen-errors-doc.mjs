// Rewrites the table of docs/errors.md from the error catalogue (run after `npm run build`,
// then `npx prettier --write docs/errors.md`). test/docs/errors-doc.test.ts checks the two agree.
import { readFileSync, writeFileSync } from "node:fs";
import { URL } from "node:url";
import { ERRORS } from "../dist/errors/catalogue.js";

const file = new URL("../docs/errors.md", import.meta.url);
const doc = readFileSync(file, "utf8");
const lines = doc.split("\n");
const start = lines.findIndex((l) => l.startsWith("| code"));
let end = start;
while (end < lines.length && lines[end].startsWith("|")) end++;
const rows = Object.entries(ERRORS).map(
  ([code, spec]) => `| \`${code}\` | ${spec.status} | ${spec.exit} | ${spec.message} |`,
);
const table = ["| code | HTTP | exit | meaning |", "| --- | --- | --- | --- |", ...rows];
writeFileSync(file, [...lines.slice(0, start), ...table, ...lines.slice(end)].join("\n"));
