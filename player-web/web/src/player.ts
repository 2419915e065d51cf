// The jiangtang web player bundle: defines <jiangtang-player> and <jiangtang-interpreter>.
// Load it with <script src="https://RELAY/player.js"></script> on any page.
import { JiangtangPlayer } from "./element";
import { JiangtangInterpreter } from "./interpreter";

if (!customElements.get("jiangtang-player")) {
  customElements.define("jiangtang-player", JiangtangPlayer);
}
if (!customElements.get("jiangtang-interpreter")) {
  customElements.define("jiangtang-interpreter", JiangtangInterpreter);
}

export { JiangtangInterpreter, JiangtangPlayer };
