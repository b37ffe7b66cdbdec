import ductile.domain.settle


def test_domain_imports() -> None:
    assert ductile.domain.settle.settle is not None
