// Listen to the userqueue `processed` subscription with the graphql-ws package.
//
//   cd examples && npm ci
//   USERQUEUE_TOKEN=<token> node node_listener.mjs --count 5
//   # or let it log in: USERQUEUE_USERNAME=alice USERQUEUE_PASSWORD=... node node_listener.mjs
//
// Prints one JSON line per event ({"cursor": ..., "job": {...}}) and exits
// after --count events (default: never). --after CURSOR replays what followed
// an earlier event first, then goes live: keep the last cursor you printed.
// --url (or USERQUEUE_URL) is the HTTP endpoint, default http://127.0.0.1:8000/graphql;
// the WebSocket URL is the same with ws:// or wss://.

import { parseArgs } from "node:util";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string", default: process.env.USERQUEUE_URL ?? "http://127.0.0.1:8000/graphql" },
    count: { type: "string" },
    after: { type: "string" },
    timeout: { type: "string" },
  },
});
const count = opts.count ? Number(opts.count) : Infinity;

async function token() {
  if (process.env.USERQUEUE_TOKEN) return process.env.USERQUEUE_TOKEN;
  const { USERQUEUE_USERNAME: username, USERQUEUE_PASSWORD: password } = process.env;
  if (!username || !password) {
    throw new Error("set USERQUEUE_TOKEN, or USERQUEUE_USERNAME and USERQUEUE_PASSWORD");
  }
  const response = await fetch(opts.url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      query: "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
      variables: { u: username, p: password },
    }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`login: ${body.errors[0].extensions?.code}: ${body.errors[0].message}`);
  return body.data.login.token;
}

const bearer = `Bearer ${await token()}`;
const client = createClient({
  url: opts.url.replace(/^http/, "ws"),
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: bearer },
  lazy: false,
  // graphql-ws would re-send the first `after` on a reconnect; to resume without a gap,
  // start again with --after <the last cursor printed> instead.
  retryAttempts: 0,
});

let seen = 0;
let after = opts.after ?? null;
let timer;
if (opts.timeout) {
  timer = setTimeout(() => {
    console.error(`timed out after ${opts.timeout}s with ${seen} event(s)`);
    process.exit(1);
  }, Number(opts.timeout) * 1000);
}

function subscribe() {
  return new Promise((resolve, reject) => {
    client.subscribe(
      {
        query: `subscription($after: String) {
          processed(after: $after) {
            cursor
            job { id status requestData processedData error finishedAt }
          }
        }`,
        variables: { after },
      },
      {
        next: ({ data, errors }) => {
          if (errors) return reject(new Error(`${errors[0].extensions?.code}: ${errors[0].message}`));
          after = data.processed.cursor;
          console.log(JSON.stringify(data.processed));
          seen += 1;
          if (seen >= count) resolve();
        },
        error: (err) => reject(err instanceof Error ? err : new Error(err?.reason || `closed ${err?.code}`)),
        complete: resolve,
      },
    );
  });
}

try {
  await subscribe();
  console.error(`received ${seen} event(s); last cursor ${after}`);
  clearTimeout(timer);
  await client.dispose();
  process.exit(0);
} catch (err) {
  console.error(`error: ${err.message}`);
  process.exit(1);
}
