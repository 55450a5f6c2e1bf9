"""A real SMTP server on loopback for the notification tests (aiosmtpd), keeping every mail."""
from __future__ import annotations

import email
import email.policy
import threading
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from tests.support.processes import free_port


class MailSink:
    """``aiosmtpd`` on 127.0.0.1, a port from the OS; ``mails`` in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._mails: list[EmailMessage] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self._mails.append(mail)
        return "250 OK"

    @property
    def mails(self) -> list[EmailMessage]:
        with self.lock:
            return list(self._mails)

    def url(self) -> str:
        """The apprise URL that sends here: plain SMTP, no login."""
        return (f"mailto://127.0.0.1:{self.port}?from=ibfleet@localhost.localdomain"
                f"&to=ops@example.com")

    def start(self) -> "MailSink":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def text_of(mail: EmailMessage) -> str:
    """Subject and plain-text body of a mail."""
    body = mail.get_body(preferencelist=("plain",))
    return f"{mail['Subject']}\n{body.get_content() if body is not None else ''}"
