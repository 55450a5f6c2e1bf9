"""Alerts sent out by the notifier (services/notify) through apprise, to a real SMTP server
on loopback (aiosmtpd), and kept for ``ibfleet status`` by the bus broker's alert log.

Real processes (the broker, the notifier), alerts published on the real bus; every wait is a
condition with a generous deadline."""
from __future__ import annotations

import pytest

from proto.schema import Alert, Heartbeat
from services.bus import snapshot
from services.bus.broker import ALERT_LOG_SIZE, alert_count
from services.bus.loadgen import wait_until_routed
from services.bus.publisher import Publisher
from services.bus.subscriber import Subscriber
from tests.support.fleet import Fleet
from tests.support.processes import free_port, wait_for
from tests.support.smtp import MailSink, text_of


@pytest.fixture
def smtp():
    sink = MailSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def alerting(procs, tmp_path):
    """``start(notify_section)``: the broker and the notifier with that ``[notify]``; returns
    the fleet and a publisher the test sends alerts with (as the operator)."""
    fleets: list[Fleet] = []

    def start(notify: dict | None) -> tuple[Fleet, Publisher]:
        fleet = Fleet(procs, tmp_path, extra_config={"notify": notify} if notify else None)
        fleets.append(fleet)
        fleet.start_broker()
        if notify:
            fleet.notifier = fleet._svc("notify", "notify")
            fleet.wait_heartbeats({"bus.1", "notify.1"})
        pub = Publisher(fleet.ctx, fleet.config.bus.endpoint("bus-in"), "test.1")
        assert wait_until_routed(fleet.ctx, pub, fleet.config.bus.endpoint("bus-out"), 30)
        return fleet, pub

    try:
        yield start
    finally:
        for fleet in fleets:
            fleet.close()


def counters(fleet: Fleet) -> dict[str, int]:
    """The notifier's latest heartbeat counters."""
    beats = [h for h in fleet.messages(Heartbeat) if h.src == "notify.1"]
    return dict(beats[-1].counters) if beats else {}


def alert_log(fleet: Fleet) -> list[tuple[int, Alert]]:
    """The broker's alert log as ``ibfleet status`` reads it: (count, alert), oldest first."""
    sub = Subscriber(fleet.ctx, fleet.config.bus.endpoint("bus-out"), ["none"])
    try:
        state, _ = snapshot.join(fleet.ctx, sub, fleet.config.bus.endpoint("bus-snap"),
                                 "alert", timeout=20)
    finally:
        sub.close()
    return [(alert_count(topic), m) for topic, m in state if isinstance(m, Alert)]


def test_an_alert_at_or_above_the_minimum_severity_arrives_as_a_mail(alerting, smtp):
    fleet, pub = alerting({"urls": [smtp.url()], "min_severity": "warning"})
    pub.publish(Alert(severity="info", code="only_info", text="nothing to see"))
    pub.publish(Alert(severity="critical", code="disk_full",
                      text="execution's journal disk is full"))
    mails = wait_for(lambda: [m for m in smtp.mails if "disk_full" in m["Subject"]],
                     deadline=60, what="the critical alert's mail")
    assert mails[0]["Subject"] == "[ibfleet critical] disk_full"
    body = text_of(mails[0])
    assert "execution's journal disk is full" in body and "severity: critical" in body
    assert "from: test.1" in body
    fleet.wait(lambda: counters(fleet).get("notify_below_severity", 0) >= 1
               and counters(fleet).get("notify_sent", 0) >= 1, deadline=30,
               what="the notifier's counters")
    assert not [m for m in smtp.mails if "only_info" in m["Subject"]]


def test_a_flapping_alert_is_sent_once_then_summed_up(alerting, smtp):
    fleet, pub = alerting({"urls": [smtp.url()], "repeat_s": 3.0})
    for i in range(300):  # the same alert, its number changing: one kind
        pub.publish(Alert(severity="critical", code="link_flap",
                          text=f"IB link lost ({i + 1} times today)"))
    fleet.wait(lambda: counters(fleet).get("notify_suppressed") == 299, deadline=60,
               what="299 repeats suppressed")
    summary = wait_for(lambda: [m for m in smtp.mails if "repeated" in m["Subject"]],
                       deadline=60, what="the summary once the window ends")
    assert summary[0]["Subject"] == "[ibfleet critical] link_flap repeated 299 more times"
    assert "IB link lost (300 times today)" in text_of(summary[0])  # the latest
    fleet.wait(lambda: counters(fleet).get("notify_sent") == 2, deadline=30,
               what="two notifications sent")
    assert len([m for m in smtp.mails if "link_flap" in m["Subject"]]) == 2


def test_more_than_max_per_minute_are_held_back_and_counted(alerting, smtp):
    fleet, pub = alerting({"urls": [smtp.url()], "max_per_minute": 2})
    for i in range(5):
        pub.publish(Alert(severity="warning", code=f"kind_{'abcde'[i]}", text="distinct"))
    fleet.wait(lambda: counters(fleet).get("notify_limited") == 3
               and counters(fleet).get("notify_sent") == 2, deadline=60,
               what="2 sent and 3 held back")
    assert sorted(m["Subject"] for m in smtp.mails) == ["[ibfleet warning] kind_a",
                                                        "[ibfleet warning] kind_b"]


def test_an_unreachable_mail_server_is_logged_and_counted_and_nothing_else_breaks(
        alerting, procs):
    dead = (f"mailto://127.0.0.1:{free_port()}?from=ibfleet@localhost.localdomain"
            f"&to=ops@example.com")
    fleet, pub = alerting({"urls": [dead]})
    pub.publish(Alert(severity="critical", code="first", text="nobody will read this"))
    fleet.wait(lambda: counters(fleet).get("notify_failed") == 1, deadline=60,
               what="the failed send counted")
    assert "notification failed" in procs.log("notify")
    pub.publish(Alert(severity="critical", code="second", text="nor this"))
    fleet.wait(lambda: counters(fleet).get("notify_failed") == 2, deadline=60,
               what="the notifier still at work after a failure")
    assert fleet.notifier.poll() is None
    logged = {a.code for _, a in alert_log(fleet)}
    assert {"first", "second"} <= logged  # the bus and its alert log carry on


def test_the_alert_log_keeps_the_latest_alerts_for_whoever_asks_later(alerting):
    fleet, pub = alerting(None)  # the broker alone: nobody is watching the alerts
    pub.publish(Alert(severity="warning", code="once", text="one alert"))
    for _ in range(3):
        pub.publish(Alert(severity="critical", code="thrice", text="the same alert"))
    wait_for(lambda: {a.code: n for n, a in alert_log(fleet)} == {"once": 1, "thrice": 3},
             deadline=60, what="two entries, the repeated one counted")
    for i in range(ALERT_LOG_SIZE + 50):  # bounded: the oldest go first
        pub.publish(Alert(severity="info", code="many", text=f"alert {i}"))
    last = f"alert {ALERT_LOG_SIZE + 49}"
    wait_for(lambda: any(a.text == last for _, a in alert_log(fleet)), deadline=60,
             what="the newest alert in the log")
    log = alert_log(fleet)
    assert len(log) == ALERT_LOG_SIZE and log[-1][1].text == last
    assert "once" not in {a.code for _, a in log}


@pytest.mark.parametrize("section, refused", [
    ({"urls": ["mailto://h?to=a@b.c"], "min_severity": "urgent"}, "min_severity"),
    ({"url": ["mailto://h?to=a@b.c"]}, "url"),             # a typo: refused, not ignored
    ({"urls": "mailto://h?to=a@b.c"}, "urls"),              # a list, not a string
    ({"urls": ["ops@example.com"]}, "not an apprise URL"),
    ({"repeat_s": -1}, "repeat_s"),
])
def test_the_notify_section_is_typed_and_unknown_keys_refused(tmp_path, section, refused):
    import tomli_w

    from services.runtime import config as fleet_config
    path = tmp_path / "fleet.toml"
    path.write_text(tomli_w.dumps({"notify": section}))
    with pytest.raises(fleet_config.ConfigError, match=refused):
        fleet_config.load(path, run_dir=tmp_path / "run", state_dir=tmp_path / "state")


def test_a_url_apprise_does_not_take_is_refused_without_showing_its_secrets():
    from services.notify.service import apprise_for
    from services.runtime.config import ConfigError
    with pytest.raises(ConfigError) as caught:
        apprise_for(["nosuchservice://user:s3cret@host"])
    assert "notify.urls[0] (nosuchservice://...)" in str(caught.value)
    assert "s3cret" not in str(caught.value)
