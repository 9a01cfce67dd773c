"""dnc.io's stdout JSON: one write per line, so torchrun ranks sharing stdout never mix."""

from __future__ import annotations

import io
import json

from dnc.io import print_json


class _Recorder(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_print_json_is_one_write_of_the_line(monkeypatch):
    out = _Recorder()
    monkeypatch.setattr("sys.stdout", out)
    print_json({"study": "ddp", "followed": [{"number": 0}]})
    print_json({"a": 1}, indent=2)
    assert out.writes == [
        '{"study": "ddp", "followed": [{"number": 0}]}\n',
        json.dumps({"a": 1}, indent=2) + "\n",
    ]
