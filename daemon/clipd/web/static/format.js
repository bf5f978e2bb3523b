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

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "";
  if (seconds < 60) return "under a minute";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return plural(minutes, "minute");
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest ? `${plural(hours, "hour")} ${plural(rest, "minute")}` : plural(hours, "hour");
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
