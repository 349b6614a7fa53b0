"""The document is produced by the command from the measured data, not typed."""

from __future__ import annotations

import copy
import json

import pytest

from paper import __main__ as cli
from paper import report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results():
    return cli.collect(quick=True, seed=99, log=lambda _m: None)


def test_every_table_row_comes_from_the_results(results):
    doc = report.render(results)
    for rows in (report.paper_table_rows(results), report.readings_rows(results),
                 report.first_key_rows(results), report.rsa_rows(results),
                 report.extrapolation_rows(results)):
        assert rows
        for row in rows:
            assert report.table_line(row) in doc
    # one paper-table row per measured RSA size, with its measured total and count
    for r in results["rsa"]:
        assert (f"| RSA: factor {r['count']} random {r['bits']}-bit moduli (FLINT, 1 core) | "
                f"{report.fmt_s(r['total_s'])} in all") in doc
        assert r["factored"] == r["count"]
    assert "{" not in doc and "None" not in doc and "nan" not in doc


def test_changing_a_measurement_changes_the_document(results):
    altered = copy.deepcopy(results)
    altered["rsa"][-1]["total_s"] = 123456.0
    altered["detection"][2]["curves"][0]["simulated"][0] = 0.123456
    doc, doc2 = report.render(results), report.render(altered)
    assert report.fmt_s(123456.0) in doc2 and report.fmt_s(123456.0) not in doc
    assert "0.1235 [" in doc2


def test_command_writes_the_document_and_results(results, tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(results, default=str))
    assert cli.main(["--from-json", str(src), "--out", str(tmp_path / "docs"), "--no-plots"]) == 0
    doc = (tmp_path / "docs" / "paper-comparison.md").read_text()
    assert doc == report.render(json.loads(src.read_text()))
    assert json.loads((tmp_path / "docs" / "paper-results.json").read_text())["meta"]["quick"]


def test_bad_arguments_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--seed", "-1", "--out", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["--from-json", str(tmp_path / "missing.json"), "--out", str(tmp_path)])
    assert exc.value.code == 2
