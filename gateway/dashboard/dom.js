// Building the page without innerHTML: every value (ids, payloads, errors) goes in as text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString([], {hour12: false}) : "";
}

export function dateTime(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

// A sparkline of `values` (oldest first) as an inline SVG.
export function sparkline(values, width = 120, height = 28) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "currentColor");
  line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

export function detailOf(ev) {
  if (ev.error) return `${ev.error.type}: ${ev.error.message}`;
  if (ev.progress) return `${Math.round(ev.progress.percent ?? 0)}% ${ev.progress.message ?? ""}`;
  if (ev.reason) return ev.reason;
  return "";
}
