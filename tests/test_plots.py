"""Plots and tables of mlip.plots and mlip.training.plots: files written, numbers shown, edge cases."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlip.plots import ERROR_TEXT_GID, ParityPanel, error_summary, parity_figure, parity_plot
from mlip.training.plots import learning_curve, learning_curve_figure, metrics_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    from matplotlib.image import imread

    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


def panels(rng, n_structures=40, n_atoms=300):
    e_ref = rng.normal(-5.0, 0.1, n_structures)
    f_ref = rng.normal(0.0, 1.0, (n_atoms, 3))
    s_ref = rng.normal(0.0, 2.0, (n_structures, 6))
    config_types = np.array(["bulk", "surface", "md"])[rng.integers(0, 3, n_structures)]
    atom_types = np.array(["bulk", "surface"])[rng.integers(0, 2, n_atoms)]
    return [
        ParityPanel("Energy", e_ref, e_ref + rng.normal(0, 0.005, e_ref.shape), "eV/atom", config_types),
        ParityPanel("Forces", f_ref, f_ref + rng.normal(0, 0.05, f_ref.shape), "eV/Å", atom_types),
        dict(title="Stress", reference=s_ref, predicted=s_ref + rng.normal(0, 0.1, s_ref.shape),
             unit="GPa"),
    ]


def error_texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == ERROR_TEXT_GID]


def test_error_summary_hand_computed():
    mae, rmse = error_summary(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0]))
    # errors 1, 0, -2, 0
    assert mae == pytest.approx(3.0 / 4.0)
    assert rmse == pytest.approx(np.sqrt(5.0 / 4.0))
    # 2-d input is flattened; non-finite pairs are ignored
    mae, rmse = error_summary(np.array([[1.0, np.nan], [2.0, 4.0]]), np.array([[2.0, 0.0], [np.inf, 1.0]]))
    assert (mae, rmse) == pytest.approx((2.0, np.sqrt(5.0)))  # errors 1, -3
    assert all(np.isnan(error_summary(np.zeros(0), np.zeros(0))))
    with pytest.raises(ValueError):
        error_summary(np.zeros(3), np.zeros(4))


def test_parity_plot_writes_png(tmp_path):
    out = parity_plot(tmp_path / "sub" / "parity.png", panels(np.random.default_rng(0)))
    assert out == tmp_path / "sub" / "parity.png"
    assert_png(out)


def test_parity_text_matches_numpy():
    rng = np.random.default_rng(1)
    ps = panels(rng)
    fig = parity_figure(ps)
    texts = error_texts(fig)
    assert len(texts) == 3
    for panel, text in zip(ps, texts):
        panel = panel if isinstance(panel, ParityPanel) else ParityPanel(**panel)
        diff = np.ravel(panel.predicted) - np.ravel(panel.reference)
        mae = float(re.search(r"MAE\s*=\s*(\S+)", text).group(1))
        rmse = float(re.search(r"RMSE\s*=\s*(\S+)", text).group(1))
        n = int(re.search(r"N\s*=\s*(\d+)", text).group(1))
        assert mae == pytest.approx(np.mean(np.abs(diff)), rel=1e-3)
        assert rmse == pytest.approx(np.sqrt(np.mean(diff**2)), rel=1e-3)
        assert n == diff.size
        assert panel.unit in text


def test_parity_skips_empty_panels(tmp_path):
    rng = np.random.default_rng(2)
    e = rng.normal(size=10)
    ps = [
        ParityPanel("Energy", e, e + 0.01, "meV/atom"),
        ParityPanel("Forces", np.zeros((0, 3)), np.zeros((0, 3)), "eV/Å", groups=np.zeros(0, dtype=str)),
        ParityPanel("Stress", np.full(6, np.nan), np.full(6, np.nan), "GPa"),
    ]
    fig = parity_figure(ps)
    assert [ax.get_title() for ax in fig.axes] == ["Energy"]
    assert_png(parity_plot(tmp_path / "p.png", ps))
    with pytest.raises(ValueError):
        parity_plot(tmp_path / "none.png", ps[1:])
    assert not (tmp_path / "none.png").exists()


def test_parity_groups_and_equal_limits():
    rng = np.random.default_rng(3)
    f_ref = rng.normal(size=(50, 3))
    per_atom = np.array(["a", "b"])[rng.integers(0, 2, 50)]
    fig = parity_figure([ParityPanel("Forces", f_ref, 2.0 * f_ref, "eV/Å", per_atom)])
    ax = fig.axes[0]
    assert ax.get_xlim() == ax.get_ylim()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [label.split()[0] for label in legend] == ["a", "b"]
    assert sum(int(re.search(r"n=(\d+)", label).group(1)) for label in legend) == 150
    with pytest.raises(ValueError):
        parity_figure([ParityPanel("Forces", f_ref, f_ref, "eV/Å", per_atom[:7])])


def test_parity_large_and_other_format(tmp_path):
    rng = np.random.default_rng(4)
    f = rng.normal(size=(20000, 3))
    out = parity_plot(tmp_path / "forces.pdf", [ParityPanel("Forces", f, f + 0.01, "eV/Å")])
    assert out.read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError):
        parity_plot(tmp_path / "forces.xyz", [ParityPanel("Forces", f, f, "eV/Å")])


def test_parity_overwrites_atomically(tmp_path):
    path = tmp_path / "parity.png"
    path.write_bytes(b"old")
    e = np.arange(5.0)
    parity_plot(path, [ParityPanel("Energy", e, e, "eV/atom")])
    assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.png"]


def test_learning_curve_full_and_partial(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "val_energy_mae": 30.0, "val_force_mae": 200.0,
         "val_stress_mae": 0.5, "lr": 1e-3},
        {"epoch": 2, "train_loss": 0.5, "val_loss": None, "val_energy_mae": 20.0, "lr": 1e-3},
        {"epoch": 3, "train_loss": 0.3, "val_loss": 0.4, "val_force_mae": None},
        {"train_loss": 0.2, "val_energy_mae": np.float32(9.0), "val_stress_mae": float("nan")},
        {},
    ]
    assert_png(learning_curve(tmp_path / "curve.png", history))
    fig = learning_curve_figure(history)
    ax_loss, ax_mae = fig.axes
    loss_lines = {line.get_label(): line for line in ax_loss.get_lines()}
    assert set(loss_lines) == {"train_loss", "val_loss"}
    assert list(loss_lines["train_loss"].get_xdata()) == [1, 2, 3, 4]  # missing epoch -> position
    assert list(loss_lines["val_loss"].get_ydata()) == [1.2, 0.4]
    mae_labels = [line.get_label() for line in ax_mae.get_lines()]
    assert mae_labels == ["val_energy_mae (meV/atom)", "val_force_mae (meV/Å)", "val_stress_mae (GPa)"]
    assert ax_loss.get_yscale() == "log" and ax_mae.get_yscale() == "log"


def test_learning_curve_without_data(tmp_path):
    assert_png(learning_curve(tmp_path / "empty.png", []))
    assert_png(learning_curve(tmp_path / "loss_only.png", [{"epoch": 1, "train_loss": 0.1}]))
    fig = learning_curve_figure([{"epoch": 1, "train_loss": 0.1}])
    assert [t.get_text() for t in fig.axes[1].texts] == ["no data"]


def test_metrics_table_alignment_and_missing():
    rows = {
        "train": {"E MAE meV/atom": 1.23456, "F MAE meV/Å": 45.6, "n": 1200},
        "validation": {"E MAE meV/atom": 2.5, "S MAE GPa": 0.0123, "n": 150},
        "bulk": {"F MAE meV/Å": None, "n": 7},
    }
    table = metrics_table(rows, name_header="split")
    lines = table.splitlines()
    header = lines[0]
    assert header.split("  ")[0].strip() == "split"
    columns = ["E MAE meV/atom", "F MAE meV/Å", "n", "S MAE GPa"]
    positions = [header.index(c) for c in columns]
    assert positions == sorted(positions)  # order of first appearance
    assert len({len(line) for line in lines}) == 1  # right-aligned last column: equal widths
    ends = [header.index(c) + len(c) for c in columns]
    body = {line.split()[0]: line for line in lines[2:]}
    assert set(body) == {"train", "validation", "bulk"}
    expected = {
        "train": ["1.235", "45.6", "1200", "-"],
        "validation": ["2.5", "-", "150", "0.0123"],
        "bulk": ["-", "-", "7", "-"],
    }
    for name, cells in expected.items():
        line = body[name]
        for cell, end in zip(cells, ends):
            assert line[end - len(cell):end] == cell  # right-aligned under its header
            assert end == len(line) or line[end] == " "
    assert metrics_table({}) == ""
