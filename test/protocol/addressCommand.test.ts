/**
 * The MAIL/RCPT command parser on its own: the reply each malformed line gets, the path limit,
 * UTF-8 and SMTPUTF8, ESMTP and DSN parameters (xtext included) — and a bounded property test
 * that feeds it random and grammar-built lines. The same behaviour over a socket is in
 * test/smtp/addresses.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Result, Schema } from "effect"
import * as Address from "../../src/protocol/Address.ts"
import * as AddressCommand from "../../src/protocol/AddressCommand.ts"
import * as Dsn from "../../src/protocol/Dsn.ts"

const replyOf = <A>(r: Result.Result<A, { code: number; enhanced: string; text: string }>): string =>
  Result.isSuccess(r) ? "ok" : `${r.failure.code} ${r.failure.enhanced}`

describe("AddressCommand.parseMail", () => {
  it("answers each line with the RFC's reply", () => {
    const rows: ReadonlyArray<readonly [string | Buffer, string]> = [
      ["MAIL FROM:<a@example.org>", "ok"],
      ["mail from:<a@example.org>", "ok"],
      ["MAIL FROM: <a@example.org>", "ok"],
      ["MAIL FROM:<>", "ok"],
      ['MAIL FROM:<"john smith"@example.org>', "ok"],
      ["MAIL FROM:<@relay.example,@b.example:a@example.org>", "ok"],
      ["MAIL FROM:<a@example.org>  SIZE=100   BODY=8BITMIME", "ok"],
      ["MAIL FROM:<a@example.org> size=100 body=7bit", "ok"],
      ["MAIL FROM:<jörg@example.org> SMTPUTF8", "ok"],
      ["MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ314159+2B1", "ok"],
      // Malformed commands and paths.
      ["MAIL <a@example.org>", "501 5.5.2"],
      ["MAIL FROM:a@example.org", "501 5.1.7"],
      ["MAIL FROM:<a@example.org", "501 5.1.7"],
      ["MAIL FROM:<a@example.org>junk", "501 5.5.2"],
      ["MAIL FROM:<john smith@example.org>", "501 5.1.7"],
      ["MAIL FROM:<postmaster>", "501 5.1.7"],
      ["MAIL FROM:<@relay.example:>", "501 5.1.7"],
      ["MAIL FROM:<@bad_relay:a@example.org>", "501 5.1.7"],
      // UTF-8: only valid, only under SMTPUTF8.
      ["MAIL FROM:<jörg@example.org>", "553 5.6.7"],
      [Buffer.concat([Buffer.from("MAIL FROM:<a"), Buffer.from([0xff, 0xfe]), Buffer.from("@example.org>")]), "553 5.6.7"],
      [Buffer.concat([Buffer.from("MAIL FROM:<a"), Buffer.from([0xff, 0xfe]), Buffer.from("@example.org> SMTPUTF8")]), "501 5.1.7"],
      // Parameters.
      ["MAIL FROM:<a@example.org> REQUIRETLS", "555 5.5.4"],
      ["MAIL FROM:<a@example.org> X-UNKNOWN=1", "555 5.5.4"],
      ["MAIL FROM:<a@example.org> SIZE=1 SIZE=2", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> SIZE=", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> SIZE", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> SIZE=12x", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> BODY=BINARYMIME", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> SMTPUTF8=yes", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> -BAD", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> RET=ALL", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> RET", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> ENVID=a+zz", "501 5.5.4"],
      ["MAIL FROM:<a@example.org> ENVID=a+0D+0Ab", "501 5.5.4"],
      [`MAIL FROM:<a@example.org> ENVID=${"x".repeat(101)}`, "501 5.5.4"],
      ["MAIL FROM:<a@example.org> ENVID=é SMTPUTF8", "501 5.5.4"]
    ]
    for (const [line, expected] of rows) assert.strictEqual(replyOf(AddressCommand.parseMail(line)), expected, String(line))
  })

  it("takes a 256-octet path (254-octet mailbox) and refuses 257", () => {
    const domain = (n: number) => `${Array.from({ length: Math.floor(n / 50) }, () => "d".repeat(49)).join(".")}.${"e".repeat(n % 50 === 0 ? 1 : n % 50)}`
    const mailbox = (octets: number) => {
      const local = "l".repeat(64)
      let d = domain(octets - 65)
      while (Buffer.byteLength(`${local}@${d}`) > octets) d = d.slice(1)
      while (Buffer.byteLength(`${local}@${d}`) < octets) d = `x${d}`
      return `${local}@${d}`
    }
    const at254 = mailbox(254)
    assert.strictEqual(Buffer.byteLength(`<${at254}>`), 256)
    const ok = AddressCommand.parseMail(`MAIL FROM:<${at254}>`)
    assert.strictEqual(replyOf(ok), "ok")
    assert.strictEqual(Result.isSuccess(ok) && ok.success.address, at254)
    const over = AddressCommand.parseMail(`MAIL FROM:<${mailbox(255)}>`)
    assert.strictEqual(replyOf(over), "501 5.1.7")
    assert.include(Result.isFailure(over) ? over.failure.text : "", "257 octets")
  })

  it("keeps the parameters, the canonical sender, SMTPUTF8 and the decoded DSN values", () => {
    const r = AddressCommand.parseMail('MAIL FROM:<"Jörg"@Example.ORG> SMTPUTF8 size=2000 RET=full ENVID=id+2Bone+3D1')
    assert.isTrue(Result.isSuccess(r))
    if (!Result.isSuccess(r)) return
    assert.strictEqual(r.success.address, "Jörg@example.org")
    assert.isTrue(r.success.smtpUtf8)
    assert.strictEqual(r.success.size, 2000)
    assert.deepStrictEqual(r.success.dsn, { ret: "FULL", envid: "id+one=1" })
    assert.deepStrictEqual([...r.success.params.keys()], ["SMTPUTF8", "SIZE", "RET", "ENVID"])
  })
})

describe("AddressCommand.parseRcpt", () => {
  it("answers each line with the RFC's reply", () => {
    const plain = { smtpUtf8: false }
    const utf8 = { smtpUtf8: true }
    const rows: ReadonlyArray<readonly [string | Buffer, { smtpUtf8: boolean }, string]> = [
      ["RCPT TO:<u@example.org>", plain, "ok"],
      ["RCPT TO:<Postmaster>", plain, "ok"],
      ["RCPT TO:<\"a>b\"@example.org>", plain, "ok"],
      ["RCPT TO:<u@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40example.org", plain, "ok"],
      ["RCPT TO:<u@example.org> NOTIFY=never", plain, "ok"],
      ["RCPT TO:<>", plain, "501 5.1.3"],
      ["RCPT TO:u@example.org", plain, "501 5.1.3"],
      ["RCPT TO <u@example.org>", plain, "501 5.5.2"],
      ["RCPT TO:<us..er@example.org>", plain, "501 5.1.3"],
      ["RCPT TO:<用户@例子.测试>", plain, "553 5.6.7"],
      ["RCPT TO:<用户@例子.测试>", utf8, "ok"],
      [Buffer.concat([Buffer.from("RCPT TO:<a"), Buffer.from([0xc3]), Buffer.from("@example.org>")]), utf8, "501 5.1.3"],
      ["RCPT TO:<u@example.org> SIZE=1", plain, "555 5.5.4"],
      ["RCPT TO:<u@example.org> NOTIFY=NEVER,SUCCESS", plain, "501 5.5.4"],
      ["RCPT TO:<u@example.org> NOTIFY=SOMETIMES", plain, "501 5.5.4"],
      ["RCPT TO:<u@example.org> NOTIFY=DELAY,DELAY", plain, "501 5.5.4"],
      ["RCPT TO:<u@example.org> NOTIFY", plain, "501 5.5.4"],
      ["RCPT TO:<u@example.org> ORCPT=u@example.org", plain, "501 5.5.4"],
      ["RCPT TO:<u@example.org> ORCPT=rfc822;", plain, "501 5.5.4"],
      ["RCPT TO:<u@example.org> ORCPT=rfc822;a+0Ab", plain, "501 5.5.4"],
      [`RCPT TO:<u@example.org> ORCPT=rfc822;${"a".repeat(500)}`, plain, "501 5.5.4"],
      ["RCPT TO:<u@example.org> NOTIFY=SUCCESS NOTIFY=DELAY", plain, "501 5.5.4"]
    ]
    for (const [line, options, expected] of rows) {
      assert.strictEqual(replyOf(AddressCommand.parseRcpt(line, options)), expected, String(line))
    }
  })

  it("keeps NOTIFY and the xtext-decoded ORCPT", () => {
    const r = AddressCommand.parseRcpt("RCPT TO:<U@Example.org> NOTIFY=failure,delay ORCPT=rfc822;Jo+2Bx+40example.org", { smtpUtf8: false })
    assert.isTrue(Result.isSuccess(r))
    if (!Result.isSuccess(r)) return
    assert.strictEqual(r.success.address, "U@example.org")
    assert.deepStrictEqual(r.success.dsn, { notify: ["FAILURE", "DELAY"], orcpt: { type: "rfc822", address: "Jo+x@example.org" } })
  })
})

describe("Dsn xtext", () => {
  it("decodes and encodes (RFC 3461 §4)", () => {
    assert.deepStrictEqual(Dsn.decodeXtext("a+2Bb+3D"), Uint8Array.from(Buffer.from("a+b=")))
    assert.isUndefined(Dsn.decodeXtext("a+2"))
    assert.isUndefined(Dsn.decodeXtext("a=b"))
    assert.isUndefined(Dsn.decodeXtext("a b"))
    assert.strictEqual(Dsn.encodeXtext("a+b=c d\u00e9"), "a+2Bb+3Dc+20d+C3+A9")
    for (const text of ["", "plain", "a+b=c", "jörg@example.org", "tab\there"]) {
      assert.strictEqual(Buffer.from(Dsn.decodeXtext(Dsn.encodeXtext(text))!).toString("utf8"), text)
    }
  })
})

// --- Property tests (bounded) -------------------------------------------------------------

const chars = (s: string) => Arbitrary.schema(Schema.Literals([...s]))
const joined = <A extends string>(item: Arbitrary.Arbitrary<A>, minLength: number, maxLength: number) =>
  Arbitrary.array(item, { minLength, maxLength }).pipe(Arbitrary.map((xs) => xs.join("")))

const atext = chars("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
const qtext = chars(" !#$%&'()*+,-./0123456789:;<=>?@ABCXYZ[]^_`abcxyz{|}~\\\"é用")
const ldh = chars("abcdefghijklmnopqrstuvwxyz0123456789-")
const alnum = chars("abcdefghijklmnopqrstuvwxyz0123456789")

const atom = joined(atext, 1, 8)
const dotString = Arbitrary.array(atom, { minLength: 1, maxLength: 4 }).pipe(Arbitrary.map((xs) => xs.join(".")))
/** Quoted-string content as meant (any qtext or `"`/`\`, escaped when written). */
const quotedContent = joined(qtext, 0, 12)
const label = Arbitrary.all([alnum, joined(ldh, 0, 10), alnum]).pipe(
  Arbitrary.map(([a, mid, z]) => `${a}${mid}${z}`.replace(/-+$/, "")),
  Arbitrary.filter((l) => l.length > 0 && !l.endsWith("-"))
)
const domain = Arbitrary.array(label, { minLength: 1, maxLength: 4 }).pipe(Arbitrary.map((xs) => xs.join(".")))

/** A mailbox built from the grammar, with the local part it means. */
const mailbox = Arbitrary.all([Arbitrary.schema(Schema.Boolean), dotString, quotedContent, domain]).pipe(
  Arbitrary.map(([quoted, dot, content, d]) =>
    quoted
      ? { written: `"${content.replace(/["\\]/g, "\\$&")}"@${d}`, local: content, domain: d.toLowerCase() }
      : { written: `${dot}@${d}`, local: dot, domain: d.toLowerCase() }
  )
)

const byte = Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 255 })))
const noise = Arbitrary.array(byte, { maxLength: 80 }).pipe(Arbitrary.map((bytes) => Buffer.from(bytes)))
const controlOrSpecial = chars("\u0000\u0001\t\r\n \u007f<>()[]\\,;:\"@")

const checkOptions = { runs: 400 }

describe("AddressCommand: properties", () => {
  it.prop("every mailbox built from the grammar is accepted, meaning what was written", [mailbox], ([m]) => {
    const utf8 = /[^\x00-\x7f]/.test(m.written)
    const r = AddressCommand.parseRcpt(`RCPT TO:<${m.written}>`, { smtpUtf8: utf8 })
    if (Buffer.byteLength(`<${m.written}>`) > 256 || Buffer.byteLength(m.written.slice(0, m.written.lastIndexOf("@"))) > 64) {
      return Result.isFailure(r) && r.failure.code === 501
    }
    assert.isTrue(Result.isSuccess(r), `${m.written}: ${Result.isFailure(r) ? r.failure.text : ""}`)
    if (Result.isSuccess(r)) {
      assert.deepStrictEqual(r.success.mailbox, { local: m.local, domain: m.domain }, m.written)
      // The canonical form parses back to the same mailbox.
      assert.deepStrictEqual(Address.parse(r.success.address), r.success.mailbox)
    }
  }, { timeout: 30_000, arbitrary: checkOptions })

  it.prop("a control or special character dropped into a dot-string local part is refused", [dotString, domain, controlOrSpecial, byte], ([local, d, bad, at]) => {
    const i = at % (local.length + 1)
    const broken = `${local.slice(0, i)}${bad}${local.slice(i)}`
    // Some insertions still form a valid mailbox ("a@b" + "@" is not; "a" + "." at an edge is not).
    const r = AddressCommand.parseMail(`MAIL FROM:<${broken}@${d}>`)
    if (Result.isSuccess(r)) return Address.isDotString(broken, false) && bad === "."
    return r.failure.code === 501 || r.failure.code === 555
  }, { timeout: 30_000, arbitrary: checkOptions })

  it.prop("random bytes never throw; what is accepted is canonical, bounded and free of controls", [noise, Arbitrary.schema(Schema.Boolean)], ([bytes, utf8]) => {
    for (const prefix of ["MAIL FROM:<", "RCPT TO:<"]) {
      const line = Buffer.concat([Buffer.from(prefix), bytes, Buffer.from(utf8 ? "> SMTPUTF8" : ">")])
      const r: Result.Result<{ readonly address: string }, { readonly code: number; readonly text: string }> = prefix.startsWith("MAIL")
        ? AddressCommand.parseMail(line)
        : AddressCommand.parseRcpt(line, { smtpUtf8: utf8 })
      if (Result.isFailure(r)) {
        assert.oneOf(r.failure.code, [501, 553, 555], `${r.failure.code} ${r.failure.text}`)
        continue
      }
      const address = r.success.address
      assert.isFalse(/[\x00-\x1f\x7f]/.test(address), JSON.stringify(address))
      if (!utf8) assert.isFalse(/[^\x00-\x7f]/.test(address), JSON.stringify(address))
      if (address !== "" && address !== "postmaster") {
        const again = Address.parse(address)
        assert.isDefined(again, address)
        assert.strictEqual(Address.toString(again!), address)
      }
    }
  }, { timeout: 30_000, arbitrary: checkOptions })
})
