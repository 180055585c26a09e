"""mlip.files: atomic writes (old file kept on error, no temporary left, umask
permissions) and the container format (checksum, kind, version, errors naming the file)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat

import pytest

from mlip.files import (
    ContainerError,
    ContainerKind,
    atomic_path,
    atomic_write,
    read_container,
    save_figure,
    write_bytes_atomic,
    write_container,
    write_text_atomic,
)

THING = ContainerKind("mlip thing", b"MLIP-THING\n")
OTHER = ContainerKind("mlip other", b"MLIP-OTHER\n")


class Boom(Exception):
    pass


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as handle:
        handle.write(b"new")
        assert path.read_bytes() == b"old"  # nothing visible before the block ends
    assert path.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_error_inside_the_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path, mode):
    path = tmp_path / "data.txt"
    path.write_text("old")
    with pytest.raises(Boom):
        with atomic_write(path, mode) as handle:
            handle.write(b"half" if mode == "wb" else "half")
            assert len(leftovers(tmp_path)) == 1  # the temporary file exists meanwhile
            raise Boom
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_error_before_anything_existed_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_write(tmp_path / "new.bin"):
            raise Boom
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
        reference = tmp_path / "reference.bin"
        with open(reference, "wb"):
            pass
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE(reference.stat().st_mode)


def test_text_and_open_options(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "é\n")
    assert path.read_bytes() == "é\n".encode()
    with atomic_write(tmp_path / "b.csv", "w", newline="") as handle:
        handle.write("a,b\r\n")
    assert (tmp_path / "b.csv").read_bytes() == b"a,b\r\n"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "c.txt", "a"):
            pass


def test_atomic_path_for_other_writers(tmp_path):
    path = tmp_path / "lib.so"
    with atomic_path(path) as output:
        assert output.parent == tmp_path and output != path
        output.write_bytes(b"\x7fELF")
    assert path.read_bytes() == b"\x7fELF"
    with pytest.raises(FileNotFoundError):  # the writer did not produce the file
        with atomic_path(tmp_path / "missing.so"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.so"]


def test_save_figure(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.subplots().plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "plot.svg")
    assert path.read_bytes().lstrip().startswith(b"<?xml")
    with pytest.raises(ValueError, match="unsupported plot format 'nope'"):
        save_figure(fig, tmp_path / "plot.nope")
    assert not (tmp_path / "plot.nope").exists()
    assert leftovers(tmp_path) == leftovers(tmp_path / "sub") == []


# ----------------------------------------------------------------------------- containers

CONTENT = {"name": "x", "data": bytes(range(256)) * 4, "values": [1, 2.5, None]}


def test_container_round_trip(tmp_path):
    path = write_container(tmp_path / "c.bin", THING, CONTENT)
    raw = path.read_bytes()
    assert raw.startswith(b"MLIP-THING\n{")
    found = read_container(path, THING)
    assert found.version == 1
    assert found.content == CONTENT


def test_flipped_byte_is_refused_naming_the_file(tmp_path):
    path = write_container(tmp_path / "c.bin", THING, CONTENT)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ContainerError, match=re.escape(f"{path} is corrupt: checksum")):
        read_container(path, THING)


def test_truncated_file_is_refused(tmp_path):
    path = write_container(tmp_path / "c.bin", THING, CONTENT)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ContainerError, match=re.escape(f"{path} is corrupt")):
        read_container(path, THING)


def test_wrong_kind_is_refused_naming_the_file(tmp_path):
    path = write_container(tmp_path / "c.bin", OTHER, CONTENT)
    with pytest.raises(ContainerError, match=re.escape(f"{path} is not an mlip thing file")):
        read_container(path, THING)


def test_missing_file_and_versions(tmp_path):
    with pytest.raises(ContainerError, match="cannot read mlip thing file .*missing"):
        read_container(tmp_path / "missing", THING)
    newer = ContainerKind("mlip thing", b"MLIP-THING\n", version=3, readable=(1, 3))
    path = write_container(tmp_path / "c.bin", newer, CONTENT)
    with pytest.raises(ContainerError, match="format version 3; this mlip reads up to 1, upgrade mlip"):
        read_container(path, THING)
    assert read_container(path, newer).version == 3
    gap = ContainerKind("mlip thing", b"MLIP-THING\n", version=4, readable=(2, 4))
    with pytest.raises(ContainerError, match=r"format version 3, which no released.*\[2, 4\]"):
        read_container(path, gap)


def test_payload_that_is_not_a_mapping_is_corrupt(tmp_path):
    path = write_container(tmp_path / "c.bin", THING, CONTENT)
    raw = path.read_bytes()
    end = raw.index(b"\n", len(THING.magic))
    payload = b"\x93\x01\x02\x03"  # msgpack [1, 2, 3]
    header = json.loads(raw[len(THING.magic):end])
    header.update(sha256=hashlib.sha256(payload).hexdigest(), payload_bytes=len(payload))
    path.write_bytes(THING.magic + json.dumps(header).encode() + b"\n" + payload)
    with pytest.raises(ContainerError, match="payload is a list, not a mapping"):
        read_container(path, THING)


def test_kind_error_class_is_raised(tmp_path):
    class ThingError(ContainerError):
        pass

    kind = ContainerKind("mlip thing", b"MLIP-THING\n", error=ThingError)
    with pytest.raises(ThingError):
        read_container(tmp_path / "missing", kind)
    with pytest.raises(ValueError, match="one line"):
        ContainerKind("bad", b"NO-NEWLINE")


def test_mlip_kinds_reject_each_other(tmp_path):
    from mlip.io import MODEL_FILE, ModelFileError
    from mlip.md.outputs import RESTART_FILE

    assert MODEL_FILE.magic != RESTART_FILE.magic
    path = write_container(tmp_path / "model.mlip", MODEL_FILE, CONTENT)
    with pytest.raises(ContainerError, match=re.escape(f"{path} is not an mlip MD restart file")):
        read_container(path, RESTART_FILE)
    path = write_container(tmp_path / "md.restart", RESTART_FILE, CONTENT)
    with pytest.raises(ModelFileError, match=re.escape(f"{path} is not an mlip model file")):
        read_container(path, MODEL_FILE)
