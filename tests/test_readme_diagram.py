"""The README's leg-state diagram is the one generated from the transition table."""

from __future__ import annotations

from pathlib import Path

from engine.machine import diagram
from engine.machine.diagram import BEGIN_MARKER, END_MARKER, check_readme_diagram, render_mermaid
from engine.machine.model import LegState
from engine.machine.transitions import TRANSITIONS, Trigger

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(text: str) -> str:
    start = text.index(BEGIN_MARKER)
    return text[start : text.index(END_MARKER, start)]


def test_the_readme_diagram_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert check_readme_diagram(text) == []
    assert render_mermaid() in readme_block(text)
    assert "## Call states" in text


def test_an_edited_diagram_is_detected() -> None:
    text = README.read_text(encoding="utf-8")
    edits = [
        text.replace("queued --> parked : leave_queue", "queued --> held : leave_queue"),
        text.replace("    hangup --> [*]\n", ""),
        text.replace("stateDiagram-v2\n", "stateDiagram-v2\n    parked --> dialing : dial\n"),
        text.replace(END_MARKER, ""),
        text + "\n" + BEGIN_MARKER + "\n",
    ]
    for edited in edits:
        assert edited != text
        assert check_readme_diagram(edited), edited[-200:]


def test_a_changed_table_is_detected(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    text = README.read_text(encoding="utf-8")
    changed = dict(TRANSITIONS)
    changed[(LegState.HELD, Trigger.UNBRIDGE)] = LegState.PARKED  # a new arrow
    monkeypatch.setattr(diagram, "TRANSITIONS", changed)
    assert "held --> parked : unbridge" in render_mermaid()
    assert check_readme_diagram(text)
    removed = {k: v for k, v in TRANSITIONS.items() if k != (LegState.QUEUED, Trigger.LEAVE_QUEUE)}
    monkeypatch.setattr(diagram, "TRANSITIONS", removed)
    assert check_readme_diagram(text)
