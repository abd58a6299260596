"""Template files: the built-in ones and an operator's overrides, checked and cached.

`check_templates` runs once at startup (API and worker) and refuses to start on a file that would
fail at render time. At run time an override file is parsed and checked once per version (path,
modification time, size); a version that fails the check is logged and ignored, so recipients get
the built-in texts rather than a request failing.
"""

from __future__ import annotations

import logging
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError

from app.messages.categories import Category
from app.notifications.catalogue import EVENTS, EventSpec, FieldKind

TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"
LABELS_KEY = "labels"
PLURAL_CATEGORIES = ("zero", "one", "two", "few", "many", "other")  # CLDR
COUNT_PLACEHOLDER = "count"  # the number, in a plural form

# `{{` and `}}` are literal braces; `{name}` is a placeholder.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")

# One locale file: event name → entry, and `labels` → label set → value → text.
Templates = Mapping[str, Any]

logger = logging.getLogger("app.notifications")


class InvalidTemplates(Exception):
    """A template file that would fail at render time. The message names each file, event and
    problem, one per line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def check_templates(overrides_dir: Path | None) -> None:
    """Check the built-in template files and every `<locale>.toml` in `overrides_dir`.

    Raises InvalidTemplates listing every problem found. The override files that pass are kept,
    so the first render does not read them again.
    """
    problems: list[str] = []
    for path in _toml_files(TEMPLATES_DIR):
        try:
            templates = _load(path)
        except InvalidTemplates as error:
            problems.extend(error.problems)
            continue
        if path.stem == DEFAULT_LOCALE:
            problems.extend(
                f"{path}: [{name}] missing; the default locale needs every event"
                for name in EVENTS
                if name not in templates
            )
    if not (TEMPLATES_DIR / f"{DEFAULT_LOCALE}.toml").is_file():
        problems.append(f"{TEMPLATES_DIR}: no {DEFAULT_LOCALE}.toml for the default locale")
    if overrides_dir is not None:
        if overrides_dir.is_dir():
            for path in _toml_files(overrides_dir):
                try:
                    _OVERRIDES.load(path)
                except InvalidTemplates as error:
                    problems.extend(error.problems)
        else:
            problems.append(f"{overrides_dir}: the notification templates directory is missing")
    if problems:
        raise InvalidTemplates(problems)


@cache
def builtin_templates(locale: str) -> Templates:
    path = TEMPLATES_DIR / f"{locale}.toml"
    return _parse(path) if path.is_file() else {}


def builtin_locales() -> list[str]:
    return sorted(path.stem for path in TEMPLATES_DIR.glob("*.toml"))


def override_templates(overrides_dir: Path | None, locale: str) -> Templates:
    """The operator's `<locale>.toml`, as of its current version; {} when there is none or it is
    broken (logged once per version)."""
    if overrides_dir is None:
        return {}
    return _OVERRIDES.get(overrides_dir / f"{locale}.toml")


class _OverrideFiles:
    """Override files by path, each with the version (mtime, size) its tables were read at."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[tuple[int, int], Templates]] = {}

    def get(self, path: Path) -> Templates:
        version = _version(path)
        if version is None:
            self._files.pop(path, None)
            return {}
        cached = self._files.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            return self.load(path, version)
        except InvalidTemplates as error:
            # The problems name the file, events and placeholders: no recipient's data.
            logger.error(
                "Notification template overrides ignored until fixed (built-in texts used): %s",
                error,
            )
            self._files[path] = (version, {})
            return {}

    def load(self, path: Path, version: tuple[int, int] | None = None) -> Templates:
        """Parse and check `path`, keep it if it passes; raises InvalidTemplates."""
        version = version or _version(path)
        templates = _load(path)
        if version is not None:
            self._files[path] = (version, templates)
        return templates


_OVERRIDES = _OverrideFiles()


def _version(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return status.st_mtime_ns, status.st_size


def _toml_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.glob("*.toml") if path.is_file())


def _parse(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise InvalidTemplates([f"{path}: not valid TOML: {error}"]) from None
    except UnicodeDecodeError:
        raise InvalidTemplates([f"{path}: not UTF-8 text"]) from None
    except OSError as error:
        raise InvalidTemplates([f"{path}: cannot be read: {error.strerror}"]) from None


def _load(path: Path) -> Templates:
    templates = _parse(path)
    problems = _locale_problems(path.stem) + _file_problems(templates)
    if problems:
        raise InvalidTemplates(f"{path}: {problem}" for problem in problems)
    return templates


def _locale_problems(name: str) -> list[str]:
    try:
        canonical = str(Locale.parse(name.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        canonical = None
    if canonical == name:
        return []
    hint = f" (did you mean {canonical}.toml?)" if canonical else ""
    return [f"the file name is not a locale such as fr or fr_CA, so it is never used{hint}"]


def _file_problems(templates: Templates) -> list[str]:
    problems: list[str] = []
    for key, value in templates.items():
        if key == LABELS_KEY:
            problems.extend(_labels_problems(value))
        elif (spec := EVENTS.get(key)) is None:
            problems.append(f"[{key}] is not a notification event (nor `{LABELS_KEY}`)")
        else:
            problems.extend(f"[{key}] {problem}" for problem in _entry_problems(spec, value))
    return problems


def _entry_problems(spec: EventSpec, entry: object) -> list[str]:
    if not isinstance(entry, dict):
        return ["must be a table with a `text`"]
    problems = [
        f"has an unknown key `{key}` (only `text` and `plurals`)"
        for key in entry
        if key not in ("text", "plurals")
    ]
    text = entry.get("text")
    if text is None:
        problems.append("has no `text`")
    elif not isinstance(text, str):
        problems.append("`text` must be a string")
    elif not text.strip():
        problems.append("`text` is empty")
    else:
        problems.extend(_placeholder_problems("`text`", text, spec.field_names))
        # A code message without its code would be sent, and useless.
        if spec.category == Category.ONE_TIME_CODE and "{code}" not in text:
            problems.append("`text` must contain `{code}`")
    if "plurals" in entry:
        problems.extend(_plurals_problems(spec, entry["plurals"]))
    return problems


def _plurals_problems(spec: EventSpec, plurals: object) -> list[str]:
    if not isinstance(plurals, dict):
        return ["`plurals` must be a table of count fields"]
    counts = [item.name for item in spec.fields if item.kind is FieldKind.COUNT]
    allowed = (*spec.field_names, COUNT_PLACEHOLDER)
    problems: list[str] = []
    for name, forms in plurals.items():
        where = f"plurals.{name}"
        if name not in counts:
            known = ", ".join(counts) or "none"
            problems.append(f"{where}: `{name}` is not a count field of this event ({known})")
            continue
        if not isinstance(forms, dict):
            problems.append(f"{where} must be a table of plural forms (one, other, …)")
            continue
        for category, form in forms.items():
            if category not in PLURAL_CATEGORIES:
                known = ", ".join(PLURAL_CATEGORIES)
                problems.append(f"{where}: `{category}` is not a CLDR plural category ({known})")
            elif not isinstance(form, str):
                problems.append(f"{where}.{category} must be a string")
            else:
                problems.extend(_placeholder_problems(f"{where}.{category}", form, allowed))
        if "other" not in forms:
            problems.append(f"{where} has no `other` form")
    return problems


def _placeholder_problems(where: str, text: str, allowed: Iterable[str]) -> list[str]:
    known = tuple(allowed)
    problems = [
        f"{where}: {{{name}}} is not a field of this event ({', '.join(known)})"
        for name in dict.fromkeys(
            match.group(1) for match in PLACEHOLDER.finditer(text) if match.group(1)
        )
        if name not in known
    ]
    if re.search(r"[{}]", PLACEHOLDER.sub("", text)):
        problems.append(f"{where}: a stray `{{` or `}}` (write `{{{{` or `}}}}` for a brace)")
    return problems


def _labels_problems(labels: object) -> list[str]:
    if not isinstance(labels, dict):
        return [f"[{LABELS_KEY}] must be a table of label sets"]
    used = sorted(
        {
            item.labels or item.name
            for spec in EVENTS.values()
            for item in spec.fields
            if item.kind is FieldKind.LABEL
        }
    )
    problems: list[str] = []
    for label_set, values in labels.items():
        where = f"[{LABELS_KEY}.{label_set}]"
        if label_set not in used:
            problems.append(f"{where} is not a label set any event uses ({', '.join(used)})")
        elif not isinstance(values, dict):
            problems.append(f"{where} must be a table of value = text")
        else:
            for value, text in values.items():
                if not isinstance(text, str):
                    problems.append(f"{where} {value} must be a string")
                elif value != value.lower():
                    # Values are matched in lower case: this one would never be.
                    problems.append(f"{where} {value} must be in lower case")
    return problems
