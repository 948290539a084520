//! `exec` across the cluster: a command run in a task's workload on the
//! node that runs it, for a client of any manager. The request goes down
//! the node's assignment stream (as a log request does), and the node
//! calls the manager that holds the client back on a two-way stream. These
//! are the messages, and the frames both that stream and the API's
//! upgraded connection carry.

use serde::{Deserialize, Serialize};

use crate::models::Task;

/// What to run, in Docker's exec-create names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, added to the task's own environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub attach_stdin: bool,
    /// The terminal's `[rows, columns]` at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u16; 2]>,
}

/// What a node is asked for: run `spec` in `task`, then call `manager` back
/// (its cluster address) on the exec stream, naming `session`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub session: u64,
    pub task: Task,
    pub spec: ExecSpec,
    pub manager: String,
}

/// What a frame carries. The client sends `Stdin`, `CloseStdin` and
/// `Resize`; the task's side sends `Started`, `Stdout`, `Stderr`, and last
/// `Exit` or `Error`. `Hello` opens a node's stream to a manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    /// The command's exit code, as decimal text.
    Exit = 3,
    /// Why the command could not be run at all (no workload, node gone).
    Error = 4,
    /// `rows columns` as two big-endian u16.
    Resize = 5,
    CloseStdin = 6,
    /// The session ID, as decimal text.
    Hello = 7,
    /// The command runs; its exec ID (the engine's, or the process's).
    Started = 8,
}

impl FrameKind {
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        use FrameKind::*;
        [
            Stdin, Stdout, Stderr, Exit, Error, Resize, CloseStdin, Hello, Started,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub data: Vec<u8>,
}

/// The largest frame payload accepted: a sender cuts its output into
/// pieces well under it.
pub const MAX_FRAME: usize = 1 << 20;
/// A frame's header: its kind (one byte), then its payload's length
/// (big-endian u32).
pub const HEADER: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown exec frame kind {0}")]
    UnknownKind(u8),
    #[error("exec frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
}

impl Frame {
    pub fn new(kind: FrameKind, data: impl Into<Vec<u8>>) -> Frame {
        Frame {
            kind,
            data: data.into(),
        }
    }

    pub fn exit(code: i64) -> Frame {
        Frame::new(FrameKind::Exit, code.to_string())
    }

    pub fn error(message: impl std::fmt::Display) -> Frame {
        Frame::new(FrameKind::Error, message.to_string())
    }

    pub fn resize(rows: u16, cols: u16) -> Frame {
        let mut data = rows.to_be_bytes().to_vec();
        data.extend_from_slice(&cols.to_be_bytes());
        Frame::new(FrameKind::Resize, data)
    }

    /// `(rows, columns)` of a `Resize` frame.
    pub fn size(&self) -> Option<(u16, u16)> {
        match (self.kind, self.data.as_slice()) {
            (FrameKind::Resize, [r0, r1, c0, c1]) => Some((
                u16::from_be_bytes([*r0, *r1]),
                u16::from_be_bytes([*c0, *c1]),
            )),
            _ => None,
        }
    }

    /// The number an `Exit` or `Hello` frame carries.
    pub fn number(&self) -> Option<i64> {
        std::str::from_utf8(&self.data).ok()?.trim().parse().ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Appends the frame, header first, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.data);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.data.len());
        self.encode(&mut out);
        out
    }

    /// The first whole frame in `buf` and how many bytes it took; None
    /// while it is incomplete.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let kind = FrameKind::from_u8(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let Some(data) = buf.get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        Ok(Some((Frame::new(kind, data), HEADER + len)))
    }
}

/// Frames read from a byte stream as it arrives, in any cuts.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame received, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match Frame::decode(&self.buf)? {
            Some((frame, used)) => {
                self.buf.drain(..used);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Bytes of a frame not yet whole.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The exit code `docker exec` gives when the command could not be run:
/// 127 when it was not found, 126 when it was found but cannot run.
pub fn cannot_run_code(not_found: bool) -> i64 {
    if not_found {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whatever_the_cuts() {
        let frames = vec![
            Frame::new(FrameKind::Stdout, b"hi\n".to_vec()),
            Frame::resize(24, 80),
            Frame::new(FrameKind::CloseStdin, Vec::new()),
            Frame::exit(-3),
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        assert_eq!(&bytes[..HEADER], &[1, 0, 0, 0, 3]);
        for cut in 1..bytes.len() {
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(cut) {
                reader.push(piece);
                while let Some(f) = reader.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "cut {cut}");
            assert_eq!(reader.pending(), 0);
        }
        assert_eq!(frames[1].size(), Some((24, 80)));
        assert_eq!(frames[3].number(), Some(-3));
        assert_eq!(frames[0].size(), None);
    }

    #[test]
    fn bad_frames_are_errors_not_hangs() {
        assert_eq!(
            Frame::decode(&[9, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(
            Frame::decode(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
        assert_eq!(Frame::decode(&[0, 0, 0]), Ok(None));
        assert_eq!(Frame::decode(&[0, 0, 0, 0, 2, b'a']), Ok(None));
    }

    #[test]
    fn the_spec_reads_docker_s_exec_create_body() {
        let spec: ExecSpec = serde_json::from_str(
            r#"{"Cmd":["sh","-c","tty"],"Env":["A=1"],"Tty":true,"AttachStdin":true,"ConsoleSize":[30,100]}"#,
        )
        .unwrap();
        assert_eq!(spec.cmd, ["sh", "-c", "tty"]);
        assert_eq!(spec.console_size, Some([30, 100]));
        assert!(spec.tty && spec.attach_stdin);
        assert_eq!(spec.user, None);
    }
}
