//! Bad input at volume. A swarm holding a few services gets thousands of
//! mutated requests, deterministic from a seed (printed; replay with
//! `FLOTILLA_FUZZ_SEED=<seed>`, size with `FLOTILLA_FUZZ_REQUESTS`): wrong
//! types, unknown fields, huge strings, deep nesting, out-of-range numbers
//! and stale versions in service, node and swarm bodies, bad filters and
//! ids, wrong methods, unknown paths and garbage bytes on the socket. The
//! daemon must answer every request with Docker's status and a JSON
//! message, keep serving, and leave every service it held byte-for-byte as
//! it was: no request here may write (the mutator only aims writes that
//! could succeed at names that do not exist, and sends the real ids bad
//! versions or bodies that cannot be valid).
//!
//! Also here, with raw HTTP: a rename is Docker's 501, and a method or path
//! Flotilla's swarm routes do not have is dockerd's 404 `page not found`,
//! answered once the body is read, on a connection that stays usable.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const DEFAULT_SEED: u64 = 0x5eed_f107_111a_0001;
const DEFAULT_REQUESTS: usize = 5000;
/// `/_ping` must answer after every batch of this many requests.
const BATCH: usize = 100;

const RENAME: &str = "rpc error: code = Unimplemented desc = renaming services is not supported";
const MODE_CHANGE: &str =
    "rpc error: code = Unimplemented desc = service mode change is not allowed";
const PAGE_NOT_FOUND: &str = r#"{"message":"page not found"}"#;

/// A daemon with the process executor and no Docker Engine to pass
/// requests to: nothing a mutated request does can reach a real engine.
fn daemon() -> Daemon {
    let d = Daemon::start_with(
        Executor::Process,
        &["--docker-host", "unix:///nonexistent/docker.sock"],
    );
    d.init(&[]);
    d
}

// ---- raw HTTP on the socket ----

fn request_bytes(method: &str, target: &str, body: Option<&[u8]>, close: bool) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: flotilla\r\n");
    if close {
        head.push_str("Connection: close\r\n");
    }
    match body {
        Some(b) => head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )),
        None if method != "GET" && method != "HEAD" => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    out
}

fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// One request on its own connection (`Connection: close`); the response
/// ends at EOF. An error means the daemon closed without answering.
fn send(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let mut s = connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.write_all(&request_bytes(method, target, body, true))
        .map_err(|e| format!("writing the request: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("reading the response: {e}"))?;
    parse(&raw, method == "HEAD").ok_or_else(|| {
        format!(
            "no HTTP response ({} bytes: {:?})",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })
}

/// Reads one response off a kept-alive connection (Content-Length framed).
fn read_one(s: &mut UnixStream) -> Result<Response, String> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err(format!("connection closed after {} bytes", raw.len())),
            Ok(_) => raw.push(byte[0]),
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = vec![0; len];
    s.read_exact(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    raw.extend_from_slice(&body);
    parse(&raw, false).ok_or_else(|| "unparsable response".to_string())
}

fn parse(raw: &[u8], head_only: bool) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Writes bytes no HTTP client would, then half-closes; whatever comes
/// back (a 400, nothing) is fine as long as the daemon keeps serving.
fn send_garbage(socket: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut s = connect(socket).map_err(|e| format!("connect: {e}"))?;
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            Err("the daemon neither answered nor closed within 20 s".into())
        }
        _ => Ok(()),
    }
}

// ---- a seeded PRNG (SplitMix64) ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---- what the swarm holds ----

struct Svc {
    id: String,
    name: String,
    version: u64,
    spec: Value,
}

struct World {
    services: Vec<Svc>,
    node_id: String,
    node_version: u64,
    node_spec: Value,
    swarm_version: u64,
    swarm_spec: Value,
    tasks: Vec<String>,
}

/// Everything no request may change: each service as inspected (Version
/// included), the list of services, the swarm object, the nodes' specs.
fn snapshot(d: &Daemon, w: Option<&World>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let list = d.get_json("/services");
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Spec"]["Name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    out.insert("service names".into(), names.join(","));
    if let Some(w) = w {
        for s in &w.services {
            let r = d.get(&format!("/services/{}", s.id));
            out.insert(
                format!("service {}", s.name),
                format!("{} {}", r.status, r.body),
            );
        }
    }
    out.insert("swarm".into(), d.get("/swarm").body);
    let nodes = d.get_json("/nodes");
    for n in nodes.as_array().unwrap() {
        out.insert(
            format!("node {}", n["ID"].as_str().unwrap_or_default()),
            n["Spec"].to_string(),
        );
    }
    out
}

fn task_spec(extra: Value) -> Value {
    let mut t = json!({
        "ContainerSpec": { "Image": IMAGE, "Args": FOREVER },
    });
    merge(&mut t, extra);
    t
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The services the swarm holds while it is fuzzed: replicated and global,
/// ingress ports and dnsrr, env, labels, constraints, policies.
fn held_specs() -> Vec<Value> {
    vec![
        json!({
            "Name": "fz-web",
            "Labels": { "tier": "front", "owner": "fuzz" },
            "TaskTemplate": task_spec(json!({
                "ContainerSpec": { "Env": ["MODE=web", "EMPTY="], "Labels": { "c": "1" } },
                "RestartPolicy": { "Condition": "any", "Delay": 1_000_000_000i64 },
            })),
            "Mode": { "Replicated": { "Replicas": 2 } },
            "UpdateConfig": { "Parallelism": 1, "Delay": 1_000_000_000i64, "Order": "start-first" },
            "EndpointSpec": { "Ports": [ { "Protocol": "tcp", "TargetPort": 8080 } ] },
        }),
        json!({
            "Name": "fz-global",
            "Labels": { "kind": "agent" },
            "TaskTemplate": task_spec(json!({
                "ContainerSpec": { "Env": ["A=1", "B=two words"] },
                "Placement": { "Constraints": ["node.role==manager"] },
            })),
            "Mode": { "Global": {} },
        }),
        json!({
            "Name": "fz-idle",
            "Labels": { "unicode": "héllo wörld ✓", "empty": "" },
            "TaskTemplate": task_spec(json!({
                "Resources": { "Reservations": { "NanoCPUs": 1_000_000i64, "MemoryBytes": 4_194_304i64 } },
                "RestartPolicy": { "Condition": "on-failure", "MaxAttempts": 3 },
            })),
            "Mode": { "Replicated": { "Replicas": 0 } },
            "RollbackConfig": { "Parallelism": 2, "FailureAction": "pause", "MaxFailureRatio": 0.5 },
        }),
        json!({
            "Name": "fz-dnsrr",
            "TaskTemplate": task_spec(json!({})),
            "Mode": { "Replicated": { "Replicas": 1 } },
            "EndpointSpec": { "Mode": "dnsrr" },
        }),
    ]
}

fn setup(d: &Daemon) -> World {
    for spec in held_specs() {
        let r = d.post("/services/create", &spec.to_string());
        assert_eq!(r.status, 201, "creating {}: {}", spec["Name"], r.body);
    }
    // Wait for the tasks to run and the allocator to be done with the
    // services (it writes their endpoints): then nothing changes them.
    wait_until(Duration::from_secs(30), "the held services' tasks", || {
        d.tasks_in_state("fz-web", "running").len() == 2
            && d.tasks_in_state("fz-global", "running").len() == 1
            && d.tasks_in_state("fz-dnsrr", "running").len() == 1
    });
    let mut last = snapshot(d, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = snapshot(d, None);
        let services = d.get("/services").body;
        std::thread::sleep(Duration::from_millis(300));
        if now == last && services == d.get("/services").body {
            break;
        }
        assert!(Instant::now() < deadline, "the held services never settled");
        last = now;
    }
    let services = d
        .get_json("/services")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Svc {
            id: s["ID"].as_str().unwrap().to_string(),
            name: s["Spec"]["Name"].as_str().unwrap().to_string(),
            version: s["Version"]["Index"].as_u64().unwrap(),
            spec: s["Spec"].clone(),
        })
        .collect();
    let node = d.get_json(&format!("/nodes/{}", d.node_id()));
    let swarm = d.get_json("/swarm");
    let tasks = d
        .get_json("/tasks")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| task_id(t).to_string())
        .collect();
    World {
        services,
        node_id: d.node_id(),
        node_version: node["Version"]["Index"].as_u64().unwrap(),
        node_spec: node["Spec"].clone(),
        swarm_version: swarm["Version"]["Index"].as_u64().unwrap(),
        swarm_spec: swarm["Spec"].clone(),
        tasks,
    }
}

// ---- the mutator ----

/// What a request may get back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Any answer but a 5xx Docker would not send.
    Any,
    /// Never a 2xx: it would be a write (or a create) that must not happen.
    Refused,
    /// dockerd's 404 `page not found`.
    PageNotFound,
}

struct Req {
    method: String,
    /// The path without version prefix or query: what the routes see.
    route: String,
    /// Whether the version prefix (if any) is one Flotilla accepts.
    prefix_ok: bool,
    target: String,
    body: Option<Vec<u8>>,
    expect: Expect,
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = preview(self.target.as_bytes(), 300);
        write!(f, "{} {target}", self.method)?;
        if let Some(b) = &self.body {
            write!(f, " body ({} bytes): {}", b.len(), preview(b, 600))?;
        }
        Ok(())
    }
}

fn preview(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned();
    if b.len() > max {
        format!("{s:?}…")
    } else {
        format!("{s:?}")
    }
}

fn encode(s: &str) -> String {
    url_encode(s)
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND", "FOO",
];

/// Flotilla's swarm routes and their methods (HEAD goes with GET).
const ROUTES: &[(&str, &[&str])] = &[
    ("/_ping", &["GET", "HEAD"]),
    ("/version", &["GET"]),
    ("/info", &["GET"]),
    ("/swarm", &["GET"]),
    ("/swarm/init", &["POST"]),
    ("/swarm/join", &["POST"]),
    ("/swarm/leave", &["POST"]),
    ("/swarm/update", &["POST"]),
    ("/swarm/unlock", &["POST"]),
    ("/swarm/unlockkey", &["GET"]),
    ("/nodes", &["GET"]),
    ("/nodes/{id}", &["GET", "DELETE"]),
    ("/nodes/{id}/update", &["POST"]),
    ("/services", &["GET"]),
    // GET and DELETE reach /services/{id} with the id "create".
    ("/services/create", &["POST", "GET", "DELETE"]),
    ("/services/{id}", &["GET", "DELETE"]),
    ("/services/{id}/update", &["POST"]),
    ("/services/{id}/logs", &["GET"]),
    ("/tasks", &["GET"]),
    ("/tasks/{id}", &["GET"]),
    ("/tasks/{id}/logs", &["GET"]),
];

/// Paths under the swarm routes that no route has.
const UNKNOWN_SWARM_PATHS: &[&str] = &[
    "/swarm/bogus",
    "/swarm/init/extra",
    "/swarm/unlockkey/x",
    "/swarm/leave/now",
    "/nodes/x/y",
    "/nodes/x/update/more",
    "/services/x/bogus",
    "/services/x/update/more",
    "/services/create/x",
    "/tasks/x/y",
    "/tasks/x/logs/more",
];

struct Gen<'a> {
    rng: Rng,
    w: &'a World,
}

impl Gen<'_> {
    fn string(&mut self) -> String {
        self.string_up_to(300_000)
    }

    /// Strings for URLs stay under what an HTTP request line may hold.
    fn short_string(&mut self) -> String {
        self.string_up_to(2000)
    }

    fn string_up_to(&mut self, max: usize) -> String {
        match self.rng.below(12) {
            0 => String::new(),
            1 => "x".repeat(1 + self.rng.below(64)),
            2 => "ü✓€漢字🙂".repeat(1 + self.rng.below(20)),
            3 => "\u{0}\u{1}\u{1f}\"\\/\n\t".into(),
            4 => "a".repeat((max / 3 + self.rng.below(max / 3 * 2)).min(max)),
            5 => "-starts-with-dash".into(),
            6 => "has space".into(),
            7 => "node.role==manager".into(),
            8 => "../../etc/passwd".into(),
            9 => "%s%n%x{{.ID}}".into(),
            10 => self.rng.next().to_string(),
            _ => format!("fz-{}", self.rng.below(1000)),
        }
    }

    fn number(&mut self) -> Value {
        match self.rng.below(10) {
            0 => json!(-1),
            1 => json!(i64::MIN),
            2 => json!(i64::MAX),
            3 => json!(u64::MAX),
            4 => json!(1e300),
            5 => json!(-0.5),
            6 => json!(3.75),
            7 => json!(0),
            8 => json!(65536),
            _ => json!(self.rng.next() as i64),
        }
    }

    /// A value for a URL: strings and numbers, kept short.
    fn small_value(&mut self) -> Value {
        match self.rng.below(4) {
            0 => self.number(),
            1 => json!([self.short_string()]),
            2 => json!({ self.short_string(): self.rng.chance(50) }),
            _ => Value::String(self.short_string()),
        }
    }

    /// A value of any JSON type; `DEEP` marks nesting far beyond what a
    /// decoder recurses into, spliced in as text.
    fn value(&mut self, depth: usize) -> Value {
        match self.rng.below(if depth > 2 { 6 } else { 9 }) {
            0 => Value::Null,
            1 => json!(self.rng.chance(50)),
            2 | 3 => self.number(),
            4 | 5 => Value::String(self.string()),
            6 => Value::Array(
                (0..self.rng.below(4))
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            7 => {
                let mut m = serde_json::Map::new();
                for _ in 0..self.rng.below(4) {
                    let k = self.string();
                    let v = self.value(depth + 1);
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            _ => json!("__DEEP__"),
        }
    }

    /// Every path (object keys and array indices) inside `v`.
    fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    at.push(k.clone());
                    Self::paths(c, at, out);
                    at.pop();
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    at.push(i.to_string());
                    Self::paths(c, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    fn at<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
        let mut cur = v;
        for p in path {
            cur = match cur {
                Value::Object(m) => m.get_mut(p)?,
                Value::Array(a) => a.get_mut(p.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Sets `path` (object keys), making objects of whatever is in the way.
    fn set(v: &mut Value, path: &[&str], value: Value) {
        let mut cur = v;
        for p in path {
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = cur
                .as_object_mut()
                .unwrap()
                .entry(p.to_string())
                .or_insert(Value::Null);
        }
        *cur = value;
    }

    /// One to three changes anywhere in `v`: a node replaced by a value of
    /// any type, an unknown field, a field removed.
    fn noise(&mut self, v: &mut Value) {
        for _ in 0..self.rng.below(4) {
            let mut all = Vec::new();
            Self::paths(v, &mut Vec::new(), &mut all);
            let path = self.rng.pick(&all).clone();
            match self.rng.below(3) {
                0 if !path.is_empty() => {
                    let new = self.value(0);
                    if let Some(slot) = Self::at(v, &path) {
                        *slot = new;
                    }
                }
                1 => {
                    let k = format!("Unknown{}", self.rng.below(100));
                    let new = self.value(0);
                    if let Some(Value::Object(m)) = Self::at(v, &path) {
                        m.insert(k, new);
                    }
                }
                _ => {
                    if let Some((last, parent)) = path.split_last() {
                        if let Some(Value::Object(m)) = Self::at(v, parent) {
                            m.remove(last);
                        }
                    }
                }
            }
        }
    }

    fn deep(&mut self) -> String {
        let n = 130 + self.rng.below(5000);
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }

    fn render(&mut self, v: &Value) -> Vec<u8> {
        let mut text = v.to_string();
        while text.contains("\"__DEEP__\"") {
            let deep = self.deep();
            text = text.replacen("\"__DEEP__\"", &deep, 1);
        }
        text.into_bytes()
    }

    /// Bytes that are not a JSON document at all, or not one object.
    fn broken_json(&mut self, base: &Value) -> Vec<u8> {
        let text = base.to_string().into_bytes();
        match self.rng.below(9) {
            0 => Vec::new(),
            1 => text[..self.rng.below(text.len().max(1))].to_vec(),
            2 => {
                let mut t = text;
                let i = self.rng.below(t.len());
                t.insert(i, (self.rng.next() & 0xff) as u8);
                t.insert(i, b'\x01');
                t
            }
            3 => {
                let mut t = text;
                t.extend_from_slice(b"}{\"x\":");
                t
            }
            4 => self.deep().into_bytes(),
            5 => (0..self.rng.below(3000))
                .map(|_| (self.rng.next() & 0xff) as u8)
                .collect(),
            6 => b"null".to_vec(),
            7 => b"[]".to_vec(),
            _ => format!("\"{}\"", "q".repeat(self.rng.below(1000))).into_bytes(),
        }
    }

    /// A service spec no daemon may accept: noise first, then one change
    /// that is invalid whatever the noise did. `update_of` is the service
    /// an update is aimed at (a valid new name is then a rename: 501).
    fn bad_service_spec(&mut self, update_of: Option<&Svc>) -> Vec<u8> {
        let base = match update_of {
            Some(s) => s.spec.clone(),
            None => self.rng.pick(&self.w.services).spec.clone(),
        };
        let mut v = base.clone();
        self.noise(&mut v);
        match self.rng.below(17) {
            0 => {
                let name = self.rng.pick(&[
                    "-dash",
                    "has space",
                    "under_",
                    "ünï",
                    "a/b",
                    "dot.",
                    "x\u{0}y",
                ]);
                Self::set(&mut v, &["Name"], json!(name));
            }
            1 => Self::set(
                &mut v,
                &["Name"],
                json!("n".repeat(64 + self.rng.below(200_000))),
            ),
            2 => Self::set(
                &mut v,
                &["TaskTemplate", "ContainerSpec", "Image"],
                json!(""),
            ),
            3 => {
                let n = -1 - self.rng.below(1000) as i64;
                Self::set(
                    &mut v,
                    &["Mode"],
                    json!({ "Replicated": { "Replicas": n } }),
                );
            }
            4 => Self::set(
                &mut v,
                &["Mode"],
                json!({ "Replicated": { "Replicas": 1 }, "Global": {} }),
            ),
            5 => {
                let (path, bad): (Vec<&str>, Value) = self
                    .rng
                    .pick(&[
                        (vec!["Name"], json!(5)),
                        (vec!["Mode", "Replicated", "Replicas"], json!("three")),
                        (vec!["Mode", "Replicated", "Replicas"], json!(u64::MAX)),
                        (vec!["Mode", "Replicated", "Replicas"], json!(1e30)),
                        (vec!["Mode", "Replicated", "Replicas"], json!(2.5)),
                        (vec!["TaskTemplate", "ContainerSpec", "Env"], json!("A=1")),
                        (
                            vec!["TaskTemplate", "ContainerSpec", "Args"],
                            json!({ "a": 1 }),
                        ),
                        (vec!["Labels"], json!(["x"])),
                        (vec!["Labels"], json!({ "k": 1 })),
                        (vec!["EndpointSpec", "Ports"], json!({ "TargetPort": 80 })),
                        (vec!["EndpointSpec", "Mode"], json!("round-robin")),
                        (vec!["TaskTemplate", "RestartPolicy", "Delay"], json!("5s")),
                        (
                            vec!["TaskTemplate", "RestartPolicy", "Condition"],
                            json!("sometimes"),
                        ),
                        (
                            vec!["TaskTemplate", "Resources", "Limits", "NanoCPUs"],
                            json!(1.5),
                        ),
                        (vec!["UpdateConfig", "Order"], json!("sideways")),
                        (vec!["TaskTemplate", "ContainerSpec"], json!("busybox")),
                        (vec!["TaskTemplate"], json!([])),
                    ])
                    .clone();
                Self::set(&mut v, &path, bad);
            }
            6 => {
                let port = self
                    .rng
                    .pick(&[
                        json!([{ "TargetPort": 70000 }]),
                        json!([{ "TargetPort": 0, "PublishedPort": 8080 }]),
                        json!([{ "TargetPort": -80 }]),
                        json!([{ "TargetPort": 80, "PublishedPort": 99999 }]),
                        json!([{ "TargetPort": 80, "Protocol": "sctp" }]),
                        json!([{ "TargetPort": 80, "Protocol": "icmp" }]),
                        json!([{ "TargetPort": 80, "PublishedPort": 30999 },
                           { "TargetPort": 81, "PublishedPort": 30999 }]),
                    ])
                    .clone();
                Self::set(&mut v, &["EndpointSpec"], json!({ "Ports": port }));
            }
            7 => return self.broken_json(&base),
            8 => {
                let key = *self
                    .rng
                    .pick(&["Labels", "TaskTemplate", "Mode", "EndpointSpec"]);
                Self::set(&mut v, &[key], json!("__DEEP__"));
            }
            9 => {
                let c = self
                    .rng
                    .pick(&["node.role=manager", "garbage", "==x", "node.role~=x"]);
                Self::set(
                    &mut v,
                    &["TaskTemplate", "Placement"],
                    json!({ "Constraints": [c] }),
                );
            }
            10 => {
                let (path, bad): (Vec<&str>, Value) = self
                    .rng
                    .pick(&[
                        (vec!["UpdateConfig", "Delay"], json!(-5)),
                        (vec!["UpdateConfig", "Parallelism"], json!(-1)),
                        (vec!["RollbackConfig", "Monitor"], json!(-1)),
                        (vec!["UpdateConfig", "MaxFailureRatio"], json!(2.0)),
                        (
                            vec!["TaskTemplate", "RestartPolicy", "MaxAttempts"],
                            json!(-3),
                        ),
                        (vec!["TaskTemplate", "RestartPolicy", "Window"], json!(-1)),
                        (
                            vec!["TaskTemplate", "ContainerSpec", "StopGracePeriod"],
                            json!(-1),
                        ),
                        (vec!["TaskTemplate", "Placement", "MaxReplicas"], json!(-2)),
                        (
                            vec!["TaskTemplate", "Resources", "Reservations", "MemoryBytes"],
                            json!(-1),
                        ),
                    ])
                    .clone();
                Self::set(&mut v, &path, bad);
            }
            // A job that can never run (for an update, also a mode change).
            11 => Self::set(
                &mut v,
                &["Mode"],
                json!({ "ReplicatedJob": { "MaxConcurrent": -1 } }),
            ),
            // Spread over something that is no node attribute.
            12 => Self::set(
                &mut v,
                &["TaskTemplate", "Placement", "Preferences"],
                json!([{ "Spread": { "SpreadDescriptor": "node.colour" } }]),
            ),
            13 => {
                // Valid apart from the name: a rename (501) for an update,
                // a name that is taken (409) for a create.
                let mut v = base.clone();
                let name = match update_of {
                    Some(s) => format!("{}-renamed", s.name),
                    None => base["Name"].as_str().unwrap_or_default().to_string(),
                };
                Self::set(&mut v, &["Name"], json!(name));
                return self.render(&v);
            }
            14 => {
                // Global for replicated and back: a mode change for an
                // update (501); for a create, paired with a bad image.
                let mut v = base.clone();
                let global = base["Mode"].get("Global").is_some();
                let mode = if global {
                    json!({ "Replicated": { "Replicas": 1 } })
                } else {
                    json!({ "Global": {} })
                };
                Self::set(&mut v, &["Mode"], mode);
                if update_of.is_none() {
                    Self::set(
                        &mut v,
                        &["TaskTemplate", "ContainerSpec", "Image"],
                        json!(""),
                    );
                }
                return self.render(&v);
            }
            15 => {
                // A key twice, the last time with the wrong type: Go and
                // serde both keep the last one (so the first must not be
                // the bad one: the daemon reads bodies into a map first).
                let mut t = self.render(&v);
                if t.last() == Some(&b'}') {
                    t.pop();
                    let sep: &[u8] = if t.len() > 1 { b"," } else { b"" };
                    t.extend_from_slice(sep);
                    t.extend_from_slice(br#""Name":5}"#);
                }
                return t;
            }
            _ => {
                // A whole other type where the object should be.
                let other = self
                    .rng
                    .pick(&[json!([]), json!(5), json!("spec"), json!(null)])
                    .clone();
                return self.render(&other);
            }
        }
        self.render(&v)
    }

    /// A version that is not the object's current one (None: no
    /// version parameter at all).
    fn wrong_version(&mut self, current: u64) -> Option<String> {
        let v = match self.rng.below(12) {
            0 => return None,
            1 => String::new(),
            2 => current.saturating_sub(1).to_string(),
            3 => (current + 1).to_string(),
            4 => (current + 1000).to_string(),
            5 => "0".into(),
            6 => "-1".into(),
            7 => "abc".into(),
            8 => format!("{current}.0"),
            9 => "99999999999999999999999".into(),
            10 => format!(" {current}"),
            _ => format!("0x{current:x}"),
        };
        Some(if v == current.to_string() {
            "0".into()
        } else {
            v
        })
    }

    fn version_prefix(&mut self) -> (String, bool) {
        match self.rng.below(10) {
            0 => ("/v1.41".into(), true),
            1 => ("/v1.24".into(), true),
            2 => ("/v1.47".into(), true),
            3 => ("/v1.99".into(), false),
            4 => ("/v1.12".into(), false),
            5 => ("/v2.0".into(), false),
            _ => (String::new(), true),
        }
    }

    fn filters(&mut self) -> String {
        let keys = [
            "id",
            "name",
            "label",
            "mode",
            "role",
            "service",
            "node",
            "desired-state",
            "membership",
            "node.label",
            "_up-to-date",
            "bogus",
            "",
        ];
        let raw = match self.rng.below(8) {
            0 => {
                let k = *self.rng.pick(&keys);
                let v = self.short_string();
                json!({ k: [v] }).to_string()
            }
            1 => {
                let k = *self.rng.pick(&keys);
                let v = self.short_string();
                json!({ k: { v: true } }).to_string()
            }
            2 => {
                let k = *self.rng.pick(&keys);
                let v = self.small_value();
                String::from_utf8_lossy(&self.render(&json!({ k: v }))).into_owned()
            }
            3 => self.short_string(),
            4 => "{".into(),
            5 => "[\"name\"]".into(),
            6 => json!({ "desired-state": [self.short_string()] }).to_string(),
            _ => {
                let mut b = self.broken_json(&json!({"name": ["x"]}));
                b.truncate(3000);
                String::from_utf8_lossy(&b).into_owned()
            }
        };
        let mut q = format!("filters={}", encode(&raw));
        if self.rng.chance(20) {
            q.push_str("&filters=%7B%7D");
        }
        if self.rng.chance(20) {
            q.push_str(&format!("&status={}", encode(&self.short_string())));
        }
        q
    }

    /// An id for a read: a real one, a real name or prefix, or garbage.
    fn any_key(&mut self, real: &[String]) -> String {
        match self.rng.below(6) {
            0 | 1 => self.rng.pick(real).clone(),
            2 => {
                let r = self.rng.pick(real).clone();
                r[..r.len().min(12)].to_string()
            }
            _ => self.missing_key(),
        }
    }

    /// An id no object has: never an id prefix (ids are [a-z0-9]) nor a
    /// held name.
    fn missing_key(&mut self) -> String {
        let tail = match self.rng.below(6) {
            0 => String::new(),
            1 => "ü✓/../%00".into(),
            2 => "z".repeat(5000),
            3 => "x y".into(),
            _ => self.rng.below(1000).to_string(),
        };
        format!("nosuch-{tail}")
    }

    fn safe_bool(&mut self) -> &'static str {
        // False for Flotilla and for dockerd's BoolValue alike.
        const FALSE: &[&str] = &["", "0", "false", "no", "none", "FALSE", "No"];
        FALSE[self.rng.below(FALSE.len())]
    }

    fn req(
        &mut self,
        method: &str,
        route: &str,
        query: &str,
        body: Option<Vec<u8>>,
        expect: Expect,
    ) -> Req {
        let (prefix, prefix_ok) = self.version_prefix();
        let mut target = format!("{prefix}{route}");
        if !query.is_empty() {
            target.push('?');
            target.push_str(query);
        }
        Req {
            method: method.into(),
            route: route.into(),
            prefix_ok,
            target,
            body,
            expect,
        }
    }

    fn next(&mut self) -> Req {
        let w = self.w;
        let ids: Vec<String> = w.services.iter().map(|s| s.id.clone()).collect();
        let mut keys = ids.clone();
        keys.extend(w.services.iter().map(|s| s.name.clone()));
        match self.rng.below(100) {
            // Updates of the held services: a wrong version, or a body
            // that cannot be valid.
            0..=19 => {
                let i = self.rng.below(w.services.len());
                let svc = &w.services[i];
                let key = match self.rng.below(3) {
                    0 => svc.id.clone(),
                    1 => svc.name.clone(),
                    _ => svc.id[..10].to_string(),
                };
                let mut query = Vec::new();
                let body = if self.rng.chance(50) {
                    if let Some(v) = self.wrong_version(svc.version) {
                        query.push(format!("version={}", encode(&v)));
                    }
                    let mut spec = svc.spec.clone();
                    if self.rng.chance(50) {
                        self.noise(&mut spec);
                    } else {
                        Self::set(&mut spec, &["Labels", "changed"], json!("yes"));
                    }
                    self.render(&spec)
                } else {
                    query.push(format!("version={}", svc.version));
                    self.bad_service_spec(Some(svc))
                };
                if self.rng.chance(20) {
                    query.push(format!(
                        "rollback={}",
                        self.rng.pick(&["previous", "", "nope", "PREVIOUS"])
                    ));
                }
                if self.rng.chance(10) {
                    query.push(format!("registryAuthFrom={}", encode(&self.short_string())));
                }
                if self.rng.chance(10) {
                    query.push("version=0&version=00".into());
                }
                let route = format!("/services/{}/update", encode(&key));
                self.req(
                    "POST",
                    &route,
                    &query.join("&"),
                    Some(body),
                    Expect::Refused,
                )
            }
            // Updates of services that do not exist: anything goes.
            20..=27 => {
                let key = self.missing_key();
                let version = self.rng.below(100).to_string();
                let body = if self.rng.chance(50) {
                    let s = self.rng.pick(&w.services).spec.clone();
                    self.render(&s)
                } else {
                    self.bad_service_spec(None)
                };
                let route = format!("/services/{}/update", encode(&key));
                self.req(
                    "POST",
                    &route,
                    &format!("version={version}"),
                    Some(body),
                    Expect::Refused,
                )
            }
            // Creates that cannot be valid.
            28..=39 => {
                let body = if self.rng.chance(2) {
                    // Over the daemon's body limit.
                    let name = "n".repeat((2 << 20) + self.rng.below(1 << 20));
                    self.render(&json!({ "Name": name }))
                } else {
                    self.bad_service_spec(None)
                };
                self.req("POST", "/services/create", "", Some(body), Expect::Refused)
            }
            // Reads of services.
            40..=47 => {
                if self.rng.chance(40) {
                    let q = self.filters();
                    self.req("GET", "/services", &q, None, Expect::Any)
                } else {
                    let key = self.any_key(&keys);
                    let q = format!("insertDefaults={}", encode(&self.short_string()));
                    self.req(
                        "GET",
                        &format!("/services/{}", encode(&key)),
                        &q,
                        None,
                        Expect::Any,
                    )
                }
            }
            // Removal of services that do not exist.
            48..=51 => {
                let key = self.missing_key();
                let body = self.rng.chance(30).then(|| self.broken_json(&json!({})));
                self.req(
                    "DELETE",
                    &format!("/services/{}", encode(&key)),
                    "",
                    body,
                    Expect::Refused,
                )
            }
            // Logs, never followed.
            52..=55 => {
                let (what, real) = if self.rng.chance(50) {
                    ("services", keys.clone())
                } else {
                    ("tasks", w.tasks.clone())
                };
                let key = self.any_key(&real);
                let mut q = vec![
                    format!("stdout={}", encode(&self.short_string())),
                    format!("tail={}", encode(&self.short_string())),
                    format!("since={}", encode(&self.short_string())),
                    format!("follow={}", self.safe_bool()),
                ];
                if self.rng.chance(50) {
                    q.push("stderr=1&timestamps=1&details=1".into());
                }
                self.req(
                    "GET",
                    &format!("/{what}/{}/logs", encode(&key)),
                    &q.join("&"),
                    None,
                    Expect::Any,
                )
            }
            // Tasks.
            56..=62 => {
                if self.rng.chance(60) {
                    let q = self.filters();
                    self.req("GET", "/tasks", &q, None, Expect::Any)
                } else {
                    let key = self.any_key(&w.tasks);
                    self.req(
                        "GET",
                        &format!("/tasks/{}", encode(&key)),
                        "",
                        None,
                        Expect::Any,
                    )
                }
            }
            // Nodes.
            63..=72 => {
                let node = w.node_id.clone();
                match self.rng.below(5) {
                    0 => {
                        let q = self.filters();
                        self.req("GET", "/nodes", &q, None, Expect::Any)
                    }
                    1 => {
                        let key = match self.rng.below(3) {
                            0 => node,
                            1 => "self".into(),
                            _ => self.missing_key(),
                        };
                        self.req(
                            "GET",
                            &format!("/nodes/{}", encode(&key)),
                            "",
                            None,
                            Expect::Any,
                        )
                    }
                    2 => {
                        // The only node is the only manager: never removable.
                        let key = if self.rng.chance(50) {
                            node
                        } else {
                            self.missing_key()
                        };
                        let q = format!("force={}", encode(&self.short_string()));
                        self.req(
                            "DELETE",
                            &format!("/nodes/{}", encode(&key)),
                            &q,
                            None,
                            Expect::Refused,
                        )
                    }
                    _ => {
                        let (key, version, body) = if self.rng.chance(30) {
                            let v = self.rng.below(50).to_string();
                            let body = self.value(0);
                            (self.missing_key(), Some(v), self.render(&body))
                        } else if self.rng.chance(50) {
                            let mut spec = w.node_spec.clone();
                            self.noise(&mut spec);
                            (node, self.wrong_version(w.node_version), self.render(&spec))
                        } else {
                            let mut spec = w.node_spec.clone();
                            self.noise(&mut spec);
                            let bad = self
                                .rng
                                .pick(&[
                                    ("Role", json!("boss")),
                                    ("Availability", json!("maybe")),
                                    ("Labels", json!([1])),
                                    ("Name", json!(7)),
                                    ("Role", json!("__DEEP__")),
                                ])
                                .clone();
                            Self::set(&mut spec, &[bad.0], bad.1);
                            let body = if self.rng.chance(20) {
                                self.broken_json(&w.node_spec)
                            } else {
                                self.render(&spec)
                            };
                            (node, Some(w.node_version.to_string()), body)
                        };
                        let q = version
                            .map(|v| format!("version={}", encode(&v)))
                            .unwrap_or_default();
                        self.req(
                            "POST",
                            &format!("/nodes/{}/update", encode(&key)),
                            &q,
                            Some(body),
                            Expect::Refused,
                        )
                    }
                }
            }
            // The swarm: init, join, leave (never forced), update, unlock.
            73..=82 => match self.rng.below(7) {
                0 | 1 => {
                    let what = *self.rng.pick(&["init", "join"]);
                    let mut body = json!({
                        "ListenAddr": "127.0.0.1:0",
                        "AdvertiseAddr": "127.0.0.1",
                        "RemoteAddrs": ["127.0.0.1:1"],
                        "JoinToken": "SWMTKN-1-bogus",
                        "Spec": w.swarm_spec.clone(),
                    });
                    self.noise(&mut body);
                    // ForceNewCluster (which noise may add or turn on) is a
                    // real request on a manager: --force-new-cluster
                    // restarts its Raft alone, keeping every service.
                    let forced = body
                        .as_object()
                        .and_then(|o| {
                            o.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("ForceNewCluster"))
                        })
                        .is_some_and(|(_, v)| v != &json!(false) && !v.is_null());
                    let body = if self.rng.chance(30) {
                        self.broken_json(&body)
                    } else {
                        self.render(&body)
                    };
                    let expect = if forced && what == "init" {
                        Expect::Any
                    } else {
                        Expect::Refused
                    };
                    self.req("POST", &format!("/swarm/{what}"), "", Some(body), expect)
                }
                2 => {
                    let q = if self.rng.chance(50) {
                        format!("force={}", self.safe_bool())
                    } else {
                        String::new()
                    };
                    let body = self.rng.chance(50).then(|| self.broken_json(&json!({})));
                    self.req("POST", "/swarm/leave", &q, body, Expect::Refused)
                }
                3 | 4 => {
                    let mut spec = w.swarm_spec.clone();
                    self.noise(&mut spec);
                    let (version, body) = if self.rng.chance(50) {
                        (self.wrong_version(w.swarm_version), self.render(&spec))
                    } else {
                        let bad = self
                            .rng
                            .pick(&[
                                (
                                    vec!["Orchestration", "TaskHistoryRetentionLimit"],
                                    json!("x"),
                                ),
                                (vec!["Raft"], json!([])),
                                (vec!["Dispatcher", "HeartbeatPeriod"], json!(1.5)),
                                (vec!["CAConfig"], json!("__DEEP__")),
                                (vec!["Labels"], json!({ "a": [] })),
                                (vec!["EncryptionConfig", "AutoLockManagers"], json!("yes")),
                            ])
                            .clone();
                        Self::set(&mut spec, &bad.0, bad.1);
                        let body = if self.rng.chance(20) {
                            self.broken_json(&w.swarm_spec)
                        } else {
                            self.render(&spec)
                        };
                        (Some(w.swarm_version.to_string()), body)
                    };
                    let mut q: Vec<String> = version
                        .map(|v| format!("version={}", encode(&v)))
                        .into_iter()
                        .collect();
                    for p in [
                        "rotateWorkerToken",
                        "rotateManagerToken",
                        "rotateManagerUnlockKey",
                    ] {
                        if self.rng.chance(20) {
                            q.push(format!("{p}={}", self.rng.pick(&["true", "1", "x"])));
                        }
                    }
                    self.req(
                        "POST",
                        "/swarm/update",
                        &q.join("&"),
                        Some(body),
                        Expect::Refused,
                    )
                }
                5 => {
                    let mut body = json!({ "UnlockKey": "SWMKEY-1-bogus" });
                    self.noise(&mut body);
                    let body = if self.rng.chance(40) {
                        self.broken_json(&body)
                    } else {
                        self.render(&body)
                    };
                    self.req("POST", "/swarm/unlock", "", Some(body), Expect::Refused)
                }
                _ => {
                    let route = *self.rng.pick(&[
                        "/swarm",
                        "/swarm/unlockkey",
                        "/info",
                        "/version",
                        "/_ping",
                    ]);
                    self.req("GET", route, "", None, Expect::Any)
                }
            },
            // Methods a route does not take, paths no route has.
            83..=94 => {
                let body = self.rng.chance(60).then(|| {
                    let v = self.value(0);
                    if self.rng.chance(50) {
                        self.render(&v)
                    } else {
                        self.broken_json(&v)
                    }
                });
                if self.rng.chance(70) {
                    let (template, allowed) = *self.rng.pick(ROUTES);
                    let method = loop {
                        let m = *self.rng.pick(METHODS);
                        // HEAD goes with GET.
                        let taken = allowed.contains(&m) || m == "HEAD" && allowed.contains(&"GET");
                        if !taken {
                            break m;
                        }
                    };
                    let key = self.any_key(&keys);
                    let route = template.replace("{id}", &encode(&key));
                    self.req(method, &route, "", body, Expect::PageNotFound)
                } else {
                    let route = *self.rng.pick(UNKNOWN_SWARM_PATHS);
                    let method = *self.rng.pick(METHODS);
                    self.req(method, route, "", body, Expect::PageNotFound)
                }
            }
            // Paths near Flotilla's, which go to the (absent) engine.
            95..=96 => {
                let route = *self.rng.pick(&[
                    "/servicesX",
                    "/swarmy",
                    "/containers/json",
                    "/nosuch",
                    "/",
                    "/services/",
                    "/nodes//update",
                ]);
                let method = *self.rng.pick(&["GET", "POST", "DELETE"]);
                self.req(method, route, "", None, Expect::Any)
            }
            // Bytes no client would send.
            _ => Req {
                method: "RAW".into(),
                route: String::new(),
                prefix_ok: true,
                target: String::new(),
                body: Some(self.garbage()),
                expect: Expect::Any,
            },
        }
    }

    fn garbage(&mut self) -> Vec<u8> {
        match self.rng.below(12) {
            0 => (0..1 + self.rng.below(4000)).map(|_| (self.rng.next() & 0xff) as u8).collect(),
            1 => b"POST /services/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"Name\"".to_vec(),
            2 => b"POST /services/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
            3 => format!("GET /services HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "h".repeat(200_000)).into_bytes(),
            4 => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            5 => b"GET /services/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            6 => b"POST /swarm/init HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}".to_vec(),
            7 => b"POST /swarm/init HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}".to_vec(),
            8 => format!("GET /services/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            9 => b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\nGET /services HTTP/1.1\r\nHost: x\r\n\r\nDELETE /services/nosuch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            10 => b"GET /services HTTP/9.9\r\n\r\n".to_vec(),
            _ => b"POST /services/create HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}{}{}".to_vec(),
        }
    }
}

/// What is wrong with the answer to `req`, if anything.
fn check(req: &Req, r: &Response) -> Result<(), String> {
    let message = || -> Result<String, String> {
        let v: Value =
            serde_json::from_str(&r.body).map_err(|e| format!("error body is not JSON ({e})"))?;
        v["message"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| "error body has no message".to_string())
    };
    let head = req.method == "HEAD";
    if !req.prefix_ok {
        if r.status != 400 {
            return Err("a bad version prefix is a 400".into());
        }
        return if head { Ok(()) } else { message().map(|_| ()) };
    }
    if req.expect == Expect::PageNotFound {
        if r.status != 404 || !(head || r.body == PAGE_NOT_FOUND) {
            return Err(format!("expected 404 {PAGE_NOT_FOUND}"));
        }
        return Ok(());
    }
    if r.status < 300 {
        if req.expect == Expect::Refused {
            return Err("accepted a request that must be refused".into());
        }
        let raw = req.route.ends_with("/logs") || req.route == "/_ping" || head;
        if !raw {
            serde_json::from_str::<Value>(&r.body)
                .map_err(|e| format!("2xx body is not JSON ({e})"))?;
        }
        return Ok(());
    }
    if r.status < 400 {
        return Err("a 3xx".into());
    }
    if head {
        return Ok(());
    }
    let m = message()?;
    let swarm_route = ["/swarm", "/nodes", "/services", "/tasks"]
        .iter()
        .any(|p| req.route == *p || req.route.starts_with(&format!("{p}/")));
    let allowed_5xx = match r.status {
        // dockerd's 501 for what SwarmKit calls Unimplemented.
        501 if req.route.ends_with("/update") => m == RENAME || m == MODE_CHANGE,
        // No Docker Engine to pass a request outside the swarm API to.
        501 => !swarm_route && m.contains("not part of Flotilla's API"),
        // dockerd's 503 for init/join in a swarm, a manager's leave.
        503 => {
            matches!(req.route.as_str(), "/swarm/init" | "/swarm/join")
                && m.contains("already part of a swarm")
                || req.route == "/swarm/leave" && m.contains("--force")
        }
        s => s < 500,
    };
    if !allowed_5xx {
        return Err("a 5xx Docker would not answer".into());
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn seeded_bad_requests_change_nothing() {
    let seed = env_or("FLOTILLA_FUZZ_SEED", DEFAULT_SEED);
    let count = env_or("FLOTILLA_FUZZ_REQUESTS", DEFAULT_REQUESTS);
    println!("fuzz seed {seed} ({count} requests): replay with FLOTILLA_FUZZ_SEED={seed}");
    let d = daemon();
    let world = setup(&d);
    let before = snapshot(&d, Some(&world));
    let socket = d.socket();
    let mut g = Gen {
        rng: Rng(seed),
        w: &world,
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..count {
        let req = g.next();
        if req.method == "RAW" {
            if let Err(e) = send_garbage(&socket, req.body.as_deref().unwrap_or_default()) {
                failures.push(format!(
                    "#{i} garbage {}: {e}",
                    preview(req.body.as_deref().unwrap_or_default(), 200)
                ));
            }
        } else {
            match send(&socket, &req.method, &req.target, req.body.as_deref()) {
                Ok(r) => {
                    *statuses.entry(r.status).or_default() += 1;
                    if let Err(e) = check(&req, &r) {
                        failures.push(format!(
                            "#{i} {req}\n    -> {e}: {} {}",
                            r.status,
                            preview(r.body.as_bytes(), 400)
                        ));
                    }
                }
                Err(e) => failures.push(format!("#{i} {req}\n    -> no answer: {e}")),
            }
        }
        if (i + 1) % BATCH == 0 || i + 1 == count {
            let ping = send(&socket, "GET", "/_ping", None);
            assert!(
                ping.as_ref().is_ok_and(|r| r.status == 200),
                "seed {seed}: /_ping after request #{i} ({ping:?}); failures so far:\n{}",
                failures.join("\n")
            );
        }
    }
    let elapsed = started.elapsed();
    println!("{count} requests in {elapsed:?}; statuses: {statuses:?}");
    let after = snapshot(&d, Some(&world));
    for (k, v) in &before {
        if after.get(k) != Some(v) {
            failures.push(format!(
                "{k} changed:\n    before {}\n    after  {}",
                preview(v.as_bytes(), 2000),
                preview(
                    after.get(k).map(String::as_bytes).unwrap_or(b"(gone)"),
                    2000
                )
            ));
        }
    }
    if after.len() != before.len() {
        failures.push(format!(
            "held objects: {:?} before, {:?} after",
            before.keys(),
            after.keys()
        ));
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} problems (replay with FLOTILLA_FUZZ_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn renaming_a_service_is_refused_as_docker_does() {
    let d = daemon();
    let spec = json!({
        "Name": "web",
        "Labels": { "a": "b" },
        "TaskTemplate": task_spec(json!({})),
        "Mode": { "Replicated": { "Replicas": 0 } },
    });
    assert_eq!(d.post("/services/create", &spec.to_string()).status, 201);
    let before = d.get("/services/web").body;
    let svc: Value = serde_json::from_str(&before).unwrap();
    let version = svc["Version"]["Index"].as_u64().unwrap();
    let mut renamed = svc["Spec"].clone();
    renamed["Name"] = json!("web2");
    let expected = json!({ "message": RENAME }).to_string();
    // With the current version and with a stale one: SwarmKit checks the
    // name before the version.
    for v in [version, version - 1] {
        let r = d.post(
            &format!("/v1.41/services/web/update?version={v}"),
            &renamed.to_string(),
        );
        assert_eq!((r.status, r.body.as_str()), (501, expected.as_str()));
    }
    // No name at all is a rename too: Docker fills in a random one.
    let mut unnamed = svc["Spec"].clone();
    unnamed.as_object_mut().unwrap().remove("Name");
    let r = d.post(
        &format!(
            "/services/{}/update?version={version}",
            svc["ID"].as_str().unwrap()
        ),
        &unnamed.to_string(),
    );
    assert_eq!((r.status, r.body.as_str()), (501, expected.as_str()));
    // The docker CLI has no rename; the daemon's answer reaches it as is.
    assert_eq!(d.get("/services/web").body, before, "nothing changed");
    assert_eq!(d.get("/services/web2").status, 404);
    // Changing the mode is refused the same way.
    let mut global = svc["Spec"].clone();
    global["Mode"] = json!({ "Global": {} });
    let r = d.post(
        &format!("/services/web/update?version={version}"),
        &global.to_string(),
    );
    assert_eq!((r.status, r.message()), (501, MODE_CHANGE.to_string()));
    assert_eq!(d.get("/services/web").body, before, "nothing changed");
    // The same name with another label is an update.
    let mut labelled = svc["Spec"].clone();
    labelled["Labels"]["a"] = json!("c");
    let r = d.post(
        &format!("/services/web/update?version={version}"),
        &labelled.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.service("web")["Spec"]["Labels"]["a"], "c");
}

#[test]
fn unsupported_methods_and_unknown_swarm_paths_are_page_not_found() {
    let d = daemon();
    let socket = d.socket();
    // Larger than a unix socket's buffer: the daemon must read it all to
    // answer on a connection that stays usable.
    let big = serde_json::to_vec(&json!({ "Name": "x".repeat(400_000) })).unwrap();
    let cases: &[(&str, &str)] = &[
        ("PATCH", "/swarm/init"),
        ("DELETE", "/swarm/join"),
        ("PUT", "/services"),
        ("GET", "/swarm/init"),
        ("POST", "/swarm"),
        ("PUT", "/nodes/x"),
        ("POST", "/tasks"),
        ("DELETE", "/swarm/leave"),
        ("POST", "/_ping"),
        ("PUT", "/info"),
        ("OPTIONS", "/services/x/update"),
        ("PROPFIND", "/tasks/x/logs"),
        ("GET", "/swarm/bogus"),
        ("POST", "/v1.41/services/x/bogus"),
        ("POST", "/services/x/update/more"),
        ("DELETE", "/v1.24/nodes/x/y"),
    ];
    for (method, path) in cases {
        for body in [None, Some(&b"{\"Name\": 1}"[..]), Some(&big[..])] {
            let what = format!(
                "{method} {path} with {} body bytes",
                body.map_or(0, |b| b.len())
            );
            let mut s = connect(&socket).unwrap();
            s.write_all(&request_bytes(method, path, body, false))
                .unwrap_or_else(|e| panic!("{what}: the daemon stopped reading: {e}"));
            let r = read_one(&mut s).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((r.status, r.body.as_str()), (404, PAGE_NOT_FOUND), "{what}");
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.contains("application/json")),
                "{what}: {:?}",
                r.headers
            );
            // The same connection serves the next request.
            s.write_all(&request_bytes("GET", "/_ping", None, true))
                .unwrap_or_else(|e| panic!("{what}, then /_ping: {e}"));
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            let ping = parse(&raw, false).unwrap_or_else(|| panic!("{what}, then /_ping: {raw:?}"));
            assert_eq!(
                (ping.status, ping.body.as_str()),
                (200, "OK"),
                "{what}, then /_ping"
            );
        }
    }
    // A body over the limit is a 413, also once it has been read.
    let huge = serde_json::to_vec(&json!({ "Name": "x".repeat(3 << 20) })).unwrap();
    for path in ["/services/create", "/swarm/bogus"] {
        let mut s = connect(&socket).unwrap();
        s.write_all(&request_bytes("POST", path, Some(&huge), false))
            .unwrap_or_else(|e| panic!("{path}: the daemon stopped reading: {e}"));
        let r = read_one(&mut s).unwrap();
        let want = if path == "/swarm/bogus" { 404 } else { 413 };
        assert_eq!(r.status, want, "{path}: {}", r.body);
        assert!(!r.message().is_empty());
        s.write_all(&request_bytes("GET", "/_ping", None, true))
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        assert_eq!(
            parse(&raw, false).map(|p| p.status),
            Some(200),
            "{path}, then /_ping"
        );
    }
    // HEAD gets the status without a body.
    let r = send(&socket, "HEAD", "/swarm/init", None).unwrap();
    assert_eq!(r.status, 404);
    // An early answer (a refused version) also comes after the body.
    let mut s = connect(&socket).unwrap();
    s.write_all(&request_bytes(
        "POST",
        "/v1.99/services/create",
        Some(&big),
        false,
    ))
    .unwrap();
    let r = read_one(&mut s).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("too new"), "{}", r.body);
    // So does an error before the body is parsed (bad version parameter).
    let mut s = connect(&socket).unwrap();
    s.write_all(&request_bytes(
        "POST",
        "/services/x/update?version=a",
        Some(&big),
        false,
    ))
    .unwrap();
    let r = read_one(&mut s).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    // Paths outside the swarm routes still go to the Docker Engine (here
    // there is none: Flotilla's 501 says so).
    for (method, path) in [
        ("GET", "/containers/json"),
        ("GET", "/servicesX"),
        ("POST", "/v1.41/images/create"),
    ] {
        let r = send(&socket, method, path, None).unwrap();
        assert_eq!(r.status, 501, "{method} {path}: {}", r.body);
        assert!(r.message().contains("no Docker Engine"), "{}", r.body);
    }
    // Routes that exist still answer.
    assert_eq!(
        send(&socket, "GET", "/v1.41/services", None)
            .unwrap()
            .status,
        200
    );
    let r = send(&socket, "GET", "/swarm/unlockkey", None).unwrap();
    assert_eq!((r.status, r.json()), (200, json!({ "UnlockKey": "" })));
    let r = send(
        &socket,
        "POST",
        "/swarm/unlock",
        Some(b"{\"UnlockKey\": \"SWMKEY-1-x\"}"),
    )
    .unwrap();
    assert_eq!(
        (r.status, r.message()),
        (409, "swarm is not locked".to_string())
    );
    // Repeated query parameters count with their first value, as in Go.
    let r = send(
        &socket,
        "GET",
        "/services?filters=%7B%7D&filters=nope",
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // An id that is not UTF-8 is looked up (and not found), as by dockerd.
    let r = send(&socket, "GET", "/services/%FF%FE", None).unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.message().contains("not found"), "{}", r.body);
}
