"""The notifier: every alert at or above ``[notify] min_severity`` sent out through apprise
(e-mail, Telegram, Slack... one URL each in ``[notify] urls``).

- It subscribes to ``alert`` on the bus and publishes only its heartbeat: nothing in the
  trading path waits for it. Sending runs on a worker thread behind a bounded queue, so a slow
  or dead mail server delays the notifications only, never the loop or its heartbeat.
- Rate limits (``Throttle``): one alert kind (source, code, and its text with the numbers
  taken out: "(12 dropped)" and "(13 dropped)" are one kind) is sent at most every
  ``repeat_s``; its repeats meanwhile are counted and summed up in one notification when the
  window ends. At most ``max_per_minute`` notifications go out a minute, all kinds together;
  beyond that they are counted and the next one that goes says how many were held back.
- A failed send (apprise says so, or raises) is logged and counted, never fatal; a full queue
  drops (and counts) a notification rather than grow.

Heartbeat counters: ``notify_sent``, ``notify_failed``, ``notify_suppressed`` (repeats within
the window), ``notify_limited`` (over ``max_per_minute``), ``notify_dropped`` (queue full),
``notify_below_severity``.

Alerts published while the notifier is down are not sent afterwards; ``ibfleet status``
shows them (the bus broker's alert log). Run: ``ibfleet notify --config FLEET.toml``.
"""
from __future__ import annotations

import argparse
import logging
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass

import zmq

from proto.schema import Alert
from services.bus.subscriber import Subscriber
from services.runtime import config as fleet_config
from services.runtime.cli import add_common_args, load_config
from services.runtime.service import Service
from services.runtime.settings import NotifySection

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
QUEUE_SIZE = 100  # notifications waiting for the worker; beyond, dropped and counted
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Notification:
    title: str
    body: str
    severity: str
    code: str


def kind_of(alert: Alert) -> tuple[str, str, str]:
    """What makes two alerts "the same" for the rate limit: source, code and the text with
    its numbers taken out."""
    return alert.src, alert.code, _NUMBERS.sub("#", alert.text)


def _format(alert: Alert, repeats: int = 0, window_s: float = 0.0, held_back: int = 0,
            summary: bool = False) -> Notification:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(alert.ts / 1e9))
    if summary:
        title = (f"[ibfleet {alert.severity}] {alert.code} repeated {repeats} more "
                 f"time{'s' * (repeats != 1)}")
        lines = [f"{alert.code} came {repeats} more time{'s' * (repeats != 1)} within "
                 f"{window_s:g}s after it was sent; the latest:", "", alert.text]
    else:
        title = f"[ibfleet {alert.severity}] {alert.code}"
        lines = [alert.text]
    lines += ["", f"severity: {alert.severity}", f"code: {alert.code}",
              f"from: {alert.src}", f"at: {when}"]
    if held_back:
        lines.append(f"{held_back} other notification(s) were held back: more than "
                     f"[notify] max_per_minute")
    return Notification(title, "\n".join(lines), alert.severity, alert.code)


class Throttle:
    """The rate limits, apart from the bus and apprise: ``offer`` an alert, call ``due``
    from a timer; both return what to send now. ``now`` is time.monotonic()."""

    def __init__(self, repeat_s: float, max_per_minute: int) -> None:
        self.repeat_s = repeat_s
        self.max_per_minute = max_per_minute
        self.last_sent: dict[tuple, float] = {}
        self.repeats: dict[tuple, tuple[Alert, int]] = {}  # since the last send of the kind
        self.sent_at: deque[float] = deque()
        self.held_back = 0  # over max_per_minute since the last one that went
        self.suppressed = 0
        self.limited = 0

    def _room(self, now: float) -> bool:
        while self.sent_at and now - self.sent_at[0] >= 60.0:
            self.sent_at.popleft()
        return len(self.sent_at) < self.max_per_minute

    def _send(self, key, now: float, make) -> list[Notification]:
        if not self._room(now):
            self.held_back += 1
            self.limited += 1
            return []
        self.sent_at.append(now)
        self.last_sent[key] = now
        note = make(self.held_back)
        self.held_back = 0
        return [note]

    def offer(self, alert: Alert, now: float) -> list[Notification]:
        key = kind_of(alert)
        last = self.last_sent.get(key)
        if last is not None and now - last < self.repeat_s:
            _, count = self.repeats.get(key, (alert, 0))
            self.repeats[key] = (alert, count + 1)
            self.suppressed += 1
            return []
        return self._send(key, now, lambda held: _format(alert, held_back=held))

    def due(self, now: float) -> list[Notification]:
        """Summaries of the kinds whose window ended with repeats in it."""
        out: list[Notification] = []
        for key, (alert, count) in list(self.repeats.items()):
            if now - self.last_sent.get(key, -1e18) >= self.repeat_s:
                del self.repeats[key]
                out += self._send(key, now, lambda held, a=alert, c=count: _format(
                    a, repeats=c, window_s=self.repeat_s, held_back=held, summary=True))
        # kinds quiet for a whole window are forgotten (bounded memory)
        for key in [k for k, t in self.last_sent.items()
                    if now - t >= self.repeat_s and k not in self.repeats]:
            del self.last_sent[key]
        return out


def apprise_for(urls: list[str]):
    """An ``apprise.Apprise`` with every URL; raises ``ConfigError`` naming (by scheme and
    position, never in full: URLs carry passwords and tokens) one apprise does not take."""
    import apprise

    sender = apprise.Apprise()
    for i, url in enumerate(urls):
        if not sender.add(url):
            scheme = url.split("://", 1)[0]
            raise fleet_config.ConfigError(
                f"notify.urls[{i}] ({scheme}://...) is not a URL apprise understands: see "
                f"https://github.com/caronc/apprise/wiki for the form of each service")
    return sender


class Notifier(Service):
    def __init__(self, config: fleet_config.FleetConfig) -> None:
        self.settings: NotifySection = config.notify
        self.sender = apprise_for(self.settings.urls) if self.settings.urls else None
        super().__init__("notify", config)
        self.min_rank = SEVERITY_RANK[self.settings.min_severity]
        self.throttle = Throttle(self.settings.repeat_s, self.settings.max_per_minute)
        self.outbox: queue.Queue[Notification | None] = queue.Queue(QUEUE_SIZE)
        self.results: deque[tuple[Notification, bool, str]] = deque()  # worker -> loop
        self.feed = self.track(Subscriber(self.ctx, config.bus.endpoint("bus-out"),
                                          [Alert.TOPIC]))
        self.on_socket(self.feed.socket, self._on_alerts)
        self.every(0.2, self._collect_results)
        self.every(1.0, self._flush_due)
        self.worker = threading.Thread(target=self._work, name="notify-worker", daemon=True)
        for name in ("notify_sent", "notify_failed", "notify_suppressed", "notify_limited",
                     "notify_dropped", "notify_below_severity"):
            self.counters[name] = 0
        if not self.settings.urls:
            self.log.warning("no [notify] urls: alerts are counted, not sent")

    def on_start(self) -> None:
        self.worker.start()

    # -- the loop -----------------------------------------------------------------------------
    def _on_alerts(self) -> None:
        for _ in range(1000):
            try:
                parts = self.feed.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            decoded = self.feed.decode_parts(parts)
            if not decoded:
                continue
            for msg in decoded[1]:
                if isinstance(msg, Alert):
                    self._on_alert(msg)

    def _on_alert(self, alert: Alert) -> None:
        if SEVERITY_RANK.get(alert.severity, 0) < self.min_rank:
            self.counters["notify_below_severity"] += 1
            return
        self._enqueue(self.throttle.offer(alert, time.monotonic()))

    def _flush_due(self) -> None:
        self._enqueue(self.throttle.due(time.monotonic()))

    def _enqueue(self, notes: list[Notification]) -> None:
        self.counters["notify_suppressed"] = self.throttle.suppressed
        self.counters["notify_limited"] = self.throttle.limited
        for note in notes:
            if self.sender is None:
                continue
            try:
                self.outbox.put_nowait(note)
            except queue.Full:
                self.counters["notify_dropped"] += 1
                self.log.error("notification dropped: the queue is full (is the service "
                               "slow or down?)", extra={"code": note.code,
                                                        "queued": QUEUE_SIZE})

    def _collect_results(self) -> None:
        while self.results:
            note, ok, error = self.results.popleft()
            if ok:
                self.counters["notify_sent"] += 1
                self.log.info("notification sent", extra={"code": note.code,
                                                          "severity": note.severity})
            else:
                self.counters["notify_failed"] += 1
                self.log.error("notification failed", extra={"code": note.code,
                                                             "severity": note.severity,
                                                             "error": error})

    # -- the worker thread: the only place that waits on the network -------------------------
    def _work(self) -> None:
        while True:
            note = self.outbox.get()
            if note is None:
                return
            try:
                ok = bool(self.sender.notify(title=note.title, body=note.body))
                error = "" if ok else "apprise could not deliver it (see the lines before)"
            except Exception as exc:  # noqa: BLE001 - a bad send never takes the worker down
                ok, error = False, f"{type(exc).__name__}: {exc}"
            self.results.append((note, ok, error))

    def on_stop(self) -> None:
        unsent = self.outbox.qsize()
        try:
            self.outbox.put_nowait(None)
        except queue.Full:
            pass
        self.worker.join(timeout=3.0)  # a send stuck on a dead server is not waited for
        self._collect_results()
        if unsent:
            self.log.warning("stopping with notifications not sent", extra={"unsent": unsent})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet notify", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    config = load_config(parser, args)
    logging.getLogger("apprise").setLevel(logging.WARNING)
    try:
        notifier = Notifier(config)
    except fleet_config.ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    return notifier.run()


if __name__ == "__main__":
    raise SystemExit(main())
