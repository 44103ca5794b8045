"""Routing, pure: matchers composed with ``& | ~``, the Router that says which rules a message
reaches, the rule index behind it, and the router reloaded when its files change."""
