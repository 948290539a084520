//! A service's or a task's logs, followed, as lines for the page: Docker's
//! multiplexed stream taken apart and each line named "service.slot@node"
//! from the details the daemon attaches (`details=1`, as `docker service
//! logs` asks for them).

use std::collections::HashMap;

use bytes::Bytes;
use futures::stream::{self, Stream};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;

use crate::client::{encode, query, Client, Result};
use crate::service::Demuxer;

/// Lines of history sent before following.
const TAIL: &str = "200";

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct LogLine {
    /// "web.2@worker01", or the task's ID when it is not known.
    pub source: String,
    /// 1 stdout, 2 stderr.
    pub stream: u8,
    pub text: String,
}

/// Whose logs: `services` or `tasks`, and an ID.
pub(crate) async fn follow(
    client: &Client,
    kind: &str,
    id: &str,
) -> Result<impl Stream<Item = LogLine> + Send + 'static> {
    let names = task_names(client, kind, id).await.unwrap_or_default();
    let params = [
        ("details", "1".to_string()),
        ("follow", "1".to_string()),
        ("stderr", "1".to_string()),
        ("stdout", "1".to_string()),
        ("tail", TAIL.to_string()),
    ];
    let path = format!("/{kind}/{}/logs{}", encode(id), query(&params));
    let body = client.stream(&path).await?;
    let state = (body, Splitter::default(), names, Vec::<LogLine>::new());
    Ok(stream::unfold(
        state,
        |(mut body, mut splitter, names, mut ready)| async move {
            loop {
                if !ready.is_empty() {
                    let line = ready.remove(0);
                    return Some((line, (body, splitter, names, ready)));
                }
                let data = next_data(&mut body).await?;
                ready = splitter
                    .push(&data)
                    .into_iter()
                    .map(|(stream, line)| named(stream, &line, &names))
                    .collect();
            }
        },
    ))
}

async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(data);
                }
            }
            Err(_) => return None,
        }
    }
}

/// "name.slot@hostname" for each task of the service (or the one task).
async fn task_names(client: &Client, kind: &str, id: &str) -> Result<HashMap<String, String>> {
    let key = if kind == "services" { "service" } else { "id" };
    let (tasks, hosts) = super::history::tasks_with_hosts(client, key, id).await?;
    let services: HashMap<String, String> = match client
        .get::<Vec<bollard::models::Service>>("/services")
        .await
    {
        Ok(list) => list
            .into_iter()
            .filter_map(|s| Some((s.id?, s.spec?.name?)))
            .collect(),
        Err(_) => HashMap::new(),
    };
    Ok(tasks
        .into_iter()
        .filter_map(|t| {
            let id = t.id?;
            let service = t
                .service_id
                .and_then(|s| services.get(&s).cloned())
                .unwrap_or_default();
            let slot = t.slot.map(|s| format!(".{s}")).unwrap_or_default();
            let node = t
                .node_id
                .and_then(|n| hosts.get(&n).cloned())
                .unwrap_or_default();
            Some((id, format!("{service}{slot}@{node}")))
        })
        .collect())
}

/// A line with details ("k=v,k=v message") named by its task.
fn named(stream: u8, line: &str, names: &HashMap<String, String>) -> LogLine {
    let (details, text) = match line.split_once(' ') {
        Some((details, text)) if details.contains("com.docker.swarm.task.id=") => (details, text),
        _ => ("", line),
    };
    let task = details
        .split(',')
        .find_map(|pair| pair.strip_prefix("com.docker.swarm.task.id="))
        .unwrap_or_default();
    let source = names
        .get(task)
        .cloned()
        .unwrap_or_else(|| task.chars().take(12).collect());
    LogLine {
        source,
        stream,
        text: text.to_string(),
    }
}

/// Docker's multiplexed stream (taken apart by `docker service logs`'s
/// [`Demuxer`]) cut into lines; a stream without its headers (a TTY's) is
/// plain text.
#[derive(Default)]
pub(crate) struct Splitter {
    demux: Demuxer,
    raw: Option<bool>,
    /// Per stream: a line not yet ended.
    partial: HashMap<u8, Vec<u8>>,
}

impl Splitter {
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<(u8, String)> {
        let Some(&first) = data.first() else {
            return Vec::new();
        };
        let raw = *self
            .raw
            .get_or_insert_with(|| !(first <= 2 && data.get(1..4).is_none_or(|z| z == [0, 0, 0])));
        let mut lines = Vec::new();
        if raw {
            self.lines_of(1, data, &mut lines);
            return lines;
        }
        // A stream that breaks the framing gives no more lines.
        for (stream, payload) in self.demux.push(data).unwrap_or_default() {
            self.lines_of(stream, &payload, &mut lines);
        }
        lines
    }

    fn lines_of(&mut self, stream: u8, payload: &[u8], lines: &mut Vec<(u8, String)>) {
        let partial = self.partial.entry(stream).or_default();
        partial.extend_from_slice(payload);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            lines.push((stream, text.trim_end_matches(['\n', '\r']).to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &str) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload.as_bytes());
        f
    }

    #[test]
    fn frames_split_anywhere_become_named_lines() {
        let mut all = frame(
            1,
            "com.docker.swarm.node.id=n,com.docker.swarm.task.id=t1 hello\nwor",
        );
        all.extend(frame(1, "ld\n"));
        all.extend(frame(2, "oops\n"));
        let mut s = Splitter::default();
        let mut lines = Vec::new();
        for chunk in all.chunks(5) {
            lines.extend(s.push(chunk));
        }
        let names = HashMap::from([("t1".to_string(), "web.1@worker01".to_string())]);
        let named: Vec<LogLine> = lines.iter().map(|(st, l)| named(*st, l, &names)).collect();
        assert_eq!(named[0].source, "web.1@worker01");
        assert_eq!(named[0].text, "hello");
        assert_eq!(named[1].text, "world");
        assert_eq!((named[2].stream, named[2].text.as_str()), (2, "oops"));
    }

    #[test]
    fn a_tty_stream_is_plain_text() {
        let mut s = Splitter::default();
        assert_eq!(s.push(b"plain line\n"), vec![(1, "plain line".to_string())]);
    }
}
