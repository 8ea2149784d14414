// Unit tests of the pieces with no network: dedupe/ordering, backoff, cursor stores.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, MemoryCursorStore, OrderBuffer, WebStorageCursorStore } from "../dist/index.js";

test("the order buffer drops duplicates and holds items after a gap", () => {
  const buffer = new OrderBuffer({ c: 2 });
  assert.deepEqual(buffer.offer("c", 2, "dup"), []);
  assert.deepEqual(buffer.offer("c", 4, "four"), []);
  assert.deepEqual(buffer.gaps(), [{ conversationId: "c", position: 2, firstHeld: 4 }]);
  assert.deepEqual(buffer.offer("c", 3, "three"), ["three", "four"]);
  assert.equal(buffer.duplicates, 1);
  // A non-anchor item (own send ack) does not start a conversation; the next anchor does.
  assert.deepEqual(buffer.offer("d", 5, "own", false), []);
  assert.deepEqual(buffer.offer("d", 4, "four"), ["four", "own"]);
  assert.deepEqual(buffer.offer("e", 9, "x"), ["x"]);
  assert.deepEqual(buffer.offer("e", 11, "y"), []);
  assert.deepEqual(buffer.skipGap("e"), ["y"]);
});

test("backoff grows, is jittered downwards, is capped and resets", () => {
  const backoff = new Backoff({ initialMs: 100, maximumMs: 1000, jitter: 0.5, random: () => 1 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => backoff.nextDelayMs()), [50, 100, 200, 400, 500]);
  backoff.reset();
  assert.equal(backoff.nextDelayMs(), 50);
  assert.throws(() => new Backoff({ initialMs: 0 }));
});

test("cursor stores keep the highest seq", async () => {
  const memory = new MemoryCursorStore();
  await memory.save("c", 5);
  await memory.save("c", 3);
  assert.deepEqual(await memory.load(), { c: 5 });
  const map = new Map();
  const storage = { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, v) };
  const web = new WebStorageCursorStore(storage, "cursors");
  await web.save("c", 2);
  await web.save("c", 1);
  assert.deepEqual(await new WebStorageCursorStore(storage, "cursors").load(), { c: 2 });
  map.set("cursors", "not json");
  assert.deepEqual(await web.load(), {});
});
