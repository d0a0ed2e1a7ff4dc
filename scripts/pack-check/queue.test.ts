// The installed queue conformance kit (`incoming-smtp/testing/queue-conformance`) against the
// installed SQLite queue, whose writer thread then loads from the package's compiled dist/.
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer } from "effect"
import { Queues } from "incoming-smtp"
import { conformance } from "incoming-smtp/testing/queue-conformance"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "incoming-pack-queue-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

conformance("sqlite (installed)", (options) =>
  Layer.unwrap(Effect.map(tempDir, (dataDir) => Queues.Sqlite.layer({ ...options, dataDir }))))
