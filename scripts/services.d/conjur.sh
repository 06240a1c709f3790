# shellcheck shell=bash
# The double of CyberArk Conjur's REST API (tests/stores/conjur_double.py) as a server, for
# the runnable example of docs/stores/conjur.md (the tests start their own, one per test).

CONJUR_PORT=45190
CONJUR_STATE="$STATE/conjur"
CONJUR_PY="${PYTHON:-python3}"

conjur_up() {
    (exec 3<>"/dev/tcp/127.0.0.1/$CONJUR_PORT") 2>/dev/null && [[ -s "$CONJUR_STATE/api-key" ]]
}
if ! conjur_up; then
    install -d -m 700 "$CONJUR_STATE"
    rm -f "$CONJUR_STATE/api-key"
    # exec: no shell stays behind holding the caller's stdout open
    (cd "$ROOT" && exec setsid "$CONJUR_PY" -m tests.stores.conjur_double \
        --port "$CONJUR_PORT" --account myorg --login host/keyturn \
        --key-file "$CONJUR_STATE/api-key" >"$CONJUR_STATE/log" 2>&1 </dev/null) &
    wait_for "the Conjur double on 127.0.0.1:$CONJUR_PORT" conjur_up
fi
test_env KEYTURN_TEST_CONJUR_URL "http://127.0.0.1:$CONJUR_PORT"
test_env KEYTURN_TEST_CONJUR_API_KEY "$(cat "$CONJUR_STATE/api-key")"
echo "conjur double: 127.0.0.1:$CONJUR_PORT (account myorg, login host/keyturn)"
