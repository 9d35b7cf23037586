/**
 * Reads a file trail (`audit.log` and its rotated files `audit.log.N` … `audit.log.1`, and
 * the denials trail beside it, merged by time) oldest first, one record at a time, in
 * bounded memory. A line cut by a crash at the
 * end of a file is skipped (see AuditLineDecoder). The CLI has its own copy of this small
 * loop, because components do not import each other.
 *
 * @module
 */
import { createReadStream } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { AuditRecord } from '../../protocol/audit-record.js'
import {
  AuditLineDecoder,
  deniedTrailPath,
  mergeByTime,
  orderTrailFiles,
} from '../../protocol/audit-record.js'
import { errorCode } from '../../shared/errors.js'

/** The trail's files, oldest first (full paths); empty when there are none. */
export async function listTrailFiles(path: string): Promise<string[]> {
  let names: string[]
  try {
    names = await readdir(dirname(path))
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return []
    throw err
  }
  return orderTrailFiles(basename(path), names).map((n) => join(dirname(path), n))
}

/** What {@link readTrail} found besides the records. */
export interface TrailReadSummary {
  files: string[]
  records: number
  /** Complete lines that were not records (skipped). */
  malformed: number
  /** Files that ended with an unterminated line (skipped). */
  partialTails: number
}

/** Options for {@link readTrail}. */
export interface ReadTrailOptions {
  /** Also read the denials trail beside it, merged by time (default true). */
  denials?: boolean
}

/**
 * Reads every record of the trail, oldest first, calling `onRecord` for each: the main
 * trail and (unless `denials: false`) its denials trail, merged by time.
 */
export async function readTrail(
  path: string,
  onRecord: (record: AuditRecord, file: string) => void,
  options: ReadTrailOptions = {},
): Promise<TrailReadSummary> {
  const summary: TrailReadSummary = { files: [], records: 0, malformed: 0, partialTails: 0 }
  for await (const { record, file } of trailRecords(path, summary, options)) {
    summary.records++
    onRecord(record, file)
  }
  return summary
}

/**
 * The trail's records, oldest first, as an async generator (a reader that writes them
 * somewhere slower pulls them at its own pace); `summary` learns the files read.
 */
export function trailRecords(
  path: string,
  summary: TrailReadSummary = { files: [], records: 0, malformed: 0, partialTails: 0 },
  options: ReadTrailOptions = {},
): AsyncGenerator<{ record: AuditRecord; file: string }> {
  const main = trailItems(path, summary)
  return options.denials === false
    ? main
    : mergeByTime(main, trailItems(deniedTrailPath(path), summary), (x) => x.record.time)
}

/** The records of one trail's files in the order written (the summary learns the rest). */
async function* trailItems(
  path: string,
  summary: TrailReadSummary,
): AsyncGenerator<{ record: AuditRecord; file: string }> {
  for (const file of await listTrailFiles(path)) {
    const decoder = new AuditLineDecoder()
    try {
      for await (const chunk of createReadStream(file, { highWaterMark: 256 * 1024 })) {
        for (const record of decoder.push(chunk as Buffer)) yield { record, file }
      }
    } catch (err) {
      // Rotated away (deleted by retention) between the listing and the read.
      if (errorCode(err) === 'ENOENT') continue
      throw err
    }
    summary.files.push(file)
    if (decoder.end() > 0) summary.partialTails++
    summary.malformed += decoder.malformed
  }
}
