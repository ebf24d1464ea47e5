"""Bad tables are clear errors naming the file and the line (finding 9 of issue 9): real files, broken on purpose."""

from __future__ import annotations

import math

import pytest

from mmcontrast.data.images import captioned_table, image_folder
from mmcontrast.data.tables import check_columns, clean_table, load_table


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _png(path):
    from PIL import Image

    Image.new("RGB", (4, 4), (10, 20, 30)).save(path, format="PNG")
    return path


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.csv", "", r"empty\.csv is empty; a csv table holds a header line"),
        ("blank.tsv", "\n  \n", r"blank\.tsv is empty; a tsv table holds a header line"),
        ("header.csv", "anchor,positive\n", r"header\.csv, line 1: a header \(anchor, positive\) and no rows"),
        ("long.csv", "a,b\nx,y\nx,y,z\n", r"long\.csv, line 3: 3 fields, but the header \(line 1\) names 2 columns"),
        ("short.tsv", "a\tb\tc\nx\ty\tz\n\nx\ty\n", r"short\.tsv, line 4: 2 fields, but the header \(line 1\) names 3"),
        ("quoted.csv", 'a,b\n"x\ny",z\n"u",v,w\n', r"quoted\.csv, line 4: 3 fields"),  # a quoted line break
        ("broken.jsonl", '{"a": "x"}\n{"a": "y"\n', r"broken\.jsonl, line 2: not valid JSON \(Expecting"),
        ("list.jsonl", '{"a": "x"}\n\n["y"]\n', r"list\.jsonl, line 3: a JSON list, not an object"),
        ("object.json", '\n{"a": ["x", "y"]}\n', r"object\.json, line 2: the file holds a JSON object"),
        ("items.json", '[\n  {"a": "x"},\n  "y"\n]\n', r"items\.json, line 3: record 2 of the list is a JSON string"),
        ("bad.json", '[\n  {"a": "x"},\n  {"a": }\n]\n', r"bad\.json, line 3: not valid JSON"),
        ("none.json", "[]", r"none\.json, line 1: an empty list, no records"),
        ("types.jsonl", '{"a": "x"}\n{"a": ["y"]}\n', r"types\.jsonl, line 2: 'a' holds a list, but on line 1 a"),
    ],
)
def test_unreadable_table_names_file_and_line(tmp_path, name, text, message):
    path = _write(tmp_path / name, text)
    with pytest.raises(ValueError, match=message):
        load_table(str(path))


def test_non_utf8_csv_names_the_line_and_the_encoding(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("anchor,positive\nhello,world\ncafé,crème\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv, line 3: not UTF-8 text \(byte 0xe9\).*save the file with UTF"):
        load_table(str(path))


def test_utf8_with_byte_order_mark_reads(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("anchor,positive\nhello,wörld\n".encode("utf-8-sig"))
    assert load_table(str(path))[0] == {"anchor": "hello", "positive": "wörld"}


def test_json_lines_in_a_json_file_and_lists_of_records_read(tmp_path):
    lines = load_table(str(_write(tmp_path / "lines.json", '{"a": "x", "s": 1}\n{"a": "y", "s": 2}\n')))
    listed = load_table(str(_write(tmp_path / "list.json", '[{"a": "x", "s": 1},\n {"a": "y", "s": 2}]')))
    assert lines.to_list() == listed.to_list() == [{"a": "x", "s": 1}, {"a": "y", "s": 2}]


def test_bad_rows_are_named_by_line_in_every_local_format(tmp_path):
    csv = _write(tmp_path / "pairs.csv", 'anchor,positive\nhello,world\n"two\nlines",x\nfoo,\n')
    with pytest.raises(ValueError, match=r"line 5, row 2: text column 'positive' is missing"):
        clean_table(load_table(str(csv)), ["anchor", "positive"], source=str(csv))
    text = '[\n  {"anchor": "a", "positive": "b"},\n\n  {"anchor": " ", "positive": "c"}\n]'
    listed = _write(tmp_path / "pairs.json", text)
    with pytest.raises(ValueError, match=r"line 4, row 1: text column 'anchor' is empty"):
        clean_table(load_table(str(listed)), ["anchor", "positive"])


def test_one_non_numeric_score_blames_its_own_row(tmp_path):
    rows = [f"sentence {i},other {i},{i / 40:.3f}" for i in range(40)]
    rows[17] = "sentence 17,other 17,n/a"
    path = _write(tmp_path / "scored.csv", "s1,s2,score\n" + "\n".join(rows) + "\n")
    table = load_table(str(path))
    with pytest.raises(ValueError, match=r"line 19, row 17: score column 'score' holds 'n/a', not a number\.") as error:
        clean_table(table, ["s1", "s2"], score_column="score", source=str(path))
    assert "bad rows in all" not in str(error.value)
    cleaned, skipped = clean_table(table, ["s1", "s2"], score_column="score", skip_bad_rows=True)
    assert skipped == 1 and len(cleaned) == 39
    assert cleaned.column_names == ["s1", "s2", "score"]
    assert cleaned.features["score"].dtype == "float64" and cleaned["score"][17] == pytest.approx(18 / 40)


def test_a_string_among_json_scores_blames_its_row(tmp_path):
    path = _write(tmp_path / "scored.jsonl", '{"a": "x", "b": "y", "s": 0.5}\n{"a": "u", "b": "v", "s": "high"}\n')
    bad = check_columns(load_table(str(path)), ["a", "b"], score_column="s")
    assert bad.indices == [1] and bad.reasons == ["line 2, row 1: score column 's' holds 'high', not a number"]


def test_scores_outside_zero_to_score_max_are_bad_rows(tmp_path):
    path = _write(tmp_path / "sts.tsv", "s1\ts2\tscore\na\tb\t4.5\nc\td\t7.5\ne\tf\t-1\ng\th\tinf\ni\tj\t5\n")
    table = load_table(str(path))
    bad = check_columns(table, ["s1", "s2"], score_column="score", score_max=5.0)
    assert bad.indices == [1, 2, 3]
    assert bad.reasons[0] == (
        "line 3, row 1: score column 'score' holds 7.5, outside the allowed range [0, 5] "
        "(set data.score_max to the top of the data's score scale)"
    )
    assert bad.reasons[2] == "line 5, row 3: score column 'score' holds inf, not a finite number"
    with pytest.raises(ValueError, match=r"row 1: .* 7\.5, outside the allowed range \[0, 5\].*data\.score_max"):
        clean_table(table, ["s1", "s2"], score_column="score", score_max=5.0)
    cleaned, skipped = clean_table(table, ["s1", "s2"], score_column="score", score_max=5.0, skip_bad_rows=True)
    assert skipped == 3 and cleaned["score"] == [4.5, 5.0]


def test_infinite_score_is_a_bad_row_without_score_max(tmp_path):
    path = _write(tmp_path / "inf.csv", "s1,s2,score\na,b,0.5\nc,d,inf\n")
    bad = check_columns(load_table(str(path)), ["s1", "s2"], score_column="score")
    assert bad.indices == [1] and "not a finite number" in bad.reasons[0]


def test_min_score_with_a_non_numeric_score_names_the_line(tmp_path):
    path = _write(tmp_path / "scored.csv", "a,b,score\nx,y,4.5\nu,v,high\n")
    with pytest.raises(ValueError, match=r"scored\.csv: line 3, row 1: score column 'score' holds 'high'"):
        load_table(str(path), min_score=4.0)
    kept = load_table(str(_write(tmp_path / "ok.csv", "a,b,score\nx,y,4.5\nu,v,3\nw,z,\n")), min_score=4.0)
    assert kept["a"] == ["x"]


def test_lines_follow_rows_through_min_score_and_limit(tmp_path):
    path = _write(tmp_path / "pairs.csv", "a,b,score\nx,y,1\nskip,me,0\nu,,1\n")
    with pytest.raises(ValueError, match=r"line 4, row 1: text column 'b' is missing"):
        clean_table(load_table(str(path), min_score=0.5, limit=5), ["a", "b"])


def test_unreadable_parquet_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not a parquet file")
    with pytest.raises(ValueError, match=r"parquet file '.*broken\.parquet' could not be read: .*complete parquet"):
        load_table(str(path))


def test_metadata_row_without_file_name_names_the_line(tmp_path):
    _png(tmp_path / "a.png")
    _write(tmp_path / "metadata.csv", "file_name,text\na.png,a cat\n,a dog\n")
    with pytest.raises(ValueError, match=r"metadata\.csv, line 3: 'file_name' holds '', not an image file name"):
        image_folder(tmp_path)


def test_metadata_row_missing_a_field_names_the_line(tmp_path):
    _png(tmp_path / "a.png")
    _write(tmp_path / "metadata.csv", "text,file_name\na cat,a.png\na dog\n")
    with pytest.raises(ValueError, match=r"metadata\.csv, line 3: 1 fields, but the header \(line 1\) names 2"):
        image_folder(tmp_path)


def test_metadata_jsonl_record_without_file_name_names_the_line(tmp_path):
    _png(tmp_path / "a.png")
    _write(tmp_path / "metadata.jsonl", '{"file_name": "a.png", "text": "a cat"}\n{"text": "a dog"}\n')
    with pytest.raises(ValueError, match=r"metadata\.jsonl, line 2: needs 'file_name' and 'text'"):
        image_folder(tmp_path)


def test_caption_json_object_is_not_read_character_by_character(tmp_path):
    _png(tmp_path / "a.png")
    path = _write(tmp_path / "captions.json", '{"file_name": "a.png", "text": "a cat"}')
    with pytest.raises(ValueError, match=r"captions\.json, line 1: the file holds a JSON object, not a list"):
        captioned_table(path)
    listed = captioned_table(_write(tmp_path / "list.json", '[{"file_name": "a.png", "text": "a cat"}]'))
    assert [row["caption"] for row in listed.rows] == ["a cat"]


def test_caption_table_keeps_numeric_looking_names_as_text(tmp_path):
    _png(tmp_path / "001")
    rows = captioned_table(_write(tmp_path / "captions.csv", "file_name,text\n001,42\n")).rows
    assert rows[0]["image"] == tmp_path / "001" and rows[0]["caption"] == "42"


def test_numeric_csv_columns_hold_numbers(tmp_path):
    table = load_table(str(_write(tmp_path / "n.csv", "i,f,t\n1,0.5,x\n-2,,y\n+3,1e-3,5\n")))
    assert table["i"] == [1, -2, 3] and table["t"] == ["x", "y", "5"]
    assert table["f"][0] == 0.5 and table["f"][1] is None and math.isclose(table["f"][2], 1e-3)
