/**
 * `incoming-smtp/testing`: what host apps need to test against a real Incoming in-process —
 * the test server layer, the capturing adapter and a scripted SMTP client — and the dev inbox
 * (`DevInbox.layer`, with a typed `InboxClient`) for apps that send mail.
 */
export * as CapturingAdapter from "./CapturingAdapter.ts"
export * as DevInbox from "./DevInbox.ts"
export * as InboxClient from "../dev/Client.ts"
export * as SmtpClient from "./SmtpClient.ts"
export * as TestIncoming from "./TestIncoming.ts"
export { Captured } from "./CapturingAdapter.ts"
