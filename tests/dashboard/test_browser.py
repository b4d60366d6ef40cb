"""The page in a real browser (Debian's chromium, headless, through chromedriver and selenium):
nodes appear, the done count rises during a send, a killed worker shows as down with its
reason, and hostile text from the network renders as text."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.dashboard.conftest import free_http, start_dashboard, wait_web
from tests.fault.helpers import SLOW_OPS, kill, make_images, wait_for

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromium-driver are not installed"
)

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1200,1100")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def cells(driver: Any, node: str) -> dict[str, str]:
    """The text of node ``node``'s row, by column class ('' if it is not listed)."""
    script = """
        const row = [...document.querySelectorAll('#nodes tbody tr')]
            .find((tr) => tr.dataset.node === arguments[0]);
        if (!row) return {};
        const out = {};
        for (const td of row.cells) out[td.className.split(' ').pop() || td.cellIndex] =
            td.textContent;
        return out;
    """
    return driver.execute_script(script, node)


def done_of(driver: Any, *nodes: str) -> int:
    return sum(int(cells(driver, n).get("done") or 0) for n in nodes)


def injected(driver: Any) -> int:
    """Elements the hostile text would have made, had it been parsed as HTML."""
    return driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length")


@pytest.mark.timeout(240)
def test_the_page_follows_the_cluster_and_shows_hostile_text_as_text(
    procs, cluster, browser, tmp_path
):
    web = start_dashboard(procs, cluster, "--interval", "0.25")
    browser.get(web.base + "/")
    wait_for(lambda: cells(browser, "n1") and cells(browser, "n2"), 30, "both workers listed")
    assert cells(browser, "n1")["state"] == "up"

    # A send with its own page: 100 slow images and a non-image with a hostile name.
    inputs = make_images(tmp_path / "in", 100)
    hostile = tmp_path / "in" / f"{HOSTILE}.png"
    hostile.write_bytes(b"this is not an image")
    http = free_http()
    send = procs.zimg(
        "send",
        "send",
        "--broker",
        cluster,
        "-o",
        str(tmp_path / "out"),
        "--import",
        SLOW_OPS,
        "--job-items",
        "1",
        "--op",
        "threshold",
        "--op",
        "sleepy:ms=120",
        "--dashboard",
        "--http",
        http,
        str(hostile),
        *map(str, inputs),
    )
    # The done count rises while the send runs: seen at two values, both below the total.
    first = wait_for(lambda: done_of(browser, "n1", "n2"), 60, "a first job done")
    wait_for(lambda: done_of(browser, "n1", "n2") > first, 60, "the done count to rise")
    assert send.poll() is None, "the send ended before the page showed it running"
    wait_for(
        lambda: browser.execute_script(
            "return document.querySelectorAll('#chart polyline').length"
        ),
        30,
        "a throughput line in the chart",
    )

    # The sending side's page: thumbnails, and the hostile file name and error as text.
    sending = wait_web(send, f"http://{http}")
    browser.switch_to.new_window("tab")
    browser.get(sending.base + "/")

    def hostile_caption() -> str:
        return browser.execute_script(
            "return [...document.querySelectorAll('figcaption')]"
            ".map((f) => f.textContent).find((t) => t.includes(arguments[0])) || ''",
            HOSTILE,
        )

    caption = wait_for(hostile_caption, 60, "the hostile file's result")
    assert "not an image" in caption
    events = browser.execute_script(
        "return [...document.querySelectorAll('#events li')].map((li) => li.textContent)"
    )
    assert any(HOSTILE in e for e in events)
    wait_for(
        lambda: browser.execute_script("return document.querySelectorAll('figure img').length"),
        60,
        "a thumbnail",
    )
    assert injected(browser) == 0
    browser.save_screenshot(str(tmp_path / "sending.png"))
    browser.switch_to.window(browser.window_handles[0])

    # A worker killed during the send shows as down, with the reason the broker gave.
    kill(procs.started[2][1], 9)  # broker, n1, n2: the third process started is n2
    state = wait_for(
        lambda: (
            "noconnection" in cells(browser, "n2").get("state", "")
            and cells(browser, "n2")["state"]
        ),
        30,
        "n2 shown as down",
    )
    assert state.startswith("down: ")
    assert cells(browser, "n1")["state"] == "up"
    assert send.wait(120) == 1  # the hostile input failed; the rest were done by n1
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    assert injected(browser) == 0
    print("screenshots:", tmp_path)


@pytest.mark.timeout(120)
def test_a_front_door_error_with_markup_renders_as_text(procs, cluster, browser):
    import requests

    web = start_dashboard(procs, cluster, "--interval", "0.25")
    browser.get(web.base + "/")
    reply = requests.post(web.base + f"/v1/process?op={HOSTILE}", data=b"\x89PNG", timeout=30)
    assert reply.status_code == 400
    assert HOSTILE in reply.json()["error"]

    def shown() -> bool:
        texts = browser.execute_script(
            "return [...document.querySelectorAll('#events li .text')].map((s) => s.textContent)"
        )
        return any(HOSTILE in t for t in texts)

    wait_for(shown, 30, "the front door's error on the page")
    assert injected(browser) == 0
    alerts = browser.execute_script("return document.querySelectorAll('#events img').length")
    assert alerts == 0
