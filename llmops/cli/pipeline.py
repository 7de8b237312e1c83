"""Pipeline commands: run the pipelines pipeline.yaml declares.

    llmops pipeline main [KEY=VALUE ...]       # the README's main job (bash scripts/main-job.sh)
    llmops pipeline merge
    llmops pipeline merge --render argo-workflows --out build/merge-workflow.yaml
    llmops pipeline stage train [--pipeline main]   # one stage, as each task of that workflow runs it
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def pipeline() -> None:
    """Run the declared jobs end to end."""


@pipeline.command("main")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=Path("training/config.yaml"),
              show_default=True, help="The training config (YAML).")
@click.option("--spec", "spec_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="The pipelines file (default: pipeline.yaml); runs its `main` pipeline.")
@click.option("--force", is_flag=True, help="Run every stage, even those whose inputs are unchanged.")
@click.option("--neutral", is_flag=True, help="The change is meant to be neutral: register on a tie with production.")
@click.argument("overrides", nargs=-1)
def main_job(config_path: Path, spec_path: Path | None, force: bool, neutral: bool,
             overrides: tuple[str, ...]) -> None:
    """Run pipeline.yaml's main pipeline: data check, train, export + parity, base-model eval, eval (gated
    beside the base model), register.

    OVERRIDES are key=value pairs on the training config. Unchanged stages are skipped. Exits 1 (nothing
    registered) when a gate fails.
    """
    from llmops.jobs.pipeline import run_pipeline
    from llmops.report import Report
    from llmops.settings import Settings

    settings = Settings.load()
    path = config_path if config_path.is_absolute() else settings.root / config_path
    run = run_pipeline(settings, "main", spec_path=spec_path, force=force, neutral=neutral, config_path=path,
                       overrides=overrides, echo=click.echo)
    comparison = run.folder / "eval" / "comparison.md"
    if comparison.is_file():
        click.echo("\n" + comparison.read_text().rstrip())
    total = sum(r.seconds for r in run.results)
    click.echo("\n| stage | status | seconds |\n|---|---|---|")
    for r in run.results:
        click.echo(f"| {r.name} | {r.status} | {r.seconds:.0f} |")
    click.echo(f"| **total** (goal: at most 720 once installed, on 2 cores) | | **{total:.0f}** |")
    registered = Report.load(run.folder / "register" / "report.json").info.get("registered")
    click.echo(f"\nmain job done in {total:.0f}s: registered version {registered} (alias candidate)")
    click.echo(f"eval report: {run.folder / 'eval' / 'report.md'}")
    click.echo(f"job folder:  {run.folder} (each stage's log: <stage>/stage.log)")


@pipeline.command("merge")
@click.option("--force", is_flag=True, help="Run every stage, even those whose inputs are unchanged.")
@click.option("--neutral", is_flag=True, help="The change is meant to be neutral: register on a tie with production.")
@click.option("--render", type=click.Choice(["argo-workflows"]), default=None,
              help="Run nothing: write the pipeline as an Argo Workflow for a Kubernetes cluster (validated first).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --render: the file to write (default: standard output).")
@click.option("--image", default=None,
              help="With --render: the image the stages run in (default llmops-worker:cuda, docker/Dockerfile).")
def merge(force: bool, neutral: bool, render: str | None, out_path: Path | None, image: str | None) -> None:
    """Run pipeline.yaml: data check, tokenise, train, deepeval, rule evals, safety, export + parity, load test,
    register.

    Unchanged stages are skipped; after a failure, fix it and run again to resume. With --render, the
    same stages become an Argo Workflow DAG, each memoised by the stage's hash as computed here.
    """
    from llmops.settings import Settings

    if render is None:
        if out_path is not None or image is not None:
            raise click.UsageError("--out and --image go with --render")
        from llmops.jobs.pipeline import run_pipeline

        run = run_pipeline(Settings.load(), "merge", force=force, neutral=neutral, echo=click.echo)
        ran = [r.name for r in run.results if r.status == "ran"]
        click.echo(f"\npipeline done: ran {ran or 'nothing'}, skipped {len(run.results) - len(ran)}; "
                   f"summary {run.folder / 'summary.md'}")
        return
    from llmops.jobs.pipeline_argo import DEFAULT_IMAGE, checked_workflow, write_workflow

    settings = Settings.load()
    options = {"image": image or DEFAULT_IMAGE, "neutral": neutral, "memoize": not force}
    if out_path is None:
        click.echo(checked_workflow(settings, "<stdout>", **options), nl=False)
        return
    write_workflow(settings, out_path, **options)
    click.echo(f"wrote {out_path} (Argo Workflow, schema-checked); submit it with `argo submit {out_path}`",
               err=True)


@pipeline.command("stage")
@click.argument("stage_name", metavar="STAGE")
@click.option("--pipeline", "pipeline_name", type=click.Choice(["merge", "main"]), default="merge",
              show_default=True, help="Which pipeline of pipeline.yaml the stage belongs to.")
@click.option("--neutral", is_flag=True, help="As `pipeline merge --neutral` (the register stage reads it).")
@click.option("--expect-hash", default=None,
              help="Refuse to run unless the stage's inputs here hash to this (the manifest's memoize key).")
def stage(stage_name: str, pipeline_name: str, neutral: bool, expect_hash: str | None) -> None:
    """Run one stage of pipeline.yaml as `pipeline merge` runs it, unconditionally: what each task of the
    Argo Workflow runs (Argo's memoize does the skipping there)."""
    from llmops.jobs.pipeline import run_one_stage
    from llmops.settings import Settings

    run_one_stage(Settings.load(), stage_name, pipeline_name, neutral=neutral, expect_hash=expect_hash,
                  echo=click.echo)
