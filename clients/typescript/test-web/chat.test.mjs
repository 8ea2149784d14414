// The web chat (clients/web, built on this SDK) in headless Chromium (Debian's, driven by
// playwright-core), against the real stack. Screenshots go to $PARLEY_ARTIFACTS_DIR.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import { WS_URL, client, user } from "../test/helpers.mjs";

const PAGE_URL = WS_URL.replace(/^ws/, "http") + "/";
const ARTIFACTS = process.env.PARLEY_ARTIFACTS_DIR || join(process.cwd(), "test-artifacts");
// Generous: CI machines are shared and a freshly started stack is slow for its first seconds.
const TIMEOUT = 20_000;
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.PARLEY_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update"],
  });
});
after(async () => {
  await browser?.close();
});

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

/** A fresh browser profile with a signed-in page. */
async function signedIn(userId) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  await page.goto(PAGE_URL);
  await page.fill("#signin-user", userId);
  await page.click("#signin-button");
  await page.waitForSelector("#chat:not([hidden])");
  await page.waitForSelector('#status[data-state="synced"]');
  return { context, page, errors };
}

function conversationItem(page, title) {
  return page.locator("#conversations li", { has: page.locator(".title", { hasText: title }) });
}

async function messages(page) {
  return page.$$eval("#messages li.message", (items) =>
    items.map((li) => ({ seq: Number(li.dataset.seq), sender: li.dataset.sender, text: li.querySelector(".body").textContent, tick: li.dataset.tick ?? "" })),
  );
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

test("two people chat: list, presence, typing, live messages, ticks; reload keeps history; an offline peer catches up", async () => {
  const [a, b] = [user("alice"), user("bob")];
  const alice = await signedIn(a);
  const bob = await signedIn(b);

  // Alice starts a direct conversation; Bob's list shows it once a message arrives.
  await alice.page.fill("#new-members", b);
  await alice.page.click("#new-chat button");
  await alice.page.waitForSelector(`#conversation-title:text("${b}")`);
  await send(alice.page, "hi bob");
  try {
    await alice.page.waitForSelector('#messages li.mine[data-seq="1"]');
  } catch (error) {
    await shot(alice.page, "failed-first-send");
    const shown = await alice.page.$$eval("#messages li", (l) => l.map((x) => [x.dataset.seq, x.dataset.tick, x.title]));
    throw new Error(`${error.message}; shown: ${JSON.stringify(shown)}; status: ${await alice.page.textContent("#status")}`);
  }

  const item = conversationItem(bob.page, a);
  await item.waitFor();
  await bob.page.waitForFunction(() => document.querySelector("#conversations li .unread")?.dataset.count === "1");
  // Presence dots: each sees the other online.
  await bob.page.waitForSelector('#conversations li .dot[data-status="online"]');
  await alice.page.waitForSelector('#conversations li .dot[data-status="online"]');
  await shot(bob.page, "01-bob-list-unread");

  await item.click();
  await bob.page.waitForSelector('#messages li.message[data-seq="1"]');
  assert.deepEqual((await messages(bob.page)).map((m) => [m.seq, m.sender, m.text]), [[1, a, "hi bob"]]);
  await bob.page.waitForFunction(() => document.querySelector("#conversations li .unread")?.dataset.count === "0");
  // Bob read it: Alice's message gets read ticks.
  await alice.page.waitForSelector('#messages li.mine[data-seq="1"][data-tick="read"]');

  // Typing shows on the other side; the reply arrives live.
  await bob.page.type("#text", "hello al");
  await alice.page.waitForSelector(`#typing:text("${b} is typing")`);
  await shot(alice.page, "02-alice-sees-typing");
  await bob.page.fill("#text", "hello alice");
  await bob.page.press("#text", "Enter");
  await alice.page.waitForSelector('#messages li.message[data-seq="2"]');
  assert.deepEqual((await messages(alice.page)).map((m) => [m.seq, m.sender, m.text]), [[1, a, "hi bob"], [2, b, "hello alice"]]);
  await bob.page.waitForSelector('#messages li.mine[data-seq="2"][data-tick="read"]');
  await shot(alice.page, "03-alice-chat");
  await shot(bob.page, "04-bob-chat");

  // A reload signs in again and shows the history.
  await bob.page.reload();
  await bob.page.waitForSelector('#status[data-state="synced"]');
  await conversationItem(bob.page, a).click();
  await bob.page.waitForSelector('#messages li.message[data-seq="2"]');
  assert.deepEqual((await messages(bob.page)).map((m) => m.text), ["hi bob", "hello alice"]);
  await shot(bob.page, "05-bob-after-reload");

  // Bob goes offline; Alice writes three more; Bob comes back in a new tab and catches up.
  await bob.page.close();
  await alice.page.waitForSelector('#conversations li .dot[data-status="offline"]', { timeout: 15_000 });
  for (const text of ["are you there?", "three", "four"]) await send(alice.page, text);
  await alice.page.waitForSelector('#messages li.mine[data-seq="5"][data-tick="sent"]');
  const back = await bob.context.newPage();
  back.setDefaultTimeout(TIMEOUT);
  await back.goto(PAGE_URL);
  await back.waitForSelector('#status[data-state="synced"]');
  await back.waitForFunction(() => document.querySelector("#conversations li .unread")?.dataset.count === "3");
  await shot(back, "06-bob-back-unread");
  await conversationItem(back, a).click();
  await back.waitForSelector('#messages li.message[data-seq="5"]');
  assert.deepEqual((await messages(back)).map((m) => m.seq), [1, 2, 3, 4, 5]);
  await alice.page.waitForSelector('#messages li.mine[data-seq="5"][data-tick="read"]');
  await shot(back, "07-bob-caught-up");

  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await Promise.all([alice.context.close(), bob.context.close()]);
});

test("a group conversation and history loaded on scroll", async () => {
  const [a, b, c] = [user("alice"), user("bob"), user("carol")];
  // 75 messages from Carol (through the SDK), more than two pages of history.
  const carol = client(c);
  try {
    const group = await carol.createGroup("book club", [a, b]);
    // Past the send rate limit: sendOnce waits out the server's retry-after.
    for (let i = 1; i <= 75; i++) await carol.sendOnce(group.id, `chapter ${i}`);
  } finally {
    carol.close();
  }

  const alice = await signedIn(a);
  const item = conversationItem(alice.page, "book club");
  await item.waitFor();
  await alice.page.waitForFunction(() => document.querySelector("#conversations li .unread")?.dataset.count === "75");
  await item.click();
  await alice.page.waitForSelector('#messages li.message[data-seq="75"]');
  assert.equal((await messages(alice.page)).length, 30);
  // Scrolling to the top loads older pages until the first message.
  for (let i = 0; i < 5 && !(await alice.page.$('#messages li.message[data-seq="1"]')); i++) {
    await alice.page.$eval("#scroller", (el) => el.scrollTo(0, 0));
    await alice.page.waitForTimeout(300);
  }
  await alice.page.waitForSelector('#messages li.message[data-seq="1"]');
  assert.deepEqual((await messages(alice.page)).map((m) => m.seq), Array.from({ length: 75 }, (_, i) => i + 1));
  await alice.page.waitForSelector('#history-status:text("beginning of the conversation")');
  await shot(alice.page, "08-group-history");

  // A new group started from the page.
  await alice.page.fill("#new-members", `${b}, ${c}`);
  await alice.page.fill("#new-name", "weekend");
  await alice.page.click("#new-chat button");
  await alice.page.waitForSelector('#conversation-title:text("weekend")');
  await send(alice.page, "who is in?");
  await alice.page.waitForSelector('#messages li.mine[data-seq="1"]');
  assert.deepEqual(alice.errors, []);
  await alice.context.close();
});

test("sign-in reports a refused user id", async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(PAGE_URL);
  await page.fill("#signin-user", "not valid");
  await page.click("#signin-button");
  await page.waitForSelector('#signin-error:text("user_id")');
  assert.equal(await page.isHidden("#chat"), true);
  await context.close();
});
