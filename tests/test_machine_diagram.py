"""The README's leg-state diagram is generated from the transition table and checked against it."""

from __future__ import annotations

import pytest

from engine.machine.diagram import (
    BEGIN_MARKER,
    END_MARKER,
    check_readme_diagram,
    main,
    readme_block,
    render_mermaid,
)
from engine.machine.model import LegState
from engine.machine.transitions import TRANSITIONS


def _arrows() -> dict[tuple[str, str], set[str]]:
    arrows: dict[tuple[str, str], set[str]] = {}
    for line in render_mermaid().splitlines()[1:]:
        edge, _, labels = line.strip().partition(" : ")
        source, _, target = edge.partition(" --> ")
        arrows[(source, target)] = set(labels.split(", ")) if labels else set()
    return arrows


def test_every_transition_is_drawn_and_nothing_else() -> None:
    expected: dict[tuple[str, str], set[str]] = {}
    for (source, trigger), target in TRANSITIONS.items():
        edge = ("[*]" if source is None else source.value, target.value)
        expected.setdefault(edge, set()).add(trigger.value)
    expected[(LegState.HANGUP.value, "[*]")] = set()
    assert _arrows() == expected


def test_the_diagram_is_a_mermaid_state_diagram() -> None:
    text = render_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    assert ";" not in text and text.count(" : ") == len(_arrows()) - 1


def _readme(block: str) -> str:
    return f"# callbridge\n\nLeg states:\n\n{block}\nMore text.\n"


def test_a_readme_with_the_generated_block_passes() -> None:
    assert check_readme_diagram(_readme(readme_block())) == []


def test_a_stale_or_missing_block_is_reported() -> None:
    stale = readme_block().replace("hangup --> [*]", "hangup --> parked")
    assert check_readme_diagram(_readme(stale))
    assert check_readme_diagram("# no diagram here\n")
    twice = _readme(readme_block() + readme_block())
    assert check_readme_diagram(twice)
    backwards = f"{END_MARKER}\n{BEGIN_MARKER}\n"
    assert check_readme_diagram(backwards)


def test_python_m_engine_diagram_prints_the_block(capsys: pytest.CaptureFixture[str]) -> None:
    main()
    assert capsys.readouterr().out == readme_block()
