// The seed's worker: every POLL_MS, a batch of the queue into `events`, then deleted.
const { MongoClient } = require("mongodb");

const batchSize = Number(process.env.BATCH_SIZE || 1000);
const pollMs = Number(process.env.POLL_MS || 200);
const client = new MongoClient(process.env.MONGO_URL || "mongodb://localhost:27017/test_db");
const queue = client.db().collection(process.env.QUEUE_NAME || "events_queue");
const events = client.db().collection("events");

async function poll() {
  for (;;) {
    const batch = await queue.find().sort({ _id: 1 }).limit(batchSize).toArray();
    if (batch.length === 0) return;
    console.log("Processing batch...");
    const processed_at = new Date();
    await events.insertMany(batch.map(({ _id, ...e }) => ({ ...e, processed_at })));
    await queue.deleteMany({ _id: { $in: batch.map((e) => e._id) } });
  }
}

async function main() {
  await client.connect();
  console.log("Worker running...");
  console.log("Queue Ready");
  for (;;) {
    const started = Date.now();
    try {
      await poll();
    } catch (e) {
      console.error(e);
    }
    await new Promise((r) => setTimeout(r, Math.max(0, pollMs - (Date.now() - started))));
  }
}

main();
