"""Permission sets: what a user gets in an account (an IAM role, for how long, where the console opens)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from idp import audit
from idp.access.accounts import add_new, assignment_lines, https_url, lock_assignments
from idp.audit import AuditEvent
from idp.database import lock_for_removal
from idp.errors import BadRequest, Conflict, NotFound
from idp.extensions import db
from idp.store import Assignment, PermissionSet
from idp.text import check_line

# IAM's own character sets: role names, and permission set names in IAM Identity Center.
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
# At least one letter or digit: "." and ".." would be path segments in the portal's /portal/aws/<id>/<name>.
_PERMISSION_SET_NAME = re.compile(r"(?=.*[A-Za-z0-9])[\w+=,.@-]{1,32}", re.ASCII)
_POLICY_ARN = re.compile(r"arn:aws:iam::(aws|[0-9]{12}):policy/[\w+=,.@/-]{1,512}", re.ASCII)
_INLINE_POLICY_MAX = 32768  # IAM Identity Center's limit for a permission set's inline policy


@dataclass(frozen=True)
class PermissionSetSpec:
    """A permission set's settings as given; None: the default (add) or unchanged (update). An empty
    description or relay state, an empty policy list and an empty inline policy ({}) clear the field."""

    session_hours: int | None = None
    role_name: str | None = None
    description: str | None = None
    managed_policy_arns: tuple[str, ...] | None = None
    inline_policy: dict[str, Any] | None = None
    relay_state: str | None = None
    mfa_required: bool | None = None


def _pset_values(spec: PermissionSetSpec) -> dict[str, Any]:
    """The columns the spec sets, validated."""
    out: dict[str, Any] = {}
    if spec.session_hours is not None:
        hours = spec.session_hours
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= 12:
            raise BadRequest(f"the session duration is 1 to 12 hours, not {hours!r}", field="session_hours")
        out["session_duration_seconds"] = hours * 3600
    if spec.role_name is not None:
        if not _ROLE_NAME.fullmatch(spec.role_name):
            raise BadRequest(f"invalid IAM role name {spec.role_name!r}: 1 to 64 of letters, digits and +=,.@_-",
                             field="role_name")
        out["role_name"] = spec.role_name
    if spec.description is not None:
        description = spec.description.strip()
        if len(description) > 700:
            raise BadRequest("a description is at most 700 characters", field="description")
        check_line(description, "a description", "description", lines=True)
        out["description"] = description or None
    if spec.managed_policy_arns is not None:
        arns = [a.strip() for a in spec.managed_policy_arns]
        for arn in arns:
            if not _POLICY_ARN.fullmatch(arn):
                raise BadRequest(f"invalid managed policy ARN {arn!r}: expected arn:aws:iam::aws:policy/NAME "
                                 "or arn:aws:iam::ACCOUNT:policy/NAME", field="managed_policy_arns")
        out["managed_policy_arns"] = list(dict.fromkeys(arns))
    if spec.inline_policy is not None:
        if not isinstance(spec.inline_policy, dict):
            raise BadRequest("an inline policy is a JSON object", field="inline_policy")
        try:  # NaN and Infinity: Python's JSON takes them, and every strict reader of the API would not
            text = json.dumps(spec.inline_policy, separators=(",", ":"), allow_nan=False)
        except ValueError:
            raise BadRequest("an inline policy cannot hold NaN or Infinity (not JSON)", field="inline_policy") from None
        if len(text) > _INLINE_POLICY_MAX:
            raise BadRequest(f"an inline policy is at most {_INLINE_POLICY_MAX} characters", field="inline_policy")
        out["inline_policy"] = spec.inline_policy or None
    if spec.relay_state is not None:
        relay = spec.relay_state.strip()
        out["relay_state"] = https_url(relay, "the relay state", "relay_state") if relay else None
    if spec.mfa_required is not None:
        out["mfa_required"] = bool(spec.mfa_required)
    return out


def get_permission_set(name: str) -> PermissionSet | None:
    pset: PermissionSet | None = db.session.scalar(select(PermissionSet).where(PermissionSet.name == name.strip()))
    return pset


def require_permission_set(name: str) -> PermissionSet:
    pset = get_permission_set(name)
    if pset is None:
        raise NotFound(f"no permission set '{name.strip()}'")
    return pset


def list_permission_sets() -> list[PermissionSet]:
    return list(db.session.scalars(select(PermissionSet).order_by(PermissionSet.name)))


def add_permission_set(name: str, spec: PermissionSetSpec, *, actor: str) -> PermissionSet:
    """The role name defaults to the permission set's name."""
    name = name.strip()
    if not _PERMISSION_SET_NAME.fullmatch(name):
        raise BadRequest(f"invalid permission set name {name!r}: 1 to 32 of letters, digits and +=,.@_-, "
                         "with at least one letter or digit", field="name")
    if spec.session_hours is None:
        raise BadRequest("a permission set needs a session duration (1 to 12 hours)", field="session_hours")
    values = {"role_name": name, "managed_policy_arns": [], **_pset_values(spec)}
    if get_permission_set(name) is not None:
        raise Conflict(f"permission set '{name}' already exists")
    pset = PermissionSet(name=name, **values)
    add_new(pset, f"permission set '{name}'")
    audit.record(AuditEvent(type="access.permission_set.add", actor=actor,
                            details={"permission_set": name, **{k: _shown(k, v) for k, v in values.items()}}))
    return pset


def update_permission_set(name: str, spec: PermissionSetSpec, *, actor: str) -> dict[str, dict[str, Any]]:
    """Change the given settings; returns what changed ({} when nothing did, and then records nothing)."""
    pset = require_permission_set(name)
    after = _pset_values(spec)
    changed = {k: {"from": getattr(pset, k), "to": v} for k, v in after.items() if getattr(pset, k) != v}
    if not changed:
        return {}
    for key, change in changed.items():
        setattr(pset, key, change["to"])
    audit.record(AuditEvent(type="access.permission_set.update", actor=actor, details={
        "permission_set": pset.name, "fields": sorted(changed),
        "changed": {k: {"from": _shown(k, c["from"]), "to": _shown(k, c["to"])} for k, c in changed.items()}}))
    return changed


def delete_permission_set(name: str, *, force: bool = False, actor: str) -> int:
    """Delete a permission set. While assignments use it, refuse unless ``force``, which deletes them too.
    Returns how many assignments went."""
    pset = require_permission_set(name)
    lock_for_removal(pset)
    lock_assignments(Assignment.permission_set_id == pset.id)
    used = assignment_lines(Assignment.permission_set_id == pset.id)
    if used and not force:
        raise Conflict(f"permission set '{pset.name}' is used by {len(used)} assignment(s) "
                       f"({'; '.join(used[:3])}{'; ...' if len(used) > 3 else ''}): "
                       "unassign them first, or delete with --force to remove them too")
    db.session.execute(delete(Assignment).where(Assignment.permission_set_id == pset.id))
    db.session.delete(pset)
    audit.record(AuditEvent(type="access.permission_set.delete", actor=actor, details={
        "permission_set": pset.name, "assignments_removed": used}))
    return len(used)


def _shown(key: str, value: Any) -> Any:
    """An inline policy can be long: the audit log says whether there is one, not what it says."""
    return value is not None if key == "inline_policy" else value


def describe_permission_set(pset: PermissionSet) -> dict[str, Any]:
    return {
        "name": pset.name,
        "description": pset.description,
        "session_duration_hours": pset.session_duration_seconds // 3600,
        "role_name": pset.role_name,
        "managed_policy_arns": list(pset.managed_policy_arns or []),
        "inline_policy": pset.inline_policy,
        "relay_state": pset.relay_state,
        "mfa_required": pset.mfa_required,
        "assignments": assignment_lines(Assignment.permission_set_id == pset.id),
    }
