"""Ingest: the Python FAQ HTML (synthetic and real) and a team's CSV/JSON/JSONL/Parquet file.

    .venv/bin/pytest tests/data/test_ingest.py -q
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data.clean import clean_prose, html_fragment_to_text, slugify
from data.ingest import PYTHON_FAQ_DIR
from llmops.cli import main
from llmops.dataset import load_card, read_jsonl
from llmops.files import sha256_file

HEADERLINK = '<a class="headerlink" href="#{id}" title="Permalink to this heading">¶</a>'


def _section(level: int, sid: str, title: str, body: str) -> str:
    return (f'<section id="{sid}">\n<h{level}><a class="toc-backref" href="#x">{title}</a>'
            f'{HEADERLINK.format(id=sid)}</h{level}>\n{body}\n</section>\n')


def _page(title: str, sections: str) -> str:
    return ("<html><head><title>x</title></head><body>"
            '<div class="sphinxsidebar"><h3>Navigation</h3><p>not content</p></div>'
            f'<div class="body" role="main">{_section(1, "page", title, sections)}</div></body></html>')


CODE = ('<div class="highlight-python3 notranslate"><div class="highlight"><pre><span></span>'
        '<span class="k">def</span> <span class="nf">f</span>(x):\n    <span class="k">return</span> '
        'x &lt; 2\n</pre></div></div>')


def _question(i: int, extra: str = "") -> str:
    return (f"<p>Answer number {i} explains <code class=\"docutils literal\"><span class=\"pre\">thing_{i}"
            f"</span></code>&nbsp;in   detail\u200b with caf\u00e9 and \ufb01ne words about topic{i}.</p>{extra}")


@pytest.fixture
def faq_dir(tmp_path: Path) -> Path:
    """Two Sphinx-like FAQ pages: one grouped by h2 sections (h3 questions), one with h2 questions."""
    folder = tmp_path / "faq-html"
    folder.mkdir()
    groups = ""
    n = 0
    for g in range(4):
        questions = ""
        for _ in range(3):
            n += 1
            extra = CODE if n == 1 else ('<ul><li><p>first item</p></li><li><p>second item</p></li></ul>'
                                         if n == 2 else "")
            questions += _section(3, f"q{n}", f"How do I do thing {n}?", _question(n, extra))
        groups += _section(2, f"group-{g}", f"Group {g}", "<p>intro, not a question</p>" + questions)
    (folder / "programming.html").write_text(_page("Programming FAQ", groups), encoding="utf-8")
    flat = "".join(_section(2, f"d{i}", f"Why design choice {i}?", _question(100 + i)) for i in range(4))
    flat += _section(2, "what-is-python", "How do I do thing 1?", _question(999))  # same question as page 1
    (folder / "design.html").write_text(_page("Design FAQ", flat), encoding="utf-8")
    (folder / "index.html").write_text(_page("FAQ", "<p>links only</p>"), encoding="utf-8")
    return folder


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setenv("LLMOPS_ROOT", str(root))
    monkeypatch.delenv("LLMOPS_HOME", raising=False)
    monkeypatch.chdir(root)
    return root


def rows_of(folder: Path, name: str) -> list[dict]:
    return [r for _, r in read_jsonl(folder / name)]


def test_synthetic_faq_ingest_extracts_clean_pairs(repo: Path, faq_dir: Path) -> None:
    assert main(["data", "ingest", "python-faq", "--source", str(faq_dir)]) == 0
    folder = repo / "datasets" / "python-faq"
    train, held_out = rows_of(folder, "train.jsonl"), rows_of(folder, "eval.jsonl")
    rows = {r["id"]: r for r in train + held_out}
    assert len(rows) == 12 + 5 and held_out and train
    first = rows["programming-how-do-i-do-thing-1"]
    assert first["question"] == "How do I do thing 1?"
    assert first["source"] == "https://docs.python.org/3.11/faq/programming.html#q1"
    assert first["tags"] == ["programming", "group-0"]
    # inline code joined into the sentence, nbsp/zero-width/ligature normalised, whitespace collapsed
    assert first["answer"].startswith("Answer number 1 explains thing_1 in detail with café and fine words")
    assert "def f(x):\n    return x < 2" in first["answer"]  # code block kept with its indentation
    assert "- first item\n- second item" in rows["programming-how-do-i-do-thing-2"]["answer"]
    assert rows["design-why-design-choice-0"]["tags"] == ["design"]
    for row in rows.values():
        assert not re.search(r"<[a-z/][^>]*>|&[a-z]+;|¶|\u200b", row["question"] + row["answer"])
        assert "intro, not a question" not in row["answer"] and "Navigation" not in row["answer"]
    # the same question on two pages joins their groups: both rows land on the same side
    sides = {r["id"]: "eval" for r in held_out} | {r["id"]: "train" for r in train}
    assert sides["programming-how-do-i-do-thing-1"] == sides["design-how-do-i-do-thing-1"]
    for group in ("group-1", "group-2"):  # a section is never split
        assert len({sides[r["id"]] for r in rows.values() if group in r["tags"]}) == 1
    card = load_card(folder)
    assert card.license == "PSF-2.0"
    assert card.files["train.jsonl"].rows == len(train) and card.files["eval.jsonl"].rows == len(held_out)
    assert card.files["train.jsonl"].sha256 == sha256_file(folder / "train.jsonl")
    assert card.command == f"llmops data ingest python-faq --source {faq_dir}"
    assert main(["data", "check"]) == 0


def test_reingest_reproduces_the_same_bytes_and_keeps_the_date(repo: Path, faq_dir: Path) -> None:
    argv = ["data", "ingest", "python-faq", "--source", str(faq_dir)]
    assert main(argv) == 0
    folder = repo / "datasets" / "python-faq"
    card_path = folder / "README.md"
    card_path.write_text(re.sub(r"created: '[^']+'", "created: '2001-02-03'", card_path.read_text()))
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    assert main(argv) == 0
    assert {p.name: sha256_file(p) for p in folder.iterdir()} == before
    assert load_card(folder).created == "2001-02-03"


def test_missing_source_is_an_input_error(repo: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "ingest", "python-faq", "--source", str(tmp_path / "nowhere")]) == 2
    assert "python3.11-doc" in capsys.readouterr().err


def _team_rows(n: int = 20) -> list[dict]:
    topics = ["billing", "login", "export", "search"]
    return [{"qid": f"T{i:03d}", "q": f"How do I handle case {i} in module {i * 7}?",
             "a": f"For case {i}, call handler_{i}() and check the {i * 3} results carefully.",
             "ctx": f"Module {i * 7} documents handler_{i}.", "topic": topics[i % 4]} for i in range(n)]


def _write_table(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    {".csv": lambda: frame.to_csv(path, index=False),
     ".parquet": lambda: frame.to_parquet(path, index=False),
     ".json": lambda: path.write_text(json.dumps(rows)),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[path.suffix]()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json", ".jsonl"])
def test_table_ingest_maps_columns_and_groups(repo: Path, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"team{suffix}"
    _write_table(path, _team_rows())
    argv = ["data", "ingest", "file", str(path), "--name", "team-faq", "--question", "q", "--answer", "a",
            "--context", "ctx", "--id", "qid", "--group", "topic", "--license", "CC-BY-4.0"]
    assert main(argv) == 0
    folder = repo / "datasets" / "team-faq"
    train, held_out = rows_of(folder, "train.jsonl"), rows_of(folder, "eval.jsonl")
    assert len(train) + len(held_out) == 20 and len(held_out) == 5  # one topic of four held out
    assert len({int(r["id"][1:]) % 4 for r in held_out}) == 1
    row = next(r for r in train + held_out if r["id"] == "T003")
    assert row == {"id": "T003", "question": "How do I handle case 3 in module 21?",
                   "answer": "For case 3, call handler_3() and check the 9 results carefully.",
                   "context": "Module 21 documents handler_3.", "source": f"{path.as_posix()}#row=4",
                   "tags": ["team-faq"]}
    card = load_card(folder)
    assert card.license == "CC-BY-4.0" and card.source == path.as_posix()
    assert card.llmops.source_sha256 == sha256_file(path)
    assert main(["data", "check", "team-faq"]) == 0
    before = sha256_file(folder / "train.jsonl")
    assert main(argv) == 0 and sha256_file(folder / "train.jsonl") == before


def test_table_ingest_without_ids_cleans_html_and_drops_exact_duplicates(repo: Path, tmp_path: Path) -> None:
    rows = _team_rows(12)
    rows[0]["a"] = "<p>Use <b>bold</b> &amp; <code>x&lt;y</code></p><pre>if x:\n    y()</pre>"
    rows.append(dict(rows[5]))
    path = tmp_path / "team.csv"
    _write_table(path, rows)
    assert main(["data", "ingest", "file", str(path), "--name", "plain", "--question", "q", "--answer", "a",
                 "--license", "MIT"]) == 0
    folder = repo / "datasets" / "plain"
    all_rows = rows_of(folder, "train.jsonl") + rows_of(folder, "eval.jsonl")
    assert len(all_rows) == 12 and load_card(folder).llmops.cleaning["dropped_exact_duplicates"] == 1
    assert all(re.fullmatch(r"plain-[0-9a-f]{12}", r["id"]) for r in all_rows)
    cleaned = next(r for r in all_rows if r["question"] == rows[0]["q"])
    assert cleaned["answer"] == "Use bold & x<y\n\nif x:\n    y()"


@pytest.mark.parametrize(("change", "expected"), [
    ({"--answer": "missing"}, "no column 'missing' for --answer"),
    ({"--license": "not a licence"}, "SPDX"),
    ({"--name": "Bad Name"}, "dataset name"),
])
def test_table_ingest_bad_usage_exits_2(repo: Path, tmp_path: Path, capsys, change: dict, expected: str) -> None:
    path = tmp_path / "team.csv"
    _write_table(path, _team_rows())
    options = {"--name": "t", "--question": "q", "--answer": "a", "--license": "MIT", **change}
    argv = ["data", "ingest", "file", str(path)] + [x for kv in options.items() for x in kv]
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
    assert not (repo / "datasets" / "t").exists()


def test_table_ingest_empty_answer_names_file_line_and_column(repo: Path, tmp_path: Path, capsys) -> None:
    rows = _team_rows()
    rows[6]["a"] = "   "
    path = tmp_path / "team.csv"
    _write_table(path, rows)
    assert main(["data", "ingest", "file", str(path), "--name", "t", "--question", "q", "--answer", "a",
                 "--license", "MIT"]) == 2
    assert f"{path}:8 [a]: empty 'a' in data row 7" in capsys.readouterr().err


def test_cleaning_helpers() -> None:
    assert clean_prose(" a\u00a0 b\n\tc\u200b\x07 ") == "a b c"
    assert html_fragment_to_text("<ol><li>one</li><li>two</li></ol>") == "1. one\n2. two"
    assert slugify("Can I create my own functions in C++?") == "can-i-create-my-own-functions-in-c-plus-plus"


@pytest.mark.skipif(not PYTHON_FAQ_DIR.is_dir(), reason="Debian's python3.11-doc is not installed")
def test_real_python_faq_ingest_passes_the_data_check(repo: Path, repo_root: Path) -> None:
    assert main(["data", "ingest", "python-faq"]) == 0
    folder = repo / "datasets" / "python-faq"
    card = load_card(folder)
    assert card.files["train.jsonl"].rows + card.files["eval.jsonl"].rows >= 150
    assert card.files["eval.jsonl"].rows >= 20
    assert main(["data", "check"]) == 0
    committed = repo_root / "datasets" / "python-faq"
    if (committed / "README.md").is_file():
        committed_card = load_card(committed)
        if committed_card.llmops.source_sha256 == card.llmops.source_sha256:  # same Debian package build
            assert committed_card.files == card.files  # the committed files are what ingest makes
