"""Reading evaluation data: JSONL, CSV and TSV give the same groups, the sample set is what docs/evaluation.md
says, and every malformed file is refused with an error naming its line."""

from __future__ import annotations

import json
import re

import pytest

from client.evaluation import SAMPLE_DATA, DatasetError, Target, load_dataset, parse_targets
from client.evaluation.__main__ import main

pytestmark = pytest.mark.unit  # starts no process: make test-unit

ROWS = [
    ("ما هي عاصمة السعودية؟", "الرياض هي عاصمة المملكة العربية السعودية.", 2),
    ("ما هي عاصمة السعودية؟", "جدة مدينة ساحلية على البحر الأحمر.", 0),
    ("فوائد الشاي الأخضر", "الشاي الأخضر غني بمضادات الأكسدة، ويشربه كثيرون يومياً.", 1),
    ("ما هي عاصمة السعودية؟", 'تضم الرياض "معظم" الوزارات\nوالسفارات.', 1),  # a quote and a newline in a field
]


def write_jsonl(path, rows, keys=("query", "document", "label")):
    path.write_text("".join(json.dumps(dict(zip(keys, r)), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_delimited(path, rows, delimiter, header=("query", "document", "label")):
    import csv

    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_sample_set_is_20_arabic_queries_of_5_labelled_passages():
    groups = load_dataset(SAMPLE_DATA)
    assert len(groups) == 20
    arabic = re.compile(r"[\u0600-\u06FF]")
    for g in groups:
        assert len(g.documents) == 5 and len(set(g.documents)) == 5
        assert set(g.labels) <= {0.0, 1.0, 2.0}
        assert max(g.labels) == 2.0 and 0.0 in g.labels  # one clearly relevant passage, and distractors
        assert arabic.search(g.query) and all(arabic.search(d) for d in g.documents)


def test_jsonl_csv_and_tsv_give_the_same_groups(tmp_path):
    from_jsonl = load_dataset(write_jsonl(tmp_path / "d.jsonl", ROWS))
    from_csv = load_dataset(write_delimited(tmp_path / "d.csv", ROWS, ","))
    from_tsv = load_dataset(write_delimited(tmp_path / "d.tsv", ROWS, "\t"))
    without_lines = lambda groups: [(g.query, g.documents, g.labels) for g in groups]  # noqa: E731
    assert without_lines(from_jsonl) == without_lines(from_csv) == without_lines(from_tsv)
    assert [g.line for g in from_jsonl] == [1, 3] and [g.line for g in from_csv] == [2, 4]
    capital, tea = from_jsonl
    assert capital.query == "ما هي عاصمة السعودية؟" and capital.labels == (2.0, 0.0, 1.0)
    assert capital.documents[2] == ROWS[3][1]
    assert tea.labels == (1.0,)


def test_column_aliases_bom_numeric_strings_and_extra_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeffquestion,passage,relevance,source\nq,p1,1.0,x\nq,p2,0,y\n", encoding="utf-8")
    (group,) = load_dataset(path)
    assert group.documents == ("p1", "p2") and group.labels == (1.0, 0.0) and group.line == 2


def test_format_can_be_given_when_the_extension_says_nothing(tmp_path):
    path = write_jsonl(tmp_path / "rows.txt", ROWS)
    with pytest.raises(DatasetError, match="unknown format"):
        load_dataset(path)
    assert len(load_dataset(path, "jsonl")) == 2


GOOD = '{"query": "q", "document": "d", "label": 1}'


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("empty.jsonl", "", 0, "no rows"),
        ("blank.jsonl", "\n\n", 0, "no rows"),
        ("empty.csv", "", 0, "no rows"),
        ("header_only.tsv", "query\tdocument\tlabel\n", 0, "no rows"),
        ("missing.jsonl", f'{GOOD}\n{{"query": "q", "document": "d"}}\n', 2, "missing column 'label'"),
        ("missing.csv", "query,text\nq,d\n", 1, "missing column 'label'"),
        ("missing_doc.tsv", "query\tlabel\nq\t1\n", 1, "missing column 'document'"),
        ("label.jsonl", f'{GOOD}\n\n{{"query": "q", "document": "d2", "label": "yes"}}\n', 3, "label must be a number"),
        ("label.csv", "query,document,label\nq,d,1\nq,d2,\n", 3, "label must be a number"),
        ("label.tsv", "query\tdocument\tlabel\nq\td\tyes\n", 2, "label must be a number"),
        ("bool.jsonl", '{"query": "q", "document": "d", "label": true}\n', 1, "label must be a number"),
        ("nan.jsonl", '{"query": "q", "document": "d", "label": NaN}\n', 1, "label must be a number"),
        ("negative.csv", "query,document,label\nq,d,-1\n", 2, "must not be negative"),
        ("json.jsonl", f'{GOOD}\n{{"query": "q",\n', 2, "not valid JSON"),
        ("array.jsonl", '["q", "d", 1]\n', 1, "expected a JSON object"),
        ("empty_query.jsonl", '{"query": " ", "document": "d", "label": 1}\n', 1, "query must be non-empty text"),
        ("fields.csv", "query,document,label\nq,d,1\nq,d,1,extra\n", 3, "expected 3 fields"),
        ("multiline.csv", 'query,document,label\nq,"two\nlines",1\nq,"d\n2",x\n', 4, "label must be a number"),
    ],
)
def test_malformed_files_are_refused_naming_the_line(tmp_path, name, content, line, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(message)) as error:
        load_dataset(path)
    assert error.value.line == line
    assert str(error.value).startswith(f"{path}:{line}: " if line else f"{path}: ")


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "absent.jsonl")


def test_cli_reports_a_bad_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("query,document,label\nq,d,1\nq,d2,high\n", encoding="utf-8")
    assert main([str(path), "--targets", "local:does-not-matter", "--no-progress"]) == 2
    assert f"{path}:3: label must be a number" in capsys.readouterr().err


def test_targets_are_parsed_with_optional_names():
    assert parse_targets(None) == [Target("127.0.0.1:50051")]
    targets = parse_targets("ara=10.0.0.5:50051, local:models/tiny,ref=local:models/small")
    assert targets == [
        Target("10.0.0.5:50051", "ara"),
        Target("local:models/tiny"),
        Target("local:models/small", "ref"),
    ]
    assert [t.is_local for t in targets] == [False, True, True]
    assert targets[2].location == "models/small"
    with pytest.raises(ValueError):
        parse_targets(" , ")
