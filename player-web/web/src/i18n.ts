// The player's words, Chinese by default, English on request (`ui="en"`).
export type Locale = "zh" | "en";

const zh = {
  play: "播放",
  pause: "暂停",
  mute: "静音",
  unmute: "取消静音",
  dialect: "方言",
  mode: "方式",
  modeAuto: "自动",
  modeWebrtc: "实时 (WebRTC)",
  modeHls: "流畅 (HLS)",
  modeAudio: "仅音频",
  info: "信息",
  loading: "正在连接…",
  live: "直播中",
  scheduled: "讲座尚未开始",
  startsAt: "开始时间",
  startsIn: "距开始还有",
  idle: "讲座尚未开始",
  reconnecting: "主讲端暂时中断，正在重新连接…",
  ended: "讲座已结束",
  clickToPlay: "点击播放",
  hand: "举手",
  ask: "提问",
  askPlaceholder: "输入问题…",
  sent: "已发送",
  latency: "延迟",
  using: "播放方式",
  viewers: "在线",
  noPlayback: "此浏览器无法播放",
  weakNetwork: "网络较差，已改为仅播放声音",
  restoreVideo: "恢复画面",
};

const en: typeof zh = {
  play: "Play",
  pause: "Pause",
  mute: "Mute",
  unmute: "Unmute",
  dialect: "Dialect",
  mode: "Mode",
  modeAuto: "Auto",
  modeWebrtc: "Real-time (WebRTC)",
  modeHls: "Smooth (HLS)",
  modeAudio: "Audio only",
  info: "Info",
  loading: "Connecting…",
  live: "Live",
  scheduled: "The lecture has not started yet",
  startsAt: "Starts at",
  startsIn: "Starts in",
  idle: "The lecture has not started yet",
  reconnecting: "The lecture hall's stream dropped; reconnecting…",
  ended: "The lecture has ended",
  clickToPlay: "Click to play",
  hand: "Raise hand",
  ask: "Ask",
  askPlaceholder: "Type a question…",
  sent: "Sent",
  latency: "Latency",
  using: "Playing over",
  viewers: "Watching",
  noPlayback: "This browser cannot play the lecture",
  weakNetwork: "The connection is too slow for the picture: playing the sound only",
  restoreVideo: "Show the picture again",
};

export type Texts = typeof zh;

export function texts(locale: Locale): Texts {
  return locale === "en" ? en : zh;
}
