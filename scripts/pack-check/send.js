// Sends one message with nodemailer (a real SMTP client) to 127.0.0.1:PORT and prints the reply.
// Usage: node send.js PORT TO TEXT
import nodemailer from "nodemailer"

const [port, to, text] = process.argv.slice(2)
if (text === undefined) throw new Error("usage: node send.js PORT TO TEXT")
const transport = nodemailer.createTransport({ host: "127.0.0.1", port: Number(port), secure: false, ignoreTLS: true })
const info = await transport.sendMail({ from: "sender@remote.test", to, subject: "pack check", text })
console.log(info.response)
