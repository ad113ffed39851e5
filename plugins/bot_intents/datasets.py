"""Read intent-classification datasets in place: CLINC-style JSON and BANKING77-style CSV.

- CLINC-style: one ``.json`` file (or a folder holding exactly one) with the keys
  ``train``, ``val``, ``test`` and optionally ``oos_train``, ``oos_val``, ``oos_test``;
  every item is ``[text, label]``. Items labelled with the out-of-scope label (``oos``)
  count as out-of-scope wherever they appear.
- CSV: a folder with ``train.csv`` and ``test.csv`` (and optionally ``val.csv``), each
  with a header naming a ``text`` column and a ``category`` (or ``label``/``intent``)
  column. Rows whose category is the out-of-scope label are out-of-scope.

Every problem raises :class:`DatasetError` with a message that names the file and what
was expected, so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from kefu.core.errors import KefuError

log = logging.getLogger(__name__)

Example = tuple[str, str]
SPLITS = ("train", "val", "test")
LABEL_COLUMNS = ("category", "label", "intent")
EXPECTED = "a CLINC-style .json file or a folder with train.csv and test.csv"


class DatasetError(KefuError):
    """A dataset is missing or malformed."""


@dataclass
class Dataset:
    """Examples split into in-scope and out-of-scope parts, plus file checksums."""

    name: str
    format: str
    files: dict[str, str]  # file name -> sha256
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    oos_train: list[Example] = field(default_factory=list)
    oos_val: list[Example] = field(default_factory=list)
    oos_test: list[Example] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        """The file's sha256, or for several files the sha256 of a ``SHA256SUMS`` listing."""
        if len(self.files) == 1:
            return next(iter(self.files.values()))
        listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()

    @property
    def intents(self) -> list[str]:
        return sorted({label for _, label in self.train})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_dataset(path: str | Path, oos_label: str = "oos") -> Dataset:
    """Load a dataset from a file or folder (see the module docstring for the formats)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset not found: {path} (expected {EXPECTED})")
    if path.is_dir():
        if (path / "train.csv").is_file():
            dataset = _load_csv_folder(path, oos_label)
        else:
            candidates = sorted(path.glob("*.json"))
            if len(candidates) != 1:
                raise DatasetError(
                    f"{path}: no train.csv and no single .json file (expected {EXPECTED})"
                )
            dataset = _load_clinc(candidates[0], oos_label)
    elif path.suffix.lower() == ".csv":
        raise DatasetError(
            f"{path}: a CSV dataset is a folder with train.csv and test.csv; pass the folder"
        )
    else:
        dataset = _load_clinc(path, oos_label)
    if not dataset.train:
        raise DatasetError(f"{path}: the train split has no in-scope examples")
    if not dataset.test and not dataset.oos_test:
        raise DatasetError(f"{path}: the test split is empty")
    if len(dataset.intents) < 2:
        raise DatasetError(f"{path}: the train split needs at least two intents")
    log.info(
        "dataset %s: %d train, %d val, %d test, %d/%d/%d out-of-scope",
        dataset.name,
        len(dataset.train),
        len(dataset.val),
        len(dataset.test),
        len(dataset.oos_train),
        len(dataset.oos_val),
        len(dataset.oos_test),
    )
    return dataset


def _assign(dataset: Dataset, split: str, items: list[Example], oos_label: str) -> None:
    """Append items to ``split`` or, if labelled out-of-scope, to ``oos_<split>``."""
    for text, label in items:
        target = f"oos_{split}" if label == oos_label else split
        getattr(dataset, target).append((text, label))


def _load_clinc(path: Path, oos_label: str) -> Dataset:
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"expected {EXPECTED}"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        keys = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(
            f"{path}: a CLINC-style file is a JSON object with the keys train, val, test "
            f"(and oos_train, oos_val, oos_test); found: {keys or 'an empty object'}"
        )
    dataset = Dataset(path.name, "clinc-json", {path.name: hashlib.sha256(raw).hexdigest()})
    for split in SPLITS:
        _assign(dataset, split, _items(path, split, data.get(split, [])), oos_label)
        oos_items = _items(path, f"oos_{split}", data.get(f"oos_{split}", []))
        getattr(dataset, f"oos_{split}").extend(oos_items)
    return dataset


def _items(path: Path, key: str, value: object) -> list[Example]:
    if not isinstance(value, list):
        raise DatasetError(f"{path}: {key} must be a list of [text, label] items")
    items: list[Example] = []
    for i, item in enumerate(value):
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(part, str) for part in item)
        ):
            raise DatasetError(f"{path}: {key}[{i}] must be [text, label], got {item!r:.80}")
        items.append((item[0], item[1]))
    return items


def _load_csv_folder(folder: Path, oos_label: str) -> Dataset:
    if not (folder / "test.csv").is_file():
        raise DatasetError(f"{folder}: has train.csv but no test.csv")
    dataset = Dataset(folder.name, "csv", {})
    for split in SPLITS:
        path = folder / f"{split}.csv"
        if not path.is_file():
            continue
        dataset.files[path.name] = sha256_file(path)
        _assign(dataset, split, _read_csv(path), oos_label)
    return dataset


def _read_csv(path: Path) -> list[Example]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if "text" not in header or not any(c in header for c in LABEL_COLUMNS):
                raise DatasetError(
                    f"{path}: the header must name a 'text' and a 'category' column, "
                    f"found {header or 'nothing'}"
                )
            text_at = header.index("text")
            label_at = header.index(next(c for c in LABEL_COLUMNS if c in header))
            items: list[Example] = []
            for row in reader:
                if not row:
                    continue
                if len(row) <= max(text_at, label_at):
                    raise DatasetError(
                        f"{path}: line {reader.line_num} has {len(row)} fields, "
                        f"expected {len(header)}"
                    )
                items.append((row[text_at], row[label_at].strip()))
            return items
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV: {exc}") from None
