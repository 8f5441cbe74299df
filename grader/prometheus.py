"""Reading the Prometheus text exposition format: metric types and samples with their labels."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum", "_info", "_gsum", "_gcount")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Exposition:
    """What one scrape showed."""

    types: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def type_of(self, name: str) -> str | None:
        """The declared type of the family a sample or metric name belongs to."""
        if name in self.types:
            return self.types[name]
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in self.types:
                return self.types[name.removesuffix(suffix)]
        return None

    def having(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels`."""
        return sum(sample.value for sample in self.having(name, **labels))

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}


def parse(text: str) -> Exposition:
    """Parse an exposition; lines that are neither comments nor samples are ignored."""
    exposition = Exposition()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                exposition.types[parts[2]] = parts[3]
        elif line and not line.startswith("#") and (match := _SAMPLE.match(line)):
            labels = {key: _unescape(value) for key, value in _LABEL.findall(match.group(2) or "")}
            try:
                value = float(match.group(3))
            except ValueError:
                continue
            exposition.samples.append(Sample(match.group(1), labels, value))
    return exposition


def _unescape(value: str) -> str:
    return value.replace(r"\"", '"').replace(r"\n", "\n").replace("\\\\", "\\")
