"""Operations against real servers: /metrics, the alert webhook, anomaly detection, OTLP span export.

Loopback receivers stand in for the operator's systems (a webhook, an OTLP collector): real HTTP
servers in this process that record what they are sent. The Prometheus rules are checked and unit
tested with the real promtool (Debian package `prometheus`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from support import (
    MCP_HEADERS,
    Server,
    Venv,
    eventually,
    jsonrpc,
    post_mcp_async,
    read_env_file,
    running_server,
    wait_for,
)
from support.perimeter import EventWatch, security_events

pytestmark = pytest.mark.anyio

KEYS = {
    name: f"mcp_ops-{name}-key-0123456789abcdef"
    for name in ("calls", "rate", "steady", "refuse", "calm", "destroy")
}
ADMIN = "mcp_ops-admin-key-0123456789abcdef"
WRONG_KEY = "mcp_wrong-credential-SHOULD-NOT-LEAK-42"
SANDBOX_PYTHON = (
    "/usr/bin/python3" if Path("/usr/bin/python3").exists() else shutil.which("python3") or "python3"
)
SLOW_START = {"timeout": 120}  # the machine may be shared; start-up is not what these tests measure
RULES = Path("monitoring/prometheus-alerts.yml")
SANDBOX_RULES = Path("monitoring/prometheus-alerts-sandbox.yml")  # rendered with the sandbox sample only


def base_env(project: Path, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_API_KEYS": ",".join(KEYS.values()),
        "MCP_ADMIN_API_KEYS": ADMIN,
        "MCP_SECURITY_EVENTS_URL": "memory://",
        "MCP_RATE_LIMIT": "10000/minute",
        "MCP_TRUSTED_PROXIES": "127.0.0.1",  # so a test can speak for other addresses (X-Forwarded-For)
        "MCP_AUTH_FAILURE_THRESHOLD": "3",
        "MCP_SANDBOX_PYTHON": SANDBOX_PYTHON,
        "MCP_SANDBOX_RATE_LIMIT": "1/minute",
        **extra,
    }


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("http_all")


# ---- loopback receivers ----------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server that records the bodies POSTed to it and answers 200."""

    def __init__(self, answer: bytes = b"{}") -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.paths.append(self.path)
                received.headers.append({k.lower(): v for k, v in self.headers.items()})
                received.bodies.append(body)
                self.send_response(200)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


# ---- helpers -----------------------------------------------------------------------------------------


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed with prometheus_client's parser: {(sample name, sorted labels): value}."""
    response = httpx2.get(server.base + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def families(server: Server) -> set[str]:
    """The metric names /metrics declares, sampled yet or not (counters with their _total)."""
    response = httpx2.get(server.base + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(response.text)
    }


async def post(
    http: httpx2.AsyncClient,
    server: Server,
    key: str | None,
    method: str,
    params: dict[str, Any],
    address: str | None = None,
) -> httpx2.Response:
    return await post_mcp_async(http, server, jsonrpc(method, params), key, address)


async def call(
    http: httpx2.AsyncClient,
    server: Server,
    key: str | None,
    tool: str,
    arguments: dict[str, Any] | None = None,
    address: str | None = None,
) -> httpx2.Response:
    return await post(http, server, key, "tools/call", {"name": tool, "arguments": arguments or {}}, address)


def is_error(response: httpx2.Response) -> bool:
    return bool(response.json()["result"]["isError"])


# ---- /metrics -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_server(venv: Venv, project: Path) -> Iterator[Server]:
    with running_server(venv, project, base_env(project), ready_kwargs=SLOW_START) as running:
        yield running


def test_metrics_needs_the_admin_key(metrics_server: Server) -> None:
    watch = EventWatch(metrics_server)
    anonymous = httpx2.get(metrics_server.base + "/metrics", timeout=30)
    assert anonymous.status_code == 401 and "mcp_" not in anonymous.text
    tool_key = httpx2.get(
        metrics_server.base + "/metrics", headers={"Authorization": f"Bearer {KEYS['calls']}"}, timeout=30
    )
    assert tool_key.status_code == 403 and "mcp_" not in tool_key.text
    assert [e["details"]["reason"] for e in watch.new("authentication_failed")] == ["missing_credential"]
    assert [e["details"]["path"] for e in watch.new("authorization_denied")] == ["/metrics"]
    assert (
        "mcp_server_operation_duration_seconds"
        in httpx2.get(
            metrics_server.base + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        ).text
    )


async def test_metrics_count_calls_refusals_and_a_block(metrics_server: Server) -> None:
    before = scrape(metrics_server)
    async with httpx2.AsyncClient(timeout=60) as http:
        for address in ("198.51.100.7", None, None):  # the first from the address blocked below
            assert not is_error(await call(http, metrics_server, KEYS["calls"], "whoami", address=address))
        for name in ("no-such-tool", "another-unknown"):
            assert is_error(await call(http, metrics_server, KEYS["calls"], name))
        assert is_error(await call(http, metrics_server, KEYS["calls"], "add_note", {"text": ""}))
        runs = [
            await call(http, metrics_server, KEYS["calls"], "run_python", {"code": "print(6 * 7)"})
            for _ in "ab"
        ]
        assert "42" in runs[0].json()["result"]["content"][0]["text"]
        assert is_error(runs[1]) and "Rate limit" in runs[1].json()["result"]["content"][0]["text"]
        for _ in range(3):  # MCP_AUTH_FAILURE_THRESHOLD failures block the address
            response = await call(http, metrics_server, WRONG_KEY, "whoami", address="198.51.100.7")
            assert response.status_code == 401
        blocked = await call(http, metrics_server, WRONG_KEY, "whoami", address="198.51.100.7")
        assert blocked.status_code == 429 and blocked.json()["error"] == "client_blocked"
        # A key already used from the blocked address is still served (no lockout of a shared address).
        served = await call(http, metrics_server, KEYS["calls"], "whoami", address="198.51.100.7")
        assert served.status_code == 200 and not is_error(served)
    after = scrape(metrics_server)

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    duration = "mcp_server_operation_duration_seconds_count"
    assert (
        delta(duration, mcp_method_name="tools/call", name="whoami", error_type="") == 4
    )  # 1 from the blocked address
    assert delta(duration, mcp_method_name="tools/call", name="_unknown", error_type="tool_error") == 2
    assert delta(duration, mcp_method_name="tools/call", name="add_note", error_type="tool_error") == 1
    assert delta(duration, mcp_method_name="tools/call", name="run_python", error_type="") == 1
    assert delta(duration, mcp_method_name="tools/call", name="run_python", error_type="tool_error") == 1
    events = "mcp_security_events_total"
    assert delta(events, event="tool_called", severity="low") == 5  # 4 whoami, 1 run_python
    assert delta(events, event="input_validation_failed", severity="medium") == 2  # unknown tools
    assert delta(events, event="input_validation_failed", severity="low") == 1  # empty note
    assert delta(events, event="authentication_failed", severity="medium") == 3  # none checked while blocked
    assert delta(events, event="client_blocked", severity="high") == 1  # the block
    assert delta(events, event="client_blocked", severity="medium") == 1  # the bad key while blocked
    assert delta("mcp_rate_limit_refusals_total", scope="per-tool") == 1
    assert delta("mcp_rate_limit_refusals_total", scope="per-address") == 0  # a block is not a rate limit
    assert delta("mcp_sandbox_runs_total", outcome="ok") == 1
    assert value(after, "mcp_server_operations_in_flight", mcp_method_name="tools/call") == 0
    assert value(after, "mcp_store_up", store="audit") == 1
    assert value(after, "mcp_store_up", store="rate_limit") == 1
    text = json.dumps(sorted(after, key=str))
    for secret in (WRONG_KEY, ADMIN, *KEYS.values()):
        assert secret not in text


async def test_label_values_stay_bounded(metrics_server: Server, project: Path) -> None:
    """1,000 distinct unknown tool names (and unknown methods, prompts, resources) add no series."""
    known = set(json.loads((project / "tools.lock.json").read_text())["tools"])
    warm = scrape(metrics_server)
    semaphore = asyncio.Semaphore(8)

    async def one(http: httpx2.AsyncClient, method: str, params: dict[str, Any]) -> None:
        async with semaphore:
            response = await post(http, metrics_server, KEYS["rate"], method, params)
            assert response.status_code in (200, 400, 404), response.text

    async with httpx2.AsyncClient(timeout=60) as http:
        await asyncio.gather(
            *(one(http, "tools/call", {"name": f"zz-tool-{i}", "arguments": {}}) for i in range(1_000)),
            *(one(http, f"zz/method-{i}", {}) for i in range(50)),
            *(one(http, "prompts/get", {"name": f"zz-prompt-{i}"}) for i in range(50)),
            *(one(http, "resources/read", {"uri": f"zz://resource-{i}"}) for i in range(50)),
        )
    after = scrape(metrics_server)
    names = {dict(labels).get("name") for (_, labels) in after if dict(labels).get("name") is not None}
    methods = {dict(labels)["mcp_method_name"] for (_, labels) in after if "mcp_method_name" in dict(labels)}
    assert "_unknown" in names and "_unknown" in methods
    assert not any(str(label).startswith("zz") for label in names | methods)
    assert names <= known | {"_unknown", "", "about://server", "use_tools_safely"}
    new_series = {key for key in after if key not in warm}
    assert len(new_series) < 150, len(new_series)  # a few methods x buckets, never one per name
    assert len(after) < 2_000


# ---- Prometheus alerting rules ----------------------------------------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    return found


def test_alert_rules_pass_promtool_and_fire(project: Path, tmp_path: Path, metrics_server: Server) -> None:
    files = [str(project / RULES), str(project / SANDBOX_RULES)]
    checked = subprocess.run(
        [promtool(), "check", "rules", *files], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    groups = [group for file in files for group in yaml.safe_load(Path(file).read_text())["groups"]]
    # Every metric a rule reads is one the server exposes (names drift otherwise, and alerts go silent).
    exposed = families(metrics_server) | {"mcp_alerts_total"}  # declared only when a webhook is set
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\b(mcp_[a-z_]+)\b", expr)}
    assert used and used - exposed <= {"mcp_alerts_total"}, used - exposed
    # promtool compares annotations too; the unit test is about when each expression fires.
    bare = {"groups": groups}
    for group in bare["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(bare))
    unit = {
        "rule_files": [str(tmp_path / "rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'mcp_security_events_total{job="mcp",event="client_blocked",'
                        'severity="high"}',
                        "values": "0 1 2 3 4 5 6 7 8 9 10",
                    },
                    {
                        "series": 'mcp_store_up{job="mcp",instance="a",store="audit"}',
                        "values": "1 1 0 0 0 0 0 0 0 0 0",
                    },
                    {"series": 'mcp_store_up{job="mcp",instance="a",store="rate_limit"}', "values": "1x10"},
                    {
                        "series": 'mcp_sandbox_runs_total{job="mcp",outcome="killed"}',
                        "values": "0 2 4 6 8 10 12 14 16 18 20",
                    },
                    {
                        "series": 'mcp_security_events_total{job="mcp",event="anomaly_detected",'
                        'severity="high"}',
                        "values": "0 0 0 0 0 0 0 0 1 1 1",
                    },
                    {
                        "series": 'mcp_alerts_total{job="mcp",result="failed"}',
                        "values": "0 0 0 0 0 0 0 0 0 2 2",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "MCPClientsBlockedRepeatedly",
                        "exp_alerts": [{"exp_labels": {"job": "mcp", "severity": "page"}}],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "MCPAuditStoreUnavailable",
                        "exp_alerts": [{"exp_labels": {"job": "mcp", "instance": "a", "severity": "page"}}],
                    },
                    {"eval_time": "10m", "alertname": "MCPRateLimitStoreUnavailable", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "MCPSandboxFailures",
                        "exp_alerts": [{"exp_labels": {"job": "mcp", "severity": "ticket"}}],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "MCPAnomalyDetected",
                        "exp_alerts": [{"exp_labels": {"job": "mcp", "severity": "ticket"}}],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "MCPAlertWebhookFailing",
                        "exp_alerts": [{"exp_labels": {"job": "mcp", "severity": "ticket"}}],
                    },
                    {"eval_time": "2m", "alertname": "MCPClientsBlockedRepeatedly", "exp_alerts": []},
                ],
            }
        ],
    }
    test_file = tmp_path / "alerts.test.yml"
    test_file.write_text(yaml.safe_dump(unit))
    tested = subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_readme_and_rules_name_no_metric_of_a_sample_not_rendered(rendered: Callable[[str], Path]) -> None:
    """A project without the sandbox sample: no sandbox metric or alert in its README or alert rules."""
    project = rendered("both")  # HTTP, no sample tools
    assert (project / RULES).exists() and not (project / SANDBOX_RULES).exists()
    for text in ((project / "README.md").read_text(), (project / RULES).read_text()):
        assert "mcp_sandbox" not in text and "MCPSandbox" not in text and "sandbox" not in text.lower()


# ---- alerts, anomaly detection, OTLP spans ----------------------------------------------------------------

ANOMALY = {
    "MCP_ANOMALY_WINDOW_SECONDS": "2",
    "MCP_ANOMALY_BASELINE_WINDOWS": "3",
    "MCP_ANOMALY_RATE_FACTOR": "4",
    "MCP_ANOMALY_MIN_CALLS": "10",
    "MCP_ANOMALY_REFUSAL_THRESHOLD": "10",
}


@pytest.fixture(scope="module")
def webhook() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def collector() -> Iterator[Receiver]:
    with Receiver(ExportTraceServiceResponse().SerializeToString()) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def watched_server(venv: Venv, project: Path, webhook: Receiver, collector: Receiver) -> Iterator[Server]:
    env = base_env(
        project,
        MCP_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{webhook.port}/hooks/security",
        MCP_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="acme-ops-test",
        **ANOMALY,
    )
    with running_server(venv, project, env, ready_kwargs=SLOW_START) as running:
        yield running


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"the webhook's shared secret, 32+ b").decode()


def alerts(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(body) for body in receiver.bodies]


async def test_webhook_gets_client_blocked_without_the_credential(
    watched_server: Server, webhook: Receiver
) -> None:
    async with httpx2.AsyncClient(timeout=60) as http:
        for _ in range(3):
            response = await call(http, watched_server, WRONG_KEY, "whoami", address="203.0.113.9")
            assert response.status_code == 401
    with anyio.fail_after(20):  # the client_blocked alert
        blocked = await eventually(
            lambda: [
                a
                for a in alerts(webhook)
                if a["event"] == "client_blocked" and a["identifier"] == "203.0.113.9"
            ]
        )
    assert webhook.paths[0] == "/hooks/security"
    assert blocked[0]["severity"] == "high"
    stored = [e for e in security_events(watched_server) if e["id"] == blocked[0]["id"]]
    assert (
        stored and {k: v for k, v in stored[0].items() if k != "logger"} == blocked[0]
    )  # the event as stored
    everything = b"".join(webhook.bodies).decode()
    for secret in (WRONG_KEY, ADMIN, *KEYS.values()):
        assert secret not in everything
    # Each alert is signed as Standard Webhooks says: the receiver can tell it from a forged one.
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    for headers, body in zip(webhook.headers, webhook.bodies, strict=True):
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert headers["webhook-signature"] == f"v1,{expected}", headers
        assert headers["webhook-id"] == json.loads(body)["id"]
        assert abs(time.time() - int(headers["webhook-timestamp"])) < 120
    # Below the minimum severity (high) nothing is sent: the 401s themselves were medium.
    assert not [a for a in alerts(webhook) if a["event"] == "authentication_failed"]


def test_dead_webhook_changes_nothing_for_clients(venv: Venv, project: Path) -> None:
    # A listener that never answers: every POST to it hangs until MCP_ALERT_TIMEOUT_SECONDS.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    env = base_env(
        project,
        MCP_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{silent.getsockname()[1]}/hook",
        MCP_ALERT_TIMEOUT_SECONDS="0.5",
    )
    try:
        with running_server(venv, project, env, ready_kwargs=SLOW_START) as server:
            headers = {**MCP_HEADERS, "X-Forwarded-For": "192.0.2.44"}
            body = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})
            statuses = []
            for _ in range(4):
                response = httpx2.post(
                    server.url,
                    json=body,
                    headers={**headers, "Authorization": f"Bearer {WRONG_KEY}"},
                    timeout=30,
                )
                statuses.append(response.status_code)
            assert statuses == [401, 401, 401, 429]  # blocked as without a webhook
            # The client had its answer while the alert was still waiting on the webhook.
            pending = scrape(server)
            assert value(pending, "mcp_alerts_total", result="sent") == 0
            assert value(pending, "mcp_alerts_total", result="failed") == 0
            ok = httpx2.post(
                server.url,
                json=body,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {KEYS['calls']}"},
                timeout=30,
            )
            assert ok.status_code == 200 and not ok.json()["result"]["isError"]
            wait_for(
                lambda: value(scrape(server), "mcp_alerts_total", result="failed") >= 1,
                30,
                "the failure count",
            )
            assert "alert webhook failed after 4 attempts" in server.log()
            assert "/hook" not in "\n".join(
                line for line in server.log().splitlines() if "alert webhook" in line
            )
            assert server.process.poll() is None
    finally:
        silent.close()


def anomalies(server: Server, rule: str, key: str) -> list[dict[str, Any]]:
    principal = principal_of(server, key)
    return [
        e
        for e in security_events(server)
        if e["event"] == "anomaly_detected" and e["details"]["rule"] == rule and e["identifier"] == principal
    ]


def principal_of(server: Server, key: str) -> str:
    response = httpx2.post(
        server.url,
        json=jsonrpc("tools/call", {"name": "whoami", "arguments": {}}),
        headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"},
        timeout=30,
    )
    return response.json()["result"]["content"][0]["text"].split("\n")[0].removeprefix("principal: ")


async def steady(
    http: httpx2.AsyncClient,
    server: Server,
    key: str,
    tool: str,
    arguments: dict[str, Any],
    per_window: int,
    windows: int,
) -> None:
    """`per_window` calls in each 2-second anomaly window, evenly spaced."""
    gap = float(ANOMALY["MCP_ANOMALY_WINDOW_SECONDS"]) / per_window
    for _ in range(per_window * windows):
        started = time.monotonic()
        await call(http, server, key, tool, arguments)
        await asyncio.sleep(max(0.0, gap - (time.monotonic() - started)))


async def test_anomaly_rules_fire_on_bursts_and_stay_quiet_when_steady(
    watched_server: Server, webhook: Receiver
) -> None:
    server = watched_server
    async with httpx2.AsyncClient(timeout=60) as http:

        async def rate_burst() -> None:
            await steady(http, server, KEYS["rate"], "whoami", {}, per_window=3, windows=4)
            few_at_once = asyncio.Semaphore(4)  # under MCP_MAX_CALLS_IN_FLIGHT, so every call runs

            async def one() -> None:
                async with few_at_once:
                    assert not is_error(await call(http, server, KEYS["rate"], "whoami"))

            await asyncio.gather(*(one() for _ in range(60)))

        async def refusal_burst() -> None:
            await asyncio.gather(
                *(call(http, server, KEYS["refuse"], "add_note", {"text": ""}) for _ in range(30))
            )

        await asyncio.gather(
            rate_burst(),
            refusal_burst(),
            steady(http, server, KEYS["steady"], "whoami", {}, per_window=3, windows=6),
            steady(http, server, KEYS["calm"], "add_note", {"text": ""}, per_window=3, windows=4),
        )
        destroy = [await call(http, server, KEYS["destroy"], "delete_note", {"note_id": 1}) for _ in "ab"]
        assert all(r.status_code == 200 for r in destroy)
        await call(http, server, KEYS["calm"], "list_notes", {})

    rate = anomalies(server, "call_rate", KEYS["rate"])
    assert len(rate) == 1 and rate[0]["severity"] == "medium", rate
    figures = rate[0]["details"]
    assert figures["calls"] >= 10 and figures["calls"] >= 4 * figures["baseline_per_window"] > 0
    refusals = anomalies(server, "refusal_burst", KEYS["refuse"])
    assert refusals and refusals[0]["severity"] == "high" and refusals[0]["details"]["refusals"] >= 10
    destructive = anomalies(server, "first_destructive_use", KEYS["destroy"])
    assert len(destructive) == 1 and destructive[0]["details"]["first_use_of"] == "delete_note"
    for key in ("steady", "calm"):
        quiet = [
            e
            for e in security_events(server)
            if e["event"] == "anomaly_detected" and e["identifier"] == principal_of(server, KEYS[key])
        ]
        assert quiet == [], quiet
    # High-severity anomalies page like any other serious event.
    with anyio.fail_after(20):  # the refusal_burst alert
        await eventually(lambda: [a for a in alerts(webhook) if a["id"] == refusals[0]["id"]])


def exported_spans(receiver: Receiver) -> list[tuple[str, str, dict[str, str]]]:
    """(name, trace id in hex, attributes) of every span the receiver got."""
    found = []
    for body in list(receiver.bodies):
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    found.append((span.name, span.trace_id.hex(), attributes))
    return found


CLIENT_TRACE = "5eed" * 8  # the trace a client asks to join
TRACEPARENT = f"00-{CLIENT_TRACE}-{'ab' * 8}-01"


async def send_client_text(http: httpx2.AsyncClient, server: Server, key: str) -> None:
    """An unknown method of 20 KB with a password in it, and a call that names a trace to join."""
    method = "x/" + "password=hunter2-MUST-NOT-BE-EXPORTED;" * 520
    await post(http, server, key, method, {})
    params = {"name": "whoami", "arguments": {}, "_meta": {"traceparent": TRACEPARENT}}
    response = await post(http, server, key, "tools/call", params)
    assert response.status_code == 200, response.text


async def test_spans_export_no_client_text_and_join_no_client_trace(
    watched_server: Server, collector: Receiver
) -> None:
    async with httpx2.AsyncClient(timeout=60) as http:
        await send_client_text(http, watched_server, KEYS["calls"])
    with anyio.fail_after(20):  # the spans of both requests
        await eventually(
            lambda: {"_unknown", "tools/call whoami"} <= {name for name, _, _ in exported_spans(collector)}
        )
    unknown = [attributes for name, _, attributes in exported_spans(collector) if name == "_unknown"]
    assert unknown and all(a["mcp.method.name"] == "_unknown" for a in unknown)
    assert b"hunter2" not in b"".join(collector.bodies)
    assert CLIENT_TRACE not in {trace for _, trace, _ in exported_spans(collector)}
    assert all(len(a.get("jsonrpc.request.id", "")) <= 64 for _, _, a in exported_spans(collector))


def test_a_trusted_client_joins_its_trace(venv: Venv, project: Path) -> None:
    """MCP_TRUST_CLIENT_TRACE_CONTEXT=true: the request's span is in the trace its client named."""
    with Receiver(ExportTraceServiceResponse().SerializeToString()) as receiver:
        env = base_env(
            project,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
            OTEL_BSP_SCHEDULE_DELAY="100",
            MCP_TRUST_CLIENT_TRACE_CONTEXT="true",
        )
        with running_server(venv, project, env, ready_kwargs=SLOW_START) as server:

            async def exchange() -> None:
                async with httpx2.AsyncClient(timeout=60) as http:
                    await send_client_text(http, server, KEYS["calls"])
                with anyio.fail_after(20):
                    await eventually(
                        lambda: any(n == "tools/call whoami" for n, _, _ in exported_spans(receiver))
                    )

            anyio.run(exchange)
        joined = [trace for name, trace, _ in exported_spans(receiver) if name == "tools/call whoami"]
        assert joined == [CLIENT_TRACE]
        assert b"hunter2" not in b"".join(receiver.bodies)  # trusted or not, client text stays out


async def test_spans_reach_an_otlp_receiver(watched_server: Server, collector: Receiver) -> None:
    secret_argument = "note-text-THAT-MUST-NOT-BE-EXPORTED"
    async with httpx2.AsyncClient(timeout=60) as http:
        await call(http, watched_server, KEYS["calls"], "whoami")
        await call(http, watched_server, KEYS["calls"], "add_note", {"text": secret_argument})
        await call(http, watched_server, KEYS["calls"], "zz-made-up-tool-name")

    def spans() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        found = []
        for body in list(collector.bodies):
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {a.key: a.value.string_value for a in span.attributes}
                        found.append((span.name, attributes, resource))
        return found

    with anyio.fail_after(20):  # the spans
        await eventually(
            lambda: any(
                name == "tools/call zz-made-up-tool-name" or name == "tools/call _unknown"
                for name, _, _ in spans()
            )
        )
    names = [name for name, _, _ in spans()]
    assert "tools/call whoami" in names and "tools/call add_note" in names
    assert "tools/call _unknown" in names
    whoami = next(attributes for name, attributes, _ in spans() if name == "tools/call whoami")
    assert whoami["mcp.method.name"] == "tools/call" and whoami["gen_ai.tool.name"] == "whoami"
    assert all(resource.get("service.name") == "acme-ops-test" for _, _, resource in spans())
    raw = b"".join(collector.bodies)
    assert secret_argument.encode() not in raw and b"zz-made-up-tool-name" not in raw
    assert set(collector.paths) == {"/v1/traces"}


async def test_the_audit_chain_head_goes_to_the_webhook_as_to_the_log(
    venv: Venv, project: Path, tmp_path: Path
) -> None:
    with Receiver() as receiver:
        env = base_env(
            project,
            MCP_SECURITY_EVENTS_URL=f"sqlite:///{tmp_path / 'events.db'}",
            MCP_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{receiver.port}/hooks/security",
        )
        with running_server(venv, project, env, ready_kwargs=SLOW_START) as server:
            async with httpx2.AsyncClient(timeout=60) as http:
                assert (await call(http, server, KEYS["steady"], "whoami")).status_code == 200
            with anyio.fail_after(20):
                posted = await eventually(
                    lambda: [a for a in alerts(receiver) if a.get("event") == "audit_chain_head"]
                )
        logged = [
            json.loads(line)["audit_chain_head"]
            for line in server.log().splitlines()
            if line.startswith('{"logger":"audit"')
        ]
    assert posted[0]["heads"] == logged[0] and logged[0][0].startswith("events:1:")
    assert len(logged) == 2, "the first event's head, then the head at shutdown"
