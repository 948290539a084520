//! `secret create | inspect | ls | rm` and `config create | inspect | ls |
//! rm` (docker/cli cli/command/secret and cli/command/config): the two
//! groups differ only in their paths, the secret's driver, the config's data
//! and a few words, so one implementation serves both through [`Kind`].

mod render;

use std::collections::BTreeMap;
use std::io::Read;

use clap::{Args, Subcommand};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::client::{encode, filters_pair, parse_filters, query, CliError, Client, Result};
use crate::format::template::Template;
use crate::network::create::{map_opts, validate_label};
use crate::out;

/// Which of the two object kinds a command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Secret,
    Config,
}

impl Kind {
    /// The word in paths and in docker's "No such secret" errors.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Create a secret from a file or STDIN as content
    Create(SecretCreateArgs),
    /// Display detailed information on one or more secrets
    Inspect(InspectArgs),
    /// List secrets
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove one or more secrets
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Create a config from a file or STDIN
    Create(ConfigCreateArgs),
    /// Display detailed information on one or more configs
    Inspect(InspectArgs),
    /// List configs
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove one or more configs
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct SecretCreateArgs {
    /// Secret driver
    #[arg(short, long, value_name = "string")]
    driver: Option<String>,
    /// Secret labels
    #[arg(short, long, value_name = "list", value_parser = validate_label)]
    label: Vec<String>,
    /// Template driver
    #[arg(long = "template-driver", value_name = "string")]
    template_driver: Option<String>,
    #[arg(value_name = "SECRET")]
    name: String,
    #[arg(value_name = "file|-")]
    file: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConfigCreateArgs {
    /// Config labels
    #[arg(short, long, value_name = "list", value_parser = validate_label)]
    label: Vec<String>,
    /// Template driver
    #[arg(long = "template-driver", value_name = "string")]
    template_driver: Option<String>,
    #[arg(value_name = "CONFIG")]
    name: String,
    #[arg(value_name = "file|-")]
    file: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using the given Go template
    #[arg(short, long, value_name = "string")]
    format: Option<String>,
    /// Print the information in a human friendly format
    #[arg(long)]
    pretty: bool,
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Filter output based on conditions provided
    #[arg(short, long = "filter", value_name = "filter")]
    filter: Vec<String>,
    /// Pretty-print using a Go template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Only display IDs
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

pub async fn run_secret(client: &Client, cmd: SecretCmd) -> Result<()> {
    let kind = Kind::Secret;
    match cmd {
        SecretCmd::Create(args) => {
            if args.driver.as_deref().is_some_and(|d| !d.is_empty())
                && args.file.as_deref().is_some_and(|f| !f.is_empty())
            {
                return Err("When using secret driver secret data must be empty".into());
            }
            let file = args.file.unwrap_or_default();
            let data = if file.is_empty() {
                Vec::new()
            } else {
                read_data(&file, true)?
            };
            let spec = CreateSpec {
                name: args.name,
                labels: map_opts(&args.label),
                data,
                driver: driver(args.driver),
                templating: driver(args.template_driver),
            };
            create(client, kind, &spec).await
        }
        SecretCmd::Inspect(args) => inspect(client, kind, args).await,
        SecretCmd::Ls(args) => ls(client, kind, args).await,
        SecretCmd::Rm(args) => rm(client, kind, args).await,
    }
}

pub async fn run_config(client: &Client, cmd: ConfigCmd) -> Result<()> {
    let kind = Kind::Config;
    match cmd {
        ConfigCmd::Create(args) => {
            let spec = CreateSpec {
                name: args.name,
                labels: map_opts(&args.label),
                data: read_data(&args.file, false)?,
                driver: None,
                templating: driver(args.template_driver),
            };
            create(client, kind, &spec).await
        }
        ConfigCmd::Inspect(args) => inspect(client, kind, args).await,
        ConfigCmd::Ls(args) => ls(client, kind, args).await,
        ConfigCmd::Rm(args) => rm(client, kind, args).await,
    }
}

/// The data of `create`: the named file's bytes, or stdin's for "-". A
/// file that cannot be opened is Go's "open X: ..." error, which `secret
/// create` wraps like a read error and `config create` does not.
fn read_data(file: &str, wrap_open: bool) -> Result<Vec<u8>> {
    let wrap = |e: String| CliError::Other(format!("Error reading content from \"{file}\": {e}"));
    let mut data = Vec::new();
    let read = if file == "-" {
        std::io::stdin().lock().read_to_end(&mut data)
    } else {
        match std::fs::File::open(file) {
            Ok(mut f) => f.read_to_end(&mut data),
            Err(err) => {
                let message = format!("open {file}: {}", go_io_error(&err));
                return Err(if wrap_open {
                    wrap(message)
                } else {
                    CliError::Other(message)
                });
            }
        }
    };
    read.map_err(|e| wrap(go_io_error(&e)))?;
    Ok(data)
}

/// An io error worded as Go's syscall errors are ("no such file or directory").
fn go_io_error(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn driver(name: Option<String>) -> Option<DriverSpec> {
    name.filter(|n| !n.is_empty())
        .map(|name| DriverSpec { name })
}

/// swarm.SecretSpec / swarm.ConfigSpec as Go encodes them: the embedded
/// Annotations (Name, Labels never null), then Data as base64 and the
/// drivers, all omitted when empty.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateSpec {
    name: String,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "base64")]
    data: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<DriverSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    templating: Option<DriverSpec>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct DriverSpec {
    name: String,
}

fn base64<S: Serializer>(data: &[u8], serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&render::base64_encode(data))
}

async fn create(client: &Client, kind: Kind, spec: &CreateSpec) -> Result<()> {
    let answer = client
        .post(&format!("/{}s/create", kind.word()), Some(spec))
        .await?;
    let created: Value = serde_json::from_slice(&answer)
        .map_err(|e| CliError::Other(format!("error decoding response: {e}")))?;
    out(&format!("{}\n", created["ID"].as_str().unwrap_or_default()));
    Ok(())
}

/// The docker client's answer to a 404 ("Error: No such secret: X").
fn not_found_as_docker(err: CliError, kind: Kind, name: &str) -> CliError {
    if err.is_not_found() {
        CliError::Other(format!("Error: No such {}: {name}", kind.word()))
    } else {
        err
    }
}

async fn get_raw(client: &Client, kind: Kind, name: &str) -> Result<bytes::Bytes> {
    if name.is_empty() {
        return Err(CliError::Other(format!("Error: No such {}: ", kind.word())));
    }
    client
        .get_raw(&format!("/{}s/{}", kind.word(), encode(name)))
        .await
        .map_err(|e| not_found_as_docker(e, kind, name))
}

async fn ls(client: &Client, kind: Kind, args: LsArgs) -> Result<()> {
    let filters = parse_filters(&args.filter)?;
    let params: Vec<_> = filters_pair(&filters).into_iter().collect();
    let items: Vec<Value> = client
        .get(&format!("/{}s{}", kind.word(), query(&params)))
        .await?;
    let format = render::choose_format(kind, args.format.as_deref(), args.quiet);
    out(&render::list(kind, items, format, chrono::Utc::now())?);
    Ok(())
}

async fn inspect(client: &Client, kind: Kind, args: InspectArgs) -> Result<()> {
    let format = if args.pretty {
        "pretty".to_string()
    } else {
        args.format.unwrap_or_default()
    };
    if format.starts_with("pretty") && format != "pretty" {
        return Err("Cannot supply extra formatting options to the pretty template".into());
    }
    if format == "pretty" {
        // docker's formatter stops at the first failure and prints nothing.
        let mut text = String::new();
        for name in &args.names {
            let raw = get_raw(client, kind, name).await?;
            let value: Value = serde_json::from_slice(&raw)
                .map_err(|e| CliError::Other(format!("error decoding response: {e}")))?;
            text.push_str(&render::pretty(kind, &value));
        }
        out(&text);
        return Ok(());
    }
    // inspect.Inspect's StatusError is wrapped in another by docker 20.10,
    // whose Error() reads "Status: <message>, Code: <code>": that is what
    // it prints, exiting 1.
    let wrapped = |message: String, code: i32| CliError::Status {
        code: 1,
        message: format!("Status: {message}, Code: {code}"),
    };
    let template = match Some(format.as_str()).filter(|f| !f.is_empty()) {
        Some(format) => Some(
            Template::parse(format)
                .map_err(|e| wrapped(format!("template parsing error: {e}"), 64))?,
        ),
        None => None,
    };
    let mut raws = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        match get_raw(client, kind, name).await {
            Ok(raw) => raws.push(raw),
            Err(err) => errors.push(err.to_string()),
        }
    }
    out(&render::inspect_output(
        kind,
        &raws,
        template.as_ref(),
        &mut errors,
    ));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(wrapped(errors.join("\n"), 1))
    }
}

async fn rm(client: &Client, kind: Kind, args: RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &args.names {
        let result = if name.is_empty() {
            Err(CliError::Other(format!("Error: No such {}: ", kind.word())))
        } else {
            client
                .delete(&format!("/{}s/{}", kind.word(), encode(name)))
                .await
                .map_err(|e| not_found_as_docker(e, kind, name))
        };
        match result {
            Ok(()) => out(&format!("{name}\n")),
            Err(err) => errors.push(err.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_is_gos_secret_spec() {
        let spec = CreateSpec {
            name: "db".to_string(),
            labels: map_opts(&["b=2".to_string(), "a".to_string()]),
            data: b"hi\n\xff".to_vec(),
            driver: driver(Some("vault".to_string())),
            templating: driver(Some("golang".to_string())),
        };
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"Name":"db","Labels":{"a":"","b":"2"},"Data":"aGkK/w==","Driver":{"Name":"vault"},"Templating":{"Name":"golang"}}"#
        );
        let bare = CreateSpec {
            name: "c".to_string(),
            labels: BTreeMap::new(),
            data: Vec::new(),
            driver: driver(Some(String::new())),
            templating: None,
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"Name":"c","Labels":{}}"#
        );
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: crate::ClientCommand,
    }

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("flotilla").chain(args.iter().copied()))
    }

    #[test]
    fn flags_parse_as_docker_has_them() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = parse(&[
            "secret", "create", "-l", "a=1", "--label", "b", "-d", "vault", "s",
        ])
        .unwrap();
        let crate::ClientCommand::Secret(SecretCmd::Create(args)) = cli.cmd else {
            panic!("not secret create");
        };
        assert_eq!(args.label, vec!["a=1", "b"]);
        assert_eq!(args.driver.as_deref(), Some("vault"));
        assert_eq!(args.file, None);
        assert!(parse(&["config", "create", "c"]).is_err());
        assert!(parse(&["config", "create", "-d", "x", "c", "-"]).is_err());
        assert!(parse(&["secret", "create", "-l", "=x", "s"]).is_err());
        assert!(parse(&["secret", "list", "-q", "-f", "name=a", "--format", "x"]).is_ok());
        assert!(parse(&["config", "remove", "a", "b"]).is_ok());
        assert!(parse(&["config", "rm"]).is_err());
        assert!(parse(&["config", "inspect", "--pretty", "-f", "x", "a"]).is_ok());
    }

    #[test]
    fn io_errors_read_like_go() {
        let err = std::fs::File::open("/nonexistent/x").unwrap_err();
        assert_eq!(go_io_error(&err), "no such file or directory");
    }
}
