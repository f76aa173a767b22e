"""Bearer tokens: the lab's admin token and service-account tokens for pods.

The admin token is a random secret kept in the lab's state directory. A service-account
token names its namespace and account and carries an HMAC-SHA256 of them under the lab's
signing key (stdlib `hmac`), so the server checks it without storing every token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SA_PREFIX = "netlab-sa"


def new_secret() -> str:
    return secrets.token_hex(32)


def sa_token(key: str, namespace: str, account: str = "default") -> str:
    mac = hmac.new(key.encode(), f"{namespace}/{account}".encode(), hashlib.sha256).hexdigest()
    return f"{SA_PREFIX}.{namespace}.{account}.{mac}"


class Tokens:
    def __init__(self, admin: str, signing_key: str):
        self.admin = admin
        self.key = signing_key

    def user(self, token: str) -> str | None:
        """The user a token authenticates, or None."""
        if not token:
            return None
        if hmac.compare_digest(token, self.admin):
            return "kubernetes-admin"
        parts = token.split(".")
        if len(parts) == 4 and parts[0] == SA_PREFIX:
            if hmac.compare_digest(token, sa_token(self.key, parts[1], parts[2])):
                return f"system:serviceaccount:{parts[1]}:{parts[2]}"
        return None
