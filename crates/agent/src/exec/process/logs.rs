//! Log files of process tasks, and the timestamps of their lines.
//!
//! A process writes its stdout and stderr straight into `stdout.log` and
//! `stderr.log` (opened for append), not into a pipe to the daemon: so the
//! process outlives the daemon, never blocks on it, and no output is lost
//! while no daemon runs. Line timestamps come from a side index per stream
//! that the daemon appends to while it watches the file grow: an entry
//! (end, time) says "the bytes before offset `end` were there at `time`", and
//! a line takes the time of the first entry that covers its first byte. The
//! daemon looks every `WATCH_PERIOD`, so a timestamp is at most that late;
//! output written while no daemon watched gets the time a daemon first saw
//! it. Writers of an index hold an flock, so two executors on one state dir
//! (a test, or a restarting daemon's overlap) do not interleave entries.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::exec::{LogLine, LogStream};

/// How often a running task's log files are checked for new output.
pub(crate) const WATCH_PERIOD: Duration = Duration::from_millis(100);

/// One index entry: little-endian u64 end offset, i64 Unix nanoseconds.
const ENTRY_LEN: usize = 16;

pub(crate) const STREAMS: [LogStream; 2] = [LogStream::Stdout, LogStream::Stderr];

pub(crate) fn log_path(dir: &Path, stream: LogStream) -> PathBuf {
    dir.join(match stream {
        LogStream::Stdout => "stdout.log",
        LogStream::Stderr => "stderr.log",
    })
}

fn index_path(dir: &Path, stream: LogStream) -> PathBuf {
    dir.join(match stream {
        LogStream::Stdout => "stdout.idx",
        LogStream::Stderr => "stderr.idx",
    })
}

pub(crate) fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Opens a log file for the process to append to.
pub(crate) fn open_for_process(dir: &Path, stream: LogStream) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, stream))
}

/// Records that the log's current content was there by now. Cheap when the
/// file has not grown: one stat, one read of the last entry.
pub(crate) fn sync_index(dir: &Path, stream: LogStream) -> std::io::Result<()> {
    let len = match std::fs::metadata(log_path(dir, stream)) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut index = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(index_path(dir, stream))?;
    // SAFETY: flock on a descriptor we own; the lock goes with the file.
    if unsafe { libc::flock(index.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let whole = index.metadata()?.len() / ENTRY_LEN as u64 * ENTRY_LEN as u64;
    let mut last_end = 0;
    if whole > 0 {
        let mut entry = [0u8; ENTRY_LEN];
        index.seek(SeekFrom::Start(whole - ENTRY_LEN as u64))?;
        index.read_exact(&mut entry)?;
        last_end = decode(&entry).0;
    }
    if len > last_end {
        let mut entry = [0u8; ENTRY_LEN];
        entry[..8].copy_from_slice(&len.to_le_bytes());
        entry[8..].copy_from_slice(&now_nanos().to_le_bytes());
        index.write_all(&entry)?;
    }
    Ok(())
}

fn decode(entry: &[u8]) -> (u64, i64) {
    let mut end = [0u8; 8];
    let mut nanos = [0u8; 8];
    end.copy_from_slice(&entry[..8]);
    nanos.copy_from_slice(&entry[8..ENTRY_LEN]);
    (u64::from_le_bytes(end), i64::from_le_bytes(nanos))
}

fn read_index(dir: &Path, stream: LogStream) -> Vec<(u64, i64)> {
    let raw = std::fs::read(index_path(dir, stream)).unwrap_or_default();
    // A trailing partial entry is one being written: skip it.
    raw.chunks_exact(ENTRY_LEN).map(decode).collect()
}

/// A line with its time, for merging the two streams.
#[derive(Debug, Clone)]
pub(crate) struct TimedLine {
    pub nanos: i64,
    pub stream: LogStream,
    pub line: Bytes,
}

impl TimedLine {
    pub(crate) fn into_log_line(self) -> LogLine {
        let time = chrono::DateTime::from_timestamp_nanos(self.nanos);
        LogLine {
            stream: self.stream,
            // Docker's fixed nine digits of nanoseconds.
            timestamp: time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            line: self.line,
        }
    }
}

/// The lines of one stream from byte `offset` on, and the offset after the
/// last one returned. A last line without its newline is held back (the
/// process may still be writing it) unless `partial` says the writer is gone.
pub(crate) fn read_lines(
    dir: &Path,
    stream: LogStream,
    offset: u64,
    partial: bool,
) -> std::io::Result<(Vec<TimedLine>, u64)> {
    let mut file = match File::open(log_path(dir, stream)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)?;
    let raw = Bytes::from(raw);
    let index = read_index(dir, stream);
    let now = now_nanos();
    let mut lines = Vec::new();
    let mut start = 0;
    while start < raw.len() {
        let end = match raw[start..].iter().position(|&b| b == b'\n') {
            Some(newline) => start + newline + 1,
            None if partial => raw.len(),
            None => break,
        };
        let at = offset + start as u64;
        // Bytes no entry covers yet arrived after the last sync: now.
        let nanos = index
            .iter()
            .find(|(covered, _)| *covered > at)
            .map_or(now, |e| e.1);
        lines.push(TimedLine {
            nanos,
            stream,
            line: raw.slice(start..end),
        });
        start = end;
    }
    Ok((lines, offset + start as u64))
}

/// Both streams' lines from the given offsets, merged in time order, and
/// the new offsets.
pub(crate) fn read_merged(
    dir: &Path,
    streams: &[LogStream],
    offsets: &mut [u64; 2],
    partial: bool,
) -> std::io::Result<Vec<TimedLine>> {
    let mut all = Vec::new();
    for (i, stream) in STREAMS.iter().enumerate() {
        if !streams.contains(stream) {
            continue;
        }
        let (lines, next) = read_lines(dir, *stream, offsets[i], partial)?;
        offsets[i] = next;
        all.extend(lines);
    }
    // Stable: lines of one stream keep their order within a time.
    all.sort_by_key(|line| line.nanos);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(dir: &Path, stream: LogStream, text: &str) {
        let mut file = open_for_process(dir, stream).expect("open log");
        file.write_all(text.as_bytes()).expect("write log");
    }

    #[test]
    fn lines_take_the_time_their_bytes_were_first_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        append(dir.path(), LogStream::Stdout, "one\ntw");
        sync_index(dir.path(), LogStream::Stdout).expect("sync");
        let first = read_index(dir.path(), LogStream::Stdout);
        assert_eq!(first.len(), 1);
        std::thread::sleep(Duration::from_millis(5));
        append(dir.path(), LogStream::Stdout, "o\nthree\n");
        sync_index(dir.path(), LogStream::Stdout).expect("sync");
        sync_index(dir.path(), LogStream::Stdout).expect("sync again adds nothing");
        let index = read_index(dir.path(), LogStream::Stdout);
        assert_eq!(index.len(), 2);

        let (lines, next) = read_lines(dir.path(), LogStream::Stdout, 0, false).expect("read");
        let texts: Vec<_> = lines.iter().map(|l| l.line.clone()).collect();
        assert_eq!(texts, vec!["one\n", "two\n", "three\n"]);
        // "two" started in the first chunk, "three" in the second.
        assert_eq!(lines[1].nanos, first[0].1);
        assert_eq!(lines[2].nanos, index[1].1);
        assert_eq!(next, 14);
    }

    #[test]
    fn partial_last_line_waits_for_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        append(dir.path(), LogStream::Stderr, "done\nhalf");
        let (lines, next) = read_lines(dir.path(), LogStream::Stderr, 0, false).expect("read");
        assert_eq!((lines.len(), next), (1, 5));
        let (lines, next) = read_lines(dir.path(), LogStream::Stderr, next, true).expect("read");
        assert_eq!(lines[0].line, "half");
        assert_eq!(next, 9);
    }

    #[test]
    fn timestamps_have_nine_digits() {
        let line = TimedLine {
            nanos: 1_700_000_000_120_000_000,
            stream: LogStream::Stdout,
            line: Bytes::from_static(b"x\n"),
        };
        assert_eq!(
            line.into_log_line().timestamp,
            "2023-11-14T22:13:20.120000000Z"
        );
    }
}
