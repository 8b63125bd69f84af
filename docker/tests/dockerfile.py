"""A small Dockerfile reader for the image tests: instructions, grouped into build stages.

Only what the tests need: line continuations are joined (so a stray trailing backslash that
swallows the next instruction shows up as a missing instruction), comments and blank lines are
dropped, and each ``FROM`` opens a new stage.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword and its raw argument text."""

    keyword: str
    argument: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD; raises ValueError for shell form."""
        value = json.loads(self.argument)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{self.keyword} is not in exec form: {self.argument}")
        return value

    def labels(self) -> dict[str, str]:
        """The key="value" pairs of a LABEL instruction."""
        pairs = shlex.split(self.argument)
        return dict(pair.split("=", 1) for pair in pairs)


@dataclass
class Stage:
    """A build stage: its FROM argument, optional name and the instructions after FROM."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass(frozen=True)
class Dockerfile:
    """Global ARGs (before the first FROM) and the stages in order."""

    global_args: list[Instruction]
    stages: list[Stage]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue  # comments inside a continued instruction are skipped, as Docker does
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        if pending.strip():
            lines.append(pending.strip())
        pending = ""
    if pending.strip():
        raise ValueError("the Dockerfile ends inside a line continuation")
    return lines


def parse(path: Path) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, argument = line.partition(" ")
        instruction = Instruction(keyword.upper(), argument.strip())
        if instruction.keyword == "FROM":
            words = instruction.argument.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args=global_args, stages=stages)
