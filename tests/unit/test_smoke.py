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
