//! Test helpers shared by the command modules.

use std::sync::{Arc, Mutex};

use crate::client::Client;

/// One request as the fake daemon read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A daemon on a unix socket that answers each request with the first
/// canned answer whose path prefix matches (404 otherwise) and records
/// every request.
pub struct FakeDaemon {
    host: String,
    path: std::path::PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeDaemon {
    pub fn start(answers: Vec<(&'static str, &'static str)>) -> FakeDaemon {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "flotilla-cli-test-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= length || n == 0 {
                            break (head.to_string(), body.to_string());
                        }
                    }
                };
                let mut lines = head.lines();
                let request_line = lines.next().unwrap_or_default();
                let mut words = request_line.split(' ');
                let method = words.next().unwrap_or_default().to_string();
                let path = words.next().unwrap_or_default().to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
                    .collect();
                let (status, answer) = answers
                    .iter()
                    .find(|(prefix, _)| path.starts_with(prefix))
                    .map(|(_, answer)| ("200 OK", *answer))
                    .unwrap_or(("404 Not Found", r#"{"message":"not found"}"#));
                record.lock().unwrap().push(Seen {
                    method,
                    path,
                    headers,
                    body,
                });
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
            }
        });
        FakeDaemon {
            host: format!("unix://{}", path.display()),
            path,
            seen,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.host).unwrap()
    }

    /// Every request as "METHOD PATH" and its body.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.seen()
            .into_iter()
            .map(|s| (format!("{} {}", s.method, s.path), s.body))
            .collect()
    }

    /// Every request in full.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Percent-decodes a request path.
pub fn unquote(path: &str) -> String {
    let mut out = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
