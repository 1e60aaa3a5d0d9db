// The script of the enrolment page (enroll.html): registers over gRPC-web, shows the QR code,
// verifies the first code, then offers recovery codes.
"use strict";
// A few protobuf helpers: request fields are strings (wire type 2) or numbers (wire type 0);
// the response fields read here are strings.
const utf8 = new TextEncoder(), text = new TextDecoder();
function varint(n) { const out = []; while (n > 127) { out.push((n & 127) | 128); n >>>= 7; } out.push(n); return out; }
function encode(fields) { // fields: [[number, string or non-negative integer], ...]
  const out = [];
  for (const [number, value] of fields) {
    if (typeof value === "number") { out.push(...varint(number << 3), ...varint(value)); continue; }
    const bytes = utf8.encode(value);
    out.push(...varint((number << 3) | 2), ...varint(bytes.length), ...bytes);
  }
  return Uint8Array.from(out);
}
function decode(bytes) { // -> {number: string} of the length-delimited fields, all of them in .all
  const fields = { all: {} }; let i = 0;
  const readVarint = () => { let n = 0, shift = 0, b; do { b = bytes[i++]; n |= (b & 127) << shift; shift += 7; } while (b & 128); return n >>> 0; };
  while (i < bytes.length) {
    const key = readVarint(), number = key >>> 3, type = key & 7;
    if (type === 2) { const len = readVarint(); const value = text.decode(bytes.subarray(i, i + len)); i += len;
      fields[number] = value; (fields.all[number] ||= []).push(value); }
    else if (type === 0) readVarint();
    else if (type === 1) i += 8; else if (type === 5) i += 4; else break;
  }
  return fields;
}
// One unary gRPC-web call: frame the message, read data and trailer frames back.
async function grpcWeb(method, message) {
  const body = new Uint8Array(5 + message.length);
  new DataView(body.buffer).setUint32(1, message.length);
  body.set(message, 5);
  const response = await fetch("/" + method, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1",
               "authorization": "Bearer " + document.getElementById("token").value.trim() },
    body,
  });
  const bytes = new Uint8Array(await response.arrayBuffer());
  let data = null, status = response.headers.get("grpc-status"), message_ = response.headers.get("grpc-message");
  for (let i = 0; i + 5 <= bytes.length;) {
    const flag = bytes[i], len = new DataView(bytes.buffer, bytes.byteOffset + i + 1, 4).getUint32(0);
    const frame = bytes.subarray(i + 5, i + 5 + len);
    if (flag & 0x80) {
      for (const line of text.decode(frame).split("\r\n")) {
        const at = line.indexOf(":"); if (at < 0) continue;
        const key = line.slice(0, at).trim().toLowerCase(), value = line.slice(at + 1).trim();
        if (key === "grpc-status") status = value; else if (key === "grpc-message") message_ = value;
      }
    } else data = frame;
    i += 5 + len;
  }
  if (status !== "0") throw new Error(decodeURIComponent(message_ || "request failed (" + status + ")"));
  return decode(data || new Uint8Array());
}
const show = (message, ok) => { const s = document.getElementById("status"); s.textContent = message; s.className = ok ? "ok" : "error"; };
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) document.getElementById("token").value = fragment.get("token");
if (fragment.get("user")) document.getElementById("user").value = fragment.get("user");
// The token must not stay in the address bar, the history or a bookmark.
if (location.hash) history.replaceState(null, "", location.pathname + location.search);

document.getElementById("register").onclick = async () => {
  try {
    const user = document.getElementById("user").value.trim();
    const answer = await grpcWeb("zitadel.user.v2.UserService/RegisterTOTP", encode([[1, user]]));
    const uri = answer[2];
    const qr = await fetch("/ui/qr", { method: "POST", headers: { "content-type": "text/plain" }, body: uri });
    document.getElementById("qr").innerHTML = await qr.text();
    document.getElementById("uri").textContent = uri;
    document.getElementById("link").href = uri;
    document.getElementById("scan").hidden = false;
    document.getElementById("start").hidden = true;
    show("", true);
  } catch (error) { show(error.message, false); }
};
document.getElementById("verify").onclick = async () => {
  try {
    const user = document.getElementById("user").value.trim();
    await grpcWeb("zitadel.user.v2.UserService/VerifyTOTPRegistration",
                  encode([[1, user], [2, document.getElementById("code").value]]));
    document.getElementById("scan").hidden = true;
    document.getElementById("recovery").hidden = false;
    show("Your authenticator is set up.", true);
  } catch (error) { show(error.message, false); }
};
document.getElementById("generate").onclick = async () => {
  try {
    const user = document.getElementById("user").value.trim();
    const answer = await grpcWeb("zitadel.user.v2.UserService/GenerateRecoveryCodes", encode([[1, user], [2, 10]]));
    document.getElementById("codes").textContent = (answer.all[2] || []).join("\n");
    document.getElementById("generate").hidden = true;
    document.getElementById("saved").hidden = false;
    show("", true);
  } catch (error) { show(error.message, false); }
};
document.getElementById("copy").onclick = async () => {
  try {
    await navigator.clipboard.writeText(document.getElementById("codes").textContent);
    show("The recovery codes are copied.", true);
  } catch (error) { show("Copying failed: " + error.message, false); }
};
