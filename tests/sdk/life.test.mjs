// ZITADEL's official Node SDK, unchanged, against the service: `createUserClient()` (which
// speaks zitadel.user.v2beta over gRPC) with `createAccessTokenInterceptor()` drives a whole
// TOTP life: add a user, register, a wrong first code refused with ZITADEL's error, verify,
// list the authentication methods, remove, and the list is empty again.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { Status } from "nice-grpc";
import { createAccessTokenInterceptor, createUserClient } from "@zitadel/node/dist/api/index.js";

import { totp, wrongCode } from "../browser/otp.mjs";

const [base, token] = process.argv.slice(2);
const users = createUserClient(base, createAccessTokenInterceptor(token));
const userId = `sdk-${randomBytes(6).toString("hex")}`;
const TOTP = 4; // AuthenticationMethodType.AUTHENTICATION_METHOD_TYPE_TOTP

const added = await users.addHumanUser({
  userId,
  organization: { orgId: "sdk-org" },
  profile: { givenName: "Ada", familyName: "Node" },
  email: { email: `${userId}@example.com` },
});
assert.equal(added.userId, userId);
assert.equal(added.details.resourceOwner, "sdk-org");

const registered = await users.registerTOTP({ userId });
assert.match(registered.uri, /^otpauth:\/\/totp\//);
assert.match(registered.secret, /^[A-Z2-7]{32}$/);

await assert.rejects(
  users.verifyTOTPRegistration({ userId, code: wrongCode(registered.secret) }),
  (error) => {
    assert.equal(error.code, Status.INVALID_ARGUMENT);
    assert.equal(error.details, "Invalid code (EVENT-8isk2)");
    return true;
  },
);
await users.verifyTOTPRegistration({ userId, code: totp(registered.secret) });

const methods = await users.listAuthenticationMethodTypes({ userId });
assert.deepEqual(methods.authMethodTypes, [TOTP]);

const fetched = await users.getUserByID({ userId });
assert.equal(fetched.user.userId, userId);
assert.equal(fetched.user.human.email.email, `${userId}@example.com`);

await users.removeTOTP({ userId });
const after = await users.listAuthenticationMethodTypes({ userId });
assert.deepEqual(after.authMethodTypes, []);

console.log("@zitadel/node createUserClient(): add, register, refused code, verify, list, get, remove: ok");
