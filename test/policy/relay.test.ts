/**
 * Recipient authority, table-driven: local / non-local recipient × authenticated or not ×
 * trusted network or not → accepted or 554 5.7.1; relaying only with a route off-site (else
 * 550 5.7.1, never a local mailbox); unknown mailboxes 550 5.1.1 when a list or lookup is
 * configured; a failing lookup is a 4xx; the host-app local-domain Effect; and
 * `Relay.make({ domains })` as before.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { isDecided } from "../../src/internal/decided.ts"
import * as Relay from "../../src/policy/Relay.ts"

const relay = Relay.make({
  domains: ["example.org"],
  trustedNetworks: ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"],
  relayRoute: () => true
})

describe("Relay", () => {
  const table: ReadonlyArray<[string, boolean, string, "Local" | "Relay" | 554]> = [
    ["bob@example.org", false, "192.0.2.1", "Local"],
    ["bob@example.org", true, "192.0.2.1", "Local"],
    ["bob@example.org", false, "10.1.2.3", "Local"],
    ["bob@EXAMPLE.org", true, "10.1.2.3", "Local"],
    ["x@elsewhere.test", false, "192.0.2.1", 554],
    ["x@elsewhere.test", true, "192.0.2.1", "Relay"],
    ["x@elsewhere.test", false, "10.1.2.3", "Relay"],
    ["x@elsewhere.test", false, "::ffff:10.1.2.3", "Relay"],
    ["x@elsewhere.test", false, "2001:db8::5", "Relay"],
    ["x@elsewhere.test", false, "2001:db9::5", 554],
    ["x@elsewhere.test", false, "127.0.0.1", "Relay"],
    ["x@elsewhere.test", false, "127.0.0.2", 554],
    ["x@elsewhere.test", true, "10.1.2.3", "Relay"]
  ]
  for (const [rcpt, authenticated, ip, expected] of table) {
    it.effect(`${rcpt} authenticated=${authenticated} from ${ip} → ${expected}`, () =>
      Effect.gen(function*() {
        const d = yield* relay.checkRecipient(rcpt, { authenticated, clientAddress: ip })
        if (expected === 554) {
          assert.strictEqual(d._tag, "Denied")
          assert.deepStrictEqual(Relay.replyOf(d), { code: 554, enhanced: "5.7.1", text: "Relay access denied" })
        } else {
          assert.strictEqual(d._tag, expected)
          assert.isUndefined(Relay.replyOf(d))
        }
      }))
  }

  it.effect("Relay.make({ domains }) keeps its behaviour: no networks, bare local part, bad syntax", () =>
    Effect.gen(function*() {
      const plain = Relay.make({ domains: ["a.test", "b.test"] })
      assert.deepStrictEqual(yield* plain.checkRecipient("postmaster", { authenticated: false }), { _tag: "Local", address: "postmaster@a.test" })
      assert.strictEqual((yield* plain.checkRecipient("u@b.test", { authenticated: false }))._tag, "Local")
      assert.strictEqual((yield* plain.checkRecipient("u@c.test", { authenticated: false }))._tag, "Denied")
      assert.strictEqual((yield* plain.checkRecipient("u@c.test", { authenticated: false, clientAddress: "10.0.0.1" }))._tag, "Denied")
      // Allowed to relay, but with nowhere to relay to (no `relayRoute`): refused, never filed locally.
      assert.deepStrictEqual(Relay.replyOf(yield* plain.checkRecipient("u@c.test", { authenticated: true })), Relay.noRelayRoute)
      assert.strictEqual((yield* plain.checkRecipient("not an address", { authenticated: true }))._tag, "BadAddress")
    }))

  it.effect("relaying needs a route off-site for the recipient: otherwise 550 5.7.1; unauthorised clients still get 554", () =>
    Effect.gen(function*() {
      const r = Relay.make({ domains: ["example.org"], trustedNetworks: ["10.0.0.0/8"], relayRoute: (a) => a.endsWith("@partner.test") })
      const trusted = { authenticated: false, clientAddress: "10.0.0.1" }
      assert.deepStrictEqual(yield* r.checkRecipient("x@partner.test", trusted), { _tag: "Relay", address: "x@partner.test" })
      assert.deepStrictEqual(Relay.replyOf(yield* r.checkRecipient("someone@gmail.test", trusted)), {
        code: 550,
        enhanced: "5.7.1",
        text: "Relaying not available: no route to other domains here"
      })
      assert.deepStrictEqual(Relay.replyOf(yield* r.checkRecipient("someone@gmail.test", { authenticated: true })), Relay.noRelayRoute)
      assert.strictEqual(Relay.replyOf(yield* r.checkRecipient("x@partner.test", { authenticated: false, clientAddress: "192.0.2.1" }))?.code, 554)
      assert.strictEqual((yield* r.checkRecipient("bob@example.org", trusted))._tag, "Local")
    }))

  it.effect("a recipient list / lookup: unknown mailbox 550 5.1.1, postmaster always accepted, lookup failure 451", () =>
    Effect.gen(function*() {
      const r = Relay.make({
        domains: ["example.org"],
        recipients: ["Alice@example.org"],
        lookupRecipient: (a) => a.startsWith("broken@") ? Effect.fail("db down") : Effect.succeed(a === "carol@example.org")
      })
      const anon = { authenticated: false }
      assert.strictEqual((yield* r.checkRecipient("alice@example.org", anon))._tag, "Local")
      assert.strictEqual((yield* r.checkRecipient("carol@example.org", anon))._tag, "Local")
      assert.strictEqual((yield* r.checkRecipient("postmaster@example.org", anon))._tag, "Local")
      const unknown = yield* r.checkRecipient("mallory@example.org", { authenticated: true })
      assert.deepStrictEqual(Relay.replyOf(unknown), { code: 550, enhanced: "5.1.1", text: "No such user here" })
      const failed = yield* r.checkRecipient("broken@example.org", anon)
      assert.strictEqual(Relay.replyOf(failed)?.code, 451)
    }))

  it.effect("host-app local domains, with a failing lookup becoming 451 (never 5xx)", () =>
    Effect.gen(function*() {
      const r = Relay.make({
        domains: ["example.org"],
        localDomain: (d) => d === "down.test" ? Effect.fail(new Error("timeout")) : Effect.succeed(d.endsWith(".hosted.test"))
      })
      assert.strictEqual((yield* r.checkRecipient("u@cust.hosted.test", { authenticated: false }))._tag, "Local")
      assert.strictEqual(Relay.replyOf(yield* r.checkRecipient("u@other.test", { authenticated: false }))?.code, 554)
      assert.strictEqual(Relay.replyOf(yield* r.checkRecipient("u@down.test", { authenticated: false }))?.code, 451)
    }))

  it("decides from its lists without an effect to run; only a host lookup is one", () => {
    // The session answers RCPT without a fiber when the decision is already an Exit.
    const anon = { authenticated: false, clientAddress: "192.0.2.1" }
    for (const rcpt of ["u@example.org", "u@elsewhere.test", "bare", "not an address"]) {
      assert.isTrue(isDecided(relay.checkRecipient(rcpt, anon)), rcpt)
    }
    const looked = Relay.make({ domains: ["example.org"], lookupRecipient: () => Effect.succeed(true) })
    assert.isTrue(isDecided(looked.checkRecipient("postmaster@example.org", anon)), "postmaster needs no lookup")
    assert.isFalse(isDecided(looked.checkRecipient("alice@example.org", anon)), "a mailbox lookup runs as an effect")
    const hosted = Relay.make({ domains: ["example.org"], localDomain: () => Effect.succeed(false) })
    assert.isFalse(isDecided(hosted.checkRecipient("u@other.test", anon)), "a domain lookup runs as an effect")
    assert.isTrue(isDecided(hosted.checkRecipient("u@example.org", anon)), "a listed domain does not")
  })

  it.effect("a malformed trusted network is a typed configuration error", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(Relay.parseNetworks(["10.0.0.0/8", "10.0.0/33"]))
      assert.strictEqual(e._tag, "RelayConfigError")
      assert.include(e.message, "10.0.0/33")
      assert.throws(() => Relay.make({ domains: ["a.test"], trustedNetworks: ["nope"] }))
    }))
})

describe("Relay: configured names compare in canonical form", () => {
  it.effect("a U-label domain in the configuration is ours in both spellings; a quoted mailbox matches its canonical form", () =>
    Effect.gen(function*() {
      const r = Relay.make({ domains: ["Bücher.example"], recipients: ['"john"@bücher.example', '"a b"@Bücher.example'] })
      assert.strictEqual(r.primaryDomain, "xn--bcher-kva.example")
      assert.isTrue(r.isLocalDomain("xn--bcher-kva.example"))
      assert.isTrue(r.isLocalDomain("bücher.example"))
      for (const rcpt of ["john@xn--bcher-kva.example", '"a b"@xn--bcher-kva.example', "JOHN@xn--bcher-kva.example"]) {
        assert.deepStrictEqual((yield* r.checkRecipient(rcpt, { authenticated: false }))._tag, "Local", rcpt)
      }
      assert.deepStrictEqual((yield* r.checkRecipient("jane@xn--bcher-kva.example", { authenticated: false }))._tag, "Denied")
    }))
})
