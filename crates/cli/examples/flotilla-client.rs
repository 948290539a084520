//! A stand-alone client for trying the commands against any Engine API
//! socket (Flotilla's or Docker's), as the `flotilla` binary wires them:
//! `cargo run -p flotilla-cli --example flotilla-client -- -H unix:///var/run/docker.sock service ls`

use clap::Parser;

#[derive(Parser)]
#[command(name = "flotilla")]
struct Cli {
    /// Daemon socket to connect to
    #[arg(short = 'H', long, env = "FLOTILLA_HOST", global = true)]
    host: Option<String>,
    #[command(flatten)]
    tls: flotilla_cli::TlsArgs,
    #[command(subcommand)]
    command: flotilla_cli::ClientCommand,
}

#[tokio::main]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // docker exits 125 on flag errors; help and version are not errors.
            std::process::exit(if err.use_stderr() { 125 } else { 0 });
        }
    };
    let host = cli.host.unwrap_or_else(flotilla_cli::default_host);
    std::process::exit(flotilla_cli::run(&host, &cli.tls, cli.command).await);
}
