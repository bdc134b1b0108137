"""Durable and shared security-event stores, imported only when configured."""
