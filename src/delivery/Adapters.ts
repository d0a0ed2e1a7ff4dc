/**
 * The built-in delivery adapters, one namespace for all of them: `Adapters.Maildir.layer(…)`,
 * `Adapters.Effect.make(…)`. Each provides the `DeliveryAdapter` contract; `Router` combines them.
 */
export * as Discard from "./DiscardAdapter.ts"
export * as Effect from "./EffectAdapter.ts"
export * as Lmtp from "./LmtpAdapter.ts"
export * as Maildir from "./MaildirAdapter.ts"
export * as Mx from "./MxAdapter.ts"
export * as SmtpRelay from "./SmtpRelayAdapter.ts"
export * as Webhook from "./webhook/WebhookAdapter.ts"
