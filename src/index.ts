/**
 * `incoming-smtp`: the public modules, one namespace per concept.
 */
export * as Incoming from "./Incoming.ts"

export * as Address from "./smtp/Address.ts"
export * as Envelope from "./smtp/Envelope.ts"
export * as ListenError from "./smtp/ListenError.ts"
export * as Listener from "./smtp/Listener.ts"
export * as ListenerOptions from "./smtp/ListenerOptions.ts"
export * as ReceivedHeader from "./smtp/ReceivedHeader.ts"
export * as SmtpReply from "./smtp/SmtpReply.ts"

export * as Relay from "./policy/Relay.ts"

export * as Spool from "./spool/Spool.ts"
export * as SpooledBody from "./spool/SpooledBody.ts"

export * as MailQueue from "./queue/MailQueue.ts"
export * as MailQueueError from "./queue/MailQueueError.ts"
export * as MemoryQueue from "./queue/MemoryQueue.ts"
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
export * as WebhookAdapter from "./delivery/WebhookAdapter.ts"

export * as Telemetry from "./telemetry/Telemetry.ts"
