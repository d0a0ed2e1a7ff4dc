/**
 * Why a listener could not start. Each reason names the listener and says what to fix.
 */
import { Data } from "effect"

export type ListenErrorReason =
  | { readonly _tag: "AddressInUse" }
  | { readonly _tag: "PermissionDenied" }
  | { readonly _tag: "AddressNotAvailable" }
  | { readonly _tag: "BadCertificate"; readonly detail: string }
  | { readonly _tag: "Failed"; readonly detail: string }

export class ListenError extends Data.TaggedError("ListenError")<{
  readonly listener: string
  readonly address: string
  readonly reason: ListenErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    const where = `listener ${this.listener} (${this.address})`
    switch (r._tag) {
      case "AddressInUse":
        return `${where}: address already in use (another process listens there)`
      case "PermissionDenied":
        return `${where}: permission denied (ports below 1024 need privileges)`
      case "AddressNotAvailable":
        return `${where}: address not available on this host`
      case "BadCertificate":
        return `${where}: bad TLS certificate or key: ${r.detail}`
      case "Failed":
        return `${where}: ${r.detail}`
    }
  }
}

export const fromBindError = (listener: string, address: string, cause: unknown): ListenError => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : ""
  const reason: ListenErrorReason = code === "EADDRINUSE"
    ? { _tag: "AddressInUse" }
    : code === "EACCES"
    ? { _tag: "PermissionDenied" }
    : code === "EADDRNOTAVAIL"
    ? { _tag: "AddressNotAvailable" }
    : { _tag: "Failed", detail: cause instanceof Error ? cause.message : String(cause) }
  return new ListenError({ listener, address, reason, cause })
}
