// Times, durations and counts as people read them.

const number = new Intl.NumberFormat();

export function count(n) {
  return number.format(n);
}

/** `1.2 s`, `450 ms`, `3 m 05 s`, `2 h 04 m`. */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} m ${String(Math.floor(seconds % 60)).padStart(2, '0')} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, '0')} m`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** Milliseconds between two RFC 3339 times (the second one defaults to now). */
export function between(from, to) {
  const start = Date.parse(from);
  const end = to ? Date.parse(to) : Date.now();
  return end - start;
}

/** `12s ago`, `3m ago`, `2h ago`, or the date for older times. */
export function ago(at, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - Date.parse(at)) / 1000));
  if (seconds < 90) return `${seconds}s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return `${minutes}m ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 36) return `${hours}h ago`;
  return new Date(at).toLocaleDateString();
}

/** The local time of day, with milliseconds when they matter. */
export function clock(at, millis = false) {
  const date = new Date(at);
  const text = date.toLocaleTimeString([], { hour12: false });
  return millis ? `${text}.${String(date.getMilliseconds()).padStart(3, '0')}` : text;
}

/** The local date and time, for tooltips. */
export function full(at) {
  return new Date(at).toLocaleString();
}

/** A flow id shortened for a list: its time part's start (shared by flows
 * started close together) and its random end (which tells them apart). */
export function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
}
