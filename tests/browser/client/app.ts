// A browser app as a front-end team would write it: ZITADEL's user service over gRPC-web with
// Connect's client library (@connectrpc/connect-web) and messages generated from our protos by
// protoc-gen-es. The page is served from another origin than the service, so every call is a
// CORS request with a preflight. The browser test drives it through `window.totpClient`.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthenticationMethodType, UserService } from "./gen/zitadel/user/v2/user_service_pb";
import { TOTPService } from "./gen/totpservice/v1/totp_service_pb";
import { ErrorDetailSchema } from "./gen/zitadel/message_pb";

type Outcome =
  | { ok: true; value: Record<string, unknown> }
  | { ok: false; code: number; codeName: string; message: string; id?: string; detailMessage?: string };

function clients(baseUrl: string, token: string) {
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({ baseUrl, interceptors: [bearer] });
  return { users: createClient(UserService, transport), totp: createClient(TOTPService, transport) };
}

// Runs one call and turns its answer or its typed error into plain data for the test.
async function outcome(call: () => Promise<Record<string, unknown>>): Promise<Outcome> {
  try {
    return { ok: true, value: await call() };
  } catch (thrown) {
    const error = ConnectError.from(thrown);
    const [detail] = error.findDetails(ErrorDetailSchema);
    return {
      ok: false,
      code: error.code,
      codeName: Code[error.code],
      message: error.rawMessage,
      id: detail?.id,
      detailMessage: detail?.message,
    };
  }
}

function show(label: string, result: Outcome): Outcome {
  const line = document.createElement("li");
  line.textContent = `${label}: ${result.ok ? "ok" : `${result.codeName} ${result.id} ${result.message}`}`;
  document.getElementById("log")!.append(line);
  return result;
}

function api(baseUrl: string, token: string) {
  const { users, totp } = clients(baseUrl, token);
  return {
    addUser: async (userId: string, orgId: string) =>
      show("add user", await outcome(async () => {
        const added = await users.addHumanUser({
          userId,
          organization: { org: { case: "orgId", value: orgId } },
          profile: { givenName: "Grace", familyName: "Hopper" },
          email: { email: "grace@example.com" },
        });
        return { userId: added.userId, sequence: String(added.details?.sequence) };
      })),
    register: async (userId: string) =>
      show("register", await outcome(async () => {
        const registered = await users.registerTOTP({ userId });
        return { uri: registered.uri, secret: registered.secret, sequence: String(registered.details?.sequence) };
      })),
    verify: async (userId: string, code: string) =>
      show("verify", await outcome(async () => {
        const verified = await users.verifyTOTPRegistration({ userId, code });
        const details = verified.details!;
        return {
          sequence: String(details.sequence),
          resourceOwner: details.resourceOwner,
          changeDate: details.changeDate ? new Date(Number(details.changeDate.seconds) * 1000).toISOString() : "",
        };
      })),
    check: async (userId: string, code: string) =>
      show("check", await outcome(async () => {
        const checked = await totp.checkTOTP({ userId, code });
        return { sequence: String(checked.details?.sequence) };
      })),
    methods: async (userId: string) =>
      show("methods", await outcome(async () => {
        const listed = await users.listAuthenticationMethodTypes({ userId });
        return { types: listed.authMethodTypes.map((type) => AuthenticationMethodType[type]) };
      })),
  };
}

declare global {
  interface Window { totpClient: { connect: typeof api } }
}
window.totpClient = { connect: api };
