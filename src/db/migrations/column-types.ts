import type { ColumnDefinitionBuilder } from "kysely";
import type { Dialect } from "../database.js";

/**
 * The column types every migration uses, per dialect: `id` for a table's own key (with `pk`,
 * auto-incrementing on both), `big` for other 64-bit integers (ids of other rows, epoch ms).
 */
export function columnTypes(dialect: Dialect): {
  id: "bigserial" | "integer";
  big: "bigint" | "integer";
  pk: (c: ColumnDefinitionBuilder) => ColumnDefinitionBuilder;
} {
  return {
    id: dialect === "postgres" ? "bigserial" : "integer",
    big: dialect === "postgres" ? "bigint" : "integer",
    pk: (c) => (dialect === "sqlite" ? c.primaryKey().autoIncrement() : c.primaryKey()),
  };
}
