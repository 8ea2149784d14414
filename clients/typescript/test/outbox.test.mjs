// The session's outbox against a fake gateway socket (no network, no stack): what is written, when.
import assert from "node:assert/strict";
import { test } from "node:test";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";

import { ErrorCode, Session } from "../dist/index.js";
import { ConnectRequestSchema, ConnectResponseSchema } from "../dist/gen/parley/v1/gateway_pb.js";

const RESOURCE_EXHAUSTED = 8;

/** A socket that opens at once, answers hello with a welcome and logs every frame written to it. */
class FakeSocket {
  binaryType = "arraybuffer";
  readyState = 0;
  protocol = "parley.v1";
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;

  constructor(log) {
    this.log = log;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data) {
    const frame = fromBinary(ConnectRequestSchema, data);
    this.log.push(frame);
    if (frame.frame.case === "hello") this.push({ case: "welcome", value: { sessionId: "fake", userId: "u1" } });
  }

  close() {
    this.readyState = 3;
  }

  push(frame) {
    this.onmessage?.({ data: toBinary(ConnectResponseSchema, create(ConnectResponseSchema, { frame })) });
  }
}

async function until(condition, what, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function sendAck(clientMessageId, seq) {
  return { case: "sendAck", value: { conversationId: "c1", clientMessageId, seq: BigInt(seq) } };
}

test("a shed send holds later sends, which follow it in order, one at a time, after its probe is acked", async (t) => {
  const log = [];
  let socket;
  const session = new Session({
    url: "wss://fake.invalid",
    token: () => "token",
    deviceId: "d1",
    webSocket: () => (socket = new FakeSocket(log)),
  });
  // Closed even when an assertion fails: its timers would keep the test process alive.
  t.after(() => session.close());
  await session.start();
  await until(() => session.isConnected, "the welcome");
  // The log of the sends (by client_message_id) and of what the gateway did, in order.
  const sends = () => log.filter((f) => typeof f === "string" || f.frame.case === "send").map((f) => (typeof f === "string" ? f : f.frame.value.clientMessageId));

  const first = session.send("c1", "one", { clientMessageId: "cm-1" });
  await until(() => sends().includes("cm-1"), "cm-1 written");
  const written = log.find((f) => typeof f !== "string" && f.frame.case === "send");
  log.push("shed cm-1");
  const shedAt = Date.now();
  socket.push({
    case: "error",
    value: {
      requestId: written.requestId,
      code: ErrorCode.OVERLOADED,
      grpcStatus: RESOURCE_EXHAUSTED,
      message: "at capacity",
      retryAfter: { seconds: 0n, nanos: 200_000_000 },
    },
  });
  // Sent during the hold: they wait instead of meeting the same refusal or overtaking cm-1.
  const later = [session.send("c1", "two", { clientMessageId: "cm-2" }), session.send("c1", "three", { clientMessageId: "cm-3" })];

  // When the hold ends the oldest goes alone (the probe): nothing else was written since the shed.
  await until(() => sends().filter((s) => s === "cm-1").length === 2, "the probe");
  assert.ok(Date.now() - shedAt >= 190, "the probe waited for the retry-after");
  assert.deepEqual(sends(), ["cm-1", "shed cm-1", "cm-1"]);

  // The rest follow its ack one at a time, each after the previous one's ack (not before: the
  // ack is logged before it reaches the session), in send order.
  log.push("ack cm-1");
  socket.push(sendAck("cm-1", 1));
  await until(() => sends().includes("cm-2"), "the next waiting send");
  await new Promise((r) => setTimeout(r, 50)); // cm-3 must not follow before cm-2's ack
  assert.deepEqual(sends(), ["cm-1", "shed cm-1", "cm-1", "ack cm-1", "cm-2"]);
  log.push("ack cm-2");
  socket.push(sendAck("cm-2", 2));
  await until(() => sends().includes("cm-3"), "the last waiting send");
  assert.deepEqual(sends(), ["cm-1", "shed cm-1", "cm-1", "ack cm-1", "cm-2", "ack cm-2", "cm-3"]);
  socket.push(sendAck("cm-3", 3));
  const acks = await Promise.all([first, ...later]);
  assert.deepEqual(acks.map((ack) => Number(ack.seq)), [1, 2, 3]);
});
