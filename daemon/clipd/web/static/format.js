// How numbers, sizes, dates and durations read on the page.

const count = new Intl.NumberFormat();
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function number(value) {
  return count.format(value);
}

export function plural(value, one, many = `${one}s`) {
  return `${number(value)} ${value === 1 ? one : many}`;
}

export function bytes(value) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let size = value;
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) {
    size /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${size} bytes` : `${size.toFixed(size < 10 ? 1 : 0)} ${units[unit]}`;
}

export function date(secondsSinceEpoch) {
  return secondsSinceEpoch ? dateTime.format(new Date(secondsSinceEpoch * 1000)) : "unknown";
}

/** "about 3 minutes left", "less than a minute left", or "" when unknown. */
export function timeLeft(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "";
  if (seconds < 60) return "less than a minute left";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${plural(minutes, "minute")} left`;
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return `about ${plural(hours, "hour")}${rest ? ` ${plural(rest, "minute")}` : ""} left`;
}

export function score(value) {
  return value.toFixed(3);
}

export function fileName(path) {
  return path.slice(path.lastIndexOf("/") + 1) || path;
}

/** The date a picture was taken when the daemon knows it, else its file's modification time. */
export function pictureTime(hit) {
  return hit.taken || hit.mtime;
}
