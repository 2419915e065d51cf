// The pages in headless Chromium: the front page (Chinese and English, phone-sized), the
// booking flow to a ticket with its QR code, the console (login, a lecture's page, key
// rotation) and the door's check-in page (typed codes). Reports JSON; screenshots go to
// SHOTS. Any console error or page error is reported.
//   node site.mjs SERVER SHOTS LECTURE_ID OPERATOR PASSWORD OTHER_CODE CANCELLED_CODE
import { launch } from "./browser.mjs";

const [server, shots, lectureId, operator, password, otherCode, cancelledCode] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [], console: [] };

function watch(page, label) {
  page.on("pageerror", (e) => result.errors.push(`${label}: ${e}`));
  page.on("console", (m) => {
    if (m.type() === "error") result.console.push(`${label}: ${m.text()}`);
  });
}

try {
  // A phone: WeChat's in-app browser is a phone-sized Chromium.
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await ctx.newPage();
  watch(page, "public");

  await page.goto(`${server}/`);
  result.front = await page.evaluate(() => ({
    lang: document.documentElement.lang,
    sections: [...document.querySelectorAll("h2")].map((h) => h.textContent),
    lectures: [...document.querySelectorAll("li.lecture .title")].map((a) => a.textContent),
    seats: [...document.querySelectorAll("li.lecture .seats")].map((s) => s.textContent),
    buttons: [...document.querySelectorAll("li.lecture .button")].map((b) => b.textContent),
    overflow: document.documentElement.scrollWidth > window.innerWidth,
  }));
  await page.screenshot({ path: `${shots}/site-front-zh.png`, fullPage: true });
  await page.click("a.lang");
  await page.waitForURL(/ui=en/);
  result.frontEn = await page.evaluate(() => ({
    lang: document.documentElement.lang,
    sections: [...document.querySelectorAll("h2")].map((h) => h.textContent),
  }));
  await page.screenshot({ path: `${shots}/site-front-en.png`, fullPage: true });

  // Booking: from the front page's button to the ticket.
  await page.goto(`${server}/`);
  await page.click(`li.lecture a.button[href^="/lectures/${lectureId}"]`);
  await page.waitForSelector("form.booking");
  result.lecturePage = await page.evaluate(() => ({
    countdown: document.querySelector(".countdown")?.textContent ?? null,
  }));
  await page.screenshot({ path: `${shots}/site-lecture.png`, fullPage: true });
  await page.fill('input[name="person"]', "13800000001");
  await page.fill('input[name="name"]', "王小明");
  await Promise.all([page.waitForURL(/\/tickets\//), page.click('form.booking button[type="submit"]')]);
  await page.waitForFunction(() => {
    const img = document.querySelector("figure.qr img");
    return img && img.complete && img.naturalWidth > 0;
  });
  result.ticket = await page.evaluate(() => ({
    status: document.querySelector(".status")?.textContent ?? "",
    code: document.querySelector("strong.code")?.textContent ?? "",
    qrWidth: document.querySelector("figure.qr img")?.naturalWidth ?? 0,
    overflow: document.documentElement.scrollWidth > window.innerWidth,
  }));
  await page.screenshot({ path: `${shots}/site-ticket.png`, fullPage: true });
  await page.goto(`${server}/`);
  result.seatsAfter = await page.evaluate(
    (id) => document.querySelector(`li.lecture a.title[href^="/lectures/${id}"]`)?.closest("li").querySelector(".seats")?.textContent ?? null,
    lectureId,
  );

  // The console.
  const admin = await browser.newPage({ viewport: { width: 1024, height: 900 } });
  watch(admin, "console");
  await admin.goto(`${server}/admin`);
  result.loginUrl = admin.url();
  await admin.fill('input[name="name"]', operator);
  await admin.fill('input[name="password"]', "wrong password!");
  await Promise.all([admin.waitForURL(/failed=wrong/), admin.click('button[type="submit"]')]);
  result.wrongLogin = await admin.evaluate(() => document.querySelector(".status.bad")?.textContent ?? "");
  await admin.fill('input[name="name"]', operator);
  await admin.fill('input[name="password"]', password);
  await Promise.all([admin.waitForURL(/\/admin$/), admin.click('button[type="submit"]')]);
  result.cookie = (await admin.context().cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite }));
  result.consoleHome = await admin.evaluate(() => [...document.querySelectorAll("table.list td a")].map((a) => a.textContent));
  await admin.screenshot({ path: `${shots}/site-console-home.png`, fullPage: true });
  await admin.goto(`${server}/admin/lectures/${lectureId}`);
  const keyOf = () => admin.evaluate(() => document.querySelector("dl.howto code.secret")?.textContent ?? "");
  result.lectureAdmin = await admin.evaluate(() => ({
    bookings: [...document.querySelectorAll("#bookings tbody tr td:first-child")].map((t) => t.textContent),
    howto: [...document.querySelectorAll("dl.howto code")].map((c) => c.textContent),
  }));
  const before = await keyOf();
  await Promise.all([admin.waitForURL(/#stream$/), admin.click('#stream button[type="submit"]')]);
  result.keyRotated = (await keyOf()) !== before && (await keyOf()).length > 0;
  await admin.screenshot({ path: `${shots}/site-console-lecture.png`, fullPage: true });
  await admin.goto(`${server}/admin/halls`);
  result.halls = await admin.evaluate(() => [...document.querySelectorAll("details summary")].map((s) => s.textContent));
  await admin.goto(`${server}/admin/series`);
  result.seriesPage = await admin.evaluate(() => document.querySelector("h1")?.textContent ?? "");

  // The door: a phone, typed codes.
  const door = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await door.context().addCookies(await admin.context().cookies());
  watch(door, "door");
  await door.goto(`${server}/admin/checkin/${lectureId}`);
  const scan = async (code) => {
    await door.fill('input[name="code"]', code);
    await door.click("form.code-form button[type=submit]");
    await door.waitForFunction(() => document.querySelector(".checkin")?.hasAttribute("data-last"));
    const r = await door.evaluate(() => {
      const box = document.querySelector(".checkin");
      const out = { outcome: box.getAttribute("data-last"), text: document.getElementById("result").textContent };
      box.removeAttribute("data-last");
      return out;
    });
    return r;
  };
  result.checkins = {};
  result.checkins.valid = await scan(result.ticket.code);
  await door.screenshot({ path: `${shots}/site-checkin-valid.png` });
  result.checkins.again = await scan(result.ticket.code.toLowerCase());
  await door.screenshot({ path: `${shots}/site-checkin-used.png` });
  result.checkins.other = await scan(otherCode);
  result.checkins.cancelled = await scan(cancelledCode);
  result.checkins.unknown = await scan("NOSUCHTICKET2345");
  await door.screenshot({ path: `${shots}/site-checkin-unknown.png` });
} catch (e) {
  result.errors.push(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
