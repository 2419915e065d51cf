// The console's live dashboard in headless Chromium: an operator logs in and opens a live
// lecture's page; the encoder (process ENCODER_PID) is stopped as if its network dropped, the
// dashboard must show "No signal" within a few seconds, and lose it again once the encoder
// is resumed. Reports JSON; a screenshot of the silent dashboard goes to SHOTS.
//   node dashboard.mjs SERVER LECTURE_ID OPERATOR PASSWORD ENCODER_PID SHOTS
import { launch } from "./browser.mjs";

const [server, lectureId, operator, password, pid, shots] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [], console: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
  page.on("pageerror", (e) => result.errors.push(`${e}`));
  page.on("console", (m) => {
    if (m.type() === "error") result.console.push(m.text());
  });
  await page.goto(`${server}/admin/login`);
  await page.fill('input[name="name"]', operator);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForURL(/\/admin$/), page.click('button[type="submit"]')]);
  await page.goto(`${server}/admin/lectures/${lectureId}`);
  // The dashboard's rows (term: value), and its label for a silent input.
  const read = () =>
    page.evaluate(() => {
      const dash = document.querySelector(".dashboard[data-stream]");
      const terms = [...dash.querySelectorAll("dl.stats dt")].map((d) => d.textContent);
      return { state: dash.querySelector(".state")?.textContent ?? "", terms, silentLabel: dash.getAttribute("data-t-silent") };
    });
  const until = async (what, ok, ms) => {
    const end = Date.now() + ms;
    for (;;) {
      const d = await read();
      if (ok(d)) return d;
      if (Date.now() > end) throw new Error(`${what}: ${JSON.stringify(d)}`);
      await page.waitForTimeout(250);
    }
  };
  const silent = (d) => d.terms.includes(d.silentLabel);
  result.live = await until("the dashboard live", (d) => d.terms.length > 0 && !silent(d), 20000);
  process.kill(Number(pid), "SIGSTOP");
  const stopped = Date.now();
  try {
    result.silent = await until("No signal shown", silent, 15000);
    result.silentAfterMs = Date.now() - stopped;
    result.silentValue = await page.evaluate(() => {
      const dts = [...document.querySelectorAll(".dashboard dl.stats dt")];
      const dash = document.querySelector(".dashboard[data-stream]");
      const dt = dts.find((d) => d.textContent === dash.getAttribute("data-t-silent"));
      return dt?.nextElementSibling?.textContent ?? "";
    });
    await page.screenshot({ path: `${shots}/console-dashboard-silent.png`, fullPage: true });
  } finally {
    process.kill(Number(pid), "SIGCONT");
  }
  result.back = await until("No signal gone", (d) => d.terms.length > 0 && !silent(d), 15000);
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
