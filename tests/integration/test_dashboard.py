"""The dashboard in a real browser (Debian's Chromium, driven by playwright) against a real
call: SIPp rings the gateway, the application (the official SDK) accepts and transfers, the
carrier's transfer target is busy (NOTIFY "SIP/2.0 486 Busy Here"), the caller hangs up.

The list shows the call while it rings and is answered, then ended, without a reload; the
call page (also open while the call was live) updates itself; clicking the row opens the
page an operator reads: the transfer failed with 486 Busy Here in red, the failing step
marked in the ladder, the SIP messages in order with their full text, and the recording
playing. Screenshots go to test-artifacts/ at the repository's root."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.appside import KEY, App, start_app
from tests.integration.browser import ARTIFACTS, CHROMIUM, chromium
from tests.integration.gateway import Gateway

sync_api = pytest.importorskip("playwright.sync_api")

TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is needed (scripts/setup.sh)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Debian's chromium is needed (scripts/setup.sh installs it)"),
]


@pytest.fixture
def app(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[App]:
    yield from start_app(start_gateway, tmp_path, transfer_fallback="none",
                         recordings=str(tmp_path / "recordings"))


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def watch_errors(page: Any, errors: list[str]) -> None:
    """Script errors and console errors (a CSP violation is one) end up in `errors`."""
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" else None)


def test_an_operator_follows_a_failed_transfer_on_the_dashboard(app: App, browser: Any) -> None:
    base = f"http://127.0.0.1:{app.gateway.http_port}/dashboard"
    expect = sync_api.expect
    context = browser.new_context(http_credentials={"username": "ops", "password": KEY},
                                  viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    listing = context.new_page()
    watch_errors(listing, errors)
    listing.goto(base)
    expect(listing.locator("#status")).to_contain_text("updated")
    expect(listing.locator("#empty")).to_be_visible()
    listing.evaluate("window.notReloaded = true")

    sipp = app.call("transfer_busy.xml", timeout=40, recv_timeout=20)
    call_id = app.incoming().data.call_id
    row = listing.locator(f'tr[data-id="{call_id}"]')
    expect(row).to_have_attribute("data-state", "ringing")
    expect(row).to_have_class("live")
    expect(row.locator(".live-dot")).to_be_visible()
    expect(row).to_contain_text("sip:+15551230000@")

    app.client.realtime.calls.accept(call_id, type="realtime")
    expect(row).to_have_attribute("data-state", "active")
    ARTIFACTS.mkdir(exist_ok=True)
    listing.screenshot(path=str(ARTIFACTS / "dashboard-list-live.png"), full_page=True)
    live = context.new_page()  # the call page, opened while the call is up
    watch_errors(live, errors)
    live.goto(f"{base}/calls/{call_id}")
    expect(live.locator("body")).to_have_attribute("data-live", "1")
    live.evaluate("window.notReloaded = true")

    app.client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    result = sipp.result(timeout=60)
    assert result.ok, result.describe()
    expect(row).to_have_attribute("data-state", "ended")
    expect(row).not_to_have_class("live")
    expect(row.locator(".outcome-badge")).to_have_text("failed 486")
    expect(row.locator(".outcome-badge")).to_have_class("outcome-badge tone-bad")
    expect(row).to_contain_text("remote_bye")
    assert listing.evaluate("window.notReloaded") is True  # updated in place
    expect(live.locator("body")).to_have_attribute("data-live", "0")
    expect(live.locator("#transfer-status")).to_have_text("failed")
    assert live.evaluate("window.notReloaded") is True
    listing.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)

    row.locator("a").click()
    page = listing
    page.wait_for_url(f"{base}/calls/{call_id}")
    expect(page.locator("#call-id")).to_have_text(call_id)
    transfer = page.locator("#transfer")
    expect(page.locator("#transfer-status")).to_have_text("failed")
    expect(page.locator("#transfer-sip")).to_have_text("486 Busy Here")
    expect(transfer).to_contain_text("tel:+61420351258")
    red = "rgb(220, 38, 38)"
    assert page.locator("#transfer-status").evaluate("e => getComputedStyle(e).color") == red

    failing = page.locator(".ladder .step.failing")
    expect(failing).to_have_count(1)
    expect(failing).to_contain_text("transfer failed 486 (Busy Here)")
    expect(failing.locator(".flag")).to_have_text("FAILED")
    assert failing.evaluate("e => getComputedStyle(e.querySelector('.note')).borderColor") == red

    labels = page.locator(".ladder .kind-sip .label").all_inner_texts()
    order = [next(i for i, text in enumerate(labels) if text.startswith(marker))
             for marker in ("INVITE sip:", "SIP/2.0 200 OK", "REFER sip:", "SIP/2.0 202",
                            "NOTIFY sip:", "BYE sip:")]
    assert order == sorted(order), labels
    rows = page.locator(".ladder .step").all_inner_texts()
    notifies = [i for i, text in enumerate(rows) if "NOTIFY sip:" in text]
    failed = next(i for i, text in enumerate(rows) if "transfer failed 486" in text)
    assert len(notifies) == 2 and notifies[0] < failed, rows  # the 486 came in a NOTIFY

    invite = page.locator(".ladder .kind-sip details").first
    expect(invite.locator("pre")).to_be_hidden()
    invite.locator("summary").click()
    expect(invite.locator("pre")).to_be_visible()
    expect(invite.locator("pre")).to_contain_text("X-Account: acme-42")
    refer = page.locator(".ladder .kind-sip details", has_text="REFER sip:")
    refer.locator("summary").click()
    expect(refer.locator("pre")).to_contain_text("Refer-To: <tel:+61420351258>")

    audio = page.locator("#recording audio")
    expect(audio).to_have_count(1)
    page.wait_for_function("document.querySelector('#recording audio').readyState >= 1")
    assert audio.evaluate("a => a.duration") > 0
    head = page.evaluate("""async () => {
        const reply = await fetch(document.querySelector('#recording audio').src);
        const bytes = new Uint8Array(await reply.arrayBuffer());
        return [reply.status, reply.headers.get('content-type'),
                String.fromCharCode(...bytes.slice(0, 4)),
                String.fromCharCode(...bytes.slice(8, 12))];
    }""")
    assert head == [200, "audio/wav", "RIFF", "WAVE"]

    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "dashboard-call.png"), full_page=True)
    assert not errors, errors
    context.close()


def test_the_dashboard_asks_for_the_api_key(app: App, browser: Any) -> None:
    base = f"http://127.0.0.1:{app.gateway.http_port}/dashboard"
    context = browser.new_context()
    reply = context.request.get(base)
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Basic realm="sipbridge"'
    with pytest.raises(sync_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
        context.new_page().goto(base)  # headless: no one to type a password
    context.close()
    context = browser.new_context(http_credentials={"username": "ops", "password": "wrong"})
    page = context.new_page()
    reply = page.goto(base)
    assert reply is not None and reply.status == 401
    assert "Sign in" in page.inner_text("main") and page.locator("#calls").count() == 0
    context.close()
