"""POST /v1/process through a real broker and workers, from another process (requests)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import requests

from tests.dashboard.conftest import free_http, start_dashboard
from tests.fault.helpers import report, wait_for
from tests.reference import reference


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def post_in_background(url: str, body: bytes) -> tuple[threading.Thread, list[int]]:
    """POST ``body`` on a thread; its status code lands in the list (-1 if the request failed,
    as when the dashboard is stopped at teardown)."""
    statuses: list[int] = []

    def post() -> None:
        try:
            statuses.append(requests.post(url, data=body, timeout=60).status_code)
        except requests.RequestException:
            statuses.append(-1)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, statuses


@pytest.mark.timeout(120)
def test_an_image_comes_back_processed_by_the_node_the_header_names(procs, cluster):
    web = start_dashboard(procs, cluster)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), np.uint8)
    reply = requests.post(
        web.base + "/v1/process?op=threshold&op=label", data=png(image), timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    node = reply.headers["x-zimg-node"]
    assert node in ("n1", "n2")
    out = cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(out, reference(image, node))


@pytest.mark.timeout(120)
def test_bad_requests_get_json_errors(procs, cluster):
    web = start_dashboard(procs, cluster, "--max-body-mb", "1")
    not_image = requests.post(web.base + "/v1/process", data=b"hello, not an image", timeout=30)
    assert not_image.status_code == 415
    assert "not an image" in not_image.json()["error"]

    big = png(np.zeros((8, 8, 3), np.uint8)) + b"\0" * (2 << 20)
    too_big = requests.post(web.base + "/v1/process", data=big, timeout=30)
    assert too_big.status_code == 413
    assert "larger than" in too_big.json()["error"]

    bad_op = requests.post(
        web.base + "/v1/process?op=threshold:thresh=x", data=png(np.zeros((8, 8, 3), np.uint8))
    )
    assert bad_op.status_code == 400
    assert "bad op" in bad_op.json()["error"]
    events = [e["text"] for e in web.status()["events"]]
    assert any(t.startswith("front door 415") for t in events)
    assert any(t.startswith("front door 413") for t in events)
    assert web.status()["front_door"] == {"requests": 3, "ok": 0, "refused_busy": 0, "failed": 3}


@pytest.mark.timeout(120)
def test_a_full_queue_is_503_with_retry_after(procs, tcp_url):
    procs.broker(tcp_url)  # no worker: the first request waits in the broker's queue
    web = start_dashboard(procs, tcp_url, "--max-pending", "1")
    body = png(np.zeros((8, 8, 3), np.uint8))
    thread, waiting = post_in_background(web.base + "/v1/process", body)
    wait_for(lambda: report(tcp_url)["queued"] == 1, 20, "the first request to be queued")
    second = requests.post(web.base + "/v1/process", data=body, timeout=30)
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert "waiting already" in second.json()["error"]
    assert web.status()["front_door"]["refused_busy"] == 1
    # A worker arrives: the first request is answered after all.
    procs.worker(tcp_url, "late")
    thread.join(30)
    assert waiting == [200]


@pytest.mark.timeout(60)
def test_a_token_is_needed_on_every_request(procs, tcp_url):
    procs.broker(tcp_url)
    web = start_dashboard(procs, tcp_url, "--token", "s3cret", "--no-front-door")
    assert web.get("/api/status").status_code == 401
    assert web.get("/static/dashboard.js").status_code == 401
    assert web.get("/api/status?token=wrong").status_code == 401
    assert web.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = web.get("/?token=s3cret")
    assert page.status_code == 200
    # the page's own requests carry the token as a cookie
    assert web.get("/static/dashboard.js", cookies=page.cookies).status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_a_non_loopback_http_needs_a_token_or_insecure(procs, tcp_url):
    proc = procs.zimg("dashboard", "dashboard", "--broker", tcp_url, "--http", "0.0.0.0:1")
    assert proc.wait(30) == 2
    assert "--token" in procs.output()


@pytest.mark.timeout(60)
def test_live_views_are_bounded_and_refusals_counted(procs, tcp_url):
    from zimg.dashboard import Dashboard

    procs.broker(tcp_url)
    http = free_http()
    dash = Dashboard(tcp_url, http, interval_s=0.2, max_clients=1)
    with dash.running():
        base = f"http://{http}"
        with requests.get(base + "/events", stream=True, timeout=10) as live:
            assert live.status_code == 200
            lines = live.iter_lines()  # kept: a dropped iterator closes the connection
            assert next(lines).startswith(b"data: {")
            refused = requests.get(base + "/events", timeout=10)
            assert refused.status_code == 503
            assert requests.get(base + "/api/status", timeout=10).json()["live"] == {
                "clients": 1,
                "refused": 1,
            }


@pytest.mark.parametrize("command", ["send", "run"])
def test_send_and_run_refuse_a_non_loopback_dashboard_without_a_token(command, samples):
    from typer.testing import CliRunner

    from zimg.cli import app

    args = [command, str(samples / "coins.png"), "--dashboard", "--http", "192.0.2.1:8080"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--token" in result.output


@pytest.mark.timeout(120)
def test_a_broker_too_full_to_take_the_job_is_503(procs, tcp_url):
    procs.broker(tcp_url, "--max-client-jobs-mb", "1")  # no worker: jobs stay in the broker
    web = start_dashboard(procs, tcp_url)
    noise = np.random.default_rng(2).integers(0, 256, (400, 500, 3), np.uint8)
    body = png(noise)  # about 600 KB: one fits under the broker's 1 MiB per client, two do not
    assert 500_000 < len(body) < 1 << 20
    post_in_background(web.base + "/v1/process", body)
    wait_for(lambda: report(tcp_url)["queued"] == 1, 20, "the first request to be queued")
    second = requests.post(web.base + "/v1/process", data=body, timeout=30)
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert "queue is full" in second.json()["error"]
    huge = png(np.random.default_rng(3).integers(0, 256, (800, 700, 3), np.uint8))
    assert len(huge) > 1 << 20  # over the broker's cap for one client: never taken
    refused = requests.post(web.base + "/v1/process", data=huge, timeout=30)
    assert refused.status_code == 413
    assert "bytes of jobs per client" in refused.json()["error"]


@pytest.mark.timeout(120)
def test_the_dashboard_starts_before_its_broker(procs, tcp_url):
    web = start_dashboard(procs, tcp_url, "--interval", "0.25")
    wait_for(lambda: web.status()["broker"]["reachable"] is False, 20, "the broker missing")
    body = png(np.zeros((8, 8, 3), np.uint8))
    early = requests.post(web.base + "/v1/process", data=body, timeout=30)
    assert early.status_code == 503
    assert "has not joined" in early.json()["error"]
    procs.broker(tcp_url)
    procs.worker(tcp_url, "n1")
    wait_for(
        lambda: requests.post(web.base + "/v1/process", data=body, timeout=30).status_code == 200,
        30,
        "the front door to join",
        every_s=0.2,
    )
    events = [e["text"] for e in web.status()["events"]]
    assert "the broker answers again" in events
