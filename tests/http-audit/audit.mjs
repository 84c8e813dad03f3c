// The GraphQL-over-HTTP spec's own audit (graphql-http's auditServer) against a
// running server. tests/test_http_spec.py runs it against a real API process.
//
//   cd tests/http-audit && npm ci
//   node audit.mjs http://127.0.0.1:8000/graphql
//
// Prints one JSON array on stdout: every audit's id, name and status ("ok",
// "notice", "warn" or "error"), with the reason and the response's status and
// body for those that did not pass. Exits 0 however the audits went: the test
// decides what fails.

import { auditServer } from "graphql-http";

const url = process.argv[2] ?? process.env.USERQUEUE_URL ?? "http://127.0.0.1:8000/graphql";

const results = [];
for (const result of await auditServer({ url })) {
  const { id, name, status } = result;
  if (status === "ok") {
    results.push({ id, name, status });
    continue;
  }
  const response = result.response;
  results.push({
    id, name, status, reason: result.reason,
    response: {
      status: response.status,
      contentType: response.headers.get("content-type"),
      body: await response.text().catch((err) => `(unreadable: ${err})`),
    },
  });
}
process.stdout.write(JSON.stringify(results, null, 2) + "\n");
