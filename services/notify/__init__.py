"""Alerts sent out of the fleet (e-mail, Telegram, Slack...) through apprise: ``service``."""
