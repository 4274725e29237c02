"""All ORM models. Imports nothing of ours but the extensions, the clock and its own modules."""

from idp.store.access import Account, AppAssignment, Assignment, OrganizationalUnit, PermissionSet
from idp.store.admin import AdminToken
from idp.store.audit import AuditRecord
from idp.store.connectors import Directory
from idp.store.directory import Group, User, group_members
from idp.store.instances import InstanceRow
from idp.store.oidc import OidcAuthorizationCode, OidcClient, OidcConsent, OidcDeviceCode, OidcToken
from idp.store.saml import PersistentNameId, ServiceProvider
from idp.store.security import ConsumedId, LoginThrottle
from idp.store.sessions import ParticipantRow, PendingRequest, SsoSessionRow

__all__ = [
    "Account",
    "AdminToken",
    "AppAssignment",
    "Assignment",
    "AuditRecord",
    "ConsumedId",
    "Directory",
    "Group",
    "InstanceRow",
    "LoginThrottle",
    "OidcAuthorizationCode",
    "OidcClient",
    "OidcConsent",
    "OidcDeviceCode",
    "OidcToken",
    "OrganizationalUnit",
    "ParticipantRow",
    "PendingRequest",
    "PermissionSet",
    "PersistentNameId",
    "ServiceProvider",
    "SsoSessionRow",
    "User",
    "group_members",
]
