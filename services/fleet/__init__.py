"""The fleet: supervisord running every service, and the ``ibfleet`` commands that operate it."""
