// The player on a lecture that needs a playback token: what it says without one, with a
// bad one, and that it plays with a good one. Reports JSON.
//   node denied.mjs SERVER STREAM SCREENSHOT_DIR CASE=QUERY...
// Each CASE is a name and the query of /play/STREAM (e.g. "missing=", "expired=token=...").
// Cases named "valid..." must play; the others must end in the "denied" state.
import { launch } from "./browser.mjs";

const [server, stream, shots, ...cases] = process.argv.slice(2);
const browser = await launch();
const result = { cases: {}, errors: [] };
try {
  for (const c of cases) {
    const at = c.indexOf("=");
    const name = c.slice(0, at);
    const query = c.slice(at + 1);
    const page = await browser.newPage({ viewport: { width: 640, height: 480 } });
    page.on("pageerror", (e) => result.errors.push(`${name}: ${e}`));
    const events = [];
    await page.exposeFunction("__denied", (reason) => events.push(reason));
    await page.addInitScript(() => {
      document.addEventListener("denied", (e) => window.__denied(e.detail.reason));
    });
    await page.goto(`${server}/play/${stream}?muted=1${query ? `&${query}` : ""}`);
    const want = name.startsWith("valid") ? "playing" : "denied";
    await page.waitForFunction(
      (want) => document.querySelector("jiangtang-player")?.state === want,
      want,
      { timeout: 40000 },
    );
    const shown = await page.evaluate(() => {
      const e = document.querySelector("jiangtang-player");
      const root = e.shadowRoot;
      return {
        mode: e.mode,
        msg: root.querySelector(".msg")?.textContent ?? "",
        sub: root.querySelector(".sub")?.textContent ?? "",
        overlayHidden: root.querySelector(".overlay")?.hidden ?? null,
      };
    });
    await page.screenshot({ path: `${shots}/token-${name}.png` });
    result.cases[name] = { ...shown, events };
    await page.close();
  }
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
