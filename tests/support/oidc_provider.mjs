// A real, OpenID-certified authorization server (node oidc-provider, pinned in package.json) on loopback,
// configured as an MCP authorization server would be: resource indicators (RFC 8707) with JWT access
// tokens (typ at+jwt, RFC 9068), dynamic client registration, client credentials, authorization code
// with PKCE S256, introspection (RFC 7662) and revocation. Login and consent are answered at once by the
// interaction route below (no browser): the user is whoever POST /test/user named last, and consent is
// given to the scopes asked for. Scopes that POST named in `decline_once` are left out of the first
// access token issued after it (the resource server's policy withholds them until then), so a client
// must step up to get them.
//
// Configuration by environment: OIDC_PORT (0 = any free port), OIDC_SCOPES (space separated),
// OIDC_OPAQUE_RESOURCES (comma separated resource URLs that get opaque tokens), OIDC_CLIENTS (JSON list
// of static client metadata), OIDC_ACCESS_TOKEN_TTL (seconds). Prints one JSON line {"issuer": ...} when
// it listens.
import { createServer } from "node:http";
import { generateKeyPair, exportJWK } from "jose";
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT || 0);
const scopes = (process.env.OIDC_SCOPES || "notes:read notes:write mcp:tools").split(" ").filter(Boolean);
const opaque = new Set((process.env.OIDC_OPAQUE_RESOURCES || "").split(",").filter(Boolean));
const clients = JSON.parse(process.env.OIDC_CLIENTS || "[]");
const accessTokenTtl = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 600);
const lifetime = (client) => (client?.clientId.startsWith("short-lived") ? 3 : accessTokenTtl);
let user = "alice";
let declineOnce = new Set();

const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: "oidc-key-1", use: "sig", alg: "RS256" };

const server = createServer();
await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

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
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: scopes.filter((scope) => !declineOnce.has(scope)).join(" "),
        audience: resource,
        accessTokenTTL: lifetime(client),
        accessTokenFormat: opaque.has(resource) ? "opaque" : "jwt",
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
  pkce: { required: () => true },
  // A client named short-lived-* gets tokens that expire in 3 s, for expiry tests.
  ttl: { AccessToken: accessTokenTtl, ClientCredentials: (ctx, token, client) => lifetime(client) },
});
provider.proxy = false;
for (const event of ["access_token.issued", "access_token.saved"]) {
  provider.on(event, () => {
    declineOnce = new Set();
  });
}

// Dynamic registration does not pin a client's scopes: the SDKs register with the scopes of the first
// challenge (the server's read-only baseline), and a pinned list would refuse every later step-up with
// invalid_scope. What a token gets is decided per authorization (consent, and the policy above), as an
// authorization server for MCP step-up must. (oidc-provider reads a body parsed before it: req.body.)
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

// Login and consent, answered without a page.
provider.use(async (ctx, next) => {
  if (ctx.method === "POST" && ctx.path === "/test/user") {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = JSON.parse(Buffer.concat(chunks).toString());
    user = body.user;
    declineOnce = new Set(body.decline_once || []);
    ctx.body = { user };
    return;
  }
  if (ctx.method === "GET" && ctx.path.startsWith("/interaction/")) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params } = details;
    if (process.env.OIDC_DEBUG) console.error(JSON.stringify({ prompt, declineOnce: [...declineOnce] }));
    let result;
    if (prompt.name === "login") {
      result = { login: { accountId: user } };
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
    return;
  }
  await next();
});

server.on("request", provider.callback());
process.stdout.write(JSON.stringify({ issuer }) + "\n");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
