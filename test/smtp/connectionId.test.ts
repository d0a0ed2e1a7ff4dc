/**
 * Connection ids (smtp/internal/proxy.ts): made from a pool of random bytes rather than a
 * `randomBytes` call per connection, so the format and the spread are checked here.
 */
import { assert, describe, it } from "@effect/vitest"
import { connectionId } from "../../src/smtp/internal/proxy.ts"

describe("connectionId", () => {
  it("is 16 base-32 characters, as smtp-server's ids, and does not repeat", () => {
    const ids = new Set<string>()
    // More than one pool's worth (4096 bytes = 409 ids), so refills are crossed too.
    for (let i = 0; i < 5_000; i++) {
      const id = connectionId()
      assert.match(id, /^[0-9a-v]{16}$/)
      ids.add(id)
    }
    assert.strictEqual(ids.size, 5_000)
  })

  it("uses every digit in every position (80 random bits, none stuck)", () => {
    const seen = Array.from({ length: 16 }, () => new Set<string>())
    for (let i = 0; i < 5_000; i++) {
      const id = connectionId()
      for (let p = 0; p < 16; p++) seen[p]!.add(id[p]!)
    }
    for (const digits of seen) assert.strictEqual(digits.size, 32)
  })
})
