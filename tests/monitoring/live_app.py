"""A real worker app (serving/app.py, micro model, torch) with the feedback and chat routers and the
profile middleware mounted, served by uvicorn on loopback in a thread: what the lead wires into
create_app, assembled here so the monitoring, feedback and browser tests exercise the real thing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmops.launch import running_app


@dataclass
class LiveApp:
    url: str
    home: Path
    writer: object  # ProfileWriter
    store: object  # FeedbackStore
    user_key: str
    developer_key: str


@contextlib.contextmanager
def live_app(model_dir: Path, home: Path, *, window_minutes: int = 60) -> Iterator[LiveApp]:
    from governance.apikeys import KeyStore
    from governance.policy import load_policy
    from serving.app import ServeLimits, create_app
    from serving.auth import ApiKeyMiddleware
    from serving.feedback import FeedbackStore, chat_router, feedback_router
    from serving.monitoring.profiles import ChatProfileMiddleware, ProfileWriter

    keystore = KeyStore(home / "apikeys.json")
    user_key, _ = keystore.create("user", "chat-page-test")
    developer_key, _ = keystore.create("developer", "dev")
    store = FeedbackStore(home / "feedback" / "feedback.jsonl")
    writer = ProfileWriter(home, window_minutes=window_minutes, background=False)
    app = create_app(model_dir, backend="torch", threads=1, model_id="micro-v1",
                     limits=ServeLimits(max_tokens_cap=64), operate=False, auth="off")
    app.include_router(feedback_router(store, keystore, receipts=app.state.serving.receipts))
    app.include_router(chat_router())
    # The API keys of this app's own key file, in the place create_app(auth="keys") puts them.
    app.add_middleware(ApiKeyMiddleware, keys=keystore, policy=load_policy())
    app.add_middleware(ChatProfileMiddleware, writer=writer)
    with running_app(app, ready_path="/readyz", what="the test app") as url:
        yield LiveApp(url, home, writer, store, user_key, developer_key)
