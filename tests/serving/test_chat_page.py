"""The chat page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
type a question, watch the answer stream in, click thumbs-up, and find the entry in the feedback store.

    .venv/bin/pytest tests/serving/test_chat_page.py -q -m slow
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.monitoring.live_app import live_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver (scripts/system-deps.sh installs them)"),
]


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("selenium", reason="selenium comes with the test extra")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_chat_streams_an_answer_and_stores_feedback(micro_model: Path, tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with live_app(micro_model, tmp_path / "home") as app:
        browser.get(app.url + "/chat")
        # record every text the answer element shows, to see the stream arrive in pieces
        browser.find_element(By.ID, "api-key").send_keys(app.user_key)
        browser.execute_script("""
            window.__seen = [];
            new MutationObserver(() => {
              const a = document.querySelector('.assistant .text');
              if (a && window.__seen[window.__seen.length - 1] !== a.textContent) window.__seen.push(a.textContent);
            }).observe(document.getElementById('conversation'), {subtree: true, childList: true, characterData: true});
        """)
        browser.find_element(By.ID, "question").send_keys("What is a <b>lambda</b> in Python?")
        browser.find_element(By.ID, "send").click()
        wait = WebDriverWait(browser, 60)
        turn = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".assistant[data-state='done']")))
        answer = turn.find_element(By.CSS_SELECTOR, ".text").text
        seen = browser.execute_script("return window.__seen")
        assert answer.strip(), "no answer was shown"
        assert len([s for s in seen if s]) >= 2, f"the answer did not stream: {seen}"
        # the user's text is shown as text, not parsed as HTML
        assert browser.find_elements(By.CSS_SELECTOR, ".user b") == []
        assert "<b>lambda</b>" in browser.find_element(By.CSS_SELECTOR, ".user .text").text
        assert "micro-v1" in turn.find_element(By.CSS_SELECTOR, ".meta").text

        turn.find_element(By.CSS_SELECTOR, "button.thumb-up").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".assistant").get_attribute("data-feedback") == "up")
        (entry,) = list(app.store.read())
        assert entry["rating"] == "up" and entry["prompt"] == "What is a <b>lambda</b> in Python?"
        assert entry["response"] == answer.strip() or entry["response"].strip() == answer.strip()
        assert entry["model"] == "micro-v1" and entry["colour"] is None
        assert entry["key_id"] == app.user_key.split("_")[1]

        # the conversation is kept: a second question is sent with the first exchange
        browser.find_element(By.ID, "question").send_keys("And a closure?")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".assistant[data-state='done']")) == 2)
        assert len(browser.find_elements(By.CSS_SELECTOR, ".turn")) == 4
        assert app.writer.pending() == 2  # both answers reached the profile writer too


def test_without_a_key_the_page_shows_the_refusal(micro_model: Path, tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with live_app(micro_model, tmp_path / "home") as app:
        browser.get(app.url + "/chat")
        browser.find_element(By.ID, "question").send_keys("What is a list?")
        browser.find_element(By.ID, "send").click()
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-state='error']"))
        assert "missing API key" in browser.find_element(By.ID, "status").text
        assert browser.find_elements(By.CSS_SELECTOR, "button.thumb-down") == []  # no answer, nothing to rate
        assert app.writer.pending() == 0 and list(app.store.read()) == []
