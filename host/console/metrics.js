// `/metrics` (Prometheus text) read in the browser: rates between two scrapes, latency
// quantiles from the histogram buckets, and small charts drawn on a canvas.

/** Samples of a scrape: `[{ name, labels, value }]`. */
export function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value.replace(/\\(.)/g, '$1');
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

/** The sum of every sample called `name` whose labels include `where`. */
export function total(samples, name, where = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** Sums of `name` grouped by the label `by`. */
export function by(samples, name, label) {
  const groups = new Map();
  for (const s of samples.filter((s) => s.name === name)) groups.set(s.labels[label], (groups.get(s.labels[label]) ?? 0) + s.value);
  return groups;
}

/** Quantile `q` of each tool's latency in seconds, from cumulative buckets (interpolated). */
export function quantiles(samples, q) {
  const tools = new Map();
  for (const s of samples.filter((s) => s.name === 'autoglm_tool_call_seconds_bucket')) {
    const id = `${s.labels.plugin}.${s.labels.tool}`;
    if (!tools.has(id)) tools.set(id, []);
    tools.get(id).push([s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), s.value]);
  }
  const result = new Map();
  for (const [id, buckets] of tools) {
    buckets.sort((a, b) => a[0] - b[0]);
    const count = buckets.at(-1)[1];
    if (count === 0) continue;
    const rank = q * count;
    let [lower, below] = [0, 0];
    for (const [le, cumulative] of buckets) {
      if (cumulative >= rank) {
        const upper = Number.isFinite(le) ? le : lower;
        const within = cumulative - below;
        result.set(id, within ? lower + ((upper - lower) * (rank - below)) / within : upper);
        break;
      }
      [lower, below] = [le, cumulative];
    }
  }
  return result;
}

/** A line chart of `points` (the last value written beside the title) on `canvas`. */
export function draw(canvas, points) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  const style = getComputedStyle(canvas);
  g.clearRect(0, 0, width, height);
  g.strokeStyle = style.getPropertyValue('--chart-grid');
  g.beginPath();
  g.moveTo(0, height - 0.5);
  g.lineTo(width, height - 0.5);
  g.stroke();
  if (points.length < 2) return;
  const top = Math.max(...points, 1e-9);
  g.strokeStyle = style.getPropertyValue('--accent');
  g.lineWidth = 2;
  g.beginPath();
  points.forEach((p, i) => {
    const x = (i / (points.length - 1)) * width;
    const y = height - 2 - (p / top) * (height - 4);
    if (i === 0) g.moveTo(x, y);
    else g.lineTo(x, y);
  });
  g.stroke();
}
