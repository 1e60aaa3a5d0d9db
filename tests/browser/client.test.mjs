// Drives client/app.ts, a page built on a real gRPC-web client library (@connectrpc/connect-web
// with protoc-gen-es messages, bundled by esbuild), in headless Chromium. The page comes from its
// own origin, so each call crosses origins and needs the service's CORS answer (preflight
// included). Through it: add a user, register TOTP, read the typed error of a wrong code
// (code, message and the zitadel.v1.ErrorDetail from grpc-status-details-bin), verify with the
// right code, and see a replayed code refused at check.
// Usage: node client.test.mjs <service base URL> <token> <page port>
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import { chromiumOptions, fail, totp, wrongCode } from "./otp.mjs";

const [base, token, pagePort] = process.argv.slice(2);
const files = {
  "/": ["text/html", readFileSync(new URL("client/index.html", import.meta.url))],
  "/app.js": ["text/javascript", readFileSync(new URL("client/dist/app.js", import.meta.url))],
};
function servePages(port) {
  const pages = createServer((request, response) => {
    const file = files[request.url];
    if (!file) { response.writeHead(404).end(); return; }
    response.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  return new Promise((listening) => pages.listen(port, "127.0.0.1", () => listening(pages)));
}
// The origin the service allows, and one it does not.
const allowed = await servePages(Number(pagePort));
const stranger = await servePages(0);

function expectOk(label, result) {
  if (!result.ok) fail(`${label}: ${JSON.stringify(result)}`);
  return result.value;
}
// The status message is "<message> (<id>)"; the ErrorDetail carries both apart.
function expectError(label, result, code, id, message) {
  const want = { ok: false, code, message: `${message} (${id})`, id, detailMessage: message };
  const got = { ok: result.ok, code: result.code, message: result.message, id: result.id,
    detailMessage: result.detailMessage };
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    fail(`${label}: want ${JSON.stringify(want)}, got ${JSON.stringify(result)}`);
  }
}

const browser = await chromium.launch(chromiumOptions);
try {
  const page = await browser.newPage();
  const origin = `http://127.0.0.1:${pagePort}`;
  const corsAnswers = [];
  page.on("response", (response) => {
    if (response.url().startsWith(base)) corsAnswers.push(response.headers()["access-control-allow-origin"]);
  });
  await page.goto(origin + "/");
  const callFrom = (page, method, ...args) => page.evaluate(
    ([base, token, method, args]) => window.totpClient.connect(base, token)[method](...args),
    [base, token, method, args],
  );
  const call = (method, ...args) => callFrom(page, method, ...args);

  const user = "grpc-web-" + Date.now();
  const added = expectOk("add user", await call("addUser", user, "acme"));
  if (added.userId !== user || added.sequence !== "1") fail("add user: " + JSON.stringify(added));

  const registered = expectOk("register", await call("register", user));
  if (!/^[A-Z2-7]{32}$/.test(registered.secret)) fail("register: secret " + registered.secret);
  if (!registered.uri.startsWith("otpauth://totp/") || !registered.uri.includes(`secret=${registered.secret}`)) {
    fail("register: uri " + registered.uri);
  }
  if (registered.sequence !== "2") fail("register: sequence " + registered.sequence);

  expectError("wrong code", await call("verify", user, wrongCode(registered.secret)),
    3, "EVENT-8isk2", "Invalid code");

  const code = totp(registered.secret);
  const verified = expectOk("verify", await call("verify", user, code));
  const age = Math.abs(Date.now() - Date.parse(verified.changeDate));
  if (verified.sequence !== "4" || verified.resourceOwner !== "acme" || !(age < 2000)) {
    fail("verify: details " + JSON.stringify(verified));
  }
  const methods = expectOk("methods", await call("methods", user));
  if (JSON.stringify(methods.types) !== JSON.stringify(["TOTP"])) fail("methods: " + JSON.stringify(methods));

  expectError("replayed code", await call("check", user, code),
    3, "TOTP-Auw0a", "Code was already used");

  // Every answer the page read carried the CORS grant for its origin...
  if (corsAnswers.length !== 6 || corsAnswers.some((granted) => granted !== origin)) {
    fail("CORS answers: " + JSON.stringify(corsAnswers));
  }
  // ...and a page from an origin the service does not allow cannot call it at all.
  const strangePage = await browser.newPage();
  await strangePage.goto(`http://127.0.0.1:${stranger.address().port}/`);
  const refused = await callFrom(strangePage, "methods", user);
  // The browser withholds the answer: the library sees a failed fetch, not a service error.
  if (refused.ok || refused.code !== 2 || refused.message !== "Failed to fetch" || refused.id !== undefined) {
    fail("a foreign origin got an answer: " + JSON.stringify(refused));
  }
} finally {
  await browser.close();
  allowed.close();
  stranger.close();
}
console.log("browser test: connect-web gRPC-web client added, registered, got typed errors, verified across origins");
