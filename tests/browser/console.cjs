// A person uses mailguard's console in headless Chromium (Debian's, through playwright-core),
// against the real mailguard that tests/console.rs started. Prints "READY overview" once the
// signed-in overview was seen without the mailbox (the test then trips it), and at the end one
// JSON object: what each page showed, the CSV exported, axe-core's serious and critical
// violations per page, the screenshots taken and every console, page or CSP error.
//
// Environment: CONSOLE_BASE, CONSOLE_MAILBOX, CONSOLE_SUPPORT_TOKEN (SUPPORT of acme),
// CONSOLE_GLOBEX_TOKEN (VIEWER of globex), CONSOLE_SHOTS (screenshot directory), NODE_PATH.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const env = (n) => { const v = process.env[n]; if (!v) throw new Error(`${n} is not set`); return v; };
const BASE = env('CONSOLE_BASE');
const MAILBOX = env('CONSOLE_MAILBOX');
const SHOTS = env('CONSOLE_SHOTS');
const STEP_MS = 15000;
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const out = { errors: [], axe: {}, screenshots: [] };
let page = null;
// Set for the one step whose refusal is the point (a VIEWER of another tenant).
let refusalExpected = false;

async function check(page, name) {
  const file = `${name}.png`;
  await page.screenshot({ path: path.join(SHOTS, file), fullPage: true });
  out.screenshots.push(file);
  // Evaluated through the DevTools protocol, so the page's CSP (no script at all) stays on.
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  out.axe[name] = result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
}

/// Reloads until `probe()` is truthy (each reload an event: the page's load), bounded.
async function until(page, probe, what, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(250);
    await page.reload({ waitUntil: 'load' });
  }
}

async function signIn(page, token) {
  await page.goto(`${BASE}/ui/login`, { waitUntil: 'load' });
  await page.fill('#token', token);
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type=submit]')]);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.MAILGUARD_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    context.setDefaultTimeout(STEP_MS);
    page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error' && !refusalExpected) out.errors.push(`console: ${m.text()}`); });
    page.on('response', (r) => {
      if (r.status() >= 400 && !refusalExpected) out.errors.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
    });
    page.on('pageerror', (e) => out.errors.push(`page: ${e.message}`));
    page.on('requestfailed', (r) => {
      // Aborted is not failed: a download handed to the browser, or a favicon fetch that the
      // next navigation cancelled.
      const why = (r.failure() || {}).errorText || '';
      if (!why.includes('ERR_ABORTED')) out.errors.push(`request failed: ${r.url()} (${why})`);
    });
    page.on('request', (r) => { if (!r.url().startsWith(BASE)) out.errors.push(`off-site request: ${r.url()}`); });

    // Not signed in: to the sign-in page.
    await page.goto(`${BASE}/ui/t/acme`, { waitUntil: 'load' });
    out.login_redirect = new URL(page.url()).pathname === '/ui/login';
    await check(page, 'login');

    await signIn(page, env('CONSOLE_SUPPORT_TOKEN'));
    out.overview_before = (await page.locator('#blocked').count()) > 0
      && (await page.locator('#blocked', { hasText: MAILBOX }).count()) > 0;
    process.stdout.write('READY overview\n');
    const row = page.locator('#blocked tr', { hasText: MAILBOX });
    await until(page, async () => (await row.count()) > 0, 'the tripped mailbox on the overview');
    out.overview_after = (await row.locator('.state').textContent()).trim();
    await check(page, 'overview');

    await Promise.all([page.waitForNavigation(), row.locator('a').click()]);
    out.mailbox_state = (await page.textContent('#state')).trim();
    await check(page, 'mailbox');

    await Promise.all([page.waitForNavigation(), page.locator('#mailbox-state a').first().click()]);
    // The timeline fills in as the incident's events arrive.
    await until(page, async () => (await page.locator('#timeline td', { hasText: 'ALERT_SENT' }).count()) > 0,
      'the incident timeline');
    out.incident_timeline = await page.$$eval('#timeline tbody tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent.trim()));
    await check(page, 'incident');

    await page.goto(`${BASE}/ui/t/acme/events`, { waitUntil: 'load' });
    const ids = () => page.$$eval('#events tbody tr', (trs) => trs.map((tr) => tr.textContent.replace(/\s+/g, ' ').trim()));
    out.events_page1 = await ids();
    await check(page, 'events');
    await Promise.all([page.waitForNavigation(), page.click('#next-page')]);
    out.events_page2 = await ids();

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    out.csv = fs.readFileSync(await download.path(), 'utf8');

    // Support lifts the permanent block, with a ticket and a confirmation.
    await page.goto(`${BASE}/ui/t/acme/mailboxes/${encodeURIComponent(MAILBOX)}`, { waitUntil: 'load' });
    await page.fill('#ticket', 'SUP-4711');
    await page.check('#confirm');
    await Promise.all([page.waitForNavigation(), page.click('#unblock')]);
    out.command_status = await until(page, async () => {
      const s = (await page.textContent('#command-status')).trim();
      return s === 'PENDING' ? null : s;
    }, 'the command to be decided');
    await check(page, 'command');
    await Promise.all([page.waitForNavigation(), page.click('#back-to-mailbox')]);
    out.mailbox_after_unblock = await until(page, async () => {
      const s = (await page.textContent('#state')).trim();
      return s === 'PERMANENTLY_BLOCKED' ? null : s;
    }, 'the mailbox to be unblocked');

    await page.goto(`${BASE}/ui/t/acme/exemptions`, { waitUntil: 'load' });
    await page.fill('#pattern', '*@newsletter.acme.example');
    await page.fill('#reason', 'the monthly newsletter');
    await Promise.all([page.waitForNavigation(), page.click('section button[type=submit]')]);
    out.exemption_listed = !!(await until(page,
      async () => (await page.locator('#exemptions td', { hasText: '*@newsletter.acme.example' }).count()) > 0,
      'the exemption to be listed'));
    await check(page, 'exemptions');

    await page.goto(`${BASE}/ui/t/acme/shadow`, { waitUntil: 'load' });
    await check(page, 'shadow');

    // Sign out; a VIEWER of globex is refused acme's pages.
    await Promise.all([page.waitForNavigation(), page.click('.signout button')]);
    await signIn(page, env('CONSOLE_GLOBEX_TOKEN'));
    refusalExpected = true;
    const refused = await page.goto(`${BASE}/ui/t/acme/mailboxes/${encodeURIComponent(MAILBOX)}`, { waitUntil: 'load' });
    out.other_tenant_status = refused.status();
    out.other_tenant_text = (await page.textContent('main')).trim();
    // Its links lead to its own tenant, not to the one refused.
    out.refused_nav = await page.$$eval('header nav a', (as) => as.map((a) => a.getAttribute('href')));
    await check(page, 'refused');
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch(async (e) => {
  out.errors.push(`script: ${e && e.stack ? e.stack : String(e)}`);
  out.last_url = page ? page.url() : null;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(1);
});
