// Keeps the dashboard open (and polling) in headless Chromium until killed: what
// bench/dashboard.sh measures the service under. Usage: node watch.mjs URL TOKEN
import { chromium } from "playwright-core";

const [url, token] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "chromium",
  args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
});
const context = await browser.newContext({ httpCredentials: { username: "bench", password: token } });
const page = await context.newPage();
await page.goto(url);
await page.locator("#policies tbody tr").first().waitFor();
console.log("watching");
const stop = async () => {
  await browser.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
