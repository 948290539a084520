//! `service logs`: Docker's multiplexed log stream (8-byte frame headers),
//! each line prefixed with "name.slot.taskid@node    | " from the details
//! the daemon attaches (docker/cli service/logs.go).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use bollard::models::Task;
use clap::Args;
use http_body_util::BodyExt;

use crate::client::{encode, query, CliError, Client, Result};
use crate::format::truncate_id;
use crate::resolve::Resolver;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Show extra details provided to logs
    #[arg(long)]
    details: bool,
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Do not map IDs to Names in output
    #[arg(long = "no-resolve")]
    no_resolve: bool,
    /// Do not include task IDs in output
    #[arg(long = "no-task-ids")]
    no_task_ids: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Do not neatly format logs
    #[arg(long)]
    raw: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long, value_name = "string")]
    since: Option<String>,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, value_name = "string", default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    #[arg(value_name = "SERVICE|TASK")]
    target: String,
}

pub async fn run(client: &Client, args: LogsArgs) -> Result<()> {
    let (kind, tty, width) = locate(client, &args.target).await?;
    if tty && !args.raw {
        return Err("tty service logs only supported with --raw".into());
    }
    let path = format!(
        "/{kind}/{}/logs{}",
        encode(&args.target),
        query(&log_params(&args))
    );
    let mut body = client.stream(&path).await?;
    let mut printer = Printer {
        client,
        args: &args,
        width,
        resolver: Resolver::new(client),
        cache: HashMap::new(),
    };
    let mut demux = Demuxer::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::Other(format!("error reading logs: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if tty {
            write_all(1, &data);
            continue;
        }
        for (stream, payload) in demux.push(&data)? {
            printer.print(stream, &payload).await?;
        }
    }
    Ok(())
}

/// Finds whether the target is a service or a task, whether it uses a TTY,
/// and how wide slot numbers get (for aligning prefixes).
async fn locate(client: &Client, target: &str) -> Result<(&'static str, bool, usize)> {
    match super::get_service(client, target, false).await {
        Ok((service, _)) => {
            let spec = service.spec.unwrap_or_default();
            let tty = spec
                .task_template
                .and_then(|t| t.container_spec)
                .and_then(|c| c.tty)
                .unwrap_or(false);
            let replicas = spec
                .mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas);
            Ok(("services", tty, replicas.map_or(1, |r| r.to_string().len())))
        }
        Err(err) if err.is_not_found() => {
            let task: Task = client
                .get(&format!("/tasks/{}", encode(target)))
                .await
                .map_err(|err| {
                    if err.is_not_found() {
                        CliError::Other(format!("no such task or service: {target}"))
                    } else {
                        err
                    }
                })?;
            let tty = task
                .spec
                .and_then(|s| s.container_spec)
                .and_then(|c| c.tty)
                .unwrap_or(false);
            Ok(("tasks", tty, task.slot.unwrap_or(0).to_string().len()))
        }
        Err(err) => Err(err),
    }
}

fn log_params(args: &LogsArgs) -> Vec<(&'static str, String)> {
    let mut params = vec![("stdout", "1".to_string()), ("stderr", "1".to_string())];
    if let Some(since) = &args.since {
        params.push(("since", since.clone()));
    }
    if args.timestamps {
        params.push(("timestamps", "1".to_string()));
    }
    if args.details || !args.raw {
        params.push(("details", "1".to_string()));
    }
    if args.follow {
        params.push(("follow", "1".to_string()));
    }
    params.push(("tail", args.tail.clone()));
    params
}

/// Splits Docker's multiplexed stream: [stream, 0, 0, 0, size (u32 BE)] + payload.
#[derive(Default)]
pub struct Demuxer {
    buffer: Vec<u8>,
}

impl Demuxer {
    /// Feeds bytes; returns every complete frame as (stream, payload).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<(u8, Vec<u8>)>> {
        self.buffer.extend_from_slice(data);
        let mut frames = Vec::new();
        loop {
            if self.buffer.len() < 8 {
                break;
            }
            let stream = self.buffer[0];
            if stream > 3 {
                return Err(CliError::Other(format!(
                    "Unrecognized input header: {stream}"
                )));
            }
            let size = u32::from_be_bytes([
                self.buffer[4],
                self.buffer[5],
                self.buffer[6],
                self.buffer[7],
            ]) as usize;
            if self.buffer.len() < 8 + size {
                break;
            }
            let payload = self.buffer[8..8 + size].to_vec();
            self.buffer.drain(..8 + size);
            frames.push((stream, payload));
        }
        Ok(frames)
    }
}

/// Who wrote a log line, from the details the daemon attaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogContext {
    pub node_id: String,
    pub service_id: String,
    pub task_id: String,
}

/// One log line taken apart.
pub struct LogLine {
    pub timestamp: Option<String>,
    pub context: LogContext,
    /// Details other than the swarm keys, shown with --details.
    pub details: BTreeMap<String, String>,
    pub message: String,
}

/// Splits one log line into timestamp, details and message, and removes the
/// swarm keys from the details, like docker's logWriter.
pub fn parse_line(line: &str, timestamps: bool) -> Result<LogLine> {
    let parts: Vec<&str> = line.splitn(if timestamps { 3 } else { 2 }, ' ').collect();
    let expected = if timestamps { 3 } else { 2 };
    if parts.len() != expected {
        return Err(CliError::Other(format!(
            "invalid context in log message: {line}"
        )));
    }
    let (timestamp, details, message) = if timestamps {
        (Some(parts[0].to_string()), parts[1], parts[2])
    } else {
        (None, parts[0], parts[1])
    };
    let mut details = parse_details(details)?;
    let mut take = |key: &str| {
        details.remove(key).ok_or_else(|| {
            CliError::Other(format!(
                "missing {} in details",
                key.trim_start_matches("com.docker.swarm.")
                    .replace('.', " ")
            ))
        })
    };
    let context = LogContext {
        node_id: take("com.docker.swarm.node.id")?,
        service_id: take("com.docker.swarm.service.id")?,
        task_id: take("com.docker.swarm.task.id")?,
    };
    Ok(LogLine {
        timestamp,
        context,
        details,
        message: message.to_string(),
    })
}

/// "k=v,k2=v2" with URL-query escaping.
fn parse_details(text: &str) -> Result<BTreeMap<String, String>> {
    if text.is_empty() {
        return Err("invalid details format".into());
    }
    let mut map = BTreeMap::new();
    for pair in text.split(',') {
        let (k, v) = pair.split_once('=').ok_or("invalid details format")?;
        map.insert(unescape(k), unescape(v));
    }
    Ok(map)
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// "service.slot.taskid@node" plus padding so messages line up.
pub fn prefix(
    service: &str,
    slot: i64,
    task_id: &str,
    node: &str,
    width: usize,
    no_task_ids: bool,
    no_trunc: bool,
) -> String {
    let mut name = format!("{service}.{slot}");
    if !no_task_ids {
        name += ".";
        name += &if no_trunc {
            task_id.to_string()
        } else {
            truncate_id(task_id)
        };
    }
    let padding = width.saturating_sub(slot.to_string().len());
    format!("{name}@{node}{}", " ".repeat(padding))
}

struct Printer<'a> {
    client: &'a Client,
    args: &'a LogsArgs,
    width: usize,
    resolver: Resolver<'a>,
    cache: HashMap<LogContext, String>,
}

impl Printer<'_> {
    async fn print(&mut self, stream: u8, payload: &[u8]) -> Result<()> {
        let fd = if stream == 2 { 2 } else { 1 };
        if self.args.raw {
            write_all(fd, payload);
            return Ok(());
        }
        let text = String::from_utf8_lossy(payload);
        for line in text.split_inclusive('\n') {
            let LogLine {
                timestamp,
                context,
                details,
                message,
            } = parse_line(line, self.args.timestamps)?;
            let mut output = String::new();
            if let Some(ts) = timestamp {
                output += &ts;
                output.push(' ');
            }
            output += &self.context_text(&context).await?;
            output += "    | ";
            if self.args.details {
                let pairs: Vec<String> = details.iter().map(|(k, v)| format!("{k}={v}")).collect();
                output += &pairs.join(",");
                output.push(' ');
            }
            output += &message;
            write_all(fd, output.as_bytes());
        }
        Ok(())
    }

    async fn context_text(&mut self, context: &LogContext) -> Result<String> {
        if let Some(cached) = self.cache.get(context) {
            return Ok(cached.clone());
        }
        let (node, service) = if self.args.no_resolve {
            (context.node_id.clone(), context.service_id.clone())
        } else {
            (
                self.resolver.node(&context.node_id).await,
                self.resolver.service(&context.service_id).await,
            )
        };
        let task: Task = self
            .client
            .get(&format!("/tasks/{}", encode(&context.task_id)))
            .await?;
        let text = prefix(
            &service,
            task.slot.unwrap_or(0),
            task.id.as_deref().unwrap_or(&context.task_id),
            &node,
            self.width,
            self.args.no_task_ids,
            self.args.no_trunc,
        );
        self.cache.insert(context.clone(), text.clone());
        Ok(text)
    }
}

fn write_all(fd: i32, bytes: &[u8]) {
    if fd == 2 {
        let _ = std::io::stderr().lock().write_all(bytes);
    } else {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(bytes);
        let _ = stdout.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &str) -> Vec<u8> {
        let mut bytes = vec![stream, 0, 0, 0];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload.as_bytes());
        bytes
    }

    #[test]
    fn demuxes_split_frames() {
        let mut all = frame(1, "hello\n");
        all.extend(frame(2, "oops\n"));
        let mut demux = Demuxer::default();
        assert!(demux.push(&all[..5]).unwrap().is_empty());
        let frames = demux.push(&all[5..]).unwrap();
        assert_eq!(
            frames,
            vec![(1, b"hello\n".to_vec()), (2, b"oops\n".to_vec())]
        );
        assert!(Demuxer::default().push(&[9, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn parses_details_and_prefixes() {
        let line = "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1,extra=a%20b PING 1\n";
        let LogLine {
            timestamp,
            context,
            details,
            message,
        } = parse_line(line, false).unwrap();
        assert_eq!(timestamp, None);
        assert_eq!(
            context,
            LogContext {
                node_id: "n1".into(),
                service_id: "s1".into(),
                task_id: "t1".into()
            }
        );
        assert_eq!(details.get("extra").map(String::as_str), Some("a b"));
        assert_eq!(message, "PING 1\n");
        let with_ts = format!("2024-01-01T00:00:00.000000000Z {line}");
        assert_eq!(
            parse_line(&with_ts, true).unwrap().timestamp.as_deref(),
            Some("2024-01-01T00:00:00.000000000Z")
        );
        assert!(parse_line("nodetails", false).is_err());

        assert_eq!(
            prefix(
                "helloworld",
                1,
                "8p1vev3fq5zm0mi8g0as41w35",
                "worker2",
                2,
                false,
                false
            ),
            "helloworld.1.8p1vev3fq5zm@worker2 "
        );
        assert_eq!(
            prefix("helloworld", 10, "x", "w", 2, true, false),
            "helloworld.10@w"
        );
    }
}
