// Drives the enrolment page (/ui/enroll) in headless Chromium: register over gRPC-web, read the
// otpauth URI and the QR code the page shows, enter a wrong code and read the typed error, enter
// the right code (computed here, as a phone would), and check over REST that TOTP is now ready.
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

const browser = await chromium.launch(chromiumOptions);
try {
  const page = await browser.newPage();
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
  if (violations.length) fail("Content-Security-Policy violations: " + violations.join("; "));
} finally {
  await browser.close();
}
const methods = await (await fetch(`${base}/v2/users/${user}/authentication_methods`, { headers })).json();
if (JSON.stringify(methods.authMethodTypes) !== JSON.stringify(["AUTHENTICATION_METHOD_TYPE_TOTP"])) {
  fail("TOTP is not ready after the page verified it: " + JSON.stringify(methods));
}
console.log("browser test: enrolment page registered, refused a wrong code, verified in Chromium");
