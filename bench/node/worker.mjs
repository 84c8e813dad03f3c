// BullMQ worker: the same no-op handler, appending "<unix s> <data>\n" to BENCH_LOG.
import fs from 'node:fs';
import { Worker } from 'bullmq';

const connection = { host: process.env.REDIS_HOST, port: Number(process.env.REDIS_PORT) };
const fd = fs.openSync(process.env.BENCH_LOG, 'a');
const sleepMs = Number(process.env.BENCH_SLEEP || 0) * 1000;
const now = () => (performance.timeOrigin + performance.now()) / 1000;

const worker = new Worker('bench', async (job) => {
  fs.writeSync(fd, `${now().toFixed(6)} ${job.data.d}\n`);
  if (sleepMs) await new Promise((r) => setTimeout(r, sleepMs));
  return job.data.d;
}, { connection, concurrency: Number(process.env.BENCH_CONCURRENCY || 1) });

worker.on('error', (e) => console.error(e));
const stop = async () => { await worker.close(true); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
