"""``mbridge ui`` in a real headless Chromium (Debian's, driven by Selenium through
ChromeDriver): the queues page follows a queue as it fills and drains (its chart drawn by the
vendored uPlot), the workers page lists the live worker, a task is looked up by id, a dead
letter is replayed from the page (POST with its CSRF token); a forged POST and a request
without the token are refused. Screenshots go to test-artifacts/ui/ (or
$BRIDGE_TEST_ARTIFACTS/ui)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.redis import RedisBroker
from bridge.config import Config
from bridge.localredis import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BRIDGE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1280,900")



def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # the page is between two renders
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


class Site:
    """A machinery queue on a private Redis, ``mbridge ui`` on it, and workers to start."""

    def __init__(self, tmp: Path, redis_url: str, *ui_args: str) -> None:
        self.queue = f"ui_{uuid.uuid4().hex[:8]}"
        self.redis_url = redis_url
        self.env = {**os.environ, "BROKER": redis_url, "RESULT_BACKEND": redis_url,
                    "DEFAULT_QUEUE": self.queue, "BRIDGE_TEST_REDIS": redis_url,
                    "BRIDGE_TEST_QUEUE": self.queue, "PYTHONPATH": str(ROOT)}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "ui.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ui = self._spawn(["ui", "--port", str(self.port), "--interval", "0.5", *ui_args])
        _wait(lambda: self._get("/api/queues")[0] in (200, 401), "mbridge ui to listen")
        config = Config(broker=redis_url, result_backend=redis_url, default_queue=self.queue)
        self.app = Bridge(config, broker=RedisBroker(redis_url, config),
                          backend=RedisBackend(redis_url, config))

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", *args], env=self.env,
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def worker(self) -> subprocess.Popen[bytes]:
        return self._spawn(["worker", "-A", "tests.integration.sample_app", "-c", "4",
                            "-n", "ui-worker@test"])

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.app.close()


@pytest.fixture
def site(tmp_path: Path, private_redis_url: str) -> Iterator[Site]:
    running = Site(tmp_path, private_redis_url)
    try:
        yield running
    finally:
        running.close()


def _shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _cell(driver: webdriver.Chrome, queue: str, stat: str) -> str:
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-queue="0-{queue}"]')
    return str(row.find_element(By.CSS_SELECTOR, f'td[data-stat="{stat}"]').text)


def test_queue_fills_and_drains_workers_task_and_dead_letter(site: Site,
                                                             browser: webdriver.Chrome) -> None:
    browser.get(site.url + "/")
    assert _wait(lambda: _cell(browser, site.queue, "waiting") == "0", "an empty queue shown")
    results = [site.app.send_task("sleep_ms", 30) for _ in range(40)]
    _wait(lambda: _cell(browser, site.queue, "waiting") == "40", "the queue filled on the page")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "div.plot canvas"), "the uPlot chart")
    _shot(browser, "queues-filled")
    worker = site.worker()
    _wait(lambda: _cell(browser, site.queue, "waiting") == "0", "the queue drained on the page")
    assert [r.get(timeout=30) for r in results] == [30] * 40
    _shot(browser, "queues-drained")
    legend = browser.find_element(By.CSS_SELECTOR, "div.plot").text
    assert "waiting" in legend and "dead" in legend

    browser.get(site.url + "/workers")
    _wait(lambda: "ui-worker@test" in browser.find_element(By.ID, "workers").text,
          "the worker on the workers page")
    row = browser.find_element(By.CSS_SELECTOR, "#workers tr.alive").text
    assert "alive" in row and site.queue in row and "40 done" in row, row
    _shot(browser, "workers")

    browser.get(site.url + "/task")
    box = browser.find_element(By.NAME, "id")
    box.send_keys(results[0].task_uuid)
    box.submit()
    _wait(lambda: "SUCCESS" in browser.find_element(By.ID, "record").text, "the task's state")
    _shot(browser, "task")

    client = redis.Redis.from_url(site.redis_url)
    client.rpush(site.queue, b"this is not JSON")
    dead_url = f"{site.url}/dead?target=0&queue={site.queue}"
    browser.get(dead_url)
    _wait(lambda: (browser.refresh(), browser.find_element(By.ID, "dead-count").text == "1")[1],
          "the parked message on the dead-letters page")
    assert "undecodable" in browser.find_element(By.ID, "dead").text
    worker.send_signal(signal.SIGTERM)  # a replayed message stays in the queue to be seen
    assert worker.wait(timeout=30) == 0
    _shot(browser, "dead-letter")
    browser.find_element(By.ID, "replay-one").click()
    _wait(lambda: "replayed 1 message(s)" in browser.find_element(By.CLASS_NAME, "done").text,
          "the replay's confirmation")
    assert browser.find_element(By.ID, "dead-count").text == "0"
    assert client.lrange(site.queue, 0, -1) == [b"this is not JSON"]
    _shot(browser, "dead-letter-replayed")

    forged = urllib.request.Request(f"{site.url}/dead/replay", method="POST", data=(
        f"csrf=guess&target=0&queue={site.queue}&count=0").encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=5)
    assert refused.value.code == 403 and client.llen(site.queue) == 1
    client.close()


def test_a_token_is_asked_for(tmp_path: Path, private_redis_url: str,
                              browser: webdriver.Chrome) -> None:
    guarded = Site(tmp_path, private_redis_url, "--token", "s3cret")
    try:
        assert guarded._get("/")[0] == 401 and guarded._get("/api/queues")[0] == 401
        browser.get(guarded.url + "/?token=s3cret")  # sets the cookie, drops the token
        _wait(lambda: _cell(browser, guarded.queue, "waiting") == "0", "the page with the token")
        assert "token" not in browser.current_url
    finally:
        guarded.close()
