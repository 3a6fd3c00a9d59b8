#!/usr/bin/env python3
"""The mesh's deployment rules, checked on rendered manifests (scripts/deploy-check.sh).

    check-k8s.py RENDER_DIR            every RENDER_DIR/*.yaml (kubectl kustomize output)
    check-k8s.py --compose FILE        the output of `docker-compose config`

The schemas say a manifest is well-formed; this says it is what DESIGN.md and issue 12 ask
for: every container limited and locked down (the named exceptions only), probes on the
DESIGN.md ports, every reference resolvable, headless backends, and, where network policies
exist, exactly the caller graph of the mesh. Exit status 1 lists every violation.
"""

import sys
from pathlib import Path

import yaml

# DESIGN.md "Ports and defaults": gRPC and HTTP port of each process.
PORTS = {
    "umcp-gateway": (50051, 8080),
    "umcp-auth": (50052, 9102),
    "umcp-graph": (50053, 9103),
    "umcp-execution": (50054, 9104),
    "umcp-audit": (50055, 9105),
}
UMCP = set(PORTS)
# Who calls whom (DESIGN.md "Resilience" and the clients in the code): the gateway calls every
# service, execution calls graph, everyone calls audit and Redis, the verifiers call auth, graph
# calls Neo4j. Redis nodes talk among themselves; the init Job forms the cluster.
REDIS = ("umcp-redis", 6379)
EXPECTED_EDGES = (
    {("umcp-gateway", s, PORTS[s][0]) for s in UMCP - {"umcp-gateway"}}
    | {("umcp-execution", "umcp-graph", 50053)}
    | {(s, "umcp-audit", 50055) for s in UMCP - {"umcp-audit"}}
    | {(s, "umcp-auth", 50052) for s in UMCP - {"umcp-auth"}}
    | {(s, *REDIS) for s in UMCP}
    | {("umcp-graph", "umcp-neo4j", 7687)}
    | {("umcp-redis", "umcp-redis", 6379), ("umcp-redis", "umcp-redis", 16379)}
    | {("umcp-redis-cluster-init", *REDIS)}
)
# The only departures from non-root / read-only / no capabilities, each explained where it is.
PRIVILEGED = {("umcp-execution", "execution")}  # k8s/base/execution.yaml
WRITABLE_ROOT = {("umcp-neo4j", "neo4j")}  # k8s/components/neo4j/neo4j.yaml
# Secret keys filled at run time, not by the manifests.
RUNTIME_SECRET_KEYS = {("umcp-service-key", "api-key")}  # k8s/base/service-key.yaml
EXTERNAL_CONFIGMAPS = {"kube-root-ca.crt"}  # published by Kubernetes in every namespace
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


class Report:
    def __init__(self, name):
        self.name = name
        self.problems = []

    def check(self, ok, message):
        if not ok:
            self.problems.append(f"{self.name}: {message}")


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def app(obj):
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/name", obj["metadata"]["name"])


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_workload(r, obj, index):
    name = obj["metadata"]["name"]
    spec = pod_spec(obj)
    sa = spec.get("serviceAccountName", "default")
    r.check(sa != "default" and ("ServiceAccount", sa) in index, f"{name}: own ServiceAccount (got {sa})")
    r.check(spec.get("automountServiceAccountToken") is False, f"{name}: automountServiceAccountToken: false")
    pod_sc = spec.get("securityContext", {})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        where = f"{name}/{c['name']}"
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for what in ("cpu", "memory"):
                r.check(what in res.get(kind, {}), f"{where}: resources.{kind}.{what}")
        sc = c.get("securityContext", {})
        key = (name, c["name"])
        if key in PRIVILEGED:
            r.check(sc.get("privileged") is True, f"{where}: listed as the privileged exception but is not")
        else:
            r.check(not sc.get("privileged"), f"{where}: privileged")
            r.check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation: false")
            r.check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities drop ALL")
            r.check(
                sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
                and sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0,
                f"{where}: runs as non-root",
            )
            r.check(not sc.get("capabilities", {}).get("add"), f"{where}: adds capabilities")
        if key not in WRITABLE_ROOT:
            r.check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem: true")
        check_references(r, where, c, spec, index)
    if name in UMCP:
        check_umcp_container(r, name, spec, obj["spec"]["template"]["metadata"].get("annotations", {}))


def check_umcp_container(r, name, spec, annotations):
    grpc, http = PORTS[name]
    c = spec["containers"][0]
    r.check(c.get("command") == [name], f"{name}: first container runs {name}")
    r.check(spec.get("enableServiceLinks") is False, f"{name}: enableServiceLinks: false (UMCP_* variables)")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    r.check(ports == {"grpc": grpc, "http": http}, f"{name}: ports grpc {grpc} and http {http}, got {ports}")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    r.check(env.get("UMCP_LISTEN") == f"0.0.0.0:{grpc}", f"{name}: UMCP_LISTEN 0.0.0.0:{grpc}")
    r.check(env.get("UMCP_HTTP__LISTEN") == f"0.0.0.0:{http}", f"{name}: UMCP_HTTP__LISTEN 0.0.0.0:{http}")
    r.check(annotations.get("prometheus.io/port") == str(http), f"{name}: prometheus.io/port {http}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        r.check(c.get(probe, {}).get("grpc", {}).get("port") == grpc, f"{name}: {probe} is gRPC on {grpc}")


def check_references(r, where, c, spec, index):
    refs = []
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs.append(("Secret", ref["name"], ref["key"]))
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            refs.append(("ConfigMap", ref["name"], ref["key"]))
    for e in c.get("envFrom", []):
        if "configMapRef" in e:
            refs.append(("ConfigMap", e["configMapRef"]["name"], None))
        if "secretRef" in e:
            refs.append(("Secret", e["secretRef"]["name"], None))
    mounted = {m["name"] for m in c.get("volumeMounts", [])}
    for v in spec.get("volumes", []):
        if v["name"] not in mounted:
            continue
        if "secret" in v:
            for item in v["secret"].get("items", [{"key": None}]):
                refs.append(("Secret", v["secret"]["secretName"], item["key"]))
        if "configMap" in v:
            for item in v["configMap"].get("items", [{"key": None}]):
                refs.append(("ConfigMap", v["configMap"]["name"], item["key"]))
        for source in v.get("projected", {}).get("sources", []):
            if "configMap" in source:
                refs.append(("ConfigMap", source["configMap"]["name"], None))
    for kind, name, key in refs:
        if kind == "ConfigMap" and name in EXTERNAL_CONFIGMAPS:
            continue
        obj = index.get((kind, name))
        r.check(obj is not None, f"{where}: {kind} {name} is not in the manifests")
        if obj is not None and key is not None and (name, key) not in RUNTIME_SECRET_KEYS:
            data = {**obj.get("data", {}), **obj.get("stringData", {})}
            r.check(key in data, f"{where}: {kind} {name} has no key {key}")


def check_services(r, objs, index):
    pods = [
        (app(o), pod_spec(o), o["spec"]["template"]["metadata"].get("labels", {}))
        for o in objs
        if o["kind"] in WORKLOADS
    ]
    for svc in (o for o in objs if o["kind"] == "Service"):
        name = svc["metadata"]["name"]
        selected = [(a, spec) for a, spec, labels in pods if matches(svc["spec"].get("selector", {}), labels)]
        r.check(selected, f"Service {name} selects no pods")
        named_ports = {p.get("name") for _, spec in selected for c in spec["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort")
            r.check(not isinstance(target, str) or target in named_ports, f"Service {name}: no container port {target}")
        headless = svc["spec"].get("clusterIP") == "None"
        if name == "umcp-gateway":
            r.check(not headless, "Service umcp-gateway is the entry; it must not be headless")
        elif name in UMCP or name == "umcp-redis":
            r.check(headless, f"Service {name}: headless (clients balance over every pod)")


def policy_peers(rule_peers, objs, namespace_apps):
    """Apps a list of NetworkPolicy peers admits; None means anyone."""
    if not rule_peers:
        return None
    apps = set()
    for peer in rule_peers:
        if "ipBlock" in peer:
            return None
        if "namespaceSelector" in peer:
            ns = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name", "*")
            apps.add(f"namespace:{ns}")
            continue
        selector = peer.get("podSelector", {}).get("matchLabels", {})
        apps |= {a for a, labels in namespace_apps if matches(selector, labels) or not selector}
    return apps


def check_network_policies(r, objs):
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    if not policies:
        return
    namespace_apps = [
        (app(o), o["spec"]["template"]["metadata"].get("labels", {})) for o in objs if o["kind"] in WORKLOADS
    ]
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    r.check(deny, "a default-deny NetworkPolicy (all pods, Ingress and Egress)")
    ingress, egress = {}, {}  # (app, port) -> set of peers (None: anyone)
    for a, labels in namespace_apps:
        for p in policies:
            sel = p["spec"]["podSelector"].get("matchLabels", {})
            if sel and not matches(sel, labels):
                continue
            for rule in p["spec"].get("ingress", []):
                peers = policy_peers(rule.get("from"), objs, namespace_apps)
                for port in rule.get("ports", []):
                    key = (a, port["port"])
                    ingress[key] = (
                        None if peers is None or ingress.get(key, set()) is None else ingress.get(key, set()) | peers
                    )
            for rule in p["spec"].get("egress", []):
                peers = policy_peers(rule.get("to"), objs, namespace_apps)
                for port in rule.get("ports", []):
                    key = (a, port["port"])
                    egress[key] = (
                        None if peers is None or egress.get(key, set()) is None else egress.get(key, set()) | peers
                    )
    open_to_all = {k for k, v in ingress.items() if v is None}
    r.check(
        open_to_all == {("umcp-gateway", 50051), ("umcp-gateway", 8080)},
        f"only the gateway's ports are open to everyone, got {sorted(open_to_all)}",
    )
    apps = {a for a, _ in namespace_apps}
    edges = set()
    for (dst, port), sources in ingress.items():
        for src in apps if sources is None else sources & apps:
            allowed_out = egress.get((src, port))
            if allowed_out is None and (src, port) in egress or allowed_out is not None and dst in allowed_out:
                edges.add((src, dst, port))
    missing = EXPECTED_EDGES - edges
    extra = {e for e in edges - EXPECTED_EDGES if e[0] != e[1] or e[0] == "umcp-redis"}
    r.check(not missing, f"network policies block callers the mesh needs: {sorted(missing)}")
    r.check(not extra, f"network policies admit calls the mesh does not make: {sorted(extra)}")


def check_scaling(r, objs, index):
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = index.get((ref["kind"], ref["name"]))
        r.check(target is not None, f"HPA {hpa['metadata']['name']}: no {ref['kind']} {ref['name']}")
        if target is not None:
            r.check("replicas" not in target["spec"], f"{ref['name']}: spec.replicas fights its HPA")
            r.check(hpa["spec"].get("minReplicas", 1) >= 2, f"HPA {ref['name']}: minReplicas >= 2")
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"].get("minReplicas", 1)
        for o in objs
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    for pdb in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        targets = [
            o
            for o in objs
            if o["kind"] in WORKLOADS - {"Job"} and matches(selector, o["spec"]["template"]["metadata"]["labels"])
        ]
        r.check(len(targets) == 1, f"PDB {pdb['metadata']['name']} selects {len(targets)} workloads")
        for t in targets:
            replicas = scaled.get(t["metadata"]["name"], t["spec"].get("replicas", 1))
            r.check(replicas >= 2, f"PDB {pdb['metadata']['name']}: {t['metadata']['name']} has {replicas} replica(s)")


def check_render(path):
    r = Report(path.stem)
    objs = [o for o in yaml.safe_load_all(path.read_text()) if o]
    index = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    for o in objs:
        if o["kind"] in WORKLOADS:
            check_workload(r, o, index)
    privileged = {
        (o["metadata"]["name"], c["name"])
        for o in objs
        if o["kind"] in WORKLOADS
        for c in pod_spec(o)["containers"]
        if c.get("securityContext", {}).get("privileged")
    }
    r.check(
        privileged <= PRIVILEGED,
        f"privileged containers beyond the execution exception: {sorted(privileged - PRIVILEGED)}",
    )
    r.check(UMCP <= {o["metadata"]["name"] for o in objs if o["kind"] in WORKLOADS}, "all five umcp processes deployed")
    check_services(r, objs, index)
    check_network_policies(r, objs)
    check_scaling(r, objs, index)
    return r.problems, sum(1 for o in objs if o["kind"] in WORKLOADS)


def check_compose(path):
    r = Report("docker-compose")
    services = yaml.safe_load(path.read_text())["services"]
    no_probe_possible = {"jaeger", "otel-collector"}  # images without a shell (see the compose file)
    for name, svc in services.items():
        if svc.get("restart") != "no" and name not in no_probe_possible:
            r.check("test" in svc.get("healthcheck", {}), f"{name}: healthcheck")
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            r.check(host_ip == "127.0.0.1", f"{name}: port {port} not bound to 127.0.0.1")
        if name != "execution":
            r.check(not svc.get("privileged"), f"{name}: privileged")
    for name in ("gateway", "auth", "graph", "execution", "audit", "neo4j", "otel-collector", "jaeger", "prometheus"):
        r.check(name in services, f"service {name}")
    r.check(sum(1 for n in services if n.startswith("redis-") and n[6:].isdigit()) == 6, "six Redis nodes")
    return r.problems, len(services)


def main(argv):
    if len(argv) == 3 and argv[1] == "--compose":
        problems, count = check_compose(Path(argv[2]))
        what = f"{count} compose services"
    elif len(argv) == 2:
        problems, count = [], 0
        for path in sorted(Path(argv[1]).glob("*.yaml")):
            p, n = check_render(path)
            problems += p
            count += n
        what = f"{count} workloads in {argv[1]}"
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"check-k8s: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-k8s: {what} follow the mesh's deployment rules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
