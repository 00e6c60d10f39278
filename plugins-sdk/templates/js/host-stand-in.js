// The host import as the native tests see it (see native-host.mjs): a fixed call context,
// and progress reports and log records kept in arrays for the tests to read.

/** Every `reportProgress(progress, total, message)`, in order. */
export const reported = [];
/** Every `log(level, message, fields)`, in order. */
export const logged = [];

export function context() {
  return { idempotencyKey: 'native', traceId: undefined, deadlineMs: 0n };
}

export function reportProgress(progress, total, message) {
  reported.push([progress, total, message]);
}

export function log(level, message, fields) {
  logged.push([level, message, fields]);
}

export function getConfig() {
  return undefined;
}
