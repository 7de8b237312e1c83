#!/usr/bin/env bash
# Debian packages the project uses when it can install them (root or sudo), else it says what is missing:
#   python3.11-doc  the real Python FAQ HTML that `llmops data ingest python-faq` reads
#   shellcheck      lets actionlint check the `run:` scripts of the workflows
#   chromium chromium-driver  the headless browser of the chat-page test (tests/serving/test_chat_page.py)
set -uo pipefail
need=()
[ -d /usr/share/doc/python3.11/html/faq ] || need+=(python3.11-doc)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=$(command -v sudo || true)
if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
  echo "note: cannot install ${need[*]} (not root, no sudo); the steps that need them will say so" >&2
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || echo "note: apt-get could not install ${need[*]}" >&2
fi
exit 0
