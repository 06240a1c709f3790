"""Numbers in dashboard paths are bounded as the query parameters are: a rotation number past
what the database holds is 'not found' (404), not an OverflowError (500)."""

from __future__ import annotations

from tests.web.conftest import CRED, Api, sign_in


def test_a_huge_rotation_number_is_refused_not_a_500(api: Api) -> None:
    sign_in(api.client, api.tokens["admin"])
    for number in ("99999999999999999999999", str(2**63), str(2**31)):
        answer = api.client.get(f"/credentials/{CRED}/rotations/{number}/progress")
        assert answer.status_code in (400, 404), (number, answer.status_code)
    assert api.client.get(f"/credentials/{CRED}/rotations/{2**31 - 1}/progress").status_code == 404
