"""Progress off a terminal: one plain line per epoch, no carriage-return frames."""

from __future__ import annotations

import io

from dnc.train import progress


def test_one_line_per_epoch_off_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: False)
    (lines,) = progress.progress_callbacks(True, epochs=3)
    out = io.StringIO()
    lines.stream = out
    for epoch in range(3):
        lines.on_epoch_end(None, {"epoch": float(epoch), "train/loss": 0.5, "train/lr": 0.1})
    text = out.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [f"epoch {e}/3  train/loss 0.5  train/lr 0.1" for e in (1, 2, 3)]
    batches = [1, 2, 3]
    assert list(progress.batch_bar(batches, 3, "epoch 0", True)) == batches  # no bar


def test_terminal_gets_the_bar_and_no_lines(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: True)
    assert progress.progress_callbacks(True, epochs=3) == []
    assert progress.progress_callbacks(False, epochs=3) == []
    bar = progress.batch_bar([1, 2], 2, "epoch 0", True)
    assert list(bar) == [1, 2] and type(bar).__name__ != "list_iterator"
