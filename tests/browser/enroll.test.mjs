// Drives the enrolment page (/ui/enroll) in headless Chromium: register over gRPC-web, read the
// otpauth URI and the QR code the page shows, enter a wrong code and read the typed error, enter
// the right code (computed here, as a phone would), create recovery codes and copy them with the
// page's button, and check over REST that TOTP is ready and a copied recovery code works once.
// Usage: node enroll.test.mjs <base URL> <token>
import { chromium } from "playwright-core";
import { chromiumOptions, fail, totp, wrongCode } from "./otp.mjs";

const [base, token] = process.argv.slice(2);

const user = "browser-" + Date.now();
const headers = { authorization: "Bearer " + token, "content-type": "application/json" };
const added = await fetch(base + "/v2/users/human", {
  method: "POST", headers,
  body: JSON.stringify({ userId: user, organization: { orgId: "acme" },
    profile: { givenName: "Ada", familyName: "Lovelace" }, email: { email: "ada@example.com" } }),
});
if (added.status !== 200) fail("adding the user: HTTP " + added.status);

let recoveryCodes = [];
const browser = await chromium.launch(chromiumOptions);
try {
  const context = await browser.newContext();
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  // The page must work under its own Content-Security-Policy: any violation fails the test.
  const violations = [];
  page.on("console", (message) => {
    if (message.text().includes("Content Security Policy")) violations.push(message.text());
  });
  const response = await page.goto(`${base}/ui/enroll#token=${encodeURIComponent(token)}&user=${encodeURIComponent(user)}`);
  const headersSeen = response.headers();
  const csp = headersSeen["content-security-policy"] || "";
  if (!csp.includes("frame-ancestors 'none'") || csp.includes("unsafe-inline")) fail("CSP: " + csp);
  if (headersSeen["x-content-type-options"] !== "nosniff") fail("no nosniff header");
  if (headersSeen["referrer-policy"] !== "no-referrer") fail("no no-referrer header");
  // The token is read from the fragment, then removed from the address bar.
  await page.waitForFunction(() => location.hash === "", null, { timeout: 5000 });
  if (page.url().includes("token")) fail("the token stays in the address: " + page.url());
  if ((await page.inputValue("#token")) !== token) fail("the token was not read from the fragment");
  await page.click("#register");
  await page.waitForSelector("#scan:not([hidden])", { timeout: 10000 });
  const uri = await page.textContent("#uri");
  if (!uri.startsWith("otpauth://totp/")) fail("the page shows no otpauth URI: " + uri);
  const href = await page.getAttribute("#link", "href");
  if (href !== uri) fail("the same-phone link differs from the URI");
  if (!(await page.innerHTML("#qr")).includes("<svg")) fail("the page shows no QR code");
  const secret = new URL(uri.replace("otpauth://", "https://")).searchParams.get("secret");

  // A wrong code: the page shows the typed error the service sent.
  await page.fill("#code", wrongCode(secret));
  await page.click("#verify");
  await page.waitForFunction(() => document.getElementById("status").textContent !== "");
  const error = await page.textContent("#status");
  if (error !== "Invalid code (EVENT-8isk2)") fail("wrong code: the page says " + JSON.stringify(error));

  await page.fill("#code", totp(secret));
  await page.click("#verify");
  await page.waitForFunction(() => document.getElementById("status").textContent === "Your authenticator is set up.", null, { timeout: 10000 });

  // Recovery codes, offered once the authenticator is verified: ten, grouped, copied as shown.
  await page.waitForSelector("#recovery:not([hidden])", { timeout: 5000 });
  await page.click("#generate");
  await page.waitForSelector("#saved:not([hidden])", { timeout: 10000 });
  const shown = (await page.textContent("#codes")).split("\n");
  if (shown.length !== 10 || !shown.every((code) => /^[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}$/.test(code))) {
    fail("the page shows no ten recovery codes: " + JSON.stringify(shown));
  }
  if (!(await page.isHidden("#generate"))) fail("the codes can be generated again from the page");
  await page.click("#copy");
  await page.waitForFunction(() => document.getElementById("status").textContent === "The recovery codes are copied.", null, { timeout: 5000 });
  recoveryCodes = (await page.evaluate(() => navigator.clipboard.readText())).split("\n");
  if (JSON.stringify(recoveryCodes) !== JSON.stringify(shown)) fail("the clipboard holds " + JSON.stringify(recoveryCodes));
  if (violations.length) fail("Content-Security-Policy violations: " + violations.join("; "));
} finally {
  await browser.close();
}
const methods = await (await fetch(`${base}/v2/users/${user}/authentication_methods`, { headers })).json();
const expected = ["AUTHENTICATION_METHOD_TYPE_TOTP", "AUTHENTICATION_METHOD_TYPE_RECOVERY_CODE"];
if (JSON.stringify(methods.authMethodTypes) !== JSON.stringify(expected)) {
  fail("TOTP and recovery codes are not ready after the page set them up: " + JSON.stringify(methods));
}
const check = () => fetch(`${base}/v2/users/${user}/recovery_codes/check`, {
  method: "POST", headers, body: JSON.stringify({ code: recoveryCodes[3] }),
});
const first = await check();
const firstBody = await first.json();
if (first.status !== 200 || firstBody.remaining !== 9) fail("a copied recovery code: HTTP " + first.status + " " + JSON.stringify(firstBody));
const again = await check();
if (again.status !== 400) fail("a recovery code was accepted twice: HTTP " + again.status);
console.log("browser test: enrolment page registered, refused a wrong code, verified, created and copied recovery codes in Chromium");
