"""A full disk ends the step in one line naming the folder and the space needed, leaves every
published version readable and resumes once space returns (issue 24 item 4).

The errors are real: writes to ``/dev/full`` (ENOSPC on every Linux) and, where a tmpfs can be
mounted (root or CAP_SYS_ADMIN), a small file system of the test's own that it fills.
"""

import errno
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from fastdistill_assets.core.diskspace import (
    DiskFull,
    is_full,
    named_if_full,
    size_text,
)
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.store.chunks import ChunkSpool
from fastdistill_assets.store.storage import ArtifactStore, ParquetIOManager
from fastdistill_assets_tests.conftest import materialize, teacher_gateway

DEV_FULL = Path("/dev/full")
LINE = re.compile(r"disk full: cannot write under (?P<folder>\S+) \((?P<free>[\d.,]+ [KM]iB) free, "
                  r"(about (?P<needed>[\d.,]+ [KM]iB)|more) is needed\); free space and materialize again: "
                  r"published versions and finished parts are kept")
FRAME = pl.DataFrame({"text": [f"row {i} " + "x" * 200 for i in range(20_000)]})


def _dev_full_errors() -> list[tuple[str, BaseException]]:
    """Real errors of writing to /dev/full, one per library that writes here."""
    found = []
    # through an open handle: a library given the path may write a temporary file and rename it
    # over the device
    for name, write in (("open", lambda handle: handle.write(b"x" * 100_000)),
                        ("polars", FRAME.write_parquet),
                        ("pyarrow", lambda handle: pq.write_table(FRAME.to_arrow(), handle))):
        try:
            with DEV_FULL.open("wb") as handle:
                write(handle)
        except Exception as err:  # noqa: BLE001 - the error each library raises is what is tested
            found.append((name, err))
    return found


needs_dev_full = pytest.mark.skipif(not DEV_FULL.is_char_device(), reason="no /dev/full device on this machine")


@needs_dev_full
def test_every_library_s_full_disk_error_is_recognised_and_nothing_else_is():
    errors = _dev_full_errors()
    assert [name for name, _ in errors] == ["open", "polars", "pyarrow"]
    assert all(is_full(err) for _, err in errors)
    assert not is_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_full(ValueError("teacher said: (os error 28)"))     # only a library's own message counts
    assert not is_full(sqlite3.OperationalError("database is locked"))


@needs_dev_full
def test_a_full_disk_is_named_in_one_line(tmp_path):
    with pytest.raises(DiskFull) as raised, named_if_full(tmp_path, 3 * 2**20), DEV_FULL.open("wb") as handle:
        handle.write(b"x" * 100_000)
    full = raised.value
    match = LINE.fullmatch(str(full))
    assert match and match["folder"] == str(tmp_path) and match["needed"] == "3.0 MiB"
    assert full.metadata()["folder"] == str(tmp_path) and full.metadata()["needed_bytes"] == 3 * 2**20
    assert full.free_bytes > 0 and "\n" not in str(full)
    with pytest.raises(PermissionError), named_if_full(tmp_path):   # other errors pass through as they are
        raise PermissionError(errno.EACCES, "Permission denied")


# -- on a small file system of the test's own ----------------------------------------------------

@pytest.fixture
def small_disk(project) -> Path:
    """The project's artifacts root on a 64 MiB tmpfs."""
    project.artifacts.mkdir(exist_ok=True)
    assert not any(project.artifacts.iterdir())
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(project.artifacts)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    yield project.artifacts
    subprocess.run(["umount", "-l", str(project.artifacts)], check=True)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; delete the file returned to free it."""
    filler = folder / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 2**16)
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def test_a_version_that_does_not_fit_fails_in_one_line_and_the_published_one_stays(small_disk):
    store, io = ArtifactStore(small_disk), ParquetIOManager(root=str(small_disk))
    small = FRAME.head(10)
    store.write("r1", "raw", small)
    filler = _fill(small_disk)
    # ``with``: the context's ephemeral Dagster instance is closed again, leaving no state behind
    with dg.build_output_context(asset_key=dg.AssetKey("raw"), partition_key="r1") as context, \
            pytest.raises(dg.Failure) as raised:
        io.handle_output(context, FRAME)
    match = LINE.fullmatch(raised.value.description)
    assert match and match["folder"] == str(small_disk / "r1" / "raw")
    assert match["needed"] == size_text(FRAME.estimated_size()) and FRAME.estimated_size() > 2**20
    assert raised.value.metadata["folder"].value == str(small_disk / "r1" / "raw")
    assert store.read("r1", "raw").equals(small)                          # still the published version
    versions = small_disk / "r1" / "raw" / "versions"
    assert [p.name for p in versions.iterdir() if p.name.startswith(".")] == []   # the half-written one is gone

    spool = ChunkSpool(small_disk / "_work" / "raw", "fingerprint")
    with pytest.raises(DiskFull, match=re.escape(str(spool.folder))):
        spool.write(0, FRAME)
    assert not spool.done(0) and list(spool.folder.iterdir()) == []   # no half-written part left behind

    filler.unlink()                                                    # space returns: both go on
    spool.write(0, FRAME)
    assert spool.done(0)
    store.write("r1", "raw", FRAME)
    assert store.read("r1", "raw").equals(FRAME)


# nothing free: the run's lock cannot record its holder; 32 KiB: the teacher's response cache cannot grow
@pytest.mark.parametrize(("spare_kib", "where"), [(0, "_locks"), (32, "_cache")])
def test_a_teacher_stage_on_a_full_disk_fails_in_one_line_and_resumes_when_space_returns(project, small_disk,
                                                                                       spare_kib, where):
    project.edit_config("run_config", dataset={"limit_per_split": 40, "splits": ["train"]})
    project.new_run("r1")
    materialize(project, [raw, canonical], "r1")
    store = ArtifactStore(project.artifacts)
    canon = store.read("r1", "canonical")
    current = (store.stage_dir("r1", "canonical") / "CURRENT").read_text()

    filler = _fill(small_disk)
    os.truncate(filler, filler.stat().st_size - spare_kib * 1024)
    stages = [raw, canonical, teacher_candidates]
    result = materialize(project, stages, "r1", selection=[teacher_candidates], teacher=teacher_gateway(project),
                         raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    match = LINE.fullmatch(description)
    assert match, description
    assert match["folder"] == str(small_disk / where)
    assert "Traceback" not in failure.step_failure_data.error.message
    assert store.read("r1", "canonical").equals(canon)                # published versions untouched, readable
    assert (store.stage_dir("r1", "canonical") / "CURRENT").read_text() == current
    with pytest.raises(FileNotFoundError):
        store.read("r1", "teacher_candidates")

    filler.unlink()
    materialize(project, stages, "r1", selection=[teacher_candidates], teacher=teacher_gateway(project))
    candidates = store.read("r1", "teacher_candidates")
    assert candidates["sample_id"].to_list() == canon["sample_id"].to_list()   # each sample once, none lost
    assert candidates["error"].null_count() == candidates.height
