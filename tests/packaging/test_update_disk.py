"""image-build/update-disk: replaces the ESP and root partitions, keeps vendor config and data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

UPDATE_DISK = Path(__file__).resolve().parents[2] / "image-build" / "update-disk"
MIB = 1 << 20


def make_disk(path: Path, fill: bytes, root_mib: int = 4) -> Path:
    """A GPT disk like the image's (ESP, PACSCFG, root, data), each partition filled with one byte value."""
    sizes = [2, 1, root_mib, 2]
    with open(path, "wb") as f:
        f.truncate((sum(sizes) + 2) * MIB)
    layout = "label: gpt\n" + "".join(f"size={s}MiB\n" if i else f"start=1MiB, size={s}MiB\n"
                                      for i, s in enumerate(sizes))
    subprocess.run(["sfdisk", "-q", str(path)], input=layout, text=True, check=True)
    with open(path, "r+b") as f:
        offset = MIB
        for number, size in enumerate(sizes, 1):
            f.seek(offset)
            f.write(bytes([fill[0] + number]) * size * MIB)
            offset += size * MIB
    return path


def partition_bytes(path: Path, number: int) -> set[int]:
    data = path.read_bytes()
    starts = {1: 1, 2: 3, 3: 4, 4: 8}
    size = {1: 2, 2: 1, 3: 4, 4: 2}[number]
    return set(data[starts[number] * MIB:(starts[number] + size) * MIB])


def test_update_replaces_esp_and_root_and_keeps_config_and_data(tmp_path):
    box = make_disk(tmp_path / "box.img", b"\x10")
    new = make_disk(tmp_path / "new.img", b"\x20")
    out = subprocess.run([sys.executable, str(UPDATE_DISK), str(box), str(new)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert partition_bytes(box, 1) == {0x21} and partition_bytes(box, 3) == {0x23}  # new ESP and root
    assert partition_bytes(box, 2) == {0x12} and partition_bytes(box, 4) == {0x14}  # kept


def test_a_different_layout_is_refused_and_nothing_written(tmp_path):
    box = make_disk(tmp_path / "box.img", b"\x10")
    new = make_disk(tmp_path / "new.img", b"\x20", root_mib=5)
    before = box.read_bytes()
    out = subprocess.run([sys.executable, str(UPDATE_DISK), str(box), str(new)], capture_output=True, text=True)
    assert out.returncode != 0 and "partition 3 (root) differs" in out.stderr
    assert box.read_bytes() == before
