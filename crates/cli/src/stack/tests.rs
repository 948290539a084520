//! Loader, conversion and depends_on tests. The golden specs are the
//! bodies docker CLI 28.2.2 sent to POST /services/create for the same
//! file (`docker stack deploy -c stack.yml dk`, captured on the socket),
//! with the secret and config IDs left out (they are filled in at deploy).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::{json, Value};

use super::convert::{self, Condition, Namespace};
use super::deploy::{check_condition, start_order, Check};
use super::loader::{load_texts, Loaded};

const STACK: &str = r#"version: "3.9"
services:
  web:
    image: flotilla-busybox:${TAG}
    command: sh -c "while true; do echo hi | nc -l -p 8080; done"
    ports:
      - "8080:8080"
      - target: 9090
        published: 9091
        protocol: udp
        mode: host
    environment:
      - PLAIN=1
      - SHARED=env
      - EMPTY
    env_file: web.env
    labels:
      app.tier: front
    deploy:
      replicas: ${REPLICAS}
      labels: [com.example.team=web]
      update_config:
        parallelism: 2
        delay: 10s
        max_failure_ratio: 0.3
        order: start-first
      rollback_config:
        parallelism: 1
      restart_policy:
        condition: on-failure
        delay: 5s
        max_attempts: 3
        window: 2m
      placement:
        constraints: [node.role == manager]
      resources:
        limits: {cpus: '0.5', memory: 50M}
        reservations: {memory: 20M}
    healthcheck:
      test: ["CMD", "true"]
      interval: 1.5s
      timeout: 3s
      retries: 3
      start_period: 1s
    secrets:
      - source: db_password
        target: /run/secrets/db
        mode: 0400
    configs: [app_conf]
    networks:
      front:
        aliases: [www]
      back:
    extra_hosts:
      - "somehost:10.0.0.1"
    stop_grace_period: 20s
    hostname: web-host
    user: "1000:1000"
    working_dir: /tmp
    init: true
    volumes:
      - data:/data
      - /tmp:/hosttmp:ro
      - type: tmpfs
        target: /scratch
        tmpfs: {size: 1000000}
    depends_on:
      db:
        condition: service_healthy
    container_name: nope
    build: .
    links: [db]
  db:
    image: flotilla-busybox:healthy
    command: ["sleep", "3600"]
    networks: [back]
    deploy:
      mode: global
    restart: always
    logging:
      driver: json-file
      options: {max-size: 10m}
    cap_add: [NET_ADMIN]
    cap_drop: [all]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
    sysctls: {net.core.somaxconn: 1024}
    dns: [8.8.8.8]
networks:
  front:
    driver: overlay
    attachable: true
    labels: {net: front}
  back:
    driver_opts: {com.docker.network.driver.mtu: "1400"}
volumes:
  data:
    driver: local
    labels: [vol=data]
secrets:
  db_password:
    file: ./db_password.txt
configs:
  app_conf:
    file: ./app.conf
    template_driver: golang
"#;

/// docker's body for dk_web (docker 28.2.2).
const DOCKER_WEB: &str = r#"{"Name": "dk_web", "Labels": {"com.docker.stack.image": "flotilla-busybox:latest", "com.docker.stack.namespace": "dk", "com.example.team": "web"}, "TaskTemplate": {"ContainerSpec": {"Image": "flotilla-busybox:latest", "Labels": {"app.tier": "front", "com.docker.stack.namespace": "dk"}, "Args": ["sh", "-c", "while true; do echo hi | nc -l -p 8080; done"], "Hostname": "web-host", "Env": ["A_FROM_FILE=1", "EMPTY", "PLAIN=1", "SHARED=env"], "Dir": "/tmp", "User": "1000:1000", "Privileges": {"CredentialSpec": null, "SELinuxContext": null, "NoNewPrivileges": false}, "Init": true, "Mounts": [{"Type": "volume", "Source": "dk_data", "Target": "/data", "VolumeOptions": {"Labels": {"com.docker.stack.namespace": "dk", "vol": "data"}, "DriverConfig": {"Name": "local"}}}, {"Type": "bind", "Source": "/tmp", "Target": "/hosttmp", "ReadOnly": true}, {"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1000000}}], "StopGracePeriod": 20000000000, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1500000000, "Timeout": 3000000000, "StartPeriod": 1000000000, "Retries": 3}, "Hosts": ["10.0.0.1 somehost"], "Secrets": [{"File": {"Name": "/run/secrets/db", "UID": "0", "GID": "0", "Mode": 256}, "SecretID": "", "SecretName": "dk_db_password"}], "Configs": [{"File": {"Name": "app_conf", "UID": "0", "GID": "0", "Mode": 292}, "ConfigID": "", "ConfigName": "dk_app_conf"}]}, "Resources": {"Limits": {"NanoCPUs": 500000000, "MemoryBytes": 52428800}, "Reservations": {"MemoryBytes": 20971520}}, "RestartPolicy": {"Condition": "on-failure", "Delay": 5000000000, "MaxAttempts": 3, "Window": 120000000000}, "Placement": {"Constraints": ["node.role == manager"]}, "Networks": [{"Target": "dk_back", "Aliases": ["web"]}, {"Target": "dk_front", "Aliases": ["www", "web"]}], "ForceUpdate": 0}, "Mode": {"Replicated": {"Replicas": 2}}, "UpdateConfig": {"Parallelism": 2, "Delay": 10000000000, "MaxFailureRatio": 0.3, "Order": "start-first"}, "RollbackConfig": {"Parallelism": 1, "MaxFailureRatio": 0, "Order": ""}, "EndpointSpec": {"Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 8080, "PublishMode": "ingress"}, {"Protocol": "udp", "TargetPort": 9090, "PublishedPort": 9091, "PublishMode": "host"}]}}"#;

/// docker's body for dk_db (docker 28.2.2).
const DOCKER_DB: &str = r#"{"Name": "dk_db", "Labels": {"com.docker.stack.image": "flotilla-busybox:healthy", "com.docker.stack.namespace": "dk"}, "TaskTemplate": {"ContainerSpec": {"Image": "flotilla-busybox:healthy", "Labels": {"com.docker.stack.namespace": "dk"}, "Args": ["sleep", "3600"], "Privileges": {"CredentialSpec": null, "SELinuxContext": null, "NoNewPrivileges": false}, "DNSConfig": {"Nameservers": ["8.8.8.8"]}, "Sysctls": {"net.core.somaxconn": "1024"}, "CapabilityAdd": ["CAP_NET_ADMIN"], "CapabilityDrop": ["ALL"], "Ulimits": [{"Name": "nofile", "Hard": 2048, "Soft": 1024}, {"Name": "nproc", "Hard": 512, "Soft": 512}]}, "Resources": {}, "RestartPolicy": {"Condition": "any"}, "Placement": {}, "Networks": [{"Target": "dk_back", "Aliases": ["db"]}], "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m"}}, "ForceUpdate": 0}, "Mode": {"Global": {}}, "EndpointSpec": {}}"#;

/// A project directory with the files the stack file names.
/// A project directory with the files the stacks below refer to. It lasts
/// as long as the test's thread (each test runs on its own), then goes.
fn project() -> PathBuf {
    thread_local! {
        static DIRS: std::cell::RefCell<Vec<tempfile::TempDir>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dir = tempfile::Builder::new()
        .prefix("flotilla-stack-test-")
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(path.join("web.env"), "A_FROM_FILE=1\nSHARED=file\n").unwrap();
    std::fs::write(path.join("db_password.txt"), "s3cr3t\n").unwrap();
    std::fs::write(path.join("app.conf"), "listen 80\n").unwrap();
    DIRS.with(|dirs| dirs.borrow_mut().push(dir));
    path
}

fn load(texts: &[&str], env: &[(&str, &str)]) -> Result<Loaded, String> {
    let texts: Vec<(String, String)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("file{i}.yml"), t.to_string()))
        .collect();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_texts(&texts, project(), env)
}

fn convert_stack(loaded: &Loaded, ns: &str) -> convert::Converted {
    let env = loaded.env.clone();
    convert::convert(&Namespace(ns.into()), &loaded.compose, &|k| {
        env.get(k).cloned()
    })
    .unwrap()
}

#[test]
fn realistic_file_converts_exactly_as_docker() {
    // TAG and REPLICAS as a .env would give them.
    let loaded = load(&[STACK], &[("TAG", "latest"), ("REPLICAS", "2")]).unwrap();
    let converted = convert_stack(&loaded, "dk");
    let web: Value = serde_json::from_str(DOCKER_WEB).unwrap();
    let db: Value = serde_json::from_str(DOCKER_DB).unwrap();
    assert_eq!(converted.services["web"], web);
    assert_eq!(converted.services["db"], db);
    assert_eq!(
        loaded.unsupported,
        BTreeMap::from([
            ("db".to_string(), vec!["restart".to_string()]),
            (
                "web".to_string(),
                vec!["build".into(), "container_name".into(), "links".into()]
            ),
        ])
    );
    // Networks, secrets, configs as docker created them.
    assert_eq!(
        converted.networks.keys().collect::<Vec<_>>(),
        ["dk_back", "dk_front"]
    );
    assert_eq!(
        converted.networks["dk_front"],
        json!({"Driver": "overlay", "Scope": "", "IPAM": null, "Internal": false, "Attachable": true,
               "Ingress": false, "ConfigOnly": false, "ConfigFrom": null, "Options": null,
               "Labels": {"com.docker.stack.namespace": "dk", "net": "front"}})
    );
    assert_eq!(
        converted.networks["dk_back"]["Options"],
        json!({"com.docker.network.driver.mtu": "1400"})
    );
    assert_eq!(
        converted.secrets[0].spec,
        json!({"Name": "dk_db_password", "Labels": {"com.docker.stack.namespace": "dk"}, "Data": "czNjcjN0Cg=="})
    );
    assert_eq!(
        converted.configs[0].spec,
        json!({"Name": "dk_app_conf", "Labels": {"com.docker.stack.namespace": "dk"}, "Data": "bGlzdGVuIDgwCg==", "Templating": {"Name": "golang"}})
    );
    // depends_on long form with its condition.
    let deps = convert::dependencies(&loaded.compose);
    assert_eq!(deps["web"], vec![("db".to_string(), Condition::Healthy)]);
    assert_eq!(start_order(&deps).unwrap(), ["db", "web"]);
}

#[test]
fn external_and_named_objects_keep_their_names() {
    let text = "
services:
  app:
    image: busybox
    networks: [outside, mine]
    secrets: [ext, named]
    configs:
      - source: cfg
        target: /etc/cfg
        uid: '33'
        mode: 0440
networks:
  outside:
    external: true
    name: shared-net
  mine:
    name: custom-net
secrets:
  ext:
    external: true
  named:
    name: global_named
    file: ./db_password.txt
configs:
  cfg:
    external:
      name: old-style
";
    let loaded = load(&[text], &[]).unwrap();
    let converted = convert_stack(&loaded, "st");
    assert_eq!(converted.external_networks, ["shared-net"]);
    assert_eq!(
        converted.networks.keys().collect::<Vec<_>>(),
        ["custom-net"]
    );
    assert_eq!(converted.external_secrets, ["ext"]);
    assert_eq!(converted.external_configs, ["old-style"]);
    assert_eq!(converted.secrets[0].name, "global_named");
    let spec = &converted.services["app"];
    assert_eq!(
        spec["TaskTemplate"]["Networks"],
        json!([{"Target": "custom-net", "Aliases": ["app"]}, {"Target": "shared-net", "Aliases": ["app"]}])
    );
    assert_eq!(
        spec["TaskTemplate"]["ContainerSpec"]["Configs"],
        json!([{"File": {"Name": "/etc/cfg", "UID": "33", "GID": "0", "Mode": 288}, "ConfigID": "", "ConfigName": "old-style"}])
    );
    let secrets: Vec<&str> = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SecretName"].as_str().unwrap())
        .collect();
    assert_eq!(secrets, ["ext", "global_named"]);
}

#[test]
fn short_and_long_syntax_and_lists_and_maps() {
    let text = "
services:
  a:
    image: busybox
    command: [echo, hi]
    entrypoint: /bin/sh -c
    ports: ['80', '127.0.0.1:8000-8001:90-91/udp']
    environment: {B: 2, A: 'x y', N: null}
    labels: [k=v, bare]
    volumes: ['/anon', './rel:/rel:rw', 'named:/n:ro,nocopy']
    healthcheck:
      test: curl -f http://localhost
      disable: false
    deploy:
      mode: replicated-job
      replicas: 3
      endpoint_mode: dnsrr
volumes:
  named:
    external: true
";
    let loaded = load(&[text], &[]).unwrap();
    let spec = &convert_stack(&loaded, "s").services["a"];
    let c = &spec["TaskTemplate"]["ContainerSpec"];
    assert_eq!(c["Command"], json!(["/bin/sh", "-c"]));
    assert_eq!(c["Args"], json!(["echo", "hi"]));
    assert_eq!(c["Env"], json!(["A=x y", "B=2", "N"]));
    assert_eq!(
        c["Labels"],
        json!({"k": "v", "bare": "", "com.docker.stack.namespace": "s"})
    );
    assert_eq!(
        c["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "curl -f http://localhost"]})
    );
    let bind = c["Mounts"][1]["Source"].as_str().unwrap().to_string();
    assert!(
        bind.starts_with(&std::env::temp_dir().display().to_string()) && bind.ends_with("/rel")
    );
    assert_eq!(
        c["Mounts"],
        json!([
            {"Type": "volume", "Target": "/anon"},
            {"Type": "bind", "Source": bind, "Target": "/rel"},
            {"Type": "volume", "Source": "named", "Target": "/n", "ReadOnly": true, "VolumeOptions": {"NoCopy": true}},
        ])
    );
    assert_eq!(
        spec["EndpointSpec"],
        json!({"Mode": "dnsrr", "Ports": [
            {"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress"},
            {"Protocol": "udp", "TargetPort": 90, "PublishedPort": 8000, "PublishMode": "ingress"},
            {"Protocol": "udp", "TargetPort": 91, "PublishedPort": 8001, "PublishMode": "ingress"},
        ]})
    );
    assert_eq!(
        spec["Mode"],
        json!({"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}})
    );
}

#[test]
fn interpolation_and_dotenv_variables() {
    let text = "
services:
  a:
    image: 'busybox:${TAG:-1.36}'
    environment:
      - LITERAL=$$HOME
      - FROM_ENV
    deploy:
      replicas: ${N}
";
    let loaded = load(&[text], &[("N", "4"), ("FROM_ENV", "yes")]).unwrap();
    let spec = &convert_stack(&loaded, "s").services["a"];
    assert_eq!(
        spec["TaskTemplate"]["ContainerSpec"]["Image"],
        "busybox:1.36"
    );
    assert_eq!(
        spec["TaskTemplate"]["ContainerSpec"]["Env"],
        json!(["FROM_ENV=yes", "LITERAL=$HOME"])
    );
    assert_eq!(spec["Mode"], json!({"Replicated": {"Replicas": 4}}));
    let err = load(&["services:\n  a:\n    image: ${IMG:?set IMG}\n"], &[])
        .err()
        .unwrap();
    assert_eq!(err, "file0.yml: invalid interpolation format for services.a.image: \"required variable IMG is missing a value: set IMG\"; you may need to escape any $ with another $");
}

#[test]
fn later_files_override_earlier_ones() {
    let base = "
services:
  web:
    image: busybox:1
    command: [a, b]
    environment: [A=1, B=1]
    ports: ['80:80']
    deploy:
      replicas: 1
      placement:
        constraints: [node.role==manager]
";
    let over = "
services:
  web:
    image: busybox:2
    command: [c]
    environment: {B: 2}
    ports: ['80:8080', '81:81']
    deploy:
      replicas: 3
      placement:
        constraints: [node.labels.x==y]
  extra:
    image: busybox
";
    let loaded = load(&[base, over], &[]).unwrap();
    let converted = convert_stack(&loaded, "s");
    let web = &converted.services["web"];
    assert_eq!(web["TaskTemplate"]["ContainerSpec"]["Image"], "busybox:2");
    assert_eq!(web["TaskTemplate"]["ContainerSpec"]["Args"], json!(["c"]));
    assert_eq!(
        web["TaskTemplate"]["ContainerSpec"]["Env"],
        json!(["A=1", "B=2"])
    );
    assert_eq!(web["Mode"], json!({"Replicated": {"Replicas": 3}}));
    assert_eq!(
        web["TaskTemplate"]["Placement"]["Constraints"],
        json!(["node.role==manager", "node.labels.x==y"])
    );
    let ports: Vec<(u64, u64)> = web["EndpointSpec"]["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["PublishedPort"].as_u64().unwrap(),
                p["TargetPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(80, 8080), (81, 81)]);
    assert!(converted.services.contains_key("extra"));
}

#[test]
fn depends_on_order_cycles_and_unknown_services() {
    let deps = |text: &str| convert::dependencies(&load(&[text], &[]).unwrap().compose);
    let ordered = deps(
        "
services:
  web: {image: busybox, depends_on: [api, cache]}
  api:
    image: busybox
    depends_on:
      db: {condition: service_completed_successfully}
  db: {image: busybox}
  cache: {image: busybox}
",
    );
    assert_eq!(
        start_order(&ordered).unwrap(),
        ["cache", "db", "api", "web"]
    );
    assert_eq!(
        ordered["api"],
        vec![("db".to_string(), Condition::Completed)]
    );
    assert_eq!(ordered["web"][0].1, Condition::Started);
    let cyclic = deps(
        "
services:
  a: {image: busybox, depends_on: [b]}
  b: {image: busybox, depends_on: [c]}
  c: {image: busybox, depends_on: [a]}
  d: {image: busybox}
",
    );
    assert_eq!(
        start_order(&cyclic).unwrap_err().to_string(),
        "depends_on: dependency cycle between services: a -> b -> c -> a"
    );
    let unknown = deps("services:\n  a: {image: busybox, depends_on: [nope]}\n");
    assert_eq!(
        start_order(&unknown).unwrap_err().to_string(),
        "services.a.depends_on: undefined service \"nope\""
    );
}

#[test]
fn unsupported_keys_are_one_warning_per_service_forbidden_ones_an_error() {
    let loaded = load(
        &["
services:
  a:
    image: busybox
    build: .
    privileged: true
    devices: ['/dev/fuse:/dev/fuse']
    ports:
      - {target: 80, published: 8080, host_ip: 127.0.0.1, app_protocol: http}
    networks:
      back: {ipv4_address: 10.0.0.9, priority: 10}
    volumes:
      - {type: bind, source: /tmp, target: /t, bind: {create_host_path: true}}
      - {type: tmpfs, target: /s, tmpfs: {mode: 448}}
    deploy:
      resources:
        reservations:
          devices: [{capabilities: [gpu]}]
  b:
    image: busybox
    ports: ['127.0.0.1:8081:81/udp', '8082:82']
    container_name: bee
    links: [a]
    restart: always
    network_mode: host
    security_opt: [no-new-privileges]
    shm_size: 64m
networks:
  back:
"],
        &[],
    )
    .unwrap();
    let keys = |service: &str| loaded.unsupported[service].join(", ");
    assert_eq!(
        keys("a"),
        "build, deploy.resources.reservations.devices, networks.ipv4_address, networks.priority, ports.app_protocol, ports.host_ip, volumes.bind.create_host_path, volumes.tmpfs.mode"
    );
    assert_eq!(
        keys("b"),
        "container_name, links, network_mode, ports.host_ip, restart"
    );
    let err = load(
        &["services:\n  a:\n    image: busybox\n    volumes_from: [b]\n"],
        &[],
    )
    .err()
    .unwrap();
    assert!(err.starts_with(
        "Compose file contains unsupported options:\n\nvolumes_from: To share a volume"
    ));
}

#[test]
fn bad_input_names_the_key_and_line() {
    let err = load(
        &["services:\n  a:\n    image: busybox\n    deploy:\n      replicas: many\n"],
        &[],
    )
    .err()
    .unwrap();
    assert_eq!(
        err,
        "file0.yml: services.a.deploy.replicas: invalid type: string \"many\", expected u64 at line 5 column 17"
    );
    let err = load(
        &["services:\n  a:\n    image: busybox\n    bogus: 1\n"],
        &[],
    )
    .err()
    .unwrap();
    assert!(err.starts_with("file0.yml: services.a: "), "{err}");
    assert!(err.contains("bogus"), "{err}");
    let err = load(&["services:\n  a: [\n"], &[]).err().unwrap();
    assert!(
        err.starts_with("file0.yml: ") && err.contains("line"),
        "{err}"
    );
    let err = load(&["services:\n  a:\n    command: x\n"], &[])
        .err()
        .unwrap();
    assert_eq!(
        err,
        "invalid image reference for service a: no image specified"
    );
    let loaded = load(
        &["services:\n  a:\n    image: busybox\n    networks: [missing]\n"],
        &[],
    )
    .unwrap();
    let env: HashMap<String, String> = HashMap::new();
    let err = convert::convert(&Namespace("s".into()), &loaded.compose, &|k: &str| {
        env.get(k).cloned()
    })
    .unwrap_err();
    assert_eq!(err, "service a: undefined network \"missing\"");
}

fn task(slot: i64, state: &str, created: &str, exit: i64) -> Value {
    json!({"ID": format!("t{slot}{created}"), "Slot": slot, "NodeID": "n1", "CreatedAt": created,
           "DesiredState": "running",
           "Status": {"State": state, "ContainerStatus": {"ExitCode": exit}}})
}

#[test]
fn depends_on_conditions() {
    let service = json!({"Spec": {"Mode": {"Replicated": {"Replicas": 2}}}});
    let running = [task(1, "running", "1", 0), task(2, "running", "1", 0)];
    assert_eq!(
        check_condition(&service, &running, Condition::Healthy),
        Check::Met
    );
    let starting = [task(1, "running", "1", 0), task(2, "starting", "1", 0)];
    assert_eq!(
        check_condition(&service, &starting, Condition::Started),
        Check::Waiting
    );
    // The newest task of a slot counts.
    let replaced = [
        task(1, "running", "1", 0),
        task(2, "failed", "1", 1),
        task(2, "running", "2", 0),
    ];
    assert_eq!(
        check_condition(&service, &replaced, Condition::Started),
        Check::Met
    );
    let one_shot = json!({"Spec": {"Mode": {"Replicated": {"Replicas": 1}},
                          "TaskTemplate": {"RestartPolicy": {"Condition": "none"}}}});
    assert_eq!(
        check_condition(
            &one_shot,
            &[task(1, "complete", "1", 0)],
            Condition::Completed
        ),
        Check::Met
    );
    assert!(matches!(
        check_condition(
            &one_shot,
            &[task(1, "failed", "1", 3)],
            Condition::Completed
        ),
        Check::Failed(_)
    ));
    let zero = json!({"Spec": {"Mode": {"Replicated": {"Replicas": 0}}}});
    assert_eq!(check_condition(&zero, &[], Condition::Healthy), Check::Met);
}

#[test]
fn stack_ls_table() {
    let stacks = [("web10".to_string(), 1), ("web9".to_string(), 3)]
        .into_iter()
        .collect();
    assert_eq!(
        super::render_stacks(stacks, None).unwrap(),
        "NAME      SERVICES\nweb9      3\nweb10     1\n"
    );
    let stacks = [("a".to_string(), 2)].into_iter().collect();
    assert_eq!(
        super::render_stacks(stacks, Some("{{.Name}}: {{.Services}}")).unwrap(),
        "a: 2\n"
    );
}

/// --with-registry-auth: each service's create or update (and the registry
/// query before it) carries X-Registry-Auth for its own image.
#[tokio::test]
async fn deploy_with_registry_auth_sends_each_images_credentials() {
    use crate::testutil::{unquote, FakeDaemon};
    use base64::Engine;

    let dir = project();
    std::fs::write(
        dir.join("stack.yml"),
        "services:\n  app:\n    image: registry.example.com/team/app:1\n  old:\n    image: busybox:1\n",
    )
    .unwrap();
    let config = dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        r#"{"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNz"}, "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"}}}"#,
    )
    .unwrap();
    let env = crate::registry::AuthEnv {
        config_dir: config,
        path: None,
    };
    let existing = r#"[{"ID":"old1","Version":{"Index":4},"Spec":{"Name":"dk_old","Labels":{"com.docker.stack.image":"busybox:0","com.docker.stack.namespace":"dk"},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:0"},"ForceUpdate":2}}}]"#;
    let answers = vec![
        ("/v1.41/info", r#"{"Swarm":{"ControlAvailable":true}}"#),
        ("/v1.41/networks/create", r#"{"Id":"n1"}"#),
        ("/v1.41/networks", "[]"),
        ("/v1.41/services/create", r#"{"ID":"new1"}"#),
        ("/v1.41/services/old1/update", "{}"),
        ("/v1.41/services", existing),
    ];
    let deploy = |auth: bool| super::DeployArgs {
        compose_file: vec![dir.join("stack.yml").display().to_string()],
        with_registry_auth: auth,
        prune: false,
        resolve_image: "always".into(),
        detach: Some(true),
        quiet: false,
        stack: "dk".into(),
    };
    let decode = |value: &str| {
        String::from_utf8(
            base64::engine::general_purpose::URL_SAFE
                .decode(value)
                .unwrap(),
        )
        .unwrap()
    };

    let daemon = FakeDaemon::start(answers.clone());
    super::deploy::run_with(&daemon.client(), deploy(true), true, &env)
        .await
        .unwrap();
    let sent: Vec<(String, Option<String>)> = daemon
        .seen()
        .iter()
        .filter(|s| {
            s.path.contains("/distribution/")
                || s.path.starts_with("/v1.41/services/create")
                || s.path.contains("/update")
        })
        .map(|s| {
            (
                format!("{} {}", s.method, unquote(&s.path)),
                s.header("X-Registry-Auth").map(decode),
            )
        })
        .collect();
    let private = r#"{"username":"user","password":"pass","serveraddress":"registry.example.com"}"#;
    let hub =
        r#"{"username":"hub","password":"hubpw","serveraddress":"https://index.docker.io/v1/"}"#;
    assert_eq!(
        sent,
        [
            (
                "GET /v1.41/distribution/registry.example.com/team/app:1/json".to_string(),
                Some(private.to_string())
            ),
            (
                "POST /v1.41/services/create".to_string(),
                Some(private.to_string())
            ),
            (
                "GET /v1.41/distribution/busybox:1/json".to_string(),
                Some(hub.to_string())
            ),
            (
                "POST /v1.41/services/old1/update?version=4".to_string(),
                Some(hub.to_string())
            ),
        ]
    );

    // Without the flag nothing is sent.
    let daemon = FakeDaemon::start(answers);
    super::deploy::run_with(&daemon.client(), deploy(false), true, &env)
        .await
        .unwrap();
    assert!(daemon
        .seen()
        .iter()
        .all(|s| s.header("X-Registry-Auth").is_none()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn options_docker_ignores_are_converted() {
    let profile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(profile.path(), r#"{ "defaultAction": "SCMP_ACT_ALLOW" }"#).unwrap();
    let text = format!(
        "
services:
  fuse:
    image: busybox
    labels: [mine=1]
    privileged: true
    devices: ['/dev/fuse', '/dev/null:/dev/mydev:rw']
    shm_size: 64m
    init: true
    security_opt:
      - seccomp:{}
      - apparmor=unconfined
      - no-new-privileges:true
      - label=level:s0:c100
    cap_add: [SYS_ADMIN]
    sysctls: [net.ipv4.ip_forward=1]
    ulimits: {{nofile: 4096}}
",
        profile.path().display()
    );
    let loaded = load(&[&text], &[]).unwrap();
    assert!(loaded.unsupported.is_empty(), "{:?}", loaded.unsupported);
    let converted = convert_stack(&loaded, "op");
    let c = &converted.services["fuse"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(
        c["Labels"],
        json!({
            "mine": "1",
            "com.docker.stack.namespace": "op",
            "com.flotilla.privileged": "true",
            "com.flotilla.devices": "/dev/fuse:/dev/fuse:rwm,/dev/null:/dev/mydev:rw",
            "com.flotilla.shm-size": "67108864",
        })
    );
    assert_eq!(
        c["Privileges"],
        json!({
            "CredentialSpec": null,
            "SELinuxContext": {"Level": "s0:c100"},
            "NoNewPrivileges": true,
            "Seccomp": {"Mode": "custom", "Profile": "{\"defaultAction\":\"SCMP_ACT_ALLOW\"}"},
            "AppArmor": {"Mode": "disabled"},
        })
    );
    assert_eq!(c["Init"], true);
    assert_eq!(c["CapabilityAdd"], json!(["CAP_SYS_ADMIN"]));
    assert_eq!(c["Sysctls"], json!({"net.ipv4.ip_forward": "1"}));
    assert_eq!(
        c["Ulimits"],
        json!([{"Name": "nofile", "Hard": 4096, "Soft": 4096}])
    );
    let bad = load(
        &["services:\n  a:\n    image: busybox\n    security_opt: [systempaths=unconfined]\n"],
        &[],
    )
    .unwrap();
    let err = convert::convert(&Namespace("op".into()), &bad.compose, &|_| None).unwrap_err();
    assert!(
        err.starts_with("service a: security_opt: invalid --security-opt"),
        "{err}"
    );
}
