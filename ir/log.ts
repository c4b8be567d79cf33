// Structured logs, off by default: KILN_LOG=graph,passes,fusion,guards,recompiles,kernels,device,autotune (or all)
// turns channels on, and each event is one line on stderr:
//   [kiln:fusion] fused %33 softmax at model.ts:96:15 rule=attention_chain reason="flash_causal kernel: ..."
// It lives in ir/ because passes may import only from ir/; everything else imports it from here too.

export const LOG_CHANNELS = ['graph', 'passes', 'fusion', 'guards', 'recompiles', 'kernels', 'device', 'autotune'] as const;
export type LogChannel = (typeof LOG_CHANNELS)[number];

export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

let enabled: ReadonlySet<LogChannel> | null = null;

/** Node's process, if there is one: browsers have neither it nor KILN_LOG. */
function nodeProcess(): NodeJS.Process | undefined {
  return typeof process !== 'undefined' && typeof process.stderr?.write === 'function' ? process : undefined;
}

function write(line: string): void {
  const proc = nodeProcess();
  if (proc) proc.stderr.write(line + '\n');
  else console.error(line);
}

/**
 * Turns on the channels a KILN_LOG value names (comma-separated; `all` for every one). An unknown
 * name gets one warning listing the valid ones. Read from process.env.KILN_LOG on first use.
 */
export function setLogChannels(spec: string | undefined): void {
  const on = new Set<LogChannel>();
  const unknown: string[] = [];
  for (const name of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    if (name === 'all') LOG_CHANNELS.forEach((c) => on.add(c));
    else if ((LOG_CHANNELS as readonly string[]).includes(name)) on.add(name as LogChannel);
    else unknown.push(name);
  }
  if (unknown.length) {
    write(`[kiln:log] unknown KILN_LOG channel${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => `"${n}"`).join(', ')}; valid: ${LOG_CHANNELS.join(', ')}, all`);
  }
  enabled = on;
}

/** True when the channel is on: check it before building an expensive message. */
export function logEnabled(channel: LogChannel): boolean {
  if (!enabled) setLogChannels(nodeProcess()?.env.KILN_LOG);
  return enabled!.has(channel);
}

/** `key=value`, the value quoted (JSON) when it holds spaces, quotes or `=`; undefined fields are left out. */
function formatFields(fields: LogFields): string {
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => {
      const s = String(v);
      return `${k}=${s === '' || /[\s"=]/.test(s) ? JSON.stringify(s) : s}`;
    })
    .join(' ');
}

/** Writes one event, `[kiln:channel] message key=value ...`, if the channel is on. */
export function log(channel: LogChannel, message: string, fields: LogFields = {}): void {
  if (!logEnabled(channel)) return;
  const tail = formatFields(fields);
  write(`[kiln:${channel}] ${message}${tail ? ' ' + tail : ''}`);
}
