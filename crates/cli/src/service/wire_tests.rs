//! What `service create | update | restart | scale` send, read on a fake
//! daemon: X-Registry-Auth with --with-registry-auth, `registryAuthFrom`,
//! ForceUpdate, the job modes.

use base64::Engine;
use clap::Parser;
use serde_json::{json, Value};

use super::create::CreateArgs;
use super::update::UpdateArgs;
use crate::registry::AuthEnv;
use crate::testutil::{unquote, FakeDaemon, Seen};

#[derive(Parser)]
struct CreateCli {
    #[command(flatten)]
    args: CreateArgs,
}

#[derive(Parser)]
struct UpdateCli {
    #[command(flatten)]
    args: UpdateArgs,
}

#[derive(Parser)]
struct RestartCli {
    #[command(flatten)]
    args: super::RestartArgs,
}

/// A docker CLI config with credentials for registry.example.com only.
fn config() -> (tempfile::TempDir, AuthEnv) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNz"}}}"#,
    )
    .unwrap();
    let env = AuthEnv {
        config_dir: dir.path().to_path_buf(),
        path: None,
    };
    (dir, env)
}

/// The X-Registry-Auth header of a request, decoded.
fn auth_of(seen: &Seen) -> Option<String> {
    seen.header("X-Registry-Auth").map(|value| {
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(value)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    })
}

fn line(seen: &Seen) -> String {
    format!("{} {}", seen.method, unquote(&seen.path))
}

const REGISTRY_CREDENTIALS: &str =
    r#"{"username":"user","password":"pass","serveraddress":"registry.example.com"}"#;

#[tokio::test]
async fn create_sends_registry_auth_only_when_asked() {
    let (_dir, env) = config();
    let daemon = FakeDaemon::start(vec![("/v1.41/services/create", r#"{"ID":"svc1"}"#)]);
    let cli = CreateCli::try_parse_from([
        "create",
        "-d",
        "--with-registry-auth",
        "registry.example.com/team/app:1",
    ])
    .unwrap();
    super::create::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    let seen = daemon.seen();
    let lines: Vec<String> = seen.iter().map(line).collect();
    assert_eq!(
        lines,
        [
            "GET /v1.41/distribution/registry.example.com/team/app:1/json",
            "POST /v1.41/services/create",
        ]
    );
    // The registry query and the create both carry the credentials.
    for request in &seen {
        assert_eq!(auth_of(request).as_deref(), Some(REGISTRY_CREDENTIALS));
    }

    // An image of another registry: empty credentials, still sent.
    let daemon = FakeDaemon::start(vec![("/v1.41/services/create", r#"{"ID":"svc1"}"#)]);
    let cli = CreateCli::try_parse_from([
        "create",
        "-d",
        "--no-resolve-image",
        "--with-registry-auth",
        "busybox",
    ])
    .unwrap();
    super::create::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    let seen = daemon.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("X-Registry-Auth"), Some("e30="));
    // docker's client tags a bare name, registry query or not.
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body["TaskTemplate"]["ContainerSpec"]["Image"],
        "busybox:latest"
    );

    // Without the flag: no header.
    let daemon = FakeDaemon::start(vec![("/v1.41/services/create", r#"{"ID":"svc1"}"#)]);
    let cli =
        CreateCli::try_parse_from(["create", "-d", "registry.example.com/team/app:1"]).unwrap();
    super::create::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    assert!(daemon.seen().iter().all(|s| auth_of(s).is_none()));

    // A reference docker cannot parse stops before anything is sent.
    let daemon = FakeDaemon::start(vec![]);
    let cli =
        CreateCli::try_parse_from(["create", "-d", "--with-registry-auth", "Bad/Name"]).unwrap();
    let err = super::create::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid reference format: repository name (Name) must be lowercase"
    );
    assert!(daemon.seen().is_empty());
}

#[tokio::test]
async fn create_sends_the_job_modes() {
    let (_dir, env) = config();
    let daemon = FakeDaemon::start(vec![("/v1.41/services/create", r#"{"ID":"svc1"}"#)]);
    let cli = CreateCli::try_parse_from([
        "create",
        "-d",
        "--no-resolve-image",
        "--mode",
        "replicated-job",
        "--replicas",
        "3",
        "--max-concurrent",
        "2",
        "busybox",
        "true",
    ])
    .unwrap();
    super::create::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&daemon.seen()[0].body).unwrap();
    assert_eq!(
        body["Mode"],
        json!({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}})
    );
    assert!(body.get("UpdateConfig").is_none());
}

const SERVICE: &str = r#"{"ID":"svc1","Version":{"Index":7},"Spec":{"Name":"web","Mode":{"Replicated":{"Replicas":2}},"TaskTemplate":{"ContainerSpec":{"Image":"registry.example.com/team/app:1@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},"ForceUpdate":3}}}"#;

#[tokio::test]
async fn update_sends_registry_auth_or_asks_to_keep_the_services() {
    let (_dir, env) = config();
    let answers = || {
        vec![
            ("/v1.41/services/web?", SERVICE),
            ("/v1.41/services/svc1/update", "{}"),
        ]
    };
    let daemon = FakeDaemon::start(answers());
    let cli = UpdateCli::try_parse_from(["update", "-d", "--with-registry-auth", "web"]).unwrap();
    super::update::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    let seen = daemon.seen();
    assert_eq!(line(&seen[1]), "POST /v1.41/services/svc1/update?version=7");
    // The credentials of the image the service runs.
    assert_eq!(auth_of(&seen[1]).as_deref(), Some(REGISTRY_CREDENTIALS));

    // A new image: the registry query carries them too.
    let daemon = FakeDaemon::start(answers());
    let cli = UpdateCli::try_parse_from([
        "update",
        "-d",
        "--with-registry-auth",
        "--image",
        "busybox:2",
        "web",
    ])
    .unwrap();
    super::update::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    let seen = daemon.seen();
    let lines: Vec<String> = seen.iter().map(line).collect();
    assert_eq!(
        lines,
        [
            "GET /v1.41/services/web?insertDefaults=false",
            "GET /v1.41/distribution/busybox:2/json",
            "POST /v1.41/services/svc1/update?version=7",
        ]
    );
    assert_eq!(seen[1].header("X-Registry-Auth"), Some("e30="));
    assert_eq!(seen[2].header("X-Registry-Auth"), Some("e30="));

    // Without the flag: registryAuthFrom=spec and no header.
    let daemon = FakeDaemon::start(answers());
    let cli = UpdateCli::try_parse_from(["update", "-d", "--force", "web"]).unwrap();
    super::update::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    let seen = daemon.seen();
    assert_eq!(
        line(&seen[1]),
        "POST /v1.41/services/svc1/update?registryAuthFrom=spec&version=7"
    );
    assert!(auth_of(&seen[1]).is_none());
    let body: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(body["TaskTemplate"]["ForceUpdate"], 4);

    // --rollback: with the server's rollback, still from the spec.
    let daemon = FakeDaemon::start(answers());
    let cli = UpdateCli::try_parse_from(["update", "-d", "--rollback", "web"]).unwrap();
    super::update::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap();
    assert_eq!(
        line(&daemon.seen()[1]),
        "POST /v1.41/services/svc1/update?registryAuthFrom=spec&rollback=previous&version=7"
    );
    // ...and it cannot be combined with --with-registry-auth.
    let cli =
        UpdateCli::try_parse_from(["update", "--rollback", "--with-registry-auth", "web"]).unwrap();
    let err = super::update::run_with(&daemon.client(), cli.args, &env)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "other flags may not be combined with --rollback"
    );
}

#[tokio::test]
async fn restart_is_update_force() {
    let daemon = FakeDaemon::start(vec![
        ("/v1.41/services/web?", SERVICE),
        ("/v1.41/services/svc1/update", "{}"),
    ]);
    let cli = RestartCli::try_parse_from(["restart", "-d", "web"]).unwrap();
    super::restart(&daemon.client(), cli.args).await.unwrap();
    let seen = daemon.seen();
    let lines: Vec<String> = seen.iter().map(line).collect();
    assert_eq!(
        lines,
        [
            "GET /v1.41/services/web?insertDefaults=false",
            "POST /v1.41/services/svc1/update?registryAuthFrom=spec&version=7",
        ]
    );
    // The spec as it was, but one more ForceUpdate.
    let mut expected: Value = serde_json::from_str(SERVICE).unwrap();
    expected["Spec"]["TaskTemplate"]["ForceUpdate"] = json!(4);
    let body: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(body, expected["Spec"]);

    // Each service in turn; one that cannot be restarted does not stop
    // the others, and is named in the error.
    let daemon = FakeDaemon::start(vec![
        ("/v1.41/services/web?", SERVICE),
        ("/v1.41/services/svc1/update", "{}"),
    ]);
    let cli = RestartCli::try_parse_from(["restart", "-d", "gone", "web"]).unwrap();
    let err = super::restart(&daemon.client(), cli.args)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gone: Error response from daemon: not found"
    );
    assert_eq!(daemon.seen().len(), 3);
    // Alone, its error is update's.
    let cli = RestartCli::try_parse_from(["restart", "-d", "gone"]).unwrap();
    let err = super::restart(&daemon.client(), cli.args)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Error response from daemon: not found");
}

#[tokio::test]
async fn scale_sets_a_replicated_jobs_completions() {
    let job = r#"{"ID":"job1","Version":{"Index":2},"Spec":{"Name":"job","Mode":{"ReplicatedJob":{"MaxConcurrent":1,"TotalCompletions":1}},"TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}}"#;
    let global_job = r#"{"ID":"job2","Version":{"Index":2},"Spec":{"Name":"gjob","Mode":{"GlobalJob":{}},"TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}}"#;
    let daemon = FakeDaemon::start(vec![
        ("/v1.41/services/job?", job),
        ("/v1.41/services/gjob?", global_job),
        ("/v1.41/services/job1/update", "{}"),
    ]);
    #[derive(Parser)]
    struct ScaleCli {
        #[command(flatten)]
        args: super::scale::ScaleArgs,
    }
    let cli = ScaleCli::try_parse_from(["scale", "-d", "job=5", "gjob=2"]).unwrap();
    let err = super::scale::run(&daemon.client(), cli.args)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gjob: scale can only be used with replicated or replicated-job mode"
    );
    let seen = daemon.seen();
    assert_eq!(line(&seen[1]), "POST /v1.41/services/job1/update?version=2");
    let body: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(
        body["Mode"],
        json!({"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 5}})
    );
}
