// Parses a lecture's playlists with a strict third-party parser (hls-parser in strict mode)
// again and again for SECONDS, and reports every playlist it rejects, as JSON:
//   node hls-strict.mjs MULTIVARIANT_URL SECONDS
import HLS from "hls-parser";

const [url, seconds] = process.argv.slice(2);
HLS.setOptions({ strictMode: true, silent: true });
const result = { checked: 0, errors: [] };

async function parse(u) {
  const r = await fetch(u);
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${u}: HTTP ${r.status}`);
  try {
    result.checked++;
    return HLS.parse(text);
  } catch (e) {
    result.errors.push({ url: u, error: String(e.message || e), text });
    return null;
  }
}

const master = await parse(url);
const uris = new Set();
for (const v of master?.variants ?? []) {
  uris.add(new URL(v.uri, url).href);
  for (const a of v.audio ?? []) if (a.uri) uris.add(new URL(a.uri, url).href);
}
result.renditions = uris.size;
const end = Date.now() + Number(seconds) * 1000;
while (Date.now() < end && result.errors.length < 5) {
  for (const u of uris) await parse(u);
  await new Promise((r) => setTimeout(r, 300));
}
console.log(JSON.stringify(result));
