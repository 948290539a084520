//! Bad input gets Docker's status code and a message saying what is wrong;
//! afterwards the daemon still answers and nothing stored has changed.

mod common;

use common::*;
use serde_json::{json, Value};

const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \
                             \"docker swarm join\" to connect this node to swarm and try again.";

/// Everything a bad request must leave alone: the services (specs and
/// versions), the swarm (spec, tokens, version) and the nodes' specs.
fn stored_state(d: &Daemon) -> Value {
    let nodes: Vec<Value> = d
        .get_json("/nodes")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| json!([n["ID"], n["Spec"]]))
        .collect();
    json!({
        "services": d.get_json("/services"),
        "swarm": d.get_json("/swarm"),
        "nodes": nodes,
        "networks": d.get_json("/networks?filters=%7B%22scope%22%3A%7B%22swarm%22%3Atrue%7D%7D"),
        "secrets": d.get_json("/secrets"),
        "configs": d.get_json("/configs"),
    })
}

/// A swarm with one service `web` (0 replicas: only its spec matters here).
fn swarm_with_service() -> Daemon {
    let d = Daemon::start(Executor::Docker);
    d.init(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "0",
        "--name",
        "web",
        IMAGE,
    ]))
    .ok();
    d
}

fn spec(name: &str, extra: Value) -> String {
    let mut s = json!({
        "Name": name,
        "TaskTemplate": { "ContainerSpec": { "Image": IMAGE, "Args": ["true"] } },
        "Mode": { "Replicated": { "Replicas": 0 } },
    });
    merge(&mut s, extra);
    s.to_string()
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

/// Sends a request that must fail with `status` and a message containing
/// every `words`; then checks that the daemon still answers and that the
/// stored state is what it was.
#[track_caller]
fn expect_error(
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
    words: &[&str],
) {
    let before = stored_state(d);
    let r = d.request(method, path, body);
    assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.body);
    let message = r.message();
    for w in words {
        assert!(
            message.contains(w),
            "{method} {path}: message {message:?} lacks {w:?}"
        );
    }
    assert_eq!(d.get("/_ping").status, 200, "daemon still answers");
    assert_eq!(
        stored_state(d),
        before,
        "{method} {path} changed the stored state"
    );
}

#[test]
fn raw_api_rejects_bad_bodies_with_400() {
    let d = swarm_with_service();
    let create = "/services/create";
    expect_error(
        &d,
        "POST",
        create,
        Some("{\"Name\": \"x\","),
        400,
        &["JSON"],
    );
    expect_error(
        &d,
        "POST",
        create,
        Some(&spec("x", json!({"Name": 5}))),
        400,
        &["invalid type", "string"],
    );
    expect_error(
        &d,
        "POST",
        create,
        Some(&spec(
            "x",
            json!({"Mode": {"Replicated": {"Replicas": "three"}}}),
        )),
        400,
        &["three"],
    );
    expect_error(
        &d,
        "POST",
        create,
        Some(&spec(
            "x",
            json!({"Mode": {"Replicated": {"Replicas": -1}}}),
        )),
        400,
        &["-1"],
    );
    expect_error(
        &d,
        "POST",
        create,
        Some(&spec(
            "x",
            json!({"TaskTemplate": {"Placement": {"Constraints": ["node.role=manager"]}}}),
        )),
        400,
        &["constraint", "node.role=manager"],
    );
    expect_error(
        &d,
        "POST",
        create,
        Some(&spec(
            "x",
            json!({"TaskTemplate": {"Placement": {"Constraints": ["node.color==blue"]}}}),
        )),
        400,
        &["constraint", "node.color"],
    );
    expect_error(
        &d,
        "POST",
        create,
        Some(&json!({"Name": "x", "TaskTemplate": {"ContainerSpec": {}}}).to_string()),
        400,
        &["image"],
    );
    expect_error(
        &d,
        "POST",
        create,
        Some(&spec("web", json!({}))),
        409,
        &["web", "exists"],
    );
    // The filters parameter is JSON too.
    expect_error(
        &d,
        "GET",
        "/services?filters=%7Bnot-json",
        None,
        400,
        &["filter"],
    );
}

#[test]
fn raw_api_unknown_objects_are_404() {
    let d = swarm_with_service();
    expect_error(&d, "GET", "/services/nosuch", None, 404, &["nosuch"]);
    expect_error(&d, "DELETE", "/services/nosuch", None, 404, &["nosuch"]);
    expect_error(
        &d,
        "POST",
        "/services/nosuch/update?version=1",
        Some(&spec("nosuch", json!({}))),
        404,
        &["nosuch"],
    );
    expect_error(&d, "GET", "/nodes/nosuch", None, 404, &["nosuch"]);
    expect_error(
        &d,
        "POST",
        "/nodes/nosuch/update?version=1",
        Some("{}"),
        404,
        &["nosuch"],
    );
    expect_error(&d, "GET", "/tasks/nosuch", None, 404, &["nosuch"]);
}

#[test]
fn raw_api_stale_version_is_update_out_of_sequence() {
    let d = swarm_with_service();
    let svc = d.service("web");
    let version = svc["Version"]["Index"].as_u64().unwrap();
    let mut new_spec = svc["Spec"].clone();
    new_spec["Labels"] = json!({"changed": "yes"});
    let body = new_spec.to_string();
    // One good update moves the version on; the old one is then stale.
    let ok = d.post(&format!("/services/web/update?version={version}"), &body);
    assert_eq!(ok.status, 200, "{}", ok.body);
    new_spec["Labels"] = json!({"changed": "twice"});
    expect_error(
        &d,
        "POST",
        &format!("/services/web/update?version={version}"),
        Some(&new_spec.to_string()),
        400,
        &["update out of sequence"],
    );
    expect_error(
        &d,
        "POST",
        "/services/web/update",
        Some(&body),
        400,
        &["version"],
    );
    assert_eq!(
        d.service("web")["Spec"]["Labels"],
        json!({"changed": "yes"})
    );
}

#[test]
fn raw_api_versions_and_unknown_routes() {
    let d = swarm_with_service();
    // Every version prefix Flotilla speaks works; others are refused.
    for v in ["v1.24", "v1.41", "v1.47"] {
        assert_eq!(d.get(&format!("/{v}/services")).status, 200, "{v}");
    }
    expect_error(
        &d,
        "GET",
        "/v1.99/services",
        None,
        400,
        &["1.99", "too new"],
    );
    expect_error(
        &d,
        "GET",
        "/v1.12/services",
        None,
        400,
        &["1.12", "too old"],
    );
    expect_error(&d, "GET", "/v2.0/services", None, 400, &["2.0"]);
}

/// Without a Docker Engine beside it, a route Flotilla does not serve gets
/// a clear 501 rather than a pass-through.
#[test]
fn unknown_route_without_docker_engine_is_501() {
    let d = Daemon::start_with(
        Executor::Process,
        &["--docker-host", "unix:///nonexistent/docker.sock"],
    );
    d.init(&[]);
    for path in ["/containers/json", "/v1.41/images/json", "/no/such/route"] {
        let r = d.get(path);
        assert_eq!(r.status, 501, "{path}: {}", r.body);
        assert!(
            r.message().to_lowercase().contains("docker"),
            "{path}: {}",
            r.body
        );
    }
    assert_eq!(d.get("/_ping").status, 200);
}

#[test]
fn requests_before_swarm_init_are_503() {
    let d = Daemon::start(Executor::Docker);
    for (method, path) in [
        ("GET", "/services"),
        ("GET", "/nodes"),
        ("GET", "/tasks"),
        ("GET", "/swarm"),
        ("POST", "/services/create"),
    ] {
        let body = (method == "POST").then(|| spec("web", json!({})));
        let r = d.request(method, path, body.as_deref());
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert_eq!(r.message(), NOT_A_MANAGER, "{method} {path}");
    }
    // The CLIs say the same on one line and exit non-zero.
    for out in [d.flotilla(&["service", "ls"]), d.docker(&["service", "ls"])] {
        let out = out.failed();
        assert_eq!(
            out.stderr.trim(),
            format!("Error response from daemon: {NOT_A_MANAGER}")
        );
    }
    assert_eq!(d.get_json("/info")["Swarm"]["LocalNodeState"], "inactive");
    // Init still works after all that.
    d.init(&[]);
}

#[test]
fn swarm_init_twice_is_503() {
    let d = Daemon::start(Executor::Docker);
    d.init(&[]);
    let before = stored_state(&d);
    let r = d.post("/swarm/init", "{}");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.message().contains("already part of a swarm"),
        "{}",
        r.body
    );
    let init = [&["swarm", "init"], LISTEN].concat();
    for out in [d.flotilla(&init), d.docker(&init)] {
        let out = out.failed();
        assert_one_line_error(&out, "already part of a swarm");
    }
    assert_eq!(stored_state(&d), before);
}

#[track_caller]
fn assert_one_line_error(out: &Out, words: &str) {
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line: {out:#?}");
    assert!(err.contains(words), "{words:?} not in {out:#?}");
}

/// The same mistakes through both CLIs: non-zero exit, one line saying why.
#[test]
fn clis_report_bad_input_on_one_line() {
    let d = swarm_with_service();
    let before = stored_state(&d);
    for program in ["flotilla", "docker"] {
        let cli = |args: &[&str]| {
            if program == "flotilla" {
                d.flotilla(args)
            } else {
                d.docker(args)
            }
        };
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                with_forever(&["service", "create", "-d", "--name", "web", IMAGE]),
                "already exists",
            ),
            (
                with_forever(&[
                    "service",
                    "create",
                    "-d",
                    "--name",
                    "c",
                    "--constraint",
                    "node.role=manager",
                    IMAGE,
                ]),
                "constraint",
            ),
            (vec!["service", "inspect", "nosuch"], "nosuch"),
            (vec!["service", "scale", "nosuch=2"], "nosuch"),
            (vec!["service", "rm", "nosuch"], "nosuch"),
            (vec!["service", "ps", "nosuch"], "nosuch"),
            (
                vec!["node", "update", "--availability", "drain", "nosuch"],
                "nosuch",
            ),
            (vec!["node", "inspect", "nosuch"], "nosuch"),
        ];
        for (args, words) in cases {
            let out = cli(&args).failed();
            assert_one_line_error(&out, words);
        }
        // A flag of the wrong type is a usage error: exit 125, naming the flag.
        let out = cli(&[
            "service",
            "create",
            "--replicas",
            "-1",
            "--name",
            "z",
            IMAGE,
        ]);
        assert_eq!(out.code, 125, "{program}: {out:#?}");
        assert!(out.stderr.contains("--replicas"), "{program}: {out:#?}");
    }
    assert_eq!(d.get("/_ping").status, 200);
    assert_eq!(stored_state(&d), before);
}

/// Bad networks: every one refused with a clear 4xx, nothing created, the
/// daemon serving on; local networks still go to the engine.
#[test]
fn bad_networks_are_refused_clearly() {
    let d = swarm_with_service();
    let create = |body: &str, status: u16, words: &[&str]| {
        expect_error(&d, "POST", "/networks/create", Some(body), status, words)
    };
    let ok = d.post(
        "/networks/create",
        r#"{"Name":"front","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.77.0.0/16"}]}}"#,
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    create(
        r#"{"Name":"back","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.77.9.0/24"}]}}"#,
        400,
        &["overlaps with the subnet 10.77.0.0/16 of network front"],
    );
    create(
        r#"{"Name":"back","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.78.0.0/33"}]}}"#,
        400,
        &["invalid CIDR address: 10.78.0.0/33"],
    );
    create(
        r#"{"Name":"back","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.78.0.0/24","Gateway":"10.79.0.1"}]}}"#,
        400,
        &["does not contain gateway 10.79.0.1"],
    );
    create(
        r#"{"Name":"back","Driver":"nosuchdriver","Scope":"swarm"}"#,
        400,
        &["driver \"nosuchdriver\""],
    );
    create(
        r#"{"Name":"back","Driver":"overlay","Options":{"encrypted":""}}"#,
        400,
        &["encrypted", "not supported by Flotilla"],
    );
    create(
        r#"{"Name":"front","Driver":"overlay"}"#,
        409,
        &["network with name front already exists"],
    );
    expect_error(
        &d,
        "POST",
        "/services/create",
        Some(&spec(
            "onnet",
            json!({"TaskTemplate": {"Networks": [{"Target": "nosuchnet"}]}}),
        )),
        404,
        &["network nosuchnet not found"],
    );
    // The docker CLI says the same on one line.
    let out = d
        .docker(&["service", "create", "--network", "nosuchnet", IMAGE])
        .failed();
    assert_one_line_error(&out, "network nosuchnet not found");
    // In use: neither a network with a service on it nor ingress while a
    // service publishes a port goes.
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "0",
        "--name",
        "onfront",
        "--network",
        "front",
        "-p",
        "38473:80",
        IMAGE,
    ]))
    .ok();
    expect_error(
        &d,
        "DELETE",
        "/networks/front",
        None,
        400,
        &["network front is in use by service onfront"],
    );
    expect_error(
        &d,
        "DELETE",
        "/networks/ingress",
        None,
        400,
        &["network ingress is in use by service onfront"],
    );
    let out = d.docker(&["network", "rm", "front"]).failed();
    assert!(out.stderr.contains("in use by service onfront"), "{out:#?}");
    // A standalone container cannot join a swarm network yet, and says so
    // (the engine would say the network does not exist).
    let out = d
        .docker(&["run", "--rm", "--network", "front", IMAGE, "true"])
        .failed();
    assert!(
        out.stderr
            .contains("standalone container on the swarm network front is not supported"),
        "{out:#?}"
    );
    // A bridge network is the engine's: created there, and removed.
    let name = format!("flotilla-test-br-{}", std::process::id());
    d.docker(&["network", "create", "-d", "bridge", &name]).ok();
    d.docker(&["network", "rm", &name]).ok();
    assert_eq!(d.get("/_ping").status, 200, "the daemon serves on");
}

/// Secrets and configs with the docker CLI: created from a file, listed,
/// inspected (a secret's data never shown, a config's as Docker shows
/// it), removed; bad ones refused with SwarmKit's words and nothing kept;
/// services refer to them only as SwarmKit allows (existing, by a name
/// that matches, one reference per target, with a target), and one in use
/// cannot go.
#[test]
fn secrets_and_configs_through_the_docker_cli() {
    let d = swarm_with_service();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("password.txt");
    std::fs::write(&file, "s3cr3t-value\n").expect("write");
    let path = file.to_str().unwrap_or_default();
    let id = d
        .docker(&[
            "secret",
            "create",
            "--label",
            "env=prod",
            "db_password",
            path,
        ])
        .ok();
    assert_eq!(id.stdout.trim().len(), 25, "{id:#?}");
    let ls = d
        .docker(&["secret", "ls", "--format", "{{.Name}} {{.Labels}}"])
        .ok();
    assert_eq!(ls.stdout.trim(), "db_password env=prod");
    let inspect = d.docker(&["secret", "inspect", "db_password"]).ok();
    assert!(!inspect.stdout.contains("Data"), "{}", inspect.stdout);
    assert!(
        !inspect.stdout.contains("czNjcjN0"),
        "the data never comes back"
    );
    d.docker(&["config", "create", "app_conf", path]).ok();
    let data = d
        .docker(&[
            "config",
            "inspect",
            "--format",
            "{{json .Spec.Data}}",
            "app_conf",
        ])
        .ok();
    assert_eq!(data.stdout.trim(), "\"czNjcjN0LXZhbHVlCg==\"");
    // Flotilla's CLI prints what docker's prints.
    for args in [
        &["secret", "ls"][..],
        &["secret", "inspect", "db_password"][..],
        &["config", "inspect", "--pretty", "app_conf"][..],
    ] {
        assert_eq!(
            d.flotilla(args).ok().stdout,
            d.docker(args).ok().stdout,
            "{args:?}"
        );
    }

    // Bad input: nothing is stored, each says what is wrong.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 600 * 1024]).expect("write");
    let before = stored_state(&d);
    let out = d
        .docker(&[
            "secret",
            "create",
            "toobig",
            big.to_str().unwrap_or_default(),
        ])
        .failed();
    assert_one_line_error(
        &out,
        "secret data must be larger than 0 and less than 500 KiB",
    );
    let out = d.docker(&["secret", "create", "bad-", path]).failed();
    assert_one_line_error(&out, "invalid name");
    let out = d
        .docker(&["secret", "create", "db_password", path])
        .failed();
    assert_one_line_error(&out, "secret db_password already exists");
    // The docker CLI looks the name up itself; the API refuses by name.
    let out = d
        .docker(&["service", "create", "--secret", "nosuchsecret", IMAGE])
        .failed();
    assert_one_line_error(&out, "secret not found: nosuchsecret");
    let secret_id = id.stdout.trim();
    let create = |secrets: serde_json::Value| {
        let body = json!({
            "Name": "refers",
            "TaskTemplate": {"ContainerSpec": {"Image": IMAGE, "Secrets": secrets}},
        });
        d.post("/services/create", &body.to_string())
    };
    let file = |target: &str| json!({"Name": target, "UID": "0", "GID": "0", "Mode": 292});
    for (secrets, message) in [
        (
            json!([{"SecretID": "nosuch", "SecretName": "nosuch", "File": file("x")}]),
            "secret not found: nosuch",
        ),
        // The ID exists, the name given is not its name.
        (
            json!([{"SecretID": secret_id, "SecretName": "other", "File": file("x")}]),
            "secret not found: other",
        ),
        (
            json!([{"SecretID": secret_id, "SecretName": "db_password"}]),
            "malformed secret reference, no target provided",
        ),
        (
            json!([
                {"SecretID": secret_id, "SecretName": "db_password", "File": file("same")},
                {"SecretName": "db_password", "File": file("same")},
            ]),
            "secret references 'db_password' and 'db_password' have a conflicting target: 'same'",
        ),
        (json!([{"File": file("x")}]), "malformed secret reference"),
    ] {
        let r = create(secrets);
        assert_eq!(r.status, 400, "{}", r.body);
        let m: serde_json::Value = serde_json::from_str(&r.body).expect("JSON error");
        assert!(
            m["message"].as_str().unwrap_or_default().contains(message),
            "{message}: {}",
            r.body
        );
    }
    assert_eq!(stored_state(&d), before, "nothing half-done");

    // In use: refused, naming the service; free once the service is gone.
    d.docker(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "0",
        "--name",
        "uses-it",
        "--secret",
        "source=db_password,target=pw",
        IMAGE,
    ]))
    .ok();
    let out = d.docker(&["secret", "rm", "db_password"]).failed();
    assert_one_line_error(
        &out,
        "secret 'db_password' is in use by the following service: uses-it",
    );
    d.docker(&["service", "rm", "uses-it"]).ok();
    d.docker(&["secret", "rm", "db_password"]).ok();
    d.docker(&["config", "rm", "app_conf"]).ok();
    let out = d.docker(&["secret", "inspect", "db_password"]).failed();
    assert!(out.stderr.contains("db_password"), "{out:#?}");
}

/// An unknown flag before the image is a usage error, as in the docker CLI
/// ("unknown flag: --bogus-flag", exit 125); it must not become the image.
#[test]
fn cli_unknown_flag_before_image_is_a_usage_error() {
    let d = swarm_with_service();
    let before = stored_state(&d);
    let args = [
        "service",
        "create",
        "-d",
        "--name",
        "bogus",
        "--bogus-flag",
        IMAGE,
    ];
    let theirs = d.docker(&args);
    assert_eq!(theirs.code, 125, "docker: {theirs:#?}");
    let ours = d.flotilla(&args);
    assert_eq!(ours.code, 125, "flotilla: {ours:#?}");
    assert!(ours.stderr.contains("--bogus-flag"), "{ours:#?}");
    assert_eq!(stored_state(&d), before, "no service created");
}
