//! Overlay networks across nodes, the most common Swarm application: `web`
//! (published 8080), `api` and `db` without published ports, on networks
//! `front` (web, api) and `back` (api, db, internal), spread over a manager
//! and two workers, each a network namespace with its own dockerd. Driven
//! with the docker CLI against Flotilla's socket, as a user would. One
//! cluster for every check: they only add to what runs.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{looked_up, node_line, wait_timed as wait_until, Cluster};

const PREFIX: &str = "ftovl";
const HOSTS: [&str; 3] = ["manager", "worker01", "worker02"];

/// One HTTP GET with busybox nc: the page (a task's hostname), or "".
fn get_script(target: &str) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} 8080 | tail -n 1")
}

/// Whether nc's output is a page: a container's hostname (12 hex digits).
fn is_page(out: &str) -> bool {
    let t = out.trim();
    t.len() == 12 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hostnames_of(c: &Cluster, service: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for host in HOSTS {
        let ps = c.run(&[
            "docker",
            "--prefix",
            PREFIX,
            host,
            "ps",
            "--format",
            "{{.ID}}",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]);
        out.extend(
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    out
}

#[test]
fn slow_overlay_web_api_db_across_nodes() {
    let c = Cluster::up(PREFIX, "10.213.43", 1, 2, "docker");

    c.docker_ok(&["network", "create", "-d", "overlay", "front"]);
    c.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--internal",
        "--subnet",
        "10.99.0.0/24",
        "--opt",
        "com.docker.network.driver.mtu=1400",
        "back",
    ]);
    let ls = c.docker_ok(&[
        "network",
        "ls",
        "--filter",
        "driver=overlay",
        "--format",
        "{{.Name}} {{.Scope}}",
    ]);
    for want in ["front swarm", "back swarm", "ingress swarm"] {
        assert!(ls.contains(want), "{ls}");
    }

    c.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "front",
        "-p",
        "8080:8080",
        "flotilla-hello",
    ]);
    c.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "api",
        "--replicas",
        "3",
        "--network",
        "front",
        "--network",
        "back",
        "flotilla-hello",
    ]);
    c.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "db",
        "--replicas",
        "2",
        "--network",
        "name=back,alias=database",
        "flotilla-hello",
        "sh",
        "-c",
        "udpecho & exec hello-serve",
    ]);
    wait_until(
        Duration::from_secs(90),
        "web 2, api 3, db 2 running",
        || {
            c.running("manager", "web").len() == 2
                && c.running("manager", "api").len() == 3
                && c.running("manager", "db").len() == 2
        },
    );
    let api_nodes: BTreeSet<String> = c
        .running("manager", "api")
        .into_iter()
        .map(|t| t.1)
        .collect();
    assert_eq!(
        api_nodes.len(),
        3,
        "api spread over the nodes: {api_nodes:?}"
    );

    // The attachments, as Docker shows them.
    let vips = c.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Endpoint.VirtualIPs}}",
        "api",
    ]);
    let vips: serde_json::Value = serde_json::from_str(vips.trim()).expect("VirtualIPs");
    assert_eq!(
        vips.as_array().map(Vec::len),
        Some(2),
        "a VIP on front and back: {vips}"
    );
    assert!(vips.to_string().contains("10.99.0."), "{vips}");
    let task = c.docker_ok(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "db",
    ]);
    let task = task.lines().next().expect("a db task");
    let db_addr = c.docker_ok(&[
        "inspect",
        "--format",
        "{{range .NetworksAttachments}}{{.Network.Spec.Name}}={{index .Addresses 0}} {{end}}",
        task,
    ]);
    assert!(db_addr.contains("back=10.99.0."), "{db_addr}");
    let db_addr = db_addr
        .split_whitespace()
        .find_map(|a| a.strip_prefix("back="))
        .and_then(|a| a.split('/').next())
        .expect("db's address")
        .to_string();

    // web reaches api by name from every node; the VIP spreads its
    // connections over all three api tasks, wherever they run.
    let api_tasks = hostnames_of(&c, "api");
    let mut seen = BTreeSet::new();
    for host in HOSTS {
        let Some(web) = c.container_on(host, "web") else {
            continue;
        };
        let (_, text) = c.sh_in(host, &web, "nslookup api");
        assert_eq!(looked_up(&text).len(), 1, "api is one VIP: {text}");
        let (_, text) = c.sh_in(host, &web, "nslookup tasks.api");
        assert_eq!(looked_up(&text).len(), 3, "tasks.api: {text}");
        for _ in 0..15 {
            let (_, page) = c.sh_in(host, &web, &get_script("api"));
            seen.insert(page.trim().to_string());
        }
    }
    assert_eq!(seen, api_tasks, "the VIP reached every api task");

    // api reaches db across nodes, by name and alias, TCP and UDP.
    for host in HOSTS {
        let Some(api) = c.container_on(host, "api") else {
            continue;
        };
        for name in ["db", "database", "tasks.db"] {
            let (_, page) = c.sh_in(host, &api, &get_script(name));
            assert!(is_page(&page), "api on {host} -> {name}: {page}");
        }
        let (ok, echo) = c.sh_in(host, &api, "udpecho -c db 9999 ping");
        assert!(
            ok && echo.trim().ends_with(" ping"),
            "UDP api on {host} -> db: {echo}"
        );
    }

    // dnsrr on a network: the name answers the tasks, each reachable; the
    // MTU option reaches the tasks' interfaces.
    c.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "rr",
        "--replicas",
        "2",
        "--endpoint-mode",
        "dnsrr",
        "--network",
        "back",
        "flotilla-hello",
    ]);
    wait_until(Duration::from_secs(60), "rr running", || {
        c.running("manager", "rr").len() == 2
    });
    let api_host = HOSTS
        .into_iter()
        .find(|h| c.container_on(h, "api").is_some())
        .expect("an api task");
    let api = c.container_on(api_host, "api").expect("api container");
    wait_until(Duration::from_secs(10), "rr's two addresses", || {
        looked_up(&c.sh_in(api_host, &api, "nslookup rr").1).len() == 2
    });
    let (_, page) = c.sh_in(api_host, &api, &get_script("rr"));
    assert!(is_page(&page), "api -> rr: {page}");
    let (_, links) = c.sh_in(api_host, &api, "ip -o link");
    assert_eq!(
        links.matches("mtu 1400").count(),
        1,
        "one interface (back's) with the MTU option: {links}"
    );

    // web can neither resolve db nor reach it at its address.
    let web_host = HOSTS
        .into_iter()
        .find(|h| c.container_on(h, "web").is_some())
        .expect("a web task");
    let web = c.container_on(web_host, "web").expect("web container");
    let (_, text) = c.sh_in(web_host, &web, "nslookup db; nslookup database");
    assert!(
        looked_up(&text).is_empty() && text.contains("NXDOMAIN"),
        "{text}"
    );
    let (_, page) = c.sh_in(web_host, &web, &get_script(&db_addr));
    assert!(!is_page(&page), "web reached db at {db_addr}: {page}");
    // db is on an internal network only: no way out of it.
    let db_host = HOSTS
        .into_iter()
        .find(|h| c.container_on(h, "db").is_some())
        .expect("a db task");
    let db = c.container_on(db_host, "db").expect("db container");
    let manager_addr = c
        .ok(
            "manager",
            &["node", "inspect", "--format", "{{.Status.Addr}}", "manager"],
        )
        .trim()
        .to_string();
    let (_, page) = c.sh_in(db_host, &db, &get_script(&manager_addr));
    assert!(!is_page(&page), "db left its internal network: {page}");

    // Flotilla's CLI prints what the docker CLI prints.
    for args in [
        &["network", "ls"][..],
        &["network", "inspect", "front"][..],
        &["network", "ls", "--filter", "driver=overlay", "-q"][..],
    ] {
        let theirs = c.docker_ok(args);
        let ours = c.ok("manager", args);
        assert_eq!(ours, theirs, "flotilla {args:?}");
    }

    // A used network cannot go.
    let (ok, text) = c.docker(&["network", "rm", "back"]);
    assert!(!ok && text.contains("in use by service"), "{text}");

    // `docker stack deploy`: its networks, its services finding each other
    // by their short names, `stack ps`, and `stack rm` taking it all away.
    let dir = std::env::temp_dir().join(format!("flotilla-stack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("stack dir");
    let compose = dir.join("compose.yml");
    std::fs::write(
        &compose,
        "version: \"3.8\"\nservices:\n  front:\n    image: flotilla-hello:latest\n    networks: [shop]\n  back:\n    image: flotilla-hello:latest\n    networks: [shop]\n    deploy:\n      replicas: 2\nnetworks:\n  shop:\n",
    )
    .expect("compose file");
    let out = c.docker_ok(&[
        "stack",
        "deploy",
        "-c",
        compose.to_str().unwrap_or_default(),
        "shop",
    ]);
    assert!(out.contains("Creating network shop_shop"), "{out}");
    wait_until(Duration::from_secs(60), "the stack running", || {
        c.docker_ok(&["stack", "ps", "shop", "--format", "{{.CurrentState}}"])
            .lines()
            .filter(|l| l.starts_with("Running"))
            .count()
            == 3
    });
    let front_host = HOSTS
        .into_iter()
        .find(|h| c.container_on(h, "shop_front").is_some())
        .expect("a shop_front task");
    let front = c
        .container_on(front_host, "shop_front")
        .expect("front container");
    let (_, page) = c.sh_in(front_host, &front, &get_script("back"));
    assert!(is_page(&page), "front -> back in the stack: {page}");
    c.docker_ok(&["stack", "rm", "shop"]);
    wait_until(Duration::from_secs(30), "the stack's network gone", || {
        !c.docker_ok(&["network", "ls"]).contains("shop_shop")
    });
    let _ = std::fs::remove_dir_all(&dir);

    // A worker with an api task dies: once it is Down, the names answer the
    // surviving and replacement tasks only, and every request succeeds.
    c.host_op("kill", "worker01");
    wait_until(Duration::from_secs(30), "worker01 down", || {
        node_line(&c.ok("manager", &["node", "ls"]), "worker01").contains("Down")
    });
    wait_until(Duration::from_secs(60), "api back to 3 tasks", || {
        let running = c.running("manager", "api");
        running.len() == 3 && running.iter().all(|(_, node)| node != "worker01")
    });
    let web = c
        .container_on("manager", "web")
        .or_else(|| c.container_on("worker02", "web"))
        .expect("a surviving web task");
    let web_host = if c.container_on("manager", "web").is_some() {
        "manager"
    } else {
        "worker02"
    };
    wait_until(
        Duration::from_secs(10),
        "tasks.api on the survivors",
        || looked_up(&c.sh_in(web_host, &web, "nslookup tasks.api").1).len() == 3,
    );
    for _ in 0..12 {
        let (_, page) = c.sh_in(web_host, &web, &get_script("api"));
        assert!(is_page(&page), "api after worker01 died: {page:?}");
    }

    // --network-add replaces web's tasks with ones on back too: now web
    // resolves and reaches db.
    c.docker_ok(&["service", "update", "-d", "--network-add", "back", "web"]);
    wait_until(Duration::from_secs(60), "web's tasks on back", || {
        let running = c.running("manager", "web");
        running.len() == 2
            && running.iter().all(|(id, _)| {
                c.docker(&[
                    "inspect",
                    "--format",
                    "{{range .NetworksAttachments}}{{.Network.Spec.Name}} {{end}}",
                    id,
                ])
                .1
                .contains("back")
            })
    });
    let web_host = HOSTS
        .into_iter()
        .filter(|h| *h != "worker01")
        .find(|h| c.container_on(h, "web").is_some())
        .expect("a web task");
    let web = c.container_on(web_host, "web").expect("web container");
    wait_until(Duration::from_secs(10), "web reaching db", || {
        is_page(&c.sh_in(web_host, &web, &get_script("db")).1)
    });
}
