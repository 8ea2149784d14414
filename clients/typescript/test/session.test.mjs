// The SDK against the real stack (gateway, router, presence, history on Redis and Cassandra).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ErrorCode, MemoryCursorStore, ParleyClient, ParleyError, PresenceStatus, ReceiptKind } from "../dist/index.js";
import { WS_URL, client, collect, devToken, until, user, webSocket } from "./helpers.mjs";

test("two sessions chat: in-order messages, acks, delivery and read receipts", async () => {
  const [a, b] = [user("alice"), user("bob")];
  const alice = client(a);
  const bob = client(b);
  const { conversation } = await alice.createDirect(b);
  const sa = await alice.session();
  const sb = await bob.session();
  await Promise.all([sa.waitSynced(), sb.waitSynced()]);
  const received = collect(sb, "message");
  const receipts = collect(sa, "receipt");

  const acks = [];
  for (let i = 1; i <= 5; i++) acks.push(await sa.send(conversation.id, `hello ${i}`));
  assert.deepEqual(acks.map((ack) => Number(ack.seq)), [1, 2, 3, 4, 5]);
  await until(() => received.length === 5, "5 messages");
  assert.deepEqual(received.map((m) => [m.seq, m.text, m.senderId]), [1, 2, 3, 4, 5].map((i) => [i, `hello ${i}`, a]));

  // Automatic acks reach alice as a delivery receipt; a read marker as a read receipt.
  await until(() => receipts.some((r) => r.kind === ReceiptKind.DELIVERED && Number(r.seq) === 5), "delivery receipt");
  sb.markRead(conversation.id, 5);
  await until(() => receipts.some((r) => r.kind === ReceiptKind.READ && Number(r.seq) === 5 && r.userId === b), "read receipt");
  assert.equal(sb.cursors()[conversation.id], 5);

  const reply = await sb.send(conversation.id, "hi alice");
  assert.equal(Number(reply.seq), 6);
  await Promise.all([sa.close(), sb.close()]);
  alice.close();
  bob.close();
});

test("an offline device resumes from its cursors: everything missed, nothing twice", async () => {
  const [a, b] = [user("alice"), user("bob")];
  const alice = client(a);
  const bob = client(b);
  const { conversation } = await alice.createDirect(b);
  const store = new MemoryCursorStore();
  const first = await bob.session({ cursorStore: store, deviceId: "phone" });
  await first.waitSynced();
  const seen = collect(first, "message");
  for (let i = 1; i <= 3; i++) await alice.sendOnce(conversation.id, `m${i}`);
  await until(() => seen.length === 3, "3 live messages");
  await until(async () => (await store.load())[conversation.id] === 3, "cursor saved");
  await first.close();

  for (let i = 4; i <= 6; i++) await alice.sendOnce(conversation.id, `m${i}`);
  const second = await bob.session({ cursorStore: store, deviceId: "phone" });
  const resumed = collect(second, "message");
  await second.waitSynced();
  await until(() => resumed.length === 3, "the 3 missed messages");
  assert.deepEqual(resumed.map((m) => [m.seq, m.text]), [[4, "m4"], [5, "m5"], [6, "m6"]]);
  await second.close();
  alice.close();
  bob.close();
});

test("a broken connection resumes; unacked sends are retried with the same client_message_id", async () => {
  const [a, b] = [user("alice"), user("bob")];
  const alice = client(a);
  const bob = client(b);
  const { conversation } = await alice.createDirect(b);
  const sa = await alice.session({ backoff: undefined });
  const sb = await bob.session();
  await Promise.all([sa.waitSynced(), sb.waitSynced()]);
  const received = collect(sb, "message");
  const states = collect(sa, "state");

  // Sends queued while the connection is broken go out (once each) after the reconnect.
  const sends = [];
  for (let i = 1; i <= 10; i++) {
    if (i === 4) sa.reconnect("test: network dropped");
    sends.push(sa.send(conversation.id, `n${i}`, { clientMessageId: `cmid-${i}` }));
  }
  const acks = await Promise.all(sends);
  assert.deepEqual(acks.map((ack) => Number(ack.seq)).sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  await until(() => received.length === 10, "10 messages");
  assert.deepEqual(received.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.ok(states.some((s) => s.state === "disconnected"), "the session saw the break");
  const broke = states.findIndex((s) => s.state === "disconnected");
  assert.ok(states.slice(broke).some((s) => s.state === "connected"), "and connected again");

  // The same client_message_id again is the same message, marked duplicate.
  const again = await sa.send(conversation.id, "n1", { clientMessageId: "cmid-1" });
  assert.equal(again.duplicate, true);
  const history = await bob.history(conversation.id, { limit: 50 });
  assert.equal(history.messages.length, 10);
  await Promise.all([sa.close(), sb.close()]);
  alice.close();
  bob.close();
});

test("typing and presence reach the peer", async () => {
  const [a, b] = [user("alice"), user("bob")];
  const alice = client(a);
  const bob = client(b);
  const { conversation } = await alice.createDirect(b);
  const sb = await bob.session({ subscribePresence: true });
  await sb.waitSynced();
  const typing = collect(sb, "typing");
  const presence = collect(sb, "presence");
  const sa = await alice.session();
  await sa.waitSynced();
  await until(() => presence.some((p) => p.userId === a && p.status === PresenceStatus.ONLINE), "alice online");
  assert.equal(sa.typing(conversation.id, true), true);
  await until(() => typing.some((t) => t.userId === a && t.typing && t.conversationId === conversation.id), "typing");
  const [state] = await bob.presence([a]);
  assert.equal(state.status, PresenceStatus.ONLINE);
  await sa.close();
  await until(() => presence.some((p) => p.userId === a && p.status === PresenceStatus.OFFLINE), "alice offline");
  await sb.close();
  alice.close();
  bob.close();
});

test("history pages back to the first message; the list counts unread messages", async () => {
  const [a, b, c] = [user("alice"), user("bob"), user("carol")];
  const alice = client(a);
  const bob = client(b);
  const group = await alice.createGroup("trio", [b, c]);
  assert.deepEqual([...group.memberIds].sort(), [a, b, c].sort());
  for (let i = 1; i <= 25; i++) await alice.sendOnce(group.id, `g${i}`);

  const seqs = [];
  let page = await bob.history(group.id, { limit: 10 });
  seqs.unshift(...page.messages.map((m) => Number(m.seq)));
  while (page.hasMore) {
    page = await bob.history(group.id, { limit: 10, beforeSeq: page.nextCursor });
    seqs.unshift(...page.messages.map((m) => Number(m.seq)));
  }
  assert.deepEqual(seqs, Array.from({ length: 25 }, (_, i) => i + 1));
  const forward = await bob.history(group.id, { afterSeq: 20 });
  assert.deepEqual(forward.messages.map((m) => Number(m.seq)), [21, 22, 23, 24, 25]);

  const list = await bob.allConversations();
  const summary = list.find((s) => s.conversation?.id === group.id);
  assert.equal(Number(summary.unreadCount), 25);
  assert.equal(summary.conversation.name, "trio");
  alice.close();
  bob.close();
});

test("errors are typed: not a member, empty body, bad arguments; the session stays up", async () => {
  const [a, b, c] = [user("alice"), user("bob"), user("eve")];
  const alice = client(a);
  const eve = client(c);
  const { conversation } = await alice.createDirect(b);
  await assert.rejects(eve.history(conversation.id), (e) => e instanceof ParleyError && e.code === ErrorCode.NOT_A_MEMBER);
  await assert.rejects(eve.createDirect("bad user"), (e) => e instanceof ParleyError && e.code === ErrorCode.INVALID_ARGUMENT);
  const session = await alice.session({ encoding: "json" });
  await session.waitSynced();
  await assert.rejects(session.send(conversation.id, ""), (e) => e.code === ErrorCode.BODY_EMPTY);
  const es = await eve.session();
  await es.waitSynced();
  await assert.rejects(es.send(conversation.id, "let me in"), (e) => e.code === ErrorCode.NOT_A_MEMBER);
  // JSON framing works like binary.
  assert.equal(Number((await session.send(conversation.id, "still here")).seq), 1);
  await Promise.all([session.close(), es.close()]);
  alice.close();
  eve.close();
});

test("the token refresh hook is asked again after a refused token", async () => {
  const b = user("bob");
  const asked = [];
  const bob = new ParleyClient({
    url: WS_URL,
    webSocket,
    token: async ({ refresh }) => {
      asked.push(refresh);
      return asked.length === 1 ? "expired.or.forged" : devToken(b);
    },
  });
  const session = await bob.session();
  await session.waitSynced();
  assert.equal(session.userId, b);
  assert.deepEqual(asked, [false, true]);
  await session.close();
  // Calls refresh too: a forged first token, then a good one.
  const calls = [];
  const other = new ParleyClient({
    url: WS_URL,
    webSocket,
    token: async ({ refresh }) => {
      calls.push(refresh);
      return calls.length === 1 ? "forged" : devToken(b);
    },
  });
  // The refused upgrade makes the call socket ask for a fresh token and try again.
  assert.deepEqual((await other.listConversations()).conversations, []);
  assert.deepEqual(calls, [false, true]);
  other.close();
  bob.close();
});
