# Postfix + Dovecot for keyturn's SMTP tests; sourced by scripts/services (uses its helpers
# quiet, die, wait_for and $STATE, $OUT).
#
# A Postfix instance of our own (config and spool under $MAIL_STATE, not /etc/postfix) listens
# on 127.0.0.1:$SMTP_PORT only, does SMTP AUTH through Dovecot SASL and delivers to
# the Maildir $MAIL_BOX/inbox/ (every test address); every other transport is `error:`, so
# nothing is relayed.
# A Dovecot instance of our own (auth service only, no IMAP/POP) checks two passwd-files
# (SHA512-CRYPT, keyturn's passwd-file format): the second is the passdb it tries after the
# first, which is how `dual` keeps two values working. Neither touches /etc/postfix,
# /etc/dovecot or a system instance.

MAIL_STATE="$STATE/mail-server"
MAIL_BOX="$STATE/mail"
MAIL_AUTH="$STATE/mail-auth"
PASSWD_FILE="$MAIL_AUTH/users.passwd"
PASSWD_FILE2="$MAIL_AUTH/users2.passwd"
SMTP_PORT=2525
PF_CONF="$MAIL_STATE/postfix"
PF_SPOOL="$MAIL_STATE/postfix-spool"
DC_CONF="$MAIL_STATE/dovecot/dovecot.conf"
DC_RUN="$MAIL_STATE/dovecot-run"
MAIL_USER=kt-mail

id -u "$MAIL_USER" >/dev/null 2>&1 \
    || quiet useradd --system --no-create-home --home-dir "$MAIL_BOX" --shell /usr/sbin/nologin \
        "$MAIL_USER"
mail_uid="$(id -u "$MAIL_USER")"
mail_gid="$(id -g "$MAIL_USER")"

install -d -m 755 "$MAIL_STATE" "$PF_CONF" "$PF_SPOOL" "$MAIL_STATE/dovecot" "$MAIL_AUTH"
install -d -o postfix -g postfix -m 755 "$MAIL_STATE/postfix-data"
install -d -o "$MAIL_USER" -g "$MAIL_USER" -m 755 "$MAIL_BOX"
# Dovecot fails a lookup (a temporary error) when a passdb file is missing; create both empty.
for f in "$PASSWD_FILE" "$PASSWD_FILE2"; do
    [[ -e "$f" ]] || install -m 640 /dev/null "$f"
done

# -- Dovecot: auth only ----------------------------------------------------------------------

cat >"$DC_CONF" <<EOF
# written by scripts/services (scripts/mail/services.sh); rewritten on every run
instance_name = keyturn-test
base_dir = $DC_RUN
state_dir = $MAIL_STATE/dovecot-state
protocols = none
listen = 127.0.0.1
log_path = $MAIL_STATE/dovecot.log
ssl = no
# Postfix talks to Dovecot over a local socket; TLS on the SMTP side is Postfix's business.
disable_plaintext_auth = no
auth_mechanisms = plain login
# A refusal is answered at once (tests count failed logins, not seconds).
auth_failure_delay = 0
auth_verbose = yes
auth_debug_passwords = no
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $PASSWD_FILE
}
# dual: the value the first file does not accept is tried here.
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $PASSWD_FILE2
}
userdb {
  driver = static
  args = uid=$mail_uid gid=$mail_gid home=$MAIL_BOX/%d/%n
}
# No auth penalty (docs/targets/postfix-dovecot.md): anvil delays every login from an IP by
# 4, 8, then 15 s after failed ones, and Postfix answers 454 after 10 s. Here every client
# is 127.0.0.1 (keyturn's test logins, the SDK's fallbacks, every other test), so one test's
# refused login would stall the others. Mode 0: the auth process finds no penalty socket.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  # keyturn writes the passwd-files as root, mode 0640.
  user = root
  unix_listener $PF_SPOOL/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF

# -- Postfix: submission on loopback, SASL through Dovecot, virtual Maildir delivery --------

cat >"$PF_CONF/main.cf" <<EOF
# written by scripts/services (scripts/mail/services.sh); rewritten on every run
compatibility_level = 3.6
queue_directory = $PF_SPOOL
data_directory = $MAIL_STATE/postfix-data
maillog_file = $MAIL_STATE/postfix.log
myhostname = keyturn-test.localhost
mydomain = localhost
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
# Nothing leaves this machine: every transport but virtual delivery is an error.
relay_domains =
local_transport = error:local delivery is disabled in keyturn tests
default_transport = error:keyturn tests deliver nothing outside this machine
relay_transport = error:keyturn tests relay nothing
smtp_dns_support_level = disabled
virtual_mailbox_domains = regexp:$PF_CONF/virtual-domains
# One Maildir for every test address (virtual(8) allows no regexp substitution); tests
# find their message by its unique subject.
virtual_mailbox_maps = static:inbox/
virtual_mailbox_base = $MAIL_BOX
virtual_uid_maps = static:$mail_uid
virtual_gid_maps = static:$mail_gid
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_tls_security_level = none
# Only authenticated clients may send, and only to the test domains.
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
EOF
cat >"$PF_CONF/virtual-domains" <<'EOF'
/\.(example|test)$/ OK
EOF
cat >"$PF_CONF/master.cf" <<EOF
# written by scripts/services (scripts/mail/services.sh); no chroot, loopback only
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
local      unix  - n n -  - local
virtual    unix  - n n -  - virtual
lmtp       unix  - - n -  - lmtp
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
quiet postfix -c "$PF_CONF" post-install create-missing

if [[ -f "$DC_RUN/master.pid" ]] && kill -0 "$(cat "$DC_RUN/master.pid")" 2>/dev/null; then
    quiet doveadm -c "$DC_CONF" reload
else
    quiet dovecot -c "$DC_CONF"
fi
wait_for "Dovecot auth socket" test -S "$PF_SPOOL/private/auth"
# A Dovecot started by an older version of this script has the penalty socket: reload drops it.
wait_for "Dovecot without auth penalty" test ! -e "$DC_RUN/anvil-auth-penalty"
if postfix -c "$PF_CONF" status >>"$OUT" 2>&1; then
    quiet postfix -c "$PF_CONF" reload
else
    quiet postfix -c "$PF_CONF" start
fi
smtp_up() {
    python3 -c "import smtplib; smtplib.SMTP('127.0.0.1', $SMTP_PORT, timeout=5).quit()"
}
wait_for "Postfix on 127.0.0.1:$SMTP_PORT" smtp_up
echo "postfix+dovecot: smtp 127.0.0.1:$SMTP_PORT (passdb $PASSWD_FILE, then $PASSWD_FILE2; Maildir $MAIL_BOX/inbox)"
