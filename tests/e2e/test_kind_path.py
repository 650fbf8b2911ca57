"""The kind path (hack/kind/, manifests/tikv/) as far as this machine goes: kind itself cannot
start here (no image can be pulled; docs in /work/shared/notes/kind.md), but its manifests can
meet the real API server. The TiKV manifests pass its server-side dry run as written, and, created
in a namespace of the test's own (kwok nodes run the pods: no container starts, pingcap's images
are never pulled), the example Campaign's selector picks exactly the TiKV pods they make and its
pdURL names their PD Service as the operator's lookup judges it. About 30 s."""

from __future__ import annotations

import yaml

from aftershock import endpoints, model
from tests.e2e import testbed

TIKV = testbed.REPO / "manifests" / "tikv"
EXAMPLE = testbed.REPO / "manifests" / "examples" / "campaign.yaml"


def test_tikv_manifests_pass_the_api_servers_dry_run_and_match_the_example_campaign(
    cluster: testbed.Cluster, namespace: str
) -> None:
    objs = [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(TIKV)).stdout) if d]
    # As written, into namespace tikv: the namespace first (a dry run creates nothing, so the
    # namespaced objects are judged against a namespace that exists: ours, renamed below).
    (ns,) = [o for o in objs if o["kind"] == "Namespace"]
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input_=yaml.safe_dump(ns))
    assert "(server dry run)" in out.stdout
    namespaced = [o for o in objs if o["kind"] != "Namespace"]
    for o in namespaced:
        assert o["metadata"]["namespace"] == "tikv"
        o["metadata"]["namespace"] = namespace
    text = yaml.safe_dump_all(namespaced)
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input_=text)
    assert out.stdout.count("(server dry run)") == len(namespaced), out.stdout

    # Created for real (kwok runs the pods), what the example Campaign selects and names.
    cluster.kubectl("apply", "-f", "-", input_=text)
    (example,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    spec = model.parse_campaign_spec(example["spec"])
    selector = spec.subject.selector.to_query()

    def selected() -> list[str] | None:
        pods = cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]
        names = sorted(p["metadata"]["name"] for p in pods)
        return names if len(names) == 3 else None

    assert testbed.wait_for(selected, 120, what="the TiKV StatefulSet's pods") == [
        "tikv-0",
        "tikv-1",
        "tikv-2",
    ]
    everything = cluster.get_json("pods", "-n", namespace)["items"]
    assert {p["metadata"]["name"] for p in everything} - {"tikv-0", "tikv-1", "tikv-2"} == {"pd-0"}
    # pdURL: the Service the operator reads before connecting, judged as it judges it.
    assert spec.subject.pd_url is not None
    services: dict[str, endpoints.ServiceInfo | None] = {}
    for name in endpoints.service_names(spec.subject.pd_url, namespace):
        got = cluster.kubectl("get", "service", name.service, "-n", namespace, "-o", "json", check=False)
        if got.returncode == 0:
            svc = yaml.safe_load(got.stdout)["spec"]
            services[name.service] = endpoints.ServiceInfo(
                type=svc.get("type", "ClusterIP"), headless=svc.get("clusterIP") == "None"
            )
        else:
            services[name.service] = None
    url = endpoints.resolve_service_name(spec.subject.pd_url, namespace, services)
    assert url == f"http://pd.{namespace}.svc:2379"
    pd_svc = cluster.get_json("service", "pd", "-n", namespace)
    assert 2379 in [p["port"] for p in pd_svc["spec"]["ports"]]
    pd_pods = cluster.get_json(
        "pods", "-n", namespace, "-l", ",".join(f"{k}={v}" for k, v in pd_svc["spec"]["selector"].items())
    )
    assert [p["metadata"]["name"] for p in pd_pods["items"]] == ["pd-0"]
