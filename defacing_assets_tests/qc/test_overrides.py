import pandas as pd
import pytest

from defacing_assets.qc.overrides import OverrideError, apply_overrides, load_overrides


def test_override_flips_a_verdict_and_is_marked_manual(tmp_path):
    path = tmp_path / "qc_overrides.csv"
    path.write_text("subject,defacer,passed,rater,note\nS1,pydeface,no,JD,left eye visible\n")
    overrides = load_overrides(path, {"S1", "S2"}, {"pydeface"})
    qc = pd.DataFrame({"subject": ["S1", "S2"], "defacer": ["pydeface"] * 2, "passed": [True] * 2})
    result = apply_overrides(qc, overrides).set_index("subject")
    assert not result.loc["S1", "passed"] and result.loc["S1", "manual"]
    assert result.loc["S1", "rater"] == "JD"
    assert result.loc["S2", "passed"] and not result.loc["S2", "manual"]


def test_missing_file_means_no_overrides(tmp_path):
    assert load_overrides(tmp_path / "absent.csv").empty


def test_every_bad_row_is_reported_with_its_line(tmp_path):
    path = tmp_path / "qc_overrides.csv"
    path.write_text(
        "subject,defacer,passed,rater,note\n"
        "S9,pydeface,yes,JD,\n"
        "S1,nodefacer,true,JD,\n"
        "S1,pydeface,maybe,JD,\n"
        "S2,pydeface,1,JD,\n"
        "S2,pydeface,0,AB,\n"
    )
    with pytest.raises(OverrideError) as raised:
        load_overrides(path, {"S1", "S2"}, {"pydeface"})
    message = str(raised.value)
    assert f"{path}:2: unknown subject 'S9'" in message
    assert f"{path}:3: unknown defacer 'nodefacer'" in message
    assert f"{path}:4: passed must be true or false, got 'maybe'" in message
    assert f"{path}:6: duplicate of line 5" in message


def test_bad_header_is_refused(tmp_path):
    path = tmp_path / "qc_overrides.csv"
    path.write_text("subject,method,verdict\nS1,pydeface,yes\n")
    with pytest.raises(OverrideError, match=r"qc_overrides.csv:1: header must be .*missing"):
        load_overrides(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("S1\n", ":2: 1 field(s), the header has 5"),
        ("S1,pydeface,no,JD,left eye, nose visible\n", ":2: 6 field(s), the header has 5"),
        (",pydeface,no,JD,\n", ":2: subject is empty"),
        ("\nS1,pydeface,no,JD,\nS1,pydeface,no,JD,\n", ":4: duplicate of line 3"),
    ],
)
def test_malformed_rows_are_refused_by_line(tmp_path, text, expected):
    path = tmp_path / "qc_overrides.csv"
    path.write_text("subject,defacer,passed,rater,note\n" + text)
    with pytest.raises(OverrideError) as raised:
        load_overrides(path)
    assert f"{path}{expected}" in str(raised.value)


def test_repeated_column_and_non_utf8_files_are_refused(tmp_path):
    path = tmp_path / "qc_overrides.csv"
    path.write_text("subject,defacer,passed,passed\nS1,pydeface,yes,no\n")
    with pytest.raises(OverrideError, match=r"qc_overrides.csv:1: .*repeated \['passed'\]"):
        load_overrides(path)
    path.write_bytes("subject,defacer,passed,rater\nS1,pydeface,no,J\xf6rg\n".encode("latin-1"))
    with pytest.raises(OverrideError, match=r"qc_overrides.csv: not UTF-8 text"):
        load_overrides(path)


def test_spreadsheet_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "qc_overrides.csv"
    path.write_text("\ufeffsubject,defacer,passed\nS1,pydeface,fail\n", encoding="utf-8")
    assert load_overrides(path, {"S1"}, {"pydeface"}).to_dict("records") == [
        {"subject": "S1", "defacer": "pydeface", "passed": False, "rater": "", "note": ""}
    ]
