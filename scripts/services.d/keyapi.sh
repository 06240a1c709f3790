# shellcheck shell=bash
# The double of a key-issuing SaaS API (tests/support/keyapi_double.py) as a server, for the
# runnable example of docs/targets/http-api-key.md (the tests start their own, one per test).

KEYAPI_PORT=45180
KEYAPI_STATE="$STATE/keyapi"
KEYAPI_PY="${PYTHON:-python3}"

keyapi_up() {
    (exec 3<>"/dev/tcp/127.0.0.1/$KEYAPI_PORT") 2>/dev/null && [[ -s "$KEYAPI_STATE/admin-token" ]]
}
if ! keyapi_up; then
    install -d -m 700 "$KEYAPI_STATE"
    # exec: no shell stays behind holding the caller's stdout open
    (cd "$ROOT" && exec setsid "$KEYAPI_PY" -m tests.support.keyapi_double \
        --port "$KEYAPI_PORT" --admin-token-file "$KEYAPI_STATE/admin-token" \
        >"$KEYAPI_STATE/log" 2>&1 </dev/null) &
    wait_for "the key-issuing API double on 127.0.0.1:$KEYAPI_PORT" keyapi_up
fi
test_env KEYTURN_TEST_KEYAPI_URL "http://127.0.0.1:$KEYAPI_PORT"
test_env KEYTURN_TEST_KEYAPI_ADMIN_TOKEN "$(cat "$KEYAPI_STATE/admin-token")"
echo "key API double: 127.0.0.1:$KEYAPI_PORT"
