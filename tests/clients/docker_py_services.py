"""docker-py (from PyPI) against a Flotilla daemon: the bodies it really
sends for services (lowercase mode keys, `Healthcheck`), read back as
dockerd names them. Run by crates/flotilla/tests/clients.rs with DOCKER_HOST
pointing at the daemon; exits non-zero with the reason on any mismatch."""

import sys

import docker
from docker.types import Healthcheck, ServiceMode, TaskTemplate, ContainerSpec


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


client = docker.from_env()

# ServiceMode('global') is sent as {"global": {}}.
agent = client.services.create(
    "busybox", ["sleep", "1000"], name="pyagent", mode=ServiceMode("global")
)
agent.reload()
check("global mode", list(agent.attrs["Spec"]["Mode"].keys()), ["Global"])

# scale() sends {"replicated": {"Replicas": 5}} with the current spec.
web = client.services.create(
    "busybox",
    ["sleep", "1000"],
    name="pyweb",
    healthcheck=Healthcheck(test=["CMD", "true"], interval=2_000_000_000, retries=3),
)
web.reload()
check("default replicas", web.attrs["Spec"]["Mode"], {"Replicated": {"Replicas": 1}})
check("scale", web.scale(5), {})  # dockerd: ServiceUpdateResponse, Warnings omitted
web.reload()
check("scaled replicas", web.attrs["Spec"]["Mode"]["Replicated"]["Replicas"], 5)
spec = web.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
check("healthcheck as dockerd names it", spec.get("Healthcheck", {}).get("Retries"), 3)
check("no swagger spelling", "HealthCheck" in spec, False)

# A low-level create with a raw TaskTemplate, as stacks' tools build them.
low = client.api.create_service(
    TaskTemplate(ContainerSpec("busybox", command=["sleep", "1000"])),
    name="pylow",
    mode={"replicated": {"replicas": 2}},
)
check("low-level replicas", client.api.inspect_service(low["ID"])["Spec"]["Mode"],
      {"Replicated": {"Replicas": 2}})

names = sorted(s.name for s in client.services.list())
check("services", names, ["pyagent", "pylow", "pyweb"])
for s in client.services.list():
    s.remove()
check("after remove", client.services.list(), [])
print("docker-py: ok")
