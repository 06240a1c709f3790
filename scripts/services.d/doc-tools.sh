# Tools the doc examples call (tests/docs runs every page of README.md and docs/): curl for
# docs/api.md; psql comes with the PostgreSQL packages above.
if ! command -v curl >/dev/null 2>&1; then
    apt_install curl
fi
echo "doc tools: $(curl --version | head -n 1 | cut -d' ' -f1-2)"
