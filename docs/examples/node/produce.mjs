// A Node.js service logging a prediction and, later, feedback on it: feedbackflow's wire format
// v1 is plain JSON on two topics, keyed by the join key. npm install kafkajs@2.2.4
import { randomUUID } from "node:crypto";
import { Kafka } from "kafkajs";

const kafka = new Kafka({ brokers: [process.env.FEEDBACKFLOW_KAFKA_BOOTSTRAP ?? "127.0.0.1:9092"] });
const prefix = process.env.FEEDBACKFLOW_TOPIC_PREFIX ?? "feedbackflow";
const producer = kafka.producer();
await producer.connect();

const joinKey = `order-${randomUUID()}`;
const prediction = {
  prediction_id: randomUUID(),
  join_key: joinKey,
  application: "recommend_products",
  model: "ranker-v3",
  inputs: { user: "u-17" },
  outputs: { products: ["p-1", "p-2"] },
};
await producer.send({
  topic: `${prefix}.predictions`,
  messages: [{ key: joinKey, value: JSON.stringify(prediction) }],
});

const feedback = { feedback_id: randomUUID(), metric: "haiku_rating", join_key: joinKey, value: true };
await producer.send({
  topic: `${prefix}.feedback`,
  messages: [{ key: joinKey, value: JSON.stringify(feedback) }],
});
await producer.disconnect();
console.log(joinKey);
