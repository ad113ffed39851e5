// English and Chinese texts of the widget. The language comes from data-lang on the script
// tag, else from the browser (zh-* -> Chinese), else English.

const TEXTS = {
  en: {
    launcher: "Chat with us",
    title: "Chat with us",
    greeting: "Hi! How can we help you today?",
    placeholder: "Type a message…",
    send: "Send",
    attach: "Attach a file",
    close: "Close",
    typing: "{name} is typing…",
    agent: "Agent",
    bot: "Assistant (bot)",
    you: "You",
    read: "Read",
    sending: "Sending…",
    failed: "Not sent",
    queue: "You are number {position} in line. Estimated wait: {eta}.",
    queueShort: "Waiting for an agent…",
    queueNoAgents: "All our agents are busy or away; stay here and we will answer as soon as we can.",
    queueClosed: "We are closed right now; leave your message here and we will answer when we open.",
    minutes: "{n} min",
    seconds: "under a minute",
    assigned: "{name} joined the chat.",
    offlineTitle: "We are away right now",
    offlineText: "Leave a message and we will reply by e-mail.",
    busyTitle: "We are very busy right now",
    busyText: "Sorry for the wait. Leave a message and we will reply by e-mail as soon as we can.",
    name: "Your name",
    email: "Your e-mail",
    message: "Your message",
    leave: "Leave a message",
    left: "Thanks! We got your message and will get back to you.",
    reconnecting: "Reconnecting…",
    resolved: "This chat has ended.",
    rateTitle: "How was this chat?",
    rateComment: "Anything to add? (optional)",
    rateSend: "Send rating",
    rated: "Thank you for your feedback!",
    newChat: "Start a new chat",
    endChat: "End chat",
    uploadFailed: "The file could not be uploaded.",
    newMessage: "New message",
    language: "中文",
  },
  zh: {
    launcher: "在线咨询",
    title: "在线客服",
    greeting: "您好！请问有什么可以帮您？",
    placeholder: "输入消息…",
    send: "发送",
    attach: "发送文件",
    close: "关闭",
    typing: "{name} 正在输入…",
    agent: "客服",
    bot: "智能助手",
    you: "我",
    read: "已读",
    sending: "发送中…",
    failed: "发送失败",
    queue: "您前面还有 {position} 位，预计等待 {eta}。",
    queueShort: "正在为您接入客服…",
    queueNoAgents: "客服暂时忙碌或不在线，请稍候，我们会尽快回复。",
    queueClosed: "现在不是工作时间，请留言，我们上班后会第一时间回复。",
    minutes: "{n} 分钟",
    seconds: "不到一分钟",
    assigned: "{name} 已接入会话。",
    offlineTitle: "客服暂时不在线",
    offlineText: "请留言，我们会通过邮件回复您。",
    busyTitle: "当前咨询人数较多",
    busyText: "抱歉让您久等。请留言，我们会尽快通过邮件回复您。",
    name: "您的称呼",
    email: "您的邮箱",
    message: "留言内容",
    leave: "提交留言",
    left: "谢谢！我们已收到您的留言，会尽快回复。",
    reconnecting: "正在重新连接…",
    resolved: "本次会话已结束。",
    rateTitle: "请为本次服务评分",
    rateComment: "还有什么想说的吗？（选填）",
    rateSend: "提交评价",
    rated: "感谢您的评价！",
    newChat: "开始新的会话",
    endChat: "结束会话",
    uploadFailed: "文件上传失败。",
    newMessage: "新消息",
    language: "English",
  },
};

export function pickLanguage(override) {
  const wanted = (override || navigator.language || "en").toLowerCase();
  return wanted.startsWith("zh") ? "zh" : "en";
}

export function translator(lang) {
  const table = TEXTS[lang] || TEXTS.en;
  return (key, vars = {}) =>
    (table[key] ?? TEXTS.en[key] ?? key).replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

export const LANGUAGES = Object.keys(TEXTS);
