import ductile.domain.settle


def test_domain_imports() -> None:
    assert ductile.domain.settle.settle is not None


def test_an_outcome_repr_names_sizes_not_bytes() -> None:
    from ductile.domain.outcome import SpawnOutcome

    text = repr(SpawnOutcome(exit_code=0, stdout=b"x" * 10_000_000, stderr_tail=b"e" * 70))
    assert "<10000000 bytes>" in text
    assert "<70 bytes>" in text
    assert len(text) < 400
