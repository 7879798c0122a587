from __future__ import annotations

import pytest

from longshot_testing import serviceproxy

pytestmark = pytest.mark.unit


def service(ns, name, ip, *ports):
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}}


def endpoint_slice(ns, svc, ports, *endpoints):
    return {"metadata": {"namespace": ns, "labels": {"kubernetes.io/service-name": svc}}, "addressType": "IPv4",
            "ports": [{"name": n, "port": p} for n, p in ports],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints]}


def test_cluster_ips_go_to_ready_endpoints_at_random_and_get_dns_names():
    rules, hosts = serviceproxy.render(
        [service("sys", "gw", "10.96.0.20", ("http", 8080)), service("default", "kubernetes", "10.96.0.1", ("", 443)),
         service("sys", "headless", "None", ("", 80))],
        [endpoint_slice("sys", "gw", [("http", 9000)], ("10.244.0.5", True), ("10.244.0.6", True),
                        ("10.244.0.7", False))])
    assert hosts == ["10.96.0.20 gw.sys.svc.cluster.local"]
    assert rules == [
        "-A LONGSHOT-SVCPROXY -d 10.96.0.20/32 -p tcp --dport 8080 -m statistic --mode random --probability 0.50000 "
        "-j DNAT --to-destination 10.244.0.5:9000",
        "-A LONGSHOT-SVCPROXY -d 10.96.0.20/32 -p tcp --dport 8080 -j DNAT --to-destination 10.244.0.6:9000",
    ]


def test_a_service_without_ready_endpoints_has_a_name_but_no_route():
    rules, hosts = serviceproxy.render([service("a", "b", "10.96.0.9", ("", 80))],
                                       [endpoint_slice("a", "b", [("", 80)], ("10.244.0.9", False))])
    assert rules == [] and hosts == ["10.96.0.9 b.a.svc.cluster.local"]
