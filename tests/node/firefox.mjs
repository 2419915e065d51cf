// Launches Debian's Firefox ESR (never a downloaded browser) headless through WebDriver BiDi,
// with a fresh profile that stays off the network: no OpenH264 download (the plugin Firefox
// fetches on first run, which an offline school PC never gets), no updates, no telemetry.
// Autoplay is allowed so tests can hear audio.
//
// Firefox pairs no loopback candidates (not even with media.peerconnection.ice.loopback) and
// gathers host candidates only on the interface of the default route: WebRTC tests run the
// relay and Firefox in a network namespace with a default route to nowhere (Netns::new,
// Netns::default_route), never against 127.0.0.1.
import puppeteer from "puppeteer-core";

export function launchFirefox() {
  return puppeteer.launch({
    browser: "firefox",
    executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
    headless: true,
    // Every BiDi command answers within this, or the script fails instead of hanging.
    protocolTimeout: 60_000,
    extraPrefsFirefox: {
      // The Gecko Media Plugins (OpenH264, Widevine): never fetched.
      "media.gmp-manager.url": "",
      "media.gmp-manager.updateEnabled": false,
      "media.gmp-gmpopenh264.autoupdate": false,
      "media.gmp-widevinecdm.autoupdate": false,
      "media.gmp-widevinecdm.enabled": false,
      "media.eme.enabled": false,
      // Nothing else phones home either.
      "app.update.enabled": false,
      "browser.safebrowsing.provider.mozilla.updateURL": "",
      "browser.region.network.url": "",
      "browser.topsites.contile.enabled": false,
      "datareporting.healthreport.uploadEnabled": false,
      "datareporting.policy.dataSubmissionEnabled": false,
      "toolkit.telemetry.enabled": false,
      "toolkit.telemetry.unified": false,
      "toolkit.telemetry.server": "",
      "network.captive-portal-service.enabled": false,
      "network.connectivity-service.enabled": false,
      "network.dns.disablePrefetch": true,
      "network.prefetch-next": false,
      "extensions.blocklist.enabled": false,
      "services.settings.server": "",
      "dom.push.connection.enabled": false,
      // Sound without a click; no sound card here, so cubeb's mock backend runs the audio
      // graph (without an output every AudioContext stays suspended and hears nothing).
      "media.autoplay.default": 0,
      "media.cubeb.force_mock_context": true,
    },
  });
}
