/**
 * `incoming-smtp`: what a host app pins to, one namespace per concept. Errors live with their
 * contracts (`MailQueue.MailQueueError`, `DeliveryAdapter.DeliveryError`, `Listener.ListenError`,
 * `Router.RouterError`); built-in rules, adapters and queue backends each sit under one namespace.
 * Internals (spool, dispatcher, data dir, backoff, …) are not exported: they change freely.
 */
export * as Control from "./Control.ts"
export * as Incoming from "./Incoming.ts"

export * as Address from "./protocol/Address.ts"
export * as Dsn from "./protocol/Dsn.ts"
export * as Envelope from "./protocol/Envelope.ts"
export * as SmtpReply from "./protocol/SmtpReply.ts"

export * as Listener from "./smtp/Listener.ts"

export * as MessageEdit from "./policy/MessageEdit.ts"
export * as Policy from "./policy/Policy.ts"
export * as Relay from "./policy/Relay.ts"
export * as Rules from "./policy/Rules.ts"
export * as Verdict from "./policy/Verdict.ts"

export * as Auth from "./auth/Auth.ts"

export * as Dns from "./dns/Dns.ts"
export * as NodeDns from "./dns/NodeDns.ts"

export * as MailQueue from "./queue/MailQueue.ts"
export * as QueueAdmin from "./queue/QueueAdmin.ts"
export * as Queues from "./queue/Queues.ts"

export * as Adapters from "./delivery/Adapters.ts"
export * as DeliveryAdapter from "./delivery/DeliveryAdapter.ts"
export * as Router from "./delivery/Router.ts"
export * as Webhook from "./delivery/webhook/Webhook.ts"

export * as Acme from "./acme/Acme.ts"
export * as Admin from "./admin/Admin.ts"
export * as Telemetry from "./telemetry/Telemetry.ts"
