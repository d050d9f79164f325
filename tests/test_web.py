"""`streamctl web` on a real plant, seen in a real headless Chromium: candles appear and move for a
live symbol, the process table lists every process, and a killed worker is shown restarting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from _browser import chromium
from _common import free_port, wait_until
from plant_helpers import PlantCli, demo_config

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def plant(tmp_path):
    cli = PlantCli(tmp_path)
    try:
        yield cli
    finally:
        cli.cleanup()


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def _rows(driver) -> dict[str, dict[str, str]]:
    """The process table as rendered: name -> the row's state, restarts and text."""
    return driver.execute_script("""
        const out = {};
        for (const tr of document.querySelectorAll('#processes tbody tr'))
          out[tr.dataset.name] = {state: tr.dataset.state, restarts: tr.dataset.restarts, text: tr.innerText,
                                  marked: tr.classList.contains('restarted')};
        return out;""")


def test_web_view_shows_live_candles_every_process_and_a_restart(plant, tmp_path):
    name, web_port = f"web{os.getpid() % 100000}", free_port()
    config = plant.write_config(name, demo_config(name, free_port(), rate=100))
    plant.run("up", str(config), "--detach", check=True)
    web = subprocess.Popen([sys.executable, "-m", "streamctl.cli", "web", "--name", name, "--listen",
                            f"127.0.0.1:{web_port}"], env=plant.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{web_port}"
        wait_until(lambda: _serving(url + "/static/vendor/lightweight-charts.standalone.production.js"), 60,
                   "the web view to serve the chart library")
        with chromium(tmp_path) as driver:
            driver.get(url + "/?symbol=AAPL&interval=1s")
            chart = driver.find_element("id", "chart")
            wait_until(lambda: int(chart.get_attribute("data-candles") or 0) >= 2, 60, "candles of AAPL")
            assert driver.find_elements("css selector", "#chart canvas"), "the chart library drew no canvas"
            first = int(chart.get_attribute("data-last-time"))
            wait_until(lambda: int(chart.get_attribute("data-last-time")) > first, 30, "a later AAPL candle")
            wait_until(lambda: driver.find_elements("css selector", "#trades tbody tr"), 30, "AAPL trades")

            rows = wait_until(lambda: (r := _rows(driver)) and set(r) == {"hub", "worker-0", "worker-1", "sim"}
                              and all(v["state"] == "ready" for v in r.values()) and r, 30, "every process ready")
            assert all(v["restarts"] == "0" for v in rows.values())

            pid = plant.process(name, "worker-0")["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: _rows(driver).get("worker-0", {}).get("restarts") == "1", 60,
                       "worker-0 shown restarted")
            # The reason stays on the row after the new worker writes its own detail (its journal restore).
            row = wait_until(lambda: (r := _rows(driver)["worker-0"]) and "last restart: killed by SIGKILL" in r["text"]
                             and r, 30, "worker-0's row to say why it restarted")
            assert row["marked"], row
            wait_until(lambda: "worker-0 killed by SIGKILL" in driver.find_element("id", "events").text, 30,
                       "the restart event")
            # Candles keep coming from the restarted plant.
            shown = int(chart.get_attribute("data-last-time"))
            wait_until(lambda: int(chart.get_attribute("data-last-time")) > shown, 30, "candles after the restart")

            shot = tmp_path / "web-view.png"
            driver.save_screenshot(str(shot))
            print(f"screenshot: {shot}")
            assert shot.stat().st_size > 10_000
    finally:
        web.terminate()
        out, _ = web.communicate(timeout=20)
    assert web.returncode in (0, -signal.SIGTERM), out.decode(errors="replace")


def test_web_refuses_a_remote_listen_address_without_allow_remote(plant):
    proc = plant.run("web", "--endpoint", "tcp://127.0.0.1:1", "--listen", "0.0.0.0:8765")
    assert proc.returncode == 2
    assert "`--listen` must be a loopback address" in proc.stderr and "--allow-remote" in proc.stderr


def test_up_with_web_serves_the_page_and_down_stops_it(plant):
    name, web_port = f"upw{os.getpid() % 100000}", free_port()
    config = plant.write_config(name, demo_config(name, free_port(), rate=20, partitions=1))
    plant.run("up", str(config), "--detach", "--web", f"127.0.0.1:{web_port}", check=True)
    url = f"http://127.0.0.1:{web_port}/"
    wait_until(lambda: _serving(url), 60, "the web view of `up --web`")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert "static/vendor/lightweight-charts.standalone.production.js" in resp.read().decode()
    plant.run("down", "--name", name, check=True)
    assert not _serving(url)
