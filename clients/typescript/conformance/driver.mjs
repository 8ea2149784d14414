// The TypeScript SDK's conformance driver (clients/conformance/README.md): runs the plan's
// scenarios with the SDK's public API and writes one result line per scenario.
//
//   .venv/bin/python -m tests.conformance.harness -- node clients/typescript/conformance/driver.mjs
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";

import { GrpcStatus, MemoryCursorStore, ParleyClient, ParleyError, ReceiptKind, nodeWebSocketFactory } from "../dist/index.js";

const DEFAULT_TIMEOUT_S = 10;
const plan = JSON.parse(readFileSync(process.env.PARLEY_CONFORMANCE_PLAN, "utf8"));
const resultsFile = process.env.PARLEY_CONFORMANCE_RESULTS;
const base = (process.env.PARLEY_WS_URL || plan.ws_url).replace(/\/v1\/connect$/, "");
const caFile = process.env.PARLEY_CA_FILE || plan.ca_file;
const wsFactory = await nodeWebSocketFactory({ ca: readFileSync(caFile) });
const encoder = new TextEncoder();
const decoder = new TextDecoder();

class StepFailed extends Error {}

async function until(condition, timeoutS, what) {
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    const value = condition();
    if (value) return value;
    if (Date.now() > deadline) throw new StepFailed(`timed out after ${timeoutS}s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function withTimeout(promise, timeoutS, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepFailed(`timed out after ${timeoutS}s: ${what}`)), timeoutS * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One device of one user: SDK client, cursor store, what its application received. */
class Client {
  constructor(userId, token, deviceId) {
    this.userId = userId;
    this.deviceId = deviceId;
    this.store = new MemoryCursorStore();
    this.messages = new Map();
    this.readUpto = new Map();
    this.receipts = [];
    this.disconnects = 0;
    this.killed = false;
    this.socket = undefined;
    // Sockets are recorded so kill_connection can abort the transport under the SDK.
    const webSocket = (url, protocols) => {
      const socket = wsFactory(url, protocols);
      if (url.endsWith("/v1/connect")) this.socket = socket;
      return socket;
    };
    this.sdk = new ParleyClient({ url: base, token, webSocket });
    this.session = undefined;
  }

  async connect(timeoutS) {
    const session = await this.sdk.session({ deviceId: this.deviceId, cursorStore: this.store, ackMode: "manual" });
    this.session = session;
    session.on("message", async (event) => {
      const list = this.messages.get(event.conversationId) ?? [];
      list.push(event);
      this.messages.set(event.conversationId, list);
      // Processed as soon as received: cursor saved and acknowledged now.
      await session.ack(event.conversationId, event.seq);
    });
    session.on("receipt", (receipt) => this.receipts.push(receipt));
    session.on("state", (event) => {
      if (event.state === "disconnected") this.disconnects += 1;
    });
    await withTimeout(session.waitSynced(), timeoutS, "the first sync_complete");
  }

  async close() {
    await this.session?.close();
    this.sdk.close();
  }
}

function body(step) {
  if (step.body_hex !== undefined) return Uint8Array.from(step.body_hex.match(/../g) ?? [], (h) => parseInt(h, 16));
  if (step.body_size !== undefined) return encoder.encode("x".repeat(step.body_size));
  return step.text ?? "";
}

function clientMessageId(step) {
  if (step.client_message_id !== undefined) return step.client_message_id;
  if (step.client_message_id_size !== undefined) return "k".repeat(step.client_message_id_size);
  return undefined;
}

function checkOutcome(expect, outcome) {
  if (expect === undefined) {
    if (outcome.error) throw new StepFailed(`send failed: ${outcome.error.codeName} ${outcome.error.message}`);
    return outcome.ack;
  }
  if (expect.error !== undefined) {
    if (!outcome.error) throw new StepFailed(`expected ${expect.error.code}, got seq ${outcome.ack.seq}`);
    const status = GrpcStatus[expect.error.grpc_status];
    if (outcome.error.grpcStatus !== status || outcome.error.codeName !== expect.error.code) {
      throw new StepFailed(
        `expected ${expect.error.grpc_status}/${expect.error.code}, got ${outcome.error.grpcStatus}/${outcome.error.codeName}: ${outcome.error.message}`,
      );
    }
    return undefined;
  }
  if (outcome.error) throw new StepFailed(`expected seq ${expect.seq}, got ${outcome.error.codeName}: ${outcome.error.message}`);
  const ack = outcome.ack;
  if (expect.seq !== undefined && Number(ack.seq) !== expect.seq) throw new StepFailed(`expected seq ${expect.seq}, got ${ack.seq}`);
  if (expect.duplicate !== undefined && ack.duplicate !== expect.duplicate) {
    throw new StepFailed(`expected duplicate=${expect.duplicate}, got ${ack.duplicate}`);
  }
  return ack;
}

async function runScenario(scenario) {
  const clients = new Map();
  for (const [key, spec] of Object.entries(scenario.clients)) {
    const user = scenario.users[spec.user];
    clients.set(key, new Client(user.user_id, user.token, spec.device_id));
  }
  const userIds = Object.fromEntries(Object.entries(scenario.users).map(([k, u]) => [k, u.user_id]));
  const conversationOf = (step) => step.conversation_id ?? scenario.conversations[step.conversation];
  let index = 0;
  try {
    for (const [i, step] of scenario.steps.entries()) {
      index = i;
      const client = clients.get(step.client);
      if (client === undefined) throw new StepFailed(`unknown client ${step.client}`);
      const timeoutS = step.timeout_s ?? DEFAULT_TIMEOUT_S;
      const conversationId = conversationOf(step);
      switch (step.op) {
        case "connect":
          await client.connect(timeoutS);
          break;
        case "disconnect":
          await client.session.close();
          break;
        case "kill_connection":
          client.killed = true;
          // No clean close and no help from the SDK: the transport just dies.
          await until(() => client.socket?.readyState === 1, timeoutS, "an open connection to kill");
          client.socket.terminate();
          break;
        case "send": {
          const options = clientMessageId(step) === undefined ? {} : { clientMessageId: clientMessageId(step) };
          let outcome;
          try {
            const ack =
              step.via === "unary"
                ? await withTimeout(client.sdk.sendOnce(conversationId, body(step), { ...options, deviceId: client.deviceId }), timeoutS, "unary send")
                : await withTimeout(client.session.send(conversationId, body(step), options), timeoutS, "send ack");
            outcome = { ack };
          } catch (error) {
            if (!(error instanceof ParleyError)) throw error;
            outcome = { error };
          }
          checkOutcome(step.expect, outcome);
          break;
        }
        case "send_many":
          for (let n = 1; n <= step.count; n++) {
            const ack = await withTimeout(client.session.send(conversationId, step.text.replaceAll("{i}", String(n))), timeoutS, "send ack");
            const first = step.expect?.first_seq;
            if (first !== undefined && Number(ack.seq) !== first + n - 1) throw new StepFailed(`send ${n}: expected seq ${first + n - 1}, got ${ack.seq}`);
          }
          break;
        case "expect_messages": {
          const wanted =
            step.messages ??
            Array.from({ length: step.count }, (_, n) => ({
              seq: step.first_seq + n,
              text: step.text.replaceAll("{i}", String(n + 1)),
              sender: step.sender,
            }));
          const from = client.readUpto.get(conversationId) ?? 0;
          const list = () => client.messages.get(conversationId) ?? [];
          await until(() => list().length >= from + wanted.length, timeoutS, `${wanted.length} messages in ${step.conversation}`);
          const got = list().slice(from, from + wanted.length);
          for (const [n, want] of wanted.entries()) {
            const m = got[n];
            const text = want.body_size !== undefined ? "x".repeat(want.body_size) : want.text;
            const problems = [];
            if (m.seq !== want.seq) problems.push(`seq ${m.seq} != ${want.seq}`);
            if (decoder.decode(m.message.body) !== text) problems.push(`text ${JSON.stringify(m.text.slice(0, 40))} != ${JSON.stringify(text.slice(0, 40))}`);
            if (m.senderId !== userIds[want.sender]) problems.push(`sender ${m.senderId} != ${userIds[want.sender]}`);
            if (want.client_message_id !== undefined && m.message.clientMessageId !== want.client_message_id) {
              problems.push(`client_message_id ${m.message.clientMessageId} != ${want.client_message_id}`);
            }
            if (problems.length > 0) throw new StepFailed(`message ${n}: ${problems.join(", ")}`);
          }
          client.readUpto.set(conversationId, from + wanted.length);
          break;
        }
        case "resync":
          if (!client.session.resync({ [conversationId]: step.after_seq })) throw new StepFailed("resync while disconnected");
          break;
        case "mark_read":
          client.session.markRead(conversationId, step.seq);
          break;
        case "expect_receipt": {
          const kind = ReceiptKind[step.kind];
          await until(
            () =>
              client.receipts.some(
                (r) => r.conversationId === conversationId && r.userId === userIds[step.user] && r.kind === kind && Number(r.seq) >= step.seq,
              ),
            timeoutS,
            `a ${step.kind} receipt of ${step.user} for seq ${step.seq}`,
          );
          break;
        }
        default:
          throw new StepFailed(`unknown op ${step.op}`);
      }
    }
    for (const [key, client] of clients) {
      if (client.killed && client.disconnects === 0) {
        return { scenario: scenario.name, status: "fail", step: index, detail: `${key}: the SDK never reported the killed connection` };
      }
    }
    return { scenario: scenario.name, status: "pass" };
  } catch (error) {
    return { scenario: scenario.name, status: "fail", step: index, detail: String(error?.message ?? error) };
  } finally {
    await Promise.all([...clients.values()].map((c) => c.close().catch(() => undefined)));
  }
}

writeFileSync(resultsFile, "");
for (const scenario of plan.scenarios) {
  const result = await runScenario(scenario);
  console.log(`${result.status} ${scenario.name}${result.detail ? `: step ${result.step}: ${result.detail}` : ""}`);
  appendFileSync(resultsFile, `${JSON.stringify(result)}\n`);
}
process.exit(0);
