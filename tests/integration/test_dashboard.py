"""The dashboard in a real browser (Debian's Chromium, driven by playwright) against a real
call: SIPp rings the gateway, the application (the official SDK) accepts and transfers, the
carrier's transfer target is busy (NOTIFY "SIP/2.0 486 Busy Here"), the caller hangs up.

The list shows the call while it rings and is answered, then ended, without a reload; the
call page (also open while the call was live) updates itself; clicking the row opens the
page an operator reads: the transfer failed with 486 Busy Here in red, the failing step
marked in the ladder, the SIP messages in order with their full text, and the recording
playing. The overview counts such a call, and a call refused with 503 while it was up, in
its chart, its transfer outcomes and its set-up latency; the list of calls with long URIs
fits a window 1280 px wide. Screenshots go to test-artifacts/ at the repository's root."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.appside import KEY, App, start_app
from tests.integration.browser import ARTIFACTS, CHROMIUM, chromium
from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS

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
def one_call_app(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[App]:
    """A gateway that takes one call at a time: a second one is refused with 503."""
    yield from start_app(start_gateway, tmp_path, transfer_fallback="none", max_calls=1)


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


CALLER = "sip:+15551230000-acme-holdings-worldwide-customer-care-line-0123456789"
CALLEE = "sip:+15559870000-sales-escalations-and-enterprise-support-desk"
HOSTILE = '<img src=x onerror="alert(1)">'


def long_uris(tmp: Path) -> Path:
    """transfer_busy.xml with a caller and a callee far longer than a column."""
    path = tmp / "transfer_busy_long.xml"
    text = (SCENARIOS / "transfer_busy.xml").read_text()
    text = text.replace("carrier <sip:+15551230000@", f'"Acme Holdings" <{CALLER}@')
    path.write_text(text.replace("<sip:+15559870000@", f"<{CALLEE}@"))
    return path


def sipp_port(result: Any) -> int:
    """The port SIPp sent from (its `-p`), as the caller's URI names it."""
    return int(result.command[result.command.index("-p") + 1])


def test_the_overview_and_the_calls_list_at_1280_px(one_call_app: App, browser: Any) -> None:
    app = one_call_app
    base = f"http://127.0.0.1:{app.gateway.http_port}/dashboard"
    expect = sync_api.expect
    context = browser.new_context(http_credentials={"username": "ops", "password": KEY},
                                  viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    overview = context.new_page()
    watch_errors(overview, errors)
    overview.goto(f"{base}/overview")
    expect(overview.locator("#status")).to_contain_text("updated")
    local = overview.locator('#nodes tr[data-node="local"]')
    expect(local).to_have_attribute("data-state", "up")
    expect(local).to_contain_text("(this node)")
    expect(overview.locator("#live-calls")).to_have_text("0")
    expect(overview.locator('#legend [data-kind="refused"] strong')).to_have_text("0")
    expect(overview.locator("#no-transfers")).to_be_visible()
    assert overview.locator("svg.chart rect.bar").count() == 0
    expect(overview.locator("svg.chart text.axis.x")).to_have_count(3)

    listing = context.new_page()
    watch_errors(listing, errors)
    listing.goto(base)
    sipp = app.call(long_uris(app.tmp), timeout=40, recv_timeout=20)
    call_id = app.incoming().data.call_id
    app.client.realtime.calls.accept(call_id, type="realtime")
    row = listing.locator(f'tr[data-id="{call_id}"]')
    expect(row).to_have_attribute("data-state", "active")
    expect(local.locator("td.num").first).to_have_text("1")  # its live calls
    refused = app.call("overloaded_503.xml").result(timeout=30)
    assert refused.ok, refused.describe()
    app.client.realtime.calls.refer(call_id, target_uri="tel:+61420351258")
    result = sipp.result(timeout=60)
    assert result.ok, result.describe()
    expect(row).to_have_attribute("data-state", "ended")
    expect(row.locator(".outcome-badge")).to_have_text("failed 486")

    width = listing.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the calls list scrolls sideways: {width} px"
    wrap = listing.locator(".table-wrap")
    assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth"), "the table scrolls in its box"
    transfer = row.locator("td.transfer-cell")
    expect(transfer).to_be_in_viewport(ratio=1)
    box = transfer.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280, box
    caller = row.locator(".party-text").first
    assert caller.get_attribute("title") == f"{CALLER}@127.0.0.1:{sipp_port(result)}"
    assert caller.evaluate("e => e.scrollWidth > e.clientWidth")  # cut, with an ellipsis
    assert caller.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
    expect(row.locator(".party-text").nth(1)).to_have_attribute(
        "title", re.compile(re.escape(CALLEE) + "@"))
    ARTIFACTS.mkdir(exist_ok=True)
    listing.screenshot(path=str(ARTIFACTS / "dashboard-list-1280.png"), full_page=True)

    # the overview, refreshed on its own: one call answered, one refused, the transfer
    legend = overview.locator("#legend")
    expect(legend.locator('[data-kind="answered"] strong')).to_have_text("1")
    expect(legend.locator('[data-kind="refused"] strong')).to_have_text("1")
    expect(legend.locator('[data-kind="failed"] strong')).to_have_text("0")
    bars = overview.locator("svg.chart rect.bar")
    expect(bars).to_have_count(2)
    expect(overview.locator("svg.chart rect.bar.answered")).to_have_attribute("data-count", "1")
    expect(overview.locator("svg.chart rect.bar.refused")).to_have_attribute("data-count", "1")
    drawn = bars.evaluate_all(
        "rects => rects.map(r => [r.dataset.minute, r.getBBox().y, r.getBBox().height])")
    (minute_a, y_a, h_a), (minute_b, y_b, h_b) = drawn
    plot = 204  # the chart's height less its margins: the tallest minute's
    if minute_a == minute_b:  # stacked: the refused call on top of the answered one
        assert h_a == pytest.approx(plot / 2) and h_b == pytest.approx(plot / 2), drawn
        assert y_b + h_b == pytest.approx(y_a), drawn
    else:
        assert h_a == pytest.approx(plot) and h_b == pytest.approx(plot), drawn
    outcomes = overview.locator("#transfer-outcomes tr")
    expect(outcomes).to_have_count(1)
    expect(outcomes.locator("td")).to_have_text(["blind", "failed", "1"])
    expect(outcomes.locator(".outcome-badge")).to_have_class("outcome-badge tone-bad")
    expect(overview.locator("#no-transfers")).to_be_hidden()
    setup = overview.locator("#setup-figures")
    expect(setup.locator("dt")).to_have_text(["p50", "p95", "p99", "calls"])
    expect(setup.locator("dd").nth(3)).to_have_text("1")
    p50 = setup.locator("dd").first.inner_text()
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", p50), p50
    assert setup.locator("dd").nth(1).inner_text() == p50  # one call: every percentile
    turns = overview.locator("#turn-figures")  # no agent: the application answers
    expect(turns.locator("dt")).to_have_text(["turns"])
    expect(turns.locator("dd")).to_have_text(["0"])
    expect(overview.locator("#live-calls")).to_have_text("0")
    expect(local.locator("td.num").nth(1)).to_have_text("1")  # refused since it started
    assert overview.evaluate("document.documentElement.scrollWidth") <= 1280
    overview.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    # names from elsewhere (a node's, a transfer's mode) are shown as text
    data = context.request.get(f"{base}/api/overview").json()
    data["nodes"][0].update(name=HOSTILE, api_url=HOSTILE, state="<b>up</b>")
    data["transfers"][0]["mode"] = "<b>blind</b>"
    hostile = context.new_page()
    watch_errors(hostile, errors)
    dialogs: list[str] = []

    def dialog(shown: Any) -> None:
        dialogs.append(shown.message)
        shown.dismiss()

    hostile.on("dialog", dialog)
    hostile.route("**/dashboard/api/overview*", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(data)))
    hostile.goto(f"{base}/overview")
    expect(hostile.locator("#nodes .node-name .mono")).to_have_text(HOSTILE)
    expect(hostile.locator("#nodes .api-url")).to_have_text(HOSTILE)
    expect(hostile.locator("#nodes .state")).to_have_text("<b>up</b>")
    expect(hostile.locator("#transfer-outcomes td").first).to_have_text("<b>blind</b>")
    assert hostile.locator("main img, main b").count() == 0
    assert not dialogs and not errors, (dialogs, errors)
    context.close()

