// Follow one job's progress with the `jobUpdates` subscription (graphql-ws package).
//
//   cd examples && npm ci
//   USERQUEUE_TOKEN=<token> node node_job_updates.mjs --id <job id>
//
// Prints one JSON line per update ({"cursor", "kind", "job"}) and a progress
// bar on stderr, and exits 0 when the job has ended (the server completes the
// subscription after COMPLETED, FAILED or CANCELLED). The first update is the
// job's current state. After a lost connection, run it again with
// --after <the last cursor printed>: it replays every update after that one,
// none twice. --url (or USERQUEUE_URL): the HTTP endpoint, default
// http://127.0.0.1:8000/graphql. Workers with a handler that reports, e.g.
// QUEUE_HANDLER=examples.progress_handler:count_words, make the bar move.

import { parseArgs } from "node:util";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string", default: process.env.USERQUEUE_URL ?? "http://127.0.0.1:8000/graphql" },
    id: { type: "string" },
    after: { type: "string" },
    timeout: { type: "string" },
  },
});
if (!opts.id) {
  console.error("usage: node node_job_updates.mjs --id JOB_ID [--after CURSOR]");
  process.exit(2);
}
const token = process.env.USERQUEUE_TOKEN;
if (!token) {
  console.error("set USERQUEUE_TOKEN (userqueue login, or the login mutation)");
  process.exit(2);
}

const client = createClient({
  url: opts.url.replace(/^http/, "ws"),
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0, // resume with --after instead: graphql-ws would re-send the first `after`
});
if (opts.timeout) {
  setTimeout(() => {
    console.error(`timed out after ${opts.timeout}s`);
    process.exit(1);
  }, Number(opts.timeout) * 1000).unref();
}

function bar(job) {
  const filled = Math.round((job.progress ?? 0) * 20);
  const percent = job.progress === null ? "  -" : `${Math.round(job.progress * 100)}%`.padStart(4);
  return `[${"#".repeat(filled)}${".".repeat(20 - filled)}] ${percent} ${job.progressMessage ?? ""}`;
}

let last = opts.after ?? null;
try {
  await new Promise((resolve, reject) => {
    client.subscribe(
      {
        query: `subscription($id: ID!, $after: String) {
          jobUpdates(id: $id, after: $after) {
            cursor kind
            job { id status attempts progress progressMessage processedData error }
          }
        }`,
        variables: { id: opts.id, after: last },
      },
      {
        next: ({ data, errors }) => {
          if (errors) return reject(new Error(`${errors[0].extensions?.code}: ${errors[0].message}`));
          const update = data.jobUpdates;
          last = update.cursor;
          console.log(JSON.stringify(update));
          console.error(`${update.kind.padEnd(9)} attempt ${update.job.attempts} ${bar(update.job)}`);
        },
        error: (err) => reject(err instanceof Error ? err : new Error(err?.reason || `closed ${err?.code}`)),
        complete: resolve, // after the terminal update
      },
    );
  });
  console.error(`the job has ended; last cursor ${last}`);
  await client.dispose();
  process.exit(0);
} catch (err) {
  console.error(`error: ${err.message}`);
  process.exit(1);
}
