"""Each bad answer fails with Copier's validation error, through pytest-copie."""

from __future__ import annotations

from typing import Any

import pytest

BAD_ANSWERS = [
    {"project_name": "   "},
    {"project_name": "Acme", "project_slug": "acme tools"},
    {"project_name": "Acme", "project_slug": "Acme"},
    {"project_name": "Acme", "package_name": "1acme"},
    {"project_name": "Acme", "package_name": "acme-tools"},
    {"project_name": "Acme", "package_name": "json"},
    {"project_name": "Acme", "package_name": "asyncio"},
    {"project_name": "Acme", "author_email": "not an email"},
]


@pytest.mark.parametrize("answers", BAD_ANSWERS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_bad_answer_is_refused(copie: Any, answers: dict[str, str]) -> None:
    result = copie.copy(extra_answers=answers)
    assert result.exit_code != 0
    assert "Validation error for question" in str(result.exception)


def test_good_answers_render(copie: Any) -> None:
    result = copie.copy(extra_answers={"project_name": "Good One", "sample_tools": []})
    assert result.exit_code == 0, result.exception
    assert (result.project_dir / "src" / "good_one" / "server" / "build.py").is_file()
