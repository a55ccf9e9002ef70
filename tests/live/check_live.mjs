// The live page, in Debian's Chromium driven by Playwright, against the real binary:
//  1. under seeded load, the per-type rates move and agree with /metrics within a tolerance;
//  2. a rejected event sent meanwhile appears with its reason;
//  3. freshness shows the tables catching up with the log;
//  4. the findings (the report's summary and charts) appear;
//  5. zero console errors; a screenshot is saved;
//  6. the page runs under a CSP with its script by hash (no 'unsafe-inline'), charts as
//     images, no console errors (a CSP violation is one);
//  7. with API keys: 401 without a key, 403 with a write-only key; with a read key the page
//     works, drops ?key= from the address bar, and opens the report with the key.
// Usage: node check_live.mjs QUESTLOG_BIN WORK_DIR ARTIFACTS_DIR
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";

const [bin, work, artifacts] = process.argv.slice(2);
const LOAD_EVENTS = 60000;
const LOAD_RATE = 4000;

function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

// Polls `check` until it holds or `ms` pass (bounded; says what it waited for).
async function waitFor(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last === true) return;
    await new Promise(r => setTimeout(r, 200));
  }
  fail(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

// Starts `serve` on port 0; resolves with the process and its address once /healthz answers.
async function startServe(dir, extra = []) {
  const proc = spawn(bin, ["--data-dir", dir, "serve", "--listen", "127.0.0.1:0", "--project-interval-ms", "500", ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "", err = "";
  proc.stderr.on("data", d => { err += d; });
  const addr = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`serve printed no address: ${err}`)), 30000);
    proc.stdout.on("data", d => {
      out += d;
      const m = out.match(/http:\/\/[0-9.:]+/);
      if (m) { clearTimeout(t); resolve(m[0]); }
    });
    proc.on("exit", code => reject(new Error(`serve exited (${code}): ${err}`)));
  }).catch(e => fail(e.message));
  await waitFor("/healthz", 30000, async () => (await fetch(`${addr}/healthz`).catch(() => ({ status: 0 }))).status === 200);
  return { proc, addr };
}

async function stop(proc) {
  const exited = new Promise(r => proc.on("exit", r));
  proc.kill("SIGTERM");
  await exited;
}

// Accepted events per type from /metrics, and their sum.
async function metricsByType(addr) {
  const text = await (await fetch(`${addr}/metrics`)).text();
  const by = {};
  for (const l of text.split("\n").filter(l => l.startsWith("questlog_events_accepted_total{"))) {
    by[l.match(/event_type="([a-z_]+)"/)[1]] = Number(l.split(" ").pop());
  }
  return by;
}

async function metricsAccepted(addr) {
  return Object.values(await metricsByType(addr)).reduce((a, b) => a + b, 0);
}

// What the page shows per type: accepted so far, and events/s now.
async function pageByType(page) {
  return page.$$eval("#rates td[data-accepted]", tds => Object.fromEntries(tds.map(td => [td.dataset.type, Number(td.dataset.accepted)])));
}

const num = async (page, sel) => Number(await page.getAttribute(sel, "data-value"));

async function openPage(browser, url) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("console", m => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", e => errors.push(String(e)));
  const resp = await page.goto(url);
  return { page, errors, status: resp.status() };
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
try {
  // --- without keys, under load -------------------------------------------------------
  const { proc, addr } = await startServe(`${work}/open`);
  const load = spawn(bin, ["generate", "--url", addr, "--seed", "7", "--events", String(LOAD_EVENTS), "--rate", String(LOAD_RATE), "--concurrency", "2", "--batch", "200"], { stdio: "ignore" });
  const loadDone = new Promise(r => load.on("exit", r));
  const { page, errors, status } = await openPage(browser, `${addr}/`);
  if (status !== 200) fail(`GET / answered ${status}`);
  const head = await fetch(`${addr}/`);
  const csp = head.headers.get("content-security-policy") || "";
  const scriptSrc = csp.split(";").map(d => d.trim()).find(d => d.startsWith("script-src")) || "";
  if (!scriptSrc.includes("'sha256-") || scriptSrc.includes("unsafe-inline")) fail(`the page's CSP allows inline scripts or lacks a hash: ${csp}`);
  if (!csp.includes("frame-ancestors 'none'")) fail(`the page may be framed: ${csp}`);
  for (const [h, v] of [["cache-control", "no-store"], ["referrer-policy", "no-referrer"]]) {
    if (head.headers.get(h) !== v) fail(`${h}: ${head.headers.get(h)}`);
  }
  console.log(`ok: the page's CSP: ${scriptSrc.slice(0, 40)}…, no 'unsafe-inline' for scripts`);

  await waitFor("every per-type rate above 0", 30000, async () => {
    const rates = await page.$$eval("#rates td[data-rate]", tds => tds.map(td => Number(td.dataset.rate)));
    return rates.length === 5 && rates.every(r => r > 0) ? true : rates;
  });
  const first = await num(page, "#accepted-total");
  await waitFor("the accepted count to move", 30000, async () => (await num(page, "#accepted-total")) > first + 2000);

  // The page against /metrics: its count lies between two readings of /metrics taken
  // around it (it is at most a poll old), and its rate within half of /metrics' own.
  const m0 = await metricsAccepted(addr);
  const t0 = Date.now();
  await new Promise(r => setTimeout(r, 3000));
  const m1 = await metricsAccepted(addr);
  const shown = await num(page, "#accepted-total");
  const rate = await num(page, "#rate-total");
  const m2 = await metricsAccepted(addr);
  const metricsRate = (m1 - m0) / ((Date.now() - t0) / 1000);
  if (!(shown <= m2 && shown >= m1 - 3 * LOAD_RATE)) fail(`page shows ${shown} accepted, /metrics ${m1}..${m2}`);
  if (!(Math.abs(rate - metricsRate) <= 0.5 * metricsRate)) fail(`page shows ${rate} events/s, /metrics ${metricsRate.toFixed(0)} events/s`);
  // Per type, the same: between two readings of /metrics around the page's.
  const before = await metricsByType(addr);
  const perType = await pageByType(page);
  const after = await metricsByType(addr);
  for (const [t, n] of Object.entries(perType)) {
    const slack = 3 * LOAD_RATE;
    if (!(n <= (after[t] ?? 0) && n >= (before[t] ?? 0) - slack)) fail(`${t}: page shows ${n} accepted, /metrics ${before[t]}..${after[t]}`);
  }
  if (Object.keys(perType).length !== 5 || Object.values(perType).some(n => n === 0)) fail(`per-type counts ${JSON.stringify(perType)}`);
  console.log(`ok: rates move; page ${shown} accepted at ${rate.toFixed(0)}/s, /metrics ${m1}..${m2} at ${metricsRate.toFixed(0)}/s; per type ${JSON.stringify(perType)}`);

  // A rejected event sent now shows up with its reason.
  const marker = `live-check-${Date.now()}`;
  const r = await fetch(`${addr}/v1/events`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ event_type: "moonwalk", marker }) });
  if (r.status !== 200) fail(`POST of the rejected event answered ${r.status}`);
  await waitFor("the rejected event on the page", 15000, async () => {
    const t = await page.textContent("#latest");
    return t.includes(marker) && t.includes("unknown_event_type") ? true : t.slice(0, 200);
  });
  console.log("ok: the rejected event appears with its reason");

  // Freshness: the tables catch up with the log once the load ends.
  const seen = [];
  await loadDone;
  await waitFor("the tables to reach the log's end", 60000, async () => {
    const [at, end] = [await num(page, "#tables-at"), await num(page, "#log-end")];
    seen.push(at);
    return end >= LOAD_EVENTS && at === end ? true : { at, end };
  });
  for (let i = 1; i < seen.length; i++) if (seen[i] < seen[i - 1]) fail(`the tables' offset went down: ${seen}`);
  if ((await page.textContent("#lag")) !== "up to date") fail(`lag shows ${await page.textContent("#lag")}`);
  console.log(`ok: freshness showed the tables catching up (${seen[0]} → ${seen[seen.length - 1]})`);

  await waitFor("the findings", 60000, async () => {
    const lines = await page.locator("#summary li").count();
    const charts = await page.locator("#charts img.chart").count();
    const text = await page.textContent("#summary");
    return lines >= 5 && charts >= 1 && text.includes(`${LOAD_EVENTS.toLocaleString("en-US")}`) ? true : { lines, charts };
  });
  const drawn = await page.$$eval("#charts img.chart", imgs => imgs.map(i => i.complete && i.naturalWidth > 0));
  if (!drawn.length || drawn.some(d => !d)) fail(`a chart image did not render: ${JSON.stringify(drawn)}`);
  console.log(`ok: the findings and ${drawn.length} charts (as images) are shown, for the whole load`);
  await page.screenshot({ path: `${artifacts}/live.png`, fullPage: true });
  console.log(`screenshot: ${artifacts}/live.png`);
  if (errors.length) fail(`console errors: ${errors.join(" | ")}`);
  await page.close();
  await stop(proc);

  // --- with API keys ----------------------------------------------------------------
  const keys = `${work}/keys.toml`;
  writeFileSync(keys, '[[key]]\napp = "game"\nkey = "write-only-key-0001"\n\n[[key]]\napp = "dashboard"\nkey = "read-key-000000001"\nscopes = ["read"]\n');
  const locked = await startServe(`${work}/keys`, ["--api-keys", keys]);
  for (const [url, what, want] of [[`${locked.addr}/v1/live`, "no key", 401], [`${locked.addr}/v1/live?key=write-only-key-0001`, "a write-only key", 403], [`${locked.addr}/report.html`, "no key", 401]]) {
    const s = (await fetch(url)).status;
    if (s !== want) fail(`${url} with ${what} answered ${s}, expected ${want}`);
  }
  const ok = await fetch(`${locked.addr}/v1/live`, { headers: { "X-API-Key": "read-key-000000001" } });
  if (ok.status !== 200) fail(`/v1/live with the read key answered ${ok.status}`);
  // Events from the game's key, so the keyed page has findings and a report.
  const sent = await fetch(`${locked.addr}/v1/events`, { method: "POST", headers: { "X-API-Key": "write-only-key-0001", "Content-Type": "application/json" },
    body: JSON.stringify([{ event_type: "join_guild", guild_id: 1, name: "Knights", player_id: "p1" }, { event_type: "kill_enemy", enemy_id: 2, name: "Orc", level: 3, player_id: "p1" }]) });
  if (sent.status !== 200) fail(`POST with the write key answered ${sent.status}`);
  // The page with a write-only key says it may not read.
  const denied = await openPage(browser, `${locked.addr}/?key=write-only-key-0001`);
  await waitFor("the page to say the key may not read", 15000, async () => (await denied.page.textContent("#status")).startsWith("403"));
  await denied.page.close();
  const keyed = await openPage(browser, `${locked.addr}/?key=read-key-000000001`);
  if (keyed.status !== 200) fail(`/?key=… answered ${keyed.status}`);
  await waitFor("the keyed page's data", 15000, async () => (await keyed.page.getAttribute("#log-end", "data-value")) !== null);
  if (keyed.page.url().includes("key=")) fail(`the key stayed in the address bar: ${keyed.page.url()}`);
  await waitFor("the keyed page's findings", 60000, async () => (await keyed.page.locator("#summary li").count()) >= 1 && !(await keyed.page.textContent("#summary")).includes("waiting"));
  const [popup] = await Promise.all([keyed.page.waitForEvent("popup", { timeout: 15000 }), keyed.page.click("#link-report")]);
  await popup.waitForLoadState();
  const reportText = await popup.textContent("body");
  if (!popup.url().startsWith("blob:") || !reportText.includes("events")) fail(`the report link opened ${popup.url()}: ${reportText.slice(0, 200)}`);
  await keyed.page.reload();
  await waitFor("the keyed page after a reload (key kept for the tab)", 15000, async () => (await keyed.page.getAttribute("#log-end", "data-value")) === "2");
  if (keyed.errors.length) fail(`console errors with keys: ${keyed.errors.join(" | ")}`);
  console.log("ok: with API keys, 401 without a key, 403 with a write-only key; the page works with ?key=, drops it from the address bar, keeps it across a reload and opens the report");
  await stop(locked.proc);
} finally {
  await browser.close();
}
console.log("live page: all checks passed, 0 console errors");
