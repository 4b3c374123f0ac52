// Opens page.html in headless Chromium once per broker URL given on the command line and
// prints "URL: outcome" for each; exits 1 unless every outcome is "ok". Driven by
// tests/browser.rs, which starts the broker and makes Chromium trust the test CA.
import { chromium } from "playwright-core";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";

const page_file = path.join(path.dirname(fileURLToPath(import.meta.url)), "page.html");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // No sandbox as root; no background traffic to a network this machine does not have.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  env: process.env,
});
let failed = false;
try {
  for (const broker of process.argv.slice(2)) {
    const page = await browser.newPage();
    const url = pathToFileURL(page_file).href + "?broker=" + encodeURIComponent(broker);
    await page.goto(url);
    let outcome;
    try {
      await page.waitForFunction(() => document.title.startsWith("done: "), null, { timeout: 20000 });
      outcome = (await page.title()).slice("done: ".length);
    } catch (error) {
      outcome = "no answer within 20 s (" + (await page.title()) + ")";
    }
    console.log(`${broker}: ${outcome}`);
    failed ||= outcome !== "ok";
    await page.close();
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
