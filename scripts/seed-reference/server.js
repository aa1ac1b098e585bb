// The seed's API server (../shared/seed/architecture-overview.txt), as scripts/bench's
// MongoDB reference: each POST /event writes one queue document on its own.
const express = require("express");
const { MongoClient } = require("mongodb");

const port = Number(process.env.PORT || 1000);
const client = new MongoClient(process.env.MONGO_URL || "mongodb://localhost:27017/test_db");
const queue = client.db().collection(process.env.QUEUE_NAME || "events_queue");
const events = client.db().collection("events");

const app = express();
app.use(express.json());

app.post("/event", async (req, res) => {
  const { site_id, event_type, path, user_id, timestamp } = req.body || {};
  if (!site_id || !event_type) {
    return res.status(400).json({ error: "site_id and event_type are required" });
  }
  const now = new Date();
  try {
    await queue.insertOne({
      site_id,
      event_type,
      path,
      user_id,
      timestamp: timestamp ? new Date(timestamp) : now,
      ingested_at: now,
    });
    res.status(202).json({ status: "queued" });
  } catch (e) {
    res.status(503).json({ error: String(e) });
  }
});

app.get("/stats", async (req, res) => {
  const match = { site_id: req.query.site_id };
  const [totals] = await events
    .aggregate([{ $match: match }, { $group: { _id: null, n: { $sum: 1 }, users: { $addToSet: "$user_id" } } }])
    .toArray();
  const top = await events
    .aggregate([{ $match: match }, { $group: { _id: "$path", count: { $sum: 1 } } }, { $sort: { count: -1 } }, { $limit: 10 }])
    .toArray();
  res.json({
    total_events: totals ? totals.n : 0,
    unique_users: totals ? totals.users.length : 0,
    top_paths: top.map((p) => ({ path: p._id, count: p.count })),
  });
});

client.connect().then(() => app.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`)));
