# shellcheck shell=bash
# Debian's pebble (an RFC 8555 ACME test server) for the tls-certificate target, with
#   - pebble-challtestsrv as its DNS server (every name resolves to 127.0.0.1), and
#   - nginx serving the HTTP-01 webroot on 127.0.0.1:5002, where pebble validates challenges:
#     keyturn writes the token file there (webroot mode, as on a real web server).
# The TLS endpoints under test are nginx instances the tests start on their own ports.

ACME_STATE="$STATE/acme"
ACME_PORT=14000
ACME_MGMT_PORT=15000
ACME_DNS_PORT=8053
ACME_DNS_MGMT_PORT=8055
ACME_HTTP_PORT=5002
ACME_WEBROOT="$ACME_STATE/webroot"

acme_missing=()
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || acme_missing+=(pebble)
command -v nginx >/dev/null || acme_missing+=(nginx-light)
command -v openssl >/dev/null || acme_missing+=(openssl)
if ((${#acme_missing[@]})); then
    apt_install "${acme_missing[@]}"
fi
install -d -m 755 "$ACME_STATE" "$ACME_WEBROOT" "$ACME_WEBROOT/.well-known/acme-challenge"

# pebble serves its API over HTTPS: a CA of our own and a certificate for 127.0.0.1.
if [[ ! -s "$ACME_STATE/cert.pem" ]]; then
    quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=keyturn test pebble CA" -keyout "$ACME_STATE/ca.key" -out "$ACME_STATE/ca.pem"
    quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$ACME_STATE/key.pem" -out "$ACME_STATE/server.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$ACME_STATE/san.ext"
    quiet openssl x509 -req -in "$ACME_STATE/server.csr" -CA "$ACME_STATE/ca.pem" \
        -CAkey "$ACME_STATE/ca.key" -CAcreateserial -days 3650 -extfile "$ACME_STATE/san.ext" \
        -out "$ACME_STATE/cert.pem"
    chmod 600 "$ACME_STATE/ca.key" "$ACME_STATE/key.pem"
fi
cat >"$ACME_STATE/pebble.json" <<JSON
{
  "pebble": {
    "listenAddress": "127.0.0.1:$ACME_PORT",
    "managementListenAddress": "127.0.0.1:$ACME_MGMT_PORT",
    "certificate": "$ACME_STATE/cert.pem",
    "privateKey": "$ACME_STATE/key.pem",
    "httpPort": $ACME_HTTP_PORT,
    "tlsPort": 5001,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
cat >"$ACME_STATE/nginx.conf" <<NGINX
# written by scripts/services.d/acme.sh: the HTTP-01 webroot pebble validates against
worker_processes 1;
pid $ACME_STATE/nginx.pid;
error_log $ACME_STATE/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$ACME_HTTP_PORT;
        root $ACME_WEBROOT;
        location /.well-known/acme-challenge/ { default_type text/plain; }
    }
}
NGINX

port_open() {  # port_open PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
if ! port_open "$ACME_DNS_MGMT_PORT"; then
    (exec setsid pebble-challtestsrv -dns01 "127.0.0.1:$ACME_DNS_PORT" -defaultIPv4 127.0.0.1 \
        -defaultIPv6 "" -http01 "" -https01 "" -tlsalpn01 "" \
        -management "127.0.0.1:$ACME_DNS_MGMT_PORT" >"$ACME_STATE/challtestsrv.log" 2>&1 \
        </dev/null) &
    wait_for "pebble-challtestsrv on 127.0.0.1:$ACME_DNS_MGMT_PORT" port_open "$ACME_DNS_MGMT_PORT"
fi
if ! port_open "$ACME_HTTP_PORT"; then
    quiet nginx -c "$ACME_STATE/nginx.conf"
    wait_for "nginx (HTTP-01 webroot) on 127.0.0.1:$ACME_HTTP_PORT" port_open "$ACME_HTTP_PORT"
fi
if ! port_open "$ACME_PORT"; then
    # No sleeps before validation, and no nonce rejected on purpose: the tests stay quick and
    # deterministic (the acme client does retry a badNonce).
    (cd "$ACME_STATE" && PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 exec setsid pebble \
        -config "$ACME_STATE/pebble.json" -dnsserver "127.0.0.1:$ACME_DNS_PORT" -strict=false \
        >"$ACME_STATE/pebble.log" 2>&1 </dev/null) &
    wait_for "pebble on 127.0.0.1:$ACME_PORT" port_open "$ACME_PORT"
fi
test_env KEYTURN_TEST_ACME_DIRECTORY "https://127.0.0.1:$ACME_PORT/dir"
test_env KEYTURN_TEST_ACME_CA_FILE "$ACME_STATE/ca.pem"
test_env KEYTURN_TEST_ACME_ROOTS "https://127.0.0.1:$ACME_MGMT_PORT/roots/0"
test_env KEYTURN_TEST_ACME_WEBROOT "$ACME_WEBROOT"
echo "acme: pebble 127.0.0.1:$ACME_PORT (DNS 127.0.0.1:$ACME_DNS_PORT, HTTP-01 webroot $ACME_WEBROOT on :$ACME_HTTP_PORT)"
