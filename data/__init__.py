"""Data: everything that turns raw material into a versioned dataset folder `datasets/<name>/`.

    llmops data ingest python-faq
    llmops data ingest file faq.csv --name team-faq --question q --answer a --license CC-BY-4.0
    llmops feedback export

- data/clean.py: text cleaning (NFKC, invisible characters, HTML to text, slugs);
- data/split.py: the deterministic train/eval split that keeps related and near-duplicate rows on one side;
- data/ingest.py: the Python FAQ HTML and a team's table file (CSV, JSON, JSONL, Parquet) -> dataset folders;
- data/feedback.py: rated chat answers -> a candidate dataset folder and a review file;
- data/cards.py: the one dataset-card builder (`card_for`) both paths write their README.md with.

The row and card schema, JSONL reading/writing and card parsing stay in llmops/dataset.py (the core);
the checks of the data gate (`llmops data check`) are governance/datacheck.py. Like training and
serving, this stage meets the others through files (the dataset folders), never imports.
"""
