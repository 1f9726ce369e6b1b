"""hashing.py: the chunked file SHA-256 against hashlib over the whole bytes at once."""

from __future__ import annotations

import hashlib

import pytest

from mhsa_cli.hashing import file_sha256


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (5 << 19) + 7])  # around the 1 MiB chunk
def test_file_sha256_equals_the_digest_of_the_whole_file(tmp_path, size):
    data = bytes((i * 31 + 7) % 251 for i in range(size))
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert file_sha256(p) == file_sha256(str(p)) == hashlib.sha256(data).hexdigest()


def test_checkpoint_ids_and_export_hashes_use_it(tmp_path):
    from mhsa_cli.checkpoint import weights_id
    from mhsa_cli.recipe.validate import file_sha256 as recipe_sha256
    from mhsa_cli.runtimes.folder import file_sha256 as folder_sha256

    p = tmp_path / "w.bin"
    p.write_bytes(b"abc")
    want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 example
    assert weights_id(p) == want[:16]
    assert recipe_sha256(p) == folder_sha256(p) == want
