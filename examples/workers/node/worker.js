// A natsflow worker in Node.js: serves the custom action `billing.charge`.
//
// It binds to the action's durable consumer (made by `natsflow deploy`), takes
// each task, reports progress, publishes the result to the task's `reply_to`
// with a JetStream publish (header Nats-Msg-Id: result:<idempotency_key>), and
// acks the task only after the result's PubAck. Messages: README, "Subjects and
// messages: workers in any language"; schemas: `natsflow schema task|result|progress`.
//
//   npm ci && NATS_URL=nats://127.0.0.1:4222 node worker.js
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";

const ACTION = "billing.charge";
const STREAM = "NATSFLOW_TASKS";
const CONSUMER = "natsflow-action-" + ACTION.replaceAll(".", "_");

// A failure the workflow should know about: `retryable: false` ends the step at
// once, `true` lets natsflow retry it as the step's `retry` policy says.
class ChargeError extends Error {
  constructor(message, kind, retryable) {
    super(message);
    this.kind = kind;
    this.retryable = retryable;
  }
}

// The business logic (a stand-in): card "declined" is refused for good; card
// "flaky" fails its first attempt with a retryable error, as a gateway might.
async function charge(input, task) {
  if (input.card === "declined") throw new ChargeError("card declined", "declined", false);
  if (input.card === "flaky" && task.attempt === 1) {
    throw new ChargeError("payment gateway timed out", "gateway_timeout", true);
  }
  return { receipt: `r-${input.amount}`, attempt: task.attempt, worker: "node" };
}

const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
const js = jetstream(nc);
const consumer = await js.consumers.get(STREAM, CONSUMER); // binds; never creates one
const tasks = await consumer.consume({ max_messages: 1 });
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => tasks.stop());
console.log(`serving ${ACTION} on ${CONSUMER}`);

for await (const msg of tasks) {
  const task = msg.json();
  const about = { step: task.step, attempt: task.attempt, iteration: task.iteration };
  // progress: a plain publish, optional; it also counts as a heartbeat
  nc.publish(task.reply_to, JSON.stringify({ kind: "progress", ...about, message: "charging" }));
  let result;
  try {
    result = { kind: "result", ...about, ok: true, output: await charge(task.input, task) };
  } catch (err) {
    const known = err instanceof ChargeError;
    const error = {
      message: err.message,
      kind: known ? err.kind : "error",
      retryable: known ? err.retryable : true,
    };
    result = { kind: "result", ...about, ok: false, error };
  }
  try {
    await js.publish(task.reply_to, JSON.stringify(result), {
      msgID: "result:" + task.idempotency_key,
    });
    msg.ack(); // only after the PubAck: a crash in between redelivers the task
  } catch (err) {
    console.error(`result of ${task.idempotency_key} not stored: ${err.message}`);
    msg.nak(1000); // deliver the task again in a second
  }
}
await nc.drain();
