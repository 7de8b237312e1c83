"""Jobs: the orchestration of stages behind `llmops pipeline main` and `llmops gate pr`.

They sit in the CLI layer: they import the stages (training, evals, serving, governance) and hand
files and URLs between them. The core modules of `llmops` never import a job.
"""
