"""Accounts a worker calls MiMo through: the key pool's routing and each account's breaker."""
