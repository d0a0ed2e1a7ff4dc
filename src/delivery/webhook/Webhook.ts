/**
 * What a webhook receiver imports: the payload's shape and the signature check. The adapter
 * that sends them is `Adapters.Webhook`.
 */
export * as Payload from "./Payload.ts"
export * as Signature from "./Signature.ts"
