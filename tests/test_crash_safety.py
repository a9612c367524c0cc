"""Crash safety: SIGKILL a training run and resume it exactly; kill writers mid-file and find the old file intact.

The processes are real: a child trains with checkpoints, the test kills it with SIGKILL at a
seeded step, and a fresh process resumes from the checkpoint. Checkpoints, the HDF5 cache and the
results JSON all go through :func:`gebm_ppl._io.atomic_open` (temporary file, fsync, rename); a
second child kills itself inside each writer (mid-write and just before the rename) and the
file on disk must still be the previous, complete version.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import gebm_ppl as gp

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not hasattr(os, "fork"), reason="POSIX only")

TRAIN_CHILD = textwrap.dedent(
    '''
    """Child process: fit_kale (base + energy) with checkpoints; 'killed' stops at a step, 'resumed' finishes."""
    import sys
    import time

    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    torch.set_num_threads(1)
    import gebm_ppl as gp

    CHECKPOINT_EVERY = 4  # energy steps; 6 energy steps per epoch, so checkpoints fall mid-epoch too


    def setup():
        g = torch.Generator().manual_seed(0)
        scale = torch.tensor([1.0, 0.5])
        x, x_val = torch.randn(240, 2, generator=g) * scale + 1.0, torch.randn(60, 2, generator=g) * scale + 1.0
        torch.manual_seed(0)
        gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(16, 16)))
        kw = dict(
            train_base=True, batch_size=40, noise_factor=5, n_energy_steps=3, warmup_energy_steps=4,
            log_partition_samples=500, epochs=4, patience=None, progress=False,
        )
        return gebm, x, x_val, kw


    if __name__ == "__main__":
        mode, ckpt, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        gebm, x, x_val, kw = setup()
        if mode == "killed":
            count = 0

            def after_step(optimizer, args, kwargs):  # every optimizer step: energy and base
                global count
                count += 1
                print(f"step {count}", flush=True)
                if count == kill_at:
                    time.sleep(600)  # the parent sends SIGKILL while we wait here

            register_optimizer_step_post_hook(after_step)
            gp.fit_kale(gebm, x, x_val, checkpoint_path=ckpt, checkpoint_every=CHECKPOINT_EVERY, **kw)
            print("finished without being killed", flush=True)
        else:
            history = gp.fit_kale(gebm, x, x_val, checkpoint_path=ckpt, checkpoint_every=CHECKPOINT_EVERY,
                                  resume=ckpt, **kw)
            torch.save({"state": gebm.state_dict(), "records": history.records}, out)
    '''
)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _without_times(records: list[dict]) -> list[dict]:
    drop = {"epoch_time", "eval_time", "wall_time"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_sigkill_during_training_then_resume_is_exact(tmp_path):
    script = tmp_path / "train_child.py"
    script.write_text(TRAIN_CHILD)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ckpt = run_dir / "kale.pt"
    kill_at = random.Random(8).randrange(9, 28)  # of 31 optimizer steps (24 energy + 7 base)

    # 1. train in a child process and SIGKILL it at the seeded step
    with subprocess.Popen([sys.executable, str(script), "killed", str(ckpt), "-", str(kill_at)], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
        try:
            for line in proc.stdout:
                if line.strip() == f"step {kill_at}":
                    proc.send_signal(signal.SIGKILL)
                    break
        finally:
            proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()

    # the checkpoint on disk is complete, loads, and holds every epoch finished before it
    assert sorted(p.name for p in run_dir.iterdir()) == ["kale.pt"]  # no temporary file left behind
    saved = torch.load(ckpt, weights_only=True)
    loop = saved["extra"]["training"]["loop"]
    assert 0 < loop["step"] < 24 and loop["step"] % 4 == 0  # the last checkpoint before the kill
    assert loop["epoch"] * 6 + loop["batch"] == loop["step"]  # a consistent position: epochs, then batches
    assert len(saved["extra"]["training"]["history"]["records"]) == loop["epoch"]  # every epoch recorded
    gp.GEBM.load(ckpt)  # also a valid GEBM checkpoint, digest included

    # 2. resume in a fresh process
    out = tmp_path / "resumed.pt"
    resumed = subprocess.run([sys.executable, str(script), "resumed", str(ckpt), str(out), "0"], env=_env(),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["kale.pt"]
    got = torch.load(out, weights_only=True)

    # 3. the uninterrupted run with the same seed, here
    setup = runpy.run_path(str(script), run_name="crash_child")["setup"]
    gebm, x, x_val, kw = setup()
    history = gp.fit_kale(gebm, x, x_val, **kw)
    expected = gebm.state_dict()
    assert got["state"].keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got["state"][k], expected[k], rtol=1e-6, atol=1e-7, msg=k)
    assert _without_times(got["records"]) == _without_times(history.records)  # no epoch lost or repeated
    assert len(history.records) == 4


WRITER_CHILD = textwrap.dedent(
    '''
    """Child process: write version 1 of each file, then kill a forked copy of itself inside each writer."""
    import json
    import os
    import signal
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    torch.set_num_threads(1)
    import gebm_ppl as gp
    from gebm_ppl import runs
    from gebm_ppl.data.cache import write_cache


    def gebm(version):
        torch.manual_seed(version)
        return gp.GEBM(gp.RealNVP(2, hidden_features=4, num_layers=2), gp.EnergyMLP(2, hidden=(4,)), version)


    def splits(version):
        rng = np.random.default_rng(version)
        return {k: rng.normal(size=(n, 2)).astype(np.float32) for k, n in (("train", 50), ("val", 5), ("test", 5))}


    WRITERS = {
        "model.pt": lambda p, v: gebm(v).save(p, version=v),
        "splits.h5": lambda p, v: write_cache(p, f"key{v}", splits(v), {"version": v, "sources": []}),
        "uci_density.json": lambda p, v: results_writer()(p, {"version": v, "rows": list(range(2000))}),
        "run.json": lambda p, v: runs.write_json(p, {"version": v, "rows": list(range(2000))}),
    }


    def results_writer():
        """The benchmark's results writer (benchmarks/uci_report.py, on sys.argv[2])."""
        sys.path.insert(0, sys.argv[2])
        import uci_report

        return uci_report._write_json


    class DyingFile:
        """A file object that writes half of its first chunk, flushes it, and SIGKILLs the process."""

        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[: max(1, len(data) // 2)])
            self._f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)


    def die_inside(name, point):
        folder = Path(sys.argv[1])
        if point == "mid-write":
            real = os.fdopen
            os.fdopen = lambda *a, **k: DyingFile(real(*a, **k))
        else:  # the temporary file is complete and fsynced; the kill lands just before the rename
            os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        WRITERS[name](folder / name, 2)
        os._exit(3)  # not reached


    if __name__ == "__main__":
        folder = Path(sys.argv[1])
        for name, write in WRITERS.items():
            write(folder / name, 1)
        report = {}
        for name in WRITERS:
            for point in ("mid-write", "before-rename"):
                pid = os.fork()
                if pid == 0:
                    die_inside(name, point)
                _, status = os.waitpid(pid, 0)
                report[f"{name} {point}"] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        print(json.dumps(report))
    '''
)


def test_writers_killed_mid_file_leave_the_previous_version(tmp_path):
    script = tmp_path / "writer_child.py"
    script.write_text(WRITER_CHILD)
    folder = tmp_path / "files"
    folder.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(folder), str(ROOT / "benchmarks")], env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == 8 and all(report.values()), report  # every writer was killed where intended

    child = runpy.run_path(str(script), run_name="writer_child_module")
    # the model: the complete version 1, digest and all
    model = gp.GEBM.load(folder / "model.pt")
    expected = child["gebm"](1).state_dict()
    for k, v in expected.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert torch.load(folder / "model.pt", weights_only=True)["extra"] == {"version": 1}
    # the HDF5 cache: version 1, read back with its digests
    cached = gp.data.read_cache(folder / "splits.h5", "key1")
    assert cached is not None and cached[1]["version"] == 1
    for k, x in child["splits"](1).items():
        np.testing.assert_array_equal(cached[0][k], x)
    # the results JSON files: version 1, complete
    for name in ("uci_density.json", "run.json"):
        assert json.loads((folder / name).read_text()) == {"version": 1, "rows": list(range(2000))}
    # what a kill inside a write leaves besides: only hidden temporary files, never a visible partial file
    visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert visible == ["model.pt", "run.json", "splits.h5", "uci_density.json"]
    for p in folder.iterdir():
        if p.name.startswith("."):
            assert p.name.endswith(".tmp") and any(p.name.startswith(f".{n}.") for n in visible), p.name
