"""The native pool (workers/native.py): analysis in child processes that may die by a
real signal without taking this process with them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediamill.pipeline.analysis import analyse_file
from mediamill.schemas.errors import (
    CorruptMediaError,
    TransientError,
    UnsupportedMediaError,
    WorkerCrashedError,
)
from mediamill.workers.native import NativePool
from mediamill.workers.native_child import CRASH_MARKER


def _crash_file(d: Path, signal_name: str) -> Path:
    path = d / f"crash-{signal_name}.wav"
    path.write_bytes(CRASH_MARKER + signal_name.encode() + b"\n" + os.urandom(2048))
    return path


@pytest.fixture
def pool() -> NativePool:
    with NativePool(2, test_crashes=True).start() as p:
        yield p


def test_results_match_the_in_process_analysis(
    pool: NativePool, samples: dict[str, Path]
) -> None:
    for name in ("music.flac", "surround.flac", "video.mp4"):
        seen: list[float] = []
        got = pool.analyse(samples[name], on_progress=seen.append)
        assert got == analyse_file(samples[name])
        assert seen and seen[-1] == 1.0


@pytest.mark.parametrize("signal_name", ["SIGSEGV", "SIGABRT", "SIGKILL"])
def test_a_crash_fails_the_task_after_one_retry_and_the_pool_goes_on(
    pool: NativePool, samples: dict[str, Path], tmp_path: Path, signal_name: str
) -> None:
    children_before = {c.proc.pid for c in list(pool._idle.queue)}
    with pytest.raises(WorkerCrashedError) as caught:
        pool.analyse(_crash_file(tmp_path, signal_name), stage="analyse")
    error = caught.value
    assert error.permanent
    assert error.context == {"stage": "analyse", "how": f"died by {signal_name}"}
    assert f"died by {signal_name} (2 tries)" in error.message
    # Two children died and were replaced; the next task runs.
    assert pool.analyse(samples["music.flac"]).media.channels == 2
    assert not children_before & {c.proc.pid for c in list(pool._idle.queue)}


def test_a_child_that_exits_without_a_signal_is_a_transient_error(
    pool: NativePool, tmp_path: Path
) -> None:
    """An exit status is Python failing (an import, the environment), not the bytes: the
    job is retried later and the asset is not condemned."""
    with pytest.raises(TransientError, match="exited with status 3 before answering"):
        pool.analyse(_crash_file(tmp_path, "EXIT"))


def test_a_child_that_cannot_start_is_a_transient_error(tmp_path: Path) -> None:
    """A child whose interpreter cannot even start (here: no standard library) dies with
    the request unread, which resets the socket: still our TransientError."""
    with NativePool(1) as broken:
        broken._env["PYTHONHOME"] = str(tmp_path / "nowhere")
        with pytest.raises(TransientError, match="before answering"):
            broken.probe_duration_s(tmp_path / "x.wav")


def test_crash_files_are_plain_bad_media_unless_tests_enable_them(tmp_path: Path) -> None:
    with NativePool(1).start() as production, pytest.raises(UnsupportedMediaError):
        production.analyse(_crash_file(tmp_path, "SIGSEGV"))


def test_errors_come_back_by_name(pool: NativePool, tmp_path: Path) -> None:
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with pytest.raises(CorruptMediaError, match="empty"):
        pool.analyse(empty)


def test_probe_of_a_path_and_of_a_stream(pool: NativePool, samples: dict[str, Path]) -> None:
    assert pool.probe_duration_s(samples["music.flac"]) == pytest.approx(6.0, abs=0.05)
    with samples["music.flac"].open("rb") as stream:  # fed through a pipe
        assert pool.probe_duration_s(stream) == pytest.approx(6.0, abs=0.05)


def test_an_interrupted_wait_kills_the_busy_child(
    pool: NativePool, samples: dict[str, Path]
) -> None:
    """A time limit reaches the waiting thread as an exception (here from the progress
    callback): the child, maybe mid-decode, is killed, and the pool starts another."""

    class Interrupted(BaseException):
        pass

    def interrupt(_fraction: float) -> None:
        raise Interrupted

    pids = {c.proc.pid for c in list(pool._idle.queue)}
    with pytest.raises(Interrupted):
        pool.analyse(samples["music.flac"], on_progress=interrupt)
    busy = pids - {c.proc.pid for c in list(pool._idle.queue)}
    assert len(busy) == 1
    (pid,) = busy
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert pool.analyse(samples["music.flac"]).media.channels == 2
