// Swagger UI in Debian's Chromium, as a newcomer uses it: open /docs/, authorise with a
// token, open POST /v1/events, Execute the default body, and see 202. Every
// request the page makes must go to the gateway itself.
// Usage: node swagger.mjs <base url> <token> <screenshot.png>
import { chromium } from 'playwright-core';

const [base, token, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const elsewhere = [];
try {
  const page = await browser.newPage();
  page.on('request', (request) => {
    if (!request.url().startsWith(base)) elsewhere.push(request.url());
  });
  await page.goto(`${base}/docs/`);
  await page.locator('button.authorize').first().click();
  await page.locator('.modal-ux input').first().fill(token);
  await page.locator('.modal-ux .auth-btn-wrapper button.authorize').click();
  await page.locator('.modal-ux button.btn-done').click();
  const operation = page.locator('#operations-events-publish_event');
  await operation.locator('.opblock-summary').click();
  // Try it out is on from the start (the gateway's Swagger UI config).
  await operation.locator('button.execute').click();
  const status = operation.locator('.live-responses-table tr.response td.response-col_status').first();
  await status.waitFor({ timeout: 15000 });
  const answer = (await status.innerText()).trim();
  const body = await operation.locator('.live-responses-table tr.response td.response-col_description pre').first().innerText();
  await status.scrollIntoViewIfNeeded();
  await page.screenshot({ path: screenshot, fullPage: false });
  console.log(JSON.stringify({ status: answer, body, elsewhere }));
  if (!answer.startsWith('202') || elsewhere.length > 0) process.exitCode = 1;
} finally {
  await browser.close();
}
