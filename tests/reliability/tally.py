"""The suite's scoreboard: what was injected, what was survived, what was lost.

One `Tally` per pytest session (`TALLY`); tests add to it as they go, and the suite's
conftest prints it as a table at the end (and writes it as JSON beside the test logs), so a
run says in one place what it did to the operator and what the operator did in return.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Tally:
    faults_injected: int = 0
    faults_survived: int = 0
    trials_lost: int = 0
    duplicates: int = 0
    unintended_kills: int = 0
    bad_inputs_tried: int = 0
    crashes: int = 0
    #: What a chaos kind left behind after the operator's SIGKILLs mid-fault, per kind, as
    #: an independent witness saw it (pods, containers, processes, rules; test_chaos_kinds).
    faults_left: dict[str, list[str]] = field(default_factory=dict)
    #: Per fault kind: [injected, survived, bit] ("bit": the fault provably reached the operator,
    #: e.g. its log shows the ledger error; a fault that never bit proves little).
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    touched: bool = False

    def fault(self, kind: str, *, survived: bool, bit: bool) -> None:
        self.touched = True
        self.faults_injected += 1
        self.faults_survived += int(survived)
        row = self.by_kind.setdefault(kind, [0, 0, 0])
        row[0] += 1
        row[1] += int(survived)
        row[2] += int(bit)

    def left_behind(self, kind: str, problems: list[str]) -> None:
        self.touched = True
        self.faults_left.setdefault(kind, []).extend(problems)

    @property
    def faults_left_behind(self) -> int:
        return sum(len(v) for v in self.faults_left.values())

    def note(self, text: str) -> None:
        self.touched = True
        self.notes.append(text)

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("faults injected", str(self.faults_injected)),
            ("faults survived", str(self.faults_survived)),
            ("trials lost", str(self.trials_lost)),
            ("duplicates", str(self.duplicates)),
            ("unintended kills", str(self.unintended_kills)),
            ("bad inputs tried", str(self.bad_inputs_tried)),
            ("crashes", str(self.crashes)),
            ("faults left behind", str(self.faults_left_behind) if self.faults_left else "-"),
        ]

    def render(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        lines = ["aftershock reliability summary", "-" * (width + 12)]
        lines += [f"{k:<{width}}  {v:>8}" for k, v in self.rows()]
        if self.by_kind:
            lines.append("")
            w = max(22, *(len(k) for k in self.by_kind))
            lines.append(f"{'fault kind':<{w}} {'injected':>8} {'survived':>8} {'bit':>5}")
            for kind, (n, ok, bit) in sorted(self.by_kind.items()):
                lines.append(f"{kind:<{w}} {n:>8} {ok:>8} {bit:>5}")
        if self.faults_left:
            lines.append("")
            kinds = ", ".join(sorted(self.faults_left))
            lines.append(
                f"faults left behind: {self.faults_left_behind} (chaos kinds {kinds}; witness: pods,"
            )
            lines.append("  containers and processes as the API server and the node show them)")
            for kind, problems in sorted(self.faults_left.items()):
                lines += [f"  {kind}: {p}" for p in problems]
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


TALLY = Tally()
