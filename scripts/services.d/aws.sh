# shellcheck shell=bash
# A strict double of AWS IAM + STS (moto in server mode) and of SES's SMTP interface, for the
# aws-iam-key and aws-ses-smtp targets: tests/support/aws_double.py says what it enforces.
# Python packages come from the test extras (moto[server]).

AWS_PORT=45100
AWS_SMTP_PORT=45125
AWS_REGION_SMTP=eu-west-1
AWS_STATE="$STATE/aws"
AWS_PY="${PYTHON:-python3}"

aws_up() {
    "$AWS_PY" - "$AWS_PORT" <<'PY'
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
PY
}
if ! aws_up >>"$OUT" 2>&1 || [[ ! -s "$AWS_STATE/admin.json" ]]; then
    "$AWS_PY" -c 'import moto.server, aiosmtpd' >>"$OUT" 2>&1 \
        || die "moto[server] is missing: pip install -e '.[all,test]' first"
    install -d -m 700 "$AWS_STATE"
    rm -f "$AWS_STATE/admin.json"
    # exec: no shell stays behind holding the caller's stdout open
    (cd "$ROOT" && exec setsid "$AWS_PY" -m tests.support.aws_double --port "$AWS_PORT" \
        --smtp-port "$AWS_SMTP_PORT" --region "$AWS_REGION_SMTP" --state "$AWS_STATE" \
        >"$AWS_STATE/log" 2>&1 </dev/null) &
    wait_for "the AWS double (moto) on 127.0.0.1:$AWS_PORT" aws_up
    wait_for "the AWS double's admin key" test -s "$AWS_STATE/admin.json"
fi
aws_admin() {  # aws_admin FIELD
    "$AWS_PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
        "$AWS_STATE/admin.json" "$1"
}
test_env KEYTURN_TEST_AWS_ENDPOINT "http://127.0.0.1:$AWS_PORT"
test_env KEYTURN_TEST_AWS_ACCESS_KEY_ID "$(aws_admin access_key_id)"
test_env KEYTURN_TEST_AWS_SECRET_ACCESS_KEY "$(aws_admin secret)"
test_env KEYTURN_TEST_SES_SMTP_HOST 127.0.0.1
test_env KEYTURN_TEST_SES_SMTP_PORT "$AWS_SMTP_PORT"
test_env KEYTURN_TEST_SES_SMTP_REGION "$AWS_REGION_SMTP"
test_env KEYTURN_TEST_SES_SMTP_CA "$AWS_STATE/smtp-ca.pem"
echo "aws double (moto, strict): 127.0.0.1:$AWS_PORT, SES SMTP 127.0.0.1:$AWS_SMTP_PORT ($AWS_REGION_SMTP)"
