/**
 * Reclaim.compact: the one memory-reducing GC `incoming serve` runs after start-up must shrink
 * the young generation start-up grew (that is most of the RSS it saves), not only collect it.
 */
import { getHeapSpaceStatistics } from "node:v8"
import { assert, describe, it } from "@effect/vitest"
import * as Reclaim from "../../src/internal/reclaim.ts"

const newSpace = (): number => getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0

describe("Reclaim.compact", () => {
  it("shrinks a grown young generation", () => {
    Reclaim.enable()
    // Short-lived garbage, as module loading makes: V8 grows the young generation for it.
    let keep: Array<{ readonly i: number; readonly s: string }> = []
    for (let i = 0; i < 2_000_000; i++) {
      keep.push({ i, s: `x${i}` })
      if (keep.length > 100_000) keep = []
    }
    keep = []
    const grown = newSpace()
    assert.isAbove(grown, 4 * 1024 * 1024, "the churn should have grown the young generation")
    Reclaim.compact()
    const after = newSpace()
    assert.isBelow(after, grown / 4, `young generation ${grown} → ${after} bytes`)
  })
})
