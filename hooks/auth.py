"""Authentication and authorisation hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kefu.hooks import MaybeAwaitable, hookspec

if TYPE_CHECKING:
    from aiohttp import web

    from kefu.core.domain import Site
    from kefu.core.kernel import Kernel
    from kefu.core.types import Principal, VisitorIdentity


@hookspec
def kefu_auth_authenticate(
    kernel: Kernel, request: web.Request | None, token: str | None
) -> MaybeAwaitable[Principal | None]:
    """Turn a request credential into a principal.

    Called for each HTTP request and connection that carries a credential;
    the first non-None answer wins (plugins are asked in pluggy order,
    ``tryfirst`` first).

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param request: the :class:`aiohttp.web.Request`, or None outside HTTP.
    :param token: the bearer token, ``?token=`` value or session cookie, or None.
    :returns: a :class:`kefu.core.types.Principal`, or None to let other plugins answer.
        May be async.
    """


@hookspec
def kefu_auth_permits(
    kernel: Kernel, principal: Principal | None, action: str, resource: object
) -> MaybeAwaitable[bool | None]:
    """Decide whether a principal may perform an action.

    Called by features before a privileged action; the first non-None answer
    wins. When no plugin answers, the caller denies.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param principal: the acting :class:`kefu.core.types.Principal` (may be None).
    :param action: a dotted action name, e.g. ``"plugins.list"``, ``"conversation.resolve"``.
    :param resource: the object acted on (a record, a site id) or None.
    :returns: True to allow, False to deny, None to let other plugins answer. May be async.
    """


@hookspec
def kefu_auth_hash_password(kernel: Kernel, password: str) -> MaybeAwaitable[str | None]:
    """Hash a password the way the login of the enabled auth plugin verifies it.

    Called by features that create agents or change an agent's password (the
    REST API's agent and site administration) before the agent is stored;
    the first non-None answer wins.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param password: the clear-text password (never log it).
    :returns: the string to keep in :attr:`kefu.core.domain.Agent.password_hash`
        (a slow salted hash), or None to let other plugins answer. May be async.
    """


@hookspec
def kefu_auth_revoke(
    kernel: Kernel, site_id: str, agent_id: str, reason: str
) -> MaybeAwaitable[int | None]:
    """End every session of an agent: its tokens stop working at once, on every transport.

    Called by features that change what an agent may do with credentials already
    issued (the REST API's password change). Every implementation is called (each
    auth plugin ends the sessions it keeps), and each announces the change
    (:func:`kefu.core.identity.announce`) so that every worker closes the agent's
    open connections within a second.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param site_id: the agent's site.
    :param agent_id: the agent.
    :param reason: why, for logs: ``password``, ``disabled``, ``deleted``, ``logout_all``.
    :returns: how many sessions were ended, or None when this plugin keeps none. May be async.
    """


@hookspec
def kefu_auth_account_states(
    kernel: Kernel, site_id: str
) -> MaybeAwaitable[dict[str, dict[str, object]] | None]:
    """The agents of a site whose account is not in its default state.

    Called by the REST API's agent listing. The first non-None answer wins.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param site_id: the site.
    :returns: ``{agent_id: {"disabled": bool, "deleted": bool, ...}}`` (agents absent
        are enabled), or None to let other plugins answer. May be async.
    """


@hookspec
def kefu_auth_end_session(kernel: Kernel, token: str) -> MaybeAwaitable[bool | None]:
    """End the session a token belongs to (a logout): the token stops working at once.

    Called by features that sign someone out with the credential they hold (the web
    console's logout). The first non-None answer wins; the implementation announces the
    change so that connections opened with the token close on every worker.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param token: the bearer token being signed out.
    :returns: True when a session was ended, False when the token names none of this
        plugin's, None to let other plugins answer. May be async.
    """


@hookspec
def kefu_auth_visitor_identity(
    kernel: Kernel, site: Site, claim: dict[str, str | None], visitor_id: str | None
) -> MaybeAwaitable[VisitorIdentity | None]:
    """Check an identity the company's own site claims for a visitor, and name its contact.

    Called by ``POST /v1/visitors/session`` (the widget's ``kefu.identify``) when the body
    carries ``user_id`` (and ``user_hash``, the company backend's signature of it). The
    first non-None answer wins; when no plugin answers, the claim is refused
    (``identity_not_configured``). The built-in answer is the ``visitor_identity``
    plugin's (HMAC-SHA256 with per-site rotatable secrets, docs/security.md).

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param site: the :class:`kefu.core.domain.Site` of the widget key.
    :param claim: ``{"user_id": str, "user_hash": str | None}`` as the widget sent them.
    :param visitor_id: the visitor the session continues as (its previous token's), or
        None for a new visitor.
    :returns: a :class:`kefu.core.types.VisitorIdentity` (the contact to continue as and
        whether the claim was verified), or None to let other plugins answer. Raise
        :class:`kefu.core.errors.ApiError` to refuse the claim (the session is refused
        with its status and code). May be async.
    """
