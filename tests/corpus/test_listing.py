import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cliper_batch.corpus.listing import CorpusNotFound, list_videos
from cliper_batch.uris import InvalidURI, is_inside, normalize_uri, video_id_for


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x")
    return path


def test_directory_is_listed_recursively_sorted_and_filtered(tmp_path):
    a = _touch(str(tmp_path / "b" / "clip.MP4"))
    b = _touch(str(tmp_path / "a.webm"))
    _touch(str(tmp_path / "notes.txt"))
    refs = list_videos(str(tmp_path))
    assert [r.uri for r in refs] == sorted([a, b])
    assert all(len(r.video_id) == 16 for r in refs)


def test_video_id_is_stable_and_path_form_independent(tmp_path):
    p = _touch(str(tmp_path / "v.mp4"))
    assert video_id_for(p) == video_id_for("file://" + p) == list_videos(p)[0].video_id
    assert video_id_for(p) != video_id_for(str(tmp_path / "w.mp4"))


def test_glob_and_text_manifest_with_relative_entries(tmp_path):
    v1 = _touch(str(tmp_path / "x" / "1.mp4"))
    v2 = _touch(str(tmp_path / "x" / "2.mkv"))
    assert [r.uri for r in list_videos(str(tmp_path / "x" / "*.mp4"))] == [v1]
    man = tmp_path / "x" / "list.txt"
    man.write_text("# corpus\n1.mp4\n\n" + v2 + "\n1.mp4\n")
    assert [r.uri for r in list_videos(str(man))] == [v1, v2]  # de-duplicated


def test_parquet_manifest_keeps_any_extension(tmp_path):
    odd = _touch(str(tmp_path / "data.bin"))
    pq.write_table(pa.table({"video_uri": [odd]}), tmp_path / "m.parquet")
    assert [r.uri for r in list_videos(str(tmp_path / "m.parquet"))] == [odd]
    pq.write_table(pa.table({"name": [odd]}), tmp_path / "bad.parquet")
    with pytest.raises(InvalidURI, match="columns"):
        list_videos(str(tmp_path / "bad.parquet"))


def test_memory_filesystem_listing():
    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/a.mp4", b"1")
    fs.pipe("/corpus/sub/b.webm", b"2")
    refs = list_videos("memory://corpus")
    assert [r.uri for r in refs] == ["memory:///corpus/a.mp4", "memory:///corpus/sub/b.webm"]
    assert refs[0].video_id == list_videos("memory:///corpus/a.mp4")[0].video_id


def test_missing_empty_and_unknown_scheme(tmp_path):
    with pytest.raises(CorpusNotFound, match="does not exist"):
        list_videos(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusNotFound, match="no videos"):
        list_videos(str(tmp_path / "empty"))
    with pytest.raises(InvalidURI, match="unsupported URL scheme"):
        list_videos("nosuchproto://bucket/x")
    with pytest.raises(InvalidURI):
        normalize_uri("a\x00b")


def test_is_inside(tmp_path):
    assert is_inside(str(tmp_path / "in" / "out"), str(tmp_path / "in"))
    assert not is_inside(str(tmp_path / "input2"), str(tmp_path / "input"))
    assert not is_inside("memory://in/out", str(tmp_path))
