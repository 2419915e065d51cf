// The jiangtang web player bundle: defines <jiangtang-player>. Load it with
// <script src="https://RELAY/player.js"></script> on any page.
import { JiangtangPlayer } from "./element";

if (!customElements.get("jiangtang-player")) {
  customElements.define("jiangtang-player", JiangtangPlayer);
}

export { JiangtangPlayer };
