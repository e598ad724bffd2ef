"""A dropped folder whose media holds a second DICOMDIR below the first (two discs copied into one folder):
each DICOMDIR speaks for its own tree, everything is imported, and nothing logs a traceback."""
from __future__ import annotations

import shutil

import synth
from importkit import index_counts, wait_inbox_empty
from test_inbox import _dcmmkdir


def test_nested_dicomdir(inbox_server, data_dir, tmp_path):
    cd = tmp_path / "cd"
    (cd / "IMAGES").mkdir(parents=True)
    (cd / "DISC2" / "IMAGES").mkdir(parents=True)
    for i, p in enumerate(synth.write_study(tmp_path / "src2", n_series=1, per_series=2, patient_id="NEST2")):
        shutil.copy(p, cd / "DISC2" / "IMAGES" / f"IM{i:06d}")
    assert _dcmmkdir(cd / "DISC2").returncode == 0
    for i, p in enumerate(synth.write_study(tmp_path / "src1", n_series=1, per_series=3, patient_id="NEST1")):
        shutil.copy(p, cd / "IMAGES" / f"IM{i:06d}")
    made = _dcmmkdir(cd)  # the outer DICOMDIR lists its own images and, with +r, those of DISC2 as well
    assert made.returncode == 0, made.stderr
    shutil.copytree(cd, data_dir / "inbox" / "TWO_DISCS")
    wait_inbox_empty(data_dir)
    inbox_server.stop()
    assert "Traceback" not in inbox_server.log(), inbox_server.log()[-3000:]
    assert index_counts(data_dir)["instances"] == 5
    assert not (data_dir / "inbox" / "TWO_DISCS").exists()
