"""Jobs: the orchestration of stages behind `llmops pipeline main|merge` (pipeline, register, base_eval), `llmops gate pr`,
`llmops release|rollback|status` and the job benchmarks (`llmops bench gate|rollback`).

They sit in the CLI layer: they import the stages (training, evals, serving, governance) and hand
files and URLs between them. The core modules of `llmops` never import a job.
"""
