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


def diff(name, docker, flotilla, allow):
    d, f = dict(flatten(docker)), dict(flatten(flotilla))
    out = []
    for p in sorted(set(d) | set(f)):
        if any(re.fullmatch(a, p) for a in allow):
            continue
        if p not in f:
            out.append(f"  {name}: only dockerd has {p} = {json.dumps(d[p])}")
        elif p not in d:
            out.append(f"  {name}: only Flotilla has {p} = {json.dumps(f[p])}")
        elif d[p] != f[p]:
            out.append(f"  {name}: {p}: dockerd {json.dumps(d[p])}, Flotilla {json.dumps(f[p])}")
    return out


def cli(host, args):
    r = subprocess.run(["docker", "-H", host, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"docker -H {host} {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def wait_running(host, sid, want):
    deadline = time.time() + 60
    while time.time() < deadline:
        tasks = get(host, f'/tasks?filters={{"service":["{sid}"]}}')
        running = [t for t in tasks if t.get("Status", {}).get("State") == "running"]
        if len(running) >= want:
            return
        time.sleep(0.5)
    raise SystemExit(f"{host}: service {sid} has not {want} running tasks after 60 s")


def cases(image):
    """(name, docker CLI args after `service create`, tasks to wait for)."""
    return [
        ("minimal", [image, "sleep", "1000"], 1),
        ("replicas-env-labels", ["--replicas", "2", "--env", "A=1", "--label", "l=v",
                                 "--container-label", "c=d", image, "sleep", "1000"], 2),
        ("published-port", ["--publish", "8080:8080", image.replace("busybox", "hello")
                            if "busybox" in image else image], 1),
        ("host-port", ["--publish", "mode=host,target=80,published=18080", image,
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
        ("constraints", ["--constraint", "node.role==manager", "--placement-pref",
                         "spread=node.labels.zone", "--replicas-max-per-node", "2",
                         image, "sleep", "1000"], 1),
        ("workdir-user-stop", ["--workdir", "/tmp", "--user", "0", "--stop-signal",
                               "SIGINT", "--stop-grace-period", "3s", "--hostname",
                               "h1", "--init", image, "sleep", "1000"], 1),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docker", required=True)
    ap.add_argument("--flotilla", required=True)
    ap.add_argument("--image", default="flotilla-busybox:latest")
    ap.add_argument("--allow", action="append", default=[],
                    help="a regex of paths whose difference is expected")
    ap.add_argument("--keep", action="store_true", help="leave the services")
    a = ap.parse_args()

    problems = []
    created = []
    for name, args, want in cases(a.image):
        ids = {}
        for side, host in (("docker", a.docker), ("flotilla", a.flotilla)):
            ids[side] = cli(host, ["service", "create", "-d", "-q", "--name", name, *args])
            created.append((host, ids[side]))
        for side, host in (("docker", a.docker), ("flotilla", a.flotilla)):
            wait_running(host, ids[side], want)
        svc = {s: normalize(get(h, f"/services/{ids[s]}"))
               for s, h in (("docker", a.docker), ("flotilla", a.flotilla))}
        problems += diff(f"{name} service", svc["docker"], svc["flotilla"], a.allow)
        tasks = {}
        for s, h in (("docker", a.docker), ("flotilla", a.flotilla)):
            ts = get(h, f'/tasks?filters={{"service":["{ids[s]}"]}}')
            ts.sort(key=lambda t: (t.get("Slot", 0), t.get("Status", {}).get("State", "")))
            tasks[s] = normalize(ts[:1])
        problems += diff(f"{name} task", tasks["docker"], tasks["flotilla"], a.allow)

    if not a.keep:
        for host, sid in created:
            cli(host, ["service", "rm", sid])
    print("\n".join(problems) if problems else "no difference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
