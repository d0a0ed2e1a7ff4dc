/**
 * The package root is a contract: a host app pins to these names. This test lists them, so a
 * namespace added or removed is a decision seen in review, and checks that the internals stay out
 * and that errors are reachable beside their contracts.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Api from "../src/index.ts"

describe("incoming-smtp public API", () => {
  it("exports exactly the documented namespaces", () => {
    expect(Object.keys(Api).sort()).toEqual([
      "Acme", "Adapters", "Address", "Admin", "Auth", "Control", "DeliveryAdapter", "Dns", "Dsn", "Envelope",
      "Incoming", "Listener", "MailQueue", "MessageEdit", "NodeDns", "Policy", "QueueAdmin", "Queues", "Relay", "Router",
      "Rules", "SmtpReply", "Telemetry", "Verdict", "Webhook"
    ])
  })

  it("keeps internals out of the root", () => {
    for (const internal of ["Spool", "SpooledBody", "Dispatcher", "DataDir", "Backoff", "MessageId", "ReceivedHeader", "ListenerMode", "DnsCache"]) {
      expect(Object.keys(Api)).not.toContain(internal)
    }
  })

  it("puts each error beside its contract", () => {
    expect(new Api.MailQueue.MailQueueError({ reason: { _tag: "NotFound", id: "x" } })._tag).toBe("MailQueueError")
    expect(typeof Api.Listener.ListenError).toBe("function")
    expect(typeof Api.DeliveryAdapter.DeliveryError).toBe("function")
    expect(typeof Api.Router.RouterError).toBe("function")
  })

  it("gathers built-in rules, adapters and backends under one namespace each", () => {
    expect(Object.keys(Api.Rules).sort()).toEqual(["Auth", "AuthChecks", "ConnectionLimit", "Dnsbl", "Greylist", "GreylistStore", "HelloRequired", "MaxRecipients", "Milter", "RateLimiter", "Rspamd", "SizeLimit", "Spamd", "SqliteGreylistStore", "TlsRequired"])
    expect(Object.keys(Api.Adapters).sort()).toEqual(["Discard", "Effect", "Lmtp", "Maildir", "Mx", "SmtpRelay", "Webhook"])
    expect(Object.keys(Api.Queues).sort()).toEqual(["Backend", "Memory", "Postgres", "Sqlite"])
    expect(typeof Api.Webhook.Signature.verify).toBe("function")
  })
})
