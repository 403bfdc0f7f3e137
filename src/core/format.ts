// Sizes and rates as operators read them.

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`
}

export function formatRate(bytes: number, seconds: number): string {
  return `${(bytes / 1e6 / Math.max(seconds, 0.001)).toFixed(1)} MB/s`
}

/**
 * A duration: milliseconds, the one unit every timeout and interval has in the code, from the
 * configuration (where the administrator writes seconds; config/fields.ts converts them once)
 * to the timer or the socket. The brand keeps a count of seconds from being passed as one.
 */
export type Ms = number & { readonly unit: 'ms' }

export const ms = (milliseconds: number): Ms => milliseconds as Ms

export const fromSeconds = (seconds: number): Ms => (seconds * 1000) as Ms

/** A duration as a line shows it: whole seconds, at least 1 when not zero. */
export function shownSeconds(duration: Ms): string {
  return `${duration === 0 ? 0 : Math.max(1, Math.round(duration / 1000))} s`
}
