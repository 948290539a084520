//! The current snapshot, kept in a file beside the Raft log and sealed in
//! pieces, so that it is written and read as a stream. A snapshot of
//! 100,000 tasks is hundreds of MB of JSON: held whole while it was
//! encoded, sealed and buffered by redb, it was most of a busy manager's
//! peak memory. Streamed, it costs one piece.
//!
//! The file: [`FRAME`], then pieces, each a mark (1 for the last piece, 0
//! otherwise), a 4-byte big-endian length and a piece sealed by
//! [`Sealer::seal_piece`]. Piece 0 is the snapshot's meta as JSON; the
//! pieces after it are the state's JSON, cut every [`PIECE`] bytes. Each
//! piece's associated data is the frame, its number and its mark: a file
//! cut short, pieces moved, or a mark changed do not open.
//!
//! A new snapshot is written to a temporary file, synced, and renamed over
//! the old one: a crash leaves one whole snapshot or the other.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::seal::Sealer;

/// The snapshot's file name, in the store's directory.
pub const SNAPSHOT_FILE: &str = "raft.snapshot";

const FRAME: &[u8] = b"FLSNAP3\n";
/// How much of the state is sealed at a time.
const PIECE: usize = 1 << 20;
/// No piece is larger than this (a damaged length is not allocated).
const MAX_PIECE: usize = 64 << 20;
/// The per-piece overhead (nonce and tag) a length may add to a piece.
const SEAL_OVERHEAD: usize = 12 + 16;

fn aad(number: u64, last: bool) -> Vec<u8> {
    let mut aad = FRAME.to_vec();
    aad.extend_from_slice(&number.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

fn damaged(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the stored snapshot is damaged: {what}"),
    )
}

/// Writes a new snapshot: the meta at [`SnapshotWriter::create`], then the
/// state through [`Write`], then [`SnapshotWriter::finish`] puts it in
/// place. Dropped unfinished, it leaves the current snapshot as it was.
pub(crate) struct SnapshotWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: BufWriter<File>,
    sealer: Arc<Sealer>,
    buf: Vec<u8>,
    number: u64,
}

impl SnapshotWriter {
    pub(crate) fn create(path: &Path, sealer: Arc<Sealer>, meta: &[u8]) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut w = SnapshotWriter {
            path: path.to_path_buf(),
            tmp,
            // A piece is one write of its own; the buffer gathers the
            // frame and each piece's mark and length.
            file: BufWriter::new(file),
            sealer,
            buf: Vec::with_capacity(PIECE + SEAL_OVERHEAD),
            number: 0,
        };
        w.file.write_all(FRAME)?;
        w.buf.extend_from_slice(meta);
        w.put(false)?;
        Ok(w)
    }

    /// Seals and writes what is buffered as the next piece.
    fn put(&mut self, last: bool) -> std::io::Result<()> {
        self.sealer
            .seal_piece(&aad(self.number, last), &mut self.buf)?;
        let len = u32::try_from(self.buf.len()).map_err(std::io::Error::other)?;
        self.file.write_all(&[u8::from(last)])?;
        self.file.write_all(&len.to_be_bytes())?;
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        self.number += 1;
        Ok(())
    }

    /// Writes the last piece, syncs, and replaces the current snapshot.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.put(true)?;
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == PIECE {
            self.put(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // After `finish` the temporary file is gone already.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Reads a snapshot file: its meta at [`SnapshotReader::open`], then the
/// state's bytes through [`Read`], checked piece by piece; a file that
/// ends before its last piece is an error, not a short snapshot.
pub(crate) struct SnapshotReader {
    file: std::io::BufReader<File>,
    sealer: Arc<Sealer>,
    buf: Vec<u8>,
    at: usize,
    number: u64,
    done: bool,
}

impl SnapshotReader {
    /// The snapshot at `path` and its meta; `None` if there is none.
    pub(crate) fn open(
        path: &Path,
        sealer: Arc<Sealer>,
    ) -> std::io::Result<Option<(Vec<u8>, SnapshotReader)>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut r = SnapshotReader {
            file: std::io::BufReader::with_capacity(1 << 16, file),
            sealer,
            buf: Vec::new(),
            at: 0,
            number: 0,
            done: false,
        };
        let mut frame = [0u8; FRAME.len()];
        r.file
            .read_exact(&mut frame)
            .map_err(|_| damaged("no header"))?;
        if frame != FRAME {
            return Err(damaged("not a snapshot file this version can read"));
        }
        if !r.next_piece()? {
            return Err(damaged("no data after its meta"));
        }
        let meta = std::mem::take(&mut r.buf);
        Ok(Some((meta, r)))
    }

    /// Reads and opens the next piece into `buf`; false if it was the last.
    fn next_piece(&mut self) -> std::io::Result<bool> {
        let mut head = [0u8; 5];
        self.file
            .read_exact(&mut head)
            .map_err(|_| damaged("it ends before its last piece"))?;
        let [mark, len @ ..] = head;
        let last = match mark {
            0 => false,
            1 => true,
            _ => return Err(damaged("a piece has a bad mark")),
        };
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_PIECE {
            return Err(damaged("a piece is too large"));
        }
        self.buf.clear();
        self.buf.resize(len, 0);
        self.file
            .read_exact(&mut self.buf)
            .map_err(|_| damaged("it ends inside a piece"))?;
        self.at = 0;
        self.sealer
            .open_piece(&aad(self.number, last), &mut self.buf)?;
        self.number += 1;
        if !last {
            return Ok(true);
        }
        let mut rest = [0u8; 1];
        if self.file.read(&mut rest)? != 0 {
            return Err(damaged("bytes after its last piece"));
        }
        Ok(false)
    }

    /// The rest of the snapshot, read whole.
    pub(crate) fn read_all(mut self) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        self.read_to_end(&mut all)?;
        Ok(all)
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.done = !self.next_piece()?;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(dir: &Path) -> Arc<Sealer> {
        Arc::new(Sealer::load_or_create(dir, None).unwrap())
    }

    /// A state's worth of bytes spanning several pieces, not all equal.
    fn state() -> Vec<u8> {
        (0..PIECE * 2 + 1234).map(|i| (i % 251) as u8).collect()
    }

    fn write(path: &Path, sealer: &Arc<Sealer>, meta: &[u8], state: &[u8]) {
        let mut w = SnapshotWriter::create(path, sealer.clone(), meta).unwrap();
        // In uneven writes, as serde_json's are.
        for chunk in state.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap();
    }

    fn read(path: &Path, sealer: &Arc<Sealer>) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let (meta, r) = SnapshotReader::open(path, sealer.clone())?.expect("a snapshot");
        Ok((meta, r.read_all()?))
    }

    #[test]
    fn round_trips_across_pieces_and_replaces_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sealer) = (dir.path().join(SNAPSHOT_FILE), sealer(dir.path()));
        assert!(SnapshotReader::open(&path, sealer.clone())
            .unwrap()
            .is_none());
        write(&path, &sealer, b"{\"m\":1}", &state());
        assert_eq!(
            read(&path, &sealer).unwrap(),
            (b"{\"m\":1}".to_vec(), state())
        );

        write(&path, &sealer, b"{\"m\":2}", b"");
        assert_eq!(
            read(&path, &sealer).unwrap(),
            (b"{\"m\":2}".to_vec(), vec![])
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(&path.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);

        // A writer dropped before it finished leaves the last snapshot.
        let mut w = SnapshotWriter::create(&path, sealer.clone(), b"{\"m\":3}").unwrap();
        w.write_all(&state()).unwrap();
        drop(w);
        assert_eq!(read(&path, &sealer).unwrap().0, b"{\"m\":2}");
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn damage_is_an_error_not_a_short_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sealer) = (dir.path().join(SNAPSHOT_FILE), sealer(dir.path()));
        write(&path, &sealer, b"{}", &state());
        let good = std::fs::read(&path).unwrap();
        let piece = |n: usize| {
            // Where piece n starts: after the frame and the pieces before it.
            let mut at = FRAME.len();
            for _ in 0..n {
                let len = u32::from_be_bytes(good[at + 1..at + 5].try_into().unwrap());
                at += 5 + len as usize;
            }
            at
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("cut before the last piece", good[..piece(3)].to_vec()),
            ("cut inside a piece", good[..piece(2) + 100].to_vec()),
            ("a byte flipped", {
                let mut b = good.clone();
                b[piece(1) + 5000] ^= 1;
                b
            }),
            ("a piece marked last early", {
                let mut b = good.clone();
                b[piece(1)] = 1;
                b
            }),
            ("two pieces swapped", {
                let mut b = good[..piece(1)].to_vec();
                b.extend_from_slice(&good[piece(2)..piece(3)]);
                b.extend_from_slice(&good[piece(1)..piece(2)]);
                b.extend_from_slice(&good[piece(3)..]);
                b
            }),
            ("bytes after the last piece", {
                let mut b = good.clone();
                b.push(0);
                b
            }),
            ("another header", {
                let mut b = good.clone();
                b[6] = b'9';
                b
            }),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, bytes).unwrap();
            assert!(read(&path, &sealer).is_err(), "{what}: read as good");
        }

        // Another manager's key does not open it.
        std::fs::write(&path, &good).unwrap();
        let other = tempfile::tempdir().unwrap();
        let err = read(&path, &self::sealer(other.path())).unwrap_err();
        assert!(err.to_string().contains("data encryption key"), "{err}");
        assert_eq!(read(&path, &sealer).unwrap().1, state());
    }
}
