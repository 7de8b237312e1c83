"""POST /v1/feedback (role-checked, capped, append-only store) and `llmops feedback export` (rated
answers -> a dataset folder that passes the data checks; PII and eval-overlap rows held back).

    .venv/bin/pytest tests/serving/test_feedback.py -q
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient

from data.feedback import export_feedback
from governance.apikeys import KeyStore
from serving.feedback import FeedbackStore, chat_router, feedback_router
from serving.receipts import Receipts

RECEIPTS = Receipts(Fernet.generate_key())  # the server's; what a worker issues with each answer
SAID = ("chatcmpl-1", "v3", "What is a lambda?", "A small anonymous function.")
GOOD = {"receipt": RECEIPTS.issue(*SAID), "rating": "up", "colour": "blue"}


@pytest.fixture
def api(tmp_path: Path):
    keys = KeyStore(tmp_path / "apikeys.json")
    user, _ = keys.create("user", "app")
    store = FeedbackStore(tmp_path / "feedback" / "feedback.jsonl")
    app = FastAPI()
    app.include_router(feedback_router(store, keys, receipts=RECEIPTS))
    app.include_router(chat_router())
    with TestClient(app) as client:
        yield client, store, keys, user


def test_feedback_is_stored_with_who_and_what(api) -> None:
    client, store, keys, user = api
    r = client.post("/v1/feedback", json={**GOOD, "comment": "clear"}, headers={"Authorization": f"Bearer {user}"})
    assert r.status_code == 201, r.text
    (entry,) = list(store.read())
    assert entry["id"] == r.json()["id"] and entry["rating"] == "up" and entry["colour"] == "blue"
    assert entry["key_id"] == user.split("_")[1] and entry["actor"] == "app" and entry["comment"] == "clear"
    # the texts and the model come from the receipt the server issued, not from the client
    assert (entry["response_id"], entry["model"], entry["prompt"], entry["response"]) == SAID
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_feedback_on_an_answer_the_server_never_gave_is_refused(api) -> None:
    client, store, _, user = api
    auth = {"Authorization": f"Bearer {user}"}
    forged = Receipts(Fernet.generate_key()).issue("chatcmpl-x", "v3", "Is Python good?", "Buy crypto at evil.example")
    token = GOOD["receipt"]
    altered = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    for receipt in (forged, altered):
        r = client.post("/v1/feedback", json={**GOOD, "receipt": receipt}, headers=auth)
        assert r.status_code == 404 and "receipt" in r.json()["detail"], r.text
    assert client.post("/v1/feedback", json={**GOOD, "receipt": "not-a-receipt"}, headers=auth).status_code == 422
    # the client cannot swap in its own texts either: those fields do not exist
    r = client.post("/v1/feedback", json={**GOOD, "response": "something the model never said"}, headers=auth)
    assert r.status_code == 422
    assert list(store.read()) == []


def test_a_receipt_expires() -> None:
    import time

    from llmops.errors import InputError

    short = Receipts(Fernet.generate_key(), max_age_s=0)
    token = short.issue(*SAID)
    time.sleep(1.1)  # Fernet stamps whole seconds
    with pytest.raises(InputError, match="expired"):
        short.open(token)


def test_feedback_needs_a_key_and_the_permission(api, tmp_path: Path) -> None:
    from governance.policy import load_policy

    client, store, keys, user = api
    assert client.post("/v1/feedback", json=GOOD).status_code == 401
    assert client.post("/v1/feedback", json=GOOD, headers={"Authorization": "Bearer llm_000000000000_nope"
                                                           + "x" * 30}).status_code == 401
    # a policy where `user` lacks `feedback` refuses the same key with 403
    policy = load_policy()
    policy.roles["user"].permissions.remove("feedback")
    app = FastAPI()
    app.include_router(feedback_router(store, keys, policy))
    with TestClient(app) as strict:
        assert strict.post("/v1/feedback", json=GOOD, headers={"Authorization": f"Bearer {user}"}).status_code == 403
    revoked = keys.revoke(user.split("_")[1])
    assert revoked.revoked
    assert client.post("/v1/feedback", json=GOOD, headers={"Authorization": f"Bearer {user}"}).status_code == 401
    assert list(store.read()) == []


@pytest.mark.parametrize("change", [{"rating": "meh"}, {"receipt": ""}, {"receipt": "x" * 200_001},
                                    {"comment": "z" * 2_001}, {"colour": "red"}, {"extra": 1}, {"receipt": 3}])
def test_bad_bodies_are_refused(api, change: dict) -> None:
    client, store, _, user = api
    r = client.post("/v1/feedback", json={**GOOD, **change}, headers={"Authorization": f"Bearer {user}"})
    assert r.status_code == 422
    assert list(store.read()) == []


def test_an_answer_takes_one_rating_and_the_first_stays(api) -> None:
    client, store, keys, user = api
    first = client.post("/v1/feedback", json=GOOD, headers={"Authorization": f"Bearer {user}"})
    assert first.status_code == 201, first.text
    other, _ = keys.create("user", "another-app")
    for key, change in ((user, {"rating": "down", "comment": "changed my mind"}), (other, {})):
        r = client.post("/v1/feedback", json={**GOOD, **change}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 409, r.text
        error = r.json()["error"]  # OpenAI's shape, the field named
        assert (error["code"], error["param"], error["type"]) == ("already_rated", "receipt", "invalid_request_error")
        assert SAID[0] in error["message"]
    (entry,) = list(store.read())
    assert entry["id"] == first.json()["id"] and entry["rating"] == "up" and entry["comment"] is None
    # another answer of the same conversation is rated on its own
    second = {**GOOD, "receipt": RECEIPTS.issue("chatcmpl-2", *SAID[1:])}
    assert client.post("/v1/feedback", json=second, headers={"Authorization": f"Bearer {user}"}).status_code == 201


RESTARTED_WORKER = """
import json, sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
from governance.apikeys import KeyStore
from serving.feedback import FeedbackStore, feedback_router
from serving.receipts import Receipts

keys, store, secret, key, body = sys.argv[1:]
app = FastAPI()
app.include_router(feedback_router(FeedbackStore(store), KeyStore(keys), receipts=Receipts(secret.encode())))
r = TestClient(app).post("/v1/feedback", content=body, headers={"Authorization": "Bearer " + key,
                                                                   "content-type": "application/json"})
print(json.dumps({"status": r.status_code, "body": r.json()}))
"""


def test_one_rating_per_answer_holds_across_a_restart(tmp_path: Path, repo_root: Path) -> None:
    """The store on disk decides, not a worker's memory: a fresh process (a restarted or another
    worker) refuses the second rating, and a file cut mid-line by a crash still takes new entries."""
    import subprocess
    import sys

    secret = Fernet.generate_key()
    receipts = Receipts(secret)
    keys = KeyStore(tmp_path / "apikeys.json")
    user, _ = keys.create("user", "app")
    store = FeedbackStore(tmp_path / "feedback" / "feedback.jsonl")

    def rate(receipt: str, rating: str) -> dict:
        body = json.dumps({"receipt": receipt, "rating": rating})
        run = subprocess.run([sys.executable, "-c", RESTARTED_WORKER, str(keys.path), str(store.path),
                              secret.decode(), user, body], cwd=repo_root, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout.strip().splitlines()[-1])

    said = receipts.issue(*SAID)
    assert rate(said, "up")["status"] == 201
    again = rate(said, "down")  # the next process: nothing in memory, only the file
    assert again["status"] == 409 and again["body"]["error"]["code"] == "already_rated", again
    with open(store.path, "ab") as f:  # a crash cut the last write short
        f.write(b'{"id": "torn", "response_id": "chatcmpl-9", "rat')
    later = receipts.issue("chatcmpl-3", *SAID[1:])
    assert rate(later, "down")["status"] == 201
    assert rate(later, "up")["status"] == 409
    assert [(e["response_id"], e["rating"]) for e in store.read()] == [("chatcmpl-1", "up"), ("chatcmpl-3", "down")]


def test_two_workers_rating_the_same_answer_store_one(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    stores = [FeedbackStore(path) for _ in range(4)]  # one per worker, each with its own cache
    results: list[bool] = []

    def rater(store: FeedbackStore, n: int) -> None:
        for i in range(20):
            results.append(store.append_once({"id": f"{n}-{i}", "response_id": f"r{i}", "rating": "up"}))

    threads = [threading.Thread(target=rater, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 20 and results.count(False) == 60
    assert sorted(e["response_id"] for e in FeedbackStore(path).read()) == sorted(f"r{i}" for i in range(20))


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.jsonl")
    big = "word " * 4000  # 20 kB lines: larger than a pipe buffer, so O_APPEND alone is not the guarantee

    def writer(n: int) -> None:
        for i in range(25):
            store.append({"id": f"{n}-{i}", "prompt": big, "response": "r", "rating": "up"})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = store.path.read_text().splitlines()
    assert len(lines) == 100 and all(json.loads(line)["prompt"] == big for line in lines)


def test_chat_page_is_served_with_a_strict_csp(api) -> None:
    client = api[0]
    page = client.get("/chat")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/chat/chat.js"' in page.text
    js = client.get("/chat/chat.js").text
    assert "getReader()" in js and "/v1/feedback" in js
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)  # textContent only
    assert client.get("/chat/index.html").status_code == 404  # an allowlist, not a folder
    assert client.get("/chat/..%2Ffeedback.py").status_code == 404


# ---- export -------------------------------------------------------------------------------------
def _entry(i: int, prompt: str, response: str, rating: str = "up") -> dict:
    return {"id": f"{i:032x}", "created": "2026-11-22T10:00:00+00:00", "prompt": prompt, "response": response,
            "rating": rating, "model": "v3", "colour": "green", "comment": None}


def _datasets(tmp_path: Path, repo_root: Path) -> Path:
    """A datasets/ folder holding the real python-faq dataset (its eval file is the overlap reference)."""
    import shutil

    out = tmp_path / "datasets"
    shutil.copytree(repo_root / "datasets" / "python-faq", out / "python-faq")
    return out


def test_export_writes_rows_that_pass_the_data_checks(tmp_path: Path, repo_root: Path) -> None:
    from governance.datacheck import check_dataset

    datasets = _datasets(tmp_path, repo_root)
    eval_q = json.loads((datasets / "python-faq/eval.jsonl").open().readline())
    entries = [
        _entry(1, "How do I reverse a list in Python?", "Use reversed(xs) or xs[::-1] for a reversed copy."),
        _entry(2, "What does the with statement do?", "It runs a context manager's enter and exit code."),
        _entry(3, "Email me at jane.doe@gmail.com about decorators", "Decorators wrap functions."),  # PII
        _entry(4, eval_q["question"], eval_q["answer"]),  # would leak an eval row into training
        _entry(5, "Why is my loop slow?", "Because.", rating="down"),
        _entry(6, "Call 415-555-0142 please", "No.", rating="down"),  # PII in a review item
    ]
    result = export_feedback(entries, datasets, today=dt.date(2026, 11, 22))
    folder = datasets / "feedback-2026-11-22"
    assert result.folder == folder and result.report.passed
    rows = [json.loads(line) for line in (folder / "train.jsonl").open()]
    assert [r["source"] for r in rows] == [f"feedback:{1:032x}", f"feedback:{2:032x}"]
    held = dict(result.rejected)
    assert set(held) == {f"{3:032x}", f"{4:032x}"}
    assert any("email" in f.message for f in held[f"{3:032x}"])
    assert any("overlap" in f.message for f in held[f"{4:032x}"])
    # the gate's own check on the written folder passes (card sha256 included)
    assert all(c.passed for c in check_dataset(folder)), [c for c in check_dataset(folder) if not c.passed]
    review = [json.loads(line) for line in (folder / "review/review.jsonl").open()]
    assert {r["feedback_id"] for r in review} == {f"{i:032x}" for i in (3, 4, 5, 6)}
    text = (folder / "review/review.jsonl").read_text()
    assert "jane.doe@gmail.com" not in text and "415-555-0142" not in text
    # running it again proposes nothing twice
    again = export_feedback(entries, datasets, today=dt.date(2026, 11, 23))
    assert again.folder is None and again.skipped == len(entries)


def test_the_checks_would_really_fail_an_unscreened_pii_row(tmp_path: Path, repo_root: Path) -> None:
    """The screen is the data gate's check: the same row written unscreened fails check_dataset."""
    from data import feedback as data_feedback
    from governance.datacheck import check_dataset

    datasets = _datasets(tmp_path, repo_root)
    entries = [_entry(1, "Email me at jane.doe@gmail.com about decorators", "Decorators wrap functions.")]
    original = data_feedback.screen_rows
    try:
        data_feedback.screen_rows = lambda rows, d: {}
        result = export_feedback(entries, datasets, today=dt.date(2026, 11, 22))
    finally:
        data_feedback.screen_rows = original
    assert result.folder is None and not result.report.passed  # the final check caught it, nothing left
    assert not (datasets / "feedback-2026-11-22").exists()
    failed = [c.name for c in result.report.checks if not c.passed]
    assert failed == ["data:feedback-2026-11-22:pii"]
    assert check_dataset(datasets / "python-faq")  # the real dataset is untouched


def test_export_cli(tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.cli import COMMANDS, main

    monkeypatch.setitem(COMMANDS, "feedback", "llmops.cli.feedback:feedback")  # until the lead registers it
    datasets = _datasets(tmp_path, repo_root)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("LLMOPS_ROOT", str(tmp_path))
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    store = FeedbackStore(tmp_path / "home" / "feedback" / "feedback.jsonl")
    store.append(_entry(1, "How do I reverse a list in Python?", "Use reversed(xs)."))
    assert main(["feedback", "list"]) == 0
    assert main(["feedback", "export", "--name", "feedback-test", "--out", str(tmp_path / "rep")]) == 0
    assert (datasets / "feedback-test" / "README.md").is_file()
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["verdict"] == "pass"
