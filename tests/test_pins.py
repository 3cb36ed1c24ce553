"""What runs locally is what SageMaker containers install: the shipped pins match this environment."""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements" / "steps.txt"


def test_step_pins_match_the_installed_versions():
    pins = [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(pins) >= 8
    mismatched = {}
    for pin in pins:
        name, _, wanted = pin.partition("==")
        assert wanted, f"{pin} is not an exact pin"
        if version(name) != wanted:
            mismatched[name] = (wanted, version(name))
    assert not mismatched, f"installed versions differ from requirements/steps.txt: {mismatched}"
