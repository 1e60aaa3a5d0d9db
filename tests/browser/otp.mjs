// What a phone's authenticator app does: RFC 6238 codes (SHA-1, 6 digits, 30 s) from a base32
// secret. Shared by the browser tests.
import { createHmac } from "node:crypto";

function base32(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0; const out = [];
  for (const c of text.replace(/=+$/, "")) {
    value = (value << 5) | alphabet.indexOf(c); bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 255); bits -= 8; }
  }
  return Buffer.from(out);
}

/** The code of `secret` for the current 30 s step, or `offset` steps away from it. */
export function totp(secret, offset = 0) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30) + offset));
  const digest = createHmac("sha1", base32(secret)).update(counter).digest();
  const at = digest[19] & 15;
  const number = (digest.readUInt32BE(at) & 0x7fffffff) % 1_000_000;
  return String(number).padStart(6, "0");
}

/** A six-digit code that none of the steps around now accepts. */
export function wrongCode(secret) {
  const valid = [-1, 0, 1].map((offset) => totp(secret, offset));
  return ["000000", "111111", "222222", "333333"].find((code) => !valid.includes(code));
}

export const fail = (message) => { console.error("FAIL: " + message); process.exit(1); };

/** Headless Debian Chromium, as both tests start it. */
export const chromiumOptions = {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
};
