// BullMQ alone, set up as its docs recommend for throughput: add BENCH_JOBS jobs
// with addBulk, then drain them with one Worker (concurrency BENCH_CONCURRENCY,
// removeOnComplete/removeOnFail as "Going to production" advises). The handler
// only counts, in memory. Prints JSON: jobs/s from the first start to the last
// start, the same window the harness measures. Nothing else runs in the process.
import { Queue, Worker } from 'bullmq';

const connection = { host: process.env.REDIS_HOST, port: Number(process.env.REDIS_PORT) };
const total = Number(process.env.BENCH_JOBS || 10000);
const concurrency = Number(process.env.BENCH_CONCURRENCY || 1);
const name = process.env.BENCH_QUEUE || 'standalone';
const now = () => (performance.timeOrigin + performance.now()) / 1000;

const queue = new Queue(name, { connection });
for (let i = 0; i < total; i += 1000) {
  const n = Math.min(1000, total - i);
  await queue.addBulk(Array.from({ length: n }, (_, k) => ({ name: 'noop', data: { d: `u.${i + k}` } })));
}

let started = 0;
let first = 0;
let last = 0;
let resolveDone;
const done = new Promise((r) => { resolveDone = r; });
const worker = new Worker(name, async (job) => {
  last = now();
  if (started++ === 0) first = last;
  if (started === total) resolveDone();
  return job.data.d;
}, {
  connection,
  concurrency,
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 5000 },
});
worker.on('error', (e) => console.error(e));
await done;
await worker.close();
await queue.close();
console.log(JSON.stringify({ jobs: started, concurrency, rate: (started - 1) / (last - first), first, last }));
