// node's oidc-provider as the OIDC benchmarks' peer, configured like the bridge's client: one confidential
// client (client_secret_basic, PKCE S256 required, ID tokens RS256 with the benchmark's key), first party (a
// grant without a consent page), refresh tokens issued to it and rotated at every use, and client credentials
// with RS256 JWT access tokens for one resource. Storage is oidc-provider's built-in in-memory adapter.
//
// Usage: node oidc_provider.mjs CONFIG.json (written by bench/peers/oidc_provider.py: issuer, port, jwk,
// client, account, resource, cookie_key). Sign-in is not measured here, so the interaction page signs the
// benchmark's account in at once: it only gives each client an SSO session to start from.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { account } = config;
const SCOPE = 'openid email profile';

const provider = new Provider(config.issuer, {
  clients: [config.client],
  jwks: { keys: [config.jwk] },
  cookies: { keys: [config.cookie_key] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
  },
  async findAccount(ctx, id) {
    if (id !== account.sub) return undefined;
    return { accountId: id, async claims() { return account; } };
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo(ctx, resource) {
        if (resource !== config.resource) throw new errors.InvalidTarget();
        return { scope: 'api', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  pkce: { required: () => true },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    // First party: what it asks for is granted (the bridge's --first-party).
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(SCOPE);
    await grant.save();
    return grant;
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
});

const app = provider.callback();
const server = createServer(async (req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    app(req, res);
    return;
  }
  try {
    await provider.interactionDetails(req, res);
    await provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
  } catch (err) {
    console.error(err);
    res.statusCode = 500;
    res.end(String(err));
  }
});
server.listen(config.port, '127.0.0.1', () => console.log(`oidc-provider listening on ${config.issuer}`));
process.on('SIGTERM', () => process.exit(0));
