"""The operator console in a real browser (issue 15, point 4): Debian's chromium, headless,
driven by Playwright against the real app and the Twilio simulator.

Two callers reach a bridge whose application answers them; one sends a tone, the other silence.
The console shows each leg soon after its call.initiated, the tone's level meter moves and the
silent one's stays still, the tone's meter falls still once that caller goes silent, another
organization's console sees none of these calls, the record button starts a recording, listening
to the room plays its mix, and the hang-up button ends the call at the simulator; both controls
appear in the audit log. The page's screenshot goes to the test's folder; with
CALLBRIDGE_UPDATE_SCREENSHOT=1 also to docs/console.png, which the README shows (a run of the
suite leaves the tree as it was). In a conference, the Mute and Hold buttons (the conference's
actions) still the participant's meter: the room hears nothing of it.

Playwright never downloads a browser here: it launches /usr/bin/chromium. Without it (or without
Playwright) the test is skipped, except under CI=true, where that is a failure (.ci/run installs
chromium).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, SilenceSource, ToneSource
from tests.platform_client import make_org
from tests.twilio_env import AppHooks, TwilioEnv

pytestmark = pytest.mark.slow_family

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "console.png"
WAIT_MS = 20_000  # generous: a loaded two-core CI machine runs the engine and the browser
NUMBERS = ("+15550016001", "+15550016002")
CALLERS = ("+15557016001", "+15557016002")

try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - the test extras install it
    async_playwright = None  # type: ignore[assignment]


def need_chromium() -> None:
    missing = []
    if async_playwright is None:
        missing.append("the playwright package (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium chromium-driver)")
    if not missing:
        return
    reason = "the console's browser test needs " + " and ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; .ci/run installs chromium")
    pytest.skip(reason)


@pytest.fixture
def env(twilio_env: TwilioEnv) -> TwilioEnv:
    """The app behind the Twilio simulator (the shared ``twilio_env`` of conftest.py)."""
    return twilio_env


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    need_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def signed_in(browser: Browser, base_url: str, token: str) -> Page:
    """A new browser context (its own cookies) signed in to the console with ``token``."""
    context = await browser.new_context(viewport={"width": 1500, "height": 900})
    page = await context.new_page()
    await page.goto(base_url + "/console")
    await page.wait_for_url("**/console/signin", timeout=WAIT_MS)
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console", timeout=WAIT_MS)
    await page.locator("#legs").wait_for(timeout=WAIT_MS)
    return page


# The largest meter value of the leg over the next ``n`` level updates the page shows, and the
# rate (updates per second) they came at.
OVER_UPDATES = """([leg, n]) => new Promise((resolve) => {
  const section = document.getElementById("legs");
  const first = Number(section.dataset.levelUpdates);
  const started = performance.now();
  let highest = 0;
  const observer = new MutationObserver(() => {
    const meter = document.querySelector(`tr[data-leg="${leg}"] meter.level`);
    highest = Math.max(highest, meter ? meter.value : 0);
    const seen = Number(section.dataset.levelUpdates) - first;
    if (seen >= n) {
      observer.disconnect();
      resolve({highest, rate: seen / ((performance.now() - started) / 1000)});
    }
  });
  observer.observe(section, {subtree: true, attributes: true, childList: true});
})"""


def meter_above(threshold: float) -> str:
    return (
        'leg => { const m = document.querySelector(`tr[data-leg="${leg}"] meter.level`);'
        f" return m !== null && m.value > {threshold}; }}"
    )


def meter_at_zero() -> str:
    return (
        'leg => { const m = document.querySelector(`tr[data-leg="${leg}"] meter.level`);'
        " return m !== null && m.value === 0 && m.dataset.dbfs !== ''; }"
    )


async def test_the_console_shows_levels_and_hangs_up_in_chromium(
    env: TwilioEnv, aiohttp_server: Any, browser: Browser, tmp_path: Path
) -> None:
    hooks = await AppHooks.start(aiohttp_server)
    await env.bridge("Support line", NUMBERS, webhook_url=hooks.url)
    other_org = await make_org(env.client, "globex", "Globex")
    page = await signed_in(browser, env.public_url, env.org.token)

    loud = await env.sim.place_inbound_call(CALLERS[0], NUMBERS[0], source=ToneSource(1000))
    leg_loud = (await hooks.next("call.initiated")).leg
    await page.locator(f'tr[data-leg="{leg_loud}"]').wait_for(timeout=WAIT_MS)
    quiet = await env.sim.place_inbound_call(CALLERS[1], NUMBERS[1], source=SilenceSource())
    leg_quiet = (await hooks.next("call.initiated")).leg
    await page.locator(f'tr[data-leg="{leg_quiet}"]').wait_for(timeout=WAIT_MS)

    for leg in (leg_loud, leg_quiet):
        await env.act(leg, "answer")
    await loud.wait_for(CallState.STREAMING)
    await quiet.wait_for(CallState.STREAMING)
    await env.act(leg_loud, "bridge", {"call_control_id": leg_quiet})
    await hooks.next("call.bridged", leg_quiet)

    # The tone (-12 dBFS) fills 80% of the meter; the silent caller's meter stays at zero.
    await page.wait_for_function(meter_above(0.5), arg=leg_loud, timeout=WAIT_MS)
    await page.wait_for_function(meter_at_zero(), arg=leg_quiet, timeout=WAIT_MS)
    still = await page.evaluate(OVER_UPDATES, [leg_quiet, 20])
    assert still["highest"] == 0, still
    assert still["rate"] >= 5, f"level updates at {still['rate']:.1f}/s"
    await page.locator(f'#rooms td:has-text("{leg_loud[:10]}")').wait_for(timeout=WAIT_MS)
    await page.locator('#webhooks li[data-event="call.bridged"]').first.wait_for(timeout=WAIT_MS)
    # A control through the page: recording starts (the leg shows it) and is audited.
    await page.locator(f'tr[data-leg="{leg_loud}"] button.record-start').click()
    await page.locator(f'tr[data-leg="{leg_loud}"] button.record-stop').wait_for(timeout=WAIT_MS)
    await page.locator('#audit li[data-action="record_start"]').wait_for(timeout=WAIT_MS)
    # Listening to the room: its mix (the tone) arrives and is played, chunk after chunk.
    await page.locator("#rooms button.listen").click()
    await page.wait_for_function(
        "() => { const h = document.querySelector('#rooms .heard');"
        " return h !== null && Number(h.dataset.chunks) >= 10 && Number(h.dataset.level) > -20; }",
        timeout=WAIT_MS,
    )
    await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
    if os.environ.get("CALLBRIDGE_UPDATE_SCREENSHOT") == "1":
        await page.screenshot(path=str(DOCS_SCREENSHOT), full_page=True)

    await page.locator("#rooms button.listen").click()  # stop listening
    await page.locator("#rooms .heard").wait_for(state="detached", timeout=WAIT_MS)

    loud.source = SilenceSource()  # the tone stops: its meter falls and stays still
    await page.wait_for_function(meter_at_zero(), arg=leg_loud, timeout=WAIT_MS)
    still = await page.evaluate(OVER_UPDATES, [leg_loud, 10])
    assert still["highest"] == 0, still

    # Another organization's console is live and sees none of these calls.
    other = await signed_in(browser, env.public_url, other_org.token)
    await other.wait_for_function(
        "() => Number(document.getElementById('legs').dataset.levelUpdates) >= 5",
        timeout=WAIT_MS,
    )
    await other.locator("#bridges").get_by_text("No bridges.").wait_for(timeout=WAIT_MS)
    shown = await other.content()
    assert "No live legs." in shown
    assert leg_loud not in shown and leg_quiet not in shown and CALLERS[0] not in shown

    # The hang-up button ends the call at the simulator, and the audit log shows who did it.
    await page.locator(f'tr[data-leg="{leg_loud}"] button.hangup').click()
    await loud.wait_for(CallState.ENDED, timeout_s=WAIT_MS / 1000)
    await page.locator(f'tr[data-leg="{leg_loud}"]').wait_for(state="detached", timeout=WAIT_MS)
    await page.locator('#audit li[data-action="hangup"]').wait_for(timeout=WAIT_MS)
    assert "ok" in await page.locator('#audit li[data-action="hangup"]').inner_text()


async def test_a_muted_participants_meter_stays_still_in_chromium(
    env: TwilioEnv, aiohttp_server: Any, browser: Browser
) -> None:
    hooks = await AppHooks.start(aiohttp_server)
    await env.bridge("Standup", NUMBERS, webhook_url=hooks.url)
    legs = []
    for caller, number, tone in zip(CALLERS, NUMBERS, (1000, 440), strict=True):
        call = await env.sim.place_inbound_call(caller, number, source=ToneSource(tone))
        leg = (await hooks.next("call.initiated")).leg
        await env.act(leg, "answer")
        await call.wait_for(CallState.STREAMING)
        legs.append(leg)
    body = {"call_control_id": legs[0], "name": "standup"}
    status, reply = await env.api("POST", "/v2/conferences", body)
    assert status == 200, reply
    conference = reply["data"]["id"]
    status, reply = await env.api(
        "POST", f"/v2/conferences/{conference}/actions/join", {"call_control_id": legs[1]}
    )
    assert status == 200, reply
    page = await signed_in(browser, env.public_url, env.org.token)
    for leg in legs:  # both speak: both meters move
        await page.wait_for_function(meter_above(0.5), arg=leg, timeout=WAIT_MS)

    await page.locator(f'tr[data-leg="{legs[0]}"] button.mute').click()  # the conference's mute
    await page.wait_for_function(meter_at_zero(), arg=legs[0], timeout=WAIT_MS)
    still = await page.evaluate(OVER_UPDATES, [legs[0], 10])
    assert still["highest"] == 0, still  # the room hears nothing of it: its meter stays still
    moving = await page.evaluate(OVER_UPDATES, [legs[1], 10])
    assert moving["highest"] > 0.5, moving
    await page.locator(f'tr[data-leg="{legs[0]}"] button.unmute').click()
    await page.wait_for_function(meter_above(0.5), arg=legs[0], timeout=WAIT_MS)
    await page.locator('#audit li[data-action="unmute"]').wait_for(timeout=WAIT_MS)
    # Hold: the participant hears its hold audio and the room hears nothing of it.
    await page.locator(f'tr[data-leg="{legs[1]}"] button.hold').click()
    await page.locator(f'tr[data-leg="{legs[1]}"] button.unhold').wait_for(timeout=WAIT_MS)
    await page.wait_for_function(meter_at_zero(), arg=legs[1], timeout=WAIT_MS)
    await page.locator(f'tr[data-leg="{legs[1]}"] button.unhold').click()
    await page.wait_for_function(meter_above(0.5), arg=legs[1], timeout=WAIT_MS)
    await page.locator('#audit li[data-action="unhold"]').wait_for(timeout=WAIT_MS)
