//! `swarm unlock-key` and `swarm unlock`, as docker/cli's
//! cli/command/swarm/unlock_key.go and unlock.go (docker 28).

use std::io::{BufRead, IsTerminal, Write};

use bollard::models::{Swarm, SystemInfo};
use clap::Args;
use serde_json::json;

use crate::client::{CliError, Client, Result};
use crate::format::enum_text;
use crate::PROGRAM;

#[derive(Args, Debug)]
pub struct UnlockKeyArgs {
    /// Rotate unlock key
    #[arg(long)]
    rotate: bool,
    /// Only display token
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {}

/// The key from GET /swarm/unlockkey ("" when autolock is off); a failure
/// reads "could not fetch unlock key: ...", as docker wraps it.
pub(super) async fn fetch_unlock_key(client: &Client) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct UnlockKey {
        #[serde(rename = "UnlockKey", default)]
        unlock_key: Option<String>,
    }
    let key: UnlockKey = client
        .get("/swarm/unlockkey")
        .await
        .map_err(|e| CliError::Other(format!("could not fetch unlock key: {e}")))?;
    Ok(key.unlock_key.unwrap_or_default())
}

/// docker's printUnlockCommand: nothing for an empty key.
pub(super) fn unlock_text(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    format!(
        "To unlock a swarm manager after it restarts, run the `{PROGRAM} swarm unlock`\ncommand and provide the following key:\n\n    {key}\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    )
}

/// `swarm unlock-key [--rotate] [-q]`.
pub(super) async fn unlock_key(
    client: &Client,
    args: UnlockKeyArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    if args.rotate {
        let swarm: Swarm = client.get("/swarm").await?;
        let autolock = swarm
            .spec
            .as_ref()
            .and_then(|s| s.encryption_config.as_ref())
            .and_then(|e| e.auto_lock_managers)
            .unwrap_or(false);
        if !autolock {
            return Err("cannot rotate because autolock is not turned on".into());
        }
        let rotate = super::Rotate {
            unlock_key: true,
            ..Default::default()
        };
        let spec = swarm.spec.clone().unwrap_or_default();
        super::update_swarm(client, &swarm, &spec, rotate).await?;
        if !args.quiet {
            let _ = writeln!(out, "Successfully rotated manager unlock key.");
        }
    }
    let key = fetch_unlock_key(client).await?;
    if key.is_empty() {
        return Err("no unlock key is set".into());
    }
    if args.quiet {
        let _ = writeln!(out, "{key}");
    } else {
        let _ = write!(out, "{}", unlock_text(&key));
    }
    let _ = out.flush();
    Ok(())
}

/// `swarm unlock`: only a locked node is asked for the key (read by
/// `read_key`), which goes to POST /swarm/unlock.
pub(super) async fn unlock(
    client: &Client,
    read_key: impl FnOnce() -> Result<String>,
) -> Result<()> {
    let info: SystemInfo = client.get("/info").await?;
    let state = enum_text(&info.swarm.and_then(|s| s.local_node_state));
    match state.as_str() {
        "inactive" => return Err("Error: This node is not part of a swarm".into()),
        "pending" | "active" | "error" => return Err("Error: swarm is not locked".into()),
        _ => {}
    }
    let key = read_key()?;
    client
        .post("/swarm/unlock", Some(&json!({ "UnlockKey": key })))
        .await?;
    Ok(())
}

/// docker's readKey on the process's stdin: on a terminal, the prompt on
/// stdout and the key read without echo; else one line, trimmed.
pub(super) fn read_key_from_stdin() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        crate::out("Enter unlock key: ");
        let key = read_password();
        crate::out("\n");
        return key;
    }
    read_key_line(&mut stdin.lock())
}

/// The piped form of readKey: up to the first newline (or the end), with
/// surrounding white space trimmed.
pub(super) fn read_key_line(input: &mut dyn BufRead) -> Result<String> {
    let mut line = Vec::new();
    input
        .read_until(b'\n', &mut line)
        .map_err(|e| CliError::Other(crate::tls::go_errno(&e)))?;
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

/// golang.org/x/term's ReadPassword on stdin: echo off for one line (the
/// line's end not included, nothing trimmed), the terminal restored after.
fn read_password() -> Result<String> {
    use std::io::Read;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(CliError::Other(crate::tls::go_errno(
            &std::io::Error::last_os_error(),
        )));
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ICANON | libc::ISIG;
    quiet.c_iflag |= libc::ICRNL;
    // SAFETY: sets attributes read above, with echo off, on the same fd.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(CliError::Other(crate::tls::go_errno(
            &std::io::Error::last_os_error(),
        )));
    }
    struct Restore(libc::termios);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restores the attributes saved from this terminal.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
            }
        }
    }
    let _restore = Restore(saved);
    let mut key = Vec::new();
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if byte[0] == b'\r' => {}
            Ok(_) => key.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::Other(crate::tls::go_errno(&e))),
        }
    }
    Ok(String::from_utf8_lossy(&key).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeDaemon;
    use std::sync::Arc;

    const KEY: &str = "SWMKEY-1-7c37Cc8654o6p38HnroywCi19pllOnGtbdZEgtKxZu8";

    fn unlock_answer(seen: &crate::testutil::Seen, locked: bool) -> (u16, String) {
        match seen.path.as_str() {
            "/v1.41/swarm/unlockkey" => (200, format!(r#"{{"UnlockKey":"{KEY}"}}"#)),
            p if p.starts_with("/v1.41/swarm/update") => (200, String::new()),
            "/v1.41/swarm" => (
                200,
                format!(
                    r#"{{"ID":"c1","Version":{{"Index":42}},"Spec":{{"Name":"default","EncryptionConfig":{{"AutoLockManagers":{locked}}}}}}}"#
                ),
            ),
            _ => (404, r#"{"message":"page not found"}"#.to_string()),
        }
    }

    async fn run_unlock_key(daemon: &FakeDaemon, args: &[&str]) -> (Result<()>, String) {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: UnlockKeyArgs,
        }
        let cli =
            Cli::try_parse_from(std::iter::once("unlock-key").chain(args.iter().copied())).unwrap();
        let mut out = Vec::new();
        let result = unlock_key(&daemon.client(), cli.args, &mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn unlock_key_prints_dockers_text() {
        let daemon = FakeDaemon::start_with(Arc::new(|s| unlock_answer(s, true)));
        let (result, out) = run_unlock_key(&daemon, &[]).await;
        result.unwrap();
        assert_eq!(
            out,
            format!("To unlock a swarm manager after it restarts, run the `flotilla swarm unlock`\ncommand and provide the following key:\n\n    {KEY}\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n")
        );
        let (result, out) = run_unlock_key(&daemon, &["-q"]).await;
        result.unwrap();
        assert_eq!(out, format!("{KEY}\n"));
        let requests: Vec<String> = daemon.requests().into_iter().map(|r| r.0).collect();
        assert_eq!(
            requests,
            ["GET /v1.41/swarm/unlockkey", "GET /v1.41/swarm/unlockkey"]
        );
    }

    #[tokio::test]
    async fn rotate_updates_with_the_current_spec_then_prints_the_new_key() {
        let daemon = FakeDaemon::start_with(Arc::new(|s| unlock_answer(s, true)));
        let (result, out) = run_unlock_key(&daemon, &["--rotate"]).await;
        result.unwrap();
        assert!(out.starts_with(
            "Successfully rotated manager unlock key.\nTo unlock a swarm manager after it restarts"
        ));
        let requests = daemon.requests();
        assert_eq!(requests[0].0, "GET /v1.41/swarm");
        assert_eq!(
            requests[1].0,
            "POST /v1.41/swarm/update?version=42&rotateWorkerToken=false&rotateManagerToken=false&rotateManagerUnlockKey=true"
        );
        let spec: serde_json::Value = serde_json::from_str(&requests[1].1).unwrap();
        assert_eq!(
            spec,
            json!({"Name": "default", "EncryptionConfig": {"AutoLockManagers": true}})
        );
        assert_eq!(requests[2].0, "GET /v1.41/swarm/unlockkey");

        let (result, out) = run_unlock_key(&daemon, &["--rotate", "-q"]).await;
        result.unwrap();
        assert_eq!(out, format!("{KEY}\n"));
    }

    #[tokio::test]
    async fn unlock_key_errors_as_docker() {
        // Autolock off: no rotation, and no key to show.
        let daemon = FakeDaemon::start_with(Arc::new(|s| {
            if s.path == "/v1.41/swarm/unlockkey" {
                (200, r#"{"UnlockKey":""}"#.to_string())
            } else {
                unlock_answer(s, false)
            }
        }));
        let (result, out) = run_unlock_key(&daemon, &["--rotate"]).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "cannot rotate because autolock is not turned on"
        );
        assert_eq!(out, "");
        let (result, _) = run_unlock_key(&daemon, &[]).await;
        assert_eq!(result.unwrap_err().to_string(), "no unlock key is set");

        let daemon = FakeDaemon::start_with(Arc::new(|_| {
            (
                503,
                r#"{"message":"This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again."}"#
                    .to_string(),
            )
        }));
        let (result, _) = run_unlock_key(&daemon, &[]).await;
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not fetch unlock key: Error response from daemon: This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again."
        );
        assert_eq!(err.exit_code(), 1);
    }

    fn info(state: &'static str) -> FakeDaemon {
        FakeDaemon::start_with(Arc::new(move |s| match s.path.as_str() {
            "/v1.41/info" => (
                200,
                format!(r#"{{"Swarm":{{"LocalNodeState":"{state}"}}}}"#),
            ),
            "/v1.41/swarm/unlock" if s.body.contains("\"SWMKEY-1-right\"") => (200, String::new()),
            "/v1.41/swarm/unlock" => (400, r#"{"message":"invalid key"}"#.to_string()),
            _ => (404, r#"{"message":"page not found"}"#.to_string()),
        }))
    }

    #[tokio::test]
    async fn unlock_sends_the_key_only_when_locked() {
        let daemon = info("locked");
        unlock(&daemon.client(), || Ok("SWMKEY-1-right".to_string()))
            .await
            .unwrap();
        let requests = daemon.requests();
        assert_eq!(requests[1].0, "POST /v1.41/swarm/unlock");
        assert_eq!(requests[1].1, r#"{"UnlockKey":"SWMKEY-1-right"}"#);

        let err = unlock(&daemon.client(), || Ok("SWMKEY-1-wrong".to_string()))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "Error response from daemon: invalid key");

        for (state, message) in [
            ("inactive", "Error: This node is not part of a swarm"),
            ("active", "Error: swarm is not locked"),
            ("pending", "Error: swarm is not locked"),
            ("error", "Error: swarm is not locked"),
        ] {
            let daemon = info(state);
            let err = unlock(&daemon.client(), || panic!("asked for a key when {state}"))
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), message);
            assert_eq!(daemon.requests().len(), 1);
        }
    }

    #[test]
    fn piped_keys_are_one_trimmed_line() {
        let mut input: &[u8] = b"  SWMKEY-1-abc \nsecond line\n";
        assert_eq!(read_key_line(&mut input).unwrap(), "SWMKEY-1-abc");
        let mut input: &[u8] = b"SWMKEY-1-no-newline";
        assert_eq!(read_key_line(&mut input).unwrap(), "SWMKEY-1-no-newline");
        let mut input: &[u8] = b"";
        assert_eq!(read_key_line(&mut input).unwrap(), "");
    }

    #[test]
    fn no_text_for_no_key() {
        assert_eq!(unlock_text(""), "");
    }
}
