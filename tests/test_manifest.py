"""CSV manifests: good rows, name normalisation, whole-file errors, per-row failures with line numbers."""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import pytest

from attribution_audit.errors import ManifestError
from attribution_audit.sources.manifest import Manifest, RowFailure, read_csv_manifest


def write(folder: Path, text: str, name: str = "manifest.csv", encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def failure_for(manifest: Manifest, line: int) -> RowFailure:
    (failure,) = [f for f in manifest.failures if f.line == line]
    return failure


# -- good manifests ----------------------------------------------------------------------------------------------


def test_good_manifest_with_extra_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "path,artist,work_id,title,year,licence\n"
        "img/a.png,Claude Monet,w1,Impression,1872,CC-BY\n"
        "img/b.png,Berthe Morisot,w2,,1879,PD\n",
    )
    manifest = read_csv_manifest(path)
    assert manifest.failures == []
    assert manifest.path == path
    first, second = manifest.rows
    assert (first.line, first.work_id, first.artist, first.title) == (2, "w1", "Claude Monet", "Impression")
    assert first.path == (tmp_path / "img" / "a.png").resolve()
    assert first.extra == {"year": "1872", "licence": "CC-BY"}
    assert (second.line, second.work_id, second.title) == (3, "w2", None)  # empty title -> None
    assert second.extra == {"year": "1879", "licence": "PD"}


def test_title_column_is_optional(tmp_path: Path) -> None:
    manifest = read_csv_manifest(write(tmp_path, "work_id,artist,path\nw1,Monet,a.png\n"))  # any column order
    (row,) = manifest.rows
    assert (row.work_id, row.artist, row.title, row.extra) == ("w1", "Monet", None, {})
    assert row.path == (tmp_path / "a.png").resolve()


def test_header_and_values_are_stripped(tmp_path: Path) -> None:
    manifest = read_csv_manifest(write(tmp_path, " path , artist ,work_id \n a.png , Monet , w1 \n"))
    (row,) = manifest.rows
    assert (row.work_id, row.artist, row.path.name) == ("w1", "Monet", "a.png")


def test_artist_names_are_normalised(tmp_path: Path) -> None:
    nfc = unicodedata.normalize("NFC", "Monet é")
    nfd = unicodedata.normalize("NFD", "Monet é")
    assert nfc != nfd
    path = write(
        tmp_path,
        f"path,artist,work_id\na.png,{nfc},w1\nb.png,{nfd},w2\nc.png,  Claude   Monet\t ,w3\nd.png,Claude Monet,w4\n",
    )
    rows = read_csv_manifest(path).rows
    assert [r.work_id for r in rows] == ["w1", "w2", "w3", "w4"]
    assert rows[0].artist == rows[1].artist == nfc
    assert rows[2].artist == rows[3].artist == "Claude Monet"


def test_utf8_bom_header_is_accepted(tmp_path: Path) -> None:
    manifest = read_csv_manifest(write(tmp_path, "path,artist,work_id\na.png,Monet,w1\n", encoding="utf-8-sig"))
    assert (tmp_path / "manifest.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert [r.work_id for r in manifest.rows] == ["w1"]
    assert manifest.failures == []


def test_sha256_is_of_the_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "path,artist,work_id\r\na.png,Monet é,w1\r\n", encoding="utf-8-sig")
    assert read_csv_manifest(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_absolute_path_inside_the_folder_is_accepted(tmp_path: Path) -> None:
    inside = tmp_path / "img" / "a.png"
    manifest = read_csv_manifest(write(tmp_path, f"path,artist,work_id\n{inside},Monet,w1\n"))
    assert manifest.failures == []
    assert manifest.rows[0].path == inside.resolve()


# -- whole-file problems -----------------------------------------------------------------------------------------


def assert_one_line_naming(error: pytest.ExceptionInfo[ManifestError], path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(ManifestError) as info:
        read_csv_manifest(path)
    assert "not found" in assert_one_line_naming(info, path)


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("path,artist,title", ["work_id"]),
        ("path,title,year", ["artist", "work_id"]),
        ("file,name,id", ["path", "artist", "work_id"]),
    ],
)
def test_missing_required_columns(tmp_path: Path, header: str, missing: list[str]) -> None:
    path = write(tmp_path, f"{header}\na,b,c\n")
    with pytest.raises(ManifestError) as info:
        read_csv_manifest(path)
    message = assert_one_line_naming(info, path)
    assert f"missing column(s) {', '.join(missing)};" in message


def test_empty_file_is_missing_every_column(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ManifestError, match=r"missing column\(s\) path, artist, work_id"):
        read_csv_manifest(path)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "path,artist,work_id\na.png,Monet é,w1\n", encoding="latin-1")
    with pytest.raises(ManifestError) as info:
        read_csv_manifest(path)
    assert "UTF-8" in assert_one_line_naming(info, path)


# -- row problems ------------------------------------------------------------------------------------------------


def test_row_failures_keep_line_numbers_and_other_rows(tmp_path: Path) -> None:
    outside = tmp_path.parent / "elsewhere" / "x.png"
    path = write(
        tmp_path,
        "path,artist,work_id,title\n"  # line 1
        "a.png,Monet,w1,ok\n"  # 2
        "b.png,,w2,no artist\n"  # 3
        ",Monet,w3,no path\n"  # 4
        "c.png,Monet,,no id\n"  # 5
        "d.png,Morisot,w1,duplicate\n"  # 6
        "../outside.png,Monet,w6,parent\n"  # 7
        f"{outside},Monet,w7,absolute outside\n"  # 8
        "e.png,Monet,w8,t,surplus\n"  # 9
        "f.png,Monet,w9,ok\n"  # 10
        ",   ,w10\n",  # 11
    )
    manifest = read_csv_manifest(path)
    assert [(r.line, r.work_id) for r in manifest.rows] == [(2, "w1"), (10, "w9")]
    assert [f.line for f in manifest.failures] == [3, 4, 5, 6, 7, 8, 9, 11]

    assert failure_for(manifest, 3) == RowFailure(3, "w2", "empty artist")
    assert failure_for(manifest, 4) == RowFailure(4, "w3", "empty path")
    assert failure_for(manifest, 5) == RowFailure(5, "", "empty work_id")
    duplicate = failure_for(manifest, 6)
    assert duplicate.work_id == "w1"
    assert "duplicate work_id" in duplicate.reason and "line 2" in duplicate.reason
    for line, work_id in [(7, "w6"), (8, "w7")]:
        failure = failure_for(manifest, line)
        assert failure.work_id == work_id
        assert "leaves the catalogue folder" in failure.reason
        assert "put the manifest in a folder that holds its images" in failure.reason
    assert failure_for(manifest, 9) == RowFailure(
        9, "w8", "a value in column 5, which the header does not name; name the column or move the value"
    )
    assert failure_for(manifest, 11) == RowFailure(11, "w10", "empty path, artist")


def test_short_row_is_an_empty_field_failure(tmp_path: Path) -> None:
    manifest = read_csv_manifest(write(tmp_path, "path,artist,work_id\na.png,Monet\nb.png,Monet,w2\n"))
    assert manifest.failures == [RowFailure(2, "", "empty work_id")]
    assert [r.work_id for r in manifest.rows] == ["w2"]


def test_failed_first_occurrence_does_not_block_the_work_id(tmp_path: Path) -> None:
    manifest = read_csv_manifest(write(tmp_path, "path,artist,work_id\n../x.png,Monet,w1\na.png,Monet,w1\n"))
    assert [f.line for f in manifest.failures] == [2]
    assert [(r.line, r.work_id) for r in manifest.rows] == [(3, "w1")]


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    manifest = read_csv_manifest(write(tmp_path, "path,artist,work_id\na.png,Monet,w1\n\nb.png,,w2\nc.png,Monet,w3\n"))
    assert manifest.failures == [RowFailure(4, "w2", "empty artist")]
    assert [r.line for r in manifest.rows] == [2, 5]


def test_quoted_multiline_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'path,artist,work_id,title\na.png,Monet,w1,"two\nlines"\nb.png,,w2,x\n')
    manifest = read_csv_manifest(path)
    assert [r.title for r in manifest.rows] == ["two\nlines"]
    assert manifest.failures == [RowFailure(4, "w2", "empty artist")]


def test_names_lose_control_characters_that_would_drive_a_terminal() -> None:
    from attribution_audit.sources.manifest import clean_name

    assert clean_name("\x1b[31mRED\x1b[0m\x1b]0;pwned\x07 Artist") == "[31mRED[0m]0;pwned Artist"
    assert clean_name("Ada\tLovelace\n") == "Ada Lovelace"
    assert clean_name("Hokusai \u200d") == "Hokusai \u200d".strip()  # format characters (joiners) are kept
