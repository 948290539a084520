//! The node's side of `exec` across the cluster: exec requests arrive on
//! the assignment stream (see `flotilla_manager::execbroker`); for each,
//! the node calls back the manager that holds the client on a two-way
//! stream, runs the command through its executor, and pipes: output up,
//! input, stdin's end and resizes down, the exit code last. When the
//! manager's side closes before the command ends (the client went away),
//! the command is killed.

use std::sync::Arc;

use flotilla_store::exec::{ExecRequest, Frame, FrameKind};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::exec::{ExecProcess, Executor, LogStream};
use crate::session::{FrameStream, Session};

/// Output is sent in frames of at most this many bytes.
const CHUNK: usize = 32 << 10;
/// How long the node waits for the manager to close the stream after the
/// last frame.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the session's exec requests until `stop`.
pub async fn serve(
    session: Arc<dyn Session>,
    exec: Arc<dyn Executor>,
    stop: watch::Receiver<bool>,
) {
    let Some(requests) = session.exec_requests() else {
        return;
    };
    crate::logserver::each_request(requests, stop, |request| {
        answer(session.clone(), exec.clone(), request)
    })
    .await;
}

fn receiver_stream(rx: mpsc::Receiver<Frame>) -> FrameStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) }).boxed()
}

async fn answer(session: Arc<dyn Session>, exec: Arc<dyn Executor>, request: ExecRequest) {
    let (up, rx) = mpsc::channel(16);
    let hello = Frame::new(FrameKind::Hello, request.session.to_string());
    if up.send(hello).await.is_err() {
        return;
    }
    let incoming = match session
        .exec_attach(&request.manager, receiver_stream(rx))
        .await
    {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::warn!("exec: cannot call manager {} back: {e}", request.manager);
            return;
        }
    };
    match exec.exec(&request.task, &request.spec).await {
        Ok(process) => pipe(process, incoming, up).await,
        Err(e) => {
            let _ = up.send(Frame::error(e)).await;
            drop(up);
            linger(incoming).await;
        }
    }
}

/// Pipes a running command to whoever holds `incoming` and `up`.
pub async fn pipe(process: ExecProcess, mut incoming: FrameStream, up: mpsc::Sender<Frame>) {
    let ExecProcess {
        id,
        mut output,
        stdin,
        control,
    } = process;
    if up
        .send(Frame::new(FrameKind::Started, id.clone()))
        .await
        .is_err()
    {
        control.kill().await;
        return;
    }
    // Input is written apart from the loop: a command that does not read
    // its stdin must not stop its output from being sent.
    let (input, mut input_rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let writer = tokio::spawn(async move {
        let Some(mut stdin) = stdin else { return };
        while let Some(Some(data)) = input_rx.recv().await {
            if stdin.write_all(&data).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
        }
        let _ = stdin.shutdown().await;
    });
    let mut client_open = true;
    loop {
        tokio::select! {
            chunk = output.next() => {
                let Some((stream, bytes)) = chunk else { break };
                let kind = match stream {
                    LogStream::Stdout => FrameKind::Stdout,
                    LogStream::Stderr => FrameKind::Stderr,
                };
                for piece in bytes.chunks(CHUNK) {
                    if up.send(Frame::new(kind, piece)).await.is_err() {
                        control.kill().await;
                        writer.abort();
                        return;
                    }
                }
            }
            frame = incoming.next(), if client_open => match frame {
                Some(f) if f.kind == FrameKind::Stdin => {
                    let _ = input.send(Some(f.data));
                }
                Some(f) if f.kind == FrameKind::CloseStdin => {
                    let _ = input.send(None);
                }
                Some(f) => {
                    if let Some((rows, cols)) = f.size() {
                        if let Err(e) = control.resize(rows, cols).await {
                            tracing::debug!("exec {id}: {e}");
                        }
                    }
                }
                None => {
                    // The client (or its manager) went away: so does the command.
                    client_open = false;
                    control.kill().await;
                    let _ = input.send(None);
                }
            },
        }
    }
    drop(input);
    let last = match control.exit_code().await {
        Ok(code) => Frame::exit(code),
        Err(e) => Frame::error(e),
    };
    let _ = up.send(last).await;
    drop(up);
    let _ = writer.await;
    // (A stream that ended already must not be polled again.)
    if client_open {
        linger(incoming).await;
    }
}

/// Dropping `incoming` at once would cancel the whole stream, the last
/// frames sent with it: wait for the manager to close its side once it
/// has them (or give up after a while).
async fn linger(mut incoming: FrameStream) {
    let _ = tokio::time::timeout(LINGER, async { while incoming.next().await.is_some() {} }).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::exec::{ExecControl, ExecError};

    #[derive(Default)]
    struct Stub {
        killed: Arc<AtomicBool>,
        resized: std::sync::Mutex<Vec<(u16, u16)>>,
    }

    #[async_trait]
    impl ExecControl for Arc<Stub> {
        async fn resize(&self, rows: u16, cols: u16) -> Result<(), ExecError> {
            self.resized.lock().unwrap().push((rows, cols));
            Ok(())
        }
        async fn exit_code(&self) -> Result<i64, ExecError> {
            Ok(7)
        }
        async fn kill(&self) {
            self.killed.store(true, Ordering::SeqCst);
        }
    }

    /// A command whose output is `output`'s, whose stdin is `stdin`'s other end.
    fn process(
        stub: &Arc<Stub>,
        output: mpsc::Receiver<(LogStream, bytes::Bytes)>,
    ) -> (ExecProcess, tokio::io::DuplexStream) {
        let (stdin, far) = tokio::io::duplex(1024);
        let output =
            futures::stream::unfold(
                output,
                |mut rx| async move { rx.recv().await.map(|o| (o, rx)) },
            )
            .boxed();
        let process = ExecProcess {
            id: "e1".into(),
            output,
            stdin: Some(Box::pin(stdin)),
            control: Box::new(stub.clone()),
        };
        (process, far)
    }

    #[tokio::test]
    async fn input_resizes_and_output_cross_and_the_exit_code_comes_last() {
        let stub = Arc::new(Stub::default());
        let (out_tx, out_rx) = mpsc::channel(4);
        let (process, mut stdin) = process(&stub, out_rx);
        let (down, rx) = mpsc::channel(4);
        let (up, mut from_node) = mpsc::channel(16);
        let piped = tokio::spawn(pipe(process, receiver_stream(rx), up));
        assert_eq!(from_node.recv().await.unwrap().kind, FrameKind::Started);
        down.send(Frame::new(FrameKind::Stdin, b"abc".to_vec()))
            .await
            .unwrap();
        down.send(Frame::new(FrameKind::CloseStdin, Vec::new()))
            .await
            .unwrap();
        down.send(Frame::resize(3, 4)).await.unwrap();
        let mut input = Vec::new();
        stdin.read_to_end(&mut input).await.unwrap();
        assert_eq!(input, b"abc");
        out_tx.send((LogStream::Stderr, "e".into())).await.unwrap();
        drop(out_tx);
        let f = from_node.recv().await.unwrap();
        assert_eq!((f.kind, f.data), (FrameKind::Stderr, b"e".to_vec()));
        assert_eq!(from_node.recv().await.unwrap().number(), Some(7));
        drop(down);
        piped.await.unwrap();
        assert_eq!(*stub.resized.lock().unwrap(), [(3, 4)]);
        assert!(!stub.killed.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_client_that_goes_away_kills_the_command() {
        let stub = Arc::new(Stub::default());
        let (out_tx, out_rx) = mpsc::channel(4);
        let (process, _stdin) = process(&stub, out_rx);
        let (down, rx) = mpsc::channel(4);
        let (up, mut from_node) = mpsc::channel(16);
        let piped = tokio::spawn(pipe(process, receiver_stream(rx), up));
        assert_eq!(from_node.recv().await.unwrap().kind, FrameKind::Started);
        drop(down);
        while !stub.killed.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        drop(out_tx);
        drop(from_node);
        piped.await.unwrap();
    }
}
