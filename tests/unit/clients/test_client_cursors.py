"""Cursor stores: in memory and JSON file (atomic, monotonic)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from parley_client.cursors import CursorStoreError, JsonFileCursorStore, MemoryCursorStore


async def test_memory_store_only_moves_forward() -> None:
    store = MemoryCursorStore({"a": 3})
    await store.save("a", 2)
    await store.save("a", 5)
    await store.save("b", 1)
    assert await store.load() == {"a": 5, "b": 1}


async def test_file_store_round_trips_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "bob" / "dev.json"
    store = JsonFileCursorStore(path)
    assert await store.load() == {}
    await store.save("c1", 4)
    await store.save("c2", 9)
    await store.save("c1", 3)  # never back
    assert await JsonFileCursorStore(path).load() == {"c1": 4, "c2": 9}
    assert json.loads(path.read_text())["cursors"] == {"c1": 4, "c2": 9}


async def test_file_store_save_without_load_keeps_existing_cursors(tmp_path: Path) -> None:
    path = tmp_path / "cursors.json"
    await JsonFileCursorStore(path).save("a", 1)
    await JsonFileCursorStore(path).save("b", 2)
    assert await JsonFileCursorStore(path).load() == {"a": 1, "b": 2}


async def test_file_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = JsonFileCursorStore(tmp_path / "c.json", fsync=True)
    for seq in range(1, 50):
        await store.save("c", seq)
    assert sorted(os.listdir(tmp_path)) == ["c.json"]
    assert await JsonFileCursorStore(tmp_path / "c.json").load() == {"c": 49}


async def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(CursorStoreError, match="corrupt"):
        await JsonFileCursorStore(path).load()
    path.write_text(json.dumps({"version": 1, "cursors": ["c"]}))
    with pytest.raises(CursorStoreError, match="corrupt"):
        await JsonFileCursorStore(path).load()


async def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = JsonFileCursorStore(blocker / "sub" / "c.json")  # a parent that is a file
    with pytest.raises(CursorStoreError, match=r"cursor file .*c\.json: Not a directory"):
        await store.save("c", 1)
    directory = tmp_path / "dir.json"
    directory.mkdir()
    with pytest.raises(CursorStoreError, match="cannot read"):
        await JsonFileCursorStore(directory).load()
