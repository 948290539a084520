#!/usr/bin/env python3
"""Creates the same services on a Docker Swarm manager and on Flotilla, with
the clients people use (the docker CLI, docker-py when installed), and
prints every difference between what the two daemons answer to
`GET /services/{id}` and `GET /tasks?filters=service` for them.

    compare_dockerd.py --docker unix:///path/docker.sock \\
                       --flotilla unix:///path/flotilla.sock [--image IMG]

Both daemons must be swarm managers with no services yet. IDs, times,
version indexes and addresses are replaced by placeholders before
comparing, so what remains is shape and meaning: a key one side has and
the other lacks, a default one side fills in, a value spelled otherwise.
Exits 1 if anything differs (after --allow'ed paths), 0 if not.

scripts/compare-dockerd.sh runs it in a one-host namespace cluster whose
dockerd is put in swarm mode beside Flotilla.
"""

import argparse
import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse

ID = re.compile(r"^[a-z0-9]{25}$")
HEXID = re.compile(r"^[0-9a-f]{64}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def get(host, path):
    conn = UnixConnection(host.removeprefix("unix://"))
    conn.request("GET", "/v1.41" + path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit(f"GET {path} on {host}: {resp.status} {body!r}")
    return json.loads(body)


# Differences known and accounted for: printed, but they do not fail a run.
KNOWN = [
    (r".*NetworksAttachments.*", "networks come with issue 11"),
    (r"Endpoint\.VirtualIPs\[\d+\]\.NetworkID", "the ingress network gets an ID with issue 11"),
    (r"\[0\]\.Status\.PortStatus\.Ports\[[1-9]\d*\]\..*",
     "dockerd also lists each host port's IPv6 twin binding; Flotilla reports a port once"),
]


def normalize(value, key=""):
    """Placeholders for what differs by nature between two daemons."""
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v, key) for v in value]
    if isinstance(value, str):
        if ID.match(value) or HEXID.match(value):
            return "<id>"
        if TIME.match(value):
            return "<time>"
        if key in ("Addr", "Address", "ContainerID", "Hostname", "Name") and value:
            return f"<{key.lower()}>"
    if key in ("Index", "PID", "PublishedPort") and isinstance(value, int):
        return "<n>"
    return value


def flatten(value, path=""):
    if isinstance(value, dict):
        if not value:
            yield path, {}
        for k, v in value.items():
            yield from flatten(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        if not value:
            yield path, []
        for i, v in enumerate(value):
            yield from flatten(v, f"{path}[{i}]")
    else:
        yield path, value


def diff(name, docker, flotilla, allow, known):
    d, f = dict(flatten(docker)), dict(flatten(flotilla))
    out = []
    for p in sorted(set(d) | set(f)):
        if any(re.fullmatch(a, p) for a in allow):
            continue
        if p not in f:
            line = f"  {name}: only dockerd has {p} = {json.dumps(d[p])}"
        elif p not in d:
            line = f"  {name}: only Flotilla has {p} = {json.dumps(f[p])}"
        elif d[p] != f[p]:
            line = f"  {name}: {p}: dockerd {json.dumps(d[p])}, Flotilla {json.dumps(f[p])}"
        else:
            continue
        why = next((w for k, w in KNOWN if re.fullmatch(k, p)), None)
        if why:
            known.setdefault(why, []).append(line)
        else:
            out.append(line)
    return out


def cli(host, args):
    r = subprocess.run(["docker", "-H", host, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"docker -H {host} {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def tasks_path(sid):
    return "/tasks?filters=" + urllib.parse.quote(json.dumps({"service": [sid]}))


def wait_running(host, sid, want):
    deadline = time.time() + 60
    while time.time() < deadline:
        tasks = get(host, tasks_path(sid))
        running = [t for t in tasks if t.get("Status", {}).get("State") == "running"]
        if len(running) >= want:
            return
        time.sleep(0.5)
    raise SystemExit(f"{host}: service {sid} has not {want} running tasks after 60 s")


def wait_update(host, name, state):
    deadline = time.time() + 90
    while time.time() < deadline:
        svc = get(host, f"/services/{name}")
        if svc.get("UpdateStatus", {}).get("State") == state:
            return svc
        time.sleep(0.5)
    raise SystemExit(f"{host}: service {name}'s update is not {state} after 90 s")


def cases(image, side):
    """(name, docker CLI args after `service create`, tasks to wait for).
    Both daemons share one host, so published ports differ by `side`."""
    return [
        ("minimal", [image, "sleep", "1000"], 1),
        ("replicas-env-labels", ["--replicas", "2", "--env", "A=1", "--label", "l=v",
                                 "--container-label", "c=d", image, "sleep", "1000"], 2),
        ("published-port", ["--publish", f"{8080 + side}:8080", image.replace("busybox", "hello")
                            if "busybox" in image else image], 1),
        ("host-port", ["--publish", f"mode=host,target=80,published={18080 + side}", image,
                       "sleep", "1000"], 1),
        ("global", ["--mode", "global", image, "sleep", "1000"], 1),
        ("update-config", ["--update-parallelism", "2", "--update-delay", "10s",
                           "--update-failure-action", "rollback", "--update-order",
                           "start-first", "--rollback-parallelism", "3", image,
                           "sleep", "1000"], 1),
        ("restart-resources", ["--restart-condition", "on-failure", "--restart-delay",
                               "3s", "--restart-max-attempts", "4", "--limit-cpu", "0.5",
                               "--reserve-memory", "16M", image, "sleep", "1000"], 1),
        ("healthcheck", ["--health-cmd", "true", "--health-interval", "1s",
                         "--health-retries", "2", image, "sleep", "1000"], 1),
        ("constraints", ["--constraint", "node.role==manager",
                         "--replicas-max-per-node", "2",
                         image, "sleep", "1000"], 1),
        ("workdir-user-stop", ["--workdir", "/tmp", "--user", "0", "--stop-signal",
                               "SIGINT", "--stop-grace-period", "3s", "--hostname",
                               "h1", "--init", image, "sleep", "1000"], 1),
    ]


def py_cases(image, side):
    """(name, docker-py services.create keyword arguments, tasks to wait
    for): the bodies docker-py sends, which differ from the CLI's (no
    EndpointSpec, lowercase mode keys). Published ports differ by `side`."""
    import docker.types as t
    return [
        ("py-replicated", dict(image=image, command=["sleep", "1000"],
                               mode=t.ServiceMode("replicated", replicas=2),
                               env=["A=1"], labels={"l": "v"}), 2),
        ("py-global", dict(image=image, command=["sleep", "1000"],
                           mode=t.ServiceMode("global")), 1),
        ("py-ports-restart", dict(image=image, command=["sleep", "1000"],
                                  endpoint_spec=t.EndpointSpec(ports={18090 + side: 80}),
                                  restart_policy=t.RestartPolicy("on-failure", 2_000_000_000, 3)),
         1),
    ]


def py_create(host, name, kwargs):
    import docker
    client = docker.DockerClient(base_url=host, version="1.41")
    return client.services.create(name=name, **kwargs).id


def first_running_task(host, sid):
    """The first slot's running task (an earlier try may have failed)."""
    ts = get(host, tasks_path(sid))
    ts.sort(key=lambda t: (t.get("DesiredState") != "running", t.get("Slot", 0),
                           t.get("Status", {}).get("State") != "running"))
    return ts[:1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docker", required=True)
    ap.add_argument("--flotilla", required=True)
    ap.add_argument("--image", default="flotilla-busybox:latest")
    ap.add_argument("--allow", action="append", default=[],
                    help="a regex of paths whose difference is expected")
    ap.add_argument("--keep", action="store_true", help="leave the services")
    a = ap.parse_args()

    sides = (("docker", a.docker), ("flotilla", a.flotilla))
    problems = []
    known = {}
    created = []

    def compare(name, create, want, with_task):
        """Creates service `name` on each side (`create(side index, host)`
        gives its ID), waits for `want` running tasks, and compares the
        service and, `with_task`, its first running task."""
        ids = {}
        for n, (side, host) in enumerate(sides):
            ids[side] = create(n, host)
            created.append((host, ids[side]))
        for side, host in sides:
            wait_running(host, ids[side], want)
        svc = {s: normalize(get(h, f"/services/{ids[s]}")) for s, h in sides}
        out = diff(f"{name} service", svc["docker"], svc["flotilla"], a.allow, known)
        if with_task:
            task = {s: normalize(first_running_task(h, ids[s])) for s, h in sides}
            out += diff(f"{name} task", task["docker"], task["flotilla"], a.allow, known)
        return out

    for i, (name, _, want) in enumerate(cases(a.image, 0)):
        def create(n, host, i=i, name=name):
            args = cases(a.image, n)[i][1]
            return cli(host, ["service", "create", "-d", "-q", "--name", name, *args])
        problems += compare(name, create, want, with_task=True)

    # An update, then a rollback: PreviousSpec and UpdateStatus as each
    # daemon shows them once the update has completed.
    for name, args, state in (("update", ["--env-add", "B=2", "--update-delay", "0s"],
                               "completed"),
                              ("rollback", ["--rollback"], "rollback_completed")):
        for side, host in sides:
            cli(host, ["service", "update", "-d", *args, "replicas-env-labels"])
        svc = {s: normalize(wait_update(h, "replicas-env-labels", state)) for s, h in sides}
        problems += diff(f"after {name}", svc["docker"], svc["flotilla"], a.allow, known)

    try:
        import docker  # noqa: F401
        with_py = True
    except ImportError:
        print("docker-py is not installed: its bodies were not compared", file=sys.stderr)
        with_py = False
    for i, (name, _, want) in enumerate(py_cases(a.image, 0) if with_py else []):
        def create(n, host, i=i, name=name):
            return py_create(host, name, py_cases(a.image, n)[i][1])
        problems += compare(name, create, want, with_task=False)

    if not a.keep:
        for host, sid in created:
            cli(host, ["service", "rm", sid])
    for why, lines in known.items():
        print(f"known, {why}: {len(lines)} difference(s), e.g.\n{lines[0]}")
    print("\n".join(problems) if problems else "no other difference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
