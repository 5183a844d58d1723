import { Logger } from "graphile-worker";

/**
 * A graphile-worker logger that keeps stdout clean: graphile-worker logs every job at info level,
 * so only warnings and errors are written, to stderr.
 */
export const quietLogger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning")
    process.stderr.write(`graphile-worker ${level}: ${message}\n`);
});
