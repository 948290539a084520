//! `flotilla exec`: runs a command in a task of the swarm, wherever it
//! runs, through the daemon's `/flotilla/v1/.../exec` endpoint (docs/api.md):
//! the connection is upgraded, then carries frames both ways. Stdin with
//! `-i`, a terminal with `-t` (raw while it runs, its size sent at the start
//! and on every SIGWINCH); the command's exit code becomes this one's.

use std::io::Write;

use flotilla_store::exec::{ExecSpec, Frame, FrameKind, FrameReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::{encode, CliError, Client, Result};

/// Run a command in a running task of a service
///
/// SERVICE picks the service's running task of the lowest slot (of the
/// lowest task ID for a global service), SERVICE.SLOT that slot's running
/// task, TASK a task by ID or unique ID prefix.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Keep STDIN open and send it to the command
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "list")]
    env: Vec<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short, long, value_name = "string")]
    user: Option<String>,
    /// Working directory inside the task
    #[arg(short, long, value_name = "string")]
    workdir: Option<String>,
    /// SERVICE, SERVICE.SLOT or TASK
    target: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs `exec`; Ok carries the command's exit code.
pub async fn run(client: &Client, args: ExecArgs) -> Result<i32> {
    let stdin_tty = is_terminal(libc::STDIN_FILENO);
    if args.interactive && args.tty && !stdin_tty {
        return Err("the input device is not a TTY".into());
    }
    let size = if args.tty { terminal_size() } else { None };
    let spec = ExecSpec {
        cmd: args.command.clone(),
        env: env_list(&args.env, |k| std::env::var(k).ok()),
        user: args.user.clone(),
        working_dir: args.workdir.clone(),
        tty: args.tty,
        attach_stdin: args.interactive,
        console_size: size.map(|(r, c)| [r, c]),
    };
    let io = open(client, &args.target, &spec).await?;
    // Raw input only for a terminal whose keys go to the command.
    let _raw = (args.tty && args.interactive && stdin_tty)
        .then(|| RawMode::enter(libc::STDIN_FILENO))
        .flatten();
    pipe(io, args.interactive, args.tty).await
}

/// The upgraded connection to the target's exec: SERVICE.SLOT, else
/// SERVICE, else TASK.
async fn open(
    client: &Client,
    target: &str,
    spec: &ExecSpec,
) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    if let Some((service, slot)) = split_slot(target) {
        let path = format!("/flotilla/v1/services/{}/exec?slot={slot}", encode(service));
        match client.upgrade(&path, spec).await {
            Err(e) if e.is_not_found() => {}
            other => return other,
        }
    }
    let path = format!("/flotilla/v1/services/{}/exec", encode(target));
    match client.upgrade(&path, spec).await {
        Err(e) if e.is_not_found() => {}
        other => return other,
    }
    let path = format!("/flotilla/v1/tasks/{}/exec", encode(target));
    client.upgrade(&path, spec).await.map_err(|e| {
        if e.is_not_found() {
            CliError::Daemon {
                status: 404,
                message: format!("no such service or task: {target}"),
            }
        } else {
            e
        }
    })
}

/// `web.2` as ("web", 2).
fn split_slot(target: &str) -> Option<(&str, u64)> {
    let (service, slot) = target.rsplit_once('.')?;
    let slot: u64 = slot.parse().ok()?;
    (!service.is_empty() && slot > 0).then_some((service, slot))
}

/// `-e KEY=VALUE` as given; `-e KEY` takes KEY's value here, and is left
/// out when it has none (as the docker CLI does).
fn env_list(flags: &[String], lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    flags
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            None => lookup(e).map(|v| format!("{e}={v}")),
        })
        .collect()
}

async fn pipe<IO>(io: IO, interactive: bool, tty: bool) -> Result<i32>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(io);
    let (frames, mut to_send) = mpsc::channel::<Frame>(16);
    let writer = tokio::spawn(async move {
        while let Some(frame) = to_send.recv().await {
            if write.write_all(&frame.to_bytes()).await.is_err() {
                return;
            }
        }
    });
    if interactive {
        tokio::spawn(send_stdin(frames.clone()));
    }
    if tty {
        tokio::spawn(send_resizes(frames.clone()));
    }
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 32 << 10];
    let result = loop {
        match reader.next_frame() {
            Ok(Some(frame)) => match frame.kind {
                FrameKind::Stdout => write_out(&mut std::io::stdout(), &frame.data),
                FrameKind::Stderr => write_out(&mut std::io::stderr(), &frame.data),
                FrameKind::Exit => {
                    let code = frame.number().unwrap_or(1);
                    break Ok(i32::try_from(code).unwrap_or(1));
                }
                FrameKind::Error => {
                    break Err(CliError::Other(format!(
                        "Error response from daemon: {}",
                        frame.text()
                    )))
                }
                _ => {}
            },
            Ok(None) => match read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    break Err(CliError::Other(
                        "the connection to the daemon closed before the command ended".into(),
                    ))
                }
                Ok(n) => reader.push(&buf[..n]),
            },
            Err(e) => {
                break Err(CliError::Other(format!(
                    "error reading from the daemon: {e}"
                )))
            }
        }
    };
    writer.abort();
    result
}

fn write_out(out: &mut impl Write, data: &[u8]) {
    let _ = out.write_all(data);
    let _ = out.flush();
}

/// Stdin as `Stdin` frames, then `CloseStdin` at its end.
async fn send_stdin(frames: mpsc::Sender<Frame>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if frames
                    .send(Frame::new(FrameKind::Stdin, &buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = frames
        .send(Frame::new(FrameKind::CloseStdin, Vec::new()))
        .await;
}

async fn send_resizes(frames: mpsc::Sender<Frame>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some((rows, cols)) = terminal_size() {
            if frames.send(Frame::resize(rows, cols)).await.is_err() {
                return;
            }
        }
    }
}

fn is_terminal(fd: libc::c_int) -> bool {
    // SAFETY: isatty only reads the descriptor's state.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's (rows, columns), from stdout or else stdin.
fn terminal_size() -> Option<(u16, u16)> {
    [libc::STDOUT_FILENO, libc::STDIN_FILENO]
        .into_iter()
        .find_map(|fd| {
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one winsize into the one given.
            let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
            (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
        })
}

/// The terminal in raw mode while this lives; the old mode comes back on
/// drop, whatever way the command ends.
struct RawMode {
    fd: libc::c_int,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: libc::c_int) -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; saved is a valid termios to write.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw changes the struct given and nothing else.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: as above, with a termios made from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the termios read from the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_a_number_after_the_last_dot() {
        assert_eq!(split_slot("web.2"), Some(("web", 2)));
        assert_eq!(split_slot("my.web.10"), Some(("my.web", 10)));
        assert_eq!(split_slot("web"), None);
        assert_eq!(split_slot("web.x"), None);
        assert_eq!(split_slot("web.0"), None);
        assert_eq!(split_slot(".3"), None);
    }

    #[test]
    fn env_without_a_value_takes_the_client_s_or_is_left_out() {
        let lookup = |k: &str| (k == "HOME").then(|| "/root".to_string());
        let flags = ["A=1".to_string(), "HOME".to_string(), "NOPE".to_string()];
        assert_eq!(env_list(&flags, lookup), ["A=1", "HOME=/root"]);
    }

    #[tokio::test]
    async fn output_goes_to_its_stream_and_the_exit_code_is_returned() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut bytes = Vec::new();
        Frame::new(FrameKind::Stdout, b"".to_vec()).encode(&mut bytes);
        Frame::exit(3).encode(&mut bytes);
        server.write_all(&bytes).await.unwrap();
        assert_eq!(pipe(client, false, false).await.unwrap(), 3);
        let (client, mut server) = tokio::io::duplex(1 << 16);
        server
            .write_all(&Frame::error("gone").to_bytes())
            .await
            .unwrap();
        let e = pipe(client, false, false).await.unwrap_err();
        assert_eq!(e.to_string(), "Error response from daemon: gone");
        let (client, server) = tokio::io::duplex(1 << 16);
        drop(server);
        assert!(pipe(client, false, false).await.is_err());
    }
}
