"""The dashboard in-process (TestClient): sessions, CSRF, roles, tenant scope, rotation.

The browser tests (test_browser.py) walk the same paths in Chromium; these pin the
server's answers, including the ones a browser would never send (forged POSTs).
"""

from __future__ import annotations

import base64
import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from keyturn import auth
from keyturn.db.models import Credential, Rotation, WebSession, utcnow
from keyturn.web import sessions
from tests.support.keyturn import Harness
from tests.web.conftest import CRED, GLOBEX, OTHER, Api, csrf_of, sign_in, wait_for


def _client(api: Api) -> TestClient:
    """A second browser on the same app, with its own cookies."""
    return TestClient(api.client.app, raise_server_exceptions=False)


def test_pages_need_a_session(api: Api) -> None:
    answer = api.client.get(f"/credentials/{CRED}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/signin?next=")


def test_sign_in_sets_a_strict_httponly_cookie_and_stores_only_a_hash(api: Api) -> None:
    form = api.client.get("/signin")
    answer = api.client.post(
        "/signin",
        data={"token": api.tokens["admin"], "csrf": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(sessions.COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "expires=" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https sets Secure
    session_id = api.client.cookies[sessions.COOKIE]
    with api.kt.app.db.read() as session:
        stored = list(session.execute(select(WebSession.id_hash)).scalars())
    assert len(stored) == 1 and session_id not in stored[0]
    page = api.client.get("/")
    assert page.status_code == 200 and CRED in page.text and GLOBEX in page.text


def test_sign_in_without_csrf_or_with_a_bad_token_is_refused(api: Api) -> None:
    refused = api.client.post("/signin", data={"token": api.tokens["admin"], "csrf": "0" * 64})
    assert refused.status_code == 403 and sessions.COOKIE not in api.client.cookies
    form = api.client.get("/signin")
    wrong = api.client.post("/signin", data={"token": "kt_wrong", "csrf": csrf_of(form.text)})
    assert wrong.status_code == 401 and "Sign-in refused" in wrong.text
    assert "kt_wrong" not in wrong.text


def test_consumer_token_cannot_sign_in(api: Api) -> None:
    form = api.client.get("/signin")
    answer = api.client.post(
        "/signin", data={"token": api.tokens["consumer"], "csrf": csrf_of(form.text)}
    )
    assert answer.status_code == 401
    assert "consumer token cannot sign in" in answer.text
    assert sessions.COOKIE not in api.client.cookies


def test_sign_out_ends_the_session(api: Api) -> None:
    csrf = sign_in(api.client, api.tokens["admin"])
    session_id = api.client.cookies[sessions.COOKIE]
    assert (
        api.client.post("/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    )
    api.client.cookies.set(sessions.COOKIE, session_id)  # a copy of the cookie kept
    assert api.client.get("/", follow_redirects=False).status_code == 303


def test_revoking_the_token_ends_its_sessions(api: Api) -> None:
    sign_in(api.client, api.tokens["admin"])
    assert api.call("admin", "DELETE", f"/tokens/{api.token_ids['admin']}").status_code in (
        200,
        204,
    )
    assert api.client.get("/", follow_redirects=False).status_code == 303


def test_post_without_csrf_is_refused(api: Api) -> None:
    sign_in(api.client, api.tokens["admin"])
    answer = api.client.post(f"/credentials/{CRED}/rotate", data={"reason": "forged"})
    assert answer.status_code == 403 and "CSRF" in answer.text
    with api.kt.app.db.read() as session:
        assert session.execute(select(Rotation)).first() is None


def test_auditor_sees_no_rotate_button_and_a_forged_post_is_refused(api: Api) -> None:
    csrf = sign_in(api.client, api.tokens["auditor"])
    page = api.client.get(f"/credentials/{CRED}")
    assert page.status_code == 200
    assert "Rotate Credentials Now" not in page.text and "Emergency rotate" not in page.text
    forged = api.client.post(f"/credentials/{CRED}/rotate", data={"csrf": csrf, "reason": "x"})
    assert forged.status_code == 403
    with api.kt.app.db.read() as session:
        assert session.execute(select(Rotation)).first() is None


def test_operator_may_rotate_but_not_in_an_emergency(api: Api) -> None:
    csrf = sign_in(api.client, api.tokens["operator"])
    page = api.client.get(f"/credentials/{CRED}").text
    assert "Rotate Credentials Now" in page and "Emergency rotate" not in page
    forged = api.client.post(
        f"/credentials/{CRED}/rotate", data={"csrf": csrf, "reason": "x", "emergency": "true"}
    )
    assert forged.status_code == 403


def test_rotate_without_a_reason_is_refused(api: Api) -> None:
    csrf = sign_in(api.client, api.tokens["admin"])
    for reason in ("", "   "):
        answer = api.client.post(
            f"/credentials/{CRED}/rotate",
            data={"csrf": csrf, "reason": reason},
            headers={"X-Keyturn-Fragment": "1"},
        )
        assert answer.status_code == 400 and "reason is required" in answer.text
    with api.kt.app.db.read() as session:
        assert session.execute(select(Rotation)).first() is None


def test_rotate_shows_progress_then_the_new_version_and_its_audit_entry(api: Api) -> None:
    csrf = sign_in(api.client, api.tokens["admin"])
    started = api.client.post(
        f"/credentials/{CRED}/rotate",
        data={"csrf": csrf, "reason": "suspected leak in ticket 42"},
        headers={"X-Keyturn-Fragment": "1"},
    )
    assert started.status_code == 202, started.text
    assert 'data-step="create"' in started.text
    with api.kt.app.db.read() as session:
        rot = session.execute(select(Rotation)).scalar_one()
    url = f"/credentials/{CRED}/rotations/{rot.id}/progress"
    wait_for(lambda: 'data-status="done"' in api.client.get(url).text, "the rotation")
    done = api.client.get(url).text
    assert done.count('data-state="done"') == 8 and "data-poll" not in done
    page = api.client.get(f"/credentials/{CRED}?rotation={rot.id}").text
    assert 'data-version="2"' in page and "v-current" in page
    assert "rotation.done" in page and "suspected leak in ticket 42" in page


def test_emergency_dialog_previews_the_consumers_that_will_break(api: Api) -> None:
    sign_in(api.client, api.tokens["admin"])
    for name, version in (("billing", 1), ("mailer", None)):
        api.call("admin", "PUT", f"/credentials/{CRED}/consumers/{name}")
        if version:
            api.call("admin", "POST", f"/credentials/{CRED}/consumers/{name}", json={"version": 1})
    page = api.client.get(f"/credentials/{CRED}").text
    preview = page[page.index('id="at-risk"') :]
    preview = preview[: preview.index("</div>")]
    # An emergency revokes the current value at once: both break (keyturn.engine.consumers).
    assert "<strong>billing</strong>: uses version 1, which an emergency" in preview
    assert "<strong>mailer</strong>: never reported a version" in preview
    # Only the one not on the current version is flagged in the consumers table.
    assert page.count("not on current") == 1


def test_tenant_scoped_admin_sees_only_its_tenant(api: Api) -> None:
    token = api.token("acme-admin", "admin", tenant="acme")
    sign_in(api.client, token)
    inventory = api.client.get("/").text
    assert CRED in inventory and OTHER in inventory and GLOBEX not in inventory
    assert api.client.get("/?tenant=globex").text.count("globex/db") == 0
    assert api.client.get(f"/credentials/{GLOBEX}").status_code == 404
    audit = api.client.get("/audit").text
    assert "acme/smtp-admin" in audit and GLOBEX not in audit


def test_inventory_filters_and_search(api: Api) -> None:
    sign_in(api.client, api.tokens["admin"])
    by_tenant = api.client.get("/?tenant=globex").text
    assert GLOBEX in by_tenant and f'data-id="{CRED}"' not in by_tenant
    by_kind = api.client.get("/?kind=api-key").text
    assert f'data-id="{OTHER}"' in by_kind and f'data-id="{CRED}"' not in by_kind
    search = api.client.get("/?q=SMTP").text
    assert f'data-id="{CRED}"' in search and f'data-id="{OTHER}"' not in search
    assert api.client.get("/?sort=nonsense").status_code == 400


def test_no_secret_in_any_page_or_header(api: Api) -> None:
    csrf = sign_in(api.client, api.tokens["admin"])
    api.client.post(f"/credentials/{CRED}/rotate", data={"csrf": csrf, "reason": "check"})
    with api.kt.app.db.read() as session:
        rot = session.execute(select(Rotation)).scalar_one()
    progress = f"/credentials/{CRED}/rotations/{rot.id}/progress"
    wait_for(lambda: 'data-status="done"' in api.client.get(progress).text, "the rotation")
    values = api.all_values()
    assert len(values) >= 4
    pages = ["/", f"/credentials/{CRED}", f"/credentials/{OTHER}", "/audit?verify=true", progress]
    pages += [f"/credentials/{CRED}/rotate", f"/credentials/{CRED}/rotate?emergency=true"]
    for path in pages:
        answer = api.client.get(path)
        assert answer.status_code == 200, path
        seen = answer.text + "".join(f"{k}: {v}\n" for k, v in answer.headers.items())
        assert not [v for v in values if v in seen], path
        assert answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_audit_page_filters_and_verifies_the_chain(api: Api) -> None:
    sign_in(api.client, api.tokens["auditor"])
    actions = {e["action"] for e in api.call("auditor", "GET", "/audit").json()["entries"]}
    wanted = sorted(actions)[0]
    page = api.client.get(f"/audit?action={wanted}&verify=true").text
    assert "Chain verified" in page
    shown = set(re.findall(r'data-action="([^"]+)"', page))
    assert shown == {wanted} and len(actions) > 1
    assert api.client.get(f"/audit?credential={CRED}").status_code == 200
    operator = _client(api)
    sign_in(operator, api.tokens["operator"])
    assert operator.get("/audit").status_code == 403


def test_inventory_pages_past_fifty_rows_in_every_sort(api: Api) -> None:
    """120 more credentials: every sort walks all of them, 50 to a page, none twice."""
    with api.kt.app.db.write() as session:
        session.add_all(
            Credential(
                id=f"acme/bulk-{i:03d}",
                tenant_id="acme",
                kind="api-key",
                owner=f"team-{i % 7}",
                due_at=utcnow() + timedelta(days=i % 40) if i % 3 else None,
                notice_at=utcnow() + timedelta(days=i % 40 - 7) if i % 3 else None,
            )
            for i in range(120)
        )
    sign_in(api.client, api.tokens["admin"])
    for sort in ("id", "tenant", "kind", "owner", "next"):
        seen: list[str] = []
        path = f"/?sort={sort}"
        while path:
            page = api.client.get(path)
            assert page.status_code == 200, page.text
            rows = re.findall(r'<tr data-id="([^"]+)"', page.text)
            assert len(rows) <= 50
            seen += rows
            more = re.search(r'rel="next" href="([^"]+)"', page.text)
            path = more[1].replace("&amp;", "&") if more else ""
        assert len(seen) == len(set(seen)) == 123, sort
    assert "123 credentials" in api.client.get("/").text
    stale = api.client.get("/?sort=next&after=bm9wZQ")
    assert stale.status_code == 400 and "out of date" in stale.text
    # A forged link: a NULL where the column is never NULL (`[null, "a"]`), a wrong shape.
    for sort in ("tenant", "kind", "owner", "id", "next"):
        forgeries = ['["a"]', '{"a": 1}', '[1, "a"]', '["a", null]']
        for forged in forgeries + (['[null, "a"]'] if sort not in ("id", "next") else []):
            after = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
            page = api.client.get(f"/?sort={sort}&after={after}")
            assert page.status_code == 400 and "out of date" in page.text, (sort, forged)


def test_a_sign_in_link_works_once(api: Api) -> None:
    with api.kt.app.db.write() as session:
        code = sessions.create_link(session, api.token_ids["operator"])
    first = api.client.get(f"/signin/link?code={code}", follow_redirects=False)
    assert first.status_code == 303 and sessions.COOKIE in api.client.cookies
    assert "operator" in api.client.get("/").text
    again = _client(api).get(f"/signin/link?code={code}")
    assert again.status_code == 401
    # The code is no session cookie either.
    cookie = _client(api)
    cookie.cookies.set(sessions.COOKIE, code)
    assert cookie.get("/", follow_redirects=False).status_code == 303


def test_compliance_page_shows_the_report_and_its_charts(api: Api) -> None:
    from keyturn import report

    sign_in(api.client, api.tokens["auditor"])
    page = api.client.get("/compliance")
    assert page.status_code == 200
    built = report.build(api.kt.app)
    assert f"{built.total.compliant} of {built.total.credentials} credentials" in page.text
    assert set(re.findall(r'data-chart="([a-z]+)"', page.text)) == {
        "age",
        "due",
        "tenant",
        "kind",
        "trend",
    }
    acme = _client(api)
    sign_in(acme, api.token("acme-auditor", "auditor", tenant="acme"))
    scoped = acme.get("/compliance?tenant=globex").text
    assert "of 2 credentials" in scoped and GLOBEX not in scoped


def _rotation(api: Api) -> Rotation:
    with api.kt.app.db.read() as session:
        found: Rotation = (
            session.execute(select(Rotation).order_by(Rotation.id.desc())).scalars().first()
        )
        return found


def test_a_failing_rotation_shows_the_step_it_failed_at_and_why(api: Api) -> None:
    api.faults(set="reject")
    csrf = sign_in(api.client, api.tokens["operator"])
    started = api.client.post(
        f"/credentials/{CRED}/rotate",
        data={"csrf": csrf, "reason": "try it"},
        headers={"X-Keyturn-Fragment": "1"},
    )
    assert started.status_code == 202
    url = f"/credentials/{CRED}/rotations/{_rotation(api).id}/progress"
    wait_for(lambda: 'data-status="retrying"' in api.client.get(url).text, "the failure")
    shown = api.client.get(url).text
    assert 'data-step="set" data-state="failed"' in shown and "Next attempt at" in shown
    assert _rotation(api).error and _rotation(api).error in shown.replace("&#39;", "'")
    assert "data-poll" in shown  # retrying is not the end: the page keeps watching
    inventory = api.client.get("/").text
    assert "rotation failed" in inventory


def test_emergency_rotation_by_an_admin(api: Api) -> None:
    csrf = sign_in(api.client, api.tokens["admin"])
    answer = api.client.post(
        f"/credentials/{CRED}/rotate",
        data={"csrf": csrf, "reason": "key leaked in a paste", "emergency": "true"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    rot = _rotation(api)
    assert answer.headers["location"] == f"/credentials/{CRED}?rotation={rot.id}#rotation-{rot.id}"
    assert rot.trigger == "emergency" and rot.actor == f"token:{api.token_ids['admin']}"
    url = f"/credentials/{CRED}/rotations/{rot.id}/progress"
    wait_for(lambda: 'data-status="done"' in api.client.get(url).text, "the rotation")
    versions = api.call("admin", "GET", f"/credentials/{CRED}/versions").json()
    assert [v["state"] for v in versions] == ["current", "retired"]


def test_credential_page_shows_what_each_store_was_given(kt: Harness) -> None:
    """A dotenv store: the page says which version the last rotation published to it."""
    from keyturn.api import create_app
    from keyturn.domain.model import Trigger
    from keyturn.engine import service
    from tests.engine.conftest import Setup

    Setup(kt, "single", stores=True)
    done = service.rotate(kt.app, CRED, trigger=Trigger.MANUAL, actor="test", reason="r")
    assert done.status == "done"
    with kt.app.db.write() as session:
        token = auth.create_token(session, "auditor").token
    with TestClient(create_app(kt.app)) as client:
        sign_in(client, token)
        page = client.get(f"/credentials/{CRED}").text
    assert re.search(r"<strong>env</strong>: version 2 published \d{4}-\d\d-\d\d", page)


def test_over_https_the_cookie_is_secure(api: Api) -> None:
    client = TestClient(api.client.app, base_url="https://keyturn.example")
    form = client.get("/signin")
    answer = client.post(
        "/signin",
        data={"token": api.tokens["admin"], "csrf": csrf_of(form.text)},
        follow_redirects=False,
    )
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(sessions.COOKIE))
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_an_expired_session_leads_back_to_sign_in(api: Api) -> None:
    sign_in(api.client, api.tokens["admin"])
    with api.kt.app.db.write() as session:
        for row in session.execute(select(WebSession)).scalars():
            row.expires_at = utcnow() - timedelta(seconds=1)
    answer = api.client.get(f"/credentials/{CRED}", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
    fragment = api.client.get(
        f"/credentials/{CRED}/rotations/1/progress", headers={"X-Keyturn-Fragment": "1"}
    )
    assert fragment.status_code == 401 and "sign in again" in fragment.text
