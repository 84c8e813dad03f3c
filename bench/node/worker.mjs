// BullMQ worker for the harness: the same no-op handler as every system
// (bench/handlers.py): "<unix s> <data>\n" appended to an in-memory buffer that
// is written to BENCH_LOG every 50 ms in one write, so no job pays a syscall.
// Set up as BullMQ's "Going to production" guide advises: finished jobs are
// trimmed (removeOnComplete/removeOnFail with a count), errors are logged,
// SIGTERM/SIGINT close the worker; everything else is BullMQ's default.
import fs from 'node:fs';
import { Worker } from 'bullmq';

const connection = { host: process.env.REDIS_HOST, port: Number(process.env.REDIS_PORT) };
const fd = fs.openSync(process.env.BENCH_LOG, 'a');
const sleepMs = Number(process.env.BENCH_SLEEP || 0) * 1000;
const now = () => (performance.timeOrigin + performance.now()) / 1000;
let lines = [];
const flush = () => {
  if (lines.length) { fs.writeSync(fd, lines.join('')); lines = []; }
};
setInterval(flush, 50);

const worker = new Worker('bench', async (job) => {
  lines.push(`${now().toFixed(6)} ${job.data.d}\n`);
  if (sleepMs) await new Promise((r) => setTimeout(r, sleepMs));
  return job.data.d;
}, {
  connection,
  concurrency: Number(process.env.BENCH_CONCURRENCY || 1),
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 5000 },
});

worker.on('error', (e) => console.error(e));
const stop = async () => { flush(); await worker.close(true); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
