"""A live run's window model in a process of its own: the same predictions as in the caller's
process, each image sent once, errors and a dead process handled."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from synthetic_clips import sideways_room

from recon.default.model import DefaultWindowModel, WindowModelError
from stream4d.contracts import Frame
from stream4d.pipeline import ReconstructConfig
from stream4d.pipeline.model_process import ModelProcess, ModelProcessError


@pytest.fixture(scope="module")
def frames():
    return [Frame(i, i / 10, im, f"room#{i}") for i, im in enumerate(sideways_room(8))]


@pytest.fixture
def served():
    with ModelProcess(ReconstructConfig(), images_held=6) as model:
        yield model


def _relative_rotations(c2w: np.ndarray) -> np.ndarray:
    return np.stack([a[:3, :3].T @ b[:3, :3] for a, b in zip(c2w[:-1], c2w[1:])])


def test_a_window_from_the_model_process_is_the_window_the_model_makes_in_process(frames, served):
    for f in frames:
        served.prepare(f)
    remote = served.predict(frames)
    in_process = DefaultWindowModel(ReconstructConfig().model)
    local = in_process.predict(frames)
    assert remote.frame_indices.tolist() == list(range(len(frames)))
    # Images held by the process since prepare() came back as they were sent.
    assert all(np.array_equal(a, f.image) for a, f in zip(remote.images, frames))
    assert np.isfinite(remote.c2w).all() and remote.depth.shape == local.depth.shape
    angle = np.degrees(np.arccos(np.clip(
        (np.trace(_relative_rotations(remote.c2w) @ _relative_rotations(local.c2w).transpose(0, 2, 1),
                  axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() < 0.05, angle
    # The stream's state (its self-calibration) lives in the process and is asked for there.
    remote_focal, local_focal = served.intrinsics_report()["windows"][0], in_process.intrinsics_report()["windows"][0]
    assert remote_focal["focal_rel"] == pytest.approx(local_focal["focal_rel"], rel=1e-3)


def test_only_images_the_process_does_not_hold_cross_again(frames, served):
    for f in frames:  # holds the last 6: frames 0 and 1 are sent again with the window
        served.prepare(f)
    assert list(served._held) == [2, 3, 4, 5, 6, 7]
    pred = served.predict(frames[:5])
    assert all(np.array_equal(a, f.image) for a, f in zip(pred.images, frames[:5]))


def test_an_error_in_the_process_is_raised_to_the_caller_with_its_type(frames, served):
    small = Frame(99, 9.9, frames[0].image[::2, ::2].copy(), "small")
    with pytest.raises(WindowModelError):
        served.predict([frames[0], small])
    assert served.predict(frames[:4]).frame_indices.tolist() == [0, 1, 2, 3]  # and it goes on


def test_a_process_that_died_is_started_again_for_the_next_window(frames, served):
    served.predict(frames[:3])
    served._proc.kill()
    served._proc.wait()
    pred = served.predict(frames[:4])
    assert served.restarts == 1 and pred.frame_indices.tolist() == [0, 1, 2, 3]


def test_close_ends_the_process(frames):
    model = ModelProcess(ReconstructConfig())
    proc = model._proc
    model.prepare(frames[0])
    model.close()
    assert proc.returncode == 0
    model.prepare(frames[1])  # a closed model takes no work and says so at the next window
    with pytest.raises(ModelProcessError, match="closed"):
        model.predict(frames[:3])
    assert model.intrinsics_report() is None


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_process_runs_on_spare_cores_until_the_input_ends_then_at_its_nice_value(frames):
    with ModelProcess(ReconstructConfig(), nice=3, idle=True) as model:
        model.predict(frames[:3])
        tasks = Path(f"/proc/{model._proc.pid}/task")
        tids = [int(t) for t in os.listdir(tasks)]
        assert len(tids) > 1 and all(os.sched_getscheduler(t) == os.SCHED_IDLE for t in tids)
        model.input_ended()
        model.predict(frames[:3])  # messages are taken in order: the change is made by now
        tids = [int(t) for t in os.listdir(tasks)]
        assert all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in tids)
        assert {os.getpriority(os.PRIO_PROCESS, t) for t in tids} == {os.getpriority(os.PRIO_PROCESS, 0) + 3}
