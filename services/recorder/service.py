"""The recorder service: subscribes to every topic and appends each frame, as received.

Frames are written verbatim (topic and payload bytes, never re-encoded) with their receive
time. A write error never stops the service or slows the bus: it alerts (an ``Alert`` on the
bus and an error log line), goes to the ``not_recording`` state, keeps draining its socket
and counting what it could not write, and retries every ``retry_seconds`` with a new segment.
"""
from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from proto.schema import Alert
from services.bus import sockets
from services.recorder.headers import summarize
from services.recorder.writer import RecordingWriter, WriteFailed, WriterPolicy
from services.runtime.config import FleetConfig
from services.runtime.service import Service

RECORDING = "recording"
NOT_RECORDING = "not_recording"


@dataclass(frozen=True)
class RecorderSettings:
    out_dir: Path
    policy: WriterPolicy = field(default_factory=WriterPolicy)
    flush_ms: int = 50  # buffered records reach the kernel at least this often (kill -9 bound)
    fsync_seconds: float = 1.0  # and the disk at least this often (power-loss bound); 0: never
    retry_seconds: float = 5.0  # after a write error, try a new segment this often
    drain_max: int = 5000  # frames taken per wake-up before timers get a turn


class Recorder(Service):
    def __init__(self, config: FleetConfig, settings: RecorderSettings,
                 instance: str = "1") -> None:
        super().__init__("recorder", config, instance)
        self.settings = settings
        self.writer = RecordingWriter(settings.out_dir, settings.policy)
        self.recording = False
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.rcvhwm = sockets.MARKET_DATA_HWM
        self.sub.linger = 0
        self.sub.subscribe(b"")
        sockets.connect(self.sub, config.bus.endpoint("bus-out"), config.bus.curve_dir)
        self.on_socket(self.sub, self._drain)
        self.every(settings.flush_ms / 1000.0, self._flush)
        if settings.fsync_seconds > 0:
            self.every(settings.fsync_seconds, self._sync)
        self.every(settings.retry_seconds, self._retry)
        for name in ("frames", "messages", "bytes", "segments", "write_errors", "dropped_frames",
                     "dropped_messages", "bad_frames"):
            self.counters[name] = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def on_start(self) -> None:
        self.log.info("recording", extra={"out": str(self.settings.out_dir)})
        self._start_segment(first=True)

    def on_stop(self) -> None:
        self._drain(limit=None)  # what is already queued in our socket still gets written
        if self.recording:
            try:
                self.writer.close()
            except WriteFailed as exc:
                self._failed(exc)
        self._update_counters()
        self.sub.close(0)

    def heartbeat(self) -> None:
        self._update_counters()
        if self.state in ("running", RECORDING, NOT_RECORDING):  # the base sets "running"
            self.state = RECORDING if self.recording else NOT_RECORDING
        super().heartbeat()

    # -- the hot path -------------------------------------------------------------------------
    def _drain(self, limit: int | None = -1) -> None:
        limit = self.settings.drain_max if limit == -1 else limit
        recv = self.sub.recv_multipart
        clock = time.time_ns
        taken = 0
        while limit is None or taken < limit:
            try:
                parts = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            recv_ns = clock()
            taken += 1
            if len(parts) != 2:  # not a bus frame; nothing to replay it as
                self.counters["bad_frames"] += 1
                continue
            if self.recording:
                try:
                    self.writer.append(recv_ns, parts[0], parts[1])
                    continue
                except WriteFailed as exc:
                    self._failed(exc)
                    continue
            self.counters["dropped_frames"] += 1
            self.counters["dropped_messages"] += summarize(parts[1]).count

    # -- durability timers --------------------------------------------------------------------
    def _flush(self) -> None:
        if self.recording:
            try:
                self.writer.flush()
            except WriteFailed as exc:
                self._failed(exc)

    def _sync(self) -> None:
        if self.recording:
            try:
                self.writer.sync()
            except WriteFailed as exc:
                self._failed(exc)

    # -- write errors -------------------------------------------------------------------------
    def _failed(self, exc: WriteFailed) -> None:
        self.recording = False
        self.state = NOT_RECORDING
        self.counters["write_errors"] += 1
        self.counters["dropped_frames"] += exc.lost_frames
        self.counters["dropped_messages"] += exc.lost_messages
        code = errno.errorcode.get(exc.cause.errno or 0, "EIO")
        text = (f"recorder stopped writing to {self.settings.out_dir}: {exc.cause.strerror or exc}"
                f" ({code}); {exc.lost_frames} frames lost, earlier segments intact; "
                f"retrying every {self.settings.retry_seconds:g}s")
        self.log.error("recording stopped: write failed",
                       extra={"errno": code, "detail": str(exc.cause), "out": str(self.settings.out_dir),
                              "lost_frames": exc.lost_frames, "lost_messages": exc.lost_messages})
        self._alert("critical", "recorder.write_failed", text)

    def _retry(self) -> None:
        if not self.recording:
            self._start_segment(first=False)

    def _start_segment(self, first: bool) -> None:
        try:
            self.writer.open_segment()
        except WriteFailed as exc:
            if first or self.counters["write_errors"] == 0:
                self._failed(exc)
            else:  # still failing: one alert per outage is enough, the log says the rest
                self.counters["retries_failed"] += 1
                self.log.warning("recording still failing", extra={"detail": str(exc.cause)})
            return
        was_failing = not first
        self.recording = True
        self.state = RECORDING
        if was_failing:
            self.log.info("recording resumed", extra={"dropped_frames": self.counters["dropped_frames"]})
            self._alert("warning", "recorder.resumed",
                        f"recorder writing to {self.settings.out_dir} again; "
                        f"{self.counters['dropped_frames']} frames were not recorded")

    def _alert(self, severity: str, code: str, text: str) -> None:
        try:
            self.publisher.publish(Alert(severity=severity, code=code, text=text))
        except zmq.ZMQError as exc:  # never let the alert path stop the recorder
            self.log.error("alert not published", extra={"detail": str(exc)})

    def _update_counters(self) -> None:
        w = self.writer
        self.counters["frames"] = w.frames
        self.counters["messages"] = w.messages
        self.counters["bytes"] = w.bytes
        self.counters["segments"] = w.segments
