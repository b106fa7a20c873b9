"""harness.hosts.hugepages against a model of the kernel's 2 MiB pool (free pages follow nr_hugepages, as the
kernel's do when memory allows): what a test lacks is added, exactly that is given back, a killed run's pages are
given back at the next start, and a user without the pages is told what would do."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.hosts import hugepages


class Pool:
    def __init__(self, total: int, in_use: int = 0, grantable: int = 10_000) -> None:
        self.total, self.in_use, self.grantable = total, in_use, grantable

    def read(self, name: str) -> int:
        return {"nr_hugepages": self.total, "free_hugepages": self.total - self.in_use}[name]

    def set(self, pages: int) -> None:
        self.total = min(pages, self.grantable)


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Pool:
    model = Pool(total=4)
    monkeypatch.setattr(hugepages, "SYSFS", tmp_path)          # exists: the host "supports" 2 MiB pages
    monkeypatch.setattr(hugepages, "_read", model.read)
    monkeypatch.setattr(hugepages, "_set_pool", model.set)
    monkeypatch.setattr(hugepages.os, "geteuid", lambda: 0)
    return model


def test_pages_for_rounds_each_side_up() -> None:
    assert hugepages.pages_for(256 << 20) == 256
    assert hugepages.pages_for((2 << 20) + 1, sides=1) == 2


def test_missing_pages_are_added_for_the_body_and_exactly_they_are_given_back(pool: Pool, tmp_path: Path) -> None:
    with hugepages.reserved(10, root=tmp_path) as capability:
        assert capability.available and "6 2 MiB hugepages added" in capability.reason
        assert pool.total == 10 and (tmp_path / "hugepages-added.json").exists()
    assert pool.total == 4 and not (tmp_path / "hugepages-added.json").exists()


def test_a_host_with_enough_free_pages_is_left_alone(pool: Pool, tmp_path: Path) -> None:
    with hugepages.reserved(3, root=tmp_path) as capability:
        assert capability.available and pool.total == 4
    assert pool.total == 4


def test_too_little_memory_for_the_pool_is_unavailable_and_still_given_back(pool: Pool, tmp_path: Path) -> None:
    pool.grantable = 7
    with hugepages.reserved(10, root=tmp_path) as capability:
        assert not capability.available and "only 7 of 10" in capability.reason
    assert pool.total == 4


def test_a_user_is_told_the_sysctl_and_nothing_changes(pool: Pool, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hugepages.os, "geteuid", lambda: 1000)
    with hugepages.reserved(10, root=tmp_path) as capability:
        assert not capability.available and "sysctl vm.nr_hugepages=10" in capability.reason
    assert pool.total == 4


def test_a_killed_runs_pages_are_given_back_at_the_next_start(pool: Pool, tmp_path: Path) -> None:
    pool.total = 10                                         # a run added 6 and was SIGKILLed
    (tmp_path / "hugepages-added.json").write_text('{"added": 6, "pid": 1}\n')
    assert hugepages.reap_stale(tmp_path) == 6 and pool.total == 4
    assert hugepages.reap_stale(tmp_path) == 0


def test_reaping_waits_for_no_live_holder(pool: Pool, tmp_path: Path) -> None:
    with hugepages.reserved(10, root=tmp_path):
        assert hugepages.reap_stale(tmp_path) == 0 and pool.total == 10    # the live test gives its own back
    assert pool.total == 4
