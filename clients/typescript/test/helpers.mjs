// Shared by the tests: the stack comes from the environment (tests/e2e/test_typescript_sdk.py starts it).
import { readFileSync } from "node:fs";
import { request } from "node:https";
import { request as httpRequest } from "node:http";
import { randomBytes } from "node:crypto";

import { ParleyClient, nodeWebSocketFactory } from "../dist/index.js";

export const WS_URL = process.env.PARLEY_WS_URL ?? "";
if (WS_URL === "") throw new Error("PARLEY_WS_URL is not set: run these tests through `make test` (tests/e2e/test_typescript_sdk.py)");
const CA_FILE = process.env.PARLEY_CA_FILE ?? "";
export const CA = CA_FILE ? readFileSync(CA_FILE) : undefined;
export const webSocket = await nodeWebSocketFactory(CA ? { ca: CA } : {});

/** A unique user name per test run (the stack is shared by the tests). */
export function user(name) {
  return `${name}-${randomBytes(4).toString("hex")}`;
}

/** A token from the development endpoint of the gateway (GET /v1/dev/token). */
export function devToken(userId) {
  const url = new URL(`/v1/dev/token?user_id=${encodeURIComponent(userId)}`, WS_URL.replace(/^ws/, "http"));
  const get = url.protocol === "https:" ? request : httpRequest;
  return new Promise((resolve, reject) => {
    const req = get(url, { ca: CA }, (res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => (res.statusCode === 200 ? resolve(JSON.parse(body).token) : reject(new Error(`${res.statusCode} ${body}`))));
    });
    req.on("error", reject);
    req.end();
  });
}

export function client(userId, options = {}) {
  return new ParleyClient({ url: WS_URL, token: () => devToken(userId), webSocket, ...options });
}

/** Collects events of a session; `until` waits for a condition on them. */
export function collect(session, kind) {
  const events = [];
  session.on(kind, (event) => {
    events.push(event);
  });
  return events;
}

export async function until(condition, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
