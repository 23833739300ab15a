// The admin dashboard in a real headless Chromium, against the real floodwall binary under load:
// the chart moves, a denied key appears among the top offenders, clicking "block" makes that
// key's next checks denied for the block's length, keys that are not UTF-8, 300 bytes long or
// would display as another are shown escaped and blocked as they are, the page runs without a
// script or policy error, and a screenshot is saved (target/artifacts/dashboard.png). Without a
// token, a page of another loopback origin cannot drive the admin listener.
//
// Needs FLOODWALL_BIN (the binary) and CHROMIUM (the browser); scripts/test sets both.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createServer } from "node:http";
import { connect } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = process.env.ARTIFACTS ?? join(here, "..", "..", "target", "artifacts");
const TOKEN = "dashboard-test-token";

const CONFIG = `
[admin]
listen = "127.0.0.1:0"
tokens = { ops = "FLOODWALL_TEST_OPS_TOKEN" }

[[policy]]
name = "per-user"
algorithm = "sliding_window"
limit = 20
period = "1m"

[[policy]]
name = "per-user-daily"
algorithm = "fixed_window"
limit = 100
period = "1d"
mode = "shadow"

[[policy]]
name = "exports"
algorithm = "concurrency"
limit = 2
period = "30s"

[[policy]]
name = "search-trial"
algorithm = "gcra"
limit = 5
period = "1m"
mode = "shadow"

[[route]]
match = "GET /search"
key = "header:x-user"
policies = ["search-trial"]
respond = { status = 200, json = { results = [] } }

[[route]]
match = "GET /api/*"
key = "header:x-user"
policies = ["per-user", "per-user-daily"]
respond = { status = 200, json = { ok = true } }
`;

/** Starts `floodwall serve` on `config`; resolves with its main and admin base URLs. */
function serve(config) {
  const dir = mkdtempSync(join(tmpdir(), "floodwall-dashboard-"));
  const file = join(dir, "floodwall.toml");
  writeFileSync(file, config);
  const child = spawn(process.env.FLOODWALL_BIN, ["serve", "--listen", "127.0.0.1:0", "--config", file], {
    env: { ...process.env, FLOODWALL_TEST_OPS_TOKEN: TOKEN, RUST_LOG: "info" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let admin = null;
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const address = /address=(\S+)/.exec(line)?.[1];
      if (!address) return;
      if (line.includes("admin listening")) admin = `http://${address}`;
      else if (line.includes("floodwall listening")) resolve({ child, main: `http://${address}`, admin });
    });
    child.on("exit", (code) => reject(new Error(`floodwall exited with ${code} before listening`)));
  });
}

/** Requests from well-behaved users and one that goes far past its limit, until stopped. */
function load(main) {
  let running = true;
  // Each user stays under 20 a minute; scraper-7 does not, and mallory by far.
  const pause = { mallory: 5, "scraper-7": 1000, "trial-bot": 200 };
  const worker = async (user, n) => {
    // Spread over the interval, so that every second sees some.
    await new Promise((r) => setTimeout(r, n * 430));
    const path = user === "trial-bot" ? "/search" : "/api/items";
    while (running) {
      await fetch(`${main}${path}`, { headers: { "x-user": user } }).catch(() => {});
      await new Promise((r) => setTimeout(r, pause[user] ?? 3500));
    }
  };
  const users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
  const workers = [...users, "scraper-7", "trial-bot", "mallory", "mallory"].map(worker);
  return async () => {
    running = false;
    await Promise.all(workers);
  };
}

async function check(main, key) {
  const response = await fetch(`${main}/v1/check`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ policy: "per-user", key, cost: 0 }),
  });
  return { status: response.status, retryAfter: Number(response.headers.get("retry-after")) };
}

/** GET `path` with `x-user` set to `user`'s bytes exactly (fetch cannot send every byte). */
function rawGet(main, path, user) {
  const url = new URL(main);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    const chunks = [];
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const head = Buffer.concat(chunks).toString("latin1");
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]);
      const retryAfter = Number(/\r\nretry-after: (\d+)/i.exec(head)?.[1] ?? 0);
      resolve({ status, retryAfter });
    });
    socket.write(Buffer.concat([
      Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\nx-user: `),
      user,
      Buffer.from("\r\n\r\n"),
    ]));
  });
}

async function waitFor(what, condition, timeoutMs = 15000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("the dashboard shows live decisions and its block button blocks", async (t) => {
  assert.ok(process.env.FLOODWALL_BIN, "FLOODWALL_BIN must name the floodwall binary");
  assert.ok(process.env.CHROMIUM, "CHROMIUM must name a Chromium binary");
  const service = await serve(CONFIG);
  t.after(() => service.child.kill("SIGTERM"));
  const stopLoad = load(service.main);
  t.after(stopLoad);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
  });
  t.after(() => browser.close());
  // The token as the browser sends it after its prompt: HTTP Basic, any user name.
  const context = await browser.newContext({
    httpCredentials: { username: "ops", password: TOKEN },
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });

  // Without the token the page is refused and asks for it.
  const anonymous = await fetch(`${service.admin}/`);
  assert.equal(anonymous.status, 401);
  assert.match(anonymous.headers.get("www-authenticate"), /Basic/);

  const response = await page.goto(`${service.admin}/`);
  assert.equal(response.status(), 200);

  // The chart moves: its allowed line changes between two polls, and is not flat at zero.
  const points = () => page.locator("#chart polyline.allowed").getAttribute("points");
  const first = await waitFor("the chart's first points", async () => {
    const value = await points();
    return value && value.split(" ").length >= 3 ? value : null;
  });
  await waitFor("the chart to move", async () => (await points()) !== first);
  await waitFor("a rate of allowed requests", async () => Number(await page.locator("#rate-allowed").textContent()) > 0);
  await waitFor("a rate of denied requests", async () => Number(await page.locator("#rate-denied").textContent()) > 0);
  await waitFor("a rate of shadow denials", async () => Number(await page.locator("#rate-shadow").textContent()) > 0);
  // One policy's chart: the shadow policy denies nothing for real.
  await page.locator("#chart-policy").selectOption("search-trial");
  assert.equal(Number(await page.locator("#rate-denied").textContent()), 0);
  await page.locator("#chart-policy").selectOption("");

  // The key past its limit is among the top offenders, with its denials.
  const offender = page.locator('#offenders tr[data-key="mallory"][data-policy="per-user"]');
  await offender.waitFor({ timeout: 15000 });
  const denied = Number(await offender.locator("td.number").textContent());
  assert.ok(denied > 0, `mallory denied ${denied} times`);
  // Well-behaved users are not.
  assert.equal(await page.locator('#offenders tr[data-key="alice"]').count(), 0);

  // Clicking block blocks it: the next checks are denied for the block's hour, not the
  // minute of the rate.
  await page.locator("#block-for").selectOption("1h");
  await offender.locator("button.block").click();
  await page.locator('#blocks tr[data-key="mallory"]').waitFor({ timeout: 5000 });
  const blocked = await check(service.main, "mallory");
  assert.equal(blocked.status, 429);
  assert.ok(blocked.retryAfter > 3500, `Retry-After ${blocked.retryAfter} after a 1 h block`);
  assert.equal((await check(service.main, "alice")).status, 200);
  assert.match(await page.locator("#status").textContent(), /blocked mallory/);

  // Keys of any bytes and length: one that is not UTF-8, one of 300 bytes, and one that would
  // display as another. Each tops the offenders, is shown escaped, and its block button blocks
  // it as it is.
  const hostile = Buffer.from([0xff, 0xfe]);
  const long = Buffer.from("long-".repeat(60));
  const lookalike = Buffer.from("\u202e1.0.0.01");
  for (const user of [hostile, long, lookalike]) {
    for (let i = 0; i < 25; i++) await rawGet(service.main, "/api/items", user);
  }
  for (const [user, encoded, shown] of [
    [hostile, "%FF%FE", "\\xff\\xfe"],
    [long, "long-".repeat(60), "long-".repeat(60)],
    [lookalike, "%E2%80%AE1.0.0.01", "\\u{202e}1.0.0.01"],
  ]) {
    const row = page.locator(`#offenders tr[data-key="${encoded}"][data-policy="per-user"]`);
    await row.waitFor({ timeout: 15000 });
    assert.equal(await row.locator("td.key").textContent(), shown);
    await row.locator("button.block").click();
    await page.locator(`#blocks tr[data-key="${encoded}"]`).waitFor({ timeout: 5000 });
    assert.equal(await page.locator(`#blocks tr[data-key="${encoded}"] td.key`).textContent(), shown);
    const refused = await rawGet(service.main, "/api/items", user);
    assert.equal(refused.status, 429, shown);
    assert.ok(refused.retryAfter > 3500, `Retry-After ${refused.retryAfter} for ${shown} after a 1 h block`);
  }

  // Inspect shows the key's state.
  await offender.locator("button.inspect").click();
  await waitFor("the inspected state", async () => /"remaining"/.test(await page.locator("#inspected").textContent()));

  // A key whose settle charged past what was left is denied, and inspect says what it owes.
  const post = async (path, body) =>
    (await fetch(`${service.main}${path}`, { method: "POST", body: JSON.stringify(body) })).json();
  const reserved = await post("/v1/check", { policy: "per-user", key: "debtor", cost: 1, reserve: true });
  const settled = await post("/v1/settle", { reservation: reserved.reservation, cost: 30 });
  assert.ok(settled.decisions[0].debt > 0, JSON.stringify(settled));
  // Denied often enough to rank among the top offenders.
  for (let i = 0; i < 40; i++) {
    const denied = await post("/v1/check", { policy: "per-user", key: "debtor", cost: 1 });
    assert.equal(denied.allowed, false);
  }
  const debtor = page.locator('#offenders tr[data-key="debtor"][data-policy="per-user"]');
  await debtor.waitFor({ timeout: 15000 });
  await debtor.locator("button.inspect").click();
  await waitFor("the debt of the inspected key", async () =>
    /in debt: owes \d+ units/.test(await page.locator("#inspected").textContent()));

  // The store, policies and routes are shown.
  assert.match(await page.locator("#store").textContent(), /memory:\/\/ · \d+ of 1,000,000 keys/);
  assert.equal(await page.locator("#policies tbody tr").count(), 4);
  assert.match(await page.locator("#routes tbody").textContent(), /GET \/api\/\*/);

  // SCREENSHOT_AFTER_S lets the chart fill for a picture (the README's is taken so).
  await new Promise((r) => setTimeout(r, Number(process.env.SCREENSHOT_AFTER_S ?? 0) * 1000));
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
  // Closed before the service stops, so that its last polls do not fail.
  await browser.close();
  assert.deepEqual(problems, []);
});

test("a page of another origin cannot drive a token-less admin listener", async (t) => {
  const service = await serve(`
[admin]
listen = "127.0.0.1:0"

[[policy]]
name = "per-user"
algorithm = "fixed_window"
limit = 10
period = "1h"
`);
  t.after(() => service.child.kill("SIGTERM"));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const remaining = async () => {
    const state = await fetch(`${service.admin}/v1/limits/per-user/victim`).then((r) => r.json());
    return state.remaining;
  };
  assert.equal(await remaining(), 10);

  // Another origin on the same loopback address (another port): what a local dev server, or a
  // page an attacker got there, would be. It sends what a form or a no-cors fetch can send.
  const elsewhere = createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end("<!doctype html><title>elsewhere</title>");
  });
  await new Promise((resolve) => elsewhere.listen(0, "127.0.0.1", resolve));
  t.after(() => elsewhere.close());
  await page.goto(`http://127.0.0.1:${elsewhere.address().port}/attack.html`);
  const sent = await page.evaluate(async (admin) => {
    try {
      await fetch(`${admin}/v1/limits/per-user/victim/penalty`, {
        method: "POST",
        mode: "no-cors",
        headers: { "content-type": "text/plain" },
        body: '{"units": 10}',
      });
      return "sent";
    } catch (error) {
      return String(error);
    }
  }, service.admin);
  assert.equal(sent, "sent");
  assert.equal(await remaining(), 10, "the page drained the key");

  // Its own page is answered: the dashboard loads and polls.
  const own = await page.goto(`${service.admin}/`);
  assert.equal(own.status(), 200);
  await page.locator("#policies tbody tr").first().waitFor({ timeout: 5000 });
  await browser.close();
});
