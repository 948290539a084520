"""docker-py (from PyPI) against a Flotilla daemon: the bodies it really
sends for services (lowercase mode keys, `Healthcheck`), read back as
dockerd names them. Run by crates/flotilla/tests/clients.rs with DOCKER_HOST
pointing at the daemon; exits non-zero with the reason on any mismatch."""

import sys

import time
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

# Networks: an overlay network from the swarm's address pool (the test
# inits it with --default-addr-pool 10.20.0.0/16, mask length 26), a
# service attached by the network's name, its VIP there.
net = client.networks.create("pynet", driver="overlay", attachable=True, labels={"tier": "back"})
check("network scope", net.attrs["Scope"], "swarm")
check("network labels", net.attrs["Labels"], {"tier": "back"})
check("network subnet", net.attrs["IPAM"]["Config"][0]["Subnet"], "10.20.0.0/26")
overlays = sorted(n.name for n in client.networks.list(filters={"driver": "overlay"}))
check("overlay networks", overlays, ["ingress", "pynet"])
onnet = client.services.create("busybox", ["sleep", "1000"], name="pynetsvc", networks=["pynet"])
onnet.reload()
check("network target is the ID", onnet.attrs["Spec"]["TaskTemplate"]["Networks"], [{"Target": net.id}])
vips = onnet.attrs["Endpoint"]["VirtualIPs"]
check("a VIP on the network", [(v["NetworkID"], v["Addr"]) for v in vips], [(net.id, "10.20.0.2/26")])
try:
    net.remove()
    check("removing a network in use fails", True, False)
except docker.errors.APIError as e:
    check("in use, named", "in use by service pynetsvc" in str(e), True)

# Secrets and configs: created (a templated config with docker-py's
# lowercase {"name": "golang"}), referenced by ID and name, and given to a
# process task, whose executor says where they are in its environment. The
# task exits 0 only if both files hold what they should.
from docker.types import SecretReference, ConfigReference, RestartPolicy
secret = client.secrets.create(name="pysecret", data=b"py-s3cr3t", labels={"app": "py"})
check("secret listed by name", [s.id for s in client.secrets.list(filters={"name": "pysecret"})], [secret.id])
check("secret data never shown", "Data" in client.api.inspect_secret(secret.id)["Spec"], False)
config = client.configs.create(
    name="pyconf", data=b"svc={{.Service.Name}} pw={{secret \"pw\"}}", templating={"name": "golang"}
)
check("config templating", client.api.inspect_config(config.id)["Spec"]["Templating"], {"Name": "golang"})
reader = client.services.create(
    "busybox",
    ["sh", "-c", 'test "$(cat $FLOTILLA_SECRETS_DIR/pw)" = py-s3cr3t && '
     'test "$(cat $FLOTILLA_TASK_FILES/app.conf)" = "svc=pyreader pw=py-s3cr3t"'],
    name="pyreader",
    secrets=[SecretReference(secret.id, "pysecret", filename="pw", mode=0o400)],
    configs=[ConfigReference(config.id, "pyconf", filename="/app.conf")],
    restart_policy=RestartPolicy(condition="none"),
)
reader.reload()
refs = reader.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
check("secret reference", [(r["SecretID"], r["SecretName"], r["File"]["Name"], r["File"]["Mode"]) for r in refs],
      [(secret.id, "pysecret", "pw", 0o400)])
deadline = time.time() + 30
state = None
while time.time() < deadline:
    states = [t["Status"]["State"] for t in reader.tasks()]
    state = states[0] if states else None
    if state in ("complete", "failed", "rejected"):
        break
    time.sleep(0.2)
check("the task read its files", state, "complete")
try:
    secret.remove()
    check("removing a secret in use fails", True, False)
except docker.errors.APIError as e:
    check("in use, named", "in use by the following service: pyreader" in str(e), True)
reader.remove()
secret.remove()
config.remove()
check("secrets removed", client.secrets.list(), [])

names = sorted(s.name for s in client.services.list())
check("services", names, ["pyagent", "pylow", "pynetsvc", "pyweb"])
for s in client.services.list():
    s.remove()
check("after remove", client.services.list(), [])
net.remove()
check("network removed", [n.name for n in client.networks.list(names=["pynet"])], [])
print("docker-py: ok")
