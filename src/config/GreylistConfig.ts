/**
 * Where the `greylist` rule keeps its state, decided from the config: the embedded SQLite store
 * under `data_dir`, or PostgreSQL (the queue's database, shared by the nodes) when `[queue]
 * backend = "postgres"` or the rule says `store = "postgres"`; and the load-time checks of it
 * (`problems`), which `check-config` and `serve` report alike.
 */
import type { IncomingConfig } from "./IncomingConfig.ts"
import type { PgGreylistStoreOptions } from "../policy/rules/spam/PgGreylistStore.ts"
import * as SqliteGreylistStore from "../policy/rules/spam/SqliteGreylistStore.ts"

export type GreylistStoreChoice =
  | { readonly _tag: "sqlite"; readonly dataDir: string }
  | { readonly _tag: "postgres"; readonly options: PgGreylistStoreOptions }

type GreylistPolicy = Extract<IncomingConfig["policies"][number], { readonly rule: "greylist" }>

/** The store a greylist rule uses: its `store`, else PostgreSQL exactly when the queue is there. */
export const storeOf = (p: GreylistPolicy, c: IncomingConfig): GreylistStoreChoice => {
  const kind = p.store ?? (c.queue.backend === "postgres" ? "postgres" : "sqlite")
  // Load has checked that postgres comes with the queue's url.
  return kind === "postgres" && c.queue.url !== undefined
    ? { _tag: "postgres", options: { url: c.queue.url, schema: c.queue.schema } }
    : { _tag: "sqlite", dataDir: c.data_dir }
}

/**
 * The greylist rules' store problems, as (path, message): `store = "postgres"` without the
 * PostgreSQL queue, and an embedded `greylist.db` that cannot be opened (looked at only when
 * `data_dir` itself is fine: `dataDirOk`).
 */
export const problems = (c: IncomingConfig, dataDirOk: boolean): Array<readonly [ReadonlyArray<string | number>, string]> => {
    const out: Array<readonly [ReadonlyArray<string | number>, string]> = []
    let greylistDb: string | undefined | null = null
    for (const [i, p] of c.policies.entries()) {
      if (p.rule !== "greylist") continue
      if (p.store === "postgres" && (c.queue.backend !== "postgres" || c.queue.url === undefined)) {
        out.push([["policies", i, "store"], `"postgres" shares the PostgreSQL queue's database: it needs [queue] backend = "postgres" and its url`])
        continue
      }
      if (storeOf(p, c)._tag !== "sqlite" || !dataDirOk) continue
      if (greylistDb === null) greylistDb = SqliteGreylistStore.problem(c.data_dir)
      if (greylistDb !== undefined) out.push([["policies", i], `greylist store (under data_dir): ${greylistDb}`])
    }
    return out
}
