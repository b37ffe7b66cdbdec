import ductile.domain.settle


def test_domain_imports() -> None:
    assert ductile.domain.settle.settle is not None


def test_an_outcome_repr_names_sizes_not_bytes() -> None:
    from ductile.domain.outcome import SpawnOutcome

    text = repr(SpawnOutcome(exit_code=0, stdout=b"x" * 10_000_000, stderr_tail=b"e" * 70))
    assert "<10000000 bytes>" in text
    assert "<70 bytes>" in text
    assert len(text) < 400


def test_the_public_api_loads_lazily_and_resolves() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ductile\n"
        "assert 'ductile.app.bootstrap' not in sys.modules\n"
        "assert ductile.Ductile.__name__ == 'Ductile'\n"
        "assert set(ductile.__all__) >= {'Ductile', 'load_config', 'DuctileError'}\n"
        "for name in ductile.__all__: getattr(ductile, name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_new_job_takes_its_plugins_retry_limit() -> None:
    from datetime import UTC, datetime

    from ductile.domain.config import Config, PluginConfig, ServiceConfig
    from ductile.domain.job import JobStatus, SubmittedBy
    from ductile.domain.retry import RetryPolicy

    config = Config(
        service=ServiceConfig(state_dir="/s"),
        plugins_dir="/p",
        plugins={"a": PluginConfig(name="a", retry=RetryPolicy(max_attempts=7))},
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    job = config.new_job("a", "poll", job_id="j1", now=now, submitted_by=SubmittedBy.CLI, dedupe_key="k")
    assert (job.status, job.max_attempts, job.payload, job.dedupe_key, job.created_at) == (
        JobStatus.QUEUED,
        7,
        {},
        "k",
        now,
    )
    other = config.new_job("b", "poll", job_id="j2", now=now, submitted_by=SubmittedBy.API)
    assert other.max_attempts == 4  # a plugin without an entry gets the defaults
