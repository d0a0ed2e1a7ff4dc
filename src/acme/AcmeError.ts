/**
 * Why an issuance failed. None of these stops the server: the manager keeps the certificate it
 * has, logs the reason, counts it, and tries again later (see CertManager.ts).
 */
import { Data } from "effect"

export type AcmeErrorReason =
  /** The challenge responder could not listen (port taken, no privilege for port 80/443). */
  | { readonly _tag: "Bind"; readonly address: string; readonly detail: string }
  /** The CA could not be reached or refused a request (down, rate limit, bad account). */
  | { readonly _tag: "Ca"; readonly detail: string }
  /** The CA could not validate the challenge (DNS, firewall, proxy not forwarding). */
  | { readonly _tag: "Challenge"; readonly detail: string }
  /** The key or certificate could not be stored under the data dir. */
  | { readonly _tag: "Storage"; readonly detail: string }

export class AcmeError extends Data.TaggedError("AcmeError")<{
  readonly domain: string
  readonly reason: AcmeErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    switch (r._tag) {
      case "Bind":
        return `certificate for ${this.domain}: cannot listen on ${r.address} for the challenge: ${r.detail}`
      case "Ca":
        return `certificate for ${this.domain}: the CA: ${r.detail}`
      case "Challenge":
        return `certificate for ${this.domain}: validation failed: ${r.detail}`
      case "Storage":
        return `certificate for ${this.domain}: cannot store it: ${r.detail}`
    }
  }

  /** The outcome label of the renewal metric. */
  get outcome(): string {
    return this.reason._tag === "Ca" ? "ca_error" : this.reason._tag === "Challenge" ? "challenge_failed" : this.reason._tag === "Bind" ? "bind_failed" : "storage_failed"
  }
}

export const detailOf = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))
