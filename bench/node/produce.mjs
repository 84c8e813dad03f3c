// Enqueue BENCH_JOBS lines of BENCH_DATA_FILE (one data string a line) with addBulk.
import fs from 'node:fs';
import { Queue } from 'bullmq';

const connection = { host: process.env.REDIS_HOST, port: Number(process.env.REDIS_PORT) };
const queue = new Queue('bench', { connection });
const datas = fs.readFileSync(process.env.BENCH_DATA_FILE, 'utf8').split('\n').filter(Boolean);
for (let i = 0; i < datas.length; i += 1000) {
  await queue.addBulk(datas.slice(i, i + 1000).map((d) => ({ name: 'noop', data: { d } })));
}
await queue.close();
console.log(JSON.stringify({ enqueued: datas.length }));
