// The TypeScript SDK's client (pinned in package.json) doing the whole MCP authorization flow unaided:
// 401 -> protected-resource metadata -> authorization server metadata -> dynamic registration ->
// authorization code + PKCE S256 + resource -> token; then tools, with a step-up after a 403
// insufficient_scope. The "browser" follows the authorization redirects over HTTP (the authorization
// server's login and consent answer at once), so the redirect URI never needs a listener.
//
// usage: node ts_oauth_client.mjs <server url> <tool> [json arguments]; prints one JSON line.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const [serverUrl, tool, rawArguments] = process.argv.slice(2);
const redirectUrl = "http://127.0.0.1:9/callback";
const report = { statuses: [], token_scopes: [], authorizations: 0 };

async function browse(url) {
  const cookies = new Map();
  for (let hop = 0; hop < 10; hop += 1) {
    const cookie = [...cookies].map(([name, value]) => `${name}=${value}`).join("; ");
    const response = await fetch(url, { redirect: "manual", headers: cookie ? { cookie } : {} });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const at = pair.indexOf("=");
      cookies.set(pair.slice(0, at), pair.slice(at + 1));
    }
    const location = response.headers.get("location");
    if (!location) throw new Error(`authorization stopped at ${url}: ${response.status}`);
    url = new URL(location, url).toString();
    if (url.startsWith(redirectUrl)) return new URL(url).searchParams.get("code");
  }
  throw new Error("too many redirects");
}

let clientInformation;
let tokens;
let verifier;
let pendingCode;
const provider = {
  get redirectUrl() {
    return redirectUrl;
  },
  get clientMetadata() {
    return {
      client_name: "typescript-sdk-test",
      redirect_uris: [redirectUrl],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  clientInformation: () => clientInformation,
  saveClientInformation: (info) => {
    clientInformation = info;
  },
  tokens: () => tokens,
  saveTokens: (saved) => {
    tokens = saved;
    report.token_scopes.push(saved.scope ?? "");
  },
  redirectToAuthorization: async (url) => {
    report.authorizations += 1;
    report.requested_scopes = [...(report.requested_scopes ?? []), url.searchParams.get("scope")];
    report.resource = url.searchParams.get("resource");
    pendingCode = await browse(url.toString());
  },
  saveCodeVerifier: (saved) => {
    verifier = saved;
  },
  codeVerifier: () => verifier,
};

// Every fetch the transport makes, to see the statuses the server answered.
const watched = async (url, init) => {
  const response = await fetch(url, init);
  if (String(url).startsWith(serverUrl)) report.statuses.push(response.status);
  return response;
};

async function authorized(transport, action) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    try {
      return await action();
    } catch (error) {
      if (!(error instanceof UnauthorizedError) || !pendingCode) throw error;
      const code = pendingCode;
      pendingCode = undefined;
      await transport.finishAuth(code);
    }
  }
  throw new Error("still unauthorized");
}

let transport;
let client;
await authorized({ finishAuth: (code) => transport.finishAuth(code) }, async () => {
  transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider, fetch: watched });
  client = new Client({ name: "typescript-sdk-test", version: "1.0.0" });
  await client.connect(transport);
});
const whoami = await authorized(transport, () => client.callTool({ name: "whoami", arguments: {} }));
const result = await authorized(transport, () =>
  client.callTool({ name: tool, arguments: JSON.parse(rawArguments || "{}") }),
);
report.whoami = whoami.content.map((block) => block.text).join("\n");
report.result = result.content.map((block) => block.text).join("\n");
report.is_error = Boolean(result.isError);
await client.close();
process.stdout.write(JSON.stringify(report) + "\n");
