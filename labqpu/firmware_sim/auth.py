"""Who a controller session belongs to: the authentication seam of ``ControllerServer``.

``hello`` may carry ``params.credentials`` (a JSON object). The server asks its
``Authenticator`` for the identity those credentials prove; the identity is kept with the
session and returned in the ``hello`` reply. A refusal is an ``Unauthenticated`` error reply,
and nothing changes on the controller: no session is opened, an existing one is untouched.

The default, ``LocalAuthenticator``, allows everyone and names each session after itself:
sessions separate clients, not users. Real credentials (CURVE keys checked by a ZAP handler
that fails closed) come with the shared rack; they plug in here.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["AuthenticationRefused", "Authenticator", "LocalAuthenticator"]


class AuthenticationRefused(Exception):  # noqa: N818 - an outcome, not a bug
    """The credentials of a ``hello`` do not prove an identity; the message says why."""


class Authenticator(Protocol):
    """Decides who a ``hello`` comes from."""

    def authenticate(self, credentials: dict[str, Any] | None, session: str) -> str:
        """The identity ``credentials`` prove, for the session ``session`` about to be kept
        or opened.

        Raises:
            AuthenticationRefused: the credentials prove nobody; the message is sent back.
        """
        ...


class LocalAuthenticator:
    """Everyone on the host is allowed; the identity is ``local:`` and the session."""

    def authenticate(self, credentials: dict[str, Any] | None, session: str) -> str:
        """Allow any credentials (or none)."""
        return f"local:{session}"
