// Opens a backtest HTML report in headless Chromium (playwright-core, Debian's chromium) and
// prints what was rendered as one JSON object on stdout: the plots (size on screen, the texts
// drawn, data lines and bars), the tables, the title, and every error (console, page, a
// network request: the report must need none). Writes a full-page screenshot.
//
//   NODE_PATH=$(scripts/browser-env) node tests/browser/render-report.cjs report.html shot.png
'use strict';
const { chromium } = require('playwright-core');
const { pathToFileURL } = require('url');

async function main() {
  const [page_path, shot] = process.argv.slice(2);
  if (!page_path || !shot) throw new Error('usage: render-report.cjs PAGE.html SHOT.png');
  const browser = await chromium.launch({
    executablePath: process.env.MAILGUARD_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  const errors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith('file:')) return route.continue();
      errors.push(`network request: ${url}`);
      return route.abort();
    });
    const response = await page.goto(pathToFileURL(page_path).href, { waitUntil: 'load' });
    if (!response || !response.ok()) errors.push(`load: ${response ? response.status() : 'no response'}`);
    const rendered = await page.evaluate(() => {
      // Drawn: a box on screen (a horizontal line has no height, a vertical one no width).
      const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 || r.height > 0; };
      const plots = [...document.querySelectorAll('figure[id] svg')].map((svg) => {
        const box = svg.getBoundingClientRect();
        const texts = [...svg.querySelectorAll('text')].filter(visible).map((t) => t.textContent.trim());
        const lines = [...svg.querySelectorAll('polyline')]
          .filter((p) => p.points && p.points.numberOfItems >= 3 && visible(p)).length;
        const bars = [...svg.querySelectorAll('rect')].filter((r) => {
          const fill = (r.getAttribute('fill') || '').toLowerCase();
          return visible(r) && r.getBoundingClientRect().height > 1 && fill !== '#ffffff' && fill !== 'none' && fill !== 'white';
        }).length;
        return { id: svg.closest('figure').id, width: box.width, height: box.height, texts, lines, bars };
      });
      return { title: document.title, plots, tables: document.querySelectorAll('table').length };
    });
    await page.screenshot({ path: shot, fullPage: true });
    process.stdout.write(JSON.stringify({ ...rendered, errors }) + '\n');
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e && e.stack ? e.stack : String(e)); process.exit(1); });
