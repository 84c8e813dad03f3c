// Scenario 3 for BullMQ: add one job at a time at BENCH_RATE jobs/s for BENCH_SECONDS
// (data = the send time, so the worker's start log gives enqueue->start), while a
// QueueEvents listener measures finish->subscriber from each 'completed' event's
// stream id (the millisecond it was written, at finish). Prints the latter as JSON.
import { Queue, QueueEvents } from 'bullmq';

const connection = { host: process.env.REDIS_HOST, port: Number(process.env.REDIS_PORT) };
const rate = Number(process.env.BENCH_RATE);
const seconds = Number(process.env.BENCH_SECONDS);
const total = Math.round(rate * seconds);
const now = () => performance.timeOrigin + performance.now(); // ms

const queue = new Queue('bench', { connection });
const events = new QueueEvents('bench', { connection });
await events.waitUntilReady();
const lat = [];
events.on('completed', (_args, id) => { lat.push(now() - Number(id.split('-')[0])); });

const t0 = now();
for (let i = 0; i < total; i++) {
  const due = t0 + (i * 1000) / rate;
  const wait = due - now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  await queue.add('noop', { d: `u${i % 100}:${(now() / 1000).toFixed(6)}` });
}
const deadline = now() + 10000;
while (lat.length < total && now() < deadline) await new Promise((r) => setTimeout(r, 20));
console.log(JSON.stringify({ sent: total, finishToSubscriber: lat }));
await events.close();
await queue.close();
