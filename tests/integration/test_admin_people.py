"""The admin pages for people and groups (/admin/people, /admin/groups), driven with the test client as a browser
would: forms with their CSRF token, refusals shown next to the field, changes audited naming the admin, users
and groups of a directory shown read-only. Admin rights come from the group IDP_ADMIN_GROUP names."""

from __future__ import annotations

from collections.abc import Callable

import lxml.html
from admin_ui import ADMIN, by_admin, events, field_errors, flashed, form_errors, post_form, sign_in_admin, text
from flask import Flask
from flask.testing import FlaskClient
from helpers import DEFAULT_PASSWORD, csrf_token, login, make_user

from idp.access import accounts, assignments, permission_sets
from idp.access.permission_sets import PermissionSetSpec
from idp.authn import directory
from idp.extensions import db
from idp.store import User

NEW_PASSWORD = "a brand new passphrase"


def shadow_user(username: str, source: str = "corp", groups: tuple[str, ...] = ("ldap-engineers",)) -> User:
    """The row an LDAP directory's user gets at sign-in (as idp.authn.connectors makes it)."""
    user = User(username=username, source=source, external_id=f"uid={username}", email=f"{username}@corp.example",
                external_groups=list(groups), enabled=True)
    db.session.add(user)
    db.session.commit()
    return user


def can_sign_in(app: Flask, username: str, password: str) -> bool:
    return login(app.test_client(), username, password).status_code == 302


# --- people: list and search ----------------------------------------------------------------------------


def test_people_are_listed_searched_and_filtered_by_directory(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("alice", email="alice@example.com")
    make_user("bob", email="robert@example.com")
    shadow_user("carol")

    everyone = text(client.get("/admin/people"))
    assert all(name in everyone for name in ("alice", "bob", "carol", "root"))

    by_name = text(client.get("/admin/people?q=ALI"))
    assert "alice" in by_name and "bob" not in by_name
    by_email = text(client.get("/admin/people?q=robert@"))
    assert "/admin/people/bob" in by_email and "/admin/people/alice" not in by_email
    from_corp = text(client.get("/admin/people?source=corp"))
    assert "/admin/people/carol" in from_corp and "/admin/people/alice" not in from_corp
    built_in = text(client.get("/admin/people?source=local"))
    assert "/admin/people/alice" in built_in and "/admin/people/carol" not in built_in
    assert "No user matches." in text(client.get("/admin/people?q=nobody"))


# --- people: create ---------------------------------------------------------------------------------------


def test_create_a_user_who_then_signs_in(app: Flask, client: FlaskClient) -> None:
    sign_in_admin(client)
    directory.create_group("engineers", actor="test")
    resp = post_form(client, "/admin/people/new", "/admin/people/new", {
        "username": "Dave", "email": "dave@example.com", "display_name": "Dave D.", "password": NEW_PASSWORD,
        "password_again": NEW_PASSWORD, "groups": ["engineers"]})

    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/people/dave")
    page = client.get(resp.headers["Location"])
    assert "Created dave." in flashed(page)
    dave = directory.require_user("dave")
    assert (dave.email, dave.display_name, [g.name for g in dave.groups]) == (
        "dave@example.com", "Dave D.", ["engineers"])
    [created] = by_admin("user.create")
    assert created.username == "dave" and created.details["groups"] == ["engineers"]
    assert can_sign_in(app, "dave", NEW_PASSWORD)


def test_create_refusals_are_shown_next_to_the_field_and_store_nothing(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("erin")

    def create(**data: str) -> tuple[int, str]:
        resp = post_form(client, "/admin/people/new", "/admin/people/new", data)
        return resp.status_code, resp.get_data(as_text=True)

    status, page = create(username="frank", password=NEW_PASSWORD, password_again="something else")
    assert status == 422 and NEW_PASSWORD not in page  # a password is never sent back
    assert "The two passwords differ." in field_errors(page, "password_again")
    status, page = create(username="Not Valid!", password="", password_again="")
    assert status == 422 and "invalid username" in field_errors(page, "username")
    status, page = create(username="frank", email="not-an-address")
    assert status == 422 and "invalid email address" in field_errors(page, "email")
    status, page = create(username="frank", password="short", password_again="short")
    assert status == 422 and "at least" in field_errors(page, "password") and 'value="short"' not in page
    status, page = create(username="erin")
    assert status == 422 and "already exists" in field_errors(page, "username")
    status, page = create(username="")
    assert status == 422 and "A user needs a username." in field_errors(page, "username")

    assert directory.get_user("frank") is None and not by_admin("user.create")


# --- people: one local user -------------------------------------------------------------------------------


def test_edit_a_profile(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("gina", email="gina@example.com", display_name="Gina")
    page = "/admin/people/gina"
    resp = post_form(client, page, f"{page}/profile", {"email": "gina@new.example", "given_name": "Gina",
                                                         "family_name": "Ng", "display_name": ""})
    assert resp.status_code == 303
    gina = directory.require_user("gina")
    assert (gina.email, gina.given_name, gina.family_name, gina.display_name) == (
        "gina@new.example", "Gina", "Ng", None)
    assert by_admin("user.update")[0].username == "gina"
    assert "Saved the profile of gina." in flashed(client.get(page))

    refused = post_form(client, page, f"{page}/profile", {"email": "gina at example"})
    assert refused.status_code == 422 and "invalid email address" in field_errors(refused, "email")
    assert directory.require_user("gina").email == "gina@new.example"


def test_disable_and_enable(app: Flask, client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("hal")
    page = "/admin/people/hal"
    assert post_form(client, page, f"{page}/disable").status_code == 303
    assert not can_sign_in(app, "hal", DEFAULT_PASSWORD)
    assert by_admin("user.disable")[0].username == "hal"
    shown = text(client.get(page))
    assert "disabled: cannot sign in" in shown and "Enable hal" in shown

    assert post_form(client, page, f"{page}/enable").status_code == 303
    assert can_sign_in(app, "hal", DEFAULT_PASSWORD)
    assert by_admin("user.enable")[0].username == "hal"


def test_set_a_password_typed_twice(app: Flask, client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("ivy")
    page = "/admin/people/ivy"

    differ = post_form(client, page, f"{page}/password", {"password": NEW_PASSWORD, "password_again": "other"})
    assert differ.status_code == 422 and "The two passwords differ." in field_errors(differ, "password_again")
    short = post_form(client, page, f"{page}/password", {"password": "short", "password_again": "short"})
    assert short.status_code == 422 and "at least" in field_errors(short, "password")
    assert NEW_PASSWORD not in differ.get_data(as_text=True) and 'value="short"' not in short.get_data(as_text=True)
    assert not by_admin("user.set_password") and can_sign_in(app, "ivy", DEFAULT_PASSWORD)

    done = post_form(client, page, f"{page}/password", {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert done.status_code == 303
    assert can_sign_in(app, "ivy", NEW_PASSWORD) and not can_sign_in(app, "ivy", DEFAULT_PASSWORD)
    assert by_admin("user.set_password")[0].username == "ivy"


def test_setting_ones_own_password_signs_out_ones_other_sessions_only(app: Flask, client: FlaskClient) -> None:
    """A new password ends every session signed in with the old one (a stolen account's above all), but the
    admin who sets their own stays signed in where they set it."""
    sign_in_admin(client)
    other = app.test_client()
    assert login(other, ADMIN, DEFAULT_PASSWORD).status_code == 302
    page = f"/admin/people/{ADMIN}"
    done = post_form(client, page, f"{page}/password", {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert done.status_code == 303
    assert client.get(page).status_code == 200
    assert other.get(page).status_code == 302  # to the login page
    assert by_admin("user.set_password")[0].details == {"sessions_ended": 1}


def test_group_membership_from_the_user_page(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("jay", groups=["ops"])
    directory.create_group("dev", actor="test")
    page = "/admin/people/jay"

    assert post_form(client, page, f"{page}/groups", {"add_group": "dev"}).status_code == 303
    assert [g.name for g in directory.require_user("jay").groups] == ["dev", "ops"]
    assert by_admin("group.add_member")[0].details == {"group": "dev"}
    removal = f"{page}/groups/remove?group=ops"
    assert f'href="{removal}"' in text(client.get(page))
    assert "Yes, take jay out of ops" in text(client.get(removal))
    one_click = post_form(client, removal, removal, {"group": "ops"})  # the box not ticked
    assert one_click.status_code == 422 and "Tick the box to confirm." in field_errors(one_click, "confirm")
    assert [g.name for g in directory.require_user("jay").groups] == ["dev", "ops"]
    assert post_form(client, removal, removal, {"group": "ops", "confirm": "y"}).status_code == 303
    assert [g.name for g in directory.require_user("jay").groups] == ["dev"]
    assert by_admin("group.remove_member")[0].details == {"group": "ops"}

    unknown = post_form(client, page, f"{page}/groups", {"add_group": "nope"})
    assert unknown.status_code == 422 and "no group 'nope'" in field_errors(unknown, "add_group")


def test_delete_needs_the_confirmation_box(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("kim")
    confirm = "/admin/people/kim/delete"
    assert "Yes, delete kim" in text(client.get(confirm))

    unconfirmed = post_form(client, confirm, confirm)
    assert unconfirmed.status_code == 422 and "Tick the box to confirm." in field_errors(unconfirmed, "confirm")
    assert directory.get_user("kim") is not None and not by_admin("user.delete")

    done = post_form(client, confirm, confirm, {"confirm": "y"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/admin/people")
    assert directory.get_user("kim") is None
    assert by_admin("user.delete")[0].username == "kim"
    assert client.get("/admin/people/kim").status_code == 404


def test_missing_csrf_token_is_refused(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("lee")
    assert client.post("/admin/people/lee/disable").status_code == 400
    assert client.post("/admin/people/new", data={"username": "mia"}).status_code == 400
    assert client.post("/admin/people/lee/delete", data={"confirm": "y", "csrf_token": "forged"}).status_code == 400
    assert directory.require_user("lee").enabled and directory.get_user("mia") is None


def test_effective_access_is_linked_from_the_user_page(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("nia", groups=["engineers"])
    accounts.add_account("111122223333", name="Production", actor="test",
                         saml_provider_arn="arn:aws:iam::111122223333:saml-provider/bridge")
    permission_sets.add_permission_set("ReadOnly", PermissionSetSpec(session_hours=2), actor="test")
    assignments.assign("group:engineers", "ReadOnly", account="111122223333", actor="test")

    assert 'href="/admin/people/nia/access"' in text(client.get("/admin/people/nia"))
    page = text(client.get("/admin/people/nia/access"))
    assert "Production" in page and "111122223333" in page and "ReadOnly" in page
    assert "arn:aws:iam::111122223333:role/ReadOnly" in page and "group engineers via account 111122223333" in page
    assert "No account." in text(client.get("/admin/people/root/access"))


def test_text_the_database_cannot_store_is_refused_with_400(client: FlaskClient) -> None:
    # PostgreSQL stores no NUL (its driver raises before the query): refused on every database, and said why.
    sign_in_admin(client)
    make_user("xena")
    created = post_form(client, "/admin/people/new", "/admin/people/new",
                        {"username": "yuri", "display_name": "Yuri\x00", "password": ""})
    assert created.status_code == 400 and "cannot be stored (a NUL character" in text(created)
    assert directory.get_user("yuri") is None and not by_admin("user.create")
    edited = post_form(client, "/admin/people/xena", "/admin/people/xena/profile", {"email": "x\x00@example.com"})
    assert edited.status_code == 400 and directory.require_user("xena").email is None
    for path in ("/admin/people?q=xe%00na", "/admin/audit?username=%00", "/admin/people/xe%00na",
                 "/admin/groups/a%00b"):
        refused = client.get(path)
        assert refused.status_code == 400 and "cannot be stored" in text(refused), path
    assert client.get("/admin/people?q=xena").status_code == 200


# --- people: directory users ------------------------------------------------------------------------------


def test_a_directory_users_profile_is_read_only(client: FlaskClient) -> None:
    sign_in_admin(client)
    shadow_user("olga")
    resp = client.get("/admin/people/olga")
    page = text(resp)
    assert resp.status_code == 200
    # The one form is the local groups' (the admin group exists); none for what the directory owns.
    assert [f.action for f in lxml.html.fromstring(page).forms] == ["/admin/people/olga/groups"]
    assert "comes from the directory corp" in page and "ldap-engineers" in page and "olga@corp.example" in page

    token = csrf_token(text(client.get("/admin/people/root")))
    for action, data in (("profile", {"email": "x@example.com"}), ("disable", {}), ("delete", {"confirm": "y"}),
                         ("password", {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})):
        refused = client.post(f"/admin/people/olga/{action}", data={"csrf_token": token, **data})
        assert refused.status_code == 409, action
    olga = directory.require_user("olga")
    assert olga.enabled and olga.email == "olga@corp.example" and olga.password_hash is None


def test_a_directory_user_joins_and_leaves_a_local_group_from_their_page(client: FlaskClient) -> None:
    """As through the group's page and the API: local groups are the bridge's own, whoever the member."""
    sign_in_admin(client)
    shadow_user("olga")
    directory.create_group("aws-admins", actor="test")
    page = "/admin/people/olga"
    assert post_form(client, page, f"{page}/groups", {"add_group": "aws-admins"}).status_code == 303
    assert [g.name for g in directory.require_user("olga").groups] == ["aws-admins"]
    assert by_admin("group.add_member")[0].username == "olga"
    shown = lxml.html.fromstring(text(client.get(page)))
    local = shown.xpath("//section[h2='Local groups']")[0].text_content()
    reported = shown.xpath("//section[h2='Groups from the directory']")[0].text_content()
    assert "aws-admins" in local and "ldap-engineers" not in local and "ldap-engineers" in reported

    removal = f"{page}/groups/remove?group=aws-admins"
    assert post_form(client, removal, removal, {"group": "aws-admins", "confirm": "y"}).status_code == 303
    olga = directory.require_user("olga")
    assert olga.groups == [] and olga.external_groups == ["ldap-engineers"]  # the directory's, untouched
    assert by_admin("group.remove_member")[0].username == "olga"

    # The admin group: leaving it locally ends her admin rights, unless her directory reports it too.
    shadow_user("oscar", groups=("idp-admins",))
    for user in ("olga", "oscar"):
        directory.add_member("idp-admins", user, actor="test")
    db.session.commit()
    for user, warned in (("olga", True), ("oscar", False)):
        confirm = text(client.get(f"/admin/people/{user}/groups/remove?group=idp-admins"))
        assert ("can no longer use these pages" in confirm) is warned, user


# --- groups -------------------------------------------------------------------------------------------------


def test_create_a_group_and_manage_its_members(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("pat")
    resp = post_form(client, "/admin/groups", "/admin/groups", {"name": "auditors", "description": "Read logs"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/groups/auditors")
    assert by_admin("group.create")[0].details == {"group": "auditors"}
    assert "Read logs" in text(client.get("/admin/groups"))

    page = "/admin/groups/auditors"
    assert post_form(client, page, f"{page}/members", {"username": "PAT"}).status_code == 303
    assert [u.username for u in directory.require_group("auditors").members] == ["pat"]
    assert by_admin("group.add_member")[0].username == "pat"
    nobody = post_form(client, page, f"{page}/members", {"username": "nobody"})
    assert nobody.status_code == 422 and "no user 'nobody'" in field_errors(nobody, "username")

    removal = f"{page}/members/remove?member=pat"
    assert f'href="{removal}"' in text(client.get(page))
    one_click = post_form(client, removal, removal, {"member": "pat"})
    assert one_click.status_code == 422 and [u.username for u in directory.require_group("auditors").members] == [
        "pat"]
    assert post_form(client, removal, removal, {"member": "pat", "confirm": "y"}).status_code == 303
    assert directory.require_group("auditors").members == []
    assert by_admin("group.remove_member")[0].username == "pat"


def test_edit_a_groups_description(client: FlaskClient) -> None:
    sign_in_admin(client)
    directory.create_group("oncall", actor="test", description="Paged at night")
    page = "/admin/groups/oncall"
    assert "Paged at night" in text(client.get(page))
    saved = post_form(client, page, f"{page}/description", {"description": "  Paged day and night "})
    assert saved.status_code == 303 and "Saved the description of oncall." in flashed(client.get(page))
    assert directory.require_group("oncall").description == "Paged day and night"
    [event] = by_admin("group.update")
    assert event.details == {"group": "oncall", "description": {"from": "Paged at night",
                                                                 "to": "Paged day and night"}}
    too_long = post_form(client, page, f"{page}/description", {"description": "x" * 1025})
    assert too_long.status_code == 422 and "1024" in field_errors(too_long, "description")
    assert post_form(client, page, f"{page}/description", {"description": ""}).status_code == 303
    assert directory.require_group("oncall").description is None and len(by_admin("group.update")) == 2


def test_taking_someone_out_of_the_admin_group_is_confirmed_with_a_warning(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("wes", groups=["idp-admins"])
    for removal, hidden in (("/admin/groups/idp-admins/members/remove?member=wes", {"member": "wes"}),
                            ("/admin/people/wes/groups/remove?group=idp-admins", {"group": "idp-admins"})):
        confirm = text(client.get(removal))
        assert "idp-admins is the admin group: wes can no longer use these pages." in confirm
        # One click (a POST without the box ticked, or naming no one) takes no one out.
        assert post_form(client, removal, removal, hidden).status_code == 422
        assert post_form(client, removal, removal.split("?")[0], {"confirm": "y"}).status_code == 400
        assert [u.username for u in directory.require_group("idp-admins").members] == ["root", "wes"]
    assert not by_admin("group.remove_member")
    # Taking oneself out says so.
    own = "/admin/groups/idp-admins/members/remove?member=root"
    assert "and neither can you, from your next page." in text(client.get(own))
    assert post_form(client, own, own, {"member": "root", "confirm": "y"}).status_code == 303
    assert client.get("/admin/groups").status_code == 403


def test_group_name_refusals_are_shown_next_to_the_field(client: FlaskClient) -> None:
    sign_in_admin(client)
    directory.create_group("Finance", actor="test")
    bad = post_form(client, "/admin/groups", "/admin/groups", {"name": "has space"})
    assert bad.status_code == 422 and "invalid group name" in field_errors(bad, "name")
    taken = post_form(client, "/admin/groups", "/admin/groups", {"name": "finance"})
    assert taken.status_code == 422 and "already exists" in field_errors(taken, "name")
    empty = post_form(client, "/admin/groups", "/admin/groups", {"name": ""})
    assert empty.status_code == 422 and "A group needs a name." in field_errors(empty, "name")
    assert not by_admin("group.create")


def test_delete_a_group_after_confirming(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("quinn", groups=["temps"])
    confirm = "/admin/groups/temps/delete"
    unconfirmed = post_form(client, confirm, confirm)
    assert unconfirmed.status_code == 422 and directory.get_group("temps") is not None

    assert post_form(client, confirm, confirm, {"confirm": "y"}).status_code == 303
    assert directory.get_group("temps") is None and directory.require_user("quinn").groups == []
    assert by_admin("group.delete")[0].details == {"group": "temps", "members": ["quinn"]}


def test_directory_groups_are_shown_read_only(client: FlaskClient) -> None:
    sign_in_admin(client)
    shadow_user("rae", groups=("CN=Developers",))
    listed = text(client.get("/admin/groups"))
    assert "Groups from directories" in listed and "CN=Developers" in listed
    resp = client.get("/admin/groups/CN=Developers")
    assert resp.status_code == 200 and "<form" not in text(resp) and "/admin/people/rae" in text(resp)
    assert client.get("/admin/groups/no-such-group").status_code == 404


# --- who is an admin ----------------------------------------------------------------------------------------


def test_non_admins_are_refused_and_audited(client: FlaskClient) -> None:
    make_user("sam")
    assert login(client, "sam", DEFAULT_PASSWORD).status_code == 302
    token = csrf_token(text(client.get("/login?force=1")))
    for path in ("/admin/", "/admin/people", "/admin/people/sam", "/admin/groups", "/admin/people/sam/access"):
        assert client.get(path).status_code == 403, path
    for path, data in (("/admin/people/new", {"username": "mallory", "password": ""}),
                       ("/admin/groups", {"name": "sneaky"}), ("/admin/people/sam/delete", {"confirm": "y"})):
        assert client.post(path, data={"csrf_token": token, **data}).status_code == 403, path
    assert directory.get_user("mallory") is None and directory.get_group("sneaky") is None
    assert directory.get_user("sam") is not None
    denied = events("admin.denied")
    assert len(denied) == 8 and {e.username for e in denied} == {"sam"}
    assert denied[0].details == {"path": "/admin/people/sam/delete"} and denied[0].outcome == "failure"


def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    resp = client.get("/admin/people")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_admin_group_comes_from_idp_admin_group(with_directories: Callable[..., Flask]) -> None:
    app = with_directories(admin_group="platform-team")
    make_user("tess", groups=["platform-team"])
    make_user("uma", groups=["idp-admins"])  # the default group's name means nothing here
    tess, uma = app.test_client(), app.test_client()
    assert login(tess, "tess", DEFAULT_PASSWORD).status_code == 302
    assert login(uma, "uma", DEFAULT_PASSWORD).status_code == 302
    assert tess.get("/admin/people").status_code == 200
    assert uma.get("/admin/people").status_code == 403
    assert events("admin.denied")[0].reason == "not a member of platform-team"
    # An admin's change names them, whatever the group is called.
    assert post_form(tess, "/admin/groups", "/admin/groups", {"name": "new-team"}).status_code == 303
    assert [e.actor for e in events("group.create") if e.details == {"group": "new-team"}] == ["admin:tess"]


def test_every_page_renders_for_an_admin(client: FlaskClient) -> None:
    sign_in_admin(client)
    make_user("vic", groups=["crew"])
    for path in ("/admin/people", "/admin/people/new", "/admin/people/vic", "/admin/people/vic/access",
                 "/admin/people/vic/delete", "/admin/groups", "/admin/groups/crew", "/admin/groups/crew/delete"):
        assert client.get(path).status_code == 200, path
    assert not form_errors(client.get("/admin/people/vic"))
