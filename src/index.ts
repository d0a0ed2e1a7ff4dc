/**
 * `incoming-smtp`: the public modules, one namespace per concept.
 */
export * as Control from "./Control.ts"
export * as Incoming from "./Incoming.ts"

export * as Address from "./smtp/Address.ts"
export * as Envelope from "./smtp/Envelope.ts"
export * as ListenError from "./smtp/ListenError.ts"
export * as Listener from "./smtp/Listener.ts"
export * as ListenerOptions from "./smtp/ListenerOptions.ts"
export * as ReceivedHeader from "./smtp/ReceivedHeader.ts"
export * as SmtpReply from "./smtp/SmtpReply.ts"

export * as ConnectionLimit from "./policy/rules/ConnectionLimit.ts"
export * as HelloRequired from "./policy/rules/HelloRequired.ts"
export * as MaxRecipients from "./policy/rules/MaxRecipients.ts"
export * as Policy from "./policy/Policy.ts"
export * as RateLimiter from "./policy/rules/RateLimiter.ts"
export * as Relay from "./policy/Relay.ts"
export * as SizeLimit from "./policy/rules/SizeLimit.ts"
export * as TlsRequired from "./policy/rules/TlsRequired.ts"
export * as Verdict from "./policy/Verdict.ts"

export * as AuthHandler from "./auth/AuthHandler.ts"
export * as ListenerMode from "./auth/ListenerMode.ts"
export * as UserFile from "./auth/UserFile.ts"
export * as UserStore from "./auth/UserStore.ts"

export * as Spool from "./spool/Spool.ts"
export * as SpooledBody from "./spool/SpooledBody.ts"

export * as MailQueue from "./queue/MailQueue.ts"
export * as MailQueueError from "./queue/MailQueueError.ts"
export * as MemoryQueue from "./queue/MemoryQueue.ts"
export * as SqliteQueue from "./queue/SqliteQueue.ts"
export * as MessageId from "./queue/MessageId.ts"

export * as Backoff from "./delivery/Backoff.ts"
export * as DeliveryAdapter from "./delivery/DeliveryAdapter.ts"
export * as Dispatcher from "./delivery/Dispatcher.ts"
export * as DiscardAdapter from "./delivery/DiscardAdapter.ts"
export * as EffectAdapter from "./delivery/EffectAdapter.ts"
export * as LmtpAdapter from "./delivery/LmtpAdapter.ts"
export * as MaildirAdapter from "./delivery/MaildirAdapter.ts"
export * as Router from "./delivery/Router.ts"
export * as SmtpRelayAdapter from "./delivery/SmtpRelayAdapter.ts"
export * as WebhookAdapter from "./delivery/webhook/WebhookAdapter.ts"
export * as WebhookPayload from "./delivery/webhook/Payload.ts"
export * as WebhookSignature from "./delivery/webhook/Signature.ts"

export * as Admin from "./telemetry/Admin.ts"
export * as Telemetry from "./telemetry/Telemetry.ts"
export * as Tracing from "./telemetry/Tracing.ts"
