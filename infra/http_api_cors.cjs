// serverless.yml's provider.httpApi.cors, built from the `corsOrigins` param (a comma-separated
// list of origins). Configuration is JavaScript here only because serverless.yml has no way to
// split a string into a list.
//
// No origins (the default): no CORS configuration at all, so API Gateway answers no preflight
// and browsers on other sites cannot call the API until the stage names its frontends.
// Tokens travel in the Authorization header, never in cookies: credentials stay off, and `*` is
// refused so that every stage says which sites may call it.
'use strict';

// What the functions read from a request beyond the headers every browser may send.
const ALLOWED_HEADERS = ['authorization', 'content-type'];
// What a browser client acts on: 401's challenge, 503's Retry-After, and the id API Gateway
// gives each request, which the access log records (quote it when reporting a failure).
const EXPOSED_HEADERS = ['www-authenticate', 'retry-after', 'apigw-requestid'];
// How long a browser may reuse a preflight's answer: a narrowed list takes effect this soon.
const MAX_AGE_SECONDS = 600;
// scheme://host[:port], nothing else: an origin with a path or a trailing slash matches nothing.
const ORIGIN = /^https?:\/\/[^/\s*?#]+$/;

function parseOrigins(value) {
  const origins = String(value ?? '')
    .split(',')
    .map((origin) => origin.trim())
    .filter(Boolean);
  for (const origin of origins) {
    if (!ORIGIN.test(origin)) {
      throw new Error(
        `corsOrigins: "${origin}" is not an origin; name each frontend as scheme://host[:port], ` +
          'for example https://app.example.com (no path, no trailing slash, no "*")'
      );
    }
  }
  return origins;
}

module.exports = async ({ resolveVariable }) => {
  const origins = parseOrigins(await resolveVariable('param:corsOrigins'));
  if (origins.length === 0) return false;
  // allowedMethods is left out: the framework fills it with the methods of the routes.
  return {
    allowedOrigins: origins,
    allowedHeaders: ALLOWED_HEADERS,
    exposedResponseHeaders: EXPOSED_HEADERS,
    maxAge: MAX_AGE_SECONDS,
  };
};
