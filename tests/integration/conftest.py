import pytest

from tests.labkit import Lab, lab_doc, leftovers, new_lab_name


@pytest.fixture
def make_lab(tmp_path):
    """Factory for throw-away labs; every lab made is brought down (--purge) afterwards."""
    made: list[Lab] = []

    def factory(workloads: bool = False, **edits) -> Lab:
        lab = Lab(tmp_path, lab_doc(new_lab_name(), workloads=workloads, **edits))
        made.append(lab)
        return lab

    yield factory
    for lab in made:
        lab.down("--purge", check=False)
        assert not any(leftovers(lab.name).values()), f"lab {lab.name} left {leftovers(lab.name)}"


@pytest.fixture(scope="module")
def module_lab(tmp_path_factory):
    """One default-shaped lab (no workloads) shared by the read-only tests of a module."""
    lab = Lab(tmp_path_factory.mktemp("lab"), lab_doc(new_lab_name()))
    lab.up()
    yield lab
    lab.down("--purge", check=False)
