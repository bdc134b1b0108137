// The development authorization server for this MCP server: node oidc-provider (pinned in package.json,
// the version the template's tests run), configured as an MCP authorization server: resource indicators
// (RFC 8707) with JWT access tokens (RFC 9068) for this server's MCP_RESOURCE_URL only, the project's
// scopes, dynamic client registration, authorization code with PKCE S256, client credentials, and a
// development login: no password, the user is whoever the authorization request's login_hint names (else
// DEV_AUTH_USER), and consent is given to the scopes asked for.
//
// For development only, and only on loopback: it refuses any other address. Its signing key lives in
// memory, so every token ends with the process. `uv run <project> dev-auth` starts it with the settings
// below and prints the .env lines (README: "A development authorization server").
//
// Environment: DEV_AUTH_HOST (a loopback address), DEV_AUTH_PORT, DEV_AUTH_RESOURCE (MCP_RESOURCE_URL),
// DEV_AUTH_SCOPES (space separated), DEV_AUTH_USER, DEV_AUTH_MACHINE_SECRET (the dev-machine client's
// secret, for client credentials), DEV_AUTH_STDIN_LIFELINE (stop when stdin closes). Prints one JSON
// line {"issuer": ...} when it listens.
import { createServer } from "node:http";
import { generateKeyPair, exportJWK } from "jose";
import Provider, { errors } from "oidc-provider";

const LOOPBACK = ["127.0.0.1", "::1", "localhost"];
const host = process.env.DEV_AUTH_HOST || "127.0.0.1";
if (!LOOPBACK.includes(host)) {
  console.error(`dev-auth: refusing DEV_AUTH_HOST=${host}: the development authorization server runs on loopback only`);
  process.exit(2);
}
const port = Number(process.env.DEV_AUTH_PORT || 9400);
const resource = process.env.DEV_AUTH_RESOURCE;
if (!resource) {
  console.error("dev-auth: DEV_AUTH_RESOURCE is empty: set it to the MCP server's MCP_RESOURCE_URL");
  process.exit(2);
}
const scopes = (process.env.DEV_AUTH_SCOPES || "").split(" ").filter(Boolean);
const devUser = process.env.DEV_AUTH_USER || "developer";
const machineSecret = process.env.DEV_AUTH_MACHINE_SECRET;
const clients = machineSecret
  ? [
      {
        client_id: "dev-machine",
        client_secret: machineSecret,
        grant_types: ["client_credentials"],
        response_types: [],
        redirect_uris: [],
      },
    ]
  : [];

const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: "dev-auth-key", use: "sig", alg: "RS256" };

const server = createServer();
await new Promise((resolve, reject) => {
  server.once("error", reject);
  server.listen(port, host, resolve);
});
const shown = host.includes(":") ? `[${host}]` : host;
const issuer = `http://${shown}:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [jwk] },
  scopes: ["openid", "offline_access", ...scopes],
  claims: { openid: ["sub"] },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        // Tokens for this MCP server only.
        if (indicator !== resource) throw new errors.InvalidTarget(`only ${resource} is served here`);
        return {
          scope: scopes.join(" "),
          audience: resource,
          accessTokenTTL: 3600,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        };
      },
    },
  },
  pkce: { required: () => true },
  ttl: { AccessToken: 3600, ClientCredentials: 3600 },
});
provider.proxy = false;

// Dynamic registration does not pin a client's scopes: the SDKs register with the scopes of the first
// challenge (the server's read-only baseline), and a pinned list would refuse every later step-up with
// invalid_scope. What a token gets is decided per authorization, as MCP's step-up needs.
// (oidc-provider reads a body parsed before it: req.body.)
provider.use(async (ctx, next) => {
  if (ctx.method === "POST" && ctx.path === "/reg") {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const metadata = JSON.parse(Buffer.concat(chunks).toString() || "{}");
    delete metadata.scope;
    ctx.req.body = metadata;
  }
  await next();
});

// The development login and consent, answered at once, without a page.
provider.use(async (ctx, next) => {
  if (ctx.method !== "GET" || !ctx.path.startsWith("/interaction/")) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params } = details;
  let result;
  if (prompt.name === "login") {
    result = { login: { accountId: String(params.login_hint || devUser) } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(" "));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, wanted] of Object.entries(prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, wanted.join(" "));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.respond = false;
});

server.on("request", provider.callback());
process.stdout.write(JSON.stringify({ issuer }) + "\n");
const stop = () => server.close(() => process.exit(0));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, stop);
// Started by `dev-auth`, with a pipe on stdin: when that process ends, however it ends, so does this one.
if (process.env.DEV_AUTH_STDIN_LIFELINE) process.stdin.on("close", stop).resume();
