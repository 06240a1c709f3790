# shellcheck shell=bash
# Headless Chromium from Debian for the dashboard's Playwright tests (tests/web/). Playwright
# drives this binary (executable_path); no browser is downloaded by Playwright.
if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium fonts-dejavu-core
fi
if ! "${PYTHON:-python3}" -c "import playwright" >/dev/null 2>&1; then
    quiet "${PYTHON:-python3}" -m pip install "playwright>=1.44"
fi
test_env KEYTURN_TEST_CHROMIUM "$(command -v chromium)"
echo "chromium: $(chromium --version 2>/dev/null | head -n 1)"
