"""Blue/green serving, release, rollback and status commands.

    llmops gateway run --port 8000          # the gateway; loads `production` into blue on first start
    llmops release v1.3.0                   # tag -> the version trained from its commit; or a version / alias
    llmops rollback --reason "errors after v1.3.0" [--to 3]
    llmops status
    llmops gateway bench                    # added latency of the gateway (p50/p99, ms)
    llmops gateway bench-rollback           # rollback under load: seconds to 100 % on the old colour

Guarded by governance/policy.yaml: release needs `release`, rollback needs `rollback` (LLMOPS_API_KEY
or the local role); the gateway's admin API checks the same key. Exit codes: 0 done, 1 the release
was aborted by its analysis (traffic is back on the stable colour), 2 bad input or permission denied.
release, rollback and status are the job in llmops/jobs/release.py (the policy: serving/rollout.yaml,
read by serving/rollout.py); bench-rollback is llmops/jobs/bench.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

GATEWAY_URL = click.option("--gateway", "gateway_url", default=None,
                           help="Gateway URL (default: the one recorded in <home>/gateway/state.json).")


@click.command()
@click.argument("version")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Rollout config (default: serving/rollout.yaml).")
@GATEWAY_URL
@click.option("--fault", default=None, hidden=True,
              help="Test only: inject a fault into the preview worker (needs LLMOPS_ALLOW_FAULTS=1 on the gateway).")
@click.option("--target", type=click.Choice(["local", "kubernetes"]), default="local", show_default=True,
              help="local: drive the gateway here. kubernetes: render Argo Rollouts manifests (needs --render).")
@click.option("--render", "render_dir", type=click.Path(path_type=Path), default=None,
              help="With --target kubernetes: the folder the manifests are written to.")
@click.option("--image", default=None, help="With --target kubernetes: the serving image (default from serving/k8s/values.yaml).")
@click.option("--namespace", default="llmops", show_default=True, help="With --target kubernetes: the namespace.")
@click.option("--commit", default=None, metavar="SHA",
              help="For a tag VERSION: the commit it points at (default: the tag in this checkout). The release is "
                   "the newest version the merge job trained from that commit.")
def release(version: str, config_path: Path | None, gateway_url: str | None, fault: str | None, target: str,
            render_dir: Path | None, image: str | None, namespace: str, commit: str | None) -> None:
    """Release VERSION (a registry version, an alias, or a tag vX.Y.Z = the version trained from the
    tagged commit) blue/green."""
    if target == "kubernetes":
        from llmops.errors import InputError
        from serving.k8s_render import render_cli

        if render_dir is None:
            raise InputError("--target kubernetes needs --render DIR", field="--render")
        for path in render_cli(version, render_dir, image=image, namespace=namespace):
            click.echo(str(path))
        return
    from llmops.jobs.release import release as run_release

    result = run_release(version, config=config_path, gateway_url=gateway_url, fault=fault, commit=commit,
                         log=lambda msg: click.echo(msg, err=True))
    click.echo(f"released version {result.version} on {result.colour}")


@click.command()
@click.option("--reason", required=True, help="Why (goes into the audit log and the alias history).")
@click.option("--to", "to", default=None, help="Version or alias to roll back to (default: the other colour).")
@GATEWAY_URL
def rollback(reason: str, to: str | None, gateway_url: str | None) -> None:
    """Move traffic back to the previous colour (or --to VERSION) and `production` with it."""
    from llmops.jobs.release import rollback as run_rollback

    result = run_rollback(reason=reason, to=to, gateway_url=gateway_url, log=lambda msg: click.echo(msg, err=True))
    click.echo(f"rolled back to version {result['version']} on {result['colour']} "
               f"({result['switch_s'] * 1000:.0f} ms)")


@click.command()
@GATEWAY_URL
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def status(gateway_url: str | None, as_json: bool) -> None:
    """Colours, versions, weights, alias history and the last analysis."""
    from llmops.jobs.release import status_report

    data = status_report(gateway_url=gateway_url)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    gw = data["gateway"]
    live = "live" if data["gateway_live"] else f"DOWN ({data.get('gateway_error', '')}); saved state"
    click.echo(f"gateway {gw.get('gateway', {}).get('url', '?')} [{live}]  stable: {gw['stable']}  "
               f"preview: {gw['preview']}")
    for colour, cs in gw["colours"].items():
        up = "up" if cs.get("up") else ("stopped" if not cs.get("pid") else "down")
        click.echo(f"  {colour:5} version {cs['version'] or '-':>4}  weight {cs['weight']:3d} %  {up}"
                   + (f"  fault {cs['fault']}" if cs.get("fault") else ""))
    click.echo("aliases: " + ", ".join(f"{k}={v}" for k, v in sorted(data["aliases"].items())))
    for entry in data["alias_history"]:
        click.echo(f"  {entry['time']}  {entry['alias']}: {entry['from']} -> {entry['to']}  {entry['reason']}")
    last = data["last_analysis"]
    if last:
        click.echo(f"last analysis: version {last.get('version')} -> {last.get('verdict')} "
                   f"{'; '.join(last.get('reasons') or [])}")
        for phase in last.get("phases", []):
            ms = phase.get("measurements")
            checks = phase.get("checks")
            detail = (", ".join(f"{k} {'ok' if v['passed'] else 'FAIL'}" for k, v in checks.items()) if checks
                      else " ".join(m["verdict"] for m in ms or []))
            click.echo(f"  {phase['phase']}: {detail}")


@click.group()
def gateway() -> None:
    """The blue/green gateway (serving/gateway/)."""


@gateway.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--health-interval", default=0.5, show_default=True, type=float, help="Seconds between health checks.")
@click.option("--worker-threads", default=None, type=int, help="--threads of each worker (default: all cores).")
@click.option("--keep-workers", is_flag=True, help="Leave the workers running when the gateway stops.")
@click.option("--rate-limit", default=None, metavar="RATE",
              help="Requests to /v1/* per client, e.g. '600/minute'; 'off' for none (default: DEFAULT_RATE).")
@click.option("--auth", type=click.Choice(["keys", "off"]), default="keys", show_default=True,
              help="keys: /v1/* needs an API key whose role holds `chat` (serving/auth.py); off: loopback tests only.")
def gateway_run(host: str, port: int, health_interval: float, worker_threads: int | None, keep_workers: bool,
                rate_limit: str | None, auth: str) -> None:
    """Run the gateway in the foreground; workers are restored from the saved state."""
    from serving.auth import check_mode, insecure_notice
    from serving.gateway.app import run_gateway
    from serving.gateway.core import GatewayOptions

    check_mode(auth, host)
    if auth == "off":
        click.echo(insecure_notice(host, port), err=True)
    click.echo(f"gateway on http://{host}:{port}", err=True)
    from serving.ratelimit import DEFAULT_RATE

    run_gateway(options=GatewayOptions(host=host, port=port, health_interval=health_interval,
                                       worker_threads=worker_threads, keep_workers=keep_workers,
                                       rate_limit=rate_limit or DEFAULT_RATE, auth=auth))


@gateway.command("status")
@GATEWAY_URL
def gateway_status(gateway_url: str | None) -> None:
    """The gateway's live state as JSON (needs metrics.read)."""
    from serving.gateway.client import GatewayClient

    client = GatewayClient(gateway_url)
    try:
        click.echo(json.dumps(client.status(), indent=2))
    finally:
        client.close()


@gateway.command("bench")
@GATEWAY_URL
@click.option("-n", "n", default=500, show_default=True, type=click.IntRange(min=20), help="Requests per side.")
@click.option("--path", default="/v1/models", show_default=True, help="GET path sent both ways.")
def gateway_bench(gateway_url: str | None, n: int, path: str) -> None:
    """Added latency: the stable worker called directly vs through the gateway, interleaved in one run."""
    from serving.gateway.client import GatewayClient
    from serving.gateway.testing import bench_gateway

    client = GatewayClient(gateway_url)
    try:
        st = client.status()
    finally:
        client.close()
    if not st["stable"] or not st["colours"][st["stable"]]["url"]:
        raise click.UsageError("the gateway has no running stable colour")
    result = bench_gateway(client.url, st["colours"][st["stable"]]["url"], n=n, path=path)
    click.echo(json.dumps(result, indent=2))


@gateway.command("bench-rollback")
@GATEWAY_URL
@click.option("--users", default=4, show_default=True, type=click.IntRange(1, 32))
def gateway_bench_rollback(gateway_url: str | None, users: int) -> None:
    """Rollback under load: seconds from the call to every new request on the other (warm) colour."""
    from llmops.jobs.bench import bench_rollback
    from serving.gateway.client import GatewayClient

    url = gateway_url or GatewayClient().url
    click.echo(json.dumps(bench_rollback(url, users=users), indent=2))
