"""Who may do what: the authorisation rules of the built-in auth plugin.

The rules (the table in ``docs/protocol.md`` lists the action names):

- no principal, or a resource in another site: denied, always;
- install-level actions (:data:`INSTALL_ACTIONS`: creating sites, changing bot flows
  that serve more than one site, listing plugins and install-wide configuration) need
  the install-level role ``owner`` (an agent of any site; the first admin of a new
  install has it). Only an owner may act on an agent who is an owner (change its
  roles or password, disable or delete it) or grant the role;
- an admin (role ``admin``, or ``owner``) may do anything else inside their own site;
- a supervisor (role ``supervisor``, next to ``agent``) may also read the site's reports
  (``reports.*``), which no other agent may;
- an agent may do ``conversation.*``, ``message.*`` and ``visitor.read`` in their site,
  except ``message.send`` and ``message.delete`` in a conversation assigned to another agent
  (after a transfer the first agent cannot post any more; an admin still can), and
  ``message.delete_others`` (deleting a colleague's message or a system one: admins only);
- a visitor may act on their own conversations only (the actions of
  :data:`VISITOR_CONVERSATION_ACTIONS` where ``resource.visitor_id`` is theirs:
  never assign or transfer), start a conversation in their site
  (``conversation.start`` on the site id) and read or update their own visitor
  record;
- anything else: denied (default deny). A plugin that introduces new actions
  answers for them with ``@hookimpl(tryfirst=True)``.
"""

from __future__ import annotations

from typing import Any

from kefu.core.domain import Agent, Visitor
from kefu.core.types import Principal

AGENT_PREFIXES = ("conversation.", "message.")
AGENT_ACTIONS = frozenset({"visitor.read"})
#: Agents may not do these in a conversation assigned to someone else (admins may).
ASSIGNEE_ACTIONS = frozenset({"message.send", "message.delete"})
#: Deleting a colleague's (or the server's) message: admins only.
ADMIN_MESSAGE_ACTIONS = frozenset({"message.delete_others"})
VISITOR_SELF_ACTIONS = frozenset({"visitor.read", "visitor.update"})
VISITOR_CONVERSATION_ACTIONS = frozenset(
    {
        "conversation.read",
        "conversation.typing",
        "conversation.resolve",
        "conversation.rate",
        "message.send",
        "message.read",
    }
)
VISITOR_SITE_ACTIONS = frozenset({"conversation.start"})
#: The install-level role: administers the install, not only a site.
OWNER = "owner"
#: May read the site's reports (``reports.*``) without being an admin.
SUPERVISOR = "supervisor"
SUPERVISOR_PREFIXES = ("reports.",)
INSTALL_ACTIONS = frozenset({"plugins.list", "sites.create", "bot.flows.shared", "install.read"})


def is_owner(principal: Principal | None) -> bool:
    return principal is not None and principal.kind == "agent" and OWNER in principal.roles


def resource_site(resource: Any) -> str | None:
    """The site a resource belongs to: a site id string, or a record's ``site_id``."""
    if isinstance(resource, str):
        return resource
    site_id = getattr(resource, "site_id", None)
    return site_id if isinstance(site_id, str) else None


def permits(principal: Principal | None, action: str, resource: Any) -> bool:
    """Decide one action; see the module docstring for the rules."""
    if principal is None or not isinstance(action, str):
        return False
    if action in INSTALL_ACTIONS:
        return is_owner(principal)
    site_id = principal.site_id if resource is None else resource_site(resource)
    if site_id is None or site_id != principal.site_id:
        return False
    if principal.kind == "agent":
        if isinstance(resource, Agent) and OWNER in resource.roles and action.startswith("agents."):
            return is_owner(principal)
        if principal.is_admin or is_owner(principal):
            return True
        if action.startswith(SUPERVISOR_PREFIXES):
            return SUPERVISOR in principal.roles
        if action in ASSIGNEE_ACTIONS and _assigned_elsewhere(principal, resource):
            return False
        if action in ADMIN_MESSAGE_ACTIONS:
            return False
        return action.startswith(AGENT_PREFIXES) or action in AGENT_ACTIONS
    if principal.kind == "visitor":
        return _visitor_permits(principal, action, resource)
    return False


def _assigned_elsewhere(principal: Principal, resource: Any) -> bool:
    assignee = getattr(resource, "assignee_id", None)
    return getattr(resource, "state", None) == "assigned" and assignee not in (None, principal.id)


def _visitor_permits(principal: Principal, action: str, resource: Any) -> bool:
    if isinstance(resource, str) or resource is None:
        return action in VISITOR_SITE_ACTIONS
    if isinstance(resource, Visitor):
        return action in VISITOR_SELF_ACTIONS and resource.id == principal.id
    if action in VISITOR_CONVERSATION_ACTIONS:
        owner = getattr(resource, "visitor_id", None)
        return owner is not None and owner == principal.id
    return False
