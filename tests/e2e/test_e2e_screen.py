"""The dock screen in a real headless Chromium, against a real agent and virtual recorders.

One story, one browser: a READY, a CHARGING and a NOT_READY recorder shown with their
reasons in Chinese (the browser's language), switched to English on the page, an offload
followed live, a recorder unplugged, and the pre-shift list. The page is never reloaded
between updates (a marker set in the page survives). Screenshots at 800x480 are saved to
the test's artefacts directory (see `artefacts_dir`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec

from .browser import Browser, chromium_path
from .conftest import RigFactory
from .harness import HANG_GUARD_S, Rig, render_toml

pytestmark = [
    pytest.mark.skipif(chromium_path() is None, reason="chromium not installed"),
    pytest.mark.timeout(420),
]

# Recorder-supplied text that would be markup if the page ever used innerHTML.
HOSTILE_NAME = "<b>Li</b><img src=x>"
OFFICER_A = OfficerRecord("6001001", "Tang Hui", "U06", "Unit 6")
OFFICER_B = OfficerRecord("6001002", HOSTILE_NAME, "U06", "Unit 6")
OFFICER_C = OfficerRecord("6001003", "王芳", "U06", "Unit 6")


def artefacts_dir(tmp_path: Path) -> Path:
    """Screenshots go to $DOCK_TEST_ARTEFACTS/screen when set (e.g. `artefacts`, ignored by
    git; docs/screen.png is board-en.png from there), else to the test's temporary
    directory."""
    base = os.environ.get("DOCK_TEST_ARTEFACTS")
    out = Path(base) / "screen" if base else tmp_path / "artefacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


class Screen:
    """The `dock-screen` process for a rig, on a free loopback port."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> None:
        log = (self.rig.root / "screen.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.screen.cli", "--config", str(self.rig.config),
            "--port", "0", stdout=asyncio.subprocess.PIPE, stderr=log,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        log.close()
        assert self.proc.stdout is not None
        async with asyncio.timeout(HANG_GUARD_S):
            line = await self.proc.stdout.readline()
        m = re.search(rb"serving (http://\S+)", line)
        assert m, f"dock-screen did not start: {line!r}\n{self.log()}"
        self.url = m.group(1).decode()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.rig.root / "screen.log").read_text(errors="replace")
        return ""

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    b = Browser(tmp_path / "chromium")
    try:
        yield b
    finally:
        await b.close()


def card(bay: str, rest: str = "") -> str:
    return f"document.querySelector('.card[data-bay=\"{bay}\"]{rest}')"


def text_of(bay: str) -> str:
    return f"(({card(bay)} || {{}}).innerText || '')"


async def test_screen_shows_the_dock_live(make_rig: RigFactory, browser: Browser,
                                          tmp_path: Path) -> None:
    shots = artefacts_dir(tmp_path)
    # Batteries read every second, so that the CHARGING recorder soon has an ETA.
    # The recorders are wiped after offload: bay 4's slow replies to those per-file deletes
    # keep its offload going for seconds, whatever the machine's speed.
    rig = make_rig(None, offload={"buffer_mib": 1, "buffers": 2, "fdatasync_every_mib": 8,
                                  "wipe_after_offload": True},
                   recorder_cfg={"battery_poll_s": 1.0})
    sections = rig.sections()
    sections["screen"] = {"poll_interval_s": 0.1}  # sees more of a short offload
    rig.config.write_text(render_toml(sections))
    ready = RecorderSpec("BWC70001", officer=OFFICER_A, battery_percent=95,
                         footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=71))
    charging = RecorderSpec("BWC70002", officer=OFFICER_A, battery_percent=30,
                            # a rise every 15 s gives an ETA soon; READY (60 %) only after
                            # 7.5 minutes, so CHARGING holds however slow the machine is
                            charge_percent_per_min=4.0,
                            footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=72))
    failing = RecorderSpec("BWC70003", officer=OFFICER_C, battery_percent=80,
                           faults=Faults(battery_failing=True),
                           footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=73))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    screen = Screen(rig)
    await screen.start()
    try:
        for bay, spec in (("1", ready), ("2", charging), ("3", failing)):
            await rig.plug(bay, spec)
        for spec in (ready, charging, failing):
            await rig.wait_released(spec.serial)

        # -- Chinese, from the browser's Accept-Language (config says "auto")
        await browser.start(accept_language="zh-CN,zh;q=0.9,en;q=0.5")
        await browser.open(screen.url)
        await browser.eval("window.__sameDocument = true")
        await browser.wait_for(
            f"{card('1', '[data-verdict=READY][data-phase=safe]')} !== null && "
            f"{card('2', '[data-verdict=CHARGING]')} !== null && "
            f"{card('3', '[data-verdict=NOT_READY]')} !== null",
            "READY, CHARGING and NOT_READY cards")
        assert "可领用" in await browser.eval(text_of("1"))
        assert "视频已安全保存" in await browser.eval(text_of("1"))
        # Amber with its ETA once the agent has seen the battery rise.
        await browser.wait_for(f"{text_of('2')}.includes('后可用')", "bay 2 charging ETA")
        two = await browser.eval(text_of("2"))
        assert "充电中" in two and re.search(r"约 \d+ (分钟|秒|小时)", two), two
        assert re.search(r"电量不足（\d\d%）", two), two
        three = await browser.eval(text_of("3"))
        assert "不可用" in three and "电池故障" in three and "王芳" in three, three
        header = await browser.eval("document.getElementById('header').innerText")
        assert "dock-e2e" in header and "时钟已同步" in header, header
        await browser.screenshot(shots / "board-zh_CN.png")

        # -- switched to English on the page
        await browser.eval("document.getElementById('lang-en').click()")
        await browser.wait_for(f"document.documentElement.dataset.lang === 'en' && "
                               f"{text_of('1')}.includes('READY')", "English board")
        assert "Footage safe — you may take it" in await browser.eval(text_of("1"))
        assert re.search(r"Battery low \(\d\d%\)", await browser.eval(text_of("2")))
        assert "Fault: battery failure" in await browser.eval(text_of("3"))
        await browser.eval("window.__sameDocument = true")
        await browser.screenshot(shots / "board-en.png")

        # -- a recorder plugged in: its offload followed live, without reloading
        await browser.eval("""(() => {
            window.__progress = [];
            new MutationObserver(() => {
              const c = document.querySelector('.card[data-bay="4"] .progress');
              if (c) window.__progress.push(c.parentElement.innerText);
            }).observe(document.getElementById('main'), {childList: true, subtree: true});
        })()""")
        big = RecorderSpec("BWC70004", officer=OFFICER_B, battery_percent=90,
                           faults=Faults(reply_delay_s=0.3),
                           footage=FootageSpec(count=16, size_bytes=8 * MIB, seed=74))
        await rig.plug("4", big)
        await browser.wait_for("window.__progress.length > 0", "offload progress on bay 4",
                               interval=0.02)
        await browser.screenshot(shots / "board-offloading-en.png")
        await browser.wait_for(f"{card('4', '[data-phase=safe]')} !== null",
                               "bay 4 footage safe", timeout=180)
        # The officer's name is shown as text, never interpreted as markup.
        assert HOSTILE_NAME in await browser.eval(text_of("4"))
        assert await browser.eval(f"{card('4')}.querySelector('b, img') === null")
        seen = await browser.eval("window.__progress")
        # Progress as the officer sees it: percentage, files, rate, time left.
        assert any("Copying footage — do not remove" in t and re.search(r"\b\d{1,2}%", t)
                   and re.search(r"\d+ of 16 files", t) and "/s" in t for t in seen), seen[:5]

        # -- a recorder unplugged: its card goes away
        await rig.unplug("3")
        await browser.wait_for(f"{card('3')} === null", "bay 3 gone")
        assert await browser.eval("window.__sameDocument === true"), "the page was reloaded"

        # -- the supervisors' pre-shift list: best first, one recorder per officer marked
        await browser.open(screen.url + "preshift")
        await browser.wait_for("document.querySelectorAll('tr[data-bay]').length === 3",
                               "pre-shift rows")
        order = await browser.eval("[...document.querySelectorAll('tr[data-bay]')]"
                                   ".map(r => r.querySelector('[data-verdict]').dataset.verdict)")
        assert order == sorted(order, key=["READY", "CHARGING", "NOT_READY"].index), order
        best = await browser.eval(
            "[...document.querySelectorAll('tr.best')].map(r => r.dataset.bay)")
        assert "1" in best and "2" not in best, best
        await browser.screenshot(shots / "preshift-en.png")
    finally:
        await screen.stop()
