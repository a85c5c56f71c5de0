"""The published-numbers file: loads, carries the reference's UNVERIFIED marks, points at real configs."""
from __future__ import annotations

from pathlib import Path

from configs import load_config
from evaluation import load_tables

REPO = Path(__file__).resolve().parents[1]


def test_dps_numbers_are_unverified_except_the_one_confirmed_by_an_issue() -> None:
    tables = load_tables()
    cells = {(name, row.task, m): cell for name in ("dps_ffhq", "dps_imagenet")
             for row in tables[name].rows for m, cell in row.published.items()}
    assert len(cells) == 20
    verified = [key for key, cell in cells.items() if cell.verified]
    assert verified == [("dps_ffhq", "inpaint_random", "fid")]  # 21.19, DPS issue #8
    assert cells[("dps_ffhq", "inpaint_random", "fid")].value == 21.19
    assert cells[("dps_ffhq", "sr4", "fid")].value == 39.35
    assert cells[("dps_imagenet", "motion_deblur", "lpips")].value == 0.389


def test_diffpir_readme_tables_are_complete_and_verified() -> None:
    tables = load_tables()
    counts = {name: sum(len(r.published) for r in tables[name].rows)
              for name in ("diffpir_ffhq_noisy", "diffpir_imagenet_noisy", "diffpir_ffhq_noiseless")}
    # README: 4 methods x 3 tasks x 3 metrics minus DDRM motion (3 numbers); noiseless: 62 numbers.
    assert counts == {"diffpir_ffhq_noisy": 33, "diffpir_imagenet_noisy": 33, "diffpir_ffhq_noiseless": 62}
    assert all(c.verified for name in counts for r in tables[name].rows for c in r.published.values())
    row = next(r for r in tables["diffpir_ffhq_noiseless"].rows if r.nfe == "100" and r.task == "motion_deblur")
    assert {m: c.value for m, c in row.published.items()} == {"psnr": 37.53, "fid": 11.54, "lpips": 0.064}
    assert all(r.crop_border == (4 if r.task == "sr4" else 0) for name in counts for r in tables[name].rows)


def test_tables_without_retrievable_numbers_record_none() -> None:
    tables = load_tables()
    for name in ("dpps_ffhq", "dpps_imagenet", "gdp_imagenet"):
        assert tables[name].rows and all(not r.published for r in tables[name].rows)


def test_every_named_config_exists_and_validates() -> None:
    for table in load_tables().values():
        for row in table.rows:
            if row.config:
                assert (REPO / row.config).is_file(), f"{table.name}: {row.config} is missing"
                load_config(str(REPO / row.config))
