// Apollo Server answering the same `enqueue` mutation with a trivial resolver (no storage).
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';

const typeDefs = `#graphql
  enum JobStatus { QUEUED PROCESSING COMPLETED FAILED CANCELLED }
  type Job { id: ID!  requestData: String!  status: JobStatus!  attempts: Int! }
  type Query { ok: Boolean }
  type Mutation { enqueue(requestData: String!, idempotencyKey: String): Job! }
`;
let n = 0;
const resolvers = {
  Mutation: {
    enqueue: (_p, { requestData }) => ({ id: String(++n), requestData, status: 'QUEUED', attempts: 0 }),
  },
};
const server = new ApolloServer({ typeDefs, resolvers });
const { url } = await startStandaloneServer(server, {
  listen: { host: '127.0.0.1', port: Number(process.env.PORT) },
});
console.log(`apollo ready at ${url}`);
