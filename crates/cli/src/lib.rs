//! Flotilla's client: the `swarm`, `node`, `service`, `network`, `secret`
//! and `config` commands with the docker CLI's flags and output, spoken over
//! the Docker Engine API v1.41.
//!
//! - [`client`]: HTTP to the daemon and docker's error wording.
//! - `format`: templates (`--format`), tables, durations, sizes.
//! - `swarm`, `node`, `service`, `network`: one module per command group;
//!   `secret` serves both `secret` and `config`.
//! - `task`: the task table shared by `node ps` and `service ps`.
//! - `progress`: the convergence display of `service create/update/scale`.
//! - `registry`: `--with-registry-auth`, the credentials docker would send.
//! - `stack`: `stack deploy | ls | ps | services | rm` from compose files.
//! - `exec`: `flotilla exec`, a command run in a task wherever it runs.
//! - `dashboard`: `flotilla dashboard`, a live web page of the swarm served
//!   by the client (docs/dashboard.md).
//! - [`tls`]: the docker CLI's `--tls*` flags ([`TlsArgs`]) and HTTPS to
//!   the daemon.

pub mod client;
mod dashboard;
mod exec;
mod format;
mod home;
mod network;
mod node;
mod progress;
mod registry;
mod resolve;
mod secret;
pub(crate) mod service;
mod stack;
mod swarm;
mod task;
#[cfg(test)]
mod testutil;
pub mod tls;

pub use dashboard::DashboardArgs;
pub use exec::ExecArgs;
pub use network::NetworkCmd;
pub use node::NodeCmd;
pub use secret::{ConfigCmd, SecretCmd};
pub use service::ServiceCmd;
pub use stack::StackCmd;
pub use swarm::SwarmCmd;
pub use tls::{TlsArgs, TlsMode};

use client::{CliError, Client};

/// The program name printed in hints such as "flotilla swarm join --token ...".
pub const PROGRAM: &str = "flotilla";

/// Default daemon address: unix:///run/flotilla/flotilla.sock when running as root,
/// else unix://$XDG_RUNTIME_DIR/flotilla/flotilla.sock, else ~/.flotilla/flotilla.sock.
pub fn default_host() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return "unix:///run/flotilla/flotilla.sock".to_string();
    }
    // Never a predictable path in a directory others can write (/tmp):
    // another user could put their own socket there first.
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("XDG_RUNTIME_DIR"), var("HOME")) {
        (Some(dir), _) => format!("unix://{dir}/flotilla/flotilla.sock"),
        (None, Some(home)) => format!("unix://{home}/.flotilla/flotilla.sock"),
        (None, None) => format!("unix:///run/user/{uid}/flotilla/flotilla.sock"),
    }
}

/// The client commands, as the binary's subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Manage Swarm
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Manage Swarm nodes
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage Swarm services
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage Docker secrets
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Manage Docker configs
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage Swarm stacks
    #[command(subcommand)]
    Stack(StackCmd),
    /// Serve a live web dashboard of the swarm on 127.0.0.1
    Dashboard(DashboardArgs),
    /// Run a command in a running task of a service, wherever it runs
    Exec(ExecArgs),
}

/// Runs one client command against `host` ("unix:///path" or "tcp://h:p")
/// with the TLS flags `tls`; returns the process exit code. As the docker
/// CLI, TLS files that cannot be read or used fail before the command runs,
/// with "Failed to initialize: ..." and exit status 1.
pub async fn run(host: &str, tls: &TlsArgs, cmd: ClientCommand) -> i32 {
    let config = match tls::client_config(&tls.resolve(), host) {
        Ok(config) => config,
        Err(reason) => {
            eprintln!("Failed to initialize: {reason}");
            return 1;
        }
    };
    let result = match Client::with_tls(host, config) {
        Ok(client) => match cmd {
            ClientCommand::Swarm(cmd) => swarm::run(&client, cmd).await,
            ClientCommand::Node(cmd) => node::run(&client, cmd).await,
            ClientCommand::Service(cmd) => service::run(&client, cmd).await,
            ClientCommand::Network(cmd) => network::run(&client, cmd).await,
            ClientCommand::Secret(cmd) => secret::run_secret(&client, cmd).await,
            ClientCommand::Config(cmd) => secret::run_config(&client, cmd).await,
            ClientCommand::Stack(cmd) => stack::run(&client, cmd).await,
            ClientCommand::Dashboard(args) => dashboard::run(&client, args).await,
            // The command's exit code is the CLI's.
            ClientCommand::Exec(args) => match exec::run(&client, args).await {
                Ok(code) => return code,
                Err(e) => Err(e),
            },
        },
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            report(&err);
            err.exit_code()
        }
    }
}

fn report(err: &CliError) {
    let text = err.to_string();
    if !text.is_empty() {
        eprintln!("{text}");
    }
}

/// Writes to stdout, ignoring a closed pipe the way Go programs do not crash on it.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// docker's `command.PromptForConfirmation`: prints `message` and " [y/N] "
/// to stdout and reads one line from stdin, whether or not it is a terminal;
/// only "y" or "Y" is a yes (an empty or closed stdin is a no).
pub(crate) fn confirm(message: &str) -> bool {
    out(&format!("{message} [y/N] "));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    is_yes(&line)
}

/// The answer test of `PromptForConfirmation`, on the line as read (bufio's
/// ReadLine drops the "\n" or "\r\n"; nothing else is trimmed).
pub(crate) fn is_yes(line: &str) -> bool {
    let answer = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(line);
    answer.to_lowercase() == "y"
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_y_confirms() {
        assert!(super::is_yes("y\n"));
        assert!(super::is_yes("Y\r\n"));
        assert!(super::is_yes("y"));
        assert!(!super::is_yes(""));
        assert!(!super::is_yes("yes\n"));
        assert!(!super::is_yes(" y\n"));
        assert!(!super::is_yes("n\n"));
    }
}
