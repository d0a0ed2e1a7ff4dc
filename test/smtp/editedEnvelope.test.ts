/**
 * The envelope after DATA-stage envelope edits (src/smtp/internal/editedEnvelope.ts), with the
 * real recipient authority (Relay) of a server owning `example.test`: edits in order, added
 * recipients checked as a RCPT from that client would be (refused ones left out, a failed lookup
 * defers the message), deletions case-insensitive and taking their DSN parameters along, the
 * sender changed (its DSN parameters replaced only when given), and the rule that left no
 * recipient named.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as MessageEdit from "../../src/policy/MessageEdit.ts"
import * as Relay from "../../src/policy/Relay.ts"
import * as EditedEnvelope from "../../src/smtp/internal/editedEnvelope.ts"

const relay = Relay.make({
  domains: ["example.test"],
  lookupRecipient: (address) => (address.startsWith("flaky@") ? Effect.fail("directory down") : Effect.succeed(!address.startsWith("nobody@"))),
  // Off-site delivery exists (an SMTP relay route), for clients allowed to relay.
  relayRoute: () => true
})
const anonymous = (address: string) => relay.checkRecipient(address, { authenticated: false, clientAddress: "192.0.2.1" })
const authenticated = (address: string) => relay.checkRecipient(address, { authenticated: true, clientAddress: "192.0.2.1" })

const start: EditedEnvelope.EnvelopeParts = {
  mailFrom: "a@sender.test",
  rcptTo: ["u@example.test", "v@example.test"],
  dsn: { ret: "FULL" },
  recipientDsn: { "u@example.test": { notify: ["NEVER"] } }
}

const edit = (rule: string, e: MessageEdit.MessageEdit) => ({ rule, edit: e as MessageEdit.EnvelopeEdit })

describe("envelope edits", () => {
  it.effect("in order: add (checked, canonical, deduplicated), delete (case-insensitive, with its DSN), change sender", () =>
    Effect.gen(function*() {
      const out = yield* EditedEnvelope.apply([
        edit("m1", MessageEdit.addRecipient("W@EXAMPLE.TEST", { notify: ["SUCCESS"] })),
        edit("m1", MessageEdit.addRecipient("x@elsewhere.test")),
        edit("m1", MessageEdit.addRecipient("nobody@example.test")),
        edit("m1", MessageEdit.addRecipient("not an address")),
        edit("m1", MessageEdit.addRecipient("v@example.test")),
        edit("m2", MessageEdit.deleteRecipient("U@Example.Test")),
        edit("m2", MessageEdit.deleteRecipient("zz@example.test")),
        edit("m2", MessageEdit.changeSender("New@Sender.TEST"))
      ], start, anonymous)
      assert.deepStrictEqual(out, {
        _tag: "Edited",
        envelope: {
          mailFrom: "New@sender.test",
          rcptTo: ["v@example.test", "W@example.test"],
          dsn: { ret: "FULL" },
          recipientDsn: { "W@example.test": { notify: ["SUCCESS"] } }
        },
        emptiedBy: undefined
      })
    }))

  it.effect("an authenticated client's filter may add a recipient off-site, as its RCPT could", () =>
    Effect.gen(function*() {
      const out = yield* EditedEnvelope.apply([edit("m", MessageEdit.addRecipient("x@elsewhere.test"))], start, authenticated)
      assert.ok(out._tag === "Edited")
      assert.deepStrictEqual(out.envelope.rcptTo, ["u@example.test", "v@example.test", "x@elsewhere.test"])
    }))

  it.effect("a lookup that fails defers the message (4xx), naming the rule", () =>
    Effect.gen(function*() {
      const out = yield* EditedEnvelope.apply([edit("m", MessageEdit.addRecipient("flaky@example.test"))], start, anonymous)
      assert.ok(out._tag === "Deferred")
      assert.strictEqual(out.rule, "m")
      assert.strictEqual(out.reply.code, 451)
    }))

  it.effect("the sender's DSN parameters are replaced when given; the null sender is allowed; no recipient left names the rule", () =>
    Effect.gen(function*() {
      const out = yield* EditedEnvelope.apply([
        edit("m", MessageEdit.changeSender("", { ret: "HDRS", envid: "e1" })),
        edit("m", MessageEdit.deleteRecipient("u@example.test")),
        edit("n", MessageEdit.deleteRecipient("v@example.test"))
      ], start, anonymous)
      assert.deepStrictEqual(out, { _tag: "Edited", envelope: { mailFrom: "", rcptTo: [], dsn: { ret: "HDRS", envid: "e1" } }, emptiedBy: "n" })
    }))

  it.effect("no edits: the envelope as it was", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* EditedEnvelope.apply([], start, anonymous), { _tag: "Edited", envelope: start, emptiedBy: undefined })
    }))
})
