// A real browser through an authorization: headless Chromium (Debian's `chromium`, driven by
// the npm package playwright-core, installed into .interop/ by scripts/interop-setup.sh) opens
// an authorization URL and acts on the pages it meets, step by step, the way a person would,
// until the authorization server redirects it to the client's callback
// (tests/browser_chromium.rs runs it against the quickstart example).
//
//   node browser_flow.mjs <plan.json>
//
// The plan (a JSON file):
//   {
//     "chromium": "/usr/bin/chromium",
//     "authorize_url": "http://127.0.0.1:PORT/authorize?...",
//     "callback": "http://127.0.0.1:PORT/callback", // the client's redirect URI (a listener)
//     "steps": [                                  // in order; each names the page it expects
//       {"kind": "login", "origin": "http://127.0.0.1:PORT", "username": "u", "password": "p"},
//       {"kind": "consent", "origin": "http://127.0.0.1:PORT", "decision": "approve"},
//       {"kind": "continue", "origin": "http://127.0.0.1:OTHER"}
//     ]
//   }
// Kinds:
//   login    a form with a password field: fills the first text/email field with `username`,
//            the password field with `password`, and presses the form's submit button;
//   consent  presses the `decision` button whose value is `decision` (mcp-oauth's consent page);
//   continue presses the only submit button of the page's form (a third-party provider's
//            confirmation page, such as oidc-provider's development consent page).
// A step waits (10 s at most) for the browser to be on a page of its `origin` showing what the
// step needs; an upstream provider's sign-in page is one more step with that provider's origin.
//
// One browser launch (a persistent context in a fresh --user-data-dir); every console
// message, uncaught page error, failed request and HTTP error response is recorded. The
// callback is a real page the test serves (route interception does not see the requests a
// redirect leads to, so it cannot stand in for the client's listener).
// The only stdout line is the JSON report:
//   {"callback": "<url>"|null, "pages": [{"step", "kind", "url", "title", "text"}],
//    "console": [{"type", "text", "url"}], "page_errors": [{"message", "url"}],
//    "failed_requests": [{"url", "failure", "page"}], "error_responses": [{"status", "url", "page"}],
//    "fatal": null|"<message>"}
// (`url` of a console message or page error, and `page` of a request: the page it came from).
// and the exit status is 0 when the callback was reached.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';

// ES modules ignore NODE_PATH, so load the (CommonJS) package through it explicitly.
const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), 'noop.js'));
const { chromium } = require('playwright-core');

const planFile = process.argv[2];
if (!planFile) throw new Error('usage: browser_flow.mjs <plan.json>');
const plan = JSON.parse(fs.readFileSync(planFile, 'utf8'));
const STEP_TIMEOUT = 10_000;

const report = {
  callback: null,
  pages: [],
  console: [],
  page_errors: [],
  failed_requests: [],
  error_responses: [],
  fatal: null,
};

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mcp-oauth-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: plan.chromium,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
  const isCallback = (url) => url.href.startsWith(plan.callback);
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on('console', (m) => report.console.push({ type: m.type(), text: m.text(), url: page.url() }));
  page.on('pageerror', (e) => report.page_errors.push({ message: String(e?.stack ?? e), url: page.url() }));
  // The page a request was made from (the frame's URL), so a test can tell its own pages'
  // faults from a third party's.
  const pageOf = (request) => {
    try {
      return request.frame().url();
    } catch {
      return null;
    }
  };
  page.on('requestfailed', (r) =>
    report.failed_requests.push({ url: r.url(), failure: r.failure()?.errorText ?? null, page: pageOf(r) }),
  );
  page.on('response', (r) => {
    if (r.status() >= 400) report.error_responses.push({ status: r.status(), url: r.url(), page: pageOf(r.request()) });
  });

  await page.goto(plan.authorize_url, { waitUntil: 'load' });
  for (const [i, step] of plan.steps.entries()) {
    const where = `step ${i} (${step.kind}${step.origin ? ` at ${step.origin}` : ''})`;
    if (step.origin) {
      await page.waitForURL((u) => u.origin === step.origin, { waitUntil: 'load' }).catch(() => {
        throw new Error(`${where}: the browser is at ${page.url()}`);
      });
    }
    let press;
    if (step.kind === 'login') {
      const password = page.locator('form input[type=password]');
      await password.first().waitFor({ state: 'visible' }).catch(() => {
        throw new Error(`${where}: no password field at ${page.url()}`);
      });
      const form = page.locator('form', { has: page.locator('input[type=password]') }).first();
      await form.locator('input[type=text], input[type=email], input:not([type])').first().fill(step.username);
      await form.locator('input[type=password]').first().fill(step.password);
      press = form.locator('button[type=submit], input[type=submit], button:not([type])').first();
    } else if (step.kind === 'consent') {
      press = page.locator(`form button[name=decision][value="${step.decision ?? 'approve'}"]`);
    } else if (step.kind === 'continue') {
      press = page.locator('form button[type=submit], form input[type=submit]');
    } else {
      throw new Error(`${where}: unknown step kind`);
    }
    await press.waitFor({ state: 'visible' }).catch(() => {
      throw new Error(`${where}: nothing to press at ${page.url()}`);
    });
    report.pages.push({
      step: i,
      kind: step.kind,
      url: page.url(),
      title: await page.title(),
      text: (await page.locator('body').innerText()).slice(0, 2000),
    });
    // Press as a person does, and wait for the page it leads to.
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), press.click()]);
  }
  await page.waitForURL(isCallback, { waitUntil: 'load' }).catch(() => {
    throw new Error(`no callback after the last step; the browser is at ${page.url()}`);
  });
  report.callback = page.url();
  report.pages.push({ step: plan.steps.length, kind: 'callback', url: page.url(), title: await page.title(), text: '' });
} catch (e) {
  report.fatal = String(e?.message ?? e);
} finally {
  await context?.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
process.exit(report.callback && !report.fatal ? 0 : 1);
